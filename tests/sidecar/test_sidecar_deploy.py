"""The deployment files say what the sidecar expects: the example VM goes through the
sidecar as KubeVirt would send it, and the CR patch registers the binding as documented."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pod_inputs import KUBEVIRT_DOMAIN, PodFiles, add_bridge_binding, facts_reader, network_info

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
            "annotations": template["metadata"]["annotations"],
        },
        "spec": spec,
        "status": {
            "interfaces": [
                {"name": n["name"], "interfaceName": hashed_pod_iface(n["name"])}
                for n in spec["networks"]
                if "multus" in n
            ]
        },
    }


def test_example_vm_through_the_sidecar(pod: PodFiles) -> None:
    add_bridge_binding(
        pod.sys_class_net, "red", original_mac="02:00:00:10:00:99", ip=GuestIpConfig(("10.10.0.7/24",), ("10.10.0.1",))
    )
    pod.network_info.write_text(
        network_info(
            {
                "red": {},
                "data-a": {"deviceInfo": {"type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:3b:02.4"}}},
                "data-b": {"deviceInfo": {"type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:3b:02.5"}}},
            }
        )
    )
    hostdevs = "".join(
        f'\t\t<hostdev mode="subsystem" type="pci" managed="no">\n\t\t\t<source>\n'
        f'\t\t\t\t<address domain="0x0000" bus="0x3b" slot="0x02" function="0x{fn}"></address>\n'
        f'\t\t\t</source>\n\t\t\t<alias name="ua-sriov-{n}"></alias>\n\t\t</hostdev>\n'
        for n, fn in (("data-a", 4), ("data-b", 5))
    )
    domain = KUBEVIRT_DOMAIN.replace("\t</devices>", hostdevs + "\t</devices>")
    hooks = KvnetHooks("kvnet", facts_reader(pod), PipelineTranslator())
    vmi = json.dumps(example_vmi()).encode()
    out = hooks.on_define_domain(domain.encode(), vmi).decode()
    assert '<alias name="ua-red"' in out and "02:00:00:10:00:05" in out  # the VMI's macAddress wins
    cloud_init = {
        "DataSource": "noCloud",
        "NoCloudMetaData": {"instance-id": "x"},
        "UserData": "#cloud-config\n",
        "NetworkData": "",
        "VolumeName": "cloudinitdisk",
    }
    res = hooks.pre_cloud_init_iso(vmi, json.dumps(cloud_init).encode(), b"")
    nd = yaml.safe_load(json.loads(res.cloud_init_data)["NetworkData"])
    assert nd["version"] == 2
    assert set(nd["bonds"]["bond0"]["interfaces"]) == set(nd["ethernets"]) - {"red"}
    assert nd["bonds"]["bond0"]["parameters"]["mode"] == "active-backup"
    macs = {e["match"]["macaddress"] for e in nd["ethernets"].values()}
    assert {"02:00:00:20:00:0a", "02:00:00:20:00:0b", "02:00:00:10:00:05"} <= macs


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
