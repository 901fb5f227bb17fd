"""KubeVirt-shaped inputs and fake pod facts for the sidecar tests (plain helpers).

The domain is what KubeVirt's converter makes (kubevirt/vmi-kvnet.xml, written by
``kubevirt-peer domain``: tab-indented, no XML declaration); the VMI has metadata, spec
and status as virt-launcher marshals it. Pod
facts are a fake /sys/class/net tree and a network-info file in a temp folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvnet.core.naming import hashed_pod_iface
from kvnet.domain.networkinfo import parse_network_info
from kvnet.lab.fake_pod import add_bridge_binding, write_link
from kvnet.lab.fake_pod import network_info as lab_network_info
from kvnet.sidecar.podfacts import read_pod_links

__all__ = [
    "KUBEVIRT_DOMAIN",
    "NETWORK_INFO_EMPTY",
    "PodFiles",
    "SidecarProcess",
    "add_bridge_binding",
    "facts_reader",
    "kvnet_hooks",
    "make_vmi",
    "network_info",
    "sidecar_cmd",
    "write_link",
]

# The domain KubeVirt's converter makes for make_vmi() (kubevirt-peer domain; kvnet's
# interfaces are not in it, the sidecar adds them). Checked against the peer by
# test_kubevirt_inputs.py.
KUBEVIRT_DOMAIN = (Path(__file__).resolve().parent / "kubevirt" / "vmi-kvnet.xml").read_text().rstrip("\n")

NETWORK_INFO_EMPTY = ""  # what the downward-API file holds before KubeVirt writes the annotation


def network_info(entries: Mapping[str, Mapping[str, Any]]) -> str:
    """The ``kubevirt.io/network-info`` value for ``entries`` as virt-controller writes it:
    Go's compact ``json.Marshal``, networks sorted (test_kubevirt_inputs.py checks it byte
    for byte against ``kubevirt-peer network-info``)."""
    return json.dumps(json.loads(lab_network_info(entries)), separators=(",", ":"))


def make_vmi(
    networks: Mapping[str, str | None] = {"red": "kvnet"},
    *,
    macs: Mapping[str, str] = {},
    annotations: Mapping[str, str] = {},
    name: str = "vmi-kvnet",
) -> dict[str, Any]:
    """A VMI as virt-launcher marshals it: ``networks`` maps each secondary network to the
    binding plugin name (``None`` = ``sriov: {}``); the pod network uses masquerade."""
    interfaces: list[dict[str, Any]] = [{"name": "default", "masquerade": {}}]
    nets: list[dict[str, Any]] = [{"name": "default", "pod": {}}]
    status: list[dict[str, Any]] = [
        {
            "name": "default",
            "interfaceName": "eth0",
            "ipAddress": "10.244.0.12",
            "ipAddresses": ["10.244.0.12"],
            "mac": "02:00:00:00:00:01",
            "infoSource": "domain, guest-agent, multus-status",
            "queueCount": 1,
        }
    ]
    for net, binding in networks.items():
        iface: dict[str, Any] = {"name": net}
        if binding is None:
            iface["sriov"] = {}
        else:
            iface["binding"] = {"name": binding}
        if net in macs:
            iface["macAddress"] = macs[net]
        interfaces.append(iface)
        nets.append({"name": net, "multus": {"networkName": f"default/{net}-nad"}})
        status.append(
            {"name": net, "interfaceName": hashed_pod_iface(net), "infoSource": "multus-status", "queueCount": 1}
        )
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": "5d307ca9-b3ef-428c-8861-06e72d69f223",
            "resourceVersion": "1234",
            "generation": 1,
            "creationTimestamp": "2026-11-28T09:00:00Z",
            "labels": {"kubevirt.io/nodeName": "node01"},
            "annotations": {"kubevirt.io/latest-observed-api-version": "v1", **annotations},
            "finalizers": ["kubevirt.io/virtualMachineControllerFinalize", "foregroundDeleteVirtualMachine"],
        },
        "spec": {
            "architecture": "amd64",
            "domain": {
                "cpu": {"cores": 1, "sockets": 1, "threads": 1, "model": "host-model"},
                "devices": {
                    "disks": [{"name": "containerdisk", "disk": {"bus": "virtio"}}],
                    "interfaces": interfaces,
                },
                "features": {"acpi": {"enabled": True}},
                "firmware": {"uuid": "5d307ca9-b3ef-428c-8861-06e72d69f223"},
                "machine": {"type": "q35"},
                "resources": {"requests": {"memory": "128Mi"}},
            },
            "evictionStrategy": "None",
            "networks": nets,
            "terminationGracePeriodSeconds": 0,
            "volumes": [
                {"name": "containerdisk", "containerDisk": {"image": "quay.io/kubevirt/cirros-container-disk-demo"}}
            ],
        },
        "status": {
            "phase": "Scheduled",
            "nodeName": "node01",
            "interfaces": status,
            "launcherContainerImageVersion": "quay.io/kubevirt/virt-launcher:v1.6.0",
            "qosClass": "Burstable",
        },
    }


# --------------------------------------------------------------------------------------
# Fake pod facts: the /sys/class/net tree and network-info writers live in kvnet.lab.fake_pod
# --------------------------------------------------------------------------------------


@dataclass
class PodFiles:
    """A pod's view for the sidecar: ``sys_class_net`` tree and ``network_info`` file."""

    root: Path

    @property
    def sys_class_net(self) -> Path:
        return self.root / "sys-class-net"

    @property
    def network_info(self) -> Path:
        return self.root / "podinfo" / "network-info"

    def env(self, *, timeout: float = 2.0, name: str | None = None) -> dict[str, str]:
        env = {
            **os.environ,
            "KVNET_SYS_CLASS_NET": str(self.sys_class_net),
            "KVNET_NETWORK_INFO": str(self.network_info),
            "KVNET_NETWORK_INFO_TIMEOUT": str(timeout),
        }
        if name:
            env["NETWORK_BINDING_PLUGIN_NAME"] = name
        return env


# --------------------------------------------------------------------------------------
# Hooks directories and sidecar processes
# --------------------------------------------------------------------------------------


@dataclass
class SidecarProcess:
    proc: subprocess.Popen[bytes]
    socket: Path

    def stderr(self) -> str:
        return self.proc.stderr.read().decode() if self.proc.stderr else ""


def sidecar_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "kvnet-sidecar"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "kvnet.sidecar.main"]


def facts_reader(pod: PodFiles, *, timeout: float = 2.0, interval: float = 0.05) -> Any:
    from kvnet.sidecar.hooks import PodFactsReader

    return PodFactsReader(
        str(pod.network_info),
        str(pod.sys_class_net),
        read_links=read_pod_links,
        parse_network_info=parse_network_info,
        timeout=timeout,
        interval=interval,
    )


def kvnet_hooks(pod: PodFiles, name: str = "kvnet", *, timeout: float = 2.0) -> Any:
    """kvnet's real hooks (the pipeline translator) reading ``pod``'s facts."""
    from kvnet.sidecar.hooks import KvnetHooks
    from kvnet.sidecar.wiring import PipelineTranslator

    return KvnetHooks(name, facts_reader(pod, timeout=timeout), PipelineTranslator())
