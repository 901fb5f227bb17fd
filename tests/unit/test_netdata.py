"""Guest network data (cloud-init v2): ethernets by MAC, bonds, and merging with the user's."""

from __future__ import annotations

import json

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from kvnet.core.errors import TranslationError
from kvnet.core.model import (
    BindingRecord,
    GuestBond,
    GuestIpConfig,
    HostdevNic,
    PciAddress,
    PodFacts,
    PodLink,
    TapNic,
    VmNicPlan,
)
from kvnet.domain.netdata import guest_network_data, merge_network_data
from kvnet.domain.pipeline import cloud_init_network_data

IP = GuestIpConfig(
    ("10.1.0.5/24", "fd00::5/64"), ("10.1.0.1", "fd00::1"), (("10.2.0.0/16", "10.1.0.254"), ("10.3.0.0/16", ""))
)
A = TapNic(name="blue", target="tap1", mac="02:00:00:00:00:01", ip=IP)
B = TapNic(name="red", target="tap2", mac="02:00:00:00:00:02")
VF = HostdevNic(
    name="a-very-long-vf-name", source=PciAddress(0, 0x81, 0x10, 1), mac="02:00:00:00:00:03", rendered_by_kubevirt=True
)


def test_nothing_to_configure() -> None:
    assert guest_network_data(VmNicPlan(nics=(B,))) is None
    assert guest_network_data(VmNicPlan()) is None


def test_addresses_and_routes() -> None:
    data = guest_network_data(VmNicPlan(nics=(A, B)))
    assert data == {
        "version": 2,
        "ethernets": {
            "blue": {
                "match": {"macaddress": "02:00:00:00:00:01"},
                "set-name": "blue",
                "addresses": ["10.1.0.5/24", "fd00::5/64"],
                "routes": [
                    {"to": "0.0.0.0/0", "via": "10.1.0.1"},
                    {"to": "::/0", "via": "fd00::1"},
                    {"to": "10.2.0.0/16", "via": "10.1.0.254"},
                    {"to": "10.3.0.0/16"},
                ],
            }
        },
    }


def test_bond() -> None:
    bond = GuestBond(
        name="bond0",
        members=(B, VF),
        mode="802.3ad",
        miimon=200,
        fail_over_mac="follow",
        ip=GuestIpConfig(("192.168.1.2/24",)),
    )
    data = guest_network_data(VmNicPlan(nics=(A, B, VF), bonds=(bond,)))
    assert data is not None
    assert data["ethernets"]["red"] == {"match": {"macaddress": "02:00:00:00:00:02"}, "set-name": "red"}
    # a name longer than 15 characters cannot be a guest interface name: matched, not renamed
    assert data["ethernets"]["a-very-long-vf-name"] == {"match": {"macaddress": "02:00:00:00:00:03"}}
    assert data["bonds"] == {
        "bond0": {
            "interfaces": ["red", "a-very-long-vf-name"],
            "parameters": {"mode": "802.3ad", "mii-monitor-interval": 200, "fail-over-mac-policy": "follow"},
            "addresses": ["192.168.1.2/24"],
        }
    }
    assert "blue" in data["ethernets"]


def test_member_without_mac() -> None:
    nomac = HostdevNic(name="vf", source=PciAddress(0, 1, 0, 0))
    with pytest.raises(TranslationError) as err:
        guest_network_data(VmNicPlan(nics=(nomac,), bonds=(GuestBond(name="b", members=(nomac,)),)))
    assert err.value.msg == "interface 'vf': the guest needs configuration for it but it has no MAC to match"


OURS = {
    "version": 2,
    "ethernets": {"blue": {"match": {"macaddress": "02:00:00:00:00:01"}, "addresses": ["10.1.0.5/24"]}},
    "bonds": {"bond0": {"interfaces": ["blue"]}},
}


def test_merge_keeps_the_users_data() -> None:
    user = "version: 2\nethernets:\n  eth0:\n    match: {macaddress: '02:00:00:00:00:aa'}\n    dhcp4: true\n"
    merged = yaml.safe_load(merge_network_data(user, OURS))
    assert merged["ethernets"]["eth0"] == {"match": {"macaddress": "02:00:00:00:00:aa"}, "dhcp4": True}
    assert merged["ethernets"]["blue"] == OURS["ethernets"]["blue"]
    assert merged["bonds"] == OURS["bonds"]


def test_merge_wrapped_and_json_and_empty() -> None:
    wrapped = json.dumps({"network": {"version": 2, "ethernets": {"eth0": {"dhcp4": True}}}})
    merged = yaml.safe_load(merge_network_data(wrapped, OURS))
    assert set(merged["network"]["ethernets"]) == {"eth0", "blue"}
    assert yaml.safe_load(merge_network_data(None, OURS)) == OURS
    assert yaml.safe_load(merge_network_data("  \n", OURS)) == OURS


@pytest.mark.parametrize(
    ("user", "message"),
    [
        (
            "version: 1\nconfig: []\n",
            "the VMI's cloud-init NetworkData is version 1; kvnet's guest network data (bonds, addresses) is version 2",
        ),
        (
            "version: 2\nethernets:\n  blue: {dhcp4: true}\n",
            "NetworkData conflict: the VMI's cloud-init NetworkData already defines ethernets.blue",
        ),
        (
            "version: 2\nethernets:\n  mine: {match: {macaddress: '02:00:00:00:00:01'}}\n",
            "NetworkData conflict: the VMI's cloud-init NetworkData already matches MAC 02:00:00:00:00:01 (ethernets.mine), which kvnet configures for interface 'blue'",
        ),
        (
            "version: 2\nbonds:\n  bond0: {interfaces: [x]}\n",
            "NetworkData conflict: the VMI's cloud-init NetworkData already defines bonds.bond0",
        ),
        (
            "version: 2\nvlans:\n  bond0: {id: 5, link: x}\n",
            "NetworkData conflict: the VMI's cloud-init NetworkData already defines vlans.bond0",
        ),
        ("- a\n", "the VMI's cloud-init NetworkData is not a mapping"),
        ("a: [", "the VMI's cloud-init NetworkData is not YAML/JSON"),
    ],
)
def test_merge_conflicts(user: str, message: str) -> None:
    with pytest.raises(TranslationError) as err:
        merge_network_data(user, OURS)
    assert err.value.msg.startswith(message), err.value.msg


VMI = {
    "metadata": {
        "name": "vm1",
        "annotations": {"kvnet.io/bonds": '[{"name": "bond0", "members": ["blue", "sa"], "mode": "active-backup"}]'},
    },
    "spec": {
        "networks": [{"name": "blue", "multus": {"networkName": "b"}}, {"name": "sa", "multus": {"networkName": "s"}}],
        "domain": {
            "devices": {
                "interfaces": [
                    {"name": "blue", "binding": {"name": "kvnet"}, "macAddress": "02:00:00:00:00:0b"},
                    {"name": "sa", "sriov": {}, "macAddress": "02:00:00:00:00:0a"},
                ]
            }
        },
    },
}
LINKS = {
    "pod16477688c0e": PodLink(
        name="pod16477688c0e",
        mac="02:ab:00:00:00:01",
        mtu=1400,
        record=BindingRecord(original_mac="0a:58:00:00:00:01", mtu=1400, ip=GuestIpConfig(("10.1.0.5/24",))),
    ),
    "tap16477688c0e": PodLink(name="tap16477688c0e", mac="fe:00:00:00:00:01", mtu=1400, kind="tun"),
}


def test_cloud_init_pipeline() -> None:
    """PreCloudInitIso: no domain at hand, so the sriov member's PCI address is not needed."""
    out = cloud_init_network_data(
        VMI, PodFacts(links=LINKS), user_network_data="version: 2\nethernets:\n  eth0: {dhcp4: true}\n"
    )
    assert out is not None
    data = yaml.safe_load(out)
    assert set(data["ethernets"]) == {"eth0", "blue", "sa"}
    assert data["bonds"]["bond0"]["interfaces"] == ["blue", "sa"]
    assert data["bonds"]["bond0"]["addresses"] == ["10.1.0.5/24"]  # the member's IPAM moved to the bond
    assert "addresses" not in data["ethernets"]["blue"]


def test_cloud_init_pipeline_leaves_user_data_alone_when_nothing_to_add() -> None:
    vmi = {"metadata": {"name": "vm1"}, "spec": {"networks": [], "domain": {"devices": {}}}}
    assert cloud_init_network_data(vmi, PodFacts(), user_network_data="version: 1\n") == "version: 1\n"
    assert cloud_init_network_data(vmi, PodFacts(), user_network_data=None) is None


# --- properties -----------------------------------------------------------------------

_ids = st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True)
_mac = st.lists(st.integers(0, 255), min_size=6, max_size=6).map(lambda o: ":".join(f"{b:02x}" for b in o))
_eth = st.dictionaries(_ids, _mac, max_size=5)


@given(_eth, _eth, st.booleans())
def test_merge_keeps_everything_or_refuses(user_eths: dict[str, str], our_eths: dict[str, str], wrap: bool) -> None:
    user_body = {
        "version": 2,
        "ethernets": {k: {"match": {"macaddress": m}, "dhcp4": True} for k, m in user_eths.items()},
    }
    ours = {"version": 2, "ethernets": {k: {"match": {"macaddress": m}, "set-name": k} for k, m in our_eths.items()}}
    user = yaml.safe_dump({"network": user_body} if wrap else user_body)
    clash = bool(set(user_eths) & set(our_eths)) or bool(
        {m.lower() for m in user_eths.values()} & {m.lower() for m in our_eths.values()}
    )
    try:
        merged = yaml.safe_load(merge_network_data(user, ours))
    except TranslationError as err:
        assert clash, err.msg
        assert err.msg.startswith("NetworkData conflict")
        return
    assert not clash
    body = merged["network"] if wrap else merged
    assert body["version"] == 2
    for key, value in user_body["ethernets"].items():
        assert body["ethernets"][key] == value  # the user's entries, untouched
    for key, value in ours["ethernets"].items():
        assert body["ethernets"][key] == value
    assert len(body["ethernets"]) == len(user_eths) + len(our_eths)
