"""KubeVirt's own CRDs (``kubevirt-peer crds``, virt-operator's generator) on the real
kube-apiserver: the kvnet binding registration (deploy/kubevirt-cr-patch.yaml on a KubeVirt
CR) and examples/vm-kvnet.yaml's VirtualMachine pass server-side apply with
``fieldValidation=Strict`` (dry run) against KubeVirt's real schema."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from kvnet.lab.kube import KubeCluster

REPO = Path(__file__).resolve().parents[2]
PEERS = Path(os.environ.get("KVNET_PEERS", REPO / "build" / "peers"))
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
QUERY = "?fieldManager=kvnet-crd-test&fieldValidation=Strict&force=true&dryRun=All"


def kubevirt_crds() -> list[dict[str, Any]]:
    exe = PEERS / "bin" / "kubevirt-peer"
    if not exe.exists():
        pytest.skip("peer bin/kubevirt-peer is not built (make peers)")
    done = subprocess.run([str(exe), "crds"], capture_output=True, text=True, timeout=60, check=True)
    items: list[dict[str, Any]] = json.loads(done.stdout)["items"]
    return items


def load_crds(kube: KubeCluster, crds: list[dict[str, Any]]) -> None:
    for crd in crds:
        status, answer = kube.raw("POST", CRDS, crd)
        assert status in (201, 409), answer
    for crd in crds:
        for _ in range(100):
            got = kube.get("CustomResourceDefinition", None, crd["metadata"]["name"]) or {}
            conds = got.get("status", {}).get("conditions", [])
            if any(c["type"] == "Established" and c["status"] == "True" for c in conds):
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"{crd['metadata']['name']} never established")


def test_crds_are_kubevirts() -> None:
    names = {c["metadata"]["name"] for c in kubevirt_crds()}
    assert names == {"kubevirts.kubevirt.io", "virtualmachineinstances.kubevirt.io", "virtualmachines.kubevirt.io"}


def test_manifests_valid_against_kubevirt_schema(kube: KubeCluster) -> None:
    load_crds(kube, kubevirt_crds())
    patch = yaml.safe_load((REPO / "deploy/kubevirt-cr-patch.yaml").read_text())
    cr = {"apiVersion": "kubevirt.io/v1", "kind": "KubeVirt", "metadata": {"name": "kubevirt", "namespace": "kubevirt"}}
    cr["spec"] = patch["spec"]
    vm = next(
        o for o in yaml.safe_load_all((REPO / "examples/vm-kvnet.yaml").read_text()) if o["kind"] == "VirtualMachine"
    )
    for obj, plural in ((cr, "kubevirts"), (vm, "virtualmachines")):
        namespace = obj["metadata"].get("namespace", "default")
        kube.ensure_namespace(namespace)
        path = f"/apis/kubevirt.io/v1/namespaces/{namespace}/{plural}/{obj['metadata']['name']}{QUERY}"
        status, answer = kube.raw("PATCH", path, obj, content_type="application/apply-patch+yaml")
        assert status in (200, 201), f"{obj['kind']}: {status} {answer}"
    bogus = {**vm, "spec": {**vm["spec"], "bogusField": 1}}
    path = f"/apis/kubevirt.io/v1/namespaces/{vm['metadata'].get('namespace', 'default')}/virtualmachines/x{QUERY}"
    bogus["metadata"] = {**vm["metadata"], "name": "x"}
    status, answer = kube.raw("PATCH", path, bogus, content_type="application/apply-patch+yaml")
    assert status >= 400 and "bogusField" in str(answer), answer
