"""The pure translation: VMI + pod facts → VM NICs, each rule and each error."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvnet.core import naming
from kvnet.core.errors import TranslationError
from kvnet.core.model import (
    BindingRecord,
    DeviceInfo,
    GuestIpConfig,
    HostdevNic,
    NetworkInfoEntry,
    PciAddress,
    PodFacts,
    PodLink,
    TapNic,
)
from kvnet.domain.render import nic_from_element, render_plan
from kvnet.domain.splice import splice
from kvnet.domain.translate import UNKNOWN_SOURCE, plan_vm_nics
from kvnet.domain.vmi import parse_vmi

POD = "pod16477688c0e"  # blue
TAP = "tap16477688c0e"
REC = BindingRecord(original_mac="0a:58:0a:01:00:05", mtu=1450, ip=GuestIpConfig(("10.1.0.5/24",), ("10.1.0.1",)))


def vmi(
    *extra: dict[str, Any],
    devices: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
    **blue: Any,
) -> Any:
    ifaces = [{"name": "blue", "binding": {"name": "kvnet"}, **blue}, *extra]
    nets = [{"name": i["name"], "multus": {"networkName": f"nad-{i['name']}"}} for i in ifaces]
    return parse_vmi(
        {
            "metadata": {"name": "vm1", "namespace": "ns", "annotations": annotations or {}},
            "spec": {
                "networks": nets,
                "domain": {"cpu": {"cores": 3}, "devices": {"interfaces": ifaces, **(devices or {})}},
            },
        }
    )


def tapped(
    record: BindingRecord | None = REC, multi_queue: bool = False, pod: str = POD, tap: str = TAP
) -> dict[str, PodLink]:
    return {
        pod: PodLink(name=pod, mac="02:ab:0a:01:00:05", mtu=1450, kind="veth", record=record),
        tap: PodLink(name=tap, mac="fe:54:00:00:00:01", mtu=1400, kind="tun", multi_queue=multi_queue),
    }


def vf_info(name: str = "blue", addr: str = "0000:81:10.1", mac: str | None = None) -> dict[str, NetworkInfoEntry]:
    return {
        name: NetworkInfoEntry(
            network=name, device_info=DeviceInfo("pci", "1.1.0", {"pci": {"pci-address": addr}}), mac=mac
        )
    }


def test_tap_nic_from_record() -> None:
    plan = plan_vm_nics(vmi(), PodFacts(links=tapped()))
    assert plan.nics == (TapNic(name="blue", target=TAP, mac="0a:58:0a:01:00:05", mtu=1450, ip=REC.ip),)
    assert plan.bonds == ()


def test_vmi_mac_wins_and_model_passes_through() -> None:
    (nic,) = plan_vm_nics(
        vmi(macAddress="02:00:00:00:00:09", model="e1000", state="down", bootOrder=1), PodFacts(links=tapped())
    ).nics
    assert isinstance(nic, TapNic)
    assert (nic.mac, nic.model, nic.link_up, nic.boot_order) == ("02:00:00:00:00:09", "e1000", False, 1)


def test_without_record_mtu_from_tap_and_mac_from_network_info() -> None:
    info = {"blue": NetworkInfoEntry(network="blue", mac="0a:58:0a:01:00:77")}
    (nic,) = plan_vm_nics(vmi(), PodFacts(links=tapped(record=None), network_info=info)).nics
    assert isinstance(nic, TapNic) and (nic.mac, nic.mtu, nic.ip) == ("0a:58:0a:01:00:77", 1400, GuestIpConfig())


def test_virtio_transitional() -> None:
    (nic,) = plan_vm_nics(vmi(devices={"useVirtioTransitional": True}), PodFacts(links=tapped())).nics
    assert isinstance(nic, TapNic) and nic.model == "virtio-transitional"


def test_multiqueue_uses_vcpus() -> None:
    (nic,) = plan_vm_nics(
        vmi(devices={"networkInterfaceMultiqueue": True}), PodFacts(links=tapped(multi_queue=True))
    ).nics
    assert isinstance(nic, TapNic) and nic.queues == 3


def test_multiqueue_ignored_for_non_virtio_and_when_not_asked() -> None:
    (nic,) = plan_vm_nics(
        vmi(model="e1000", devices={"networkInterfaceMultiqueue": True}), PodFacts(links=tapped())
    ).nics
    assert isinstance(nic, TapNic) and nic.queues is None
    (nic,) = plan_vm_nics(vmi(), PodFacts(links=tapped(multi_queue=True))).nics
    assert isinstance(nic, TapNic) and nic.queues is None


def test_redirect_mode_keeps_the_macvlan_mac() -> None:
    rec = BindingRecord(original_mac="0a:58:0a:01:00:05", mtu=1500)
    links = {
        POD: PodLink(name=POD, mac="0a:58:0a:01:00:05", mtu=1500, kind="macvlan", record=rec),
        TAP: PodLink(name=TAP, mac="fe:54:00:00:00:01", mtu=1500, kind="tun"),
    }
    (nic,) = plan_vm_nics(vmi(), PodFacts(links=links)).nics
    assert nic.mac == "0a:58:0a:01:00:05"
    (nic,) = plan_vm_nics(vmi(macAddress="0A:58:0A:01:00:05"), PodFacts(links=links)).nics  # the same MAC is fine
    with pytest.raises(TranslationError) as err:
        plan_vm_nics(vmi(macAddress="02:00:00:00:00:01"), PodFacts(links=links))
    assert err.value.msg == (
        "interface 'blue': pod interface pod16477688c0e is a macvlan redirected to tap16477688c0e, which only receives frames for "
        "its own MAC 0a:58:0a:01:00:05, but the guest would use 02:00:00:00:00:01 (give the attachment the VMI's macAddress, or drop macAddress)"
    )
    # bridge mode (the tap is a bridge port): the VMI's MAC is the guest's, whatever the pod link has
    bridged = {**links, TAP: replace(links[TAP], master="k6t-16477688c0e")}
    assert plan_vm_nics(vmi(macAddress="02:00:00:00:00:01"), PodFacts(links=bridged)).nics[0].mac == "02:00:00:00:00:01"


def test_macvtap_is_targeted_directly() -> None:
    links = {POD: PodLink(name=POD, mac="0a:58:0a:00:00:07", mtu=9000, kind="macvtap")}
    (nic,) = plan_vm_nics(vmi(), PodFacts(links=links)).nics
    assert nic == TapNic(name="blue", target=POD, mac="0a:58:0a:00:00:07", mtu=9000)


def test_vfio_vf_becomes_hostdev() -> None:
    (nic,) = plan_vm_nics(
        vmi(macAddress="02:00:00:00:00:01", pciAddress="0000:00:0b.0", bootOrder=2), PodFacts(network_info=vf_info())
    ).nics
    assert nic == HostdevNic(
        name="blue",
        source=PciAddress(0, 0x81, 0x10, 1),
        mac="02:00:00:00:00:01",
        pci_address=PciAddress(0, 0, 0x0B, 0),
        boot_order=2,
    )


@pytest.mark.parametrize(
    ("field", "message"),
    [
        (
            {"model": "e1000"},
            "interface 'blue': model 'e1000' does not apply to a PCI hostdev (the guest sees the VF itself)",
        ),
        (
            {"acpiIndex": 3},
            "interface 'blue': acpiIndex 3 does not apply to a PCI hostdev (the guest sees the VF itself)",
        ),
        (
            {"state": "down"},
            "interface 'blue': state 'down' does not apply to a PCI hostdev (the guest sees the VF itself)",
        ),
    ],
)
def test_hostdev_refuses_guest_fields_it_cannot_carry(field: dict[str, Any], message: str) -> None:
    with pytest.raises(TranslationError) as err:
        plan_vm_nics(vmi(**field), PodFacts(network_info=vf_info()))
    assert err.value.msg == message


def test_pod_network_uses_eth0_and_tap0() -> None:
    doc = parse_vmi(
        {
            "metadata": {"name": "vm1"},
            "spec": {
                "networks": [{"name": "default", "pod": {}}],
                "domain": {"devices": {"interfaces": [{"name": "default", "binding": {"name": "kvnet"}}]}},
            },
        }
    )
    (nic,) = plan_vm_nics(doc, PodFacts(links=tapped(pod="eth0", tap="tap0"))).nics
    assert isinstance(nic, TapNic) and nic.target == "tap0"


def test_ordinal_names_detected() -> None:
    v = vmi({"name": "red", "binding": {"name": "kvnet"}})
    links = {**tapped(pod="net1", tap="tap1"), **tapped(pod="net2", tap="tap2")}
    nics = plan_vm_nics(v, PodFacts(links=links)).nics
    assert [(n.name, n.target) for n in nics if isinstance(n, TapNic)] == [("blue", "tap1"), ("red", "tap2")]


def test_other_bindings_and_absent_are_skipped() -> None:
    v = vmi({"name": "red", "bridge": {}}, {"name": "green", "binding": {"name": "passt"}}, state="absent")
    assert plan_vm_nics(v, PodFacts()).nics == ()
    assert (
        plan_vm_nics(vmi(binding={"name": "mine"}), PodFacts(links=tapped()), binding_name="mine").nics[0].name
        == "blue"
    )


ERRORS = [
    (
        "nothing",
        vmi(),
        PodFacts(),
        "interface 'blue': pod interface pod16477688c0e and tap tap16477688c0e are absent and network-info has no entry for it "
        "(an SR-IOV NIC needs downwardAPI: device-info in the binding)",
    ),
    (
        "no-pci",
        vmi(),
        PodFacts(network_info={"blue": NetworkInfoEntry(network="blue")}),
        "interface 'blue': pod interface pod16477688c0e and tap tap16477688c0e are absent and its network-info entry has no PCI device-info",
    ),
    (
        "no-tap",
        vmi(),
        PodFacts(links={POD: PodLink(name=POD, mac="02:00:00:00:00:01", mtu=1500, kind="veth")}),
        "interface 'blue': pod interface pod16477688c0e has no tap tap16477688c0e (was the kvnet binding CNI run for it?) and is not a macvtap",
    ),
    (
        "no-mac",
        vmi(),
        PodFacts(links=tapped(record=None)),
        "interface 'blue': no MAC for tap tap16477688c0e: no macAddress in the VMI, no binding record in the pod and no mac in network-info",
    ),
    (
        "mq",
        vmi(devices={"networkInterfaceMultiqueue": True}),
        PodFacts(links=tapped()),
        "interface 'blue': the VMI asks for networkInterfaceMultiqueue but tap16477688c0e is not a multi-queue tap "
        "(set multiQueue in the binding's NetworkAttachmentDefinition)",
    ),
]


@pytest.mark.parametrize(("v", "facts", "message"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_errors(v: Any, facts: PodFacts, message: str) -> None:
    with pytest.raises(TranslationError) as err:
        plan_vm_nics(v, facts)
    assert err.value.msg == message


# --- bonds ----------------------------------------------------------------------------

BOND2 = '[{"name": "bond0", "members": ["blue", "red"], "mode": "active-backup", "failOverMac": "active"}]'


def test_bond_of_tap_and_kubevirt_vf() -> None:
    v = vmi(
        {"name": "red", "sriov": {}, "macAddress": "02:00:00:00:00:02"},
        macAddress="02:00:00:00:00:01",
        annotations={"kvnet.io/bonds": BOND2},
    )
    src = PciAddress(0, 0x82, 0x10, 2)
    plan = plan_vm_nics(v, PodFacts(links=tapped()), kubevirt_hostdevs={"ua-sriov-red": src})
    tap, vf = plan.nics
    assert isinstance(tap, TapNic) and vf == HostdevNic(
        name="red", source=src, mac="02:00:00:00:00:02", rendered_by_kubevirt=True
    )
    (bond,) = plan.bonds
    assert (bond.name, bond.members, bond.fail_over_mac) == ("bond0", (tap, vf), "active")
    assert bond.ip == REC.ip  # the first member's IPAM moves to the bond


def test_bond_vf_source_from_network_info_or_unknown() -> None:
    v = vmi(
        {"name": "red", "sriov": {}, "macAddress": "02:00:00:00:00:02"},
        macAddress="02:00:00:00:00:01",
        annotations={"kvnet.io/bonds": BOND2},
    )
    plan = plan_vm_nics(v, PodFacts(links=tapped(), network_info=vf_info("red", "0000:82:10.3")))
    assert plan.nics[1].source == PciAddress(0, 0x82, 0x10, 3)  # type: ignore[union-attr]
    with pytest.raises(TranslationError) as err:
        plan_vm_nics(v, PodFacts(links=tapped()))
    assert err.value.msg == (
        "interface 'red' (member of bond 'bond0'): an sriov interface, but the domain has no hostdev ua-sriov-red "
        "and network-info has no PCI address for it"
    )
    plan = plan_vm_nics(v, PodFacts(links=tapped()), need_hostdev_sources=False)
    assert plan.nics[1].source == UNKNOWN_SOURCE  # type: ignore[union-attr]


def test_bond_member_with_other_binding() -> None:
    v = vmi(
        {"name": "red", "bridge": {}, "macAddress": "02:00:00:00:00:02"},
        macAddress="02:00:00:00:00:01",
        annotations={"kvnet.io/bonds": BOND2},
    )
    with pytest.raises(TranslationError) as err:
        plan_vm_nics(v, PodFacts(links=tapped()))
    assert (
        err.value.msg
        == "interface 'red' (member of bond 'bond0') uses bridge; bond members must use binding 'kvnet' or sriov"
    )


def test_absent_bond_member() -> None:
    v = vmi(
        {"name": "red", "sriov": {}, "macAddress": "02:00:00:00:00:02"},
        macAddress="02:00:00:00:00:01",
        state="absent",
        annotations={"kvnet.io/bonds": BOND2},
    )
    with pytest.raises(TranslationError) as err:
        plan_vm_nics(v, PodFacts())
    assert err.value.msg == "interface 'blue': state absent, but it is a member of bond 'bond0'"


# --- properties -----------------------------------------------------------------------

_names = st.lists(
    st.from_regex(r"[a-z][a-z0-9]{0,8}(-[a-z0-9]{1,4})?", fullmatch=True), min_size=1, max_size=8, unique=True
)
_macs = st.lists(st.integers(0, 255), min_size=5, max_size=5).map(lambda o: "02:" + ":".join(f"{b:02x}" for b in o))


@settings(max_examples=60, deadline=None)
@given(_names, st.data())
def test_every_kvnet_interface_becomes_one_nic(names: list[str], data: st.DataObject) -> None:
    """Random mixes of taps, macvtaps and VFs: one NIC per interface, in order, kind by pod facts."""
    kinds = [data.draw(st.sampled_from(["tap", "macvtap", "vf"])) for _ in names]
    macs = data.draw(st.lists(_macs, min_size=len(names), max_size=len(names), unique=True))
    ifaces = [{"name": n, "binding": {"name": "kvnet"}} for n in names]
    doc = parse_vmi(
        {
            "metadata": {"name": "vm"},
            "spec": {
                "networks": [{"name": n, "multus": {"networkName": n}} for n in names],
                "domain": {"devices": {"interfaces": ifaces}},
            },
        }
    )
    links: dict[str, PodLink] = {}
    info: dict[str, NetworkInfoEntry] = {}
    for i, (name, kind, mac) in enumerate(zip(names, kinds, macs, strict=False)):
        pod = naming.hashed_pod_iface(name)
        if kind == "tap":
            links.update(tapped(record=BindingRecord(original_mac=mac, mtu=1500), pod=pod, tap=naming.tap_name(pod)))
        elif kind == "macvtap":
            links[pod] = PodLink(name=pod, mac=mac, mtu=1500, kind="macvtap")
        else:
            info.update(vf_info(name, f"0000:81:{i:02x}.1", mac))
    plan = plan_vm_nics(doc, PodFacts(links=links, network_info=info))
    assert [n.name for n in plan.nics] == names
    for nic, kind, mac in zip(plan.nics, kinds, macs, strict=False):
        assert isinstance(nic, HostdevNic if kind == "vf" else TapNic)
        assert nic.mac == mac
    elements = render_plan(plan)
    assert [nic_from_element(e).name for e in elements] == names
    out = splice("<domain><name>vm</name><devices></devices></domain>", elements)
    assert splice(out, elements) == out  # splicing is idempotent: replaced by alias
