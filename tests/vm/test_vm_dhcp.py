"""The whole path for a guest without cloud-init: the VMI has no cloud-init volume, the
guest only runs DHCP clients (udhcpc, dhcpcd) on every NIC, and kvnet-guestnet, started
by kvnet-sidecar as virt-launcher's uid 107 without capabilities, answers them from
inside the pod (docs/guest-addressing.md). On the real API server, KubeVirt's part
played by KubeVirt's code."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest

from kvnet.lab import console
from kvnet.lab.vm.kubevirt import KubeVirtPeer
from kvnet.lab.vm.report import DemoResult
from kvnet.lab.vm.scenario import Scenario, dhcp_scenario
from tests.vm.test_vm_path import assert_kubevirt_played_by_its_code

pytestmark = [pytest.mark.root, pytest.mark.vm]


def guestnet_processes() -> list[str]:
    done = subprocess.run(["pgrep", "-af", "kvnet.guestnet"], capture_output=True, text=True, check=False)
    return [line for line in done.stdout.splitlines() if "pgrep" not in line]


def test_a_guest_without_cloud_init_gets_its_addresses_by_dhcp_and_only_its_own(
    run_vm: Callable[[Scenario], DemoResult], kubevirt_peer: KubeVirtPeer
) -> None:
    """blue (dual stack, a route through its peer) and cyan (IPv4) share one L2, so each NIC's
    DISCOVER and SOLICIT reach both servers: each NIC must get its own lease only; plain has
    no IPAM and nothing may answer on it."""
    before = guestnet_processes()
    scenario = dhcp_scenario()
    result = run_vm(scenario)
    why = result.explain()
    assert result.error is None, why
    assert_kubevirt_played_by_its_code(result, kubevirt_peer)
    rows = {r.network: r for r in result.rows}
    assert list(rows) == ["blue", "cyan", "plain"], why
    blue, cyan, plain = rows["blue"], rows["cyan"], rows["plain"]
    # blue: DHCPv4 and DHCPv6 gave network-status's addresses (IPv6 as a /128), the RA the prefix
    assert blue.answered == ("dhcp4", "dhcp6", "ra6") and blue.unanswered == (), why
    v4, v6 = blue.ipam_addresses
    assert sorted(blue.guest_addresses) == sorted((f"{v4}/24", f"{v6}/128")), why
    # cyan: its own IPv4 lease from its own range, although blue's server hears its DISCOVER
    assert cyan.answered == ("dhcp4",) and cyan.unanswered == ("dhcp6",), why
    assert len(cyan.ipam_addresses) == 1 and cyan.guest_addresses == (f"{cyan.ipam_addresses[0]}/24",), why
    assert cyan.ipam_addresses[0].startswith("10.85.0."), why
    # plain: pure L2, no client got an answer, no address
    assert plain.answered == () and set(plain.unanswered) == {"dhcp4", "dhcp6"} and plain.guest_addresses == (), why
    for row in result.rows:
        assert row.guest_mac == row.domain_mac and row.guest_mtu == row.domain_mtu, f"{row.network}: {why}"
        assert row.ok, f"{row.network}: {why}"
    # what blue's DHCPv4 lease carried: its IPAM route (option 121), the MTU, the pod's DNS and hostname
    report = console.parse(result.console_text)
    lease = next(e for e in report.events if e.kind == "dhcp4" and e.get("link") == blue.guest_name)
    assert lease.get("routes") == "10.99.0.0/16@10.81.0.2" and lease.get("mtu") == "1400", why
    assert lease.get("hostname") == scenario.vmi_name and lease.get("dns") == "10.96.0.10", why
    assert "default.svc.cluster.local" in lease.get("search"), why
    ra = next(e for e in report.events if e.kind == "ra6" and e.get("link") == blue.guest_name)
    assert "fd00:81::/64" in ra.get("routes"), why
    assert blue.pings and all(ok is True for _, ok in blue.pings), why
    assert not result.guest_errors, why
    # nothing left: links, leases, cache, the server processes
    assert result.leftovers == [], why
    assert guestnet_processes() == before, why
