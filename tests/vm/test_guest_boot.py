"""The guest image on its own: QEMU (TCG, q35, the uncompressed kernel) with taps in a
network namespace, no libvirt. Proves the guest's side of the contract: every NIC
reported with its MAC, the network data applied (rename, MTU, addresses, a bond), pings
answered by peers on the node bridges, and an active-backup failover when the active
member's link goes down from the host (QEMU's ``set_link``, what ``virsh domif-setlink``
does)."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kvnet.lab import console, guest

pytestmark = [pytest.mark.root, pytest.mark.vm]

NICS = {  # device id: (tap, bridge, mac)
    "blue": ("tapblue", "brblue", "02:6b:76:00:00:0a"),
    "m1": ("tapm1", "brbond", "02:6b:76:00:00:b1"),
    "m2": ("tapm2", "brbond", "02:6b:76:00:00:b2"),
}
PEERS = {"brblue": "10.77.0.1/24", "brbond": "10.78.0.1/24"}
NETWORK_DATA = {
    "version": 2,
    "ethernets": {
        "blue": {
            "match": {"macaddress": NICS["blue"][2]},
            "set-name": "blue",
            "mtu": 1400,
            "addresses": ["10.77.0.5/24"],
            "routes": [{"to": "10.99.0.0/16", "via": "10.77.0.1"}],
        },
        "m1": {"match": {"macaddress": NICS["m1"][2]}, "set-name": "m1"},
        "m2": {"match": {"macaddress": NICS["m2"][2]}, "set-name": "m2"},
        "ghost": {"match": {"macaddress": "02:6b:76:00:00:ff"}, "addresses": ["10.79.0.5/24"]},  # no such NIC
    },
    "bonds": {
        "bond0": {
            "interfaces": ["m1", "m2"],
            "parameters": {"mode": "active-backup", "mii-monitor-interval": 100},
            "addresses": ["10.78.0.5/24"],
        }
    },
}


class Qemu:
    """One QEMU guest in a netns: console file, command channel, HMP monitor."""

    def __init__(
        self,
        ns: str,
        image: guest.GuestImage,
        cmdline: str,
        workdir: Path,
        nics: dict[str, tuple[str, str, str]] = NICS,
    ) -> None:
        self.console = workdir / "console.log"
        self.channel = workdir / "cmd.sock"
        self.monitor = workdir / "mon.sock"
        argv = [
            "ip",
            "netns",
            "exec",
            ns,
            "qemu-system-x86_64",
            "-M",
            "q35",
            "-accel",
            "tcg",
            "-m",
            "256",
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
            "-kernel",
            str(image.kernel),
            "-initrd",
            str(image.initrd),
            "-append",
            image.cmdline(cmdline),
            "-serial",
            f"file:{self.console}",
            "-serial",
            f"unix:{self.channel},server=on,wait=off",
            "-monitor",
            f"unix:{self.monitor},server=on,wait=off",
        ]
        for dev, (tap, _, mac) in nics.items():
            argv += [
                "-netdev",
                f"tap,id=n-{dev},ifname={tap},script=no,downscript=no",
                "-device",
                f"virtio-net-pci-non-transitional,netdev=n-{dev},id={dev},mac={mac}",
            ]
        self.log = (workdir / "qemu.log").open("wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        self.seq = 0

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait(self, done: Callable[[console.GuestReport], bool], timeout: float, what: str) -> console.GuestReport:
        report = console.wait_for(self.console, done, timeout, alive=self.alive)
        assert report is not None, f"guest did not {what} within {timeout:.0f} s\n{console.tail(self.console)}"
        return report

    def _unix(self, path: Path, data: bytes) -> None:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(path))
            s.sendall(data)
            time.sleep(0.2)

    def command(self, cmd: str, timeout: float = 30) -> console.GuestReport:
        self.seq += 1
        seq = str(self.seq)
        self._unix(self.channel, f"{cmd} {seq}\n".encode())
        return self.wait(lambda r: r.has("done", seq=seq), timeout, f"answer {cmd!r}")

    def hmp(self, line: str) -> None:
        self._unix(self.monitor, line.encode() + b"\n")

    def stop(self) -> None:
        if self.alive():
            self.proc.kill()
        self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture
def node(netns_factory: Callable[[str], Any]) -> Iterator[str]:
    ns = netns_factory("kvt-vmboot")
    for bridge, peer in PEERS.items():
        ns.run("ip", "link", "add", bridge, "type", "bridge")
        ns.run("ip", "addr", "add", peer, "dev", bridge)
        ns.run("ip", "link", "set", bridge, "up")
    for tap, bridge, _ in NICS.values():
        ns.run("ip", "tuntap", "add", tap, "mode", "tap")
        ns.run("ip", "link", "set", tap, "master", bridge, "up")
    ns.run("ip", "link", "set", "tapblue", "mtu", "1400")
    yield ns.name


def test_guest_boots_reports_nics_applies_data_and_fails_over(
    guest_image: guest.GuestImage, node: str, tmp_path: Path
) -> None:
    cmdline = guest.network_cmdline(NETWORK_DATA, peers=["10.77.0.1", "10.78.0.1"], stay=90)
    vm = Qemu(node, guest_image, cmdline, tmp_path)
    try:
        report = vm.wait(lambda r: r.has("ready"), 90, "boot and report ready")
        log = console.tail(vm.console)
        assert sorted(n.mac for n in report.nics) == sorted(mac for _, _, mac in NICS.values()), log
        # the one ethernet whose MAC no NIC has is reported, nothing else went wrong
        assert [dict(e.fields) for e in report.errors] == [
            {"what": "match", "id": "ghost", "mac": "02:6b:76:00:00:ff"}
        ], log
        blue = report.links["blue"]
        assert (blue.mac, blue.mtu, blue.addrs) == (NICS["blue"][2], 1400, ("10.77.0.5/24",)), log
        assert report.links["bond0"].addrs == ("10.78.0.5/24",), log
        bond = report.bonds["bond0"]
        assert bond.mode == "active-backup" and set(bond.slaves) == {"m1", "m2"} and bond.active in ("m1", "m2"), log
        assert report.pings == (("10.77.0.1", True), ("10.78.0.1", True)), log

        first = bond.active
        vm.hmp(f"set_link {first} off")
        deadline = time.monotonic() + 20
        while True:
            report = vm.command("status")
            if report.bonds["bond0"].active not in (first, None) or time.monotonic() > deadline:
                break
        log = console.tail(vm.console)
        assert report.bonds["bond0"].active == ({"m1", "m2"} - {first}).pop(), log
        assert report.last_ping("10.78.0.1") is True, log

        vm.command("poweroff")
        vm.proc.wait(timeout=30)
        assert console.read(vm.console).has("poweroff"), console.tail(vm.console)
    finally:
        vm.stop()
