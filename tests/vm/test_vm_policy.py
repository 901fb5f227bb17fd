"""A MultiNetworkPolicy on a VM behind kvnet's binding, proven with the booted guest (root).

The whole VM path on the real API server (kvnet-cni and kvnet-binding, the sidecar, libvirtd,
the guest under QEMU, KubeVirt's part by KubeVirt's code); while the guest is up, the real
``kvnet policy`` agent polices the virt-launcher pod: the attachment's pod link is a port of
the in-pod bridge, so the agent filters where the guest's frames are bridged (docs/policy.md,
"VMs"). The guest's own ping and TCP connects from the peer on the segment decide:

- before the policy: the guest pings its peer; the peer's connects to the guest are refused
  by the guest's kernel (no listener: a RST means the SYN reached the guest);
- with a policy allowing ingress only from the peer on TCP 7000 and egress to nothing: a
  connect to 7000 is still refused by the guest (reached), one to 7001 times out (dropped),
  the peer's ping to the guest and the guest's ping to the peer fail;
- the policy deleted: the guest pings its peer again, 7001 is refused again; the agent stopped:
  no table left in the launcher pod's netns.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kvnet.lab.kube import KubeCluster
from kvnet.lab.netns import IP, NetnsLike, in_ns
from kvnet.lab.thick import NODE_NAME
from kvnet.lab.vm.report import DemoResult
from kvnet.lab.vm.run import Up
from kvnet.lab.vm.scenario import NAMESPACE, Net, Scenario

pytestmark = [pytest.mark.root, pytest.mark.vm]

SCENARIO = Scenario(vmi_name="vmi-policy", nets=(Net("blue", "bridge", "kvb-pol", "10.86.0.0/24"),))
ALLOWED, OTHER = 7000, 7001
POLICIES = f"/apis/k8s.cni.cncf.io/v1beta1/namespaces/{NAMESPACE}/multi-networkpolicies"
WAIT = 30.0

# "refused": the SYN reached the guest, whose kernel answered RST; "timeout": it was dropped
PROBE = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2.0)
    print("open")
except ConnectionRefusedError:
    print("refused")
except OSError:
    print("timeout")
"""


def probe(ns: NetnsLike, address: str, port: int) -> str:
    done = subprocess.run(
        [IP, "netns", "exec", ns.name, sys.executable, "-c", PROBE, address, str(port)],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    return done.stdout.strip() or done.stderr.strip()


def pings(ns: NetnsLike, address: str) -> bool:
    return in_ns(ns, "busybox", "ping", "-c", "1", "-W", "2", address, check=False).returncode == 0  # busybox-static


def tables(ns: NetnsLike) -> list[str]:
    return in_ns(ns, "nft", "list", "tables").stdout.splitlines()


def wait_for(what: str, check: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.2)


def the_policy(peer: str) -> dict[str, Any]:
    return {
        "apiVersion": "k8s.cni.cncf.io/v1beta1",
        "kind": "MultiNetworkPolicy",
        "metadata": {
            "name": "vm-only-from-peer",
            "namespace": NAMESPACE,
            "annotations": {"k8s.v1.cni.cncf.io/policy-for": SCENARIO.net("blue").nad},
        },
        "spec": {
            "podSelector": {"matchLabels": {"vm.kubevirt.io/name": SCENARIO.vmi_name}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {"from": [{"ipBlock": {"cidr": f"{peer}/32"}}], "ports": [{"protocol": "TCP", "port": ALLOWED}]}
            ],
            "egress": [{"to": [{"ipBlock": {"cidr": "192.0.2.0/24"}}]}],
        },
    }


def test_a_policy_protects_the_vm_behind_kvnets_binding(
    run_vm: Callable[..., DemoResult], kube: KubeCluster, tmp_path: Path
) -> None:
    if subprocess.run(["nft", "--version"], capture_output=True, check=False).returncode != 0:
        pytest.skip("nftables (nft) is not installed")
    if not Path("/proc/sys/net/bridge/bridge-nf-call-iptables").exists():
        pytest.skip("missing kernel feature: br_netfilter (a VM's bridged frames never reach the inet chains)")
    seen: dict[str, Any] = {}

    def while_up(up: Up) -> None:
        (peer_ns,) = up.ns.peers
        (peer,) = SCENARIO.peers()
        peer_ip = peer.ips[0]
        (row,) = up.observed.rows
        vm_ip = row.ipam_addresses[0]
        pod = up.api.pod["metadata"]["name"]
        kube.call(
            "PATCH",
            f"/api/v1/namespaces/{NAMESPACE}/pods/{pod}",
            {"metadata": {"annotations": {"kvnet.io/netns": up.ns.pod.name}}},
            content_type="application/merge-patch+json",
        )
        seen["before"] = (
            up.vm.command("ping").last_ping(peer_ip),
            probe(peer_ns, vm_ip, ALLOWED),
            probe(peer_ns, vm_ip, OTHER),
            pings(peer_ns, vm_ip),
        )
        log = (tmp_path / "agent.log").open("w")
        agent = subprocess.Popen(
            [sys.executable, "-m", "kvnet.cli", "-v", "policy", "--kubeconfig", str(kube.admin_kubeconfig),
             "--node", NODE_NAME],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )  # fmt: skip
        try:
            kube.call("POST", POLICIES, the_policy(peer_ip))
            wait_for("the agent's tables in the launcher pod's netns", lambda: len(tables(up.ns.pod)) >= 2)
            seen["tables"] = tables(up.ns.pod)
            seen["with"] = (
                up.vm.command("ping").last_ping(peer_ip),
                probe(peer_ns, vm_ip, ALLOWED),
                probe(peer_ns, vm_ip, OTHER),
                pings(peer_ns, vm_ip),
            )
            kube.raw("DELETE", f"{POLICIES}/vm-only-from-peer")
            wait_for("the tables gone with the policy", lambda: tables(up.ns.pod) == [])
            seen["after"] = (up.vm.command("ping").last_ping(peer_ip), probe(peer_ns, vm_ip, OTHER))
        finally:
            kube.raw("DELETE", f"{POLICIES}/vm-only-from-peer")
            agent.send_signal(signal.SIGTERM)
            seen["agent_rc"] = agent.wait(timeout=30)
            log.close()
            seen["tables_at_end"] = tables(up.ns.pod)

    result = run_vm(SCENARIO, failover=False, while_up=while_up)
    why = f"{seen}\n{result.explain()}\nagent log:\n{(tmp_path / 'agent.log').read_text()[-3000:]}"
    assert result.error is None, why
    assert seen["before"] == (True, "refused", "refused", True), why
    assert sorted(seen["tables"]) == ["table bridge kvnet-policy", "table inet kvnet-policy"], why
    # ingress: the peer on the allowed port still reaches the guest, nothing else does;
    # egress: the guest's own ping leaves no more
    assert seen["with"] == (False, "refused", "timeout", False), why
    assert seen["after"] == (True, "refused"), why
    assert seen["agent_rc"] == 0 and seen["tables_at_end"] == [], why
    assert result.leftovers == [], why
