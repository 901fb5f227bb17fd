"""The deployment files say what the sidecar expects: the example VM goes through the
sidecar under KubeVirt's own code (``kubevirt-peer``: network-info, the converter's domain,
virt-launcher's hook manager), and the CR patch registers the binding as documented."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import yaml
from kubevirt_code import SOCKET_FOLDER, kubevirt_hooks, kubevirt_network_info
from pod_inputs import PodFiles, add_bridge_binding, facts_reader

from kvnet.core.model import GuestIpConfig
from kvnet.core.naming import hashed_pod_iface
from kvnet.sidecar.hooks import KvnetHooks
from kvnet.sidecar.wiring import PipelineTranslator

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def example_vmi() -> dict[str, Any]:
    """The VMI KubeVirt makes from deploy/vm-example.yaml's VirtualMachine."""
    docs = list(yaml.safe_load_all((DEPLOY / "vm-example.yaml").read_text()))
    [vm] = [d for d in docs if d["kind"] == "VirtualMachine"]
    template = vm["spec"]["template"]
    spec = template["spec"]
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {
            "name": vm["metadata"]["name"],
            "namespace": vm["metadata"]["namespace"],
            "uid": "5d307ca9-b3ef-428c-8861-06e72d69f223",
            "annotations": template["metadata"]["annotations"],
        },
        "spec": spec,
        "status": {
            "interfaces": [
                {"name": n["name"], "interfaceName": hashed_pod_iface(n["name"]), "infoSource": "multus-status"}
                for n in spec["networks"]
                if "multus" in n
            ]
        },
    }


def test_example_vm_through_the_sidecar(serve: Any, hooks_dir: Path, pod: PodFiles) -> None:
    """KubeVirt's part is KubeVirt's code: network-info from the pod's network-status, the
    converter's domain (its two ``sriov: {}`` hostdevs, the container and cloud-init disks),
    and virt-launcher's hook manager (PreCloudInitIso with the volume's cloud-init data, then
    the OnDefineDomain calls)."""
    add_bridge_binding(
        pod.sys_class_net, "red", original_mac="02:00:00:10:00:99", ip=GuestIpConfig(("10.10.0.7/24",), ("10.10.0.1",))
    )
    vmi = example_vmi()
    pci = {"type": "pci", "version": "1.1.0"}
    status = [
        {"name": "cluster", "interface": "eth0", "ips": ["10.244.0.12"], "mac": "0a:58:0a:f4:00:0c", "default": True},
        {"name": "default/red-bridge", "interface": hashed_pod_iface("red"), "mac": "02:00:00:10:00:99"},
        *(
            {
                "name": "default/sriov-data",
                "interface": hashed_pod_iface(n),
                "mac": mac,
                "device-info": {**pci, "pci": {"pci-address": f"0000:3b:02.{fn}"}},
            }
            for n, mac, fn in (("data-a", "02:00:00:20:00:0a", 4), ("data-b", "02:00:00:20:00:0b", 5))
        ),
    ]
    info = kubevirt_network_info(vmi, status)
    pod.network_info.write_text(info)
    serve(KvnetHooks("kvnet", facts_reader(pod), PipelineTranslator()), SOCKET_FOLDER)
    run = kubevirt_hooks(hooks_dir, vmi, network_info=json.loads(info))
    out = run["domainXML"]
    root = ET.fromstring(out)
    nics = {i.find("alias").get("name"): i for i in root.iter("interface")}  # type: ignore[union-attr]
    assert set(nics) == {"ua-default", "ua-red"}
    assert nics["ua-red"].find("mac").get("address") == "02:00:00:10:00:05"  # type: ignore[union-attr]  # the VMI's macAddress wins
    hostdevs = {h.find("alias").get("name"): h.find("source/address") for h in root.iter("hostdev")}  # type: ignore[union-attr]
    assert {a: h.get("function") for a, h in hostdevs.items()} == {"ua-sriov-data-a": "0x4", "ua-sriov-data-b": "0x5"}  # type: ignore[union-attr]
    cloud = run["preCloudInitIso"]
    assert cloud["input"]["UserData"] == vmi["spec"]["volumes"][1]["cloudInitNoCloud"]["userData"]
    nd = yaml.safe_load(cloud["output"]["NetworkData"])
    assert nd["version"] == 2
    assert set(nd["bonds"]["bond0"]["interfaces"]) == set(nd["ethernets"]) - {"red"}
    assert nd["bonds"]["bond0"]["parameters"]["mode"] == "active-backup"
    macs = {e["match"]["macaddress"] for e in nd["ethernets"].values()}
    assert {"02:00:00:20:00:0a", "02:00:00:20:00:0b", "02:00:00:10:00:05"} <= macs
    assert run["shutdown"] == "ok"


def test_cr_patch_registers_the_binding() -> None:
    patch = yaml.safe_load((DEPLOY / "kubevirt-cr-patch.yaml").read_text())
    binding = patch["spec"]["configuration"]["network"]["binding"]["kvnet"]
    assert set(binding) == {"sidecarImage", "networkAttachmentDefinition", "downwardAPI"}
    assert binding["downwardAPI"] == "device-info"
    assert binding["networkAttachmentDefinition"].endswith("/kvnet-binding")


def test_containerfile_runs_the_sidecar_as_qemu() -> None:
    text = (DEPLOY / "Containerfile.sidecar").read_text()
    assert "\nUSER 107:107\n" in text
    assert 'ENTRYPOINT ["kvnet-sidecar"]' in text
