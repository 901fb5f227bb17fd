"""Every KubeVirt and Multus name rule, and every MAC rule of the pod side, in one place,
pinned by table tests.

KubeVirt derives pod-side names from the VMI network name (hashed scheme, with the
older ordinal ``net<N>`` scheme detected from network-status); Multus names pod
interfaces ``eth0`` for the main network and ``net<position>`` otherwise. The MACs are
the binding's swap (:func:`swapped_mac`), the kernel's rule for a bridge
(:func:`bridge_mac`), and the stand-in for a MAC chosen out of kvnet's sight
(:func:`stand_in_mac`).
"""

from __future__ import annotations

import enum
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


def swapped_mac(original: str) -> str:
    """The pod link's MAC in bridge mode: locally administered, unicast, stable, != original.

    KubeVirt's MAC swap: the guest takes the pod link's original MAC, so the pod link takes
    this one (derived by a hash, so a repeated ADD computes the same one and CHECK can
    compare it).
    """
    digest = hashlib.sha256(original.lower().encode()).digest()
    octets = [(digest[0] & 0xFC) | 0x02, *digest[1:6]]
    mac = ":".join(f"{b:02x}" for b in octets)
    if mac == original.lower():
        octets[5] ^= 0x01
        mac = ":".join(f"{b:02x}" for b in octets)
    return mac


def stand_in_mac(seed: str) -> str:
    """A stable, locally administered unicast MAC standing in for one kvnet cannot know.

    The kernel gives a new tap a random MAC, and offline nobody has asked the attachment's
    plugin for its MAC yet; a model of the pod takes ``02:`` + sha256(seed)[:5] instead.
    """
    digest = hashlib.sha256(seed.encode()).digest()
    return "02:" + ":".join(f"{b:02x}" for b in digest[:5])


def bridge_mac(port_macs: Iterable[str]) -> str:
    """The MAC a Linux bridge takes while none was set on it: the lowest of its ports'."""
    return min(mac.lower() for mac in port_macs)


ALIAS_PREFIX = "ua-"  # KubeVirt's user alias of a domain device
SRIOV_ALIAS_PREFIX = "ua-sriov-"


def interface_alias(vmi_iface: str) -> str:
    """The domain alias of a VMI interface's ``<interface>``: ``ua-<name>``."""
    return ALIAS_PREFIX + vmi_iface


def sriov_alias(vmi_iface: str) -> str:
    """The domain alias of a VMI interface's SR-IOV ``<hostdev>``: ``ua-sriov-<name>``."""
    return SRIOV_ALIAS_PREFIX + vmi_iface


def alias_interface(alias: str | None, *, sriov: bool = False) -> str | None:
    """The VMI interface an alias names (the inverse of the two above), or None."""
    prefix = SRIOV_ALIAS_PREFIX if sriov else ALIAS_PREFIX
    if not alias or not alias.startswith(prefix) or len(alias) == len(prefix):
        return None
    return alias[len(prefix) :]


def multus_ifname(requested: str | None, position: int, is_main: bool) -> str:
    """Multus: the requested name, else ``eth0`` for the main network, else ``net<pos>``.

    ``position`` counts the full delegate list, the main network included at 0.
    """
    if requested:
        return requested
    return PRIMARY_POD_IFACE if is_main else ordinal_pod_iface(position)


class IfnameFault(enum.Enum):
    """What makes a string no interface name (the CNI spec's and the kernel's rules)."""

    EMPTY = "empty"
    TOO_LONG = "too long"
    DOT = ". or .."
    BAD_CHAR = "contains / or : or whitespace"


def ifname_fault(name: object) -> IfnameFault | None:
    """The one interface-name rule; each boundary words the fault its own way."""
    if not isinstance(name, str) or not name:
        return IfnameFault.EMPTY
    if len(name.encode("utf-8", "surrogateescape")) > MAX_IFNAME:  # bytes, as the kernel counts
        return IfnameFault.TOO_LONG
    if name in (".", ".."):
        return IfnameFault.DOT
    if _IFNAME_BAD.search(name):
        return IfnameFault.BAD_CHAR
    return None


def ifname_problem(name: object) -> str | None:
    """Why ``name`` is not a valid interface name (kvnet's wording), or None."""
    fault = ifname_fault(name)
    if fault is None:
        return None
    if fault is IfnameFault.EMPTY:
        return "interface name is empty"
    if fault is IfnameFault.TOO_LONG:
        return f"interface name {name!r} is longer than {MAX_IFNAME} characters"
    if fault is IfnameFault.DOT:
        return f"interface name {name!r} is . or .."
    return f"interface name {name!r} contains / or : or whitespace"


def cni_name_ok(name: object) -> bool:
    """Container IDs and network names: ``^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$`` (CNI spec)."""
    return isinstance(name, str) and bool(_CNI_NAME_RE.fullmatch(name))


NAME_MAX = 255  # bytes in one file name (Linux's NAME_MAX): every cache file kvnet names
# The longest container ID whose libcni results file <network>-<containerID>-<ifname> fits in
# NAME_MAX with any interface name and a one-character network name.
MAX_CONTAINER_ID = NAME_MAX - MAX_IFNAME - 3


def name_bytes(name: str) -> int:
    """The length of ``name`` as the kernel counts it (UTF-8 bytes, undecodable bytes kept)."""
    return len(name.encode("utf-8", "surrogateescape"))


def libcni_cache_name(network_name: str, container_id: str, ifname: str) -> str:
    """libcni's results-cache file name: ``<network>-<containerID>-<ifname>``."""
    return f"{network_name}-{container_id}-{ifname}"


def file_name_fits(name: str) -> bool:
    """True when ``name`` can be one file name (at most ``NAME_MAX`` bytes)."""
    return name_bytes(name) <= NAME_MAX


def path_segment_problem(name: str) -> str | None:
    """apimachinery's ``IsValidPathSegmentName`` in client-go's words (``[may not be '.']``),
    or None: a name that cannot be one segment of an API URL (client-go refuses to send it)."""
    if name in (".", ".."):
        return f"[may not be '{name}']"
    found = [f"may not contain '{c}'" for c in ("/", "%") if c in name]
    return f"[{' '.join(found)}]" if found else None
