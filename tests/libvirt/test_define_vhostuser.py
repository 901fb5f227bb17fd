"""vhost-user NICs pass libvirt's schema and define, with validation, on a real libvirtd.

The golden case tests/golden/vhost-user (two vhost-user NICs, one per device-info mode,
beside a tap NIC and KubeVirt's masquerade interface) is spliced as the sidecar splices it,
shared memory included, then validated, defined, dumped and checked field by field. No
backend listens on the sockets: defining does not open them (starting would).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from kvnet.commands.render import render_outputs
from kvnet.core.model import PciAddress, VhostUserNic
from kvnet.domain.render import render_nic
from kvnet.domain.splice import splice
from kvnet.lab.libvirtd import Libvirtd

pytestmark = [pytest.mark.root, pytest.mark.libvirt]

CASE = Path(__file__).resolve().parents[1] / "golden" / "vhost-user"


def golden_domain(name: str) -> str:
    args = argparse.Namespace(
        vm=str(CASE / "vm.yaml"),
        nads=[],
        network_info=str(CASE / "network-info.json"),
        pod_links=str(CASE / "pod-links.json"),
        domain=str(CASE / "domain.xml"),
        binding_name="kvnet",
        only=None,
    )
    xml_text, _ = render_outputs(args)
    root = ET.fromstring(xml_text)
    root.find("name").text = name  # type: ignore[union-attr]
    return ET.tostring(root, encoding="unicode")


def _vhost_users(root: ET.Element) -> dict[str, ET.Element]:
    return {
        dev.find("alias").get("name", ""): dev  # type: ignore[union-attr]
        for dev in root.iterfind("devices/interface")
        if dev.get("type") == "vhostuser" and dev.find("alias") is not None
    }


def _pci(elem: ET.Element | None) -> tuple[int, ...] | None:
    if elem is None:
        return None
    return tuple(int(elem.get(k, "-1"), 16) for k in ("domain", "bus", "slot", "function"))


def test_golden_domain_passes_the_schema(tmp_path: Path) -> None:
    if shutil.which("virt-xml-validate") is None:
        pytest.skip("virt-xml-validate is not installed (apt-get install libvirt-clients libxml2-utils)")
    path = tmp_path / "domain.xml"
    path.write_text(golden_domain("golden-vhost-user"))
    done = subprocess.run(["virt-xml-validate", str(path), "domain"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr + done.stdout


def test_golden_domain_defines_with_validation(libvirtd: Libvirtd) -> None:
    name = "golden-vhost-user"
    ours = golden_domain(name)
    want = _vhost_users(ET.fromstring(ours))
    assert sorted(want) == ["ua-dpdk-a", "ua-dpdk-b"]
    try:
        dumped = ET.fromstring(libvirtd.define_validate(ours))
        access = dumped.find("memoryBacking/access")
        assert access is not None and access.get("mode") == "shared"
        got = _vhost_users(dumped)
        assert sorted(got) == sorted(want)
        for alias, mine in want.items():
            dev = got[alias]
            assert dev.find("source").attrib == {  # type: ignore[union-attr]
                "type": "unix",
                "path": mine.find("source").get("path"),  # type: ignore[union-attr]
                "mode": mine.find("source").get("mode"),  # type: ignore[union-attr]
            }, alias
            assert dev.find("model").get("type") == mine.find("model").get("type")  # type: ignore[union-attr]
            assert dev.find("mac").get("address") == mine.find("mac").get("address")  # type: ignore[union-attr]
            for tag, attr in (
                ("mtu", "size"),
                ("driver", "queues"),
                ("boot", "order"),
                ("acpi", "index"),
                ("link", "state"),
            ):
                if mine.find(tag) is not None:
                    assert dev.find(tag) is not None and dev.find(tag).get(attr) == mine.find(tag).get(attr), (
                        alias,
                        tag,
                    )  # type: ignore[union-attr]
            if mine.find("address") is not None:
                assert _pci(dev.find("address")) == _pci(mine.find("address"))
        assert got["ua-dpdk-a"].find("source").get("mode") == "server"  # type: ignore[union-attr]
        assert got["ua-dpdk-b"].find("source").get("mode") == "client"  # type: ignore[union-attr]
        tap = [d for d in dumped.iterfind("devices/interface") if d.find("target") is not None]
        assert [d.find("target").get("dev") for d in tap] == ["tap16477688c0e"]  # type: ignore[union-attr]
    finally:
        libvirtd.undefine(name)
    assert name not in {d.name() for d in libvirtd.connection.listAllDomains()}


@pytest.mark.parametrize("mode", ["server", "client"])
def test_a_minimal_nic_defines_and_libvirt_keeps_its_socket(
    libvirtd: Libvirtd, base_domain: Callable[..., str], mode: str
) -> None:
    """No MAC (libvirt picks one), no queues: the least kvnet writes, in a base domain without memoryBacking."""
    name = f"vhost-user-{mode}"
    nic = VhostUserNic(
        name="dpdk", socket_path=f"/var/run/vhu/{mode}.sock", mode=mode, pci_address=PciAddress(0, 0, 0x0C, 0)
    )
    xml = splice(base_domain(name, memory_mib=128), [render_nic(nic)])
    try:
        dumped = ET.fromstring(libvirtd.define_validate(xml))
        (dev,) = _vhost_users(dumped).values()
        assert dev.find("source").attrib == {"type": "unix", "path": nic.socket_path, "mode": mode}  # type: ignore[union-attr]
        assert dev.find("mac") is not None  # libvirt chose one
        assert _pci(dev.find("address")) == (0, 0, 0x0C, 0)
        assert dumped.find("memoryBacking/access").get("mode") == "shared"  # type: ignore[union-attr]
    finally:
        libvirtd.undefine(name)
