"""What an operator looks at, read the way an operator reads it, on the real kube-apiserver
with the real bridge, ptp and host-local plugins: the pod's Events in ``kubectl describe
pod`` after kvnet-cni (thin) and kvnet-shim + kvnet daemon (thick) ADDs, and the daemon's
metrics and probes with ``curl``."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kvnet.lab.kube import KubeCluster
from kvnet.lab.netns import in_ns
from kvnet.lab.pod_demo import PodLab
from kvnet.lab.thick import NODE_NAME, KvnetDaemon, PrivateMounts

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
def lab(peer_lab: PodLab) -> PodLab:
    peer_lab.add_nad("blue", BLUE)
    peer_lab.add_nad("pp", PP)
    return peer_lab


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


def scrape(lab: PodLab, path: str) -> tuple[int, str]:
    """``curl`` on the daemon's metrics port, inside the node netns: (HTTP status, body)."""
    done = in_ns(lab.node, "curl", "-s", "-w", "\\n%{http_code}", f"http://127.0.0.1:{METRICS_PORT}{path}")
    body, _, code = done.stdout.rpartition("\n")
    return int(code), body


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


METRICS_PORT = 9465


def test_curl_on_the_metrics_port_shows_the_counters(lab: PodLab, kube: KubeCluster, kvnet_bin_dir: str) -> None:
    mounts = PrivateMounts()
    daemon = KvnetDaemon(
        lab.node,
        lab.workdir / "daemon",
        mounts,
        kvnet_bin_dir=kvnet_bin_dir,
        args=["--metrics-address", f"127.0.0.1:{METRICS_PORT}"],
    )
    daemon.start()
    try:
        assert scrape(lab, "/healthz") == (200, "ok\n") and scrape(lab, "/readyz") == (200, "ok\n")
        conf = lab.config([MAIN], type="kvnet-shim", socketPath=daemon.socket)
        uid = lab.add_pod("evmetrics", "blue@blue0,pp", node=NODE_NAME)  # on the daemon's node: its pod cache
        rc, out, err = lab.cni("ADD", conf, container="m-1", pod="evmetrics", uid=uid, binary="kvnet-shim")
        assert rc == 0, (out, err)
        rc, out, err = lab.cni(
            "ADD", conf, container="m-2", pod="evmetrics", uid=uid, binary="kvnet-shim", ifname="bad/name"
        )
        assert rc == 1 and out["code"] == 4, (out, err)
        rc, out, err = lab.cni("DEL", conf, container="m-1", pod="evmetrics", uid=uid, binary="kvnet-shim")
        assert rc == 0, (out, err)
        rc, out, err = lab.cni("DEL", conf, container="m-2", pod="evmetrics", uid=uid, binary="kvnet-shim")
        assert rc == 0, (out, err)
        assert len(describe_events(kube, "evmetrics", 3)) >= 3  # the posting threads are done
        code, text = scrape(lab, "/metrics")
        assert code == 200
        got = samples(text)

        def value(name: str, **labels: str) -> float:
            return got.get((name, tuple(sorted(labels.items()))), 0.0)

        assert value("kvnet_cni_calls_total", command="ADD", code="0") == 1
        assert value("kvnet_cni_calls_total", command="ADD", code="4") == 1
        assert value("kvnet_cni_calls_total", command="DEL", code="0") == 2
        assert value("kvnet_cni_call_duration_seconds_count", command="ADD") == 2
        assert value("kvnet_cni_calls_in_flight") == 0
        # the real plugins that ran, by type: bridge for eth0 and blue0, ptp for net2
        assert value("kvnet_delegate_duration_seconds_count", type="bridge", command="ADD") == 2
        assert value("kvnet_delegate_duration_seconds_count", type="ptp", command="ADD") == 1
        assert value("kvnet_delegate_duration_seconds_count", type="host-local", command="ADD") == 0  # run by bridge
        # every pod read: from the pod cache once its list is in, by GET before (a miss)
        pod_hits, pod_misses = (
            value("kvnet_pod_cache_total", result="hit"),
            value("kvnet_pod_cache_total", result="miss"),
        )
        assert pod_hits + pod_misses >= 2, (pod_hits, pod_misses)
        assert value("kvnet_api_requests_total", call="get_pod", result="ok") == pod_misses
        # both ADDs read both NADs: from the NAD cache once its list is in, by GET before (a miss)
        hits, misses = value("kvnet_nad_cache_total", result="hit"), value("kvnet_nad_cache_total", result="miss")
        assert hits + misses == 4
        assert value("kvnet_api_requests_total", call="get_nad", result="ok") == misses
        assert value("kvnet_api_requests_total", call="set_network_status", result="ok") == 1
        assert value("kvnet_api_requests_total", call="create_event", result="ok") >= 3
        assert value("kvnet_events_total", result="posted") >= 3
        assert value("kvnet_events_total", result="dropped") == 0
        assert value("process_resident_memory_bytes") > 20 * 2**20
        assert lab.leftovers() == {"pod links": [], "host-local leases": [], "cache files": []}
    finally:
        daemon.stop()
        mounts.cleanup()
