"""kvnet-binding on a bond as the pod link, as bond-cni would leave it in the pod.

bond-cni builds the bond inside the pod netns from member links and names it as the
attachment asks (``pod<hash>`` under KubeVirt). To the binding it is just another kernel
link: bridge mode, with the bond as the bridge port and the MAC swap on the bond. bond-cni
is not packaged in Debian, so the test builds the same shape with ``ip``: a bond of two
veths whose peers sit in a "node" netns. A kernel without bonding skips with the reason.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import Any

import pytest
from test_binding_real import BLUE, binding_conf, link, run_cni, snapshot, sysfs

from kvnet.binding.plan import swapped_mac
from kvnet.core import bindrecord
from kvnet.core.model import BindingRecord, GuestIpConfig

pytestmark = pytest.mark.root

BRIDGE, TAP = "k6t-16477688c0e", "tap16477688c0e"
MEMBERS = ("bm0", "bm1")


def require_bonding(ns: Any) -> None:
    """Skip, with the reason, unless this kernel can make a bond (in a throwaway netns)."""
    probe = subprocess.run(
        ["ip", "-n", ns.name, "link", "add", "kvbondprobe", "type", "bond"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        pytest.skip(
            "missing kernel feature: bonding (and bond-cni is not packaged in Debian): "
            f"ip link add type bond: {probe.stderr.strip()}"
        )
    subprocess.run(["ip", "-n", ns.name, "link", "del", "kvbondprobe"], check=True)


def ip(ns: Any, *args: str) -> None:
    subprocess.run(["ip", "-n", ns.name, *args], check=True, capture_output=True, text=True)


def test_bond_pod_link_gets_bridge_mode_and_del_restores_it(
    netns_factory: Callable[[str], Any], kvnet_bin_dir: str
) -> None:
    node, pod = netns_factory("kvnode"), netns_factory("kvpod")
    require_bonding(pod)
    # what bond-cni leaves: an active-backup bond named as the attachment, over two members
    ip(pod, "link", "add", BLUE, "type", "bond", "mode", "active-backup", "miimon", "100")
    for n, member in enumerate(MEMBERS):
        ip(pod, "link", "add", member, "type", "veth", "peer", "name", f"bp{n}", "netns", node.name)
        ip(pod, "link", "set", member, "master", BLUE)
        ip(node, "link", "set", f"bp{n}", "up")
    ip(pod, "link", "set", BLUE, "mtu", "1400", "up")
    # and what its IPAM leaves on it
    ip(pod, "addr", "add", "10.77.0.2/24", "dev", BLUE)
    ip(pod, "route", "add", "default", "via", "10.77.0.1", "dev", BLUE)
    ip(pod, "route", "add", "10.88.0.0/16", "via", "10.77.0.1", "dev", BLUE)
    before = snapshot(pod.name, BLUE)
    bond = link(pod.name, BLUE)
    assert bond is not None and bond["linkinfo"]["info_kind"] == "bond"
    original_mac = before["mac"]

    binary = f"{kvnet_bin_dir}/kvnet-binding"
    rc, result = run_cni(binary, "ADD", binding_conf("blue"), netns=pod.path, ifname="net2", path=kvnet_bin_dir)
    assert (rc, result) == (0, {"cniVersion": "1.0.0"})

    bridge, tap, pod_link = link(pod.name, BRIDGE), link(pod.name, TAP), link(pod.name, BLUE)
    assert bridge is not None and bridge["linkinfo"]["info_kind"] == "bridge"
    assert tap is not None and tap["linkinfo"]["info_kind"] == "tun" and tap["mtu"] == 1400 and tap["master"] == BRIDGE
    assert sysfs(pod.name, f"/sys/class/net/{TAP}/owner") == "107"
    assert pod_link is not None and pod_link["master"] == BRIDGE  # the bond itself is the bridge port
    assert pod_link["linkinfo"]["info_slave_data"]["learning"] is False
    assert pod_link["address"] == swapped_mac(original_mac)  # the guest takes the bond's MAC
    for member in MEMBERS:  # the bond keeps its members
        m = link(pod.name, member)
        assert m is not None and m["master"] == BLUE
    plumbed = snapshot(pod.name, BLUE)
    assert plumbed["addresses"] == [] and plumbed["routes"] == []
    assert bindrecord.decode(pod_link.get("ifalias", "")) == BindingRecord(
        original_mac, 1400, GuestIpConfig(("10.77.0.2/24",), ("10.77.0.1",), (("10.88.0.0/16", "10.77.0.1"),))
    )

    rc, result = run_cni(binary, "ADD", binding_conf("blue"), netns=pod.path, ifname="net2", path=kvnet_bin_dir)
    assert rc == 0, result
    assert snapshot(pod.name, BLUE) == plumbed
    rc, result = run_cni(binary, "CHECK", binding_conf("blue"), netns=pod.path, ifname="net2", path=kvnet_bin_dir)
    assert rc == 0, result

    rc, result = run_cni(binary, "DEL", binding_conf("blue"), netns=pod.path, ifname="net2", path=kvnet_bin_dir)
    assert rc == 0, result
    assert snapshot(pod.name, BLUE) == before
    assert link(pod.name, TAP) is None and link(pod.name, BRIDGE) is None
    for member in MEMBERS:
        m = link(pod.name, member)
        assert m is not None and m["master"] == BLUE
    rc, result = run_cni(binary, "DEL", binding_conf("blue"), netns=pod.path, ifname="net2", path=kvnet_bin_dir)
    assert rc == 0, result
