"""The domain kvnet-sidecar returns is accepted by a real libvirtd (root; its own libvirtd).

KubeVirt's part is KubeVirt's code (``kubevirt-peer``): network-info from the pod's
network-status (virt-controller), the domain from the converter with its ``sriov: {}``
hostdev (virt-launcher), and the OnDefineDomain calls of virt-launcher's hook manager. The
last answer is what virt-launcher hands libvirt; it is defined as virt-launcher defines it
(no schema validation) and then with schema validation, after two edits of KubeVirt's own
elements that libvirt 9.0's schema refuses though its parser takes them: the converter's
empty ``<bios>``, ``<baseBoard>`` and ``<chassis>`` (the schema wants an entry in each) are
dropped, and the source ``<address>`` of its ``sriov: {}`` hostdev loses ``type="pci"``
(the schema has no such attribute there; the parser ignores it). The validated domain is dumped and checked.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubevirt_code import SOCKET_FOLDER, converter_domain, kubevirt_hooks, kubevirt_network_info, network_status
from pod_inputs import PodFiles, add_bridge_binding, make_vmi

pytestmark = [pytest.mark.root, pytest.mark.libvirt]

PCI = {"type": "pci", "version": "1.1.0"}


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
    vmi = make_vmi({"red": "kvnet", "sr1": None, "sr2": "kvnet"})
    status = network_status(
        {
            "red": {"mac": "02:00:00:aa:bb:01"},
            "sr1": {"device-info": {**PCI, "pci": {"pci-address": "0000:3b:02.4"}}},
            "sr2": {"device-info": {**PCI, "pci": {"pci-address": "0000:3b:02.5"}}},
        }
    )
    info = kubevirt_network_info(vmi, status)
    pod.network_info.write_text(info)
    domain = converter_domain(vmi, json.loads(info))
    serve_kvnet(pod, folder=SOCKET_FOLDER)
    out = kubevirt_hooks(hooks_dir, vmi, domain_xml=domain)
    # four interfaces: the defining call, then one with the extra root ports, fed the first answer
    assert [c["step"] for c in out["onDefineDomain"]] == ["define", "root-ports"]
    final = out["domainXML"]
    aliases = [a.get("name") for a in ET.fromstring(final).iter("alias")]
    assert aliases.count("ua-red") == 1 and aliases.count("ua-sriov-sr2") == 1  # not added twice
    name = ET.fromstring(final).findtext("name")
    libvirtd.connection.defineXML(final)  # virt-launcher's DomainDefineXML: the bytes as they are
    libvirtd.undefine(name)
    strict = re.sub(r"\n\t\t<(bios|baseBoard|chassis)></\1>", "", final).replace(
        '<address type="pci" domain=', "<address domain="
    )
    try:
        dumped = ET.fromstring(libvirtd.define_validate(strict))
    finally:
        libvirtd.undefine(name)
    devices = dumped.find("devices")
    assert devices is not None
    nics = {el.find("alias").get("name"): el for el in devices if el.find("alias") is not None}  # type: ignore[union-attr]
    assert {"ua-default", "ua-red", "ua-sriov-sr1", "ua-sriov-sr2"} <= set(nics)
    red = nics["ua-red"]
    assert red.find("target").get("dev") == "tapb1f51a511f1"  # type: ignore[union-attr]
    assert red.find("mac").get("address") == "02:00:00:aa:bb:01"  # type: ignore[union-attr]
    assert red.find("mtu").get("size") == "1400"  # type: ignore[union-attr]
    for alias, fn in (("ua-sriov-sr1", "0x4"), ("ua-sriov-sr2", "0x5")):  # KubeVirt's, then kvnet's
        src = nics[alias].find("source/address")
        assert src is not None and (src.get("bus"), src.get("slot"), src.get("function")) == ("0x3b", "0x02", fn)
