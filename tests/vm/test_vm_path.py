"""The whole path with assertions: kvnet-cni ADD through the real plugins and
kvnet-binding, the sidecar over gRPC, libvirtd in the pod netns, the guest under QEMU.

Each scenario boots its guest once; every assertion message carries the NIC table, the
error and the guest's console log. Teardown runs inside ``run_scenario`` whatever
happens, and its leftovers (netns, links, leases, cache files, domains, processes) are
part of the result."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kvnet.lab import guest
from kvnet.lab.kube import KubeCluster
from kvnet.lab.vm.kubevirt import KubeVirtPeer
from kvnet.lab.vm.report import DemoResult
from kvnet.lab.vm.run import link_leftovers, run_scenario, sh
from kvnet.lab.vm.scenario import Scenario, bridge_scenario, default_scenario, vmi

pytestmark = [pytest.mark.root, pytest.mark.vm]


def existing_netns() -> set[str]:
    return set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout.split())


def assert_kubevirt_played_by_its_code(result: DemoResult, peer: KubeVirtPeer) -> list[str]:
    """KubeVirt's code made the pod's annotations, the network-info file, the domain and the
    hook calls, each OnDefineDomain fed the previous answer, and Shutdown reached the
    sidecar; returns the OnDefineDomain steps."""
    why = result.explain()
    part = result.kubevirt
    assert part is not None and part.by == "kubevirt-peer", why
    # the pod carries exactly what virt-controller's generator writes for this VMI
    assert part.pod_annotations == peer.annotation(vmi(result.scenario))["annotations"], why
    # network-info as KubeVirt's downward API writes it (Go's compact JSON), one entry per network
    info = json.loads(part.network_info)
    assert part.network_info == json.dumps(info, separators=(",", ":")), part.network_info
    assert sorted(e["network"] for e in info["interfaces"]) == sorted(n.name for n in result.scenario.nets), why
    # virt-launcher's OnDefineDomain calls of a start: 2 or 3, each fed the previous answer
    # (the sidecar's interfaces are in the next call's input), the last one is what was defined
    steps = [step for step, _, _ in part.hook_calls]
    assert 2 <= len(steps) <= 3 and steps[-2:] in (["define", "root-ports"], ["placeholders", "define"]), steps
    nics = len(result.scenario.nets)
    for (_, _, answer), (step, sent, _) in zip(part.hook_calls, part.hook_calls[1:], strict=False):
        if step != "define":  # after the placeholder call, virt-launcher puts the converter's interfaces back
            assert sent.count("<interface") == answer.count("<interface") == nics, (step, sent)
    assert part.hook_calls[-1][2].count('type="ethernet"') == nics, part.hook_calls[-1][2]
    assert part.shutdown == "ok", why
    return steps


def test_vm_gets_every_nic_and_the_bond_fails_over(
    run_vm: Callable[[Scenario], DemoResult], kubevirt_peer: KubeVirtPeer
) -> None:
    """The whole path on the real API server (the virt-launcher pod and NADs created there,
    network-status written through its pods/status), KubeVirt's part played by KubeVirt's
    code: the pod's annotations, network-info, the converter's domain and the hook calls."""
    scenario = default_scenario()
    result = run_vm(scenario)
    why = result.explain()
    assert result.error is None, why
    # five interfaces: no placeholder call, the defining call, then one with root ports added
    assert assert_kubevirt_played_by_its_code(result, kubevirt_peer) == ["define", "root-ports"], why
    assert [r.network for r in result.rows] == [n.name for n in scenario.nets], why
    # the networks whose NADs have IPAM, and the address families each one allocates
    with_ipam = {"blue": 2, "green": 1, "red": 1}
    assert with_ipam == {n.name: len([sn for sn in (n.subnet, n.subnet6) if sn]) for n in scenario.nets if n.subnet}, (
        why
    )
    for row in result.rows:
        # every NIC in the guest, with the MAC the domain XML gave it
        assert row.guest_mac == row.domain_mac and row.guest_name == row.network, f"{row.network}: {why}"
        # with the pod link's MTU (the NAD's, when it sets one)
        assert row.guest_mtu == row.domain_mtu == (scenario.net(row.network).mtu or 1500), f"{row.network}: {why}"
        # the attachment's IPAM addresses (network-status) are the guest's addresses;
        # a network without IPAM has none in network-status
        assert len(row.ipam_addresses) == with_ipam.get(row.network, 0), f"{row.network}: {why}"
        if row.network in with_ipam:
            want = tuple(f"{ip}/{64 if ':' in ip else 24}" for ip in row.ipam_addresses)
            assert sorted(row.guest_addresses) == sorted(want), f"{row.network}: {why}"
        assert row.ok, f"{row.network}: {why}"
        # and a ping to the peer on that network (each address family) crossed the pod
        assert row.pings and all(ok is True for _, ok in row.pings), f"{row.network}: {why}"
    pinned = {n.name: n.mac for n in scenario.nets if n.mac}
    assert {r.network: r.domain_mac for r in result.rows if r.network in pinned} == pinned, why
    bond_rows = [r for r in result.rows if "bond0" in r.kind]
    assert {r.guest_addresses for r in bond_rows} == {("10.84.0.5/24",)}, why
    blue = next(r for r in result.rows if r.network == "blue")
    assert [ip.startswith("fd00:81::") for ip in blue.ipam_addresses] == [False, True], why  # dual stack
    assert not result.guest_errors, why
    failover = result.failover
    assert failover is not None and failover.before in ("bond-a", "bond-b"), why
    assert failover.after == ({"bond-a", "bond-b"} - {failover.before}).pop(), why
    assert failover.ping_after is True, why
    # and back: the first member's link up again, the second's down
    assert failover.back == failover.before and failover.ping_back is True, why
    assert result.leftovers == [], why
    assert len(result.netns) == 2 + len(scenario.peers()) and all(n.startswith("kvd-") for n in result.netns), why
    assert not set(result.netns) & existing_netns(), why
    assert {"cni_add", "sidecar_hooks", "define_start", "guest_nics", "cni_del"} <= set(result.timings), why


def test_a_guest_that_does_not_boot_fails_with_its_console_and_still_tears_down(
    guest_image: guest.GuestImage,
    libvirtd: None,
    netns_factory: Callable[[str], Any],
    tmp_path: Path,
    kube: KubeCluster,
    kubevirt_peer: KubeVirtPeer,
) -> None:
    broken = tmp_path / "guest"
    shutil.copytree(guest_image.kernel.parent, broken)
    (broken / "initrd.gz").write_bytes(b"not an initramfs")
    scenario = bridge_scenario(1)
    result = run_scenario(
        broken, scenario, netns_factory=netns_factory, failover=False, kube=kube, kubevirt=kubevirt_peer
    )
    assert result.error is not None and "did not report its NICs" in result.error, result.explain()
    assert "Kernel panic" in result.console_text or "VFS" in result.console_text, result.explain()
    assert "guest console" in result.explain() and "Kernel panic" in result.explain()
    assert not result.ok
    assert result.leftovers == [], result.explain()
    assert result.netns and not set(result.netns) & existing_netns(), result.explain()


def test_eight_nics_all_arrive_with_kvnet_binding_as_its_own_program(
    guest_image: guest.GuestImage,
    libvirtd: None,
    netns_factory: Callable[[str], Any],
    kube: KubeCluster,
    kubevirt_peer: KubeVirtPeer,
) -> None:
    """``"inProcessBinding": false``: each kvnet-binding delegate runs as a separate program,
    as under Multus (the default scenario covers the in-process binding)."""
    scenario = bridge_scenario(8)
    result = run_scenario(
        guest_image.kernel.parent,
        scenario,
        netns_factory=netns_factory,
        failover=False,
        stay=0,
        in_process_binding=False,
        kube=kube,
        kubevirt=kubevirt_peer,
    )
    why = result.explain()
    assert result.ok, why
    assert_kubevirt_played_by_its_code(result, kubevirt_peer)
    # the binding set up its own log (its logFile, which the in-process call never opens):
    # every ADD and every DEL came from a kvnet-binding process of its own
    adds = re.findall(r"kvnet-binding pid=(\d+) ADD container", result.binding_log)
    dels = set(re.findall(r"kvnet-binding pid=(\d+) DEL container", result.binding_log))
    assert len(adds) == len(set(adds)) == 8 and len(dels) == 8 and not dels & set(adds), result.binding_log + why
    assert [r.guest_name for r in result.rows] == [f"net{i}" for i in range(1, 9)], why
    assert [r.guest_addresses for r in result.rows] == [(f"10.{100 + i}.0.10/24",) for i in range(1, 9)], why
    assert all(ok for r in result.rows for _, ok in r.pings), why
    assert not set(result.netns) & existing_netns(), why


def test_links_left_in_the_pod_or_node_netns_are_leftovers(netns_factory: Callable[[str], Any]) -> None:
    """The link check the run does after CNI DEL (no guest needed): only ``lo`` may stay in
    the pod netns, only the demo's own links in the node netns."""
    scenario = default_scenario()
    node, pod = netns_factory("kvd"), netns_factory("kvd")
    for seg in ("kvb-blue", "kvc0"):
        sh("ip", "-n", node.name, "link", "add", seg, "type", "bridge")
    sh("ip", "-n", node.name, "link", "add", "kvp0", "type", "veth", "peer", "name", "api0")
    assert link_leftovers(scenario, pod.name, node.name) == []
    # what a DEL that forgot something leaves: a pod link, a node-side veth of a pod link
    sh("ip", "-n", pod.name, "link", "add", "tapblue", "type", "bridge")
    sh("ip", "-n", node.name, "link", "add", "veth1a2b3c", "type", "veth", "peer", "name", "pod16477688c0e")
    found = link_leftovers(scenario, pod.name, node.name)
    assert sorted(found) == sorted(
        [
            f"link tapblue in the pod netns {pod.name}",
            f"link veth1a2b3c in the node netns {node.name}",
            f"link pod16477688c0e in the node netns {node.name}",
        ]
    ), found
    assert link_leftovers(scenario, "kvd-gone", node.name)[0].startswith(
        "links in the pod netns kvd-gone could not be listed"
    )


@pytest.mark.parametrize("meta", ["multus", "multus-thick"])
def test_kvnet_binding_and_sidecar_under_the_real_multus(
    guest_image: guest.GuestImage,
    libvirtd: None,
    netns_factory: Callable[[str], Any],
    kube: KubeCluster,
    kubevirt_peer: KubeVirtPeer,
    meta: str,
) -> None:
    """A cluster that keeps Multus (v4.3.0, from build/peers; thin, or thick: multus-shim to
    multus-daemon in the node netns) and adds only kvnet's binding: Multus reads the binding
    NADs from the real API server and calls kvnet-binding as its own program; the sidecar
    turns what it plumbed into the guest's NICs, and DEL leaves nothing."""
    scenario = bridge_scenario(3)
    result = run_scenario(
        guest_image.kernel.parent,
        scenario,
        netns_factory=netns_factory,
        failover=False,
        stay=0,
        kube=kube,
        meta=meta,
        in_process_binding=False,  # the binding NADs then name kvnet-binding's own log file
        kubevirt=kubevirt_peer,
    )
    why = result.explain()
    assert result.ok, why
    # three interfaces: a placeholder call first, then the defining call and the root ports
    assert assert_kubevirt_played_by_its_code(result, kubevirt_peer) == ["placeholders", "define", "root-ports"], why
    assert ("multus_daemon" in result.timings) == (meta == "multus-thick"), result.timings
    adds = re.findall(r"kvnet-binding pid=(\d+) ADD container", result.binding_log)
    assert len(set(adds)) == 3, result.binding_log + why
    assert [r.guest_name for r in result.rows] == [f"net{i}" for i in range(1, 4)], why
    assert [r.guest_addresses for r in result.rows] == [(f"10.{100 + i}.0.10/24",) for i in range(1, 4)], why
    assert all(ok for r in result.rows for _, ok in r.pings), why
    assert not set(result.netns) & existing_netns(), why
