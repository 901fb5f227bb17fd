"""Fixtures of the VM lane: the built guest image and the tools a boot needs.

The guest comes from ``build/guest`` (``make guest`` / ``kvnet guest build``), or from
``KVNET_GUEST_DIR``; when neither holds one it is built here once (cached), and the
lane skips with the reason when that is impossible (no apt, no network). KubeVirt's part
is played by ``kubevirt-peer`` (KubeVirt's own code, ``make peers``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kvnet.core.errors import KvnetError
from kvnet.lab import guest
from kvnet.lab.kube import KubeCluster
from kvnet.lab.vm.kubevirt import KubeVirtPeer, peer_missing, peer_path
from kvnet.lab.vm.report import DemoResult
from kvnet.lab.vm.run import run_scenario
from kvnet.lab.vm.scenario import Scenario, kubevirt_cr

REPO = Path(__file__).resolve().parents[2]


def guest_dir() -> Path:
    return Path(os.environ.get("KVNET_GUEST_DIR", REPO / "build" / "guest"))


@pytest.fixture(scope="session")
def guest_image() -> guest.GuestImage:
    """The built test guest (built on first use when missing; skip when it cannot be)."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, taps, libvirtd)")
    if not shutil.which("qemu-system-x86_64"):
        pytest.skip("QEMU not installed (apt-get install qemu-system-x86)")
    try:
        return guest.load(guest_dir())
    except KvnetError:
        pass
    try:
        return guest.build(guest_dir())
    except KvnetError as err:
        pytest.skip(f"guest image not available and cannot be built: {err.msg}")


@pytest.fixture(scope="session")
def kubevirt_peer() -> KubeVirtPeer:
    """KubeVirt's own code (``build/peers/bin/kubevirt-peer``) with kvnet registered in the
    KubeVirt CR: it plays KubeVirt's part in the VM lane (skip when not built)."""
    missing = peer_missing()
    if missing:
        pytest.skip(missing)
    return KubeVirtPeer(peer_path(), kubevirt_cr())


@pytest.fixture
def libvirtd() -> None:
    """Skip when this machine has no libvirtd (every kvnet piece of the path is imported
    for real: a broken import fails the lane instead of skipping it)."""
    if not shutil.which("libvirtd"):
        pytest.skip("libvirtd not installed (apt-get install libvirt-daemon-system)")


@pytest.fixture
def run_vm(
    guest_image: guest.GuestImage,
    libvirtd: None,
    netns_factory: Callable[[str], Any],
    kube: KubeCluster,
    kubevirt_peer: KubeVirtPeer,
) -> Callable[..., DemoResult]:
    """``run_vm(scenario, **options)``: the whole path on the real API server, KubeVirt's part
    by KubeVirt's code; ``options`` are :func:`~kvnet.lab.vm.run.run_scenario`'s (``while_up``, ...)."""

    def run(scenario: Scenario, **options: Any) -> DemoResult:
        return run_scenario(
            guest_image.kernel.parent,
            scenario,
            netns_factory=netns_factory,
            kube=kube,
            kubevirt=kubevirt_peer,
            **options,
        )

    return run
