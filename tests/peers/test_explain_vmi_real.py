"""``kvnet explain vmi`` against the real kube-apiserver with KubeVirt's own CRDs
(``kubevirt-peer crds``): the VMIs and the KubeVirt CR are validated by KubeVirt's schema,
the virt-launcher pods carry KubeVirt's label and the network-status the meta-plugin
writes; each row names the first cause explain proves for a VMI network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kvnet.core.naming import hashed_pod_iface
from kvnet.lab.kube import KubeCluster

REPO = Path(__file__).resolve().parents[2]
PEERS = Path(os.environ.get("KVNET_PEERS", REPO / "build" / "peers"))
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
NS = "explain-vmi"
KV = "/apis/kubevirt.io/v1/namespaces"
BRIDGE = json.dumps({"cniVersion": "1.0.0", "type": "bridge", "bridge": "kvx1"})
POD_IFACE = hashed_pod_iface("data")  # the launcher pod's link for the VMI network "data"


def load_kubevirt_crds(kube: KubeCluster) -> None:
    exe = PEERS / "bin" / "kubevirt-peer"
    if not exe.exists():
        pytest.skip("peer bin/kubevirt-peer is not built (make peers)")
    done = subprocess.run([str(exe), "crds"], capture_output=True, text=True, timeout=60, check=True)
    crds = json.loads(done.stdout)["items"]
    for crd in crds:
        status, answer = kube.raw("POST", CRDS, crd)
        assert status in (201, 409), answer
    for crd in crds:
        plural = crd["spec"]["names"]["plural"]
        for _ in range(200):
            if kube.raw("GET", f"/apis/kubevirt.io/v1/{plural}")[0] == 200:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"{crd['metadata']['name']} never served")


def vmi(name: str, network: str, binding: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "domain": {"devices": {"interfaces": [{"name": "data", "binding": {"name": binding}}]}},
            "networks": [{"name": "data", "multus": {"networkName": network}}],
        },
    }


def create(kube: KubeCluster, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
    namespace = obj["metadata"]["namespace"]
    kube.ensure_namespace(namespace)
    made: dict[str, Any] = kube.call("POST", f"{KV}/{namespace}/{plural}?fieldValidation=Strict", obj)
    return made


def set_status(kube: KubeCluster, made: dict[str, Any], interfaces: list[str]) -> None:
    """What virt-handler reports: status.interfaces (the status subresource when there is one)."""
    body = {**made, "status": {"interfaces": [{"name": n, "interfaceName": "eth1"} for n in interfaces]}}
    path = f"{KV}/{NS}/virtualmachineinstances/{made['metadata']['name']}"
    status, answer = kube.raw("PUT", path + "/status", body)
    if status == 404:
        status, answer = kube.raw("PUT", path, body)
    assert status == 200, answer


def launcher(kube: KubeCluster, made: dict[str, Any], network: str, status: bool) -> None:
    """A virt-launcher pod as KubeVirt makes it (its label; the NAD as pod<hash>), with the
    network-status the meta-plugin writes after a successful ADD when ``status``."""
    notes = {"k8s.v1.cni.cncf.io/networks": json.dumps([{"name": network, "interface": POD_IFACE}])}
    if status:
        notes["k8s.v1.cni.cncf.io/network-status"] = json.dumps(
            [{"name": f"{NS}/{network}", "interface": POD_IFACE, "ips": ["10.9.0.5"]}]
        )
    name = f"virt-launcher-{made['metadata']['name']}-abcde"
    meta = {
        "name": name,
        "namespace": NS,
        "annotations": notes,
        "labels": {"kubevirt.io/created-by": made["metadata"]["uid"]},
    }
    kube.create(
        {"kind": "Pod", "metadata": meta, "spec": {"containers": [{"name": "compute", "image": "virt-launcher"}]}}
    )


@pytest.fixture(scope="module")
def cluster(kube: KubeCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    load_kubevirt_crds(kube)
    kube.ensure_namespace("kubevirt")
    cr = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "KubeVirt",
        "metadata": {"name": "kubevirt", "namespace": "kubevirt"},
        "spec": {"configuration": {"network": {"binding": {"kvnet": {"sidecarImage": "kvnet-sidecar:dev"}}}}},
    }
    create(kube, "kubevirts", cr)
    kube.create(
        {"kind": "NetworkAttachmentDefinition", "metadata": {"name": "br", "namespace": NS}, "spec": {"config": BRIDGE}}
    )
    ok = create(kube, "virtualmachineinstances", vmi("ok", "br", "kvnet"))
    launcher(kube, ok, "br", status=True)
    set_status(kube, ok, ["data"])
    create(kube, "virtualmachineinstances", vmi("unregistered", "br", "nosuch"))
    create(kube, "virtualmachineinstances", vmi("nolauncher", "br", "kvnet"))
    nonad = create(kube, "virtualmachineinstances", vmi("nonad", "nope", "kvnet"))
    launcher(kube, nonad, "nope", status=False)
    nostatus = create(kube, "virtualmachineinstances", vmi("nostatus", "br", "kvnet"))
    launcher(kube, nostatus, "br", status=True)
    kubeconfig = tmp_path_factory.mktemp("explain-vmi") / "kubeconfig"
    kube.write_kubeconfig(kubeconfig)
    yield kubeconfig
    for name in ("ok", "unregistered", "nolauncher", "nonad", "nostatus"):
        kube.raw("DELETE", f"{KV}/{NS}/virtualmachineinstances/{name}")
        kube.delete("Pod", NS, f"virt-launcher-{name}-abcde")
    kube.delete("NetworkAttachmentDefinition", NS, "br")
    kube.raw("DELETE", f"{KV}/kubevirt/kubevirts/kubevirt")


def explain(kubeconfig: Path, name: str, output: str = "json", *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "kvnet.cli", "explain", "vmi", f"{NS}/{name}", "--kubeconfig", str(kubeconfig)]
    return subprocess.run([*argv, *extra, "--output", output], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("name", "cause"),
    [
        ("ok", None),
        ("unregistered", "binding plugin nosuch not registered in the KubeVirt CR (kubevirt/kubevirt has [kvnet])"),
        ("nolauncher", "virt-launcher pod missing"),
        ("nonad", f"NAD {NS}/nope not found"),
        ("nostatus", "interface absent from VMI status.interfaces"),
    ],
)
def test_explain_vmi_names_the_cause(cluster: Path, name: str, cause: str | None) -> None:
    done = explain(cluster, name)
    assert done.returncode == (0 if cause is None else 1), done.stderr
    (finding,) = json.loads(done.stdout)
    assert finding["network"] == f"{NS}/{name}/data"
    assert finding["present"] is (cause is None)
    assert finding["cause"] == cause
    print(explain(cluster, name, "text").stdout)


def binding(command: str, netns: str, kvnet_bin_dir: str) -> subprocess.CompletedProcess[bytes]:
    """The real kvnet-binding, called as the meta-plugin calls it for the VMI network "data"."""
    conf = {"cniVersion": "1.0.0", "name": "kvnet-binding", "type": "kvnet-binding"}
    env = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": "0123456789abcdef",
        "CNI_NETNS": netns,
        "CNI_IFNAME": "net2",
        "CNI_PATH": kvnet_bin_dir,
        "CNI_ARGS": f"IgnoreUnknown=true;K8S_POD_NAMESPACE={NS};K8S_POD_NAME=virt-launcher-ok-abcde",
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    }
    body = json.dumps({**conf, "args": {"cni": {"logicNetworkName": "data"}}}).encode()
    return subprocess.run([f"{kvnet_bin_dir}/kvnet-binding"], input=body, env=env, capture_output=True, timeout=30)


@pytest.mark.root
def test_explain_vmi_reads_the_binding_record(cluster: Path, netns_factory: Any, kvnet_bin_dir: str) -> None:
    """With --netns (the launcher pod's): no record before kvnet-binding ran, the record it
    writes after, and a record of an unknown version (written by hand: the stand-in for
    another kvnet release) named as such."""
    pod = netns_factory("kvexv")
    ip = ["ip", "-n", pod.name]
    subprocess.run([*ip, "link", "add", POD_IFACE, "type", "veth", "peer", "name", "peer0"], check=True)
    subprocess.run([*ip, "address", "add", "10.9.0.5/24", "dev", POD_IFACE], check=True)
    subprocess.run([*ip, "link", "set", POD_IFACE, "up"], check=True)
    mac = json.loads(subprocess.check_output([*ip, "-j", "link", "show", POD_IFACE]))[0]["address"]

    def finding() -> dict[str, Any]:
        done = explain(cluster, "ok", "json", "--netns", pod.path)
        assert done.returncode in (0, 1), done.stderr
        (found,) = json.loads(done.stdout)
        assert done.returncode == (0 if found["present"] else 1)
        return dict(found)

    assert finding()["cause"] == f"binding record absent on {POD_IFACE}: kvnet-binding did not plumb it"
    done = binding("ADD", pod.path, kvnet_bin_dir)
    assert done.returncode == 0, done.stderr
    try:
        found = finding()
        assert found["cause"] is None
        assert f"binding record on {POD_IFACE}: guest MAC {mac}, MTU 1500" in found["happened"]
        subprocess.run([*ip, "link", "set", POD_IFACE, "alias", '{"kvnet":2,"mac":"' + mac + '"}'], check=True)
        assert finding()["cause"] == (
            f"binding record on {POD_IFACE} unreadable: unsupported kvnet binding record version 2 (this kvnet reads 1)"
        )
    finally:
        binding("DEL", pod.path, kvnet_bin_dir)
