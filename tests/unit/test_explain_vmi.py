"""kvnet explain for VMIs: spec.networks joined with the interfaces, and the first cause
proven per network (binding registration, launcher pod, the pod path, VMI status)."""

from __future__ import annotations

import json

import pytest

from kvnet.commands.explain import NadFact, PodFacts, VmiFacts, VmiNetwork, explain_vmi, vmi_networks

VMI = {
    "metadata": {"name": "vm", "namespace": "ns"},
    "spec": {
        "domain": {
            "devices": {
                "interfaces": [{"name": "default", "masquerade": {}}, {"name": "data", "binding": {"name": "kvnet"}}]
            }
        },
        "networks": [
            {"name": "default", "pod": {}},
            {"name": "data", "multus": {"networkName": "br"}},
            {"name": "lost", "multus": {"networkName": "x/y"}},
        ],
    },
}
STATUS = json.dumps([{"name": "ns/br", "interface": "pod123", "ips": ["10.1.0.5"]}])
LAUNCHER = PodFacts("ns", "virt-launcher-vm-x", json.dumps([{"name": "br"}]), STATUS, (NadFact("ns", "br", 200),))
DATA = VmiNetwork("data", "ns/br", "kvnet")
KV = (("kubevirt/kubevirt", ("kvnet",)),)


def test_vmi_networks() -> None:
    assert vmi_networks(VMI) == (
        VmiNetwork("default", None, None),
        DATA,
        VmiNetwork("lost", "x/y", None, has_interface=False),
    )


@pytest.mark.parametrize(
    ("facts", "cause"),
    [
        (VmiFacts("ns", "vm", (DATA,), ("data",), KV, LAUNCHER), None),
        (
            VmiFacts("ns", "vm", (DATA,), ("data",), (), LAUNCHER),
            "binding plugin kvnet not registered: no KubeVirt CR found",
        ),
        (
            VmiFacts("ns", "vm", (DATA,), ("data",), (("kubevirt/kubevirt", ("passt",)),), LAUNCHER),
            "binding plugin kvnet not registered in the KubeVirt CR (kubevirt/kubevirt has [passt])",
        ),
        (VmiFacts("ns", "vm", (DATA,), ("data",), KV, None), "virt-launcher pod missing"),
        (
            VmiFacts("ns", "vm", (VmiNetwork("data", "ns/other", "kvnet"),), ("data",), KV, LAUNCHER),
            "the virt-launcher pod virt-launcher-vm-x does not ask for ns/other",
        ),
        (
            VmiFacts(
                "ns",
                "vm",
                (DATA,),
                ("data",),
                KV,
                PodFacts("ns", "l", json.dumps([{"name": "br"}]), None, (NadFact("ns", "br", 404),)),
            ),
            "NAD ns/br not found",
        ),
        (VmiFacts("ns", "vm", (DATA,), (), KV, LAUNCHER), "interface absent from VMI status.interfaces"),
        (
            VmiFacts("ns", "vm", (VmiNetwork("lost", "x/y", None, has_interface=False),), (), KV, LAUNCHER),
            "no interface in spec.domain.devices.interfaces is named lost",
        ),
    ],
)
def test_vmi_first_cause(facts: VmiFacts, cause: str | None) -> None:
    (finding,) = explain_vmi(facts)
    assert finding.cause == cause
    assert finding.present is (cause is None)


RECORD = '{"kvnet":1,"mac":"02:00:00:aa:bb:cc","mtu":1400,"ip":["10.1.0.5/24"]}'


def bound(aliases: tuple[tuple[str, str], ...]) -> VmiFacts:
    """The VMI with its launcher pod's netns read: each link's ifalias."""
    launcher = PodFacts(
        "ns", "virt-launcher-vm-x", json.dumps([{"name": "br"}]), STATUS, (NadFact("ns", "br", 200),),
        link_aliases=aliases,
    )  # fmt: skip
    return VmiFacts("ns", "vm", (DATA,), ("data",), KV, launcher)


@pytest.mark.parametrize(
    ("aliases", "cause"),
    [
        ((("pod123", RECORD),), None),
        ((("pod123", ""),), "binding record absent on pod123: kvnet-binding did not plumb it"),
        ((("pod123", "uplink to rack 4"),), "binding record absent on pod123: kvnet-binding did not plumb it"),
        (
            (("pod123", '{"kvnet":2,"mac":"02:00:00:aa:bb:cc"}'),),
            "binding record on pod123 unreadable: unsupported kvnet binding record version 2 (this kvnet reads 1)",
        ),
        ((("pod123", '{"kvnet":1,'),), "binding record on pod123 unreadable: malformed kvnet binding record"),
        ((("eth0", ""),), "pod interface pod123 absent from the launcher pod's netns"),
    ],
)
def test_vmi_binding_record(aliases: tuple[tuple[str, str], ...], cause: str | None) -> None:
    (finding,) = explain_vmi(bound(aliases))
    if cause is not None and cause.endswith("malformed kvnet binding record"):
        assert finding.cause is not None and finding.cause.startswith(cause)
    else:
        assert finding.cause == cause
    if cause is None:
        assert "binding record on pod123: guest MAC 02:00:00:aa:bb:cc, MTU 1400" in finding.happened


def test_vmi_binding_record_only_for_kvnet_bound_networks() -> None:
    facts = bound((("pod123", ""),))
    other = VmiFacts(
        "ns", "vm", (VmiNetwork("data", "ns/br", "passt"),), ("data",), (("kv/kv", ("passt",)),), facts.launcher
    )
    (finding,) = explain_vmi(other)
    assert finding.cause is None
