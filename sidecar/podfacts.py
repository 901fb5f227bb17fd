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
(by default it runs only against the real ``/sys/class/net``). Everything is read up front
into plain ``PodLink`` values, before the translation runs (docs/design.md §4): the
sidecar reads the links its VMI's kvnet interfaces name (:func:`read_pod_links` with a
query), tools and tests every link.

Files are read with ``os.open``/``os.read`` relative to the link's folder: pathlib's path
objects cost several times the read itself, and this runs on every OnDefineDomain.
"""

from __future__ import annotations

import array
import fcntl
import functools
import os
import socket
import stat
import struct
from collections.abc import Callable
from pathlib import Path

from kvnet.core import bindrecord, naming
from kvnet.core.errors import DecodeFailure
from kvnet.core.model import BindingRecord, PodLink
from kvnet.domain.translate import PodLinkQuery

SYS_CLASS_NET = "/sys/class/net"
IFF_UP = 0x1
IFF_TUN = 0x0001
IFF_MULTI_QUEUE = 0x0100
ARPHRD_LOOPBACK = 772
_DEVTYPE_KINDS = {"bridge": "bridge", "vlan": "vlan", "bond": "bond", "vxlan": "vxlan"}
_SIOCETHTOOL = 0x8946
_ETHTOOL_GDRVINFO = 0x00000003

DriverLookup = Callable[[str], "str | None"]


def read_pod_links(
    sys_class_net: str = SYS_CLASS_NET, query: PodLinkQuery | None = None, *, driver_of: DriverLookup | None = None
) -> dict[str, PodLink]:
    """The links of the netns by name, all read now into plain values (loopback, and links
    that vanish while being read, left out).

    Without a ``query``, every link. With one (``kvnet.domain.translate.pod_link_query``),
    exactly the links translating that VMI looks at: when the pod's naming scheme matters,
    the ``net<N>`` folders until one is a link (it makes the pod ordinal, and is kept: the
    translation decides by it); then per attachment its pod interface and its tap and, when
    the tap is there, the links its binding record may be on until one carries it. A bridge
    attachment so reads two links, not the bridge, the primary interface or the other
    attachments' links. ``record`` is the decoded binding record of a link's ifalias; a
    kvnet-tagged but malformed alias on a link read raises ``DecodeFailure`` naming the link.
    """
    if driver_of is None and (
        sys_class_net == SYS_CLASS_NET or os.path.realpath(sys_class_net) == os.path.realpath(SYS_CLASS_NET)
    ):
        driver_of = ethtool_driver
    try:
        names = sorted(os.listdir(sys_class_net))
    except (NotADirectoryError, FileNotFoundError):
        names = []
    if query is None:
        every = ((name, _read_link_at(sys_class_net, name, driver_of)) for name in names)
        return {name: link for name, link in every if link is not None}
    listed = frozenset(names)
    read: dict[str, PodLink | None] = {}

    def link(name: str) -> PodLink | None:
        if name not in read:
            read[name] = _read_link_at(sys_class_net, name, driver_of) if name in listed else None
        return read[name]

    ordinal = query.ordinal is not None and any(
        naming.ORDINAL_RE.fullmatch(name) and link(name) is not None for name in names
    )
    for attachment in query.attachments(ordinal=ordinal):
        link(attachment.pod_iface)
        if link(attachment.tap) is not None:
            for name in attachment.record_on:
                found = link(name)
                if found is not None and found.record is not None:
                    break
    return {name: found for name, found in read.items() if found is not None}


def read_link(path: Path, *, driver_of: DriverLookup | None = None) -> PodLink | None:
    """One link from its sysfs folder; None when it is loopback or has gone away."""
    return _read_link_at(str(path.parent), path.name, driver_of)


def _read_link_at(root: str, name: str, driver_of: DriverLookup | None) -> PodLink | None:
    try:
        folder = os.open(os.path.join(root, name), os.O_RDONLY | os.O_DIRECTORY)
    except OSError:  # vanished, or not a link folder
        return None
    try:
        return _link_in(folder, name, driver_of)
    finally:
        os.close(folder)


def _link_in(folder: int, name: str, driver_of: DriverLookup | None) -> PodLink | None:
    """The link whose sysfs folder is open as ``folder``."""
    mac, mtu_text, type_text = _read(folder, "address"), _read(folder, "mtu"), _read(folder, "type")
    if mac is None or mtu_text is None:
        return None
    if _dec(type_text) == ARPHRD_LOOPBACK:
        return None
    flags = _hex(_read(folder, "flags")) or 0
    has_tun_flags, tun_text = _read_file(folder, "tun_flags")
    tun_flags = _hex(tun_text)
    alias = _read(folder, "ifalias") or ""
    try:
        record = _decode_record(alias)
    except DecodeFailure as err:
        raise DecodeFailure(f"link {name} in the pod netns: {err.msg}") from None
    try:
        master: str | None = os.path.basename(os.readlink("master", dir_fd=folder))
    except OSError:  # no master (ENOENT), or not a symlink (EINVAL)
        master = None
    return PodLink(
        name=name,
        mac=mac.lower(),
        mtu=_dec(mtu_text) or 0,
        kind=_kind(folder, name, has_tun_flags, driver_of),
        master=master,
        up=bool(flags & IFF_UP),
        multi_queue=bool(tun_flags is not None and tun_flags & IFF_MULTI_QUEUE),
        record=record,
    )


@functools.lru_cache(maxsize=1024)
def _decode_record(alias: str) -> BindingRecord | None:
    """``bindrecord.decode``, remembered by the alias text: the alias is read afresh on every
    call, only the decoding of a text seen before (JSON, every address checked) is skipped.
    A record is immutable, so sharing it is safe; a malformed alias raises every time."""
    return bindrecord.decode(alias)


def _kind(folder: int, name: str, has_tun_flags: bool, driver_of: DriverLookup | None) -> str:
    if has_tun_flags:
        return "tun"
    if _is_dir(folder, "macvtap"):
        return "macvtap"
    devtype = _uevent(folder).get("DEVTYPE", "")
    if devtype in _DEVTYPE_KINDS:
        return _DEVTYPE_KINDS[devtype]
    if _is_dir(folder, "bridge"):
        return "bridge"
    if driver_of is not None:
        driver = driver_of(name)
        if driver in ("veth", "macvlan", "ipvlan", "vxlan", "bridge", "tun", "bonding", "8021q"):
            return {"bonding": "bond", "8021q": "vlan"}.get(driver, driver)
    return ""


def _uevent(folder: int) -> dict[str, str]:
    text = _read(folder, "uevent") or ""
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


_CHUNK = 65536


def _read(folder: int, name: str) -> str | None:
    """The stripped text of a file in ``folder``; None when it is missing or unreadable."""
    return _read_file(folder, name)[1]


def _read_file(folder: int, name: str) -> tuple[bool, str | None]:
    """Whether the file exists, and its stripped text (None when missing or unreadable)."""
    try:
        fd = os.open(name, os.O_RDONLY, dir_fd=folder)
    except FileNotFoundError:
        return False, None
    except OSError:  # there, but not readable by this user
        return True, None
    try:
        data = os.read(fd, _CHUNK)  # a sysfs attribute comes whole in one read (at most a page)
        if len(data) == _CHUNK:  # a larger regular file (fake trees): read to its end
            parts = [data]
            while chunk := os.read(fd, _CHUNK):
                parts.append(chunk)
            data = b"".join(parts)
    except OSError:  # vanished mid-read
        return False, None
    finally:
        os.close(fd)
    return True, data.decode(errors="replace").strip()  # an ifalias may hold any bytes


def _is_dir(folder: int, name: str) -> bool:
    try:
        return stat.S_ISDIR(os.stat(name, dir_fd=folder).st_mode)
    except OSError:
        return False


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
