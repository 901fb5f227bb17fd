"""kvnet-sidecar over a pod that the real CNI plugins plumbed (root; the docs/design.md §4 contract).

The real Debian bridge plugin makes the attachment in a pod netns (host side in a "node"
netns), the real ``kvnet-binding`` re-plumbs it for the VM, and ``kvnet-sidecar`` runs
inside the pod netns the way KubeVirt runs it: uid/gid 107, no capabilities, reading only
/sys/class/net and network-info, its socket in its ``hook-sidecar-0`` sub-folder.
virt-launcher's own hook manager (``kubevirt-peer hooks``, KubeVirt v1.8.4) then gets a
domain (the converter's) whose NIC is the binding's tap with the pod's original MAC, and
guest network data with the attachment's IPAM address.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubevirt_code import SOCKET_FOLDER, kubevirt_hooks, with_cloud_init
from pod_inputs import make_vmi

from kvnet.core.naming import hashed_pod_iface
from kvnet.lab.netns import QEMU_UID, as_qemu

pytestmark = pytest.mark.root

BLUE = hashed_pod_iface("blue")


def run_cni(
    binary: str, command: str, conf: dict[str, Any], *, netns: str, ifname: str, path: str, node: str | None = None
) -> tuple[int, dict[str, Any]]:
    env = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": "0123456789abcdef",
        "CNI_NETNS": netns,
        "CNI_IFNAME": ifname,
        "CNI_PATH": path,
        "CNI_ARGS": "IgnoreUnknown=true;K8S_POD_NAMESPACE=default;K8S_POD_NAME=virt-launcher-vm1",
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    }
    cmd = [binary] if node is None else ["ip", "netns", "exec", node, binary]
    proc = subprocess.run(cmd, input=json.dumps(conf).encode(), env=env, capture_output=True, timeout=30)
    return proc.returncode, (json.loads(proc.stdout) if proc.stdout.strip() else {})


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder uid 107 can use (pytest's tmp_path is private to root)."""
    d = Path(tempfile.mkdtemp(prefix="kvq-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def plumbed_pod(
    netns_factory: Callable[[str], Any], cni_bin_dir: str, kvnet_bin_dir: str, shared_dir: Path
) -> Iterator[tuple[Any, dict[str, Any]]]:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to run the sidecar as uid 107")
    probe = subprocess.run(as_qemu(sys.executable, "-c", "import kvnet.sidecar.main"), capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"this Python cannot run as uid {QEMU_UID} from here: {probe.stderr.strip()[-200:]}")
    node, pod = netns_factory("kvsnode"), netns_factory("kvspod")
    ipam = shared_dir / "ipam"
    conf = {
        "cniVersion": "1.0.0",
        "name": "blue-net",
        "type": "bridge",
        "bridge": "kvsbr0",
        "isGateway": True,
        "mtu": 1400,
        "ipam": {
            "type": "host-local",
            "subnet": "10.79.0.0/24",
            "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": str(ipam),
        },
    }
    binding = {
        "cniVersion": "1.0.0",
        "name": "kvnet-binding",
        "type": "kvnet-binding",
        "args": {"cni": {"logicNetworkName": "blue"}},
    }
    rc, attach = run_cni(
        f"{cni_bin_dir}/bridge", "ADD", conf, netns=pod.path, ifname=BLUE, path=cni_bin_dir, node=node.name
    )
    assert rc == 0, attach
    original_mac = next(i["mac"] for i in attach["interfaces"] if i["name"] == BLUE)
    try:
        rc, res = run_cni(
            f"{kvnet_bin_dir}/kvnet-binding", "ADD", binding, netns=pod.path, ifname="net2", path=cni_bin_dir
        )
        assert rc == 0, res
        yield pod, {"mac": original_mac, "ip": attach["ips"][0]["address"]}
    finally:
        run_cni(f"{kvnet_bin_dir}/kvnet-binding", "DEL", binding, netns=pod.path, ifname="net2", path=cni_bin_dir)
        run_cni(f"{cni_bin_dir}/bridge", "DEL", conf, netns=pod.path, ifname=BLUE, path=cni_bin_dir, node=node.name)


def test_sidecar_as_qemu_in_a_plumbed_pod(
    plumbed_pod: tuple[Any, dict[str, Any]], shared_dir: Path, kvnet_bin_dir: str
) -> None:
    pod, attach = plumbed_pod
    hooks = shared_dir / "hooks"
    (hooks / SOCKET_FOLDER).mkdir(parents=True)  # the sidecar container's own sub-folder
    os.chown(hooks / SOCKET_FOLDER, QEMU_UID, QEMU_UID)
    info = shared_dir / "network-info"
    info.write_text(json.dumps({"interfaces": [{"network": "blue", "mac": attach["mac"]}]}))
    info.chmod(0o644)
    proc = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            pod.name,
            *as_qemu(
                f"{kvnet_bin_dir}/kvnet-sidecar", "--hooks-dir", str(hooks / SOCKET_FOLDER), "--network-info", str(info)
            ),
        ],
        stderr=subprocess.PIPE,
    )
    try:
        sock = hooks / SOCKET_FOLDER / "kvnet.sock"
        deadline = time.monotonic() + 20
        while not sock.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the sidecar's socket did not appear"
            time.sleep(0.02)
        assert os.stat(sock).st_uid == QEMU_UID
        run = kubevirt_hooks(hooks, with_cloud_init(make_vmi({"blue": "kvnet"})))  # virt-launcher's hook manager
        out = run["domainXML"]
        nic = next(el for el in ET.fromstring(out).iter("interface") if el.find("alias").get("name") == "ua-blue")  # type: ignore[union-attr]
        assert nic.find("target").get("dev") == "tap16477688c0e"  # type: ignore[union-attr]
        assert nic.find("mac").get("address") == attach["mac"]  # type: ignore[union-attr]  # the MAC swap: the guest gets the original
        assert nic.find("mtu").get("size") == "1400"  # type: ignore[union-attr]
        nd = yaml.safe_load(run["preCloudInitIso"]["output"]["NetworkData"])
        [eth] = [e for e in nd["ethernets"].values() if e["match"]["macaddress"] == attach["mac"]]
        assert eth["addresses"] == [attach["ip"]]
        assert run["shutdown"] == "ok"
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate(timeout=10)
    assert b"Traceback" not in err, err.decode()
