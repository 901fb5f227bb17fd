"""VMI parsing: every bad input gets its exact message naming the interface."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvnet.core.errors import DecodeFailure, InvalidAnnotation, TranslationError
from kvnet.core.model import PciAddress
from kvnet.domain.bonds import parse_bonds, vmi_bonds
from kvnet.domain.networkinfo import format_network_info, parse_network_info
from kvnet.domain.vmi import BONDS_ANNOTATION, parse_vmi


def vmi(**iface: Any) -> dict[str, Any]:
    base = {"name": "blue", "binding": {"name": "kvnet"}}
    base.update(iface)
    return {
        "metadata": {"name": "vm1", "namespace": "ns1"},
        "spec": {
            "networks": [{"name": "default", "pod": {}}, {"name": "blue", "multus": {"networkName": "br-blue"}}],
            "domain": {"devices": {"interfaces": [{"name": "default", "masquerade": {}}, base]}},
        },
    }


def test_parses_fields() -> None:
    v = parse_vmi(
        vmi(
            macAddress="02-00-00-00-00-AA",
            model="e1000e",
            pciAddress="0000:00:0a.0",
            acpiIndex=3,
            bootOrder=1,
            state="down",
        )
    )
    assert (v.name, v.namespace) == ("vm1", "ns1")
    blue = v.interface("blue")
    assert blue is not None
    assert (blue.kind, blue.binding, blue.mac, blue.model) == ("binding", "kvnet", "02:00:00:00:00:aa", "e1000e")
    assert (blue.pci_address, blue.acpi_index, blue.boot_order, blue.state) == (PciAddress(0, 0, 10, 0), 3, 1, "down")
    assert v.network("blue").network_name == "br-blue" and v.network("default").is_pod_network
    assert v.interface("default").kind == "masquerade"  # type: ignore[union-attr]


def test_network_lookups_by_name() -> None:
    doc = vmi()
    doc["spec"]["networks"] += [{"name": f"n{i}", "multus": {"networkName": f"nad{i}"}} for i in range(3)]
    v = parse_vmi(doc)
    assert v.network("blue").network_name == "br-blue" and v.network("default").default
    assert [v.secondary_position(n) for n in ("blue", "n0", "n1", "n2")] == [1, 2, 3, 4]
    with pytest.raises(
        TranslationError, match=re.escape("interface 'nope' has no network of that name in spec.networks")
    ):
        v.network("nope")


def test_kubevirt_name_rule_allows_upper_case_and_underscores() -> None:
    doc = vmi()
    _iface(doc)["name"] = doc["spec"]["networks"][1]["name"] = "Blue_net-1"
    assert parse_vmi(doc).interface("Blue_net-1") is not None


@pytest.mark.parametrize("text", ["02:00:5E:00:53:01", "02-00-5e-00-53-01", "0200.5e00.5301"])
def test_mac_forms_kubevirt_accepts(text: str) -> None:
    iface = parse_vmi(vmi(macAddress=text)).interface("blue")
    assert iface is not None and iface.mac == "02:00:5e:00:53:01"


def test_virtual_machine_is_unwrapped() -> None:
    inner = vmi()
    vm = {
        "kind": "VirtualMachine",
        "metadata": {"name": "vm1", "namespace": "ns1", "annotations": {"a": "1"}},
        "spec": {"template": {"metadata": {"annotations": {BONDS_ANNOTATION: "[]"}}, "spec": inner["spec"]}},
    }
    v = parse_vmi(vm)
    assert [i.name for i in v.interfaces] == ["default", "blue"]
    assert v.annotations == {"a": "1", BONDS_ANNOTATION: "[]"}


@pytest.mark.parametrize(
    ("domain", "vcpus"),
    [
        ({}, 1),
        ({"cpu": {"cores": 2, "sockets": 2, "threads": 2}}, 8),
        ({"cpu": {"cores": 3}}, 3),
        ({"resources": {"limits": {"cpu": "1500m"}}}, 2),
        ({"resources": {"requests": {"cpu": "4"}}}, 4),
        ({"resources": {"requests": {"cpu": 2}}}, 2),
    ],
)
def test_vcpus(domain: dict[str, Any], vcpus: int) -> None:
    doc = vmi()
    doc["spec"]["domain"].update(domain)
    assert parse_vmi(doc).vcpus == vcpus


def _with(mutate: Any) -> dict[str, Any]:
    doc = vmi()
    mutate(doc)
    return doc


def _iface(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["domain"]["devices"]["interfaces"][1]


BAD: list[tuple[str, dict[str, Any], str]] = [
    (
        "mac",
        vmi(macAddress="02:00:00:00:00"),
        "interface 'blue': macAddress '02:00:00:00:00' is not a MAC address (xx:xx:xx:xx:xx:xx)",
    ),
    ("mac-type", vmi(macAddress=5), "interface 'blue': macAddress 5 is not a MAC address (xx:xx:xx:xx:xx:xx)"),
    (
        "pci",
        vmi(pciAddress="0000:81:00"),
        "interface 'blue': pciAddress '0000:81:00' is not a PCI address (DDDD:BB:SS.F)",
    ),
    (
        "pci-slot",
        vmi(pciAddress="0000:00:20.0"),
        "interface 'blue': pciAddress '0000:00:20.0' is not a PCI address (DDDD:BB:SS.F)",
    ),
    ("model", vmi(model="virtio-net"), "interface 'blue': model 'virtio-net' is not a NIC model libvirt knows ("),
    ("model-list", vmi(model=["virtio"]), "interface 'blue': model ['virtio'] is not a NIC model libvirt knows ("),
    (
        "model-object",
        vmi(model={"type": "virtio"}),
        "interface 'blue': model {'type': 'virtio'} is not a NIC model libvirt knows (",
    ),
    ("boot0", vmi(bootOrder=0), "interface 'blue': bootOrder 0 is not a positive integer"),
    ("boot-str", vmi(bootOrder="1"), "interface 'blue': bootOrder '1' is not a positive integer"),
    ("acpi", vmi(acpiIndex=16384), "interface 'blue': acpiIndex 16384 is not 1..16383"),
    ("state", vmi(state="gone"), "interface 'blue': state 'gone' is not one of up, down, absent"),
    ("binding-name", vmi(binding={"name": ""}), "interface 'blue': binding.name must be a non-empty string"),
    (
        "two-kinds",
        vmi(bridge={}),
        "interface 'blue': exactly one of binding, bridge, masquerade, sriov, slirp, passt, macvtap must be set, got ['bridge', 'binding']",
    ),
    (
        "unknown-net",
        _with(lambda d: d["spec"]["networks"].pop()),
        "interface 'blue': no network named 'blue' in spec.networks",
    ),
    (
        "bad-name",
        _with(lambda d: _iface(d).update(name="blue.1")),
        "spec.domain.devices.interfaces[1]: name 'blue.1' is not a valid interface name (letters, digits, - and _)",
    ),
    (
        "bad-net-name",
        _with(lambda d: d["spec"]["networks"][1].update(name="")),
        "spec.networks[1]: name '' is not a valid network name (letters, digits, - and _)",
    ),
    (
        "dup-iface",
        _with(lambda d: d["spec"]["domain"]["devices"]["interfaces"].append(copy.deepcopy(_iface(d)))),
        "interface 'blue' is declared twice in spec.domain.devices.interfaces",
    ),
    (
        "no-multus",
        _with(lambda d: d["spec"]["networks"][1].pop("multus")),
        "network 'blue': needs pod: {} or multus.networkName",
    ),
    (
        "dup-mac",
        _with(
            lambda d: (
                _iface(d).update(macAddress="02:00:00:00:00:01"),
                d["spec"]["domain"]["devices"]["interfaces"][0].update(macAddress="02:00:00:00:00:01"),
            )
        ),
        "interface 'blue': macAddress '02:00:00:00:00:01' is already used by interface 'default'",
    ),
    (
        "dup-boot",
        _with(
            lambda d: (
                _iface(d).update(bootOrder=1),
                d["spec"]["domain"]["devices"]["interfaces"][0].update(bootOrder=1),
            )
        ),
        "interface 'blue': bootOrder 1 is already used by interface 'default'",
    ),
    (
        "interfaces-type",
        _with(lambda d: d["spec"]["domain"]["devices"].update(interfaces={})),
        "spec.domain.devices.interfaces must be a list, got dict",
    ),
    (
        "cpu",
        _with(lambda d: d["spec"]["domain"].update(cpu={"cores": 0})),
        "spec.domain.cpu.cores 0 is not a positive integer",
    ),
]


@pytest.mark.parametrize(("doc", "message"), [(d, m) for _, d, m in BAD], ids=[i for i, _, _ in BAD])
def test_bad_vmi(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(TranslationError) as err:
        parse_vmi(doc)
    assert err.value.msg.startswith(message), err.value.msg
    assert err.value.cni_code == 105


# --- MAC and PCI parsing: properties --------------------------------------------------


@given(st.lists(st.integers(0, 255), min_size=6, max_size=6), st.sampled_from([":", "-"]), st.booleans())
def test_any_mac_is_accepted_and_normalised(octets: list[int], sep: str, upper: bool) -> None:
    text = sep.join(f"{o:02X}" if upper else f"{o:02x}" for o in octets)
    iface = parse_vmi(vmi(macAddress=text)).interface("blue")
    assert iface is not None and iface.mac == ":".join(f"{o:02x}" for o in octets)


@given(st.text(max_size=20))
def test_random_mac_text_never_crashes(text: str) -> None:
    try:
        iface = parse_vmi(vmi(macAddress=text)).interface("blue")
    except TranslationError as err:
        assert "macAddress" in err.msg
    else:
        assert iface is not None and len(iface.mac or "") == 17


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFF), st.integers(0, 0x1F), st.integers(0, 7))
def test_any_pci_round_trips(d: int, b: int, s: int, f: int) -> None:
    addr = PciAddress(d, b, s, f)
    iface = parse_vmi(vmi(pciAddress=str(addr))).interface("blue")
    assert iface is not None and iface.pci_address == addr


@given(st.text(max_size=16))
def test_random_pci_text_never_crashes(text: str) -> None:
    try:
        parse_vmi(vmi(pciAddress=text))
    except TranslationError as err:
        assert err.msg.startswith("interface 'blue': pciAddress")


# --- network-info ---------------------------------------------------------------------


def test_network_info() -> None:
    text = json.dumps(
        {
            "interfaces": [
                {
                    "network": "vf",
                    "deviceInfo": {"type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:81:10.1"}},
                    "mac": "02:00:00:00:00:AA",
                    "mtu": 1500,
                },
                {"network": "blue"},
            ]
        }
    )
    info = parse_network_info(text)
    assert info["vf"].device_info is not None and info["vf"].device_info.pci_address == "0000:81:10.1"
    assert (info["vf"].mac, info["vf"].mtu) == ("02:00:00:00:00:aa", 1500)
    assert info["blue"].device_info is None and info["blue"].mac is None
    assert parse_network_info(format_network_info(info)) == info
    assert parse_network_info(b'{"interfaces": null}') == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[", "network-info is not JSON"),
        ("[]", "network-info must be a JSON object with an interfaces list"),
        ('{"interfaces": {}}', "network-info: interfaces must be a list"),
        ('{"interfaces": [{"mac": "02:00:00:00:00:01"}]}', "network-info: interfaces[0] has no network name"),
        ('{"interfaces": [{"network": "a"}, {"network": "a"}]}', "network-info: network 'a' appears twice"),
        ('{"interfaces": [{"network": "a", "mac": "zz"}]}', "network-info: network 'a': mac 'zz' is not a MAC address"),
        (
            '{"interfaces": [{"network": "a", "mtu": 10}]}',
            "network-info: network 'a': mtu 10 is not an integer in 68..65535",
        ),
        (
            '{"interfaces": [{"network": "a", "deviceInfo": {"type": "pci", "version": "1.1.0"}}]}',
            "network-info: network 'a': deviceInfo of type pci has no pci.pci-address",
        ),
        (
            '{"interfaces": [{"network": "a", "deviceInfo": {"type": "pci", "version": "1.1.0", "pci": {"pci-address": "81:00.1"}}}]}',
            "network-info: network 'a': pci-address '81:00.1' is not a PCI address (DDDD:BB:SS.F)",
        ),
    ],
)
def test_bad_network_info(text: str, message: str) -> None:
    with pytest.raises(DecodeFailure) as err:
        parse_network_info(text)
    assert err.value.msg.startswith(message), err.value.msg


entries = st.dictionaries(
    st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True),
    st.tuples(
        st.one_of(
            st.none(), st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFF), st.integers(0, 0x1F), st.integers(0, 7))
        ),
        st.one_of(st.none(), st.lists(st.integers(0, 255), min_size=6, max_size=6)),
        st.one_of(st.none(), st.integers(68, 65535)),
    ),
    max_size=5,
)


@given(entries)
def test_network_info_round_trip(raw: dict[str, Any]) -> None:
    items = []
    for name, (pci, mac, mtu) in raw.items():
        item: dict[str, Any] = {"network": name}
        if pci:
            item["deviceInfo"] = {"type": "pci", "version": "1.1.0", "pci": {"pci-address": str(PciAddress(*pci))}}
        if mac:
            item["mac"] = ":".join(f"{o:02x}" for o in mac)
        if mtu:
            item["mtu"] = mtu
        items.append(item)
    info = parse_network_info(json.dumps({"interfaces": items}))
    assert set(info) == set(raw)
    assert parse_network_info(format_network_info(info)) == info
    for name, (pci, _, _) in raw.items():
        di = info[name].device_info
        assert (di.pci_address if di else None) == (str(PciAddress(*pci)) if pci else None)


@given(st.binary(max_size=64))
def test_network_info_garbage_is_decode_failure(data: bytes) -> None:
    try:
        parse_network_info(data)
    except DecodeFailure:
        pass


# --- the bonds annotation -------------------------------------------------------------


def bonded(bonds: Any, **member_b: Any) -> dict[str, Any]:
    doc = vmi(macAddress="02:00:00:00:00:01")
    doc["spec"]["networks"].append({"name": "red", "multus": {"networkName": "br-red"}})
    doc["spec"]["domain"]["devices"]["interfaces"].append(
        {"name": "red", "binding": {"name": "kvnet"}, "macAddress": "02:00:00:00:00:02", **member_b}
    )
    doc["metadata"]["annotations"] = {BONDS_ANNOTATION: bonds if isinstance(bonds, str) else json.dumps(bonds)}
    return doc


def test_bonds_annotation() -> None:
    spec = vmi_bonds(
        parse_vmi(
            bonded(
                [
                    {
                        "name": "bond0",
                        "members": ["blue", "red"],
                        "mode": "802.3ad",
                        "miimon": "200",
                        "failOverMac": "follow",
                    }
                ]
            )
        )
    )
    assert len(spec) == 1
    b = spec[0]
    assert (b.name, b.members, b.mode, b.miimon, b.fail_over_mac) == (
        "bond0",
        ("blue", "red"),
        "802.3ad",
        200,
        "follow",
    )
    assert parse_bonds(None) == () and parse_bonds("  ") == ()
    defaults = parse_bonds('[{"name": "b", "members": ["x"]}]')[0]
    assert (defaults.mode, defaults.miimon, defaults.fail_over_mac) == ("active-backup", 100, None)


BAD_BONDS: list[tuple[str, Any, str]] = [
    ("json", "[", "kvnet.io/bonds is not JSON"),
    ("list", {"name": "b"}, "kvnet.io/bonds must be a JSON list of bonds"),
    ("name", [{"name": "0bond", "members": ["blue"]}], "kvnet.io/bonds[0]: name '0bond' is not an interface name"),
    ("keys", [{"name": "b", "members": ["blue"], "lacp": 1}], "kvnet.io/bonds: bond 'b': unknown keys ['lacp']"),
    (
        "members",
        [{"name": "b", "members": []}],
        "kvnet.io/bonds: bond 'b': members must be a non-empty list of interface names",
    ),
    (
        "twice",
        [{"name": "b", "members": ["blue"]}, {"name": "c", "members": ["blue"]}],
        "kvnet.io/bonds: bond 'c': member 'blue' is already a member of bond 'b'",
    ),
    (
        "mode",
        [{"name": "b", "members": ["blue"], "mode": "lacp"}],
        "kvnet.io/bonds: bond 'b': mode 'lacp' is not one of",
    ),
    (
        "fom",
        [{"name": "b", "members": ["blue"], "failOverMac": "x"}],
        "kvnet.io/bonds: bond 'b': failOverMac 'x' is not one of none, active, follow",
    ),
    (
        "miimon",
        [{"name": "b", "members": ["blue"], "miimon": -1}],
        "kvnet.io/bonds: bond 'b': miimon -1 is not a non-negative integer (ms)",
    ),
    (
        "addr",
        [{"name": "b", "members": ["blue"], "addresses": ["10.0.0.1"]}],
        "kvnet.io/bonds: bond 'b': address '10.0.0.1' is not a CIDR",
    ),
    (
        "route",
        [{"name": "b", "members": ["blue"], "routes": [{"to": "x", "via": "10.0.0.1"}]}],
        "kvnet.io/bonds: bond 'b': route",
    ),
    (
        "missing",
        [{"name": "b", "members": ["blue", "green"]}],
        "kvnet.io/bonds: bond 'b': member 'green' is not an interface of the VMI",
    ),
]


@pytest.mark.parametrize(("bonds", "message"), [(b, m) for _, b, m in BAD_BONDS], ids=[i for i, _, _ in BAD_BONDS])
def test_bad_bonds(bonds: Any, message: str) -> None:
    with pytest.raises(InvalidAnnotation) as err:
        vmi_bonds(parse_vmi(bonded(bonds)))
    assert err.value.msg.startswith(message), err.value.msg


def test_bond_member_needs_mac() -> None:
    doc = bonded([{"name": "b", "members": ["blue", "red"]}])
    del doc["spec"]["domain"]["devices"]["interfaces"][2]["macAddress"]
    with pytest.raises(InvalidAnnotation) as err:
        vmi_bonds(parse_vmi(doc))
    assert (
        err.value.msg
        == "kvnet.io/bonds: bond 'b': member interface 'red' has no macAddress (the guest matches bond members by MAC)"
    )
