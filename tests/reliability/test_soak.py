"""Concurrency soak: 8 callers at once, each a pod of its own doing ADD then DEL cycles
through real plugins (one shared bridge NAD, one shared host-local range), thin
(``kvnet-cni``) and thick (``kvnet-shim`` + ``kvnet daemon``); then the leak count over
every pod and container is zero, and the daemon's memory and descriptors did not grow.
Also: in thick mode with the light client one pod's slow API read does not hold up
another pod's ADD (it waited 4.6 s before)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from kvnet.lab.faultproxy import FaultProxy
from reliability.harness import RelLab, Tally, bridge, count, wait_no_processes

pytestmark = pytest.mark.root

CALLERS = 8
CYCLES = 2  # ADD + DEL per caller and mode: docs/reliability.md


@pytest.mark.parametrize("mode", ["thin", "thick"])
def test_eight_callers_leave_nothing(rel: RelLab, netns_factory: Callable[..., Any], mode: str) -> None:
    lab = rel.lab
    lab.add_nad("blue", bridge("kvs-blue", "10.150.0.0/24"))
    conf: dict[str, Any] = lab.config([{**bridge("kvs-main", "10.151.0.0/24"), "name": "main"}])
    binary = "kvnet-cni"
    if mode == "thick":
        conf = {**conf, "type": "kvnet-shim", "socketPath": rel.socket}
        binary = "kvnet-shim"
        rel.start_daemon()
    pods = [(f"s{i}", lab.add_pod(f"s{i}", "blue"), netns_factory("kvsp")) for i in range(CALLERS)]
    used: set[str] = set()
    failures: list[str] = []
    lock = threading.Lock()

    def caller(name: str, uid: str, ns: Any, cycles: int, tag: str) -> None:
        for c in range(cycles):
            cid = f"{name}{tag}{c}"
            with lock:
                used.add(cid)
            for command in ("ADD", "DEL"):
                rc, out, err = lab.cni(
                    command,
                    conf,
                    container=cid,
                    pod=name,
                    uid=uid,
                    netns=ns.path,
                    binary=binary,
                    in_node=binary != "kvnet-shim",
                )
                if rc != 0:
                    with lock:
                        failures.append(f"{command} {cid}: {out} {err[-500:]}")

    def round_of(cycles: int, tag: str) -> None:
        with ThreadPoolExecutor(CALLERS) as pool:
            list(pool.map(lambda p: caller(p[0], p[1], p[2], cycles, tag), pods))

    round_of(1, "w")  # warm-up: the daemon's clients, caches and threads exist from here on
    before = rel.daemon_usage() if mode == "thick" else None
    start = time.monotonic()
    round_of(CYCLES, "c")
    took = time.monotonic() - start
    after = rel.daemon_usage() if mode == "thick" else None
    assert failures == [], failures
    wait_no_processes(used)
    left = rel.leaks(used, [ns for _, _, ns in pods])
    notes: dict[str, Any] = {"callers": CALLERS, "cycles": CYCLES, "seconds": round(took, 1)}
    if before is not None and after is not None:
        notes.update(rss_kb=[before[0], after[0]], fds=[before[1], after[1]])
    Tally(
        f"soak, {mode}: {CALLERS} callers x {CYCLES} ADD+DEL",
        tries=CALLERS * (CYCLES + 1),
        leaks=count(left),
        notes=notes,
    ).report()
    assert count(left) == 0, left
    if before is not None and after is not None:
        assert after[1] <= before[1] + 2, (before, after)  # descriptors: none kept per call
        assert after[0] - before[0] < 20_000, (before, after)  # kB


def test_thick_light_client_no_head_of_line_blocking(rel: RelLab, netns_factory: Callable[..., Any]) -> None:
    """Pod a's pod read is held 4 s by a slow server; pod b's ADD through the same daemon
    (light client) does not wait for it."""
    lab = rel.lab
    assert lab.kube is not None
    with FaultProxy(lab.kube, lab.root_ip) as proxy:
        proxy.write_kubeconfig(lab.kubeconfig)
        conf = {**lab.config([{**bridge("kvs-main", "10.152.0.0/24"), "name": "main"}]), "type": "kvnet-shim"}
        conf["socketPath"] = rel.socket
        rel.start_daemon()
        uid_a, uid_b = lab.add_pod("a"), lab.add_pod("b")
        ns_a, ns_b = netns_factory("kvsp"), netns_factory("kvsp")
        proxy.delay_next(4.0, method="GET", path="/pods/a")
        slow = rel.start("ADD", conf, container="hol-a", pod="a", uid=uid_a, binary="kvnet-shim", netns=ns_a.path)
        time.sleep(0.5)
        start = time.monotonic()
        rc, out, err = lab.cni(
            "ADD", conf, container="hol-b", pod="b", uid=uid_b, netns=ns_b.path, binary="kvnet-shim", in_node=False
        )
        took_b = time.monotonic() - start
        assert rc == 0, f"{out}\n{err}"
        rc_a, out_a, err_a = rel.finish(slow)
        assert rc_a == 0, f"{out_a}\n{err_a}"
        assert took_b < 2.5, f"pod b's ADD waited {took_b:.2f}s behind pod a's slow read"
        for cid, pod, uid, ns in (("hol-a", "a", uid_a, ns_a), ("hol-b", "b", uid_b, ns_b)):
            rc, out, err = lab.cni(
                "DEL", conf, container=cid, pod=pod, uid=uid, netns=ns.path, binary="kvnet-shim", in_node=False
            )
            assert rc == 0, f"{out}\n{err}"
        left = rel.leaks({"hol-a", "hol-b"}, [ns_a, ns_b])
        Tally(
            "thick, light client: ADD beside a slow API read",
            tries=1,
            faults=1,
            leaks=count(left),
            notes={"pod_b_add_seconds": round(took_b, 2)},
        ).report()
        assert count(left) == 0, left
