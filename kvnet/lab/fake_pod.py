"""A fake pod for the sidecar: a /sys/class/net tree as kvnet.sidecar.podfacts reads it, and
KubeVirt's network-info JSON.

The links are what kvnet-binding leaves in the pod netns (docs/design.md §4), written from
the binding's own model of it, ``kvnet.core.plumbing``: :func:`write_plumbing` writes the
links of any plumbing kind, :func:`add_bridge_binding` those of a bridge attachment (the
``k6t-`` bridge, the pod interface carrying the binding record in its ``ifalias`` and
enslaved to the bridge, and ``tap<x>``). Used by the sidecar tests and the sidecar bench;
no root needed, the tree is plain files under a folder of the caller's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kvnet.core import bindrecord
from kvnet.core.model import BindingRecord, GuestIpConfig, PodLink
from kvnet.core.naming import hashed_pod_iface
from kvnet.core.plumbing import BridgedTap, Plumbing

# tun_flags of a tap as kvnet-binding makes it: IFF_TAP | IFF_NO_PI | IFF_PERSIST | IFF_VNET_HDR,
# plus IFF_MULTI_QUEUE for a multi-queue one (what this kernel shows for such taps)
TUN_FLAGS = "0x5802"
TUN_FLAGS_MULTI_QUEUE = "0x5902"
# kinds sysfs shows in uevent's DEVTYPE; veth, macvlan and ipvlan show nothing of their own
# (the sidecar asks the ethtool ioctl, which a fake tree cannot answer), so they read back as ""
_DEVTYPES = {"bridge": "bridge", "vlan": "vlan", "bond": "bond", "vxlan": "vxlan"}


def write_link(
    root: Path,
    name: str,
    *,
    mac: str,
    mtu: int = 1500,
    up: bool = True,
    tun_flags: str | None = None,
    ifalias: str = "",
    master: str | None = None,
    devtype: str | None = None,
) -> None:
    """One link folder (``address``, ``mtu``, ``type``, ``flags``, ``ifalias``, ``uevent``;
    ``tun_flags`` for a tap, ``bridge/`` for a bridge, ``master`` as the kernel's relative link)."""
    d = root / name
    d.mkdir(parents=True)
    (d / "address").write_text(mac + "\n")
    (d / "mtu").write_text(f"{mtu}\n")
    (d / "type").write_text("1\n")
    (d / "flags").write_text("0x1003\n" if up else "0x1002\n")
    (d / "ifalias").write_text(ifalias + "\n")
    (d / "uevent").write_text(f"DEVTYPE={devtype}\nINTERFACE={name}\n" if devtype else f"INTERFACE={name}\n")
    if tun_flags is not None:
        (d / "tun_flags").write_text(tun_flags + "\n")
    if devtype == "bridge":
        (d / "bridge").mkdir()
    if master is not None:
        os.symlink(f"../{master}", d / "master")


def write_pod_link(root: Path, link: PodLink) -> None:
    """The sysfs folder of ``link``: read back by ``kvnet.sidecar.podfacts`` as ``link`` itself,
    except a kind sysfs cannot show (veth, macvlan, ipvlan: ``""``)."""
    tun_flags = (TUN_FLAGS_MULTI_QUEUE if link.multi_queue else TUN_FLAGS) if link.kind == "tun" else None
    write_link(
        root,
        link.name,
        mac=link.mac,
        mtu=link.mtu,
        up=link.up,
        tun_flags=tun_flags,
        ifalias=bindrecord.encode(link.record) if link.record is not None else "",
        master=link.master,
        devtype=_DEVTYPES.get(link.kind),
    )
    if link.kind == "macvtap":
        (root / link.name / "macvtap").mkdir()
    if link.master is not None:
        (root / link.name / "brport").mkdir()


def write_plumbing(root: Path, *plumbings: Plumbing) -> None:
    """The links each attachment's plumbing leaves in the pod (``kvnet.core.plumbing``)."""
    for plumbing in plumbings:
        for link in plumbing.links():
            write_pod_link(root, link)


def add_bridge_binding(
    root: Path, network: str, *, original_mac: str, mtu: int = 1500, ip: GuestIpConfig = GuestIpConfig()
) -> None:
    """What kvnet-binding leaves for a bridge-path attachment of ``network`` (docs/design.md §4)."""
    record = BindingRecord(original_mac=original_mac, mtu=mtu, ip=ip)
    write_plumbing(root, BridgedTap(hashed_pod_iface(network), record))


def network_info(entries: Mapping[str, Mapping[str, Any]]) -> str:
    """KubeVirt's network-info JSON, sorted by network."""
    return json.dumps({"interfaces": [{"network": n, **e} for n, e in sorted(entries.items())]})
