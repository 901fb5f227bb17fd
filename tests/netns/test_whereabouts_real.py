"""whereabouts (cluster-wide IPAM through the API server, v0.9.2 from build/peers) under
``kvnet-cni`` on the real API server, with the v1.10.0 reference plugins (root).

Its reservations live in IPPool objects on the API server, so what ADD allocates and DEL
frees is read back from there, as a cluster operator would see it. A kill -9 of kvnet-cni in
the middle of an ADD, followed by the runtime's DEL, must free them too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from kvnet.lab.kube import KubeCluster
from kvnet.lab.netns import IP
from kvnet.lab.pod_demo import PodLab

pytestmark = pytest.mark.root

POOLS = "/apis/whereabouts.cni.cncf.io/v1alpha1/ippools"

# A delegate that blocks in ADD (after leaving a mark) until it is killed or 60 s pass.
HANG = """#!/bin/sh
case "$CNI_COMMAND" in
VERSION) echo '{{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}}' ;;
ADD) touch {mark}; sleep 60; exit 1 ;;
esac
exit 0
"""


@pytest.fixture
def lab(whereabouts_lab: PodLab, tmp_path: Path) -> PodLab:
    hang = whereabouts_lab.bin_dir / "hang"
    hang.write_text(HANG.format(mark=tmp_path / "hang.mark"))
    hang.chmod(0o755)
    return whereabouts_lab


def whereabouts_nad(lab: PodLab, name: str, subnet: str, bridge: str) -> None:
    """A bridge NAD with whereabouts IPAM. whereabouts insists on its flat file (it reads the
    datastore settings from there), so the lab writes one and names it."""
    flat = lab.workdir / "whereabouts.conf"
    flat.write_text(json.dumps({"datastore": "kubernetes", "kubernetes": {"kubeconfig": str(lab.kubeconfig)}}))
    lab.add_nad(
        name,
        {
            "cniVersion": "1.0.0",
            "type": "bridge",
            "bridge": bridge,
            "ipam": {
                "type": "whereabouts",
                "range": subnet,
                "configuration_path": str(flat),
                "log_level": "error",
            },
        },
    )


def reservations(kube: KubeCluster, subnet: str) -> list[tuple[str, str]]:
    """(podref, ifname) of every allocation in the IPPool for ``subnet``."""
    wanted = subnet.replace("/", "-")
    return sorted(
        (alloc["podref"], alloc.get("ifname", ""))
        for pool in kube.call("GET", POOLS)["items"]
        if pool["metadata"]["name"] == wanted
        for alloc in (pool["spec"].get("allocations") or {}).values()
    )


def main_conf(lab: PodLab) -> dict[str, Any]:
    return lab.config(
        [
            {
                "cniVersion": "1.0.0",
                "name": "main",
                "type": "bridge",
                "bridge": "kvw-main",
                "isGateway": True,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.66.0.0/24"}]]},
            }
        ]
    )


def test_add_reserves_and_del_frees_whereabouts_addresses(lab: PodLab, kube: KubeCluster) -> None:
    whereabouts_nad(lab, "wa-blue", "10.67.0.0/28", "kvw-blue")
    uid = lab.add_pod("wa-web", "wa-blue@blue0")
    conf = main_conf(lab)
    rc, result, err = lab.cni("ADD", conf, container="wa1", pod="wa-web", uid=uid)
    assert rc == 0, (result, err)
    assert reservations(kube, "10.67.0.0/28") == [("default/wa-web", "blue0")]
    addresses = {
        link["ifname"]: [a["local"] for a in link.get("addr_info", []) if a["family"] == "inet"]
        for link in lab.pod_addresses()
    }
    assert addresses["blue0"] == ["10.67.0.1"]  # whereabouts hands out the range's first address
    status = lab.status("wa-web") or []
    assert [(s["name"], s["interface"], s["ips"]) for s in status][1:] == [("default/wa-blue", "blue0", ["10.67.0.1"])]

    rc, out, err = lab.cni("DEL", conf, container="wa1", pod="wa-web", uid=uid)
    assert rc == 0, (out, err)
    assert reservations(kube, "10.67.0.0/28") == []
    assert lab.leftovers() == {"pod links": [], "host-local leases": [], "cache files": []}


def test_kill_9_mid_add_then_del_frees_the_reservation(lab: PodLab, kube: KubeCluster) -> None:
    """kvnet-cni dies (SIGKILL, as a runtime's timeout does) while the second attachment's
    delegate is still running; the first one already holds a whereabouts address. The
    runtime's DEL then frees it and leaves nothing in the pod."""
    whereabouts_nad(lab, "wa-red", "10.68.0.0/28", "kvw-red")
    lab.add_nad("wa-hang", {"cniVersion": "1.0.0", "type": "hang"})
    uid = lab.add_pod("wa-kill", "wa-red@red0,wa-hang@hang0")
    conf = main_conf(lab)
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "wa2",
        "CNI_NETNS": lab.pod.path,
        "CNI_IFNAME": "eth0",
        "CNI_PATH": str(lab.bin_dir),
        "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=wa-kill;K8S_POD_UID={uid}",
    }
    proc = subprocess.Popen(
        [IP, "netns", "exec", lab.node.name, str(lab.bin_dir / "kvnet-cni")],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(conf).encode())
    proc.stdin.close()
    mark = lab.workdir / "hang.mark"
    deadline = time.monotonic() + 60
    while not mark.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the hanging delegate was never reached"
        time.sleep(0.05)
    assert reservations(kube, "10.68.0.0/28") == [("default/wa-kill", "red0")]
    os.kill(proc.pid, signal.SIGKILL)  # `ip netns exec` execs kvnet-cni: this is its pid
    proc.wait()
    subprocess.run(["pkill", "-KILL", "-f", str(lab.bin_dir / "hang")], check=False)

    rc, out, err = lab.cni("DEL", conf, container="wa2", pod="wa-kill", uid=uid)
    assert rc == 0, (out, err)
    assert reservations(kube, "10.68.0.0/28") == []
    assert lab.leftovers() == {"pod links": [], "host-local leases": [], "cache files": []}
