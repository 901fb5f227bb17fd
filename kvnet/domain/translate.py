"""VMI + pod facts → the VM's NICs. Pure: no I/O, every fact comes in as data.

For each interface bound to kvnet (``binding: {name: kvnet}``) the pod side decides
the NIC kind:

- a tap ``tap<x>`` made by the binding CNI → a tap NIC on it (``<interface type="ethernet">``);
- the pod interface itself is a macvtap (made by macvtap-cni) → a tap NIC targeting it;
- no pod interface, but network-info carries a PCI device-info (a VFIO VF) → a PCI hostdev;
- network-info carries a ``vhost-user`` device-info → a virtio NIC on that socket
  (``<interface type="vhostuser">``), whatever links the pod has: the attachment's own
  plugin said what it made (docs/vhost-user.md).

Anything else is a :class:`TranslationError` naming the interface and what is missing.
Bonds (``kvnet.io/bonds``) add ``sriov: {}`` members whose hostdevs KubeVirt renders itself.

Which pod links the translation looks at is data too (:func:`pod_link_query`), so the sidecar
reads exactly those before it translates (docs/design.md §4).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from kvnet.core import naming
from kvnet.core.errors import DeviceError, InvalidConfig, TranslationError
from kvnet.core.model import (
    REDIRECT_KINDS,
    BindingRecord,
    GuestBond,
    GuestIpConfig,
    HostdevNic,
    PciAddress,
    PodFacts,
    PodLink,
    TapNic,
    VhostUserNic,
    VmNic,
    VmNicPlan,
)
from kvnet.domain.bonds import BondSpec, vmi_bonds
from kvnet.domain.vhostuser import VhostUserSocket, from_device_info
from kvnet.domain.vmi import MAX_QUEUES, Vmi, VmiInterface, VmiNetwork

VIRTIO_MODELS = ("virtio", "virtio-transitional", "virtio-non-transitional")
# Source of an ``sriov: {}`` bond member when only its guest side matters (guest network
# data, computed without the domain); such hostdevs are KubeVirt's and never rendered.
UNKNOWN_SOURCE = PciAddress(0xFFFF, 0xFF, 0x1F, 7)


def pod_iface_name(vmi: Vmi, network: VmiNetwork, facts: PodFacts, *, ordinal: bool | None = None) -> str:
    """KubeVirt's pod interface for a VMI network: eth0, ``pod<hash>``, or ordinal ``net<N>``.

    The ordinal scheme is detected as KubeVirt does: some pod interface is named ``net<N>``.
    ``ordinal`` is that answer when the caller already has it (it is the same for every
    interface of a pod, so :func:`plan_vm_nics` decides it once, not once per NIC).
    """
    if network.default:
        return naming.PRIMARY_POD_IFACE
    if naming.uses_ordinal_names(facts.links) if ordinal is None else ordinal:
        return naming.ordinal_pod_iface(vmi.secondary_position(network.name))
    return naming.hashed_pod_iface(network.name)


@dataclass(frozen=True)
class AttachmentLinks:
    """The pod links the translation looks at for one kvnet interface, in the order it looks.

    Always the tap and the pod interface; the binding record is taken from the first of
    ``record_on`` that carries one (the pod interface, where kvnet-binding writes it, then
    KubeVirt's renamed NIC, the bridge and the tap).
    """

    pod_iface: str
    tap: str
    record_on: tuple[str, ...]

    @classmethod
    def of(cls, pod_iface: str) -> AttachmentLinks:
        tap = naming.tap_name(pod_iface)
        return cls(pod_iface, tap, (pod_iface, naming.renamed_nic(pod_iface), naming.bridge_name(pod_iface), tap))


@dataclass(frozen=True)
class PodLinkQuery:
    """Which pod links translating one VMI looks at: what the sidecar reads before translating.

    ``hashed`` gives each kvnet interface's links in a pod of KubeVirt's hashed names,
    ``ordinal`` in a pod of the older ``net<N>`` names; ``ordinal`` is None when no interface's
    names depend on the scheme (all on the pod network). A pod is ordinal when one of its links
    is named ``net<N>`` (:func:`pod_iface_name`); that link is then a fact the translation reads.
    """

    hashed: tuple[AttachmentLinks, ...] = ()
    ordinal: tuple[AttachmentLinks, ...] | None = None

    def attachments(self, *, ordinal: bool) -> tuple[AttachmentLinks, ...]:
        return self.ordinal if ordinal and self.ordinal is not None else self.hashed


def pod_link_query(vmi: Vmi, *, binding_name: str = "kvnet") -> PodLinkQuery:
    """The links :func:`plan_vm_nics` looks at for ``vmi``, under either naming scheme."""
    hashed: list[AttachmentLinks] = []
    ordinal: list[AttachmentLinks] = []
    scheme_matters = False
    for iface in vmi.interfaces:
        if iface.state == "absent" or iface.kind != "binding" or iface.binding != binding_name:
            continue
        network = vmi.network(iface.name)
        scheme_matters = scheme_matters or not network.default
        hashed.append(AttachmentLinks.of(pod_iface_name(vmi, network, PodFacts(), ordinal=False)))
        ordinal.append(AttachmentLinks.of(pod_iface_name(vmi, network, PodFacts(), ordinal=True)))
    return PodLinkQuery(tuple(hashed), tuple(ordinal) if scheme_matters else None)


def guest_model(iface: VmiInterface, vmi: Vmi) -> str:
    """KubeVirt's rule: no model or ``virtio`` → virtio-(non-)transitional; others pass through."""
    if iface.model in (None, "virtio"):
        return "virtio-transitional" if vmi.virtio_transitional else "virtio-non-transitional"
    return iface.model


def _record(pod_iface: str, links: Mapping[str, PodLink]) -> BindingRecord | None:
    """The binding CNI's record, on whichever link of this attachment carries it."""
    for name in AttachmentLinks.of(pod_iface).record_on:
        link = links.get(name)
        if link is not None and link.record is not None:
            return link.record
    return None


def _queues(iface: VmiInterface, vmi: Vmi, model: str, link: PodLink) -> int | None:
    if not vmi.multiqueue or model not in VIRTIO_MODELS:
        return None
    if not link.multi_queue:
        raise TranslationError(
            f"interface {iface.name!r}: the VMI asks for networkInterfaceMultiqueue but {link.name} is not a multi-queue tap "
            "(set multiQueue in the binding's NetworkAttachmentDefinition)"
        )
    return min(vmi.vcpus, MAX_QUEUES)


def _tap(
    iface: VmiInterface, vmi: Vmi, link: PodLink, *, mac: str, mtu: int, ip: GuestIpConfig = GuestIpConfig()
) -> TapNic:
    """A tap NIC on ``link`` (a tap or a macvtap) with the VMI's guest-side fields."""
    model = guest_model(iface, vmi)
    return TapNic(
        name=iface.name,
        target=link.name,
        mac=mac.lower(),
        model=model,
        mtu=mtu,
        pci_address=iface.pci_address,
        acpi_index=iface.acpi_index,
        boot_order=iface.boot_order,
        link_up=iface.state != "down",
        queues=_queues(iface, vmi, model, link),
        ip=ip,
    )


def vhost_user_socket(iface_name: str, facts: PodFacts) -> VhostUserSocket | None:
    """The checked socket of the interface's ``vhost-user`` device-info in network-info, else None.

    A malformed one is ``InvalidConfig`` (7) naming the interface.
    """
    info = facts.network_info.get(iface_name)
    if info is None or info.device_info is None or info.device_info.type != "vhost-user":
        return None
    try:
        return from_device_info(info.device_info.raw)
    except InvalidConfig as err:
        raise InvalidConfig(f"interface {iface_name!r}: {err.msg}", err.details) from None


def _vhost_user(iface: VmiInterface, vmi: Vmi, facts: PodFacts, socket: VhostUserSocket) -> VhostUserNic:
    """A virtio NIC on the attachment's vhost-user socket; QEMU takes the other end of the backend's role."""
    model = guest_model(iface, vmi)
    if model not in VIRTIO_MODELS:
        raise TranslationError(
            f"interface {iface.name!r}: model {model!r} on a vhost-user attachment; vhost-user is virtio only "
            f"({', '.join(VIRTIO_MODELS)})"
        )
    info = facts.network_info.get(iface.name)
    mac = iface.mac or (info.mac if info else None)
    return VhostUserNic(
        name=iface.name,
        socket_path=socket.path,
        mode=socket.qemu_mode,
        mac=mac.lower() if mac else None,
        model=model,
        mtu=info.mtu if info else None,
        pci_address=iface.pci_address,
        acpi_index=iface.acpi_index,
        boot_order=iface.boot_order,
        link_up=iface.state != "down",
        # no tap to ask: the backend's queues are its own business, QEMU offers one pair per vCPU
        queues=min(vmi.vcpus, MAX_QUEUES) if vmi.multiqueue else None,
    )


def _vm_nic(iface: VmiInterface, vmi: Vmi, facts: PodFacts, pod_iface: str) -> VmNic:
    """The NIC for one kvnet-bound interface; the pod side decides its kind."""
    socket = vhost_user_socket(iface.name, facts)
    if socket is not None:
        return _vhost_user(iface, vmi, facts, socket)
    links = facts.links
    tap = naming.tap_name(pod_iface)
    info = facts.network_info.get(iface.name)
    pod_link = links.get(pod_iface)
    if tap in links:
        record = _record(pod_iface, links)
        mac = iface.mac or (record.original_mac if record else None) or (info.mac if info else None)
        if mac is None:
            raise TranslationError(
                f"interface {iface.name!r}: no MAC for tap {tap}: no macAddress in the VMI, no binding record in the pod and no mac in network-info"
            )
        _check_redirect_mac(iface, pod_link, links[tap], mac)
        if record is None:
            return _tap(iface, vmi, links[tap], mac=mac, mtu=links[tap].mtu)
        return _tap(iface, vmi, links[tap], mac=mac, mtu=record.mtu, ip=record.ip)
    if pod_link is not None and pod_link.kind == "macvtap":
        return _tap(iface, vmi, pod_link, mac=iface.mac or pod_link.mac, mtu=pod_link.mtu)
    if pod_link is not None:
        raise TranslationError(
            f"interface {iface.name!r}: pod interface {pod_iface} has no tap {tap} (was the kvnet binding CNI run for it?) and is not a macvtap"
        )
    return _vfio_hostdev(iface, facts, f"pod interface {pod_iface} and tap {tap} are absent")


def _vfio_hostdev(iface: VmiInterface, facts: PodFacts, absent: str) -> HostdevNic:
    """A VF bound to vfio-pci: nothing in the pod, its PCI address in network-info."""
    info = facts.network_info.get(iface.name)
    source = _pci_source(iface.name, facts)
    if source is None:
        if info is None:
            raise TranslationError(
                f"interface {iface.name!r}: {absent} and network-info has no entry for it "
                "(an SR-IOV NIC needs downwardAPI: device-info in the binding)"
            )
        raise TranslationError(f"interface {iface.name!r}: {absent} and its network-info entry has no PCI device-info")
    for what, value in (
        ("model", iface.model),
        ("acpiIndex", iface.acpi_index),
        ("state", "down" if iface.state == "down" else None),
    ):
        if value is not None:
            raise TranslationError(
                f"interface {iface.name!r}: {what} {value!r} does not apply to a PCI hostdev (the guest sees the VF itself)"
            )
    mac = iface.mac or (info.mac if info else None)
    return HostdevNic(
        name=iface.name,
        source=source,
        mac=mac.lower() if mac else None,
        pci_address=iface.pci_address,
        boot_order=iface.boot_order,
    )


def _check_redirect_mac(iface: VmiInterface, pod_link: PodLink | None, tap: PodLink, mac: str) -> None:
    """Redirect mode (tap not in a bridge, pod link a macvlan): the guest must use the pod link's MAC.

    A macvlan only receives frames for its own MAC, so a different guest MAC gets nothing back.
    """
    if pod_link is None or pod_link.kind not in REDIRECT_KINDS or tap.master is not None:
        return
    if mac.lower() != pod_link.mac.lower():
        raise TranslationError(
            f"interface {iface.name!r}: pod interface {pod_link.name} is a {pod_link.kind} redirected to {tap.name}, which only receives "
            f"frames for its own MAC {pod_link.mac}, but the guest would use {mac.lower()} (give the attachment the VMI's macAddress, "
            "or drop macAddress)"
        )


def _pci_source(name: str, facts: PodFacts) -> PciAddress | None:
    info = facts.network_info.get(name)
    if info is None or info.device_info is None or info.device_info.type != "pci":
        return None
    addr = info.device_info.pci_address
    if addr is None:
        return None
    try:
        return PciAddress.parse(addr)
    except DeviceError:
        raise TranslationError(f"interface {name!r}: network-info pci-address {addr!r} is not a PCI address") from None


def _sriov_member(
    iface: VmiInterface, facts: PodFacts, kubevirt_hostdevs: Mapping[str, PciAddress], bond: str, need_source: bool
) -> HostdevNic:
    alias = naming.sriov_alias(iface.name)
    source = kubevirt_hostdevs.get(alias) or _pci_source(iface.name, facts)
    if source is None and not need_source:
        source = UNKNOWN_SOURCE
    if source is None:
        raise TranslationError(
            f"interface {iface.name!r} (member of bond {bond!r}): an sriov interface, but the domain has no hostdev {alias} "
            "and network-info has no PCI address for it"
        )
    return HostdevNic(
        name=iface.name,
        source=source,
        mac=iface.mac,
        pci_address=iface.pci_address,
        boot_order=iface.boot_order,
        rendered_by_kubevirt=True,
    )


def plan_vm_nics(
    vmi: Vmi,
    facts: PodFacts,
    *,
    binding_name: str = "kvnet",
    kubevirt_hostdevs: Mapping[str, PciAddress] = {},
    need_hostdev_sources: bool = True,
) -> VmNicPlan:
    """The NICs and guest bonds kvnet gives this VMI (interfaces in spec order).

    ``need_hostdev_sources=False`` is for the guest network data alone: an ``sriov: {}``
    bond member whose PCI address is unknown gets :data:`UNKNOWN_SOURCE` instead of an error.
    """
    specs = vmi_bonds(vmi)
    bond_of = {m: b for b in specs for m in b.members}
    nics: list[VmNic] = []
    by_name: dict[str, VmNic] = {}
    ordinal: bool | None = None  # the pod's naming scheme, decided at the first kvnet interface
    for iface in vmi.interfaces:
        if iface.state == "absent":
            if iface.name in bond_of:
                raise TranslationError(
                    f"interface {iface.name!r}: state absent, but it is a member of bond {bond_of[iface.name].name!r}"
                )
            continue
        nic: VmNic | None = None
        if iface.kind == "binding" and iface.binding == binding_name:
            network = vmi.network(iface.name)
            if ordinal is None and not network.default:
                ordinal = naming.uses_ordinal_names(facts.links)
            nic = _vm_nic(iface, vmi, facts, pod_iface_name(vmi, network, facts, ordinal=ordinal))
        elif iface.name in bond_of:
            if iface.kind != "sriov":
                how = f"binding {iface.binding!r}" if iface.kind == "binding" else iface.kind
                raise TranslationError(
                    f"interface {iface.name!r} (member of bond {bond_of[iface.name].name!r}) uses {how}; "
                    f"bond members must use binding {binding_name!r} or sriov"
                )
            nic = _sriov_member(iface, facts, kubevirt_hostdevs, bond_of[iface.name].name, need_hostdev_sources)
        if nic is not None:
            nics.append(nic)
            by_name[nic.name] = nic
    bonds = tuple(_guest_bond(spec, by_name) for spec in specs)
    return VmNicPlan(nics=tuple(nics), bonds=bonds)


def _guest_bond(spec: BondSpec, by_name: Mapping[str, VmNic]) -> GuestBond:
    members = tuple(by_name[m] for m in spec.members)
    ip = spec.ip
    if not (ip.addresses or ip.gateways or ip.routes):
        # no L3 on the annotation: the first member's IPAM (from its binding record) moves to the bond
        ip = next((m.ip for m in members if m.ip.addresses or m.ip.routes or m.ip.gateways), ip)
    return GuestBond(
        name=spec.name, members=members, mode=spec.mode, miimon=spec.miimon, fail_over_mac=spec.fail_over_mac, ip=ip
    )
