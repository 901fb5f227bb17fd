"""The pod links as the sidecar sees them: read from ``/sys/class/net`` of the pod netns.

The sidecar is non-root, has no capabilities and no pyroute2 on its hot path, so it
reads sysfs files any user may read. What each link kind shows in this kernel:

- bridge: ``uevent`` has ``DEVTYPE=bridge`` (and a ``bridge/`` folder);
- tun/tap: a ``tun_flags`` file (``0x0002`` tap, ``0x0100`` IFF_MULTI_QUEUE), plus
  ``owner`` and ``group``;
- macvtap: a ``macvtap/`` folder (its ``/dev/tapN`` name inside);
- veth and macvlan show nothing of their own in sysfs: their driver name is asked with
  the ``SIOCETHTOOL``/``ETHTOOL_GDRVINFO`` ioctl, which needs no privilege;
- a port of a bridge has a ``master`` symlink and a ``brport/`` folder.

The root is injectable so tests build fake trees; the driver lookup is injectable too
(by default it runs only against the real ``/sys/class/net``).
"""

from __future__ import annotations

import array
import fcntl
import os
import socket
import struct
from collections.abc import Callable
from pathlib import Path

from kvnet import bindrecord
from kvnet.errors import DecodeFailure
from kvnet.model import PodLink

SYS_CLASS_NET = "/sys/class/net"
IFF_UP = 0x1
IFF_TUN = 0x0001
IFF_MULTI_QUEUE = 0x0100
ARPHRD_LOOPBACK = 772
_DEVTYPE_KINDS = {"bridge": "bridge", "vlan": "vlan", "bond": "bond", "vxlan": "vxlan"}
_SIOCETHTOOL = 0x8946
_ETHTOOL_GDRVINFO = 0x00000003

DriverLookup = Callable[[str], "str | None"]


def read_pod_links(sys_class_net: str = SYS_CLASS_NET, *, driver_of: DriverLookup | None = None) -> dict[str, PodLink]:
    """Every link of the netns (loopback left out), by name.

    ``record`` is the decoded binding record from the link's ifalias, when it carries
    one; a kvnet-tagged but malformed alias raises ``DecodeFailure`` naming the link.
    A link that vanishes while being read is left out.
    """
    root = Path(sys_class_net)
    if driver_of is None and os.path.realpath(sys_class_net) == os.path.realpath(SYS_CLASS_NET):
        driver_of = ethtool_driver
    links: dict[str, PodLink] = {}
    for entry in sorted(root.iterdir()) if root.is_dir() else ():
        link = read_link(entry, driver_of=driver_of)
        if link is not None:
            links[link.name] = link
    return links


def read_link(path: Path, *, driver_of: DriverLookup | None = None) -> PodLink | None:
    """One link from its sysfs folder; None when it is loopback or has gone away."""
    name = path.name
    mac, mtu_text, type_text = _read(path / "address"), _read(path / "mtu"), _read(path / "type")
    if mac is None or mtu_text is None:
        return None
    if _dec(type_text) == ARPHRD_LOOPBACK:
        return None
    flags = _hex(_read(path / "flags")) or 0
    tun_flags = _hex(_read(path / "tun_flags"))
    alias = _read(path / "ifalias") or ""
    try:
        record = bindrecord.decode(alias)
    except DecodeFailure as err:
        raise DecodeFailure(f"link {name} in the pod netns: {err.msg}") from None
    master = path / "master"
    return PodLink(
        name=name,
        mac=mac.lower(),
        mtu=_dec(mtu_text) or 0,
        kind=_kind(path, driver_of),
        master=os.path.basename(os.readlink(master)) if master.is_symlink() else None,
        up=bool(flags & IFF_UP),
        multi_queue=bool(tun_flags is not None and tun_flags & IFF_MULTI_QUEUE),
        record=record,
    )


def _kind(path: Path, driver_of: DriverLookup | None) -> str:
    if (path / "tun_flags").exists():
        return "tun"
    if (path / "macvtap").is_dir():
        return "macvtap"
    devtype = _uevent(path).get("DEVTYPE", "")
    if devtype in _DEVTYPE_KINDS:
        return _DEVTYPE_KINDS[devtype]
    if (path / "bridge").is_dir():
        return "bridge"
    if driver_of is not None:
        driver = driver_of(path.name)
        if driver in ("veth", "macvlan", "ipvlan", "vxlan", "bridge", "tun", "bonding", "8021q"):
            return {"bonding": "bond", "8021q": "vlan"}.get(driver, driver)
    return ""


def _uevent(path: Path) -> dict[str, str]:
    text = _read(path / "uevent") or ""
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def _read(path: Path) -> str | None:
    try:
        return path.read_bytes().decode(errors="replace").strip()  # an ifalias may hold any bytes
    except OSError:  # vanished, or not readable by this user
        return None


def _dec(text: str | None) -> int | None:
    return int(text) if text is not None and text.isascii() and text.isdigit() else None


def _hex(text: str | None) -> int | None:
    if not text or not text.isascii():
        return None
    try:
        return int(text, 16)
    except ValueError:
        return None


def ethtool_driver(name: str) -> str | None:
    """The driver of a link in the caller's netns (``ETHTOOL_GDRVINFO``; no privilege)."""
    info = array.array("B", struct.pack("I", _ETHTOOL_GDRVINFO) + bytes(192))
    addr, _ = info.buffer_info()
    ifreq = struct.pack("16sP", name.encode()[:15], addr)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            fcntl.ioctl(sock.fileno(), _SIOCETHTOOL, ifreq)
    except OSError:
        return None
    return info.tobytes()[4:36].split(b"\0", 1)[0].decode(errors="replace") or None
