"""Rendered tap NICs start under QEMU: libvirtd in the pod netns, taps made as the binding does.

No guest is booted (the VM lane does that): QEMU runs with no boot device, which is
enough to prove that libvirt opens each tap and macvtap kvnet targets with ``managed="no"``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kvnet.core.model import TapNic
from kvnet.domain.render import render_nic
from kvnet.domain.splice import splice
from kvnet.lab.libvirtd import Libvirtd

pytestmark = [pytest.mark.root, pytest.mark.libvirt]


@pytest.fixture
def pod_libvirtd(netns: Any, tmp_path: Path) -> Iterator[tuple[Any, Libvirtd]]:
    if not Path("/dev/net/tun").exists():
        pytest.skip("/dev/net/tun is missing: no taps on this host")
    daemon = Libvirtd(str(tmp_path / "libvirtd"), netns=netns.name)
    try:
        daemon.start(timeout=60)
        yield netns, daemon
    finally:
        daemon.stop()


def test_tap_and_macvtap_nics_start(pod_libvirtd: tuple[Any, Libvirtd], base_domain: Callable[..., str]) -> None:
    ns, daemon = pod_libvirtd
    ns.run("ip", "tuntap", "add", "dev", "tap16477688c0e", "mode", "tap")
    ns.run("ip", "link", "set", "tap16477688c0e", "mtu", "1450", "up")
    ns.run("ip", "link", "add", "pod1-veth", "type", "veth", "peer", "name", "pod1-peer")
    ns.run("ip", "link", "add", "link", "pod1-veth", "name", "pode32c04ddf04", "type", "macvtap", "mode", "passthru")
    ns.run("ip", "link", "set", "pod1-veth", "up")
    ns.run("ip", "link", "set", "pode32c04ddf04", "up")
    mac_of_macvtap = ns.run("cat", "/sys/class/net/pode32c04ddf04/address").stdout.strip()
    nics = [
        TapNic(name="blue", target="tap16477688c0e", mac="0a:58:0a:01:00:05", mtu=1450),
        TapNic(name="mvt", target="pode32c04ddf04", mac=mac_of_macvtap, mtu=1500, model="e1000e"),
    ]
    xml = splice(base_domain("start-taps"), [render_nic(n) for n in nics])
    daemon.define_validate(xml)
    try:
        daemon.start_domain("start-taps")
        state = daemon.virsh("domstate", "start-taps").stdout.strip()
        assert state == "running", daemon.domain_log("start-taps").read_text()
        live = ET.fromstring(daemon.virsh("dumpxml", "start-taps").stdout)
        targets = {i.find("alias").get("name"): i.find("target").get("dev") for i in live.iter("interface")}  # type: ignore[union-attr]
        assert targets == {"ua-blue": "tap16477688c0e", "ua-mvt": "pode32c04ddf04"}
        # QEMU holds the tap open: the kernel now reports a carrier on it
        assert ns.run("cat", "/sys/class/net/tap16477688c0e/carrier").stdout.strip() == "1"
    finally:
        daemon.undefine("start-taps")
    assert daemon.virsh("list", "--all", "--name").stdout.strip() == ""
