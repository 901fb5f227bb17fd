"""kvnet explain against the real kube-apiserver: each row a pod the server really holds,
with the NADs it really has (or lacks), and the cause ``kvnet explain`` names for it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kvnet.lab.kube import KubeCluster
from kvnet.lab.pod_demo import IP, PodLab, in_ns

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


def test_explain_names_a_nad_it_may_not_read(cluster: tuple[KubeCluster, Path], tmp_path: Path) -> None:
    """An identity that may read pods and events but not NADs: the real API server's 403 on
    the NAD GET is the cause explain names (not "not found")."""
    kube, _ = cluster
    account = "explain-reader"
    kube.create({"kind": "ServiceAccount", "metadata": {"name": account, "namespace": NS}})
    rules = [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]},
    ]
    objects = [
        {"kind": "Role", "apiVersion": "rbac.authorization.k8s.io/v1", "metadata": {"name": account, "namespace": NS},
         "rules": rules},
        {"kind": "RoleBinding", "apiVersion": "rbac.authorization.k8s.io/v1",
         "metadata": {"name": account, "namespace": NS},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
         "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": NS}]},
    ]  # fmt: skip
    base = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}"
    kube.call("POST", f"{base}/roles", objects[0])
    kube.call("POST", f"{base}/rolebindings", objects[1])
    try:
        kubeconfig = tmp_path / "reader.kubeconfig"
        kube.write_kubeconfig(kubeconfig, token=kube.token(account, NS))
        argv = [sys.executable, "-m", "kvnet.cli", "explain", f"{NS}/nodevice", "--kubeconfig", str(kubeconfig)]
        deadline = time.monotonic() + 30
        while True:  # the authorizer's informers take the new role in a moment
            done = subprocess.run([*argv, "--output", "json"], capture_output=True, text=True, timeout=60)
            if done.stdout.startswith("[") or time.monotonic() > deadline:  # the pod was read: findings
                break
            time.sleep(0.2)
        assert done.returncode == 1, done.stderr
        (finding,) = json.loads(done.stdout)
        assert finding["cause"] == f"NAD {NS}/vf not readable (HTTP 403)", finding
    finally:
        kube.raw("DELETE", f"{base}/rolebindings/{account}")
        kube.raw("DELETE", f"{base}/roles/{account}")
        kube.delete("ServiceAccount", NS, account)


def test_explain_reads_isolation_from_the_node_conf(cluster: tuple[KubeCluster, Path], tmp_path: Path) -> None:
    """--conf: the node's conflist (as kvnet install writes it) turns namespace isolation on,
    and its globalNamespaces, when they name the NAD's namespace, let the NAD through."""
    _, kubeconfig = cluster

    def explain_with(plugin: dict[str, Any]) -> dict[str, Any]:
        conf = tmp_path / "00-kvnet.conflist"
        conf.write_text(json.dumps({"cniVersion": "1.0.0", "name": "kvnet", "plugins": [plugin]}))
        argv = [sys.executable, "-m", "kvnet.cli", "explain", f"{NS}/isolated", "--kubeconfig", str(kubeconfig)]
        done = subprocess.run(
            [*argv, "--conf", str(conf), "--output", "json"], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 1, done.stderr
        (finding,) = json.loads(done.stdout)
        return dict(finding)

    isolated = explain_with({"type": "kvnet", "namespaceIsolation": True, "cniDir": str(tmp_path / "cache")})
    assert isolated["cause"] == f"namespace isolation: the pod in {NS} may not use a NAD in {OTHER}"
    shared = explain_with({"type": "kvnet", "namespaceIsolation": True, "globalNamespaces": f"default,{OTHER}"})
    assert shared["cause"] == "no network-status entry and no event naming it"


MAIN = {
    "cniVersion": "1.0.0",
    "name": "main",
    "type": "bridge",
    "bridge": "kvx-main",
    "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.61.0.0/24"}]]},
}
MTU_NAD = {
    "cniVersion": "1.0.0",
    "name": "mtu",
    "type": "bridge",
    "bridge": "kvx-mtu",
    "mtu": 1400,
    "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.62.0.0/24"}]]},
}


def test_explain_reads_the_node_cache_and_the_pod_link_mtu(
    kube: KubeCluster, netns_factory: Callable[..., Any], cni_bin_dir: str, kvnet_bin_dir: str, tmp_path: Path
) -> None:
    """A real ADD by kvnet-cni (its delegate cache, libcni's result files, the pod's net1),
    then the link's MTU changed under the pod: explain finds the sandbox in the cache by the
    pod's name, says net1, and reads 1300 where the NAD says 1400."""
    node, podns = netns_factory("kvexn"), netns_factory("kvexp")
    with PodLab(node, podns, tmp_path, kvnet_bin_dir=kvnet_bin_dir, plugin_dir=cni_bin_dir, kube=kube) as lab:
        lab.add_nad("mtu", MTU_NAD, namespace=NS)
        uid = lab.add_pod("mtu-pod", "mtu", namespace=NS)
        conf = lab.config([MAIN])
        rc, _, err = lab.cni("ADD", conf, container="explain0sandbox", pod="mtu-pod", uid=uid, namespace=NS)
        assert rc == 0, err
        argv = [sys.executable, "-m", "kvnet.cli", "explain", f"{NS}/mtu-pod", "--kubeconfig", str(lab.kubeconfig)]
        argv += ["--cache-dir", str(lab.cni_dir), "--netns", podns.path, "--output", "json"]
        clean = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert clean.returncode == 0, clean.stderr
        (finding,) = json.loads(clean.stdout)
        assert finding["cache"] == "the node's cache has it as net1"
        assert finding["mtu"] is None and finding["ok"] is True
        in_ns(podns, IP, "link", "set", "net1", "mtu", "1300")
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert done.returncode == 1, done.stderr
        (finding,) = json.loads(done.stdout)
        assert finding["present"] is True and finding["ok"] is False
        assert finding["mtu"] == "MTU mismatch: NAD says 1400, net1 has 1300"
        text = subprocess.run(argv[:-2], capture_output=True, text=True, timeout=60)
        print(text.stdout)
        rc, _, err = lab.cni("DEL", conf, container="explain0sandbox", pod="mtu-pod", uid=uid, namespace=NS)
        assert rc == 0, err
