"""A fake pod for the sidecar: a /sys/class/net tree as kvnet.sidecar.podfacts reads it, and
KubeVirt's network-info JSON.

The links look like what kvnet-binding leaves in the pod netns for a bridge attachment
(docs/design.md §4): the ``k6t-`` bridge, the pod interface carrying the binding record in its
``ifalias`` and enslaved to the bridge, and ``tap<x>``. Used by the sidecar tests and the
sidecar bench; no root needed, the tree is plain files under a folder of the caller's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kvnet.core import bindrecord
from kvnet.core.model import BindingRecord, GuestIpConfig
from kvnet.core.naming import bridge_name, hashed_pod_iface, tap_name


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


def add_bridge_binding(
    root: Path, network: str, *, original_mac: str, mtu: int = 1500, ip: GuestIpConfig = GuestIpConfig()
) -> None:
    """What kvnet-binding leaves for a bridge-path attachment of ``network`` (docs/design.md §4)."""
    pod = hashed_pod_iface(network)
    br = bridge_name(pod)
    record = bindrecord.encode(BindingRecord(original_mac=original_mac, mtu=mtu, ip=ip))
    write_link(root, br, mac="02:6b:36:00:00:01", mtu=mtu, devtype="bridge")
    write_link(root, pod, mac="02:6b:36:00:00:02", mtu=mtu, ifalias=record, master=br)
    write_link(root, tap_name(pod), mac="fe:6b:36:00:00:03", mtu=mtu, tun_flags="0x1002", master=br)


def network_info(entries: Mapping[str, Mapping[str, Any]]) -> str:
    """KubeVirt's network-info JSON, sorted by network."""
    return json.dumps({"interfaces": [{"network": n, **e} for n, e in sorted(entries.items())]})
