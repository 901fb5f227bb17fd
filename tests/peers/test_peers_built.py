"""The real peers built from Go modules (``make peers``) are there and are the pinned versions.

Every later lane that compares kvnet with the real thing (API server, Multus, the newest
plugins, whereabouts) starts from these binaries; this lane fails when one is missing or
is not the version peers/README.md pins.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PEERS = Path(os.environ.get("KVNET_PEERS", REPO / "build" / "peers"))


def _peer(path: str) -> str:
    found = PEERS / path
    if not found.exists():
        pytest.skip(f"peer {path} is not built (make peers)")
    return str(found)


@pytest.mark.parametrize(
    ("binary", "args", "version"),
    [
        ("bin/kube-apiserver", ["--version"], "Kubernetes v1.37.2"),
        ("bin/kubectl", ["version", "--client"], "Client Version: v1.37.2"),
        ("bin/etcd", ["--version"], "etcd Version: 3.7.3"),
        ("bin/multus", ["--version"], "v4.3.0"),
        ("bin/multus-daemon", ["--version"], "v4.3.0"),
    ],
)
def test_server_versions(binary: str, args: list[str], version: str) -> None:
    proc = subprocess.run([_peer(binary), *args], capture_output=True, text=True, timeout=60)
    assert version in proc.stdout + proc.stderr, proc.stdout + proc.stderr


@pytest.mark.parametrize("plugin", ["bridge", "macvlan", "ptp", "host-local", "static", "tuning", "whereabouts"])
def test_cni_plugins_speak_1_1(plugin: str) -> None:
    """CNI_COMMAND=VERSION: the v1.10 plugins and whereabouts list CNI 1.1.0 (Debian's stop at 1.0.0)."""
    proc = subprocess.run(
        [_peer(f"cni/{plugin}")],
        input='{"cniVersion": "1.1.0"}',
        env={"CNI_COMMAND": "VERSION", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "1.1.0" in json.loads(proc.stdout)["supportedVersions"]


def test_whereabouts_crds_copied() -> None:
    names = sorted(p.name for p in (PEERS / "crds").glob("*.yaml")) if (PEERS / "crds").exists() else []
    if not names:
        pytest.skip("peers are not built (make peers)")
    assert names == [
        "whereabouts.cni.cncf.io_ippools.yaml",
        "whereabouts.cni.cncf.io_nodeslicepools.yaml",
        "whereabouts.cni.cncf.io_overlappingrangeipreservations.yaml",
    ]
