"""The whole path with assertions: kvnet-cni ADD through the real plugins and
kvnet-binding, the sidecar over gRPC, libvirtd in the pod netns, the guest under QEMU.

Each scenario boots its guest once; every assertion message carries the NIC table, the
error and the guest's console log. Teardown runs inside ``run_scenario`` whatever
happens, and its leftovers (netns, links, leases, cache files, domains, processes) are
part of the result."""

from __future__ import annotations

import importlib
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kvnet.lab import guest, vm_demo

pytestmark = [pytest.mark.root, pytest.mark.vm]

PIECES = {
    "kvnet.cni.main": "kvnet-cni (meta-plugin)",
    "kvnet.cni.binding_main": "kvnet-binding",
    "kvnet.sidecar.main": "kvnet-sidecar",
    "kvnet.lab.libvirtd": "libvirtd harness",
    "kvnet.lab.apiserver": "API stand-in",
}


@pytest.fixture
def pieces() -> None:
    """Skip, naming the piece, when part of the path is not in this tree."""
    for module, what in PIECES.items():
        try:
            importlib.import_module(module)
        except ImportError:
            pytest.skip(f"{what} not available ({module})")
    if not shutil.which("libvirtd"):
        pytest.skip("libvirtd not installed (apt-get install libvirt-daemon-system)")


def existing_netns() -> set[str]:
    return set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout.split())


def test_vm_gets_every_nic_and_the_bond_fails_over(
    guest_image: guest.GuestImage, pieces: None, netns_factory: Callable[[str], Any]
) -> None:
    scenario = vm_demo.default_scenario()
    result = vm_demo.run_scenario(guest_image.kernel.parent, scenario, netns_factory=netns_factory)
    why = result.explain()
    assert result.error is None, why
    assert [r.network for r in result.rows] == [n.name for n in scenario.nets], why
    for row in result.rows:
        # every NIC in the guest, with the MAC the domain XML gave it
        assert row.guest_mac == row.domain_mac and row.guest_name == row.network, f"{row.network}: {why}"
        # with the pod link's MTU (the NAD's, when it sets one)
        assert row.guest_mtu == row.domain_mtu == (scenario.net(row.network).mtu or 1500), f"{row.network}: {why}"
        # the attachment's IPAM addresses (network-status) are the guest's addresses
        if row.ipam_addresses:
            want = tuple(f"{ip}/{64 if ':' in ip else 24}" for ip in row.ipam_addresses)
            assert sorted(row.guest_addresses) == sorted(want), f"{row.network}: {why}"
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
    guest_image: guest.GuestImage, pieces: None, netns_factory: Callable[[str], Any], tmp_path: Path
) -> None:
    broken = tmp_path / "guest"
    shutil.copytree(guest_image.kernel.parent, broken)
    (broken / "initrd.gz").write_bytes(b"not an initramfs")
    scenario = vm_demo.bridge_scenario(1)
    result = vm_demo.run_scenario(broken, scenario, netns_factory=netns_factory, failover=False)
    assert result.error is not None and "did not report its NICs" in result.error, result.explain()
    assert "Kernel panic" in result.console_text or "VFS" in result.console_text, result.explain()
    assert "guest console" in result.explain() and "Kernel panic" in result.explain()
    assert not result.ok
    assert result.leftovers == [], result.explain()
    assert result.netns and not set(result.netns) & existing_netns(), result.explain()


def test_eight_nics_all_arrive_and_all_pings_pass(guest_image: guest.GuestImage, pieces: None, netns_factory: Callable[[str], Any]) -> None:
    scenario = vm_demo.bridge_scenario(8)
    result = vm_demo.run_scenario(guest_image.kernel.parent, scenario, netns_factory=netns_factory, failover=False, stay=0)
    why = result.explain()
    assert result.ok, why
    assert [r.guest_name for r in result.rows] == [f"net{i}" for i in range(1, 9)], why
    assert [r.guest_addresses for r in result.rows] == [(f"10.{100 + i}.0.10/24",) for i in range(1, 9)], why
    assert all(ok for r in result.rows for _, ok in r.pings), why
    assert not set(result.netns) & existing_netns(), why
