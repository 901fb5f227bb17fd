"""KubeVirt's own code playing KubeVirt's part in the sidecar tests (plain helpers).

``build/peers/bin/kubevirt-peer`` (peers/kubevirt/, KubeVirt v1.8.4) runs virt-launcher's
converter (``domain``), virt-controller's downward API (``network-info``) and
virt-launcher's hook manager (``hooks``: Info, PreCloudInitIso, the 2-3 OnDefineDomain
calls of a start, each fed the previous answer, Shutdown). The tests that need no gRPC
fault use these; the project's ``LauncherClient`` stays for what KubeVirt's client cannot
do (a bad DomainSpec, a sidecar timing out, raw gRPC statuses).

The converter's domain for ``make_vmi()`` is committed as ``kubevirt/vmi-kvnet.xml`` so the
in-process tests read it without a subprocess; ``test_kubevirt_inputs.py`` checks it is what
the peer makes today (``KVNET_WRITE_KUBEVIRT_INPUTS=1`` rewrites it).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from kvnet.core.naming import hashed_pod_iface
from kvnet.lab.vm.kubevirt import deploy_kubevirt_cr

REPO = Path(__file__).resolve().parents[2]
PEERS = Path(os.environ.get("KVNET_PEERS", REPO / "build" / "peers"))
DATA = Path(__file__).resolve().parent / "kubevirt"
CONVERTER_DOMAIN_FILE = DATA / "vmi-kvnet.xml"
SOCKET_FOLDER = "hook-sidecar-0"  # virt-controller's container name, the sidecar's sub-folder

# qemu-img info of make_vmi()'s container disk, as virt-launcher reads it before converting
DISKS_INFO = {"containerdisk": {"format": "qcow2", "backing-filename": "", "actual-size": 1, "virtual-size": 1}}


def with_cloud_init(vmi: dict[str, Any]) -> dict[str, Any]:
    """``vmi`` with a cloudInitNoCloud volume (virt-launcher 1.8.4 hands the hook manager no
    cloud-init data without one, and the manager then panics for a sidecar subscribed to
    PreCloudInitIso, as kvnet-sidecar is: docs/kubevirt-peer.md)."""
    spec = vmi["spec"]
    spec["domain"]["devices"]["disks"].append({"name": "cloudinitdisk", "disk": {"bus": "virtio"}})
    spec["volumes"].append({"name": "cloudinitdisk", "cloudInitNoCloud": {"userData": "#cloud-config\n"}})
    return vmi


def kubevirt_cr() -> dict[str, Any]:
    """The KubeVirt CR as deploy/kubevirt-cr-patch.yaml registers kvnet, emulation on (no KVM)."""
    return deploy_kubevirt_cr()


def peer(sub: str, payload: Mapping[str, Any]) -> str:
    """stdout of ``kubevirt-peer <sub>`` on ``payload`` (skip when the peer is not built)."""
    exe = PEERS / "bin" / "kubevirt-peer"
    if not exe.exists():
        pytest.skip("peer bin/kubevirt-peer is not built (make peers)")
    proc = subprocess.run(
        [str(exe), sub], input=json.dumps(payload), capture_output=True, text=True, timeout=180, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def converter_domain(vmi: Mapping[str, Any], network_info: Any = None) -> str:
    """The domain virt-launcher's converter makes for ``vmi`` (``sriov: {}`` hostdevs from
    ``network_info``): tab-indented, no declaration, as the first OnDefineDomain gets it but
    for network phase 2 (``<mac>``/``<mtu>``/``<target>`` of the pod-network interface)."""
    payload: dict[str, Any] = {"vmi": vmi, "kubevirt": kubevirt_cr(), "disksInfo": DISKS_INFO}
    if network_info is not None:
        payload["networkInfo"] = network_info
    return peer("domain", payload).rstrip("\n")


def network_status(entries: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The pod's network-status for ``make_vmi``'s networks: the cluster network, then one entry
    per network (``{"mac": ..., "device-info": ...}``) on ``default/<network>-nad``."""
    out: list[dict[str, Any]] = [
        {"name": "cluster", "interface": "eth0", "ips": ["10.244.0.12"], "mac": "0a:58:0a:f4:00:0c", "default": True}
    ]
    for net, extra in entries.items():
        out.append({"name": f"default/{net}-nad", "interface": hashed_pod_iface(net), **extra})
    return out


def kubevirt_network_info(vmi: Mapping[str, Any], network_status: list[dict[str, Any]]) -> str:
    """The ``kubevirt.io/network-info`` value virt-controller writes for that network-status
    ("" when KubeVirt writes no annotation: the downward-API file is then empty)."""
    out = json.loads(peer("network-info", {"vmi": vmi, "kubevirt": kubevirt_cr(), "networkStatus": network_status}))
    value = out["annotations"].get("kubevirt.io/network-info")
    return str(value) if value is not None else ""


def kubevirt_hooks(
    hooks_dir: Path,
    vmi: Mapping[str, Any],
    *,
    domain_xml: str | None = None,
    network_info: Any = None,
    sidecars: int = 1,
) -> dict[str, Any]:
    """virt-launcher's hook manager over ``hooks_dir``'s sub-folders (KubeVirt's output keys:
    sidecars, callbacks, preCloudInitIso, onDefineDomain, domainXML, shutdown)."""
    payload: dict[str, Any] = {
        "hooksDir": str(hooks_dir),
        "sidecars": sidecars,
        "vmi": vmi,
        "kubevirt": kubevirt_cr(),
        "disksInfo": DISKS_INFO,
        "timeoutSeconds": 20,
    }
    if domain_xml is not None:
        payload["domainXML"] = domain_xml
    if network_info is not None:
        payload["networkInfo"] = network_info
    out: dict[str, Any] = json.loads(peer("hooks", payload))
    return out
