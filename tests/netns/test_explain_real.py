"""kvnet explain against the real kube-apiserver: each row a pod the server really holds,
with the NADs it really has (or lacks), and the cause ``kvnet explain`` names for it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kvnet.lab.kube import KubeCluster

NS = "explain"
OTHER = "explain-other"
BRIDGE = json.dumps({"cniVersion": "1.0.0", "type": "bridge", "bridge": "kvx0"})
SRIOV = json.dumps({"cniVersion": "1.0.0", "type": "sriov"})


def nad(namespace: str, name: str, config: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if annotations:
        meta["annotations"] = annotations
    return {"kind": "NetworkAttachmentDefinition", "metadata": meta, "spec": {"config": config}}


def pod(name: str, networks: str) -> dict[str, Any]:
    return {
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "annotations": {"k8s.v1.cni.cncf.io/networks": networks}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }


@pytest.fixture(scope="module")
def cluster(kube: KubeCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KubeCluster, Path]]:
    objects = [
        nad(OTHER, "br", BRIDGE),
        nad(NS, "vf", SRIOV, {"k8s.v1.cni.cncf.io/resourceName": "intel.com/sriov_a"}),
        pod("missing", "nope"),
        pod("isolated", f"{OTHER}/br"),
        pod("nodevice", "vf"),
    ]
    for obj in objects:
        kube.create(obj)
    kubeconfig = tmp_path_factory.mktemp("explain") / "kubeconfig"
    kube.write_kubeconfig(kubeconfig)
    yield kube, kubeconfig
    for obj in reversed(objects):
        kube.delete(obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])


@pytest.mark.parametrize(
    ("name", "flags", "cause"),
    [
        ("missing", [], f"NAD {NS}/nope not found"),
        ("isolated", ["--namespace-isolation"], f"namespace isolation: the pod in {NS} may not use a NAD in {OTHER}"),
        ("nodevice", [], "resourceName intel.com/sriov_a without an allocated device (no device-info)"),
    ],
)
def test_explain_names_the_cause(cluster: tuple[KubeCluster, Path], name: str, flags: list[str], cause: str) -> None:
    _, kubeconfig = cluster
    argv = [sys.executable, "-m", "kvnet.cli", "explain", f"{NS}/{name}", "--kubeconfig", str(kubeconfig), *flags]
    done = subprocess.run([*argv, "--output", "json"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    (finding,) = json.loads(done.stdout)
    assert finding["present"] is False
    assert finding["cause"] == cause
