"""The guest-address server on a pod the real bridge plugin and kvnet-binding made.

The "guest" is a netns joined to the in-pod bridge by a veth that carries the VM's MAC
(the original MAC of the pod link); busybox ``udhcpc`` and ``dhcpcd`` run there, the
kernel takes the router advertisement. The server runs as uid 107 with every capability
dropped (setpriv), on the tap kvnet-binding made for it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kvnet.lab import guest as lab_guest
from kvnet.lab.netns import launcher_container
from tests.netns.test_binding_real import BLUE, binding_conf, ip_json, link, run_cni, snapshot

pytestmark = pytest.mark.root

SERVER_TAP = "kvd16477688c0e"
BRIDGE = "k6t-16477688c0e"

UDHCPC_SCRIPT = """#!/bin/sh
# udhcpc hands the lease in the environment: apply it and keep what it was told.
event="$1"
case "$event" in
bound|renew)
    ip addr add "$ip/$mask" dev "$interface"
    [ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
    set -- $staticroutes
    while [ $# -ge 2 ]; do ip route replace "$1" via "$2" dev "$interface"; shift 2; done
    env | sort > "$LEASE_OUT.$event"
    ;;
esac
exit 0
"""


def dual_conf(tmp_path: Path) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": "blue-net",
        "type": "bridge",
        "bridge": "kvbr0",
        "isGateway": True,
        "mtu": 1400,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": "10.77.0.0/24"}], [{"subnet": "fd00:77::/64"}]],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.88.0.0/16"}, {"dst": "::/0"}],
            "dataDir": str(tmp_path / "ipam"),
        },
    }


@pytest.fixture
def served_pod(
    netns_factory: Callable[[str], Any], cni_bin_dir: str, kvnet_bin_dir: str, tmp_path: Path
) -> Iterator[tuple[Any, Any, dict[str, Any], str]]:
    """node + pod netns: the bridge plugin's attachment, then kvnet-binding ADD."""
    node, pod = netns_factory("kvnode"), netns_factory("kvpod")
    conf = dual_conf(tmp_path)
    rc, result = run_cni(
        f"{cni_bin_dir}/bridge", "ADD", conf, netns=pod.path, ifname=BLUE, path=cni_bin_dir, node=node.name
    )
    assert rc == 0, result
    vm_mac = snapshot(pod.name, BLUE)["mac"]
    binary = f"{kvnet_bin_dir}/kvnet-binding"
    rc, out = run_cni(binary, "ADD", binding_conf("blue"), netns=pod.path, ifname="net2", path=cni_bin_dir)
    assert rc == 0, out
    try:
        yield node, pod, result, vm_mac
    finally:
        run_cni(binary, "DEL", binding_conf("blue"), netns=pod.path, ifname="net2", path=cni_bin_dir)
        run_cni(f"{cni_bin_dir}/bridge", "DEL", conf, netns=pod.path, ifname=BLUE, path=cni_bin_dir, node=node.name)


def join_guest(guest: Any, pod: Any, name: str, mac: str) -> None:
    """A veth from the guest netns (eth0 there, with ``mac``) to a port of the in-pod bridge."""
    subprocess.run(
        ["ip", "-n", pod.name, "link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", guest.name],
        check=True,
    )
    subprocess.run(["ip", "-n", guest.name, "link", "set", "eth0", "address", mac, "up"], check=True)
    subprocess.run(["ip", "-n", guest.name, "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "-n", pod.name, "link", "set", name, "master", BRIDGE, "up"], check=True)


def start_server(pod: Any, tmp_path: Path) -> subprocess.Popen[str]:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(
        "nameserver 10.96.0.10\nnameserver fd00:96::a\nsearch default.svc.cluster.local svc.cluster.local\n"
    )
    dev = tmp_path / "dev"
    dev.mkdir()
    # As in a virt-launcher pod: /dev/net/tun 0666 (this machine's is 0600), the pod's
    # resolv.conf and hostname, every privilege dropped.
    cmd = launcher_container(
        pod.name, str(dev), str(resolv), "vm1", sys.executable, "-m", "kvnet.guestnet", "--lease-seconds", "8"
    )
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for _ in range(50):
        line = proc.stderr.readline()
        if line.startswith("serving") or not line:
            break
    assert line.strip() == f"serving {SERVER_TAP}", line
    return proc


def udhcpc(guest: Any, tmp_path: Path, *, tries: int = 4) -> dict[str, str] | None:
    script = tmp_path / "udhcpc.sh"
    script.write_text(UDHCPC_SCRIPT)
    script.chmod(0o755)
    out = tmp_path / f"lease-{guest.name}"
    cmd = [
        "ip",
        "netns",
        "exec",
        guest.name,
        "env",
        f"LEASE_OUT={out}",
        "busybox",
        "udhcpc",
        "-i",
        "eth0",
        "-f",
        "-q",
        "-n",
        "-t",
        str(tries),
        "-T",
        "1",
        "-s",
        str(script),
        "-O",
        "mtu",
        "-O",
        "staticroutes",
        "-O",
        "search",
    ]
    subprocess.run(cmd, capture_output=True, timeout=30)
    bound = Path(f"{out}.bound")
    if not bound.exists():
        return None
    return dict(line.split("=", 1) for line in bound.read_text().splitlines() if "=" in line)


def test_dhcpv4_for_the_vm_mac_only_and_ipv6_by_ra(
    served_pod: tuple[Any, Any, dict[str, Any], str], netns_factory: Callable[[str], Any], tmp_path: Path
) -> None:
    _, pod, attach, vm_mac = served_pod
    tap = link(pod.name, SERVER_TAP)
    assert tap is not None and tap["linkinfo"]["info_kind"] == "tun" and tap["master"] == BRIDGE
    v4 = next(a["address"] for a in attach["ips"] if ":" not in a["address"])
    guest, stranger = netns_factory("kvguest"), netns_factory("kvother")
    join_guest(guest, pod, "vmport", vm_mac)
    join_guest(stranger, pod, "otherport", "02:11:22:33:44:55")
    subprocess.run(["ip", "netns", "exec", guest.name, "sysctl", "-qw", "net.ipv6.conf.eth0.accept_ra=2"], check=True)
    server = start_server(pod, tmp_path)
    try:
        status = Path(f"/proc/{_child_pid(server.pid)}/status").read_text()
        assert "\nUid:\t107\t107\t107\t107\n" in status and "\nCapEff:\t0000000000000000\n" in status
        assert "\nCapPrm:\t0000000000000000\n" in status

        lease = udhcpc(guest, tmp_path)
        assert lease is not None, server_log(server)
        assert lease["ip"] == v4.split("/")[0] and lease["mask"] == "24"
        assert lease["router"] == "10.77.0.1" and lease["mtu"] == "1400" and lease["hostname"] == "vm1"
        assert lease["dns"].split() == ["10.96.0.10"] and lease["search"].split() == [
            "default.svc.cluster.local",
            "svc.cluster.local",
        ]
        assert lease["staticroutes"].split() == ["10.88.0.0/16", "10.77.0.1", "0.0.0.0/0", "10.77.0.1"]
        addrs = ip_json(guest.name, "-4", "addr", "show", "dev", "eth0")[0]
        assert addrs["mtu"] == 1400 and [f"{a['local']}/{a['prefixlen']}" for a in addrs["addr_info"]] == [v4]
        routes = {(r["dst"], r.get("gateway")) for r in ip_json(guest.name, "-4", "route", "show")}
        assert {("10.88.0.0/16", "10.77.0.1"), ("default", "10.77.0.1")} <= routes
        ping = ["ip", "netns", "exec", guest.name, "busybox", "ping", "-c", "1", "-W", "2", "10.77.0.1"]
        assert subprocess.run(ping, capture_output=True).returncode == 0  # the gateway, through the pod link

        assert udhcpc(stranger, tmp_path, tries=2) is None  # another MAC on the bridge: no answer

        # IPv6: the RA gives the prefix on-link and, once the gateway's MAC is known, a default route.
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline:
            r6 = {(r["dst"], r.get("gateway")) for r in ip_json(guest.name, "-6", "route", "show")}
            if any(dst == "default" for dst, _ in r6) and ("fd00:77::/64", None) in r6:
                break
            time.sleep(0.5)
        assert ("fd00:77::/64", None) in r6 and any(dst == "default" for dst, _ in r6), (r6, server_log(server))
    finally:
        stop(server)
    assert server.returncode == 0


def stop(server: subprocess.Popen[str]) -> str:
    """SIGTERM the server and collect its log (it exits 0 on SIGTERM)."""
    if server.poll() is None:
        server.terminate()
    if server.stderr is None or server.stderr.closed:
        server.wait(timeout=10)
        return ""
    _, err = server.communicate(timeout=10)
    return err


def _child_pid(pid: int) -> int:
    """``ip netns exec`` execs setpriv, which execs python: the same pid."""
    return pid


def server_log(server: subprocess.Popen[str]) -> str:
    return stop(server)


def test_del_removes_the_server_tap(
    served_pod: tuple[Any, Any, dict[str, Any], str], kvnet_bin_dir: str, cni_bin_dir: str
) -> None:
    _, pod, _, _ = served_pod
    assert link(pod.name, SERVER_TAP) is not None
    rc, out = run_cni(
        f"{kvnet_bin_dir}/kvnet-binding", "DEL", binding_conf("blue"), netns=pod.path, ifname="net2", path=cni_bin_dir
    )
    assert rc == 0, out
    assert link(pod.name, SERVER_TAP) is None and link(pod.name, BRIDGE) is None
    assert (
        json.loads(
            subprocess.run(
                ["ip", "-j", "-n", pod.name, "link", "show", "type", "tun"], capture_output=True, text=True, check=True
            ).stdout
            or "[]"
        )
        == []
    )


def test_dhcpv6_address_and_renewal(
    served_pod: tuple[Any, Any, dict[str, Any], str], netns_factory: Callable[[str], Any], tmp_path: Path
) -> None:
    """dhcpcd (Debian's, DHCPv6 only) gets the IPAM address; busybox udhcpc renews its 8 s lease."""
    _, pod, attach, vm_mac = served_pod
    v6 = next(a["address"] for a in attach["ips"] if ":" in a["address"])
    guest = netns_factory("kvguest")
    join_guest(guest, pod, "vmport", vm_mac)
    server = start_server(pod, tmp_path)
    script = tmp_path / "udhcpc.sh"
    script.write_text(UDHCPC_SCRIPT)
    script.chmod(0o755)
    out = tmp_path / "renewing"
    udhcpc = subprocess.Popen(  # stays in the foreground: T1 of the 8 s lease is 4 s
        [
            "ip",
            "netns",
            "exec",
            guest.name,
            "env",
            f"LEASE_OUT={out}",
            "busybox",
            "udhcpc",
            "-i",
            "eth0",
            "-f",
            "-t",
            "4",
            "-T",
            "1",
            "-s",
            str(script),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        conf = tmp_path / "dhcpcd.conf"
        conf.write_text("ipv6only\nnoipv6rs\nia_na 1\noption rapid_commit\nnohook resolv.conf\n")
        cmd = ["ip", "netns", "exec", guest.name, "timeout", "20", "dhcpcd", "-f", str(conf), "-1", "-B", "eth0"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=40)
        got = [
            a["local"]
            for a in ip_json(guest.name, "-6", "addr", "show", "dev", "eth0")[0]["addr_info"]
            if a["scope"] == "global"
        ]
        assert v6.split("/")[0] in got, (proc.stdout, proc.stderr, got, server_log(server))
        deadline = time.monotonic() + 15
        while not Path(f"{out}.renew").exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert Path(f"{out}.bound").exists() and Path(f"{out}.renew").exists(), server_log(server)
    finally:
        udhcpc.kill()
        udhcpc.wait(timeout=10)
        log = stop(server)
    assert "DHCPv6 type 1 " in log or "DHCPv6 type 3 " in log
    assert log.count("DHCPv4 type 3 ") >= 2, log  # the first REQUEST and at least one renewal


def test_the_guest_images_udhcpc_script_applies_and_reports_the_lease(
    served_pod: tuple[Any, Any, dict[str, Any], str], netns_factory: Callable[[str], Any], tmp_path: Path
) -> None:
    """The script the guest's /init runs in DHCP mode (kvnet.dhcp=1), against the server."""
    _, pod, attach, vm_mac = served_pod
    v4 = next(a["address"] for a in attach["ips"] if ":" not in a["address"])
    guest = netns_factory("kvguest")
    join_guest(guest, pod, "vmport", vm_mac)
    script = tmp_path / "kvnet-udhcpc"
    script.write_text(lab_guest.udhcpc_script())
    script.chmod(0o755)
    server = start_server(pod, tmp_path)
    try:
        cmd = [
            "ip",
            "netns",
            "exec",
            guest.name,
            "busybox",
            "udhcpc",
            "-i",
            "eth0",
            "-f",
            "-q",
            "-n",
            "-t",
            "4",
            "-T",
            "1",
            "-s",
            str(script),
            "-O",
            "mtu",
            "-O",
            "staticroutes",
            "-O",
            "search",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    finally:
        log = stop(server)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("KVNET dhcp4 ")]
    assert len(lines) == 1, (proc.stdout, proc.stderr, log)
    fields = dict(word.split("=", 1) for word in lines[0].split()[2:])
    assert fields["addr"] == v4 and fields["mtu"] == "1400" and fields["router"] == "10.77.0.1"
    assert fields["routes"] == "10.88.0.0/16@10.77.0.1+0.0.0.0/0@10.77.0.1" and fields["hostname"] == "vm1"
    assert fields["dns"] == "10.96.0.10" and fields["event"] == "bound"
    routes = {(r["dst"], r.get("gateway")) for r in ip_json(guest.name, "-4", "route", "show")}
    assert {("10.88.0.0/16", "10.77.0.1"), ("default", "10.77.0.1")} <= routes
    assert ip_json(guest.name, "-4", "addr", "show", "dev", "eth0")[0]["mtu"] == 1400


SIDECAR_PART = """
import os, sys, time
from kvnet.sidecar.main import start_guestnet, stop_guestnet
proc = start_guestnet("/sys/class/net")
time.sleep(4)
print("alive" if proc.poll() is None else f"exited {proc.returncode}", proc.pid, flush=True)
stop_guestnet(proc)
print("stopped", proc.returncode, flush=True)
"""


def test_the_sidecar_starts_the_server_and_stops_it(
    served_pod: tuple[Any, Any, dict[str, Any], str], tmp_path: Path
) -> None:
    """kvnet-sidecar's start_guestnet/stop_guestnet in the pod netns, as the sidecar
    container's uid 107: the server serves the NIC, stops with exit 0 and leaves no process."""
    _, pod, _, _ = served_pod
    dev = tmp_path / "dev"
    dev.mkdir()
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 10.96.0.10\n")
    cmd = launcher_container(pod.name, str(dev), str(resolv), "vm1")
    proc = subprocess.run([*cmd, sys.executable, "-c", SIDECAR_PART], capture_output=True, text=True, timeout=60)
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith("alive "), (proc.stdout, proc.stderr)
    assert lines[1] == "stopped 0", proc.stderr
    assert f"serving {SERVER_TAP}" in proc.stderr
    assert not Path(f"/proc/{lines[0].split()[1]}").exists()  # no process left behind
