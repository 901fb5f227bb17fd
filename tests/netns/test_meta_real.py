"""The meta-plugin end to end: a real ``kvnet-cni`` subprocess, real reference plugins,
NADs and pods served by the API stand-in, in a node and a pod network namespace (root).

``kvnet-cni`` runs inside the node netns (bridges, the macvlan uplink and portmap's
iptables chains die with it) with CNI_NETNS pointing at the pod netns, exactly as a
runtime calls it. host-local leases, the delegate cache and libcni's results live in
temp folders, never in the host's /var/lib/cni.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kvnet.lab.apiserver import ApiStandIn
from kvnet.lab.kube import KubeCluster
from kvnet.lab.pod_demo import IP, PodLab, in_ns, leases

pytestmark = pytest.mark.root

# A CNI plugin that records what it was given (stdin + CNI_* env) and answers like a
# plugin: "fail" in its config makes it fail, "hang" makes it sleep that many seconds.
RECORDER = """#!{python}
import json, os, sys, time
cmd = os.environ.get("CNI_COMMAND", "")
if cmd == "VERSION":
    print(json.dumps({{"cniVersion": "1.0.0", "supportedVersions": ["0.3.1", "0.4.0", "1.0.0"]}}))
    sys.exit(0)
conf = json.loads(sys.stdin.read() or "{{}}")
record = {{"env": {{k: v for k, v in os.environ.items() if k.startswith("CNI_")}}, "stdin": conf}}
folder = conf.get("recordDir") or "/nonexistent"
with open(os.path.join(folder, "%s-%s-%d.json" % (cmd, os.environ.get("CNI_IFNAME", ""), time.monotonic_ns())), "w") as f:
    json.dump(record, f)
if conf.get("hang") and cmd == "ADD":
    time.sleep(float(conf["hang"]))
if conf.get("fail") and cmd == "ADD":
    print(json.dumps({{"cniVersion": conf.get("cniVersion"), "code": 7, "msg": "recorder told to fail"}}))
    sys.exit(1)
if cmd == "ADD":
    print(json.dumps({{"cniVersion": conf.get("cniVersion"), "interfaces": [{{"name": os.environ["CNI_IFNAME"],
                      "sandbox": os.environ["CNI_NETNS"]}}], "ips": [], "dns": {{}}}}))
"""


@pytest.fixture
def lab(
    netns_factory: Callable[..., Any], cni_bin_dir: str, kvnet_bin_dir: str, tmp_path: Path, kube: KubeCluster
) -> Iterator[PodLab]:
    node = netns_factory("kvnode")
    pod = netns_factory("kvpod")
    with PodLab(node, pod, tmp_path, kvnet_bin_dir=kvnet_bin_dir, plugin_dir=cni_bin_dir, kube=kube) as lab:
        rec = lab.bin_dir / "recorder"
        rec.write_text(RECORDER.format(python=sys.executable))
        rec.chmod(0o755)
        (tmp_path / "records").mkdir()
        yield lab


@pytest.fixture
def standin_lab(
    netns_factory: Callable[..., Any], cni_bin_dir: str, kvnet_bin_dir: str, tmp_path: Path
) -> Iterator[PodLab]:
    """The lab on the API stand-in, for the faults a real server cannot be made to answer (5xx)."""
    node = netns_factory("kvnode")
    pod = netns_factory("kvpod")
    with PodLab(node, pod, tmp_path, kvnet_bin_dir=kvnet_bin_dir, plugin_dir=cni_bin_dir) as lab:
        yield lab


def records(lab: PodLab, command: str = "") -> list[dict[str, Any]]:
    files = sorted((lab.workdir / "records").glob(f"{command}*.json"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    return [json.loads(p.read_text()) for p in files]


def main_bridge(subnet: str = "10.60.0.0/24") -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": "main",
        "type": "bridge",
        "bridge": "kvt-main",
        "isGateway": True,
        "isDefaultGateway": True,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]]},
    }


def addrs(lab: PodLab) -> dict[str, list[str]]:
    return {
        link["ifname"]: [f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", []) if a["family"] == "inet"]
        for link in lab.pod_addresses()
    }


def routes(lab: PodLab) -> list[dict[str, Any]]:
    return json.loads(in_ns(lab.pod, IP, "-j", "route").stdout or "[]")


def dnat_rules(lab: PodLab) -> list[str]:
    """The node's NAT rules that DNAT (portmap's), as ``iptables -S`` prints them."""
    return [r for r in in_ns(lab.node, "iptables", "-t", "nat", "-S").stdout.splitlines() if "-j DNAT" in r]


def ifb_links(lab: PodLab) -> list[str]:
    return [
        link["ifname"] for link in json.loads(in_ns(lab.node, IP, "-j", "link", "show", "type", "ifb").stdout or "[]")
    ]


def qdisc_kinds(lab: PodLab) -> list[str]:
    """The kinds of every qdisc in the node netns (``tc -j qdisc show``)."""
    return [q["kind"] for q in json.loads(in_ns(lab.node, "tc", "-j", "qdisc", "show").stdout or "[]")]


def test_real_chain_through_nads_and_clean_del(lab: PodLab) -> None:
    lab.add_nad(
        "blue",
        {
            "cniVersion": "1.0.0",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "kvt-blue",
                    "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.61.0.0/24"}]]},
                },
                {"type": "tuning", "sysctl": {"net.ipv4.conf.blue0.arp_notify": "1"}},
            ],
        },
    )
    in_ns(lab.node, IP, "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink1")
    in_ns(lab.node, IP, "link", "set", "uplink0", "up")
    lab.add_nad(
        "mv",
        {
            "cniVersion": "1.0.0",
            "type": "macvlan",
            "master": "uplink0",
            "mode": "bridge",
            "capabilities": {"ips": True},
            "ipam": {"type": "static"},
        },
    )
    lab.add_nad(
        "pp",
        {
            "cniVersion": "0.4.0",
            "type": "ptp",
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.63.0.0/24"}]]},
        },
    )
    uid = lab.add_pod(
        "web",
        json.dumps([{"name": "blue", "interface": "blue0"}, {"name": "mv", "ips": ["10.62.0.9/24"]}, {"name": "pp"}]),
    )
    conf = lab.config([main_bridge()])
    rc, result, err = lab.cni("ADD", conf, container="ctr1", pod="web", uid=uid)
    assert rc == 0, (result, err)
    # the main network's result, in the config's version
    assert result["cniVersion"] == "1.0.0"
    assert [i["name"] for i in result["interfaces"] if i.get("sandbox")] == ["eth0"]
    assert [ip["address"] for ip in result["ips"]] == ["10.60.0.2/24"]
    # links and addresses in the pod, named eth0 / requested / net<position>
    assert addrs(lab) == {
        "lo": ["127.0.0.1/8"],
        "eth0": ["10.60.0.2/24"],
        "blue0": ["10.61.0.2/24"],
        "net2": ["10.62.0.9/24"],
        "net3": ["10.63.0.2/24"],
    }
    assert in_ns(lab.pod, "cat", "/proc/sys/net/ipv4/conf/blue0/arp_notify").stdout.strip() == "1"
    got = {(r["dst"], r.get("gateway"), r["dev"]) for r in routes(lab)}
    assert ("default", "10.60.0.1", "eth0") in got and ("10.63.0.0/24", "10.63.0.1", "net3") in got
    # network-status through the API stand-in
    status = lab.status("web")
    assert [(s["name"], s["interface"], s["ips"], s.get("default", False)) for s in status] == [
        ("main", "eth0", ["10.60.0.2"], True),
        ("default/blue", "blue0", ["10.61.0.2"], False),
        ("default/mv", "net2", ["10.62.0.9"], False),
        ("default/pp", "net3", ["10.63.0.2"], False),
    ]
    assert all(s["dns"] == {} for s in status)
    # the cache is Multus's format, and CHECK passes on the real plugins
    cached = json.loads((lab.cni_dir / "ctr1").read_text())
    assert [d["Name"] for d in cached] == ["main", "default/blue", "default/mv", "default/pp"]
    assert lab.leftovers()["host-local leases"] != []
    rc, out, err = lab.cni("CHECK", conf, container="ctr1", pod="web", uid=uid)
    assert rc == 0, (out, err)

    rc, out, err = lab.cni("DEL", conf, container="ctr1", pod="web", uid=uid)
    assert rc == 0 and out is None, (out, err)
    assert lab.leftovers() == {"pod links": [], "host-local leases": [], "cache files": []}
    # DEL leaves network-status as ADD wrote it (Multus's CmdDel never writes it)
    assert lab.status("web") == status
    # DEL twice is fine
    rc, out, err = lab.cni("DEL", conf, container="ctr1", pod="web", uid=uid)
    assert rc == 0, (out, err)


def test_portmap_bandwidth_and_what_delegates_receive(lab: PodLab) -> None:
    lab.add_nad(
        "svc",
        {
            "cniVersion": "1.0.0",
            "plugins": [
                {"type": "ptp", "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.64.0.0/24"}]]}},
                {"type": "portmap", "capabilities": {"portMappings": True}},
                {"type": "bandwidth", "capabilities": {"bandwidth": True}},
            ],
        },
    )
    lab.add_nad(
        "rec",
        {
            "cniVersion": "1.0.0",
            "type": "recorder",
            "recordDir": str(lab.workdir / "records"),
            "capabilities": {"mac": True},
        },
    )
    sel = [
        {
            "name": "svc",
            "portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}],
            "bandwidth": {"ingressRate": 1000000, "ingressBurst": 100000, "egressRate": 1000000, "egressBurst": 100000},
        },
        {"name": "rec", "mac": "02:00:00:00:00:42", "ips": ["10.9.9.9/24"], "cni-args": {"logicNetworkName": "blue"}},
    ]
    uid = lab.add_pod("svc", json.dumps(sel))
    conf = lab.config([main_bridge("10.65.0.0/24")])
    rc, result, err = lab.cni("ADD", conf, container="ctr2", pod="svc", uid=uid)
    assert rc == 0, (result, err)
    nat = in_ns(lab.node, "iptables", "-t", "nat", "-S").stdout
    assert "--dport 18080" in nat and "10.64.0.2:80" in nat
    assert dnat_rules(lab) != []
    # bandwidth: tbf on the host veth (ingress), an ingress qdisc redirecting to an ifb
    # device with its own tbf (egress)
    kinds = qdisc_kinds(lab)
    assert "tbf" in kinds and "ingress" in kinds
    assert ifb_links(lab) != []
    # what the recording delegate got: env, args.cni, only the capabilities it declared
    (rec,) = records(lab, "ADD")
    assert rec["env"]["CNI_IFNAME"] == "net2" and rec["env"]["CNI_NETNS"] == lab.pod.path
    assert rec["env"]["CNI_CONTAINERID"] == "ctr2"
    assert rec["env"]["CNI_ARGS"] == (
        f"IgnoreUnknown=true;K8S_POD_NAMESPACE=default;K8S_POD_NAME=svc;K8S_POD_INFRA_CONTAINER_ID=ctr2;K8S_POD_UID={uid};"
        f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=svc;K8S_POD_INFRA_CONTAINER_ID=ctr2;K8S_POD_UID={uid};"
        "MAC=02:00:00:00:00:42;IP=10.9.9.9/24"
    )
    assert rec["stdin"]["args"] == {"cni": {"logicNetworkName": "blue"}}
    assert rec["stdin"]["runtimeConfig"] == {"mac": "02:00:00:00:00:42"}
    assert rec["stdin"]["name"] == "rec" and rec["stdin"]["cniVersion"] == "1.0.0"

    rc, out, err = lab.cni("DEL", conf, container="ctr2", pod="svc", uid=uid)
    assert rc == 0, (out, err)
    assert "18080" not in in_ns(lab.node, "iptables", "-t", "nat", "-S").stdout
    # nothing of portmap's or bandwidth's is left on the node
    assert dnat_rules(lab) == []
    assert ifb_links(lab) == []
    assert {"tbf", "ingress"} & set(qdisc_kinds(lab)) == set()
    assert lab.leftovers() == {"pod links": [], "host-local leases": [], "cache files": []}
    assert [r["env"]["CNI_IFNAME"] for r in records(lab, "DEL")] == ["net2"]
    # DEL gets no MAC=/IP= (only Multus's DelegateAdd appends them)
    (deleted,) = records(lab, "DEL")
    assert deleted["env"]["CNI_ARGS"] == rec["env"]["CNI_ARGS"].removesuffix(";MAC=02:00:00:00:00:42;IP=10.9.9.9/24")


def test_rollback_after_failing_third_delegate_leaves_nothing(lab: PodLab) -> None:
    lab.add_nad(
        "blue",
        {
            "cniVersion": "1.0.0",
            "type": "bridge",
            "bridge": "kvt-blue",
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.66.0.0/24"}]]},
        },
    )
    lab.add_nad(
        "bad", {"cniVersion": "1.0.0", "type": "recorder", "recordDir": str(lab.workdir / "records"), "fail": True}
    )
    lab.add_nad("never", {"cniVersion": "1.0.0", "type": "recorder", "recordDir": str(lab.workdir / "records")})
    uid = lab.add_pod("web", "blue,bad,never")
    conf = lab.config([main_bridge("10.67.0.0/24")])
    rc, out, _err = lab.cni("ADD", conf, container="ctr3", pod="web", uid=uid)
    assert rc == 1
    assert out["code"] == 7
    assert out["msg"] == (
        # the delegate's error as libcni reports it for a single conf (its msg as it is)
        f'[default/web/{uid}:bad]: error adding container to network "bad": recorder told to fail'
    )
    # only the delegate cache is left (Multus's CmdAdd keeps it for the runtime's DEL)
    assert lab.leftovers() == {"pod links": [], "host-local leases": [], "cache files": ["ctr3"]}
    # the failed delegate was deleted too, the fourth never ran, no veth left on the node
    assert [r["env"]["CNI_IFNAME"] for r in records(lab, "DEL")] == ["net2"]
    assert [r["env"]["CNI_IFNAME"] for r in records(lab, "ADD")] == ["net2"]
    node_links = json.loads(in_ns(lab.node, IP, "-j", "link", "show", "type", "veth").stdout)
    assert [link["ifname"] for link in node_links] == [lab.node_veth]
    assert lab.status("web") is None
    # the runtime's DEL deletes every delegate of the cache, the one that never ran too
    rc, out, err = lab.cni("DEL", conf, container="ctr3", pod="web", uid=uid)
    assert rc == 0, (out, err)
    assert [r["env"]["CNI_IFNAME"] for r in records(lab, "DEL")] == ["net2", "net3", "net2"]
    assert lab.leftovers() == {"pod links": [], "host-local leases": [], "cache files": []}


def test_del_with_api_down(lab: PodLab) -> None:
    lab.add_nad(
        "blue",
        {
            "cniVersion": "1.0.0",
            "type": "bridge",
            "bridge": "kvt-blue",
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.68.0.0/24"}]]},
        },
    )
    uid = lab.add_pod("web", "blue")
    conf = lab.config([main_bridge("10.69.0.0/24")])
    rc, out, err = lab.cni("ADD", conf, container="ctr4", pod="web", uid=uid)
    assert rc == 0, (out, err)
    assert addrs(lab)["net1"] == ["10.68.0.2/24"]
    lab.api_down()
    t0 = time.monotonic()
    rc, out, err = lab.cni("DEL", conf, container="ctr4", pod="web", uid=uid)
    assert rc == 0, (out, err)
    assert time.monotonic() - t0 < 30
    assert lab.leftovers() == {"pod links": [], "host-local leases": [], "cache files": []}


def test_pod_not_found_is_an_empty_success(lab: PodLab) -> None:
    conf = lab.config([main_bridge("10.70.0.0/24")])
    rc, out, err = lab.cni("ADD", conf, container="ctr5", pod="ghost")
    assert rc == 0, err
    assert out == {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": lab.pod.path}],
        "ips": [{"address": "0.0.0.0/0", "gateway": "0.0.0.0"}],
    }
    assert lab.leftovers() == {"pod links": [], "host-local leases": [], "cache files": []}


def test_hanging_delegate_killed_at_timeout_and_rolled_back(lab: PodLab) -> None:
    lab.add_nad(
        "slow", {"cniVersion": "1.0.0", "type": "recorder", "recordDir": str(lab.workdir / "records"), "hang": 60}
    )
    uid = lab.add_pod("web", "slow")
    conf = lab.config([main_bridge("10.71.0.0/24")], delegateTimeout=2)
    t0 = time.monotonic()
    rc, out, err = lab.cni("ADD", conf, container="ctr6", pod="web", uid=uid)
    took = time.monotonic() - t0
    assert rc == 1 and took < 20, (out, err)
    assert out["msg"].startswith(f'[default/web/{uid}:slow]: error adding container to network "slow": ')
    assert out["msg"].endswith('plugin type="recorder" failed (add): timed out after 2s and was killed')
    assert lab.leftovers() == {"pod links": [], "host-local leases": [], "cache files": ["ctr6"]}
    assert [r["env"]["CNI_IFNAME"] for r in records(lab, "DEL")] == ["net1"]
    rc, out, err = lab.cni("DEL", conf, container="ctr6", pod="web", uid=uid)
    assert rc == 0, (out, err)
    assert lab.leftovers() == {"pod links": [], "host-local leases": [], "cache files": []}


def test_bad_annotation_is_a_config_error_and_leaves_nothing(lab: PodLab) -> None:
    uid = lab.add_pod("web", '[{"name": "x", "interface": "way-too-long-name0"}]')
    conf = lab.config([main_bridge("10.72.0.0/24")])
    rc, out, err = lab.cni("ADD", conf, container="ctr7", pod="web", uid=uid)
    assert rc == 1 and out["code"] == 7, (out, err)
    assert out["msg"].startswith("kvnet: [default/web/" + uid + "]: error loading k8s delegates k8s args: ")
    assert lab.leftovers() == {"pod links": [], "host-local leases": [], "cache files": []}


def test_multus_name_and_config(lab: PodLab) -> None:
    """Installed as ``multus`` with a Multus config (type multus, clusterNetwork from confDir)."""
    (lab.bin_dir / "multus").symlink_to(os.readlink(lab.bin_dir / "kvnet-cni"))
    conf_dir = lab.workdir / "conf"
    conf_dir.mkdir()
    (conf_dir / "10-main.conf").write_text(
        json.dumps(
            {
                **main_bridge("10.73.0.0/24"),
                "ipam": {"type": "host-local", "dataDir": str(lab.data_dir), "ranges": [[{"subnet": "10.73.0.0/24"}]]},
            }
        )
    )
    uid = lab.add_pod("web")
    conf = {
        "cniVersion": "0.3.1",
        "name": "multus-cni-network",
        "type": "multus",
        "kubeconfig": str(lab.kubeconfig),
        "clusterNetwork": "main",
        "confDir": str(conf_dir),
        "cniDir": str(lab.cni_dir),
        "binDir": str(lab.bin_dir),
    }
    rc, out, err = lab.cni("ADD", conf, container="ctr8", pod="web", uid=uid, binary="multus")
    assert rc == 0, (out, err)
    assert out["cniVersion"] == "0.3.1" and out["ips"][0]["address"] == "10.73.0.2/24"
    rc, out, err = lab.cni("DEL", conf, container="ctr8", pod="web", uid=uid, binary="multus")
    assert rc == 0, (out, err)
    assert lab.leftovers() == {"pod links": [], "host-local leases": [], "cache files": []}


def test_status_and_gc_on_the_main_network(lab: PodLab) -> None:
    ready = lab.workdir / "ready"
    uid = lab.add_pod("web")
    conf = lab.config([main_bridge("10.77.0.0/24")], cniVersion="1.1.0", readinessindicatorfile=str(ready))
    rc, out, err = lab.cni("STATUS", conf, container="", pod="")
    assert rc == 1 and out["code"] == 50 and "does not exist" in out["msg"], (out, err)
    ready.write_text("")
    rc, out, err = lab.cni("STATUS", conf, container="", pod="")
    assert rc == 0 and out is None, (out, err)
    rc, out, err = lab.cni("ADD", conf, container="ctr9", pod="web", uid=uid)
    assert rc == 0, (out, err)
    # GC takes every cached attachment as valid, whatever the runtime lists (Multus's
    # CmdGC, gatherValidAttachmentsFromCache): nothing is torn down
    for valid in ([{"containerID": "ctr9", "ifname": "eth0"}], []):
        rc, out, err = lab.cni("GC", {**conf, "cni.dev/valid-attachments": valid}, container="", pod="")
        assert rc == 0, (out, err)
        assert "eth0" in lab.pod_links() and lab.leftovers()["host-local leases"] != []
    rc, out, err = lab.cni("DEL", conf, container="ctr9", pod="web", uid=uid)
    assert rc == 0, (out, err)
    assert lab.leftovers() == {"pod links": [], "host-local leases": [], "cache files": []}


def test_default_route_moves_to_the_selected_network(lab: PodLab) -> None:
    lab.add_nad(
        "blue",
        {
            "cniVersion": "1.0.0",
            "type": "bridge",
            "bridge": "kvt-blue",
            "isGateway": True,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": "10.78.0.0/24", "gateway": "10.78.0.1"}]],
                "routes": [{"dst": "0.0.0.0/0"}],
            },
        },
    )
    uid = lab.add_pod("web", '[{"name": "blue", "default-route": ["10.78.0.1"]}]')
    conf = lab.config([main_bridge("10.79.0.0/24")])
    rc, result, err = lab.cni("ADD", conf, container="ctr10", pod="web", uid=uid)
    assert rc == 0, (result, err)
    defaults = [(r.get("gateway"), r["dev"]) for r in routes(lab) if r["dst"] == "default"]
    assert defaults == [("10.78.0.1", "net1")]
    # the main network's result no longer claims the default route
    assert all(r.get("dst") != "0.0.0.0/0" for r in result.get("routes", []))
    # network-status is made from each delegate's own result, as Multus's
    # CreateNetworkStatuses(tmpResult): the main network's gateway, and blue's default
    # route that host-local gave without a gateway (Go prints it <nil>)
    status = lab.status("web")
    assert [s.get("gateway") for s in status] == [["10.79.0.1"], ["<nil>"]]
    # libcni's cached results as Multus's DeleteDefaultGWCache / AddDefaultGWCache leave
    # them, so DEL's prevResult is Multus's
    cached = {p.name: json.loads(p.read_text())["result"].get("routes") for p in (lab.cni_dir / "results").iterdir()}
    assert cached == {"main-ctr10-eth0": None, "blue-ctr10-net1": [{"dst": "0.0.0.0/0", "gw": "10.78.0.1"}]}
    rc, out, err = lab.cni("DEL", conf, container="ctr10", pod="web", uid=uid)
    assert rc == 0, (out, err)
    assert lab.leftovers() == {"pod links": [], "host-local leases": [], "cache files": []}


def test_del_after_the_netns_is_gone(lab: PodLab) -> None:
    lab.add_nad(
        "blue",
        {
            "cniVersion": "1.0.0",
            "type": "bridge",
            "bridge": "kvt-blue",
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.80.0.0/24"}]]},
        },
    )
    uid = lab.add_pod("web", "blue")
    conf = lab.config([main_bridge("10.81.0.0/24")])
    rc, out, err = lab.cni("ADD", conf, container="ctr11", pod="web", uid=uid)
    assert rc == 0, (out, err)
    in_ns(lab.node, IP, "link", "show", "kvt-blue")  # the node side exists
    import subprocess

    subprocess.run([IP, "netns", "delete", lab.pod.name], check=True)  # the runtime tore the sandbox down first
    rc, out, err = lab.cni("DEL", conf, container="ctr11", pod="web", uid=uid)
    assert rc == 0, (out, err)
    assert leases(lab.data_dir) == [] and not (lab.cni_dir / "ctr11").exists()
    # the pod was not told its attachments are gone (the netns is gone, as in Multus)
    assert [s["interface"] for s in lab.status("web")] == ["eth0", "net1"]
    node_veths = json.loads(in_ns(lab.node, IP, "-j", "link", "show", "type", "veth").stdout)
    assert [link["ifname"] for link in node_veths] == [lab.node_veth]


def test_del_of_a_cache_in_older_multus_shape(lab: PodLab) -> None:
    """Multus 4.0/4.1 kept a conflist's full config only in CNINetworkConfigList (Bytes was
    lossy); DEL from such a cache still reaches host-local with its real dataDir."""
    import base64

    chain = {
        "cniVersion": "1.0.0",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "kvt-old",
                "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.84.0.0/24"}]]},
            },
            {"type": "tuning", "sysctl": {"net.ipv4.conf.net1.arp_notify": "1"}},
        ],
    }
    lab.add_nad("old", chain)
    uid = lab.add_pod("web", "old")
    conf = lab.config([main_bridge("10.85.0.0/24")])
    rc, out, err = lab.cni("ADD", conf, container="ctr12", pod="web", uid=uid)
    assert rc == 0, (out, err)
    path = lab.cni_dir / "ctr12"
    cached = json.loads(path.read_text())
    full = json.loads(base64.b64decode(cached[1]["Bytes"]))
    b64 = lambda o: base64.b64encode(json.dumps(o).encode()).decode()  # noqa: E731
    lossy = {
        "cniVersion": "1.0.0",
        "name": "old",
        "plugins": [
            {"type": "bridge", "ipam": {"type": "host-local"}, "dns": {}},
            {"type": "tuning", "ipam": {}, "dns": {}},
        ],
    }
    cached[1]["Bytes"] = b64(lossy)
    cached[1]["CNINetworkConfigList"] = {
        "Name": "old",
        "CNIVersion": "1.0.0",
        "DisableCheck": False,
        "Plugins": [{"Network": p, "Bytes": b64(full["plugins"][i])} for i, p in enumerate(lossy["plugins"])],
        "Bytes": b64(full),
    }
    path.write_text(json.dumps(cached))
    lab.api_down()  # DEL from the cache alone
    rc, out, err = lab.cni("DEL", conf, container="ctr12", pod="web", uid=uid)
    assert rc == 0, (out, err)
    assert lab.leftovers() == {"pod links": [], "host-local leases": [], "cache files": []}


def _forget_faults(standin: ApiStandIn) -> None:
    """Drop the stand-in's faults not used up (the stand-in has no call for it)."""
    with standin._lock:
        standin._faults.clear()


def test_pod_read_retried_through_server_errors(standin_lab: PodLab) -> None:
    """Multus's GetPod retries 500/503 answers (0.25 s apart, 2.5 s at most); a NAD read and
    the status write ride out transient failures for up to 5 s (kvnet.meta.k8s.RetryingApi)."""
    lab = standin_lab
    assert isinstance(lab.api, ApiStandIn)
    lab.add_nad(
        "blue",
        {
            "cniVersion": "1.0.0",
            "type": "bridge",
            "bridge": "kvt-blue",
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.86.0.0/24"}]]},
        },
    )
    uid = lab.add_pod("web", "blue")
    conf = lab.config([main_bridge("10.87.0.0/24")])
    pod_path = "/api/v1/namespaces/default/pods/web"
    lab.api.fail_next(503, method="GET", path=pod_path, times=3)
    rc, out, err = lab.cni("ADD", conf, container="ctr13", pod="web", uid=uid)
    assert rc == 0, (out, err)
    assert addrs(lab)["net1"] == ["10.86.0.2/24"]
    # three failed reads and the one that worked, then the status write's own read
    assert [r for r in lab.api.requests if r == ("GET", pod_path)][:4] == [("GET", pod_path)] * 4
    rc, out, err = lab.cni("DEL", conf, container="ctr13", pod="web", uid=uid)
    assert rc == 0, (out, err)
    # one 500 on a NAD read is ridden out (RetryingApi): the second read works
    lab.api.fail_next(500, method="GET", path="/network-attachment-definitions/blue")
    before = len(lab.api.requests)
    rc, out, err = lab.cni("ADD", conf, container="ctr14", pod="web", uid=uid)
    assert rc == 0, (out, err)
    nad_reads = [r for r in lab.api.requests[before:] if r[1].endswith("/network-attachment-definitions/blue")]
    assert nad_reads == [("GET", "/apis/k8s.cni.cncf.io/v1/namespaces/default/network-attachment-definitions/blue")] * 2
    rc, out, err = lab.cni("DEL", conf, container="ctr14", pod="web", uid=uid)
    assert rc == 0, (out, err)
    # a NAD that keeps answering 500 fails the ADD after the bound, in client-go's text, leaving nothing
    lab.api.fail_next(500, method="GET", path="/network-attachment-definitions/blue", times=100)
    t0 = time.monotonic()
    rc, out, err = lab.cni("ADD", conf, container="ctr18", pod="web", uid=uid)
    took = time.monotonic() - t0
    assert rc == 1 and out["code"] == 103 and 4.0 < took < 15, (out, err, took)
    assert out["msg"].endswith(
        "getKubernetesDelegate: cannot find a network-attachment-definition (blue) in namespace (default): "
        "Internal error occurred: injected failure"
    )
    _forget_faults(lab.api)
    # an answer Multus does not retry (429) ends the retries at once; the one more read succeeds
    lab.api.fail_next(429, method="GET", path=pod_path, times=1)
    before = len(lab.api.requests)
    rc, out, err = lab.cni("ADD", conf, container="ctr15", pod="web", uid=uid)
    assert rc == 0, (out, err)
    assert lab.api.requests[before : before + 2] == [("GET", pod_path)] * 2
    rc, out, err = lab.cni("DEL", conf, container="ctr15", pod="web", uid=uid)
    assert rc == 0, (out, err)
    assert lab.leftovers() == {"pod links": [], "host-local leases": [], "cache files": []}
    # one 500 on the status write is ridden out; one that keeps failing reads as Multus's
    # SetPodNetworkStatusAnnotation words it
    lab.api.fail_next(500, method="PUT", path="/status")
    rc, out, err = lab.cni("ADD", conf, container="ctr21", pod="web", uid=uid)
    assert rc == 0, (out, err)
    rc, out, err = lab.cni("DEL", conf, container="ctr21", pod="web", uid=uid)
    assert rc == 0, (out, err)
    lab.api.fail_next(500, method="PUT", path="/status", times=100)
    rc, out, err = lab.cni("ADD", conf, container="ctr22", pod="web", uid=uid)
    assert rc == 1 and out["code"] == 103, (out, err)
    assert out["msg"] == (
        f"kvnet: [default/web/{uid}]: error setting the networks status: SetPodNetworkStatusAnnotation: failed to "
        "update the pod web in out of cluster comm: SetNetworkStatus: failed to update the pod web in out of cluster "
        "comm: status update failed for pod default/web: Internal error occurred: injected failure"
    )
    _forget_faults(lab.api)
    rc, out, err = lab.cni("DEL", conf, container="ctr22", pod="web", uid=uid)
    assert rc == 0, (out, err)
    # a pod that keeps answering 503 fails the ADD after about 2.5 s
    lab.api.fail_next(503, method="GET", path=pod_path, times=100)
    before = len(lab.api.requests)
    t0 = time.monotonic()
    rc, out, err = lab.cni("ADD", conf, container="ctr16", pod="web", uid=uid)
    took = time.monotonic() - t0
    assert rc == 1 and out["code"] == 103 and 2.4 < took < 15, (out, err, took)
    assert out["msg"].startswith(f"kvnet: [default/web/{uid}]: error waiting for pod: ")
    # one read now, one per tick, one when the time is up, then the live query
    assert 11 <= len([r for r in lab.api.requests[before:] if r == ("GET", pod_path)]) <= 14
    assert lab.leftovers()["pod links"] == [] and not (lab.cni_dir / "ctr16").exists()


def test_del_while_the_default_network_is_not_ready(lab: PodLab) -> None:
    """Multus's CmdDel does not wait for readinessindicatorfile: the pod is torn down at once."""
    ready = lab.workdir / "ready"
    ready.write_text("")
    lab.add_nad(
        "blue",
        {
            "cniVersion": "1.0.0",
            "type": "bridge",
            "bridge": "kvt-blue",
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/24"}]]},
        },
    )
    uid = lab.add_pod("web", "blue")
    conf = lab.config([main_bridge("10.89.0.0/24")], readinessindicatorfile=str(ready))
    rc, out, err = lab.cni("ADD", conf, container="ctr17", pod="web", uid=uid)
    assert rc == 0, (out, err)
    ready.unlink()  # the default network goes down
    t0 = time.monotonic()
    rc, out, err = lab.cni("DEL", conf, container="ctr17", pod="web", uid=uid)
    assert rc == 0 and time.monotonic() - t0 < 10, (out, err)
    assert "does not exist on CNI DEL" in err
    assert lab.leftovers() == {"pod links": [], "host-local leases": [], "cache files": []}


def test_cluster_network_beside_delegates(lab: PodLab) -> None:
    """Multus's LoadNetConf ignores delegates when clusterNetwork is set: the main network
    is clusterNetwork's conf file, the inline delegate never runs."""
    conf_dir = lab.workdir / "conf"
    conf_dir.mkdir()
    (conf_dir / "10-main.conf").write_text(
        json.dumps(
            {
                **main_bridge("10.90.0.0/24"),
                "ipam": {"type": "host-local", "dataDir": str(lab.data_dir), "ranges": [[{"subnet": "10.90.0.0/24"}]]},
            }
        )
    )
    uid = lab.add_pod("web")
    conf = lab.config([main_bridge("10.91.0.0/24")], clusterNetwork="main", confDir=str(conf_dir))
    rc, out, err = lab.cni("ADD", conf, container="ctr18", pod="web", uid=uid)
    assert rc == 0, (out, err)
    assert out["ips"][0]["address"] == "10.90.0.2/24"
    assert addrs(lab)["eth0"] == ["10.90.0.2/24"]
    assert [s["name"] for s in lab.status("web") or []] == ["main"]
    rc, out, err = lab.cni("DEL", conf, container="ctr18", pod="web", uid=uid)
    assert rc == 0, (out, err)
    assert lab.leftovers() == {"pod links": [], "host-local leases": [], "cache files": []}


def test_static_pod_with_the_runtime_uid_not_the_mirror_uid(lab: PodLab) -> None:
    """A static pod: the API server holds its mirror (kubernetes.io/config.source: file),
    whose UID the server made; the runtime names the kubelet's own UID. Multus's GetPod
    accepts the mismatch for such a pod, and so does kvnet."""
    lab.add_nad(
        "blue",
        {
            "cniVersion": "1.0.0",
            "type": "bridge",
            "bridge": "kvt-blue",
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.92.0.0/24"}]]},
        },
    )
    made = lab._load(
        [
            {
                "kind": "Pod",
                "metadata": {
                    "name": "static-web",
                    "namespace": "default",
                    "annotations": {"k8s.v1.cni.cncf.io/networks": "blue", "kubernetes.io/config.source": "file"},
                },
                "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.9"}]},
            }
        ]
    )
    mirror_uid = made[0]["metadata"]["uid"]
    runtime_uid = "0f0e0d0c-0b0a-4908-8706-050403020100"
    assert mirror_uid != runtime_uid
    conf = lab.config([main_bridge("10.93.0.0/24")])
    rc, out, err = lab.cni("ADD", conf, container="ctr19", pod="static-web", uid=runtime_uid)
    assert rc == 0, (out, err)
    assert addrs(lab)["net1"] == ["10.92.0.2/24"]
    assert [s.get("interface") for s in lab.status("static-web") or []] == ["eth0", "net1"]
    rc, out, err = lab.cni("DEL", conf, container="ctr19", pod="static-web", uid=runtime_uid)
    assert rc == 0, (out, err)
    assert lab.leftovers() == {"pod links": [], "host-local leases": [], "cache files": []}
    # the same mismatch on a pod made through the API is refused
    uid = lab.add_pod("web", "blue")
    rc, out, err = lab.cni("ADD", conf, container="ctr20", pod="web", uid=runtime_uid)
    assert rc == 1 and out["code"] == 3, (out, err)
    assert out["msg"] == (
        f'kvnet: [default/web/{runtime_uid}]: expected pod UID "{runtime_uid}" but got "{uid}" from Kube API'
    )


NO_INTERFACES = """#!{python}
import json, os, sys
cmd = os.environ.get("CNI_COMMAND", "")
conf = json.loads(sys.stdin.read() or "{{}}")
if cmd == "VERSION":
    print(json.dumps({{"cniVersion": "1.0.0", "supportedVersions": ["0.3.1", "0.4.0", "1.0.0"]}}))
elif cmd == "ADD":
    print(json.dumps({{"cniVersion": conf.get("cniVersion"), "ips": [{{"address": "10.9.9.9/24"}}], "dns": {{}}}}))
"""


def test_a_result_without_interfaces_gets_no_status_entry(lab: PodLab) -> None:
    """Multus's CreateNetworkStatuses: a delegate result with IPs but no interfaces makes no
    network-status entry."""
    plugin = lab.bin_dir / "noiface"
    plugin.write_text(NO_INTERFACES.format(python=sys.executable))
    plugin.chmod(0o755)
    lab.add_nad("bare", {"cniVersion": "1.0.0", "type": "noiface"})
    uid = lab.add_pod("web", "bare")
    conf = lab.config([main_bridge("10.94.0.0/24")])
    rc, out, err = lab.cni("ADD", conf, container="ctr21", pod="web", uid=uid)
    assert rc == 0, (out, err)
    assert [(s["name"], s.get("interface")) for s in lab.status("web") or []] == [("main", "eth0")]
    rc, out, err = lab.cni("DEL", conf, container="ctr21", pod="web", uid=uid)
    assert rc == 0, (out, err)
    assert lab.leftovers() == {"pod links": [], "host-local leases": [], "cache files": []}
