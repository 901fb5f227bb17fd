"""Every KubeVirt and Multus name rule in one place, pinned by table tests.

KubeVirt derives pod-side names from the VMI network name (hashed scheme, with the
older ordinal ``net<N>`` scheme detected from network-status); Multus names pod
interfaces ``eth0`` for the main network and ``net<position>`` otherwise.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

PRIMARY_POD_IFACE = "eth0"
HASHED_PREFIX = "pod"
ORDINAL_RE = re.compile(r"^net\d+$")
MAX_IFNAME = 15

_IFNAME_BAD = re.compile(r"[/:\s]")
_CNI_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")


def hashed_pod_iface(network_name: str) -> str:
    """KubeVirt's secondary pod interface name: ``pod`` + sha256(name)[:11]."""
    return HASHED_PREFIX + hashlib.sha256(network_name.encode()).hexdigest()[:11]


def ordinal_pod_iface(position: int) -> str:
    """The older scheme, and Multus's default: ``net<N>`` (1-based position)."""
    return f"net{position}"


def uses_ordinal_names(interface_names: Iterable[str]) -> bool:
    """KubeVirt treats a pod as ordinal-named when any status interface is ``net<N>``."""
    return any(ORDINAL_RE.fullmatch(n) for n in interface_names)


def tap_name(pod_iface: str) -> str:
    """The tap for a pod interface: ``tap`` + name[3:] (``eth0`` → ``tap0``)."""
    return "tap" + pod_iface[3:]


def _suffix(pod_iface: str) -> str:
    return pod_iface[len(HASHED_PREFIX) :] if pod_iface.startswith(HASHED_PREFIX) else pod_iface


def bridge_name(pod_iface: str) -> str:
    """The in-pod bridge KubeVirt names ``k6t-<iface without "pod">``."""
    return "k6t-" + _suffix(pod_iface)


def renamed_nic(pod_iface: str) -> str:
    """KubeVirt's name for the original pod NIC once it is enslaved: ``<x>-nic``."""
    return _suffix(pod_iface) + "-nic"


def interface_alias(vmi_iface: str) -> str:
    return f"ua-{vmi_iface}"


def sriov_alias(vmi_iface: str) -> str:
    return f"ua-sriov-{vmi_iface}"


def multus_ifname(requested: str | None, position: int, is_main: bool) -> str:
    """Multus: the requested name, else ``eth0`` for the main network, else ``net<pos>``.

    ``position`` counts the full delegate list, the main network included at 0.
    """
    if requested:
        return requested
    return PRIMARY_POD_IFACE if is_main else ordinal_pod_iface(position)


def ifname_problem(name: object) -> str | None:
    """Why ``name`` is not a valid interface name (CNI spec rules), or None."""
    if not isinstance(name, str) or not name:
        return "interface name is empty"
    if len(name.encode("utf-8", "surrogateescape")) > MAX_IFNAME:  # bytes, as the kernel counts
        return f"interface name {name!r} is longer than {MAX_IFNAME} characters"
    if name in (".", ".."):
        return f"interface name {name!r} is . or .."
    if _IFNAME_BAD.search(name):
        return f"interface name {name!r} contains / or : or whitespace"
    return None


def cni_name_ok(name: object) -> bool:
    """Container IDs and network names: ``^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$`` (CNI spec)."""
    return isinstance(name, str) and bool(_CNI_NAME_RE.fullmatch(name))
