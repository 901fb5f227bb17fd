"""The guest image in DHCP mode (``kvnet.dhcp=1``, no network data on the command line)
against kvnet-guestnet as uid 107 without capabilities: QEMU's NIC and the server's tap
are ports of one bridge, whose own addresses are the gateway's; the server reads the
binding record from a link's ifalias, as in a virt-launcher pod."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kvnet.core import bindrecord
from kvnet.core.model import BindingRecord, GuestIpConfig
from kvnet.lab import guest
from kvnet.lab.netns import launcher_container
from tests.vm.test_guest_boot import Qemu

pytestmark = [pytest.mark.root, pytest.mark.vm]

MAC = "02:6b:76:00:00:d1"
NICS = {"blue": ("tapblue", "k6t-blue", MAC)}
RECORD = BindingRecord(
    MAC,
    1400,
    GuestIpConfig(("10.77.0.5/24", "fd00:77::5/64"), ("10.77.0.1", "fd00:77::1"), (("10.99.0.0/16", "10.77.0.1"),)),
)


def test_guest_gets_address_routes_mtu_and_ipv6_router_by_dhcp(
    guest_image: guest.GuestImage, netns_factory: Callable[[str], Any], tmp_path: Path
) -> None:
    ns = netns_factory("kvt-vmdhcp")
    run = ns.run
    run("ip", "link", "add", "k6t-blue", "type", "bridge")
    run("ip", "link", "set", "k6t-blue", "mtu", "1400")
    run("ip", "addr", "add", "10.77.0.1/24", "dev", "k6t-blue")
    run("ip", "addr", "add", "fd00:77::1/64", "dev", "k6t-blue", "nodad")
    run("ip", "link", "set", "k6t-blue", "up")
    run("ip", "tuntap", "add", "tapblue", "mode", "tap")
    run("ip", "link", "set", "tapblue", "mtu", "1400", "master", "k6t-blue", "up")
    run("ip", "tuntap", "add", "kvdblue", "mode", "tap", "user", "107", "group", "107")
    run("ip", "link", "set", "kvdblue", "mtu", "1400", "master", "k6t-blue", "up")
    run("ip", "link", "add", "podblue", "type", "veth", "peer", "name", "podpeer")  # carries the record
    run("ip", "link", "set", "podblue", "alias", bindrecord.encode(RECORD))
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 10.96.0.10\n")
    dev = tmp_path / "dev"
    dev.mkdir()
    server = subprocess.Popen(
        launcher_container(ns.name, str(dev), str(resolv), "vm1", sys.executable, "-m", "kvnet.guestnet"),
        stderr=subprocess.PIPE,
        text=True,
    )
    vm = Qemu(ns.name, guest_image, "kvnet.dhcp=1 kvnet.ping=10.77.0.1+fd00:77::1", tmp_path, nics=NICS)
    try:
        report = vm.wait(lambda r: r.has("pings-done"), 150, "boot, take DHCP and ping")
    finally:
        vm.stop()
        server.terminate()
        _, log = server.communicate(timeout=10)
    text = (tmp_path / "console.log").read_text()
    dhcp = [e for e in report.events if e.kind == "dhcp4"]
    assert len(dhcp) == 1, (text, log)
    got = dhcp[0].fields
    assert got["addr"] == "10.77.0.5/24" and got["mtu"] == "1400" and got["hostname"] == "vm1", text
    assert got["routes"] == "10.99.0.0/16@10.77.0.1+0.0.0.0/0@10.77.0.1", text
    dhcp6 = [e for e in report.events if e.kind == "dhcp6"]
    assert [e.get("addrs") for e in dhcp6] == ["fd00:77::5/128"], (text, log)
    ra = [e for e in report.events if e.kind == "ra6"]
    assert ra and "fd00:77::/64" in ra[0].get("routes") and "default@" in ra[0].get("routes"), (text, log)
    link = report.link_by_mac(MAC)
    assert link is not None and link.mtu == 1400 and "10.77.0.5/24" in link.addrs, text
    assert report.last_ping("10.77.0.1") is True and report.last_ping("fd00:77::1") is True, text
    assert "DHCPv4 type 3" in log and server.returncode == 0, log
