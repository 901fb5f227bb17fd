"""The pod demo end to end (root): ``kvnet.lab.pod_demo.run`` adds the example pod's
networks with the real ``kvnet-cni`` and reference plugins, prints what the pod got,
deletes it and checks that nothing is left behind."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from kvnet.lab import pod_demo
from kvnet.lab.kube import KubeCluster

pytestmark = pytest.mark.root


def _network_status(text: str) -> list[dict[str, Any]]:
    """The network-status JSON the demo prints between its heading and ``DEL``."""
    head = "network-status annotation:\n"
    assert head in text, text
    body = text.split(head, 1)[1].split("\npolicy: ", 1)[0].split("\nDEL\n", 1)[0]
    status = json.loads(body)
    assert isinstance(status, list)
    return status


def test_pod_demo_adds_the_example_networks_and_leaves_nothing(
    cni_bin_dir: str, kvnet_bin_dir: str, kube: KubeCluster
) -> None:
    out = io.StringIO()
    rc = pod_demo.run(out=out, kube=kube, plugin_dir=cni_bin_dir)
    text = out.getvalue()
    assert rc == 0, text
    status = _network_status(text)
    # the main network first and default, then the pod's selections in order, each
    # with the address its host-local range hands out first
    assert [(s["name"], s["interface"], s["ips"], s.get("default", False)) for s in status] == [
        ("main", "eth0", ["10.88.0.2"], True),
        ("default/blue", "blue0", ["10.89.0.2"], False),
        ("default/uplink", "net2", ["10.90.0.2"], False),
        ("default/p2p", "p2p0", ["10.91.0.2"], False),
    ]
    assert status[0]["gateway"] == ["10.88.0.1"]
    assert all(s["dns"] == {} and s["mac"] for s in status)
    # the interfaces the demo lists in the pod carry the same addresses
    for s in status:
        assert any(line.split()[:1] == [s["interface"]] and f"{s['ips'][0]}/24" in line for line in text.splitlines())
    assert "  pod links: none\n  host-local leases: none\n  cache files: none\n" in text
    # the policy step: the real agent's table decides each connect on blue, not on eth0
    policy = text.split("\npolicy: MultiNetworkPolicy default/demo-from-client", 1)[1].split("\nDEL\n", 1)[0]
    verdicts = [line.split()[:4] for line in policy.splitlines() if "-> demo" in line]
    assert verdicts == [
        ["client", "->", "demo", "10.89.0.2:8080"],
        ["client", "->", "demo", "10.89.0.2:9090"],
        ["stranger", "->", "demo", "10.89.0.2:8080"],
        ["stranger", "->", "demo", "10.88.0.2:8080"],
        ["stranger", "->", "demo", "10.89.0.2:8080"],
        ["client", "->", "demo", "10.89.0.2:9090"],
    ], policy
    outcomes = [line.split()[4] for line in policy.splitlines() if "-> demo" in line]
    assert outcomes == ["connects", "blocked", "blocked", "connects", "connects", "connects"], policy
    assert "NOT what the policy says" not in policy
    assert text.endswith("nothing left behind\n")
