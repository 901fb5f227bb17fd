"""``kvnet-mirror`` chained after the real bridge plugin, in network namespaces (root).

A "node" namespace holds the bridge, the node-side veth ends and the mirror target (one
end of a veth pair, ``mir0``; what is mirrored to it arrives on its peer ``mir1``, whose
receive counter is the capture). Two pods on the bridge ping each other; the mirrored
attachment's packets must show up on the target, and stop when kvnet-mirror's DEL ran.
Every plugin runs in the node namespace, as a runtime on that node would run it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kvnet.cni.delegate import DelegateEnv, DelegateRunner, exec_argv
from kvnet.core.errors import DelegateFailed
from kvnet.lab.kube import KubeCluster, peer_binary
from kvnet.lab.netns import IP, NetnsLike
from kvnet.lab.pod_demo import PodLab

pytestmark = pytest.mark.root

VENV_BIN = str(Path(sys.executable).parent)  # kvnet-mirror, installed beside this Python


@dataclass
class NodeExec:
    node: str

    def __call__(self, plugin: str, stdin: bytes, env: Mapping[str, str], timeout: float) -> tuple[int, bytes, bytes]:
        return exec_argv([IP, "netns", "exec", self.node, plugin], stdin, env, timeout)


def mirrored_packets(node: NetnsLike) -> int:
    """Packets the target has received so far (they arrive on mir0's peer, mir1)."""
    shown = json.loads(node.run("ip", "-j", "-s", "link", "show", "dev", "mir1").stdout)
    return int(shown[0]["stats64"]["rx"]["packets"])


@dataclass
class Lab:
    node: NetnsLike
    pods: dict[str, NetnsLike]
    runner: DelegateRunner
    ipam: Path

    def network(self, name: str, *, mirror: Mapping[str, Any] | None = None) -> dict[str, Any]:
        bridge = {
            "type": "bridge",
            "bridge": "kvmbr0",
            # one subnet on one bridge; host-local keeps leases per network name, so each
            # network has a range of its own
            "ipam": {
                "type": "host-local",
                "subnet": "10.97.0.0/24",
                "rangeStart": "10.97.0.100" if mirror is None else "10.97.0.10",
                "rangeEnd": "10.97.0.199" if mirror is None else "10.97.0.99",
                "dataDir": str(self.ipam),
            },
        }
        plugins: list[dict[str, Any]] = [bridge]
        if mirror is not None:
            plugins.append({"type": "kvnet-mirror", **mirror})
        return {"cniVersion": "1.0.0", "name": name, "plugins": plugins}

    def env(self, pod: str) -> DelegateEnv:
        return DelegateEnv(f"ctr-{pod}", self.pods[pod].path, "net1", "IgnoreUnknown=true")

    def mirrored(self) -> int:
        return mirrored_packets(self.node)

    def ping(self, pod: str, address: str, count: int = 3) -> None:
        self.pods[pod].run("busybox", "ping", "-c", str(count), "-W", "2", address)

    def qdiscs(self, port: str) -> list[str]:
        shown = json.loads(self.node.run("tc", "-j", "qdisc", "show", "dev", port).stdout or "[]")
        return [str(q.get("kind")) for q in shown]


@pytest.fixture
def lab(netns_factory: Callable[..., Any], cni_bin_dir: str, tmp_path: Path) -> Iterator[Lab]:
    node = netns_factory("kvmn")
    pods = {"a": netns_factory("kvma"), "b": netns_factory("kvmb")}
    for ns in (node, *pods.values()):  # no IPv6 chatter (DAD, MLD, RS): the counts are the pings and their ARP
        for conf in ("all", "default"):
            ns.run("sysctl", "-qw", f"net.ipv6.conf.{conf}.disable_ipv6=1")
    node.run("ip", "link", "add", "mir0", "type", "veth", "peer", "name", "mir1")
    node.run("ip", "link", "set", "mir0", "up")
    node.run("ip", "link", "set", "mir1", "up")
    runner = DelegateRunner([cni_bin_dir, VENV_BIN], timeout=30, exec=NodeExec(node.name), cache_dir=str(tmp_path))
    yield Lab(node, pods, runner, tmp_path / "ipam")


def _address(result: Mapping[str, Any]) -> str:
    return str(result["ips"][0]["address"]).split("/")[0]


def _port(result: Mapping[str, Any]) -> str:
    """The node-side veth of a bridge result: the interface with a MAC, no sandbox, not the bridge."""
    return next(str(i["name"]) for i in result["interfaces"] if not i.get("sandbox") and i["name"] != "kvmbr0")


def test_mirrored_traffic_reaches_the_target_and_stops_after_del(lab: Lab) -> None:
    mirrored = lab.network("mirrored", mirror={"target": "mir0", "direction": "both"})
    a = lab.runner.run_network("ADD", mirrored, lab.env("a"))
    # before b joins: bridge's own CHECK compares the bridge's MAC, which a second port changes
    lab.runner.run_network("CHECK", mirrored, lab.env("a"))
    b = lab.runner.run_network("ADD", lab.network("plain"), lab.env("b"))
    assert a is not None and b is not None
    port = _port(a)
    assert "clsact" in lab.qdiscs(port)

    before = lab.mirrored()
    lab.ping("a", _address(b))
    # three echo requests (port ingress) and three replies (port egress), ARP besides
    assert 6 <= lab.mirrored() - before <= 10

    # kvnet-mirror's DEL alone (the attachment stays): its filters and its qdisc go
    only_mirror = {"cniVersion": "1.0.0", "name": "mirrored", "type": "kvnet-mirror", "target": "mir0"}
    lab.runner.run("DEL", {**only_mirror, "prevResult": a}, lab.env("a"))
    lab.runner.run("DEL", {**only_mirror, "prevResult": a}, lab.env("a"))  # idempotent
    assert "clsact" not in lab.qdiscs(port)
    before = lab.mirrored()
    lab.ping("a", _address(b))
    assert lab.mirrored() - before == 0

    # the whole chain's DEL (the mirror finds nothing left), twice
    for _ in range(2):
        lab.runner.run_network("DEL", mirrored, lab.env("a"))
    lab.runner.run_network("DEL", lab.network("plain"), lab.env("b"))
    links = json.loads(lab.node.run("ip", "-j", "link", "show").stdout)
    assert {x["ifname"] for x in links} == {"lo", "mir0", "mir1", "kvmbr0"}


def test_one_direction_mirrors_only_that_direction(lab: Lab) -> None:
    """``egress`` is what the pod sends: the requests of a ping from the pod, not the replies."""
    mirrored = lab.network("mirrored", mirror={"target": "mir0", "direction": "egress"})
    a = lab.runner.run_network("ADD", mirrored, lab.env("a"))
    b = lab.runner.run_network("ADD", lab.network("plain"), lab.env("b"))
    assert a is not None and b is not None
    filters = json.loads(lab.node.run("tc", "-j", "filter", "show", "dev", _port(a), "egress").stdout or "[]")
    assert filters == []  # nothing on the hook of what the pod receives
    before = lab.mirrored()
    lab.ping("a", _address(b), count=4)
    got = lab.mirrored() - before
    assert 4 <= got <= 6, got  # the four requests and a's ARP, not the replies
    lab.runner.run_network("DEL", mirrored, lab.env("a"))
    lab.runner.run_network("DEL", lab.network("plain"), lab.env("b"))


def test_check_names_the_hook_whose_mirror_is_gone(lab: Lab) -> None:
    mirrored = lab.network("mirrored", mirror={"target": "mir0"})
    a = lab.runner.run_network("ADD", mirrored, lab.env("a"))
    assert a is not None
    lab.node.run("tc", "filter", "del", "dev", _port(a), "egress", "pref", "4711")
    with pytest.raises(DelegateFailed) as info:
        lab.runner.run_network("CHECK", mirrored, lab.env("a"))
    assert info.value.cni_code == 104
    assert f"{_port(a)} has no mirror to mir0 on its tc egress hook" in info.value.msg
    lab.runner.run_network("DEL", mirrored, lab.env("a"))
    assert "clsact" not in {
        str(q.get("kind")) for q in json.loads(lab.node.run("tc", "-j", "qdisc", "show").stdout or "[]")
    }


@pytest.mark.parametrize(
    ("mirror", "msg"),
    [
        ({"target": "nosuch0"}, "kvnet-mirror target 'nosuch0' does not exist on the node"),
        ({}, 'kvnet-mirror needs "target"'),
        ({"target": "mir0", "direction": "sideways"}, 'kvnet-mirror "direction" must be one of ingress, egress, both'),
        ({"target": "a/b"}, "kvnet-mirror target: "),
    ],
)
def test_bad_config_is_code_7_and_del_still_cleans_up(lab: Lab, mirror: dict[str, Any], msg: str) -> None:
    mirrored = lab.network("mirrored", mirror=mirror)
    with pytest.raises(DelegateFailed) as info:
        lab.runner.run_network("ADD", mirrored, lab.env("a"))
    assert info.value.cni_code == 7
    assert msg in info.value.msg
    lab.runner.run_network("DEL", lab.network("mirrored"), lab.env("a"))  # the runtime's DEL after a failed ADD
    links = json.loads(lab.node.run("ip", "-j", "link", "show").stdout)
    assert not [x["ifname"] for x in links if x["ifname"].startswith("veth")]


@pytest.mark.parametrize("meta", ["kvnet-cni", "multus"])
def test_under_a_meta_plugin_on_the_real_api_server(
    netns_factory: Callable[..., Any], kvnet_bin_dir: str, tmp_path: Path, kube: KubeCluster, meta: str
) -> None:
    """The NAD's conflist [bridge, kvnet-mirror] attached by kvnet-cni and by the real Multus
    4.3 (thin) alike: the pod's traffic on net1 is seen on the target, and DEL takes it away."""
    node, pod, peer = netns_factory("kvmn"), netns_factory("kvmp"), netns_factory("kvmq")
    for ns in (node, pod, peer):
        for conf in ("all", "default"):
            ns.run("sysctl", "-qw", f"net.ipv6.conf.{conf}.disable_ipv6=1")
    node.run("ip", "link", "add", "mir0", "type", "veth", "peer", "name", "mir1")
    node.run("ip", "link", "add", "kvmbr1", "type", "bridge")
    node.run("ip", "link", "add", "kvmq0", "type", "veth", "peer", "name", "eth0", "netns", peer.name)
    for link in ("mir0", "mir1", "kvmbr1"):
        node.run("ip", "link", "set", link, "up")
    node.run("ip", "link", "set", "kvmq0", "master", "kvmbr1", "up")
    peer.run("ip", "addr", "add", "10.95.0.250/24", "dev", "eth0")
    peer.run("ip", "link", "set", "eth0", "up")
    with PodLab(node, pod, tmp_path, kvnet_bin_dir=kvnet_bin_dir, kube=kube) as lab:
        (lab.bin_dir / "kvnet-mirror").symlink_to(Path(VENV_BIN) / "kvnet-mirror")
        (lab.bin_dir / "multus").symlink_to(peer_binary("multus"))
        bridge = {"type": "bridge", "bridge": "kvmbr1", "ipam": {"type": "host-local", "subnet": "10.95.0.0/24"}}
        mirror = {"type": "kvnet-mirror", "target": "mir0"}
        lab.add_nad("mirrored", {"cniVersion": "1.0.0", "name": "mirrored", "plugins": [bridge, mirror]})
        uid = lab.add_pod("web", networks="mirrored")
        main = {"cniVersion": "1.0.0", "name": "main", "type": "loopback"}
        conf = lab.config([main], **({"type": "multus", "name": "multus-cni-network"} if meta == "multus" else {}))
        rc, out, err = lab.cni("ADD", conf, container="ctr-web", pod="web", uid=uid, binary=meta)
        assert rc == 0, (out, err)
        before = mirrored_packets(node)
        pod.run("busybox", "ping", "-c", "3", "-W", "2", "10.95.0.250")
        assert 6 <= mirrored_packets(node) - before <= 10
        rc, out, err = lab.cni("DEL", conf, container="ctr-web", pod="web", uid=uid, binary=meta)
        assert rc == 0, (out, err)
        assert not any(lab.leftovers().values()), lab.leftovers()
        links = {x["ifname"] for x in json.loads(node.run("ip", "-j", "link", "show").stdout)}
        assert not [name for name in links if name.startswith("veth")], links
