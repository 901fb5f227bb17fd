"""The domain kvnet-sidecar returns is accepted by a real libvirtd (root; its own libvirtd).

virt-launcher hands the sidecar's bytes to libvirt as they are, so the test defines
exactly what the virt-launcher-like client got back, with schema validation.
"""

from __future__ import annotations

import os
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pod_inputs import KUBEVIRT_DOMAIN, PodFiles, add_bridge_binding, make_vmi, network_info

from kvnet.lab.launcher import LauncherClient

pytestmark = [pytest.mark.root, pytest.mark.libvirt]

SRIOV_HOSTDEV = """\t\t<hostdev mode="subsystem" type="pci" managed="no">
\t\t\t<source>
\t\t\t\t<address domain="0x0000" bus="0x3b" slot="0x02" function="0x4"></address>
\t\t\t</source>
\t\t\t<alias name="ua-sriov-sr1"></alias>
\t\t</hostdev>
"""


@pytest.fixture(scope="module")
def libvirtd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if os.geteuid() != 0:
        pytest.skip("needs root to run a private libvirtd")
    if shutil.which("libvirtd") is None:
        pytest.skip("libvirtd is not installed (apt-get install libvirt-daemon-system)")
    from kvnet.lab.libvirtd import Libvirtd

    with Libvirtd(str(tmp_path_factory.mktemp("libvirtd"))) as daemon:
        yield daemon


def test_returned_domain_defines_on_libvirt(libvirtd: Any, serve_kvnet: Any, hooks_dir: Path, pod: PodFiles) -> None:
    add_bridge_binding(pod.sys_class_net, "red", original_mac="02:00:00:aa:bb:01", mtu=1400)
    pod.network_info.write_text(
        network_info(
            {
                "red": {},
                "sr2": {"deviceInfo": {"type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:3b:02.5"}}},
            }
        )
    )
    serve_kvnet(pod)
    client = LauncherClient(hooks_dir)
    client.collect(1)
    domain = KUBEVIRT_DOMAIN.replace("\t</devices>", SRIOV_HOSTDEV + "\t</devices>")  # a sriov: {} NIC KubeVirt added
    out = client.on_define_domain(domain, make_vmi({"red": "kvnet", "sr1": None, "sr2": "kvnet"}))
    name = ET.fromstring(out).findtext("name")
    try:
        dumped = ET.fromstring(libvirtd.define_validate(out))
    finally:
        libvirtd.undefine(name)
    nics = {el.find("alias").get("name"): el for el in dumped.find("devices") if el.find("alias") is not None}  # type: ignore[union-attr]
    assert {"ua-default", "ua-red", "ua-sriov-sr1", "ua-sriov-sr2"} <= set(nics)
    red = nics["ua-red"]
    assert red.find("target").get("dev") == "tapb1f51a511f1"  # type: ignore[union-attr]
    assert red.find("mac").get("address") == "02:00:00:aa:bb:01"  # type: ignore[union-attr]
    assert red.find("mtu").get("size") == "1400"  # type: ignore[union-attr]
    src = nics["ua-sriov-sr2"].find("source/address")
    assert src is not None and (src.get("bus"), src.get("slot"), src.get("function")) == ("0x3b", "0x02", "0x5")
