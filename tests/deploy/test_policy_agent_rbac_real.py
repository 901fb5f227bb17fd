"""The policy agent's identity from deploy/policy-agent.yaml on the real kube-apiserver (root):
its ServiceAccount, ClusterRole and binding applied for real, a token minted by TokenRequest,
the kubeconfig written by ``kvnet install --kubeconfig-only`` (the manifest's init step), and
``kvnet policy`` run with it against a pod in a real netns.

- the role is enough: the agent applies the pod's table, keeps watching, removes the table on
  SIGTERM, and the API server refused none of its requests (audit log);
- it is no wider than needed: the (group, resource, verb) triples the agent used are exactly
  the role's;
- without any one of them it fails: without a ``list`` ``kvnet policy --once`` exits 1 with
  the server's 403; without a ``watch`` the server refuses the agent's watch of that kind
  (403 in the audit log) and the agent says so on stderr;
- the agent's RSS while it watches (VmRSS) is under the DaemonSet's memory request.
"""

from __future__ import annotations

import copy
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kvnet.lab.kube import KubeCluster
from kvnet.lab.netns import Netns, in_ns

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / "deploy" / "policy-agent.yaml"
NAMESPACE, ACCOUNT = "kube-system", "kvnet-policy"
USER = f"system:serviceaccount:{NAMESPACE}:{ACCOUNT}"
NODE = "kvnet-agent-rbac-node"
POD_NS = "policy-rbac"
NAD = "rbacnet"
TABLE = "inet kvnet-policy"
NETWORK_STATUS = "k8s.v1.cni.cncf.io/network-status"

Triple = tuple[str, str, str]  # (API group, resource, verb)


def docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]


def the_role() -> dict[str, Any]:
    return next(d for d in docs() if d["kind"] == "ClusterRole")


def role_rules(role: dict[str, Any]) -> set[Triple]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def without(role: dict[str, Any], triple: Triple) -> dict[str, Any]:
    """The role with one (group, resource, verb) removed, each rule split to one triple."""
    out = copy.deepcopy(role)
    out["rules"] = [
        {"apiGroups": [g], "resources": [r], "verbs": [v]}
        for g, r, v in sorted(role_rules(role))
        if (g, r, v) != triple
    ]
    return out


def allowed(kube: KubeCluster, triple: Triple) -> bool:
    group, resource, verb = triple
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": USER,
            "groups": ["system:serviceaccounts", f"system:serviceaccounts:{NAMESPACE}", "system:authenticated"],
            "resourceAttributes": {"group": group, "resource": resource, "verb": verb},
        },
    }
    answer = kube.call("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", review)
    return bool(answer["status"].get("allowed"))


def wait_for(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout:.0f} s: {what}")
        time.sleep(0.1)


def grant(kube: KubeCluster, role: dict[str, Any]) -> None:
    """Apply ``role`` and wait until the authorizer answers by it for every triple of the full role."""
    kube.apply(role)
    granted = role_rules(role)
    wait_for(
        f"{USER} authorized as {sorted(granted)}",
        lambda: all(allowed(kube, t) is (t in granted) for t in role_rules(the_role())),
    )


def used(events: list[dict[str, Any]]) -> set[Triple]:
    return {((e.get("objectRef") or {}).get("apiGroup", ""), e["objectRef"]["resource"], e["verb"]) for e in events}


def refused(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if (e.get("responseStatus") or {}).get("code") == 403]


def tables(ns: Netns) -> list[str]:
    out = in_ns(ns, "nft", "list", "tables").stdout
    return [line.removeprefix("table ").strip() for line in out.splitlines() if line.strip()]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


class Agent:
    """``kvnet policy`` as the manifest's ServiceAccount, with the kubeconfig its init step writes."""

    def __init__(self, kube: KubeCluster, workdir: Path) -> None:
        self.kube = kube
        self.workdir = workdir
        token = workdir / "token"
        token.write_text(kube.token(ACCOUNT, NAMESPACE))
        self.kubeconfig = workdir / "kubeconfig"
        argv = [sys.executable, "-m", "kvnet.cli", "install", "--kubeconfig-only", "--kubeconfig", str(self.kubeconfig)]
        argv += ["--token-file", str(token), "--ca-file", str(kube.ca_file), "--server", kube.url]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        assert done.stdout == f"installed: {self.kubeconfig}\n"

    def argv(self, *extra: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "kvnet.cli",
            "policy",
            "--kubeconfig",
            str(self.kubeconfig),
            "--node",
            NODE,
            *extra,
        ]

    def once(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv("--once"), capture_output=True, text=True, timeout=60, check=False)

    def start(self) -> subprocess.Popen[str]:
        self.log = self.workdir / "agent.log"
        with self.log.open("w") as err:
            return subprocess.Popen(self.argv(), stdout=subprocess.DEVNULL, stderr=err, text=True)

    @staticmethod
    def stop(proc: subprocess.Popen[str]) -> int:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise


@pytest.fixture
def agent_lab(kube: KubeCluster, netns_factory: Callable[..., Netns], tmp_path: Path) -> Iterator[tuple[Agent, Netns]]:
    """The manifest's RBAC objects applied for real; one pod on the agent's node with a kvnet
    attachment on ``NAD`` in a real netns; a MultiNetworkPolicy selecting it."""
    if subprocess.run(["nft", "--version"], capture_output=True, check=False).returncode != 0:
        pytest.skip("nftables (nft) is not installed")
    rbac = [d for d in docs() if d["kind"] != "DaemonSet"]
    assert [d["kind"] for d in rbac] == ["ServiceAccount", "ClusterRole", "ClusterRoleBinding"]
    kube.ensure_namespace(NAMESPACE)
    kube.ensure_namespace(POD_NS)
    for doc in rbac:
        kube.apply(doc)
    ns = netns_factory("kvprbac")
    status = [
        {"name": "cbr0", "interface": "eth0", "ips": ["10.83.0.5"], "default": True},
        {"name": f"{POD_NS}/{NAD}", "interface": "net1", "ips": ["10.84.0.5"]},
    ]
    pod = {
        "kind": "Pod",
        "metadata": {
            "name": "guarded",
            "namespace": POD_NS,
            "labels": {"app": "guarded"},
            "annotations": {"kvnet.io/netns": ns.name, NETWORK_STATUS: json.dumps(status)},
        },
        "spec": {"nodeName": NODE, "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.9"}]},
    }
    policy = {
        "apiVersion": "k8s.cni.cncf.io/v1beta1",
        "kind": "MultiNetworkPolicy",
        "metadata": {"name": "guarded-in", "namespace": POD_NS, "annotations": {"k8s.v1.cni.cncf.io/policy-for": NAD}},
        "spec": {"podSelector": {"matchLabels": {"app": "guarded"}}, "ingress": []},
    }
    policies = f"/apis/k8s.cni.cncf.io/v1beta1/namespaces/{POD_NS}/multi-networkpolicies"
    kube.create(pod)
    kube.call("POST", policies, policy)
    try:
        grant(kube, the_role())
        yield Agent(kube, tmp_path), ns
    finally:
        kube.raw("DELETE", f"{policies}/guarded-in")
        kube.delete("Pod", POD_NS, "guarded")
        for doc in reversed(rbac):
            kube.delete(doc["kind"], doc["metadata"].get("namespace"), doc["metadata"]["name"])


def test_the_role_is_enough_and_every_rule_is_used(agent_lab: tuple[Agent, Netns], kube: KubeCluster) -> None:
    agent, ns = agent_lab
    mark = kube.audit_mark()
    proc = agent.start()
    try:
        wait_for("the pod's table applied", lambda: TABLE in tables(ns))
        samples = []
        for _ in range(5):
            samples.append(rss_kib(proc.pid))
            time.sleep(0.5)
        assert proc.poll() is None, agent.log.read_text()
    finally:
        rc = Agent.stop(proc)
    assert rc == 0, agent.log.read_text()
    assert tables(ns) == []  # removed on SIGTERM
    # watches are logged at ResponseComplete when they end: the agent's SIGTERM ended them
    wait_for(
        "the watches in the audit log",
        lambda: (
            {t for t in used(kube.audit(user=USER, since=mark)) if t[2] == "watch"}
            == {t for t in role_rules(the_role()) if t[2] == "watch"}
        ),
        timeout=15,
    )
    events = kube.audit(user=USER, since=mark)
    assert refused(events) == []
    assert used(events) == role_rules(the_role())  # exactly the role: every rule is used
    peak = max(samples) / 1024
    print(f"kvnet policy VmRSS while watching: {peak:.1f} MiB (samples {[round(s / 1024, 1) for s in samples]})")
    request = next(
        c for c in next(d for d in docs() if d["kind"] == "DaemonSet")["spec"]["template"]["spec"]["containers"]
    )["resources"]["requests"]["memory"]
    assert peak < int(request.removesuffix("Mi")), f"RSS {peak:.1f} MiB over the request {request}"


@pytest.mark.parametrize("triple", sorted(role_rules(the_role())), ids=lambda t: f"{t[1]}-{t[2]}")
def test_without_one_rule_the_agent_fails(agent_lab: tuple[Agent, Netns], kube: KubeCluster, triple: Triple) -> None:
    agent, ns = agent_lab
    _group, resource, verb = triple
    grant(kube, without(the_role(), triple))
    mark = kube.audit_mark()
    if verb == "list":
        done = agent.once()
        assert done.returncode == 1, done.stderr
        assert "403" in done.stderr and resource in done.stderr, done.stderr
        assert tables(ns) == []
    else:
        proc = agent.start()
        try:

            def watch_refused() -> bool:
                return any(
                    e["objectRef"]["resource"] == resource and e["verb"] == "watch"
                    for e in refused(kube.audit(user=USER, since=mark))
                )

            wait_for(f"a refused watch of {resource}", watch_refused)
            wait_for("the agent's warning", lambda: f"watch {resource} failed" in agent.log.read_text(), timeout=10)
        finally:
            Agent.stop(proc)
    denied = {
        (e["objectRef"].get("apiGroup", ""), e["objectRef"]["resource"], e["verb"])
        for e in refused(kube.audit(user=USER, since=mark))
    }
    assert denied == {triple}
