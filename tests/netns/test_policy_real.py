"""``kvnet policy`` against the real kube-apiserver: three pods (netns) A, B and C on one
bridge NAD with host-local IPAM, ADDed by a real ``kvnet-cni`` (so their network-status is
the meta-plugin's), a MultiNetworkPolicy on B, and TCP connects that succeed or time out.

The agent runs as a subprocess in the root netns (where the API address is), with the
admin kubeconfig, and reaches each pod's netns by the ``kvnet.io/netns`` annotation.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kvnet.lab.kube import KubeCluster
from kvnet.lab.netns import IP, Netns, in_ns
from kvnet.lab.pod_demo import PodLab
from kvnet.lab.policy_demo import CONNECT, LISTENER

pytestmark = pytest.mark.root

NS = "policy"
NODE = "kvnet-policy-node"
NAD = "polnet"
PORT, OTHER_PORT = 8080, 9090
POLICIES = f"/apis/k8s.cni.cncf.io/v1beta1/namespaces/{NS}/multi-networkpolicies"
TABLE = "inet kvnet-policy"
WAIT = 30.0


@dataclass
class PodNet:
    name: str
    ns: Netns
    namespace: str = NS
    uid: str = ""
    container: str = ""
    net1: str = ""  # address on the policed NAD
    eth0: str = ""  # address on the main network


def connects(client: PodNet, address: str, port: int, timeout: float = 1.0) -> bool:
    done = subprocess.run(
        [IP, "netns", "exec", client.ns.name, sys.executable, "-c", CONNECT, address, str(port), str(timeout)],
        capture_output=True,
        text=True,
        timeout=timeout + 10,
        check=False,
    )
    return done.returncode == 0


def tables(pod: PodNet) -> list[str]:
    return [line.removeprefix("table ") for line in in_ns(pod.ns, "nft", "list", "tables").stdout.splitlines()]


def wait_for(what: str, check: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.1)


def policy(name: str, selector: dict[str, str], ingress: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "k8s.cni.cncf.io/v1beta1",
        "kind": "MultiNetworkPolicy",
        "metadata": {"name": name, "namespace": NS, "annotations": {"k8s.v1.cni.cncf.io/policy-for": NAD}},
        "spec": {"podSelector": {"matchLabels": selector}, "ingress": ingress, **spec},
    }


ONLY_A_ON_PORT = [
    {"from": [{"podSelector": {"matchLabels": {"app": "a"}}}], "ports": [{"protocol": "TCP", "port": PORT}]}
]


class Lab:
    """The three pods on the real API server, their listeners and the agent."""

    def __init__(
        self, lab: PodLab, kube: KubeCluster, pods: dict[str, PodNet], netns_factory: Callable[..., Netns]
    ) -> None:
        self.lab = lab
        self.kube = kube
        self.pods = pods
        self.netns_factory = netns_factory
        self.kubeconfig = kube.admin_kubeconfig
        self.cleanups: list[Callable[[], object]] = []
        self.conf = lab.config(
            [
                {
                    "cniVersion": "1.0.0",
                    "name": "main",
                    "type": "bridge",
                    "bridge": "kvpol-main",
                    "isGateway": True,
                    "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.81.0.0/24"}]]},
                }
            ]
        )
        self.agent: subprocess.Popen[str] | None = None
        self.listeners: list[subprocess.Popen[str]] = []
        self.policies: list[str] = []

    def add_pod(self, pod: PodNet, labels: dict[str, str]) -> None:
        obj = {
            "kind": "Pod",
            "metadata": {
                "name": pod.name,
                "namespace": pod.namespace,
                "labels": labels,
                "annotations": {"k8s.v1.cni.cncf.io/networks": f"{NS}/{NAD}", "kvnet.io/netns": pod.ns.name},
            },
            "spec": {"nodeName": NODE, "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.9"}]},
        }
        pod.uid = str(self.kube.create(obj)["metadata"]["uid"])
        self.pods[pod.name] = pod
        pod.container = "pol" + uuid.uuid4().hex[:10]
        rc, result, err = self.lab.cni(
            "ADD",
            self.conf,
            container=pod.container,
            pod=pod.name,
            uid=pod.uid,
            namespace=pod.namespace,
            netns=pod.ns.path,
        )
        assert rc == 0, (result, err)
        status = self.lab.status(pod.name, pod.namespace) or []
        by_if = {s.get("interface"): s for s in status}
        assert by_if["net1"]["name"] == f"{NS}/{NAD}", status
        pod.net1, pod.eth0 = by_if["net1"]["ips"][0], by_if["eth0"]["ips"][0]

    def delete_pod(self, pod: PodNet) -> None:
        if pod.container:
            self.lab.cni(
                "DEL",
                self.conf,
                container=pod.container,
                pod=pod.name,
                uid=pod.uid,
                namespace=pod.namespace,
                netns=pod.ns.path,
            )
        self.kube.delete("Pod", pod.namespace, pod.name)

    def new_pod(self, name: str, labels: dict[str, str], namespace: str = NS) -> PodNet:
        pod = PodNet(name, self.netns_factory(f"kvp{name}"), namespace)
        self.add_pod(pod, labels)
        return pod

    def label_namespace(self, namespace: str, labels: dict[str, str | None]) -> None:
        """Merge ``labels`` into the namespace's (None removes one); undone at the end."""
        self.kube.ensure_namespace(namespace)
        path = f"/api/v1/namespaces/{namespace}"
        body = {"metadata": {"labels": labels}}
        self.kube.call("PATCH", path, body, content_type="application/merge-patch+json")
        undo = {"metadata": {"labels": dict.fromkeys(labels)}}
        self.cleanups.append(lambda: self.kube.raw("PATCH", path, undo, content_type="application/merge-patch+json"))

    def listen(self, pod: PodNet, *ports: int) -> None:
        proc = subprocess.Popen(
            [IP, "netns", "exec", pod.ns.name, sys.executable, "-c", LISTENER, *map(str, ports)],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.listeners.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"

    def create_policy(self, obj: dict[str, Any]) -> None:
        self.kube.call("POST", POLICIES, obj)
        self.policies.append(obj["metadata"]["name"])

    def delete_policy(self, name: str) -> None:
        self.kube.raw("DELETE", f"{POLICIES}/{name}")
        if name in self.policies:
            self.policies.remove(name)

    def kvnet_policy(self, *extra: str) -> list[str]:
        return [
            sys.executable, "-m", "kvnet.cli", "-v", "policy",
            "--kubeconfig", str(self.kubeconfig), "--node", NODE, *extra,
        ]  # fmt: skip

    def start_agent(self) -> None:
        log = (self.lab.workdir / "agent.log").open("a")
        self.agent = subprocess.Popen(self.kvnet_policy(), stdout=subprocess.DEVNULL, stderr=log, text=True)
        log.close()

    def stop_agent(self) -> int:
        assert self.agent is not None
        self.agent.send_signal(signal.SIGTERM)
        rc = self.agent.wait(timeout=30)
        self.agent = None
        return rc

    def agent_log(self) -> str:
        path = self.lab.workdir / "agent.log"
        return path.read_text() if path.exists() else ""

    def close(self) -> None:
        if self.agent is not None:
            self.agent.kill()
            self.agent.wait()
        for proc in self.listeners:
            proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        for name in list(self.policies):
            self.delete_policy(name)
        for pod in self.pods.values():
            self.delete_pod(pod)
        for undo in reversed(self.cleanups):
            undo()


@pytest.fixture
def policy_lab(
    netns_factory: Callable[..., Netns], peer_plugin_dir: str, kvnet_bin_dir: str, tmp_path: Path, kube: KubeCluster
) -> Iterator[Lab]:
    if subprocess.run(["nft", "--version"], capture_output=True, check=False).returncode != 0:
        pytest.skip("nftables (nft) is not installed")
    node = netns_factory("kvpnode")
    pods = {name: PodNet(name, netns_factory(f"kvp{name}")) for name in ("a", "b", "c")}
    with PodLab(node, pods["a"].ns, tmp_path, kvnet_bin_dir=kvnet_bin_dir, plugin_dir=peer_plugin_dir, kube=kube) as pl:
        pl.add_nad(
            NAD,
            {
                "cniVersion": "1.0.0",
                "type": "bridge",
                "bridge": "kvpol-net",
                "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.82.0.0/24"}]]},
            },
            namespace=NS,
        )
        lab = Lab(pl, kube, {}, netns_factory)
        try:
            for name, pod in pods.items():
                lab.add_pod(pod, {"app": name})
            lab.listen(pods["b"], PORT, OTHER_PORT)
            yield lab
        finally:
            lab.close()


def test_ingress_only_from_a_on_one_port(policy_lab: Lab) -> None:
    lab = policy_lab
    a, b, c = lab.pods["a"], lab.pods["b"], lab.pods["c"]
    # a table an agent killed without its clean-up left in C's netns: the next agent sweeps it
    in_ns(c.ns, "nft", "add", "table", "inet", "kvnet-policy")
    lab.start_agent()
    wait_for("C's stale table swept", lambda: tables(c) == [])
    # no policy: everything reaches B
    assert connects(a, b.net1, PORT) and connects(c, b.net1, PORT) and connects(a, b.net1, OTHER_PORT)

    lab.create_policy(policy("b-from-a", {"app": "b"}, ONLY_A_ON_PORT))
    wait_for("B's table", lambda: TABLE in tables(b))
    assert connects(a, b.net1, PORT)
    assert not connects(a, b.net1, OTHER_PORT)
    assert not connects(c, b.net1, PORT)
    # B's main network is not policed, nor are A and C
    assert connects(c, b.eth0, PORT) and connects(a, b.eth0, OTHER_PORT)
    assert tables(a) == [] and tables(c) == []
    # B's own connections out of net1 get their answers (established traffic)
    lab.listen(c, PORT)
    assert connects(b, c.net1, PORT)

    # the agent stops: it takes its tables with it
    assert lab.stop_agent() == 0, lab.agent_log()
    assert tables(b) == []
    assert connects(c, b.net1, PORT)

    lab.start_agent()
    wait_for("B's table after the restart", lambda: TABLE in tables(b))
    assert not connects(c, b.net1, PORT)

    # the policy goes: the table goes, C reaches B again
    lab.delete_policy("b-from-a")
    wait_for("B's table removed", lambda: tables(b) == [])
    assert connects(c, b.net1, PORT)

    # the pod goes (its API object; the netns is still there): the table goes
    lab.create_policy(policy("b-from-a", {"app": "b"}, ONLY_A_ON_PORT))
    wait_for("B's table again", lambda: TABLE in tables(b))
    lab.kube.delete("Pod", NS, b.name)
    wait_for("B's table removed with the pod", lambda: tables(b) == [])
    assert lab.stop_agent() == 0, lab.agent_log()


def test_once_applies_and_exits(policy_lab: Lab) -> None:
    lab = policy_lab
    a, b, c = lab.pods["a"], lab.pods["b"], lab.pods["c"]
    lab.create_policy(policy("b-from-a", {"app": "b"}, ONLY_A_ON_PORT))
    done = subprocess.run(lab.kvnet_policy("--once"), capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""  # logs never on stdout
    assert tables(b) == [TABLE]
    listed = in_ns(b.ns, "nft", "-j", "list", "table", "inet", "kvnet-policy").stdout
    rules = [e["rule"] for e in json.loads(listed)["nftables"] if "rule" in e]
    assert any(r["chain"] == "input" for r in rules)
    assert connects(a, b.net1, PORT) and not connects(c, b.net1, PORT)
    in_ns(b.ns, "nft", "delete", "table", "inet", "kvnet-policy")
    assert os.path.exists(b.ns.path)


def test_egress_and_ip_block_except(policy_lab: Lab) -> None:
    lab = policy_lab
    a, b, c = lab.pods["a"], lab.pods["b"], lab.pods["c"]
    lab.listen(c, PORT)
    a_out = {
        "podSelector": {"matchLabels": {"app": "a"}},
        "policyTypes": ["Egress"],
        "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "b"}}}], "ports": [{"port": PORT}]}],
    }
    lab.create_policy(
        {**policy("a-out", {}, []), "spec": a_out}  # egress only: A's ingress stays open
    )
    block = {"ipBlock": {"cidr": "10.82.0.0/24", "except": [f"{c.net1}/32"]}}
    lab.create_policy(policy("b-in", {"app": "b"}, [{"from": [block]}]))
    lab.start_agent()
    wait_for("A's and B's tables", lambda: TABLE in tables(a) and TABLE in tables(b))
    assert tables(c) == []
    assert connects(a, b.net1, PORT)  # A's egress to B on PORT, B's ingress from the block
    assert not connects(a, b.net1, OTHER_PORT)  # A's egress: that port is not allowed
    assert not connects(a, c.net1, PORT)  # A's egress: C is no allowed destination
    assert not connects(c, b.net1, PORT)  # B's ingress: C is the block's exception
    assert connects(b, c.net1, PORT)  # B's egress is not isolated; the answers come back in
    assert connects(a, c.eth0, PORT)  # A's eth0 is not policed
    assert lab.stop_agent() == 0, lab.agent_log()
    assert tables(a) == [] and tables(b) == []


AGENT_RULES = [
    {"apiGroups": ["k8s.cni.cncf.io"], "resources": ["multi-networkpolicies"], "verbs": ["list", "watch"]},
    {"apiGroups": [""], "resources": ["pods", "namespaces"], "verbs": ["list", "watch"]},
]


def agent_identity(lab: Lab) -> None:
    """The agent runs as a ServiceAccount bound to exactly docs/policy.md's RBAC rules."""
    kube, account = lab.kube, "kvnet-policy-agent"
    objects = [
        {"kind": "ServiceAccount", "metadata": {"name": account, "namespace": NS}},
        {"kind": "ClusterRole", "metadata": {"name": account}, "rules": AGENT_RULES},
        {
            "kind": "ClusterRoleBinding",
            "metadata": {"name": account},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": account},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": NS}],
        },
    ]
    for obj in objects:
        kube.create(obj)
        meta = obj["metadata"]
        lab.cleanups.append(lambda k=obj["kind"], m=meta: kube.delete(k, m.get("namespace"), m["name"]))
    lab.kubeconfig = lab.lab.workdir / "agent.kubeconfig"
    kube.write_kubeconfig(lab.kubeconfig, token=kube.token(account, NS))


def test_namespace_selector_and_pods_that_come_later(policy_lab: Lab) -> None:
    lab = policy_lab
    a, b = lab.pods["a"], lab.pods["b"]
    agent_identity(lab)
    friends = "policy-friends"
    lab.label_namespace(friends, {"kvnet-test/team": "friends"})
    peer = {
        "namespaceSelector": {"matchLabels": {"kvnet-test/team": "friends"}},
        "podSelector": {"matchLabels": {"app": "a"}},
    }
    lab.create_policy(policy("b-from-friends", {"app": "b"}, [{"from": [peer]}]))
    lab.start_agent()
    wait_for("B's table", lambda: TABLE in tables(b))
    assert not connects(a, b.net1, PORT)  # A is app=a, but its namespace is no friend
    # a pod that matches comes later: once its network-status is written, B lets it in
    d = lab.new_pod("d", {"app": "a"}, namespace=friends)
    wait_for("D reaches B", lambda: connects(d, b.net1, PORT, timeout=0.5))
    e = lab.new_pod("e", {"app": "other"}, namespace=friends)
    assert not connects(e, b.net1, PORT)
    # A's namespace becomes a friend: A gets in
    lab.label_namespace(NS, {"kvnet-test/team": "friends"})
    wait_for("A reaches B", lambda: connects(a, b.net1, PORT, timeout=0.5))
    assert lab.stop_agent() == 0, lab.agent_log()
    assert "403" not in lab.agent_log() and "Forbidden" not in lab.agent_log()


def test_served_v1beta1_prunes_end_port(kube: KubeCluster) -> None:
    """The project's CRD serves v1beta1, which has no endPort: the API server drops it (so a
    range reaches the agent only through a version that has the field; docs/policy.md)."""
    obj = policy("ranged", {}, [{"ports": [{"protocol": "TCP", "port": 8000, "endPort": 8100}]}])
    kube.ensure_namespace(NS)
    try:
        made = kube.call("POST", POLICIES, obj)
        assert made["spec"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": 8000}]}]
    finally:
        kube.raw("DELETE", f"{POLICIES}/ranged")
