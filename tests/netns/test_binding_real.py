"""kvnet-binding after the REAL Debian bridge and macvlan plugins, run as a runtime would.

Each test makes a "node" netns (where the attachment plugin runs, as on a node) and a
"pod" netns (CNI_NETNS), runs the attachment plugin with host-local IPAM (a temp
dataDir), then runs ``kvnet-binding`` as a subprocess with the CNI env and stdin. Traffic
is proven with a tiny "guest" that opens the tap in the pod netns and answers ARP and
ICMP echo for the guest address, so a ping from outside only succeeds if frames really
cross the bridge (MAC swap) or the tc redirect.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kvnet.core.bindrecord import server_tap_name
from kvnet.core.naming import hashed_pod_iface

pytestmark = pytest.mark.root

BLUE = hashed_pod_iface("blue")  # pod16477688c0e
RED = hashed_pod_iface("red")  # podb1f51a511f1
CID = "0123456789abcdef"

GUEST = r'''
"""A fake guest on a tap: answer ARP and ICMP echo for one IPv4 address, then exit."""
import fcntl, os, select, socket, struct, sys, time
tap, ip, mac, seconds = sys.argv[1], socket.inet_aton(sys.argv[2]), bytes.fromhex(sys.argv[3].replace(":", "")), float(sys.argv[4])
fd = os.open("/dev/net/tun", os.O_RDWR)
flags = 0x0002 | 0x1000 | (0x0100 if sys.argv[5] == "mq" else 0)  # IFF_TAP | IFF_NO_PI [| IFF_MULTI_QUEUE]
fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH", tap.encode(), flags))
print("ready", flush=True)
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF); s += s >> 16
    return struct.pack("!H", ~s & 0xFFFF)
answered = {"arp": 0, "icmp": 0}
end = time.time() + seconds
while time.time() < end:
    if not select.select([fd], [], [], 0.2)[0]:
        continue
    f = os.read(fd, 65536)
    dst, src, etype = f[0:6], f[6:12], f[12:14]
    if etype == b"\x08\x06" and f[20:22] == b"\x00\x01" and f[38:42] == ip:
        os.write(fd, src + mac + etype + f[14:20] + b"\x00\x02" + mac + ip + f[22:28] + f[28:32])
        answered["arp"] += 1
    elif etype == b"\x08\x00" and f[30:34] == ip and f[23] == 1 and f[34] == 8 and dst == mac:
        hl = (f[14] & 0x0F) * 4
        iph = f[14:24] + b"\0\0" + f[30:34] + f[26:30]
        iph = iph[:10] + csum(iph) + iph[12:]
        icmp = b"\x00\x00\x00\x00" + f[14 + hl + 4:]
        icmp = icmp[:2] + csum(icmp) + icmp[4:]
        os.write(fd, src + mac + etype + iph + f[14 + 20:14 + hl] + icmp)
        answered["icmp"] += 1
print("answered", answered["arp"], answered["icmp"], flush=True)
'''


# --- helpers -----------------------------------------------------------------------


def run_cni(
    binary: str, command: str, conf: dict[str, Any], *, netns: str, ifname: str, path: str, node: str | None = None
) -> tuple[int, dict[str, Any]]:
    """One CNI call with env + stdin as a runtime makes it (optionally inside a node netns)."""
    env = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": CID,
        "CNI_NETNS": netns,
        "CNI_IFNAME": ifname,
        "CNI_PATH": path,
        "CNI_ARGS": "IgnoreUnknown=true;K8S_POD_NAMESPACE=default;K8S_POD_NAME=virt-launcher-vm1",
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    }
    cmd = [binary] if node is None else ["ip", "netns", "exec", node, binary]
    proc = subprocess.run(cmd, input=json.dumps(conf).encode(), env=env, capture_output=True, timeout=30)
    out = json.loads(proc.stdout) if proc.stdout.strip() else {}
    return proc.returncode, out


def ip_json(ns: str, *args: str) -> Any:
    out = subprocess.run(["ip", "-j", "-n", ns, *args], check=True, capture_output=True, text=True).stdout
    return json.loads(out) if out.strip() else []


def link(ns: str, name: str) -> dict[str, Any] | None:
    proc = subprocess.run(["ip", "-j", "-d", "-n", ns, "link", "show", "dev", name], capture_output=True, text=True)
    return json.loads(proc.stdout)[0] if proc.returncode == 0 else None


def snapshot(ns: str, name: str) -> dict[str, Any]:
    """What DEL must give back: MAC, MTU, master, alias, global addresses, routes."""
    lk = link(ns, name)
    assert lk is not None, f"{name} missing in {ns}"
    addrs = sorted(
        f"{a['local']}/{a['prefixlen']}"
        for a in ip_json(ns, "addr", "show", "dev", name)[0]["addr_info"]
        if a["scope"] == "global"
    )
    routes = sorted(
        (r["dst"], r.get("gateway", ""), r.get("protocol", "boot"))
        for fam in ("-4", "-6")
        for r in ip_json(ns, fam, "route", "show", "dev", name)
        if not r["dst"].startswith(("fe80", "ff00"))
    )
    return {
        "mac": lk["address"],
        "mtu": lk["mtu"],
        "master": lk.get("master"),
        "alias": lk.get("ifalias", ""),
        "addresses": addrs,
        "routes": routes,
    }


def sysfs(ns: str, path: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", ns, "cat", path], check=True, capture_output=True, text=True
    ).stdout.strip()


def pod_facts(ns: str) -> dict[str, Any]:
    """read_pod_links() run inside the pod netns, as the sidecar would."""
    code = (
        "import json, dataclasses; from kvnet.sidecar.podfacts import read_pod_links;"
        "print(json.dumps({k: dataclasses.asdict(v) for k, v in read_pod_links().items()}))"
    )
    out = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", code], check=True, capture_output=True, text=True
    )
    facts: dict[str, Any] = json.loads(out.stdout)
    return facts


class Guest:
    """The fake guest process on a tap (killed at the end of the test in any case)."""

    def __init__(self, script: Path, ns: str, tap: str, ip: str, mac: str, mq: bool = False) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, str(script), tap, ip, mac, "20", "mq" if mq else "sq"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.strip() == "ready", self.proc.stderr.read() if self.proc.stderr else line

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=10)  # reaps it and closes the pipes


@pytest.fixture
def guest_factory(tmp_path: Path) -> Iterator[Callable[..., Guest]]:
    script = tmp_path / "guest.py"
    script.write_text(GUEST)
    started: list[Guest] = []

    def start(ns: str, tap: str, ip: str, mac: str, mq: bool = False) -> Guest:
        g = Guest(script, ns, tap, ip, mac, mq)
        started.append(g)
        return g

    yield start
    for g in started:
        g.kill()


def bridge_conf(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": "blue-net",
        "type": "bridge",
        "bridge": "kvbr0",
        "isGateway": True,
        "mtu": 1400,
        "ipam": {
            "type": "host-local",
            "subnet": "10.77.0.0/24",
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.88.0.0/16"}],
            "dataDir": str(tmp_path / "ipam"),
        },
        **extra,
    }


def binding_conf(network: str | None, **extra: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {"cniVersion": "1.0.0", "name": "kvnet-binding", "type": "kvnet-binding", **extra}
    if network is not None:
        conf["args"] = {"cni": {"logicNetworkName": network}}
    return conf


def ping(ns: str, ip: str) -> bool:
    """busybox ping (busybox-static is a test dependency; iputils may be absent)."""
    cmd = ["ip", "netns", "exec", ns, "busybox", "ping", "-c", "1", "-W", "2", ip]
    return subprocess.run(cmd, capture_output=True).returncode == 0


# --- bridge mode ---------------------------------------------------------------------


@pytest.fixture
def bridged_pod(
    netns_factory: Callable[[str], Any], cni_bin_dir: str, tmp_path: Path
) -> Iterator[tuple[Any, Any, dict[str, Any]]]:
    """A pod netns with pod<hash of blue> made by the real bridge plugin (host side in node)."""
    node, pod = netns_factory("kvnode"), netns_factory("kvpod")
    conf = bridge_conf(tmp_path)
    rc, result = run_cni(
        f"{cni_bin_dir}/bridge", "ADD", conf, netns=pod.path, ifname=BLUE, path=cni_bin_dir, node=node.name
    )
    assert rc == 0, result
    try:
        yield node, pod, result
    finally:
        run_cni(f"{cni_bin_dir}/bridge", "DEL", conf, netns=pod.path, ifname=BLUE, path=cni_bin_dir, node=node.name)


def test_bridge_mode_add_check_del(
    bridged_pod: tuple[Any, Any, dict[str, Any]],
    kvnet_bin_dir: str,
    cni_bin_dir: str,
    guest_factory: Callable[..., Guest],
) -> None:
    node, pod, attach = bridged_pod
    binary = f"{kvnet_bin_dir}/kvnet-binding"
    before = snapshot(pod.name, BLUE)
    pod_ip = attach["ips"][0]["address"]
    assert before["addresses"] == [pod_ip]
    assert ("default", "10.77.0.1", "boot") in before["routes"] and ("10.88.0.0/16", "10.77.0.1", "boot") in before[
        "routes"
    ]

    rc, result = run_cni(binary, "ADD", binding_conf("blue"), netns=pod.path, ifname="net2", path=cni_bin_dir)
    assert rc == 0, result
    assert result == {"cniVersion": "1.0.0"}  # no interfaces, no ips

    bridge, tap, pod_link = link(pod.name, "k6t-16477688c0e"), link(pod.name, "tap16477688c0e"), link(pod.name, BLUE)
    assert bridge is not None and bridge["linkinfo"]["info_kind"] == "bridge"
    assert tap is not None and tap["linkinfo"]["info_kind"] == "tun" and tap["mtu"] == 1400
    assert tap["master"] == "k6t-16477688c0e" and pod_link is not None and pod_link["master"] == "k6t-16477688c0e"
    assert sysfs(pod.name, "/sys/class/net/tap16477688c0e/owner") == "107"
    assert sysfs(pod.name, "/sys/class/net/tap16477688c0e/group") == "107"
    assert int(sysfs(pod.name, "/sys/class/net/tap16477688c0e/tun_flags"), 16) & 0x0100 == 0
    assert pod_link["linkinfo"]["info_slave_data"]["learning"] is False  # as KubeVirt: no learning on the pod port
    for l2_only in ("k6t-16477688c0e", "tap16477688c0e"):  # no IPv6 link-local: they never talk themselves
        assert ip_json(pod.name, "addr", "show", "dev", l2_only)[0]["addr_info"] == []
    new_mac = pod_link["address"]
    assert new_mac != before["mac"] and int(new_mac[:2], 16) & 0x02  # locally administered
    plumbed = snapshot(pod.name, BLUE)
    assert plumbed["addresses"] == [] and plumbed["routes"] == []

    facts = pod_facts(pod.name)
    record = facts[BLUE]["record"]
    assert record == {
        "original_mac": before["mac"],
        "mtu": 1400,
        "ip": {"addresses": [pod_ip], "gateways": ["10.77.0.1"], "routes": [["10.88.0.0/16", "10.77.0.1"]]},
        "version": 1,
    }
    assert facts["tap16477688c0e"]["kind"] == "tun" and facts["tap16477688c0e"]["multi_queue"] is False
    assert facts["k6t-16477688c0e"]["kind"] == "bridge" and facts[BLUE]["kind"] == "veth"
    assert facts[BLUE]["master"] == facts["tap16477688c0e"]["master"] == "k6t-16477688c0e"
    assert facts[BLUE]["mac"] == new_mac and facts[BLUE]["mtu"] == 1400

    # Frames for the original MAC really reach the tap: a "guest" with that MAC answers a ping.
    guest = guest_factory(pod.name, "tap16477688c0e", pod_ip.split("/")[0], before["mac"])
    assert ping(node.name, pod_ip.split("/")[0])
    guest.kill()

    rc, result = run_cni(binary, "ADD", binding_conf("blue"), netns=pod.path, ifname="net2", path=cni_bin_dir)
    assert rc == 0, result
    assert snapshot(pod.name, BLUE) == plumbed  # a second ADD changes nothing

    rc, result = run_cni(binary, "CHECK", binding_conf("blue"), netns=pod.path, ifname="net2", path=cni_bin_dir)
    assert rc == 0, result

    rc, result = run_cni(binary, "DEL", binding_conf("blue"), netns=pod.path, ifname="net2", path=cni_bin_dir)
    assert rc == 0, result
    assert snapshot(pod.name, BLUE) == before
    assert link(pod.name, "tap16477688c0e") is None and link(pod.name, "k6t-16477688c0e") is None

    rc, result = run_cni(binary, "DEL", binding_conf("blue"), netns=pod.path, ifname="net2", path=cni_bin_dir)
    assert rc == 0, result
    rc, result = run_cni(binary, "CHECK", binding_conf("blue"), netns=pod.path, ifname="net2", path=cni_bin_dir)
    assert rc == 1 and result["code"] == 104
    assert result["msg"] == "network blue: pod interface pod16477688c0e carries no kvnet binding record"


def test_multi_queue_and_owner_from_conf(
    bridged_pod: tuple[Any, Any, dict[str, Any]], kvnet_bin_dir: str, cni_bin_dir: str
) -> None:
    _, pod, _ = bridged_pod
    conf = binding_conf("blue", multiQueue=True, tapOwner={"uid": 1000, "gid": 1001})
    rc, result = run_cni(f"{kvnet_bin_dir}/kvnet-binding", "ADD", conf, netns=pod.path, ifname="net2", path=cni_bin_dir)
    assert rc == 0, result
    assert int(sysfs(pod.name, "/sys/class/net/tap16477688c0e/tun_flags"), 16) & 0x0100
    assert sysfs(pod.name, "/sys/class/net/tap16477688c0e/owner") == "1000"
    assert sysfs(pod.name, "/sys/class/net/tap16477688c0e/group") == "1001"
    assert pod_facts(pod.name)["tap16477688c0e"]["multi_queue"] is True
    rc, result = run_cni(
        f"{kvnet_bin_dir}/kvnet-binding", "CHECK", conf, netns=pod.path, ifname="net2", path=cni_bin_dir
    )
    assert rc == 0, result
    single = binding_conf("blue", tapOwner={"uid": 1000, "gid": 1001})
    rc, result = run_cni(
        f"{kvnet_bin_dir}/kvnet-binding", "CHECK", single, netns=pod.path, ifname="net2", path=cni_bin_dir
    )
    assert rc == 1 and result["msg"] == "network blue: tap tap16477688c0e multi-queue is True, expected False"


def test_log_file_gets_the_plan_once_and_stdout_only_the_result(
    bridged_pod: tuple[Any, Any, dict[str, Any]], kvnet_bin_dir: str, cni_bin_dir: str, tmp_path: Path
) -> None:
    _, pod, _ = bridged_pod
    log_file = tmp_path / "binding.log"
    conf = binding_conf("blue", logFile=str(log_file), logLevel="verbose")
    rc, result = run_cni(f"{kvnet_bin_dir}/kvnet-binding", "ADD", conf, netns=pod.path, ifname="net2", path=cni_bin_dir)
    assert (rc, result) == (0, {"cniVersion": "1.0.0"})  # json.loads of stdout: nothing else was printed
    lines = log_file.read_text().splitlines()
    plans = [line for line in lines if "ADD container" in line]
    assert len(plans) == 1
    assert f"ADD container {CID}: network blue ({BLUE}): bridge mode (auto for a veth pod link)" in plans[0]
    assert "tap tap16477688c0e mtu 1400 owner 107:107" in plans[0]


def test_failed_add_leaves_the_pod_as_the_bridge_plugin_made_it(
    bridged_pod: tuple[Any, Any, dict[str, Any]], kvnet_bin_dir: str, cni_bin_dir: str
) -> None:
    _, pod, _ = bridged_pod
    before = snapshot(pod.name, BLUE)
    pod.run("ip", "link", "add", "tap16477688c0e", "type", "veth", "peer", "name", "squatter")
    rc, result = run_cni(
        f"{kvnet_bin_dir}/kvnet-binding", "ADD", binding_conf("blue"), netns=pod.path, ifname="net2", path=cni_bin_dir
    )
    assert rc == 1 and result["code"] == 7
    assert result["msg"] == "link tap16477688c0e exists in the pod netns and is a veth link, not a tun"
    assert snapshot(pod.name, BLUE) == before
    assert link(pod.name, "k6t-16477688c0e") is None


def test_missing_logic_network_name(
    bridged_pod: tuple[Any, Any, dict[str, Any]], kvnet_bin_dir: str, cni_bin_dir: str
) -> None:
    _, pod, _ = bridged_pod
    rc, result = run_cni(
        f"{kvnet_bin_dir}/kvnet-binding", "ADD", binding_conf(None), netns=pod.path, ifname="net2", path=cni_bin_dir
    )
    assert rc == 1 and result["code"] == 7
    assert "args.cni.logicNetworkName is missing" in result["msg"]


def test_del_with_the_netns_gone(netns_factory: Callable[[str], Any], kvnet_bin_dir: str, cni_bin_dir: str) -> None:
    pod = netns_factory("kvpod")
    path = pod.path
    subprocess.run(["ip", "netns", "delete", pod.name], check=True)
    rc, result = run_cni(
        f"{kvnet_bin_dir}/kvnet-binding", "DEL", binding_conf("blue"), netns=path, ifname="net2", path=cni_bin_dir
    )
    assert (rc, result) == (0, {})


def test_no_pod_link_is_a_vfio_vf_nothing_to_do(netns: Any, kvnet_bin_dir: str, cni_bin_dir: str) -> None:
    rc, result = run_cni(
        f"{kvnet_bin_dir}/kvnet-binding",
        "ADD",
        binding_conf("sriov-net"),
        netns=netns.path,
        ifname="net2",
        path=cni_bin_dir,
    )
    assert (rc, result) == (0, {"cniVersion": "1.0.0"})
    assert [lk["ifname"] for lk in ip_json(netns.name, "link", "show")] == ["lo"]


# --- redirect mode (macvlan) ----------------------------------------------------------


def test_macvlan_gets_redirect_and_traffic_crosses(
    netns_factory: Callable[[str], Any],
    kvnet_bin_dir: str,
    cni_bin_dir: str,
    tmp_path: Path,
    guest_factory: Callable[..., Guest],
) -> None:
    node, pod, peer = netns_factory("kvnode"), netns_factory("kvpod"), netns_factory("kvpeer")
    node.run("ip", "link", "add", "uplink0", "type", "veth", "peer", "name", "peer0", "netns", peer.name)
    node.run("ip", "link", "set", "uplink0", "up")
    peer.run("ip", "addr", "add", "10.66.0.1/24", "dev", "peer0")
    peer.run("ip", "link", "set", "peer0", "up")
    mconf = {
        "cniVersion": "1.0.0",
        "name": "red-net",
        "type": "macvlan",
        "master": "uplink0",
        "mode": "bridge",
        "ipam": {
            "type": "host-local",
            "subnet": "10.66.0.0/24",
            "rangeStart": "10.66.0.10",
            "dataDir": str(tmp_path / "ipam"),
        },
    }
    rc, attach = run_cni(
        f"{cni_bin_dir}/macvlan", "ADD", mconf, netns=pod.path, ifname=RED, path=cni_bin_dir, node=node.name
    )
    assert rc == 0, attach
    try:
        binary = f"{kvnet_bin_dir}/kvnet-binding"
        before = snapshot(pod.name, RED)
        pod_ip = attach["ips"][0]["address"].split("/")[0]
        rc, result = run_cni(binary, "ADD", binding_conf("red"), netns=pod.path, ifname="net2", path=cni_bin_dir)
        assert rc == 0, result
        assert link(pod.name, "k6t-b1f51a511f1") is None  # no bridge in redirect mode
        after = snapshot(pod.name, RED)
        assert after["mac"] == before["mac"] and after["addresses"] == [] and after["master"] is None
        filters = pod.run("tc", "filter", "show", "dev", RED, "ingress").stdout
        assert "Egress Redirect to device tapb1f51a511f1" in filters
        back = pod.run("tc", "filter", "show", "dev", "tapb1f51a511f1", "ingress").stdout
        assert f"Egress Redirect to device {RED}" in back
        facts = pod_facts(pod.name)
        assert facts[RED]["kind"] == "macvlan"
        assert facts[RED]["record"]["original_mac"] == before["mac"]
        assert facts[RED]["record"]["ip"]["addresses"] == [attach["ips"][0]["address"]]

        rc, result = run_cni(binary, "CHECK", binding_conf("red"), netns=pod.path, ifname="net2", path=cni_bin_dir)
        assert rc == 0, result

        assert not ping(peer.name, pod_ip)  # nobody behind the tap yet: the pod itself no longer answers
        peer.run("ip", "neigh", "flush", "all")  # forget the failed ARP of the ping above
        guest = guest_factory(pod.name, "tapb1f51a511f1", pod_ip, before["mac"])
        assert ping(peer.name, pod_ip)  # ARP and ICMP crossed macvlan -> tap -> macvlan
        guest.kill()

        rc, result = run_cni(binary, "DEL", binding_conf("red"), netns=pod.path, ifname="net2", path=cni_bin_dir)
        assert rc == 0, result
        assert snapshot(pod.name, RED) == before
        assert pod.run("tc", "qdisc", "show", "dev", RED).stdout.count("ingress") == 0
        assert link(pod.name, "tapb1f51a511f1") is None
        peer.run("ip", "neigh", "flush", "all")
        assert ping(peer.name, pod_ip)  # the pod answers for its address again
    finally:
        run_cni(f"{cni_bin_dir}/macvlan", "DEL", mconf, netns=pod.path, ifname=RED, path=cni_bin_dir, node=node.name)


def test_mode_override_bridge_for_veth_is_default_redirect_on_request(
    bridged_pod: tuple[Any, Any, dict[str, Any]],
    kvnet_bin_dir: str,
    cni_bin_dir: str,
    guest_factory: Callable[..., Guest],
) -> None:
    node, pod, attach = bridged_pod
    before = snapshot(pod.name, BLUE)
    conf = binding_conf("blue", mode="redirect")
    rc, result = run_cni(f"{kvnet_bin_dir}/kvnet-binding", "ADD", conf, netns=pod.path, ifname="net2", path=cni_bin_dir)
    assert rc == 0, result
    assert link(pod.name, "k6t-16477688c0e") is None
    assert snapshot(pod.name, BLUE)["mac"] == before["mac"]
    pod_ip = attach["ips"][0]["address"].split("/")[0]
    guest = guest_factory(pod.name, "tap16477688c0e", pod_ip, before["mac"])
    assert ping(node.name, pod_ip)  # redirect works over a veth too
    guest.kill()
    rc, result = run_cni(f"{kvnet_bin_dir}/kvnet-binding", "DEL", conf, netns=pod.path, ifname="net2", path=cni_bin_dir)
    assert rc == 0, result
    assert snapshot(pod.name, BLUE) == before


def test_macvtap_pod_link_is_left_alone(netns: Any, kvnet_bin_dir: str, cni_bin_dir: str) -> None:
    netns.run("ip", "link", "add", "lowr0", "type", "veth", "peer", "name", "lowr1")
    netns.run("ip", "link", "add", "link", "lowr0", "name", BLUE, "type", "macvtap")
    before = snapshot(netns.name, BLUE)
    rc, result = run_cni(
        f"{kvnet_bin_dir}/kvnet-binding", "ADD", binding_conf("blue"), netns=netns.path, ifname="net2", path=cni_bin_dir
    )
    assert (rc, result) == (0, {"cniVersion": "1.0.0"})
    assert snapshot(netns.name, BLUE) == before and link(netns.name, "tap16477688c0e") is None


# --- the netlink boundary -------------------------------------------------------------


def test_netlink_errors_become_netlink_failure_naming_link_and_netns(netns: Any) -> None:
    """Every pyroute2/OS error leaves kvnet.binding.netlink as NetlinkFailure (code 104) with its subject."""
    from kvnet.binding.netlink import NetnsMissing, RouteState, open_netns
    from kvnet.core.errors import NetlinkFailure

    with pytest.raises(NetnsMissing, match=r"^network namespace /var/run/netns/kvt-gone does not exist$"):
        with open_netns("/var/run/netns/kvt-gone"):
            pass
    with open_netns(netns.path) as ns:
        ns.create_bridge("k6t-x", mtu=1400)
        with pytest.raises(NetlinkFailure) as err:
            ns.create_bridge("k6t-x", mtu=1400)
        assert err.value.msg == f"create bridge k6t-x in netns {netns.path}: File exists (errno 17)"
        with pytest.raises(NetlinkFailure) as err:
            ns.set_mac("nothere", "02:00:00:00:00:01")
        assert err.value.msg == f"link nothere not found in netns {netns.path}"
        with pytest.raises(NetlinkFailure) as err:
            ns.add_route("k6t-x", RouteState("10.9.0.0/16", "10.1.0.1"))
        assert err.value.msg.startswith(f"add route on k6t-x (10.9.0.0/16 via 10.1.0.1) in netns {netns.path}: ")
        assert err.value.cni_code == 104
        with pytest.raises(
            NetlinkFailure, match=r"^set MTU of k6t-x \(100000\) in netns .*: Invalid argument \(errno 22\)"
        ):
            ns.set_mtu("k6t-x", 100000)
        ns.delete_link("k6t-x")
        ns.delete_link("k6t-x")  # already gone: fine
        assert ns.link("k6t-x") is None


# --- more shapes: dual stack, ordinal names, two attachments --------------------------


def test_dual_stack_record_and_exact_restore(
    netns_factory: Callable[[str], Any], kvnet_bin_dir: str, cni_bin_dir: str, tmp_path: Path
) -> None:
    node, pod = netns_factory("kvnode"), netns_factory("kvpod")
    conf = bridge_conf(tmp_path)
    conf["ipam"] = {
        "type": "host-local",
        "ranges": [[{"subnet": "10.77.0.0/24"}], [{"subnet": "fd77::/64"}]],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
        "dataDir": str(tmp_path / "ipam"),
    }
    rc, attach = run_cni(
        f"{cni_bin_dir}/bridge", "ADD", conf, netns=pod.path, ifname=BLUE, path=cni_bin_dir, node=node.name
    )
    assert rc == 0, attach
    try:
        binary = f"{kvnet_bin_dir}/kvnet-binding"
        before = snapshot(pod.name, BLUE)
        assert len(before["addresses"]) == 2
        rc, result = run_cni(binary, "ADD", binding_conf("blue"), netns=pod.path, ifname="net2", path=cni_bin_dir)
        assert rc == 0, result
        plumbed = snapshot(pod.name, BLUE)
        assert plumbed["addresses"] == [] and plumbed["routes"] == []
        ip = pod_facts(pod.name)[BLUE]["record"]["ip"]
        assert sorted(ip["addresses"]) == sorted(a["address"] for a in attach["ips"])
        assert sorted(ip["gateways"]) == ["10.77.0.1", "fd77::1"]
        rc, result = run_cni(binary, "DEL", binding_conf("blue"), netns=pod.path, ifname="net2", path=cni_bin_dir)
        assert rc == 0, result
        assert snapshot(pod.name, BLUE) == before
    finally:
        run_cni(f"{cni_bin_dir}/bridge", "DEL", conf, netns=pod.path, ifname=BLUE, path=cni_bin_dir, node=node.name)


def test_ordinal_pod_interface(
    netns_factory: Callable[[str], Any], kvnet_bin_dir: str, cni_bin_dir: str, tmp_path: Path
) -> None:
    """An older pod: the attachment is net1, the binding entry right after it is net2."""
    node, pod = netns_factory("kvnode"), netns_factory("kvpod")
    conf = bridge_conf(tmp_path)
    rc, attach = run_cni(
        f"{cni_bin_dir}/bridge", "ADD", conf, netns=pod.path, ifname="net1", path=cni_bin_dir, node=node.name
    )
    assert rc == 0, attach
    try:
        before = snapshot(pod.name, "net1")
        binary = f"{kvnet_bin_dir}/kvnet-binding"
        rc, result = run_cni(binary, "ADD", binding_conf("blue"), netns=pod.path, ifname="net2", path=cni_bin_dir)
        assert rc == 0, result
        assert link(pod.name, "tap1") is not None and link(pod.name, "k6t-net1") is not None
        assert snapshot(pod.name, "net1")["master"] == "k6t-net1"
        rc, result = run_cni(binary, "DEL", binding_conf("blue"), netns=pod.path, ifname="net2", path=cni_bin_dir)
        assert rc == 0, result
        assert snapshot(pod.name, "net1") == before and link(pod.name, "tap1") is None
    finally:
        run_cni(f"{cni_bin_dir}/bridge", "DEL", conf, netns=pod.path, ifname="net1", path=cni_bin_dir, node=node.name)


def test_two_attachments_are_independent(
    netns_factory: Callable[[str], Any], kvnet_bin_dir: str, cni_bin_dir: str, tmp_path: Path
) -> None:
    node, pod = netns_factory("kvnode"), netns_factory("kvpod")
    blue = bridge_conf(tmp_path)
    red = {**bridge_conf(tmp_path), "name": "red-net", "bridge": "kvbr1", "mtu": 1500}
    red["ipam"] = {"type": "host-local", "subnet": "10.78.0.0/24", "dataDir": str(tmp_path / "ipam")}
    for conf, ifname in ((blue, BLUE), (red, RED)):
        rc, out = run_cni(
            f"{cni_bin_dir}/bridge", "ADD", conf, netns=pod.path, ifname=ifname, path=cni_bin_dir, node=node.name
        )
        assert rc == 0, out
    try:
        binary = f"{kvnet_bin_dir}/kvnet-binding"
        before_blue = snapshot(pod.name, BLUE)
        for network, ifname in (("blue", "net2"), ("red", "net4")):
            rc, result = run_cni(binary, "ADD", binding_conf(network), netns=pod.path, ifname=ifname, path=cni_bin_dir)
            assert rc == 0, result
        assert link(pod.name, "tapb1f51a511f1")["mtu"] == 1500  # type: ignore[index]
        assert link(pod.name, "tap16477688c0e")["mtu"] == 1400  # type: ignore[index]
        red_plumbed = snapshot(pod.name, RED)
        rc, result = run_cni(binary, "DEL", binding_conf("blue"), netns=pod.path, ifname="net2", path=cni_bin_dir)
        assert rc == 0, result
        assert snapshot(pod.name, BLUE) == before_blue
        assert snapshot(pod.name, RED) == red_plumbed and link(pod.name, "k6t-b1f51a511f1") is not None
        rc, result = run_cni(binary, "CHECK", binding_conf("red"), netns=pod.path, ifname="net4", path=cni_bin_dir)
        assert rc == 0, result
    finally:
        for conf, ifname in ((red, RED), (blue, BLUE)):
            run_cni(
                f"{cni_bin_dir}/bridge", "DEL", conf, netns=pod.path, ifname=ifname, path=cni_bin_dir, node=node.name
            )


# --- under the kvnet meta-plugin, as KubeVirt asks for it -------------------------------


def test_under_kvnet_meta_plugin_with_kubevirt_annotation(
    netns_factory: Callable[[str], Any], kvnet_bin_dir: str, cni_bin_dir: str, tmp_path: Path, kube: Any
) -> None:
    """The networks annotation KubeVirt writes for `binding: {name: kvnet}`: the attachment
    with interface pod<hash>, then the binding NAD with cni-args.logicNetworkName."""
    from kvnet.lab.pod_demo import PodLab

    node, pod = netns_factory("kvnode"), netns_factory("kvpod")
    with PodLab(node, pod, tmp_path, kvnet_bin_dir=kvnet_bin_dir, plugin_dir=cni_bin_dir, kube=kube) as lab:
        lab.add_nad(
            "blue-net",
            {
                "cniVersion": "1.0.0",
                "type": "bridge",
                "bridge": "kvt-blue",
                "isGateway": True,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.64.0.0/24"}]]},
            },
        )
        lab.add_nad("kvnet-binding", {"cniVersion": "1.0.0", "type": "kvnet-binding"})
        networks = [
            {"name": "blue-net", "namespace": "default", "interface": BLUE},
            {"name": "kvnet-binding", "namespace": "default", "cni-args": {"logicNetworkName": "blue"}},
        ]
        uid = lab.add_pod("virt-launcher-vm1", json.dumps(networks))
        conf = lab.config([{"cniVersion": "1.0.0", "name": "main", "type": "loopback"}])
        rc, result, err = lab.cni("ADD", conf, container="ctr1", pod="virt-launcher-vm1", uid=uid)
        assert rc == 0, (result, err)
        # the NIC has IPAM, so beside the VM's tap the binding made the guest-address server's
        served = ["k6t-16477688c0e", "tap16477688c0e", server_tap_name(BLUE)]
        assert sorted(lab.pod_links()) == sorted(["lo", BLUE, *served])
        status = lab.status("virt-launcher-vm1")
        assert status is not None
        by_name = {s["name"]: s for s in status}
        assert by_name["default/blue-net"]["interface"] == BLUE and by_name["default/blue-net"]["ips"] == ["10.64.0.2"]
        assert "interface" not in by_name.get("default/kvnet-binding", {})  # the binding reports no interface
        record = pod_facts(pod.name)[BLUE]["record"]
        assert record["original_mac"] == by_name["default/blue-net"]["mac"]
        assert record["ip"]["addresses"] == ["10.64.0.2/24"]
        # No pod-wide CHECK here: the bridge plugin's own CHECK compares the pod link with its
        # cached result (MAC, addresses), which the binding moved on purpose (docs/binding.md).
        rc, out, err = lab.cni("DEL", conf, container="ctr1", pod="virt-launcher-vm1", uid=uid)
        assert rc == 0, (out, err)
        assert lab.leftovers() == {"pod links": [], "host-local leases": [], "cache files": []}


def test_sidecar_view_needs_no_privilege(
    bridged_pod: tuple[Any, Any, dict[str, Any]], kvnet_bin_dir: str, cni_bin_dir: str
) -> None:
    """read_pod_links() as uid 107 with no capabilities (the sidecar of a non-root VMI)
    sees the same links, kinds and record as root does."""
    _, pod, _ = bridged_pod
    rc, result = run_cni(
        f"{kvnet_bin_dir}/kvnet-binding", "ADD", binding_conf("blue"), netns=pod.path, ifname="net2", path=cni_bin_dir
    )
    assert rc == 0, result
    unprivileged = [
        "setpriv",
        "--reuid",
        "107",
        "--regid",
        "107",
        "--clear-groups",
        "--inh-caps",
        "-all",
        "--bounding-set",
        "-all",
    ]
    probe = subprocess.run(
        [*unprivileged, sys.executable, "-c", "import kvnet.sidecar.podfacts"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        pytest.skip(f"this checkout or its venv is not readable by uid 107: {probe.stderr.strip()[-200:]}")
    code = (
        "import json, dataclasses; from kvnet.sidecar.podfacts import read_pod_links;"
        "print(json.dumps({k: dataclasses.asdict(v) for k, v in read_pod_links().items()}))"
    )
    out = subprocess.run(
        ["ip", "netns", "exec", pod.name, *unprivileged, sys.executable, "-c", code],
        check=True,
        capture_output=True,
        text=True,
    )
    assert json.loads(out.stdout) == pod_facts(pod.name)
