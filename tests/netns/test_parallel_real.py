"""Parallel delegates with the real plugins (root, the real API server, v1.10.0 reference
plugins and whereabouts from build/peers): one pod with twelve attachments of one bridge NAD
(one bridge, one host-local range, the bridge's gateway address added by every call), a
bridge + tuning conflist, four macvlans on one master (host-local) and three bridge
attachments with whereabouts IPAM (which kvnet runs one after the other, beside the rest),
added by ``kvnet-cni`` at ``delegateParallelism: 8``.

What is compared with the one-by-one run (``delegateParallelism: 1``) of the same pod is
what the pod and the node end up with: every link in the pod netns with its own address,
the same addresses taken from each range (in another order), network-status in the same
order and shape, the same delegate cache bytes, libcni's results files alike but for the
addresses; a failing attachment in the middle rolls everything back (no link, no
host-local lease, no whereabouts allocation, only the delegate cache kept for the runtime's
DEL), and DEL leaves nothing. A sampler counts the plugin processes that run at once, so
the test also shows that the run was parallel, and bounded.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import threading
import time
from typing import Any

import pytest

from kvnet.lab.kube import KubeCluster
from kvnet.lab.pod_demo import IP, PodLab, in_ns, leases

pytestmark = pytest.mark.root

POOLS = "/apis/whereabouts.cni.cncf.io/v1alpha1/ippools"
SHARED, CHAIN, MACVLAN, WHEREABOUTS = "10.71.0.0/24", "10.74.0.0/24", "10.72.0.0/24", "10.73.0.0/27"
PARALLELISM = 8

# the pod's selections: the failing one goes into the middle (after the first ten)
SELECTIONS = [
    *(("shared", f"sh{i}") for i in range(1, 7)),
    ("chain", "ch1"),
    ("mv", "mv1"),
    ("mv", "mv2"),
    ("wa", "wa1"),
    *(("shared", f"sh{i}") for i in range(7, 13)),
    ("mv", "mv3"),
    ("mv", "mv4"),
    ("wa", "wa2"),
    ("wa", "wa3"),
    ("chain", "ch2"),
]
POD_LINKS = ["eth0", *(ifname for _, ifname in SELECTIONS)]
PLUGINS = ("bridge", "macvlan")  # the delegates the sampler counts (not their IPAM children)


@pytest.fixture
def lab(whereabouts_lab: PodLab) -> PodLab:
    in_ns(whereabouts_lab.node, IP, "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink1")
    in_ns(whereabouts_lab.node, IP, "link", "set", "uplink0", "up")
    add_nads(whereabouts_lab)
    return whereabouts_lab


def host_local(subnet: str) -> dict[str, Any]:
    return {"type": "host-local", "ranges": [[{"subnet": subnet}]]}


def add_nads(lab: PodLab) -> None:
    lab.add_nad(
        "shared",
        {
            "cniVersion": "1.0.0",
            "type": "bridge",
            "bridge": "kvp-shared",
            "isGateway": True,
            "ipam": host_local(SHARED),
        },
    )
    lab.add_nad(
        "chain",
        {
            "cniVersion": "1.0.0",
            "plugins": [
                {"type": "bridge", "bridge": "kvp-chain", "ipam": host_local(CHAIN)},
                {"type": "tuning", "mtu": 1400},  # on the bridge plugin's link: the chain ran in order
            ],
        },
    )
    lab.add_nad(
        "mv",
        {"cniVersion": "1.0.0", "type": "macvlan", "master": "uplink0", "mode": "bridge", "ipam": host_local(MACVLAN)},
    )
    flat = lab.workdir / "whereabouts.conf"  # whereabouts reads its datastore settings from there
    flat.write_text(json.dumps({"datastore": "kubernetes", "kubernetes": {"kubeconfig": str(lab.kubeconfig)}}))
    lab.add_nad(
        "wa",
        {
            "cniVersion": "1.0.0",
            "type": "bridge",
            "bridge": "kvp-wa",
            "ipam": {
                "type": "whereabouts",
                "range": WHEREABOUTS,
                "configuration_path": str(flat),
                "log_level": "error",
            },
        },
    )


def main_conf(lab: PodLab, parallelism: int) -> dict[str, Any]:
    main = {
        "cniVersion": "1.0.0",
        "name": "main",
        "type": "bridge",
        "bridge": "kvp-main",
        "isGateway": True,
        "ipam": host_local("10.70.0.0/24"),
    }
    return lab.config([main], delegateParallelism=parallelism)


def annotation(selections: list[tuple[str, str]]) -> str:
    return json.dumps([{"name": name, "interface": ifname} for name, ifname in selections])


def reservations(kube: KubeCluster) -> list[tuple[str, str, str]]:
    """(address, podref, ifname) of every whereabouts allocation in the range's pool."""
    wanted = WHEREABOUTS.replace("/", "-")
    out = []
    for pool in kube.call("GET", POOLS)["items"]:
        if pool["metadata"]["name"] != wanted:
            continue
        base = ipaddress.ip_network(pool["spec"]["range"]).network_address
        for offset, alloc in (pool["spec"].get("allocations") or {}).items():
            out.append((str(base + int(offset)), alloc["podref"], alloc.get("ifname", "")))
    return sorted(out)


def pod_state(lab: PodLab) -> dict[str, tuple[list[str], int]]:
    """Each pod link's IPv4 addresses and MTU."""
    return {
        link["ifname"]: (
            [f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", []) if a["family"] == "inet"],
            link["mtu"],
        )
        for link in lab.pod_addresses()
    }


def node_links(lab: PodLab, kind: str) -> list[str]:
    return sorted(link["ifname"] for link in json.loads(in_ns(lab.node, IP, "-j", "link", "show", "type", kind).stdout))


class Sampler:
    """Counts, every few milliseconds, the delegates (``PLUGINS``) that run ``command`` for
    one container: the most at once. Each delegate is a process group of its own (kvnet starts it
    so), and its IPAM child, or the copy of it that forks that child, counts with it."""

    def __init__(self, container: str, command: str = "ADD") -> None:
        self.mark = f"CNI_CONTAINERID={container}".encode()
        self.command = f"CNI_COMMAND={command}".encode()
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _count(self) -> int:
        groups = set()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/comm", "rb") as fh:
                    if fh.read().strip().decode() not in PLUGINS:
                        continue
                with open(f"/proc/{entry}/environ", "rb") as fh:
                    env = fh.read().split(b"\0")
                with open(f"/proc/{entry}/stat", "rb") as fh:
                    group = int(fh.read().rpartition(b")")[2].split()[2])
            except (OSError, ValueError, IndexError):
                continue
            if self.mark in env and self.command in env:
                groups.add(group)
        return len(groups)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.most = max(self.most, self._count())
            time.sleep(0.002)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


_IP_TEXT = re.compile(r"^[0-9a-fA-F:.]+(/\d+)?$")
_MAC_TEXT = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
_VETH_NAME = re.compile(r"^veth[0-9a-f]{8}$")  # the bridge plugin's random host-side name


def without_addresses(doc: Any, container: str) -> Any:
    """``doc`` with every address (IP, IP/prefix, MAC), the random veth names and the
    container ID made placeholders."""
    if isinstance(doc, dict):
        return {k: without_addresses(v, container) for k, v in doc.items()}
    if isinstance(doc, list):
        return [without_addresses(v, container) for v in doc]
    if isinstance(doc, str):
        if _MAC_TEXT.match(doc):
            return "<mac>"
        if _IP_TEXT.match(doc) and any(c in doc for c in ".:"):
            try:
                ipaddress.ip_interface(doc)
                return "<ip>"
            except ValueError:
                pass
        return _VETH_NAME.sub("<veth>", doc.replace(container, "<container>"))
    return doc


def results_files(lab: PodLab, container: str) -> dict[str, Any]:
    """libcni's results files of ``container``, by name with the container ID made a placeholder."""
    folder = lab.cni_dir / "results"
    return {
        p.name.replace(container, "<container>"): without_addresses(json.loads(p.read_text()), container)
        for p in sorted(folder.glob(f"*{container}*"))
    }


def added(lab: PodLab, kube: KubeCluster, uid: str, container: str, parallelism: int) -> dict[str, Any]:
    """ADD at ``parallelism``; what the pod, the node, the API and the caches then hold."""
    conf = main_conf(lab, parallelism)
    with Sampler(container) as sampler:
        start = time.monotonic()
        rc, result, err = lab.cni("ADD", conf, container=container, pod="par", uid=uid)
        took = time.monotonic() - start
    assert rc == 0, (result, err)
    state = pod_state(lab)
    return {
        "result": without_addresses(result, container),
        "links": state,
        "status": lab.status("par") or [],
        "cache": (lab.cni_dir / container).read_bytes(),
        "results": results_files(lab, container),
        "leases": leases(lab.data_dir),
        "whereabouts": reservations(kube),
        "most": sampler.most,
        "took": took,
    }


def deleted(lab: PodLab, kube: KubeCluster, uid: str, container: str, parallelism: int, fails: str = "") -> int:
    """DEL leaves nothing; with ``fails``, the one delegate that refuses its DEL too says so
    (DEL goes on past it, as Multus's). The most plugin processes that ran at once."""
    with Sampler(container, "DEL") as sampler:
        rc, out, err = lab.cni("DEL", main_conf(lab, parallelism), container=container, pod="par", uid=uid)
    if fails:
        assert rc == 1 and out["msg"] == f'DelegateDel: error invoking DelegateDel - "bridge": {fails}', (out, err)
    else:
        assert rc == 0, (out, err)
    assert lab.leftovers() == {"pod links": [], "host-local leases": [], "cache files": []}
    assert reservations(kube) == []
    assert node_links(lab, "veth") == sorted([lab.node_veth, "uplink0", "uplink1"])
    return sampler.most


def in_range(addresses: list[str], subnet: str) -> list[str]:
    net = ipaddress.ip_network(subnet)
    return sorted(a for a in addresses if ipaddress.ip_interface(a).ip in net)


def test_parallel_add_gives_what_the_one_by_one_add_gives(lab: PodLab, kube: KubeCluster) -> None:
    uid = lab.add_pod("par", annotation(SELECTIONS))

    one = added(lab, kube, uid, "seq1", 1)
    assert deleted(lab, kube, uid, "seq1", 1) <= 1
    for marker in lab.data_dir.rglob("last_reserved_ip*"):  # both runs start from the same IPAM state
        marker.unlink()
    par = added(lab, kube, uid, "par8", PARALLELISM)

    # every link is there with its own address; the chain's tuning ran after its bridge
    assert sorted(par["links"]) == sorted(["lo", *POD_LINKS])
    addresses = [a for name, (addrs, _) in par["links"].items() if name != "lo" for a in addrs]
    assert len(addresses) == len(POD_LINKS) and len({ipaddress.ip_interface(a).ip for a in addresses}) == len(addresses)
    assert [par["links"][f"ch{i}"][1] for i in (1, 2)] == [1400, 1400]
    # the same addresses from each range as the one-by-one run (which link has which may differ)
    seq_addresses = [a for name, (addrs, _) in one["links"].items() if name != "lo" for a in addrs]
    for subnet in (SHARED, CHAIN, MACVLAN, WHEREABOUTS):
        assert in_range(addresses, subnet) == in_range(seq_addresses, subnet), subnet
    assert len(in_range(addresses, SHARED)) == 12
    assert {name: mtu for name, (_, mtu) in par["links"].items()} == {
        name: mtu for name, (_, mtu) in one["links"].items()
    }
    # host-local's leases and whereabouts' allocations: one per attachment, as one by one
    assert len(par["leases"]) == len(one["leases"]) == 1 + 12 + 2 + 4
    assert sorted((pod, ifname) for _, pod, ifname in par["whereabouts"]) == [
        ("default/par", ifname) for ifname in ("wa1", "wa2", "wa3")
    ]
    assert sorted(a for a, _, _ in par["whereabouts"]) == sorted(a for a, _, _ in one["whereabouts"])
    # whereabouts attachments run one after the other in plan order: each link gets the same address
    assert [par["links"][f"wa{i}"][0] for i in (1, 2, 3)] == [one["links"][f"wa{i}"][0] for i in (1, 2, 3)]
    assert sorted(a.partition("/")[0] for a in in_range(addresses, WHEREABOUTS)) == sorted(
        a for a, _, _ in par["whereabouts"]
    )

    # network-status: the same entries in the same order, each entry's address its link's
    def shape(status: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**s, "ips": len(s.get("ips", [])), "mac": bool(s.get("mac"))} for s in status]

    assert shape(par["status"]) == shape(one["status"])
    assert [(s["name"], s["interface"]) for s in par["status"]] == [("main", "eth0")] + [
        (f"default/{name}", ifname) for name, ifname in SELECTIONS
    ]
    for s in par["status"]:
        assert [
            f"{ip}/{ipaddress.ip_interface(par['links'][s['interface']][0][0]).network.prefixlen}" for ip in s["ips"]
        ] == par["links"][s["interface"]][0]
    # the result, the delegate cache and libcni's results files are the one-by-one run's
    assert par["result"] == one["result"]
    assert par["cache"] == one["cache"]
    assert par["results"] == one["results"] and len(par["results"]) == len(POD_LINKS)

    # it did run in parallel, never more than the degree at once; the one-by-one run never did
    assert one["most"] == 1
    assert 1 < par["most"] <= PARALLELISM, par["most"]

    assert 1 < deleted(lab, kube, uid, "par8", PARALLELISM) <= PARALLELISM  # DEL runs the waves backwards, at once


@pytest.mark.parametrize(
    "broken",
    [
        # refused by the bridge plugin before it does anything
        pytest.param({"vlan": 5000}, id="invalid-config"),
        # fails after its veth is in the pod and host-local gave it an address: its bridge
        # already has another address in that family (made by the test below)
        pytest.param({"isGateway": True}, id="fails-midway"),
    ],
)
def test_a_failing_attachment_in_the_middle_rolls_everything_back(
    lab: PodLab, kube: KubeCluster, broken: dict[str, Any]
) -> None:
    lab.add_nad(
        "bad",
        {"cniVersion": "1.0.0", "type": "bridge", "bridge": "kvp-bad", "ipam": host_local("10.75.0.0/24"), **broken},
    )
    in_ns(lab.node, IP, "link", "add", "kvp-bad", "type", "bridge")
    in_ns(lab.node, IP, "addr", "add", "10.99.0.1/24", "dev", "kvp-bad")
    selections = [*SELECTIONS[:10], ("bad", "bad0"), *SELECTIONS[10:]]
    uid = lab.add_pod("par", annotation(selections))
    conf = main_conf(lab, PARALLELISM)

    with Sampler("fail8") as sampler:
        rc, out, err = lab.cni("ADD", conf, container="fail8", pod="par", uid=uid)
    assert rc != 0, (out, err)
    assert out["msg"].startswith(f'[default/par/{uid}:bad]: error adding container to network "bad": '), out
    if "vlan" in broken:
        assert "invalid VLAN ID 5000" in out["msg"], out
    else:
        assert "already has an IP address different from 10.75.0.1/24" in out["msg"], out
    assert sampler.most > 1, "the attachments around the failing one ran at once"

    # everything rolled back: no pod link, no lease, no allocation, no veth on the node; only
    # the delegate cache stays, for the runtime's DEL (as Multus's CmdAdd keeps it)
    assert lab.leftovers() == {"pod links": [], "host-local leases": [], "cache files": ["fail8"]}
    assert reservations(kube) == []
    assert node_links(lab, "veth") == sorted([lab.node_veth, "uplink0", "uplink1"])
    assert lab.status("par") is None

    # the runtime's DEL then deletes every delegate of the cache and leaves nothing (a
    # config the bridge plugin refuses, it refuses on DEL too)
    refused = "error in getting result from DelNetwork: invalid VLAN ID 5000 (must be between 0 and 4094)"
    deleted(lab, kube, uid, "fail8", PARALLELISM, fails=refused if "vlan" in broken else "")
