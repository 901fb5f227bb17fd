"""Port mirroring on a VM's attachment behind kvnet's binding, proven with the booted guest
(root). The VM's NAD is the conflist [bridge, kvnet-mirror]: the whole VM path on the real
API server (kvnet-cni, kvnet-binding, the sidecar, libvirtd, the guest under QEMU, KubeVirt's
part by KubeVirt's code), and while the guest is up its pings to the peer are counted on the
mirror target's far end; the run's DEL leaves no link behind (docs/mirroring.md)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest

from kvnet.lab.netns import IP, NetnsLike, in_ns
from kvnet.lab.vm.report import DemoResult
from kvnet.lab.vm.run import Up
from kvnet.lab.vm.scenario import Net, Scenario

pytestmark = [pytest.mark.root, pytest.mark.vm]

TARGET = "kvmir0"
SCENARIO = Scenario(vmi_name="vmi-mirror", nets=(Net("blue", "bridge", "kvb-mir", "10.87.0.0/24", mirror=TARGET),))


CAPTURE = f"""
table netdev kvcap {{
    chain in {{ type filter hook ingress device "{TARGET}c" priority 0; ip protocol icmp counter; }}
}}
"""


def captured(node: NetnsLike) -> int:
    """ICMP packets the target's far end has received (the copies leave through the target;
    the segment's own IPv6 chatter is mirrored too, and not counted here)."""
    listed = json.loads(in_ns(node, "nft", "-j", "list", "table", "netdev", "kvcap").stdout)
    return sum(int(e["rule"]["expr"][-1]["counter"]["packets"]) for e in listed["nftables"] if "rule" in e)


def test_a_vms_mirrored_attachment_copies_the_guests_traffic(run_vm: Callable[..., DemoResult]) -> None:
    seen: dict[str, Any] = {}

    def while_up(up: Up) -> None:
        (peer,) = SCENARIO.peers()
        subprocess.run([IP, "netns", "exec", up.ns.node.name, "nft", "-f", "-"], input=CAPTURE, text=True, check=True)
        quiet = captured(up.ns.node)
        time.sleep(2)
        seen["idle"] = captured(up.ns.node) - quiet  # no ICMP on the segment unasked
        before = captured(up.ns.node)
        seen["ping"] = up.vm.command("ping").last_ping(peer.ips[0])
        seen["copies"] = captured(up.ns.node) - before

    result = run_vm(SCENARIO, failover=False, while_up=while_up)
    why = f"{seen}\n{result.explain()}"
    assert result.error is None, why
    (row,) = result.rows
    assert row.ok and row.pings and all(ok for _, ok in row.pings), why  # the boot's own ping, mirrored or not
    # the guest's echo request and the peer's reply both crossed the attachment: both copied
    assert seen["idle"] == 0 and seen["ping"] is True and seen["copies"] >= 2, why
    assert result.leftovers == [], why
