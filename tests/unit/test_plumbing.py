"""The pod after the binding ran (kvnet.core.plumbing): one row per plumbing kind, links and MACs."""

from __future__ import annotations

import pytest

from kvnet.core import naming
from kvnet.core.model import BindingRecord, GuestIpConfig, PciAddress, PodLink
from kvnet.core.plumbing import (
    BridgedTap,
    Macvtap,
    Plumbing,
    RedirectedTap,
    VfioVf,
    pod_links,
    tap_plumbing,
)

BLUE = "pod16477688c0e"  # naming.hashed_pod_iface("blue")
MAC = "0a:58:0a:01:00:05"
RECORD = BindingRecord(MAC, 1450, GuestIpConfig(("10.1.0.5/24",), ("10.1.0.1",)))
SWAPPED = "3a:00:a0:0f:09:4b"  # naming.swapped_mac(MAC)
TAP_MAC = "02:c9:46:08:1c:48"  # naming.stand_in_mac("tap16477688c0e"): the kernel's random tap MAC, stood in for


@pytest.mark.parametrize(
    ("plumbing", "links"),
    [
        pytest.param(
            BridgedTap(BLUE, RECORD),
            (
                PodLink(BLUE, SWAPPED, 1450, kind="veth", master="k6t-16477688c0e", record=RECORD),
                PodLink("k6t-16477688c0e", TAP_MAC, 1450, kind="bridge"),  # the lower port MAC
                PodLink("tap16477688c0e", TAP_MAC, 1450, kind="tun", master="k6t-16477688c0e"),
            ),
            id="bridged-tap-veth",
        ),
        pytest.param(
            BridgedTap(BLUE, RECORD, "bond", multi_queue=True),
            (
                PodLink(BLUE, SWAPPED, 1450, kind="bond", master="k6t-16477688c0e", record=RECORD),
                PodLink("k6t-16477688c0e", TAP_MAC, 1450, kind="bridge"),
                PodLink("tap16477688c0e", TAP_MAC, 1450, kind="tun", master="k6t-16477688c0e", multi_queue=True),
            ),
            id="bridged-tap-pod-bond-multiqueue",
        ),
        pytest.param(
            RedirectedTap(BLUE, RECORD),
            (
                PodLink(BLUE, MAC, 1450, kind="macvlan", record=RECORD),  # no MAC swap
                PodLink("tap16477688c0e", TAP_MAC, 1450, kind="tun"),  # no bridge, no master
            ),
            id="redirected-tap-macvlan",
        ),
        pytest.param(
            RedirectedTap("net1", BindingRecord("0A:58:0A:01:00:05", 9000), "ipvlan"),
            (
                PodLink("net1", MAC, 9000, kind="ipvlan", record=BindingRecord("0A:58:0A:01:00:05", 9000)),
                PodLink("tap1", naming.stand_in_mac("tap1"), 9000, kind="tun"),
            ),
            id="redirected-tap-ipvlan-ordinal",
        ),
        pytest.param(
            Macvtap(BLUE, "02:00:00:00:00:07", 1500),
            (PodLink(BLUE, "02:00:00:00:00:07", 1500, kind="macvtap"),),
            id="macvtap",
        ),
        pytest.param(VfioVf(BLUE, PciAddress(0, 0x81, 0x10, 1)), (), id="vfio-vf-hostdev"),
    ],
)
def test_links(plumbing: Plumbing, links: tuple[PodLink, ...]) -> None:
    assert plumbing.links() == links
    for link in links:
        assert naming.ifname_problem(link.name) is None


def test_macs_follow_the_naming_rules() -> None:
    bridged = BridgedTap(BLUE, RECORD)
    assert bridged.pod_mac == naming.swapped_mac(MAC) == SWAPPED
    assert naming.stand_in_mac(bridged.tap) == TAP_MAC
    pod, bridge, tap = bridged.links()
    assert bridge.mac == naming.bridge_mac((pod.mac, tap.mac))
    assert RedirectedTap(BLUE, RECORD).pod_mac == MAC


@pytest.mark.parametrize(
    ("kind", "mode", "expected"),
    [
        ("veth", "auto", BridgedTap),
        ("", "auto", BridgedTap),
        ("vxlan", "auto", BridgedTap),
        ("bond", "auto", BridgedTap),
        ("macvlan", "auto", RedirectedTap),
        ("ipvlan", "auto", RedirectedTap),
        ("macvlan", "bridge", BridgedTap),
        ("veth", "redirect", RedirectedTap),
    ],
)
def test_tap_plumbing_mode_rule(kind: str, mode: str, expected: type) -> None:
    got = tap_plumbing(BLUE, RECORD, kind, mode=mode, multi_queue=True)
    assert got == expected(BLUE, RECORD, kind, True)
    assert got.mode == ("bridge" if expected is BridgedTap else "redirect")


def test_tap_plumbing_refuses_an_unknown_mode() -> None:
    with pytest.raises(ValueError, match="mode 'macvtap' is not one of auto, bridge, redirect"):
        tap_plumbing(BLUE, RECORD, "veth", mode="macvtap")


def test_pod_links_of_a_pod() -> None:
    red = naming.hashed_pod_iface("red")
    links = pod_links([BridgedTap(BLUE, RECORD), Macvtap(red, "02:00:00:00:00:07", 1500), VfioVf("podc70d6cef7d4")])
    assert list(links) == [BLUE, "k6t-16477688c0e", "tap16477688c0e", red]
    assert all(name == link.name for name, link in links.items())
