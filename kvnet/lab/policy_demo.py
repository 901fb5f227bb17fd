"""The pod demo's policy step: one MultiNetworkPolicy in action (docs/policy.md).

Two more pods join the blue network (``examples/pod-demo/policy.yaml``), each ADDed by
``kvnet-cni`` into a netns of its own; the demo pod listens on TCP 8080 and 9090; the
policy lets only the client pod reach the demo pod on blue, and only on 8080. The real
node agent (``kvnet policy``) programs the demo pod's netns from the API server, and TCP
connects show what passes: before the policy is deleted and after, and the main network
(eth0), which the policy is not for, throughout. Everything the step makes is removed
before it returns, so the demo's DEL still leaves nothing behind.

It needs the real API server (the stand-in serves no MultiNetworkPolicy and no watch) and
``nft``; without them the demo says so and goes on.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, TextIO

import yaml

from kvnet.lab.kube import KubeCluster
from kvnet.lab.netns import IP, Netns, delete_netns, in_ns, make_netns
from kvnet.lab.pod_demo import PodLab, examples_dir

NODE = "kvnet-demo-node"  # the pods' spec.nodeName, the agent's --node
PORT, OTHER_PORT = 8080, 9090
TABLE = "inet kvnet-policy"
WAIT = 30.0  # seconds for the agent to add or remove a table

# A TCP listener on the ports of its arguments (IPv4 and IPv6), "ready" once they listen;
# and a connect to ADDRESS PORT within TIMEOUT seconds (exit status 0 when it connects).
# tests/netns/test_policy_real.py decides with the same two.
LISTENER = """
import selectors, socket, sys
sel = selectors.DefaultSelector()
for port in sys.argv[1:]:
    s = socket.socket(socket.AF_INET6)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", int(port)))
    s.listen(16)
    sel.register(s, selectors.EVENT_READ)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        conn, _ = key.fileobj.accept()
        conn.close()
"""
CONNECT = "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))"


def skip_reason(lab: PodLab) -> str:
    """Why the step cannot run here ("" when it can)."""
    if not isinstance(lab.api, KubeCluster):
        return "the API stand-in serves no MultiNetworkPolicy (`make peers` runs the demo on a real kube-apiserver)"
    if shutil.which("nft") is None:
        return "nftables (nft) is not installed"
    return ""


def connects(ns: Netns, address: str, port: int) -> bool:
    done = subprocess.run(
        [IP, "netns", "exec", ns.name, sys.executable, "-c", CONNECT, address, str(port), "1.0"],
        capture_output=True,
        timeout=15,
        check=False,
    )
    return done.returncode == 0


def has_table(ns: Netns) -> bool:
    return f"table {TABLE}" in in_ns(ns, "nft", "list", "tables").stdout.splitlines()


def wait_until(check: Callable[[], bool], timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def address_on(lab: PodLab, pod: str, network: str) -> str:
    entry = next(s for s in lab.status(pod) or [] if s.get("name") == network)
    return str(entry["ips"][0])


def run(lab: PodLab, conf: Mapping[str, Any], demo: Netns, out: TextIO) -> bool:
    """The step on ``lab`` (the demo pod ``default/demo`` ADDed into ``demo``); True when
    every connect went as the policy says."""
    assert isinstance(lab.api, KubeCluster)
    kube = lab.api
    docs = [d for d in yaml.safe_load_all((examples_dir() / "policy.yaml").read_text()) if d]
    policy = next(d for d in docs if d["kind"] == "MultiNetworkPolicy")
    helpers = [d for d in docs if d["kind"] == "Pod"]
    name = policy["metadata"]["name"]
    policies = f"/apis/k8s.cni.cncf.io/v1beta1/namespaces/{policy['metadata']['namespace']}/multi-networkpolicies"
    ok = True
    with contextlib.ExitStack() as stack:
        kube.call(
            "PATCH",
            "/api/v1/namespaces/default/pods/demo",
            {"metadata": {"annotations": {"kvnet.io/netns": demo.name}}},
            content_type="application/merge-patch+json",
        )
        netns: dict[str, Netns] = {}
        for pod in helpers:
            pod_name = pod["metadata"]["name"]
            ns = make_netns(f"kvdemo-{pod_name[:6]}")
            stack.callback(delete_netns, ns)
            netns[pod_name] = ns
            obj = {**pod, "metadata": {**pod["metadata"], "annotations": {**pod["metadata"]["annotations"]}}}
            obj["metadata"]["annotations"]["kvnet.io/netns"] = ns.name
            uid = str(lab.load([obj])[0]["metadata"]["uid"])
            container = "demo" + uuid.uuid4().hex[:12]
            rc, result, err = lab.cni("ADD", conf, container=container, pod=pod_name, uid=uid, netns=ns.path)
            stack.callback(lab.cni, "DEL", conf, container=container, pod=pod_name, uid=uid, netns=ns.path)
            if rc != 0:
                out.write(f"policy: ADD of pod default/{pod_name} failed ({rc}): {result}\n{err}")
                return False
        blue, eth0 = address_on(lab, "demo", "default/blue"), address_on(lab, "demo", "main")
        listener = subprocess.Popen(
            [IP, "netns", "exec", demo.name, sys.executable, "-c", LISTENER, str(PORT), str(OTHER_PORT)],
            stdout=subprocess.PIPE,
            text=True,
        )
        stack.callback(listener.wait)
        stack.callback(listener.kill)
        assert listener.stdout is not None
        stack.callback(listener.stdout.close)
        listener.stdout.readline()

        kube.call("POST", policies, policy)
        stack.callback(kube.raw, "DELETE", f"{policies}/{name}")
        log = (lab.workdir / "policy-agent.log").open("w")
        stack.callback(log.close)
        agent = subprocess.Popen(
            [sys.executable, "-m", "kvnet.cli", "policy", "--kubeconfig", str(kube.admin_kubeconfig), "--node", NODE],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        stack.callback(_stop, agent)
        out.write(
            f"policy: MultiNetworkPolicy default/{name} (policy-for: blue): the demo pod takes TCP {PORT} on blue "
            "from app=client only; kvnet policy (the node agent) runs\n"
        )
        if not wait_until(lambda: has_table(demo)):
            out.write(f"policy: the agent made no table in the demo pod's netns in {WAIT:.0f} s\n")
            return False
        out.write(f"  table {TABLE} in the demo pod's netns\n")

        def check(who: str, address: str, port: int, want: bool, note: str = "") -> None:
            nonlocal ok
            got = connects(netns[who], address, port)
            ok = ok and got == want
            verdict = ("connects" if got else "blocked") + ("" if got == want else "  <- NOT what the policy says")
            out.write(f"  {who:<8} -> demo {address}:{port:<5} {verdict}{note}\n")

        check("client", blue, PORT, True)
        check("client", blue, OTHER_PORT, False)
        check("stranger", blue, PORT, False)
        check("stranger", eth0, PORT, True, "  (eth0, the main network: not policed)")
        kube.raw("DELETE", f"{policies}/{name}")
        out.write("policy deleted\n")
        if not wait_until(lambda: not has_table(demo)):
            out.write(f"policy: the table stayed {WAIT:.0f} s after the policy went\n")
            return False
        check("stranger", blue, PORT, True)
        check("client", blue, OTHER_PORT, True)
    return ok


def _stop(agent: subprocess.Popen[bytes]) -> None:
    """SIGTERM, as the DaemonSet stops it: the agent removes its tables and exits."""
    if agent.poll() is None:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(timeout=30)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()
