"""KubeVirt's own code (``build/peers/bin/kubevirt-peer``, peers/kubevirt/) on kvnet's example VM.

Each subcommand runs KubeVirt's real functions: the virt-launcher pod's annotations and hook
sidecars (virt-controller), network-info from a network-status (virt-controller's downward
API), the domain the converter makes (virt-launcher), and virt-launcher's hook manager
against the real ``kvnet-sidecar``. What differs from the lab's emulation is listed in
docs/kubevirt-peer.md; these tests pin what KubeVirt really writes.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kvnet.core.naming import hashed_pod_iface
from kvnet.domain.networkinfo import parse_network_info
from kvnet.lab.fake_pod import add_bridge_binding, write_link
from kvnet.lab.vm.kubevirt import deploy_kubevirt_cr
from kvnet.meta.selections import parse_networks

REPO = Path(__file__).resolve().parents[2]
PEERS = Path(os.environ.get("KVNET_PEERS", REPO / "build" / "peers"))
EXAMPLES = REPO / "examples"
UID = "5d307ca9-b3ef-428c-8861-06e72d69f223"
FIRMWARE_UUID = "2f0dc1b4-9f5e-5a3c-8d7e-6b1a0c9e4f21"  # virt-controller sets one on every VMI of a VM
VFIO = {"vf", "sriov-a", "sriov-b"}  # the example's networks on the sriov-vfio NAD


def peer(sub: str, payload: dict[str, Any] | None = None, *, check: bool = True) -> subprocess.CompletedProcess[str]:
    exe = PEERS / "bin" / "kubevirt-peer"
    if not exe.exists():
        pytest.skip("peer bin/kubevirt-peer is not built (make peers)")
    proc = subprocess.run(
        [str(exe), sub],
        input=json.dumps(payload) if payload is not None else "",
        capture_output=True,
        text=True,
        timeout=180,
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def example_vmi() -> dict[str, Any]:
    """examples/vm-kvnet.yaml's VM as the VMI virt-controller makes of it (template metadata and
    spec, the VM's name and namespace), with the status.interfaces virt-controller reports once
    the pod's network-status is there (SR-IOV host devices need ``multus-status``)."""
    vm = next(d for d in yaml.safe_load_all((EXAMPLES / "vm-kvnet.yaml").read_text()) if d["kind"] == "VirtualMachine")
    template = vm["spec"]["template"]
    spec = copy.deepcopy(template["spec"])
    spec["domain"]["firmware"] = {"uuid": FIRMWARE_UUID}
    status = [
        {
            "name": i["name"],
            "interfaceName": "eth0" if "masquerade" in i else hashed_pod_iface(i["name"]),
            "infoSource": "domain, guest-agent, multus-status" if "masquerade" in i else "multus-status",
        }
        for i in spec["domain"]["devices"]["interfaces"]
    ]
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {
            "name": vm["metadata"]["name"],
            "namespace": vm["metadata"]["namespace"],
            "uid": UID,
            **copy.deepcopy(template["metadata"]),
        },
        "spec": spec,
        "status": {"phase": "Scheduled", "interfaces": status},
    }


def example_network_status() -> list[dict[str, Any]]:
    """The network-status a meta-plugin writes for the example pod: the cluster network, then one
    entry per attachment (MAC and MTU of the pod link, SR-IOV device-info), none for the binding."""
    info = json.loads((EXAMPLES / "network-info-kvnet.json").read_text())
    nads = {i["name"]: i["multus"]["networkName"] for i in example_vmi()["spec"]["networks"] if "multus" in i}
    out: list[dict[str, Any]] = [
        {"name": "cluster", "interface": "eth0", "ips": ["10.244.0.12"], "mac": "0a:58:0a:f4:00:0c", "default": True}
    ]
    for e in info["interfaces"]:
        entry: dict[str, Any] = {"name": f"demo/{nads[e['network']]}", "interface": hashed_pod_iface(e["network"])}
        if "mac" in e:
            entry["mac"] = e["mac"]
        if "mtu" in e:
            entry["mtu"] = e["mtu"]
        if "deviceInfo" in e:
            entry["device-info"] = e["deviceInfo"]
        out.append(entry)
    return out


def aliases(el: ET.Element, tag: str) -> list[str]:
    return [a.get("name", "") for d in el.iter(tag) for a in d.findall("alias")]


# ------------------------------------------------------------------------------------------


def test_version_is_the_pinned_one() -> None:
    pinned = re.search(r"^\s*kubevirt\.io/kubevirt (v\S+)$", (REPO / "peers/kubevirt/go.mod").read_text(), re.M)
    assert pinned is not None
    assert pinned.group(1) == "v1.8.4"
    assert peer("version").stdout.strip() == "kubevirt.io/kubevirt v1.8.4"


def test_annotation_names_the_binding_nad_after_each_attachment() -> None:
    out = json.loads(peer("annotation", {"vmi": example_vmi(), "kubevirt": deploy_kubevirt_cr()}).stdout)
    networks = out["annotations"]["k8s.v1.cni.cncf.io/networks"]
    binding = '{"name":"kvnet-binding","namespace":"default","cni-args":{"logicNetworkName":"%s"}}'
    # Go's encoding/json of []NetworkSelectionElement: compact, fields in struct order, the
    # binding entry (no interface, no mac) right after the attachment it plumbs
    entries = [
        '{"name":"br-blue","namespace":"demo","interface":"pod16477688c0e"}',
        binding % "blue",
        '{"name":"sriov-vfio","namespace":"demo","mac":"02:00:00:00:0f:01","interface":"podc70d6cef7d4"}',
        binding % "vf",
        '{"name":"sriov-vfio","namespace":"demo","mac":"02:00:00:00:0a:01","interface":"pod1dc8e509362"}',
        '{"name":"sriov-vfio","namespace":"demo","mac":"02:00:00:00:0b:01","interface":"podee37c5ff5f1"}',
    ]
    assert networks == "[" + ",".join(entries) + "]"
    # the pod network is masquerade: KubeVirt also writes its two istio annotations
    assert set(out["annotations"]) == {
        "k8s.v1.cni.cncf.io/networks",
        "istio.io/reroute-virtual-interfaces",
        "traffic.sidecar.istio.io/kubevirtInterfaces",
    }
    assert out["hookSidecars"] == [
        {
            "image": "registry.example.org/kvnet/kvnet-sidecar:0.1.0",
            "imagePullPolicy": "IfNotPresent",
            "downwardAPI": "device-info",
            "container": "hook-sidecar-0",
        }
    ]
    # kvnet's meta-plugin reads KubeVirt's annotation as it is
    selections = parse_networks(networks, "demo")
    assert [(s.namespace, s.name) for s in selections] == [
        ("demo", "br-blue"),
        ("default", "kvnet-binding"),
        ("demo", "sriov-vfio"),
        ("default", "kvnet-binding"),
        ("demo", "sriov-vfio"),
        ("demo", "sriov-vfio"),
    ]


def test_annotation_unknown_binding_is_an_error() -> None:
    vmi = example_vmi()
    vmi["spec"]["domain"]["devices"]["interfaces"][1]["binding"] = {"name": "nope"}
    proc = peer("annotation", {"vmi": vmi, "kubevirt": deploy_kubevirt_cr()}, check=False)
    assert proc.returncode == 1
    assert "unable to find the network binding plugin 'nope'" in proc.stderr


def test_network_info_from_network_status() -> None:
    payload = {"vmi": example_vmi(), "kubevirt": deploy_kubevirt_cr(), "networkStatus": example_network_status()}
    out = json.loads(peer("network-info", payload).stdout)
    assert set(out["annotations"]) == {"kubevirt.io/network-info"}  # every interface is in status: no update
    value = out["annotations"]["kubevirt.io/network-info"]
    # KubeVirt 1.8 writes network, deviceInfo and mac; the example file (and the lab) also carry
    # mtu, which KubeVirt writes from 1.9 on: everything else is the same, in the same order
    example = json.loads((EXAMPLES / "network-info-kvnet.json").read_text())
    for e in example["interfaces"]:
        e.pop("mtu", None)
    assert json.loads(value) == example == out["networkInfo"]
    assert [e["network"] for e in json.loads(value)["interfaces"]] == ["blue", "sriov-a", "sriov-b", "vf"]
    # kvnet's sidecar reads it
    parsed = parse_network_info(value)
    assert parsed["vf"].device_info is not None and parsed["blue"].mtu is None


def test_network_info_without_device_info_binding_leaves_binding_networks_out() -> None:
    cr = deploy_kubevirt_cr()
    del cr["spec"]["configuration"]["network"]["binding"]["kvnet"]["downwardAPI"]
    payload = {"vmi": example_vmi(), "kubevirt": cr, "networkStatus": json.dumps(example_network_status())}
    info = json.loads(peer("network-info", payload).stdout)["networkInfo"]
    assert [e["network"] for e in info["interfaces"]] == ["sriov-a", "sriov-b"]  # only sriov: {} interfaces


def domain(**binding: str) -> ET.Element:
    payload = {
        "vmi": example_vmi(),
        "kubevirt": deploy_kubevirt_cr(**binding),
        "networkInfo": json.loads((EXAMPLES / "network-info-kvnet.json").read_text()),
    }
    text = peer("domain", payload).stdout
    assert not text.startswith("<?xml") and "\n\t<devices>" in text  # xml.MarshalIndent(spec, "", "\t")
    return ET.fromstring(text)


def test_domain_has_kubevirt_devices_and_no_kvnet_nics() -> None:
    root = domain()
    assert root.get("type") == "qemu"  # useEmulation
    assert root.findtext("name") == "demo_vm-kvnet"
    assert root.find("os/type") is not None and root.find("os/type").get("machine") == "q35"  # type: ignore[union-attr]
    # no domainAttachmentType: KubeVirt leaves the kvnet interfaces out, the sidecar adds them
    assert aliases(root, "interface") == ["ua-default"]
    assert aliases(root, "hostdev") == ["ua-sriov-sriov-a", "ua-sriov-sriov-b"]
    for hd, pci in zip(root.iter("hostdev"), ("0x81", "0x82"), strict=True):
        assert hd.get("type") == "pci" and hd.get("managed") == "no" and hd.get("mode") is None
        addr = hd.find("source/address")
        assert addr is not None
        assert addr.attrib == {"type": "pci", "domain": "0x0000", "bus": pci, "slot": "0x10", "function": "0x2"}


def test_domain_with_tap_attachment_has_the_binding_interfaces() -> None:
    root = domain(domainAttachmentType="tap")
    assert aliases(root, "interface") == ["ua-default", "ua-blue", "ua-vf"]
    ifaces = {i.find("alias").get("name"): i for i in root.iter("interface")}  # type: ignore[union-attr]
    for name in ("ua-blue", "ua-vf"):
        iface = ifaces[name]
        assert iface.get("type") == "ethernet"
        assert iface.find("model").get("type") == "virtio-non-transitional"  # type: ignore[union-attr]
        assert iface.find("rom").get("enabled") == "no"  # type: ignore[union-attr]
        assert iface.find("target") is None  # virt-launcher's network phase 2 fills target, mtu, mac
    assert ifaces["ua-vf"].find("mac").get("address") == "02:00:00:00:0f:01"  # type: ignore[union-attr]
    assert ifaces["ua-blue"].find("mac") is None


# ------------------------------------------------------------------------------------------
# hooks: virt-launcher's hook manager against the real kvnet-sidecar
# ------------------------------------------------------------------------------------------


@pytest.fixture
def kvnet_sidecar() -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    """``kvnet-sidecar`` for the example pod in ``<hooks>/hook-sidecar-0`` (virt-launcher's
    view: one sub-folder per sidecar container) over a fake pod: ``blue`` plumbed by
    kvnet-binding, network-info as examples/network-info-kvnet.json."""
    base = Path(tempfile.mkdtemp(prefix="kvh-"))
    try:
        pod = base / "pod"
        sys_class_net = pod / "sys-class-net"
        sys_class_net.mkdir(parents=True)
        write_link(sys_class_net, "eth0", mac="0a:58:0a:f4:00:0c", mtu=1480)
        add_bridge_binding(sys_class_net, "blue", original_mac="0a:58:0a:01:00:05", mtu=1450)
        (pod / "network-info").write_text((EXAMPLES / "network-info-kvnet.json").read_text())
        hooks = base / "hooks"
        (hooks / "hook-sidecar-0").mkdir(parents=True)
        exe = Path(sys.executable).parent / "kvnet-sidecar"
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "kvnet.sidecar.main"]
        env = {
            **os.environ,
            "KVNET_SYS_CLASS_NET": str(sys_class_net),
            "KVNET_NETWORK_INFO": str(pod / "network-info"),
            "CONTAINER_NAME": "hook-sidecar-0",
        }
        proc = subprocess.Popen(
            [*cmd, "--hooks-dir", str(hooks / "hook-sidecar-0"), "--name", "kvnet"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            yield hooks, proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            if proc.stderr:
                proc.stderr.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def with_cloud_init(vmi: dict[str, Any]) -> dict[str, Any]:
    vmi["spec"]["domain"]["devices"]["disks"] = [{"name": "cloudinitdisk", "disk": {"bus": "virtio"}}]
    vmi["spec"]["volumes"] = [{"name": "cloudinitdisk", "cloudInitNoCloud": {"userData": "#cloud-config\n"}}]
    return vmi


def run_hooks(hooks: Path, vmi: dict[str, Any]) -> dict[str, Any]:
    payload = {
        "hooksDir": str(hooks),
        "sidecars": 1,
        "vmi": vmi,
        "kubevirt": deploy_kubevirt_cr(),
        "networkInfo": json.loads((EXAMPLES / "network-info-kvnet.json").read_text()),
    }
    out: dict[str, Any] = json.loads(peer("hooks", payload).stdout)
    return out


def count(xml_text: str, tag: str, alias: str) -> int:
    return aliases(ET.fromstring(xml_text), tag).count(alias)


@pytest.mark.root
def test_hooks_on_the_kvnet_sidecar(kvnet_sidecar: tuple[Path, subprocess.Popen[bytes]]) -> None:
    hooks, proc = kvnet_sidecar
    out = run_hooks(hooks, with_cloud_init(example_vmi()))
    assert out["sidecars"] == [
        {
            "socket": "hook-sidecar-0/kvnet.sock",
            "name": "kvnet",
            "versions": ["v1alpha1", "v1alpha2", "v1alpha3"],
            "hookPoints": [
                {"name": "OnDefineDomain", "priority": 0},
                {"name": "PreCloudInitIso", "priority": 0},
                {"name": "Shutdown", "priority": 0},
            ],
            "version": "v1alpha3",
        }
    ]
    # PreCloudInitIso: KubeVirt's cloud-init data in, the guest bond of kvnet.io/bonds out
    cloud = out["preCloudInitIso"]
    assert cloud["input"]["NoCloudMetaData"] == {"instance-id": FIRMWARE_UUID, "local-hostname": "vm-kvnet"}
    assert cloud["input"]["NetworkData"] == ""
    assert "bond0" in yaml.safe_load(cloud["output"]["NetworkData"])["bonds"]
    # five interfaces: no placeholder call, the defining call, one more for the extra root ports
    calls = out["onDefineDomain"]
    assert [c["step"] for c in calls] == ["define", "root-ports"]
    assert count(calls[0]["input"], "interface", "ua-blue") == 0
    # the second call gets the first answer as KubeVirt parsed it (api.DomainSpec), so the
    # sidecar meets its own elements again and must not add them twice
    assert count(calls[1]["input"], "interface", "ua-blue") == 1
    assert count(calls[1]["input"], "hostdev", "ua-sriov-vf") == 1
    final = ET.fromstring(out["domainXML"])
    assert out["domainXML"] == calls[-1]["output"]
    assert aliases(final, "interface") == ["ua-default", "ua-blue"]
    assert sorted(aliases(final, "hostdev")) == ["ua-sriov-sriov-a", "ua-sriov-sriov-b", "ua-sriov-vf"]
    blue = next(i for i in final.iter("interface") if i.find("alias[@name='ua-blue']") is not None)
    assert blue.find("target").attrib == {"dev": "tap16477688c0e", "managed": "no"}  # type: ignore[union-attr]
    assert blue.find("mac").get("address") == "0a:58:0a:01:00:05"  # type: ignore[union-attr]
    assert blue.find("mtu").get("size") == "1450"  # type: ignore[union-attr]
    assert len([c for c in final.iter("controller") if c.get("model") == "pcie-root-port"]) == 3
    # Shutdown ends the sidecar
    assert out["shutdown"] == "ok"
    assert proc.wait(timeout=10) == 0


@pytest.mark.root
def test_hooks_with_few_interfaces_call_three_times(kvnet_sidecar: tuple[Path, subprocess.Popen[bytes]]) -> None:
    """Two interfaces: virt-launcher first defines the domain with two hot-plug placeholder
    interfaces, then without them (the sidecar's interfaces dropped again), then with root ports."""
    hooks, _ = kvnet_sidecar
    vmi = with_cloud_init(example_vmi())
    vmi["metadata"]["annotations"] = {}
    keep = {"default", "blue"}
    spec = vmi["spec"]
    spec["domain"]["devices"]["interfaces"] = [i for i in spec["domain"]["devices"]["interfaces"] if i["name"] in keep]
    spec["networks"] = [n for n in spec["networks"] if n["name"] in keep]
    vmi["status"]["interfaces"] = [i for i in vmi["status"]["interfaces"] if i["name"] in keep]
    calls = run_hooks(hooks, vmi)["onDefineDomain"]
    assert [c["step"] for c in calls] == ["placeholders", "define", "root-ports"]
    first = ET.fromstring(calls[0]["input"])
    assert aliases(first, "interface") == ["ua-default", "placeholder-0", "placeholder-1"]
    assert count(calls[0]["output"], "interface", "ua-blue") == 1
    assert aliases(ET.fromstring(calls[1]["input"]), "interface") == ["ua-default"]  # interfaces put back
    for c in calls[1:]:
        assert count(c["output"], "interface", "ua-blue") == 1
    assert "placeholder" not in calls[-1]["output"]


@pytest.mark.root
def test_hooks_pre_cloud_init_iso_without_cloud_init_volume(
    kvnet_sidecar: tuple[Path, subprocess.Popen[bytes]],
) -> None:
    """A VMI without a cloud-init volume: virt-launcher hands the hook manager no cloud-init data,
    and the manager dereferences it for every sidecar subscribed to PreCloudInitIso (as
    kvnet-sidecar is): virt-launcher 1.8.4 would crash there."""
    hooks, _ = kvnet_sidecar
    out = run_hooks(hooks, example_vmi())
    assert out["preCloudInitIso"]["input"] is None
    assert out["preCloudInitIso"]["panicIn"] == "kubevirt.io/kubevirt/pkg/hooks.preCloudInitIsoDataToJSON"
    assert "nil pointer dereference" in out["preCloudInitIso"]["panic"]


@pytest.mark.root
def test_hooks_in_two_stages_leave_the_sidecar_running_between_them(
    kvnet_sidecar: tuple[Path, subprocess.Popen[bytes]],
) -> None:
    """Stage ``start`` makes a start's calls and no Shutdown (the VM runs now); stage
    ``shutdown`` collects the sidecar again and calls only Shutdown, which ends it."""
    hooks, proc = kvnet_sidecar
    payload = {
        "hooksDir": str(hooks),
        "sidecars": 1,
        "vmi": with_cloud_init(example_vmi()),
        "kubevirt": deploy_kubevirt_cr(),
        "networkInfo": json.loads((EXAMPLES / "network-info-kvnet.json").read_text()),
    }
    started = json.loads(peer("hooks", {**payload, "stage": "start"}).stdout)
    assert started["shutdown"] == "not called (stage start)"
    assert [c["step"] for c in started["onDefineDomain"]] == ["define", "root-ports"]
    assert count(started["domainXML"], "interface", "ua-blue") == 1
    time.sleep(0.5)
    assert proc.poll() is None  # no Shutdown reached the sidecar
    stopped = json.loads(peer("hooks", {**payload, "stage": "shutdown"}).stdout)
    assert stopped["shutdown"] == "ok" and stopped["onDefineDomain"] == [] and stopped["preCloudInitIso"] is None
    assert proc.wait(timeout=10) == 0
    bad = peer("hooks", {**payload, "stage": "stop"}, check=False)
    assert bad.returncode == 1 and 'stage "stop"' in bad.stderr


def test_bad_input_is_refused() -> None:
    proc = peer("annotation", {"vmi": example_vmi(), "kubevirtt": {}}, check=False)
    assert proc.returncode == 1 and 'unknown field "kubevirtt"' in proc.stderr
    assert peer("nope", {}, check=False).returncode == 2


def test_peer_starts_fast() -> None:
    start = time.monotonic()
    peer("version")
    assert time.monotonic() - start < 2.0  # no package of KubeVirt's with a slow init is linked in
