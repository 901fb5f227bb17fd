"""The pod after the binding ran: one frozen value per plumbing kind, and the links it leaves.

``kvnet-binding`` plans one of these per attachment (``kvnet.binding.plan``); the sidecar
reads its links back from ``/sys/class/net``; ``kvnet render`` assumes them when it is given
no pod, and the lab's fake pod writes them as sysfs folders (docs/design.md §4). Each value
knows its links (:meth:`links`) as the sidecar sees them (``PodLink``), so the three cannot
model the pod three ways. Names and MACs follow ``kvnet.core.naming``; which pod link kinds
get redirect mode is ``kvnet.core.model.REDIRECT_KINDS``. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

from kvnet.core import naming
from kvnet.core.model import REDIRECT_KINDS, BindingRecord, PciAddress, PodLink

MODES = ("auto", "bridge", "redirect")  # the binding NAD's ``mode``


@dataclass(frozen=True)
class BridgedTap:
    """Bridge mode: the pod link and ``tap<x>`` are the ports of the in-pod bridge ``k6t-<x>``.

    Becomes a ``TapNic``, libvirt ``<interface type="ethernet">`` on ``tap<x>``. KubeVirt's
    MAC swap: the pod link takes :func:`kvnet.core.naming.swapped_mac` of its original MAC
    and the guest the original, kept with the MTU and IPAM in the pod link's binding record.
    ``pod_link_kind`` is whatever the attachment's plugin made (veth, vxlan, vlan, a bond
    bond-cni built, ``""`` for a physical netdev): the binding bridges them all alike.
    """

    mode: ClassVar[str] = "bridge"

    pod_iface: str
    record: BindingRecord
    pod_link_kind: str = "veth"
    multi_queue: bool = False

    @property
    def tap(self) -> str:
        return naming.tap_name(self.pod_iface)

    @property
    def bridge(self) -> str:
        return naming.bridge_name(self.pod_iface)

    @property
    def pod_mac(self) -> str:
        return naming.swapped_mac(self.record.original_mac)

    def links(self) -> tuple[PodLink, ...]:
        """The pod link, the bridge and the tap; the tap's MAC is the kernel's random one, stood in for."""
        mtu, tap_mac = self.record.mtu, naming.stand_in_mac(self.tap)
        return (
            PodLink(self.pod_iface, self.pod_mac, mtu, kind=self.pod_link_kind, master=self.bridge, record=self.record),
            PodLink(self.bridge, naming.bridge_mac((self.pod_mac, tap_mac)), mtu, kind="bridge"),
            PodLink(self.tap, tap_mac, mtu, kind="tun", master=self.bridge, multi_queue=self.multi_queue),
        )


@dataclass(frozen=True)
class RedirectedTap:
    """Redirect mode: tc mirred both ways between the pod link and ``tap<x>``; no bridge, no MAC swap.

    Becomes a ``TapNic``, libvirt ``<interface type="ethernet">`` on ``tap<x>``, whose MAC must
    be the pod link's own: a macvlan or ipvlan lower device delivers no other (the binding
    picks this mode for them, ``REDIRECT_KINDS``, or for any link when its NAD says so).
    """

    mode: ClassVar[str] = "redirect"

    pod_iface: str
    record: BindingRecord
    pod_link_kind: str = "macvlan"
    multi_queue: bool = False

    @property
    def tap(self) -> str:
        return naming.tap_name(self.pod_iface)

    @property
    def pod_mac(self) -> str:
        return self.record.original_mac.lower()

    def links(self) -> tuple[PodLink, ...]:
        """The pod link (its MAC unchanged) and the tap (the kernel's random MAC, stood in for)."""
        mtu = self.record.mtu
        return (
            PodLink(self.pod_iface, self.pod_mac, mtu, kind=self.pod_link_kind, record=self.record),
            PodLink(self.tap, naming.stand_in_mac(self.tap), mtu, kind="tun", multi_queue=self.multi_queue),
        )


@dataclass(frozen=True)
class Macvtap:
    """The pod link is a macvtap (macvtap-cni): the binding leaves it as it is.

    Becomes a ``TapNic``, libvirt ``<interface type="ethernet">`` targeting the macvtap
    itself; the guest's MAC is the macvtap's unless the VMI sets one.
    """

    pod_iface: str
    mac: str
    mtu: int

    def links(self) -> tuple[PodLink, ...]:
        return (PodLink(self.pod_iface, self.mac.lower(), self.mtu, kind="macvtap"),)


@dataclass(frozen=True)
class VfioVf:
    """An SR-IOV VF bound to ``vfio-pci``: no netdev in the pod, nothing to plumb.

    Becomes a ``HostdevNic``, libvirt ``<hostdev mode="subsystem" type="pci">``; its source is
    network-info's ``deviceInfo.pci.pci-address`` (the sidecar cannot see the node).
    ``address`` is the VF when the binding was told it (``deviceID``).
    """

    pod_iface: str
    address: PciAddress | None = None

    def links(self) -> tuple[PodLink, ...]:
        return ()


TapPlumbing = BridgedTap | RedirectedTap
Plumbing = BridgedTap | RedirectedTap | Macvtap | VfioVf


def tap_plumbing(
    pod_iface: str, record: BindingRecord, pod_link_kind: str, *, mode: str = "auto", multi_queue: bool = False
) -> TapPlumbing:
    """The tap the binding puts behind a pod link of ``pod_link_kind``: ``auto`` redirects the
    ``REDIRECT_KINDS`` and bridges every other kind; ``bridge`` and ``redirect`` force one."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    redirect = pod_link_kind in REDIRECT_KINDS if mode == "auto" else mode == "redirect"
    kind = RedirectedTap if redirect else BridgedTap
    return kind(pod_iface, record, pod_link_kind, multi_queue)


def pod_links(plumbings: Iterable[Plumbing]) -> dict[str, PodLink]:
    """The links of every attachment by name, as the sidecar reads them from the pod."""
    return {link.name: link for p in plumbings for link in p.links()}
