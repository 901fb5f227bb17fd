"""Events on the pod, read back the way an operator reads them: ``kubectl describe pod`` on
the real kube-apiserver, after kvnet-cni (thin) and kvnet-shim + kvnet daemon (thick) ADDs
with the real bridge, ptp and host-local plugins."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kvnet.lab.kube import KubeCluster
from kvnet.lab.pod_demo import PodLab
from kvnet.lab.thick import KvnetDaemon, PrivateMounts

MAIN = {
    "cniVersion": "1.0.0",
    "name": "main",
    "type": "bridge",
    "bridge": "kvt-main",
    "isGateway": True,
    "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.86.0.0/24"}]]},
}
BLUE = {
    "cniVersion": "1.0.0",
    "type": "bridge",
    "bridge": "kvt-blue",
    "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.87.0.0/24"}]]},
}
PP = {"cniVersion": "0.4.0", "type": "ptp", "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/24"}]]}}


@pytest.fixture
def lab(
    netns_factory: Callable[..., Any], peer_plugin_dir: str, kvnet_bin_dir: str, tmp_path: Path, kube: KubeCluster
) -> Iterator[PodLab]:
    node = netns_factory("kvnode")
    pod = netns_factory("kvpod")
    with PodLab(node, pod, tmp_path, kvnet_bin_dir=kvnet_bin_dir, plugin_dir=peer_plugin_dir, kube=kube) as lab:
        lab.add_nad("blue", BLUE)
        lab.add_nad("pp", PP)
        yield lab


def describe_events(kube: KubeCluster, pod: str, want: int, timeout: float = 15.0) -> list[tuple[str, str, str]]:
    """(type, reason, message) of the Events section of ``kubectl describe pod``, once it
    lists at least ``want`` from kvnet (the daemon posts them asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        text = kube.kubectl("describe", "pod", pod, "--namespace", "default")
        _, _, section = text.partition("\nEvents:\n")
        rows = []
        for line in section.splitlines():
            # "  Normal  AddedInterface  2s  kvnet  Add eth0 [10.86.0.2/24] from main"
            m = re.match(r"\s+(Normal|Warning)\s+(\S+)\s+\S+\s+kvnet\s+(.*)$", line)
            if m:
                rows.append((m[1], m[2], m[3].strip()))
        if len(rows) >= want or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def add_pod_and_read_events(lab: PodLab, kube: KubeCluster, conf: dict[str, Any], binary: str, pod: str) -> None:
    uid = lab.add_pod(pod, "blue@blue0,pp")
    rc, result, err = lab.cni("ADD", conf, container=f"{pod}-1", pod=pod, uid=uid, binary=binary)
    assert rc == 0, (result, err)
    rows = describe_events(kube, pod, 3)
    assert rows == [
        ("Normal", "AddedInterface", "Add eth0 [10.86.0.2/24] from main"),
        ("Normal", "AddedInterface", "Add blue0 [10.87.0.2/24] from default/blue"),
        ("Normal", "AddedInterface", "Add net2 [10.88.0.2/24] from default/pp"),
    ]
    # the events name the pod they are about, as the API server sees it
    listed = kube.call("GET", "/api/v1/namespaces/default/events")["items"]
    mine = [e for e in listed if e["involvedObject"]["name"] == pod]
    assert {e["involvedObject"]["uid"] for e in mine} == {uid}
    assert {e["source"]["component"] for e in mine} == {"kvnet"}
    rc, out, err = lab.cni("DEL", conf, container=f"{pod}-1", pod=pod, uid=uid, binary=binary)
    assert rc == 0, (out, err)
    assert lab.leftovers() == {"pod links": [], "host-local leases": [], "cache files": []}


def test_kubectl_describe_shows_the_added_interfaces_thin(lab: PodLab, kube: KubeCluster) -> None:
    add_pod_and_read_events(lab, kube, lab.config([MAIN]), "kvnet-cni", "evthin")


def test_kubectl_describe_shows_the_added_interfaces_thick(lab: PodLab, kube: KubeCluster, kvnet_bin_dir: str) -> None:
    mounts = PrivateMounts()
    daemon = KvnetDaemon(lab.node, lab.workdir / "daemon", mounts, kvnet_bin_dir=kvnet_bin_dir)
    daemon.start()
    try:
        conf = lab.config([MAIN], type="kvnet-shim", socketPath=daemon.socket)
        add_pod_and_read_events(lab, kube, conf, "kvnet-shim", "evthick")
    finally:
        daemon.stop()
        mounts.cleanup()


def test_a_failed_add_is_a_warning_event_naming_the_cause(lab: PodLab, kube: KubeCluster) -> None:
    uid = lab.add_pod("evfail", "blue@blue0,nope")
    conf = lab.config([MAIN])
    rc, out, err = lab.cni("ADD", conf, container="evfail-1", pod="evfail", uid=uid, binary="kvnet-cni")
    assert rc == 1, (out, err)
    rows = describe_events(kube, "evfail", 1)
    assert len(rows) == 1, rows
    kind, reason, message = rows[0]
    assert (kind, reason) == ("Warning", "FailedAddInterface")
    assert 'network-attachment-definitions.k8s.cni.cncf.io "nope" not found' in message, message
    assert message == out["msg"]  # the ADD's own error text, which names the attachment
    rc, out, err = lab.cni("DEL", conf, container="evfail-1", pod="evfail", uid=uid, binary="kvnet-cni")
    assert rc == 0, (out, err)
    assert lab.leftovers() == {"pod links": [], "host-local leases": [], "cache files": []}
