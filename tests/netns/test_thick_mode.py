"""Thick mode end to end: ``kvnet daemon`` in the node netns, ``kvnet-shim`` as the CNI
binary, the same ADD/CHECK/DEL as the standalone binary, with real plugins (root)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kvnet.lab.kube import KubeCluster
from kvnet.lab.pod_demo import IP, PodLab, in_ns
from kvnet.meta.shim import request as shim_request

pytestmark = pytest.mark.root


def _wait_healthy(sock: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"kvnet daemon exited with {proc.returncode}: {proc.stderr.read().decode() if proc.stderr else ''}"
            )
        if os.path.exists(sock):
            try:
                if shim_request(sock, "GET", "/healthz", timeout=2)[0] == 200:
                    return
            except (OSError, ValueError):
                pass
        time.sleep(0.05)
    raise AssertionError("kvnet daemon did not come up")


@pytest.fixture
def thick(
    netns_factory: Callable[..., Any], cni_bin_dir: str, kvnet_bin_dir: str, tmp_path: Path, kube: KubeCluster
) -> Iterator[tuple[PodLab, str]]:
    node = netns_factory("kvnode")
    pod = netns_factory("kvpod")
    sock = str(tmp_path / "run" / "kvnet.sock")
    with PodLab(node, pod, tmp_path, kvnet_bin_dir=kvnet_bin_dir, plugin_dir=cni_bin_dir, kube=kube) as lab:
        log = open(tmp_path / "daemon.log", "wb")  # noqa: SIM115 - closed after the daemon stops
        proc = subprocess.Popen(
            [IP, "netns", "exec", node.name, os.path.join(kvnet_bin_dir, "kvnet"), "daemon", "--socket", sock],
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
        )
        try:
            _wait_healthy(sock, proc)
            yield lab, sock
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            log.close()
    assert not os.path.exists(sock), "the daemon removes its socket on exit"


def test_add_check_del_through_shim_and_daemon(thick: tuple[PodLab, str]) -> None:
    lab, sock = thick
    lab.add_nad(
        "blue",
        {
            "cniVersion": "1.0.0",
            "type": "bridge",
            "bridge": "kvt-blue",
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.74.0.0/24"}]]},
        },
    )
    lab.add_nad(
        "pp",
        {
            "cniVersion": "0.4.0",
            "type": "ptp",
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.75.0.0/24"}]]},
        },
    )
    uid = lab.add_pod("web", "blue@blue0,pp")
    main = {
        "cniVersion": "1.0.0",
        "name": "main",
        "type": "bridge",
        "bridge": "kvt-main",
        "isGateway": True,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.76.0.0/24"}]]},
    }
    conf = lab.config([main], type="kvnet-shim", socketPath=sock)
    rc, result, err = lab.cni("ADD", conf, container="thick1", pod="web", uid=uid, binary="kvnet-shim")
    assert rc == 0, (result, err)
    assert result["cniVersion"] == "1.0.0" and [ip["address"] for ip in result["ips"]] == ["10.76.0.2/24"]
    links = {
        link["ifname"]: [a["local"] for a in link["addr_info"] if a["family"] == "inet"] for link in lab.pod_addresses()
    }
    assert links == {"lo": ["127.0.0.1"], "eth0": ["10.76.0.2"], "blue0": ["10.74.0.2"], "net2": ["10.75.0.2"]}
    status = lab.status("web")
    assert [(s["name"], s["interface"]) for s in status] == [
        ("main", "eth0"),
        ("default/blue", "blue0"),
        ("default/pp", "net2"),
    ]
    rc, out, err = lab.cni("CHECK", conf, container="thick1", pod="web", uid=uid, binary="kvnet-shim")
    assert rc == 0, (out, err)
    rc, out, err = lab.cni("DEL", conf, container="thick1", pod="web", uid=uid, binary="kvnet-shim")
    assert rc == 0 and out is None, (out, err)
    assert lab.leftovers() == {"pod links": [], "host-local leases": [], "cache files": []}
    assert lab.status("web") == status  # DEL does not write network-status (Multus's CmdDel)
    # errors come back as CNI error objects with the daemon's code
    rc, out, err = lab.cni("ADD", conf, container="thick2", pod="web", uid=uid, binary="kvnet-shim", ifname="bad/name")
    assert rc == 1 and out["code"] == 4, (out, err)


def test_shim_reports_a_missing_daemon(thick: tuple[PodLab, str]) -> None:
    lab, sock = thick
    conf = lab.config([], type="kvnet-shim", socketPath=sock + ".missing")
    rc, out, _err = lab.cni("ADD", conf, container="thick3", pod="web", binary="kvnet-shim")
    assert rc == 1 and out["code"] == 11
    assert out["msg"].startswith(f"kvnet-shim: no kvnet daemon is listening at {sock}.missing (is it running?)")


def test_concurrent_pods_through_one_daemon(thick: tuple[PodLab, str], netns_factory: Callable[..., Any]) -> None:
    """Four pods at once through one daemon (one bridge, one host-local range): all get
    distinct addresses, and DEL leaves nothing."""
    from concurrent.futures import ThreadPoolExecutor

    lab, sock = thick
    lab.add_nad(
        "blue",
        {
            "cniVersion": "1.0.0",
            "type": "bridge",
            "bridge": "kvt-blue",
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.82.0.0/24"}]]},
        },
    )
    main = {
        "cniVersion": "1.0.0",
        "name": "main",
        "type": "bridge",
        "bridge": "kvt-main",
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.83.0.0/24"}]]},
    }
    conf = lab.config([main], type="kvnet-shim", socketPath=sock)
    pods = [(f"p{i}", lab.add_pod(f"p{i}", "blue"), netns_factory("kvpod")) for i in range(4)]

    def call(command: str, name: str, uid: str, ns: Any) -> tuple[int, Any, str]:
        return lab.cni(
            command, conf, container=f"c-{name}", pod=name, uid=uid, netns=ns.path, binary="kvnet-shim", in_node=False
        )

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda p: call("ADD", *p), pods))
    assert all(rc == 0 for rc, _, _ in results), results
    addresses = set()
    for name, _, ns in pods:
        links = json.loads(in_ns(ns, IP, "-j", "addr").stdout)
        got = {link["ifname"]: [a["local"] for a in link["addr_info"] if a["family"] == "inet"] for link in links}
        assert set(got) == {"lo", "eth0", "net1"}
        addresses.update(got["eth0"] + got["net1"])
        assert [s["interface"] for s in lab.status(name)] == ["eth0", "net1"]
    assert len(addresses) == 8
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda p: call("DEL", *p), pods))
    assert all(rc == 0 for rc, _, _ in results), results
    assert lab.leftovers()["host-local leases"] == [] and lab.leftovers()["cache files"] == []
