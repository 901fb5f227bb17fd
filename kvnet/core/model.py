"""The shared vocabulary of kvnet: frozen dataclasses, no I/O.

Two families live here. The Multus side (what a pod asks for and what it got):
``NetworkSelection``, ``DeviceInfo``, ``NetworkStatus``. The VM side (what the guest
gets and what the pod shows): ``TapNic``, ``HostdevNic``, ``VhostUserNic``, ``GuestBond`` and the pod facts
the sidecar can read (``PodLink``, ``BindingRecord``, ``NetworkInfoEntry``). The CNI
programs and the sidecar share only this module and ``kvnet.core.naming``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kvnet.core import naming
from kvnet.core.errors import DeviceError

# ------------------------------------------------------------------------------------
# Multus side
# ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NetworkSelection:
    """One element of the ``k8s.v1.cni.cncf.io/networks`` annotation.

    Keys and meanings are Multus's ``NetworkSelectionElement``; ``namespace`` is always
    filled (the pod's namespace when the annotation omits it).
    """

    name: str
    namespace: str
    interface: str | None = None
    ips: tuple[str, ...] = ()
    mac: str | None = None
    infiniband_guid: str | None = None
    port_mappings: tuple[Mapping[str, Any], ...] = ()
    bandwidth: Mapping[str, Any] | None = None
    device_id: str | None = None
    cni_args: Mapping[str, Any] | None = None
    default_route: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeviceInfo:
    """A device-info spec object (k8snetworkplumbingwg device-info-spec 1.1.0).

    ``raw`` keeps the full object as read so unknown fields survive a round trip;
    ``pci_address`` is ``raw["pci"]["pci-address"]`` when the type is ``pci``.
    """

    type: str
    version: str
    raw: Mapping[str, Any] = field(default_factory=dict)

    @property
    def pci_address(self) -> str | None:
        pci = self.raw.get("pci")
        if isinstance(pci, Mapping):
            addr = pci.get("pci-address")
            return addr if isinstance(addr, str) else None
        return None


@dataclass(frozen=True)
class NetworkStatus:
    """One element of the ``k8s.v1.cni.cncf.io/network-status`` annotation."""

    name: str
    interface: str | None = None
    ips: tuple[str, ...] = ()
    mac: str | None = None
    mtu: int | None = None
    default: bool = False
    dns: Mapping[str, Any] = field(default_factory=dict)
    device_info: DeviceInfo | None = None
    gateway: tuple[str, ...] = ()


# ------------------------------------------------------------------------------------
# Addresses shared by both sides
# ------------------------------------------------------------------------------------

_PCI_RE = re.compile(
    r"^(?P<domain>[0-9a-fA-F]{4}):(?P<bus>[0-9a-fA-F]{2}):(?P<slot>[0-9a-fA-F]{2})\.(?P<function>[0-7])$"
)
_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


@dataclass(frozen=True)
class PciAddress:
    """A PCI address ``DDDD:BB:SS.F`` (libvirt's ``<address domain bus slot function>``)."""

    domain: int
    bus: int
    slot: int
    function: int

    @classmethod
    def parse(cls, text: str) -> PciAddress:
        m = _PCI_RE.fullmatch(text.strip()) if isinstance(text, str) else None
        if not m or int(m["slot"], 16) > 0x1F:
            raise DeviceError(f"invalid PCI address {text!r}: expected DDDD:BB:SS.F")
        return cls(int(m["domain"], 16), int(m["bus"], 16), int(m["slot"], 16), int(m["function"]))

    def __str__(self) -> str:
        return f"{self.domain:04x}:{self.bus:02x}:{self.slot:02x}.{self.function:x}"

    def xml_attrs(self) -> dict[str, str]:
        """Attributes as libvirt writes them (``0x`` hex)."""
        return {
            "domain": f"0x{self.domain:04x}",
            "bus": f"0x{self.bus:02x}",
            "slot": f"0x{self.slot:02x}",
            "function": f"0x{self.function:x}",
        }


def is_mac(text: object) -> bool:
    """True for a colon-separated 48-bit MAC address."""
    return isinstance(text, str) and bool(_MAC_RE.fullmatch(text))


# ------------------------------------------------------------------------------------
# VM side: what the guest gets
# ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GuestIpConfig:
    """Layer-3 settings the guest should apply on one NIC (from the attachment's IPAM)."""

    addresses: tuple[str, ...] = ()  # CIDR, e.g. "10.1.0.5/24"
    gateways: tuple[str, ...] = ()
    routes: tuple[tuple[str, str], ...] = ()  # (destination CIDR, via)


@dataclass(frozen=True)
class TapNic:
    """A NIC backed by a tap (or a macvtap) in the pod: libvirt ``<interface type="ethernet">``.

    Guest side: alias, mac, model, mtu, pci_address, acpi_index, boot_order, link_up,
    queues. Host side: ``target`` (the tap or macvtap name, ``managed="no"``).
    """

    name: str  # the VMI interface (= network) name
    target: str
    mac: str
    model: str = "virtio-non-transitional"
    mtu: int | None = None
    pci_address: PciAddress | None = None
    acpi_index: int | None = None
    boot_order: int | None = None
    link_up: bool = True
    queues: int | None = None
    ip: GuestIpConfig = field(default_factory=GuestIpConfig)

    @property
    def alias(self) -> str:
        return naming.interface_alias(self.name)


@dataclass(frozen=True)
class HostdevNic:
    """An SR-IOV VF passed through whole: libvirt ``<hostdev mode="subsystem" type="pci">``.

    Host side: ``source`` (the VF's PCI address on the node). Guest side: alias,
    pci_address, boot_order; the MAC is programmed on the VF by sriov-cni and is kept
    here only so a guest bond can match the member.
    """

    name: str
    source: PciAddress
    mac: str | None = None
    pci_address: PciAddress | None = None
    boot_order: int | None = None
    ip: GuestIpConfig = field(default_factory=GuestIpConfig)
    rendered_by_kubevirt: bool = False  # a ``sriov: {}`` interface: already in the domain

    @property
    def alias(self) -> str:
        return naming.sriov_alias(self.name)


@dataclass(frozen=True)
class VhostUserNic:
    """A virtio NIC whose backend is a vhost-user socket: libvirt ``<interface type="vhostuser">``.

    Host side: ``socket_path`` and ``mode``, QEMU's role on the socket as libvirt's
    ``<source type="unix" mode>`` means it (``server``: QEMU listens, ``client``: QEMU
    connects); the device-info's ``mode`` names the other side (docs/vhost-user.md).
    Guest side as for a tap NIC; ``mac`` is None when neither the VMI nor network-info
    has one (libvirt then picks one).
    """

    name: str
    socket_path: str
    mode: str
    mac: str | None = None
    model: str = "virtio-non-transitional"
    mtu: int | None = None
    pci_address: PciAddress | None = None
    acpi_index: int | None = None
    boot_order: int | None = None
    link_up: bool = True
    queues: int | None = None
    ip: GuestIpConfig = field(default_factory=GuestIpConfig)

    @property
    def alias(self) -> str:
        return naming.interface_alias(self.name)


VmNic = TapNic | HostdevNic | VhostUserNic


@dataclass(frozen=True)
class GuestBond:
    """A bond inside the guest over member NICs, declared in cloud-init network data v2.

    Members are matched in the guest by MAC, so every member has a MAC.
    """

    name: str
    members: tuple[VmNic, ...]
    mode: str = "active-backup"
    miimon: int | None = 100
    fail_over_mac: str | None = None
    ip: GuestIpConfig = field(default_factory=GuestIpConfig)


@dataclass(frozen=True)
class VmNicPlan:
    """Everything one VMI gets from kvnet: devices for the domain and the guest bonds."""

    nics: tuple[VmNic, ...] = ()
    bonds: tuple[GuestBond, ...] = ()


# ------------------------------------------------------------------------------------
# VM side: what the pod shows (the facts the sidecar can read, docs/design.md §4)
# ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BindingRecord:
    """What the binding CNI leaves in the pod netns about the attachment it re-plumbed.

    The guest takes over the pod interface's original MAC and IPAM addresses; the pod
    stops answering for them, so they are kept here (encoded by ``kvnet.core.bindrecord``).
    """

    original_mac: str
    mtu: int
    ip: GuestIpConfig = field(default_factory=GuestIpConfig)
    version: int = 1


@dataclass(frozen=True)
class PodLink:
    """One link in the pod netns as the sidecar can see it (netlink / /sys/class/net)."""

    name: str
    mac: str
    mtu: int
    kind: str = ""  # "veth", "bridge", "tun", "macvtap", "macvlan", ... ("" unknown)
    master: str | None = None
    up: bool = True
    multi_queue: bool = False  # tun/tap: IFF_MULTI_QUEUE in tun_flags
    record: BindingRecord | None = None


# The pod link kinds the binding plumbs in redirect mode (tc mirred both ways between the
# pod link and the tap, no bridge, no MAC swap): a macvlan or ipvlan lower device delivers
# only the link's own MAC, so the guest must keep it. Every other kind gets bridge mode.
# The binding CNI decides the mode from it and the translation checks the guest MAC by it.
REDIRECT_KINDS: frozenset[str] = frozenset({"macvlan", "ipvlan"})


@dataclass(frozen=True)
class NetworkInfoEntry:
    """One element of KubeVirt's ``kubevirt.io/network-info`` (``interfaces[]``)."""

    network: str
    device_info: DeviceInfo | None = None
    mac: str | None = None
    mtu: int | None = None


@dataclass(frozen=True)
class PodFacts:
    """Everything the translation may know about the pod: links and network-info."""

    links: Mapping[str, PodLink] = field(default_factory=dict)
    network_info: Mapping[str, NetworkInfoEntry] = field(default_factory=dict)
