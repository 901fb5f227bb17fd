"""``kvnet render`` agrees with KubeVirt's converter plus kvnet's sidecar on the same VMI.

For each VMI: virt-controller's network-info for the pod's network-status and the domain of
virt-launcher's converter come from KubeVirt's own code (``kubevirt-peer network-info`` and
``domain``, KubeVirt v1.8.4); the real ``kvnet-sidecar`` then runs in ``hook-sidecar-0`` over
the pod ``kvnet render`` assumes (its ``assumed_plumbing``, written as a fake
``/sys/class/net``), called by virt-launcher's hook manager (``kubevirt-peer hooks``). The
devices the sidecar added to the last answer must be exactly what ``kvnet render`` prints
(aliases, MACs, models, targets, MTUs, PCI addresses, ACPI indexes, boot order, queues), and
the converter's own devices (the masquerade interface, ``sriov: {}`` hostdevs) must come back
as the converter made them, and the guest network data render prints must be the NetworkData
the sidecar's PreCloudInitIso answer gave the hook manager.

A second check: with ``domainAttachmentType: tap`` the converter renders kvnet's interfaces
itself; on every field it sets there (model, MAC, guest PCI address, ACPI index, boot order,
queues, ROM) it agrees with render. It sets no MTU and no target (virt-launcher's network
phase 2 does, from the pod); those come from the pod in kvnet's answer (docs/vm-nics.md).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kvnet.commands import render
from kvnet.core.naming import hashed_pod_iface
from kvnet.domain.networkinfo import parse_network_info
from kvnet.domain.vmi import parse_vmi
from kvnet.lab.fake_pod import write_link, write_plumbing
from kvnet.lab.vm.kubevirt import deploy_kubevirt_cr

REPO = Path(__file__).resolve().parents[2]
PEERS = Path(os.environ.get("KVNET_PEERS", REPO / "build" / "peers"))
UID = "5d307ca9-b3ef-428c-8861-06e72d69f223"
FIRMWARE_UUID = "2f0dc1b4-9f5e-5a3c-8d7e-6b1a0c9e4f21"

pytestmark = pytest.mark.root  # the hook manager runs in a mount namespace of its own


def nad(name: str, config: dict[str, Any], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "demo"}
    if annotations:
        meta["annotations"] = annotations
    return {
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": meta,
        "spec": {"config": json.dumps(config)},
    }


BRIDGE_NADS = [
    nad(
        "br-blue",
        {
            "cniVersion": "1.0.0",
            "name": "br-blue",
            "type": "bridge",
            "mtu": 1450,
            "ipam": {"type": "static", "addresses": [{"address": "10.1.0.5/24", "gateway": "10.1.0.1"}]},
        },
    ),
    nad("br-red", {"cniVersion": "1.0.0", "name": "br-red", "type": "bridge", "mtu": 9000}),
    nad("mv-green", {"cniVersion": "1.0.0", "name": "mv-green", "type": "macvlan", "master": "eth1", "mtu": 1400}),
]
SRIOV_NAD = nad(
    "sriov-vfio",
    {"cniVersion": "1.0.0", "name": "sriov-vfio", "type": "sriov", "vlan": 100},
    {"k8s.v1.cni.cncf.io/resourceName": "intel.com/sriov_vfio"},
)


def vmi(interfaces: list[dict[str, Any]], networks: dict[str, str], **domain: Any) -> dict[str, Any]:
    """A VMI in namespace ``demo`` with the pod network on masquerade first, a cloud-init volume
    (virt-launcher 1.8.4 needs one for a PreCloudInitIso sidecar, docs/kubevirt-peer.md) and the
    status.interfaces virt-controller reports once the pod's network-status is there."""
    ifaces = [{"name": "default", "masquerade": {}}, *interfaces]
    nets = [{"name": "default", "pod": {}}] + [{"name": n, "multus": {"networkName": v}} for n, v in networks.items()]
    status = [{"name": "default", "interfaceName": "eth0", "infoSource": "domain, guest-agent, multus-status"}] + [
        {"name": n, "interfaceName": hashed_pod_iface(n), "infoSource": "multus-status"} for n in networks
    ]
    spec_domain: dict[str, Any] = {
        "cpu": {"cores": 2},
        "memory": {"guest": "256Mi"},
        "firmware": {"uuid": FIRMWARE_UUID},
        "devices": {"interfaces": ifaces, "disks": [{"name": "cloudinitdisk", "disk": {"bus": "virtio"}}]},
    }
    for key, value in domain.items():
        if key == "devices":
            spec_domain["devices"].update(value)
        else:
            spec_domain[key] = value
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": "vmi-render", "namespace": "demo", "uid": UID, "annotations": {}},
        "spec": {
            "domain": spec_domain,
            "networks": nets,
            "volumes": [{"name": "cloudinitdisk", "cloudInitNoCloud": {"userData": "#cloud-config\n"}}],
        },
        "status": {"phase": "Scheduled", "interfaces": status},
    }


def example_vmi() -> dict[str, Any]:
    """examples/vm-kvnet.yaml: a kvnet bridge NIC, a kvnet VFIO VF, two ``sriov: {}`` VFs bonded
    in the guest (kvnet.io/bonds) beside the masquerade pod network."""
    vm = next(
        d for d in yaml.safe_load_all((REPO / "examples/vm-kvnet.yaml").read_text()) if d["kind"] == "VirtualMachine"
    )
    template = vm["spec"]["template"]
    spec = template["spec"]
    out = vmi(
        [i for i in spec["domain"]["devices"]["interfaces"] if i["name"] != "default"],
        {n["name"]: n["multus"]["networkName"] for n in spec["networks"] if "multus" in n},
        cpu=spec["domain"]["cpu"],
    )
    out["metadata"]["annotations"] = dict(template["metadata"]["annotations"])
    return out


def bond_of_taps() -> dict[str, Any]:
    out = vmi(
        [
            {"name": "blue", "binding": {"name": "kvnet"}, "macAddress": "02:00:00:00:b1:01"},
            {"name": "red", "binding": {"name": "kvnet"}, "macAddress": "02:00:00:00:b1:02"},
        ],
        {"blue": "br-blue", "red": "br-red"},
    )
    out["metadata"]["annotations"]["kvnet.io/bonds"] = json.dumps(
        [{"name": "bond0", "members": ["blue", "red"], "mode": "active-backup", "addresses": ["192.168.60.10/24"]}]
    )
    return out


PCI_ADDRESSES = {"vf": "0000:81:10.2", "sriov-a": "0000:3b:02.4", "sriov-b": "0000:3b:02.5", "vf2": "0000:3b:02.6"}

CASES: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {
    # a tap behind a bridge with everything a VMI can set on a NIC, one with nothing, and a
    # macvlan attachment (the redirected tap), all multi-queue, beside masquerade with a boot order
    "bridge-tap-multiqueue": (
        vmi(
            [
                {
                    "name": "blue",
                    "binding": {"name": "kvnet"},
                    "macAddress": "02:00:00:00:0b:05",
                    "model": "e1000e",
                    "pciAddress": "0000:09:00.0",
                    "acpiIndex": 7,
                    "bootOrder": 1,
                },
                {"name": "red", "binding": {"name": "kvnet"}, "macAddress": "02:00:00:00:0c:05", "acpiIndex": 3},
                {"name": "green", "binding": {"name": "kvnet"}, "macAddress": "02:00:00:00:0d:05", "bootOrder": 2},
                {"name": "pink", "binding": {"name": "kvnet"}, "macAddress": "02:00:00:00:0f:05", "model": "e1000e"},
            ],
            {"blue": "br-blue", "red": "br-red", "green": "mv-green", "pink": "br-red"},
            devices={"networkInterfaceMultiqueue": True},
        ),
        BRIDGE_NADS,
    ),
    # SR-IOV: a kvnet VFIO VF with a guest PCI address and boot order, a kvnet tap, and KubeVirt's
    # own sriov: {} hostdev
    "sriov": (
        vmi(
            [
                {
                    "name": "vf2",
                    "binding": {"name": "kvnet"},
                    "macAddress": "02:00:00:00:0e:05",
                    "pciAddress": "0000:0a:00.0",
                    "bootOrder": 4,
                },
                {"name": "sriov-a", "sriov": {}, "macAddress": "02:00:00:00:0a:01"},
                {"name": "red", "binding": {"name": "kvnet"}},
            ],
            {"vf2": "sriov-vfio", "sriov-a": "sriov-vfio", "red": "br-red"},
        ),
        [*BRIDGE_NADS, SRIOV_NAD],
    ),
    # the example VM: a guest bond over two sriov: {} members beside a kvnet bridge NIC and VF
    "bond-example": (example_vmi(), [BRIDGE_NADS[0], SRIOV_NAD]),
    # a guest bond over two kvnet taps
    "bond-of-taps": (bond_of_taps(), BRIDGE_NADS),
}


def peer(sub: str, payload: dict[str, Any]) -> str:
    exe = PEERS / "bin" / "kubevirt-peer"
    if not exe.exists():
        pytest.skip("peer bin/kubevirt-peer is not built (make peers)")
    proc = subprocess.run([str(exe), sub], input=json.dumps(payload), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def network_status(the_vmi: dict[str, Any]) -> list[dict[str, Any]]:
    """What a meta-plugin writes for the pod: the cluster network, then each attachment with its
    MAC (the VMI's, else one the plugin picked) and, for the VFs, the PCI device-info."""
    nads = {n["name"]: n["multus"]["networkName"] for n in the_vmi["spec"]["networks"] if "multus" in n}
    ifaces = {i["name"]: i for i in the_vmi["spec"]["domain"]["devices"]["interfaces"]}
    out: list[dict[str, Any]] = [
        {"name": "cluster", "interface": "eth0", "ips": ["10.244.0.12"], "mac": "0a:58:0a:f4:00:0c", "default": True}
    ]
    for i, (net, nad_name) in enumerate(nads.items()):
        entry: dict[str, Any] = {
            "name": f"demo/{nad_name}",
            "interface": hashed_pod_iface(net),
            "mac": ifaces[net].get("macAddress", f"0a:58:0a:01:00:{i + 16:02x}"),
        }
        if net in PCI_ADDRESSES:
            entry["device-info"] = {"type": "pci", "version": "1.1.0", "pci": {"pci-address": PCI_ADDRESSES[net]}}
        out.append(entry)
    return out


def by_alias(root: ET.Element) -> dict[str, ET.Element]:
    devices = root if root.tag == "devices" else root.find("devices")
    assert devices is not None
    return {el.find("alias").get("name", ""): el for el in devices if el.find("alias") is not None}  # type: ignore[union-attr]


def c14n(el: ET.Element) -> str:
    return ET.canonicalize(ET.tostring(el, encoding="unicode"), strip_text=True)


@pytest.fixture
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="kvr-"))  # short: unix socket paths are limited to 107 bytes
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def render_devices(work: Path, the_vmi: dict[str, Any], nads: list[dict[str, Any]], info_path: Path) -> ET.Element:
    return ET.fromstring(render_both(work, the_vmi, nads, info_path)[0])


def render_both(
    work: Path, the_vmi: dict[str, Any], nads: list[dict[str, Any]], info_path: Path
) -> tuple[str, str | None]:
    """``kvnet render``'s two outputs: the devices XML and the guest network data."""
    vm_file = work / "vm.yaml"
    vm_file.write_text(yaml.safe_dump_all([the_vmi, *nads]))
    parser = argparse.ArgumentParser()
    render.register(parser)
    args = parser.parse_args([str(vm_file), "--network-info", str(info_path), "--only", "xml"])
    return render.render_outputs(args)


def sidecar_answer(
    work: Path, the_vmi: dict[str, Any], nads: list[dict[str, Any]], info: str, domain: str
) -> dict[str, Any]:
    """The real kvnet-sidecar over the pod render assumes, called by KubeVirt's hook manager."""
    sys_class_net = work / "pod" / "sys-class-net"
    sys_class_net.mkdir(parents=True)
    write_link(sys_class_net, "eth0", mac="0a:58:0a:f4:00:0c", mtu=1480)
    nad_map = {f"demo/{n['metadata']['name']}": n for n in nads}
    write_plumbing(
        sys_class_net, *render.assumed_plumbing(parse_vmi(the_vmi), nad_map, parse_network_info(info), "kvnet")
    )
    (work / "network-info").write_text(info)
    hooks = work / "hooks"
    (hooks / "hook-sidecar-0").mkdir(parents=True)
    exe = Path(sys.executable).parent / "kvnet-sidecar"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "kvnet.sidecar.main"]
    env = {**os.environ, "KVNET_SYS_CLASS_NET": str(sys_class_net), "KVNET_NETWORK_INFO": str(work / "network-info")}
    proc = subprocess.Popen(
        [*cmd, "--hooks-dir", str(hooks / "hook-sidecar-0"), "--name", "kvnet"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        payload = {
            "hooksDir": str(hooks),
            "sidecars": 1,
            "vmi": the_vmi,
            "kubevirt": deploy_kubevirt_cr(),
            "networkInfo": json.loads(info),
            "domainXML": domain,
            "timeoutSeconds": 20,
        }
        out: dict[str, Any] = json.loads(peer("hooks", payload))
        assert out["shutdown"] == "ok"
        assert proc.wait(timeout=10) == 0
        return out
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.mark.parametrize("case", list(CASES))
def test_render_is_what_the_sidecar_adds_to_the_converters_domain(case: str, workdir: Path) -> None:
    the_vmi, nads = copy.deepcopy(CASES[case][0]), CASES[case][1]
    out = json.loads(
        peer(
            "network-info", {"vmi": the_vmi, "kubevirt": deploy_kubevirt_cr(), "networkStatus": network_status(the_vmi)}
        )
    )
    info = out["annotations"]["kubevirt.io/network-info"]
    info_path = workdir / "network-info.json"
    info_path.write_text(info)
    converted_text = peer("domain", {"vmi": the_vmi, "kubevirt": deploy_kubevirt_cr(), "networkInfo": json.loads(info)})
    converted = by_alias(ET.fromstring(converted_text))
    run = sidecar_answer(workdir, the_vmi, nads, info, converted_text)
    final = by_alias(ET.fromstring(run["domainXML"]))
    rendered_xml, rendered_data = render_both(workdir, the_vmi, nads, info_path)
    rendered = by_alias(ET.fromstring(rendered_xml))
    # the guest network data: render's is what PreCloudInitIso gave KubeVirt's hook manager
    # (none: the volume's empty NetworkData goes back as it came)
    assert run["preCloudInitIso"]["output"]["NetworkData"] == (rendered_data or "")
    added = {a: el for a, el in final.items() if a not in converted}
    assert sorted(added) == sorted(rendered)
    for alias, el in rendered.items():
        assert c14n(added[alias]) == c14n(el), alias
    # the converter's devices come back as it made them (the masquerade NIC, sriov: {} hostdevs)
    for alias, el in converted.items():
        assert c14n(final[alias]) == c14n(el), alias
    assert "ua-default" in final


def fields(el: ET.Element) -> dict[str, Any]:
    """The interface fields the converter sets for a binding interface it renders itself."""

    def attrs(path: str) -> dict[str, str] | None:
        found = el.find(path)
        return dict(found.attrib) if found is not None else None

    return {
        "model": attrs("model"),
        "mac": attrs("mac"),
        "guest pci": attrs("address"),
        "acpi": attrs("acpi"),
        "boot": attrs("boot"),
        "driver": attrs("driver"),
        "rom": attrs("rom"),
    }


@pytest.mark.parametrize("case", ["bridge-tap-multiqueue", "sriov"])
def test_render_agrees_with_the_converters_own_tap_interfaces(case: str, workdir: Path) -> None:
    the_vmi, nads = copy.deepcopy(CASES[case][0]), CASES[case][1]
    out = json.loads(
        peer(
            "network-info", {"vmi": the_vmi, "kubevirt": deploy_kubevirt_cr(), "networkStatus": network_status(the_vmi)}
        )
    )
    info = out["annotations"]["kubevirt.io/network-info"]
    info_path = workdir / "network-info.json"
    info_path.write_text(info)
    tap = deploy_kubevirt_cr(domainAttachmentType="tap")
    theirs = by_alias(ET.fromstring(peer("domain", {"vmi": the_vmi, "kubevirt": tap, "networkInfo": json.loads(info)})))
    ours = by_alias(render_devices(workdir, the_vmi, nads, info_path))
    compared = 0
    for alias, el in ours.items():
        if el.tag != "interface":
            continue  # a VFIO VF: KubeVirt's tap attachment has no hostdev form
        mine = fields(el)
        if mine["mac"] is not None and theirs[alias].find("mac") is None:
            mine["mac"] = None  # no macAddress in the VMI: the converter leaves it to phase 2
        assert fields(theirs[alias]) == mine, alias
        assert theirs[alias].find("mtu") is None and theirs[alias].find("target") is None  # phase 2's
        compared += 1
    assert compared >= 1


def test_a_kvnet_vfio_hostdev_is_kubevirts_sriov_hostdev(workdir: Path) -> None:
    """The same interface (VF, guest PCI address, boot order) once on kvnet's binding and once on
    KubeVirt's ``sriov: {}``: render's hostdev is the converter's but for two spellings, both
    read alike by libvirt's parser: kvnet writes ``mode="subsystem"`` (the converter leaves
    it to libvirt's default) and no ``type="pci"`` on the source address (libvirt 9.0's schema
    refuses it there; the parser ignores it), and the order of the children. docs/vm-nics.md
    lists them."""
    iface = {"name": "vf2", "macAddress": "02:00:00:00:0e:05", "pciAddress": "0000:0a:00.0", "bootOrder": 4}
    ours_vmi = vmi([{**iface, "binding": {"name": "kvnet"}}], {"vf2": "sriov-vfio"})
    theirs_vmi = vmi([{**iface, "sriov": {}}], {"vf2": "sriov-vfio"})
    out = json.loads(
        peer(
            "network-info",
            {"vmi": ours_vmi, "kubevirt": deploy_kubevirt_cr(), "networkStatus": network_status(ours_vmi)},
        )
    )
    info = out["annotations"]["kubevirt.io/network-info"]
    info_path = workdir / "network-info.json"
    info_path.write_text(info)
    ours = by_alias(render_devices(workdir, ours_vmi, [SRIOV_NAD], info_path))["ua-sriov-vf2"]
    converted = peer("domain", {"vmi": theirs_vmi, "kubevirt": deploy_kubevirt_cr(), "networkInfo": json.loads(info)})
    theirs = by_alias(ET.fromstring(converted))["ua-sriov-vf2"]
    assert ours.attrib == {**theirs.attrib, "mode": "subsystem"}
    src = theirs.find("source/address")
    assert src is not None and src.attrib.pop("type") == "pci"
    # the same children (libvirt reads them in any order: kvnet writes the alias before boot
    # and address, the converter after)
    assert sorted(c14n(c) for c in ours) == sorted(c14n(c) for c in theirs)
