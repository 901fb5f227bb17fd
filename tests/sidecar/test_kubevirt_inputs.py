"""The KubeVirt inputs the in-process sidecar tests use are KubeVirt's own (``kubevirt-peer``).

``KUBEVIRT_DOMAIN`` (kubevirt/vmi-kvnet.xml) is the converter's domain for ``make_vmi()``;
``KVNET_WRITE_KUBEVIRT_INPUTS=1`` rewrites it from the peer. The network-info the fixtures
write (``pod_inputs.network_info``) is byte for byte what virt-controller writes for that
pod's network-status.
"""

from __future__ import annotations

import json
import os

from kubevirt_code import (
    CONVERTER_DOMAIN_FILE,
    converter_domain,
    kubevirt_cr,
    kubevirt_network_info,
    network_status,
    peer,
)
from pod_inputs import KUBEVIRT_DOMAIN, NETWORK_INFO_EMPTY, make_vmi, network_info

from kvnet.domain.networkinfo import parse_network_info

PCI = {"type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:3b:02.4"}}


def test_the_committed_domain_is_the_converters() -> None:
    made = converter_domain(make_vmi())
    if os.environ.get("KVNET_WRITE_KUBEVIRT_INPUTS") == "1":
        CONVERTER_DOMAIN_FILE.write_text(made + "\n")
    assert made == KUBEVIRT_DOMAIN
    # kvnet's interfaces are not in it (no domainAttachmentType): the same domain for any of them
    assert converter_domain(make_vmi({"red": "kvnet", "blue": "kvnet"})) == made


def test_fixture_network_info_reads_as_kubevirts() -> None:
    vmi = make_vmi({"red": "kvnet", "blue": "kvnet", "sr1": None})
    status = network_status({"red": {"mac": "02:00:00:aa:bb:01"}, "blue": {}, "sr1": {"device-info": PCI}})
    theirs = kubevirt_network_info(vmi, status)
    ours = network_info({"red": {"mac": "02:00:00:aa:bb:01"}, "blue": {}, "sr1": {"deviceInfo": PCI}})
    assert theirs == ours  # byte for byte: Go's compact json.Marshal, the same order
    assert parse_network_info(theirs) == parse_network_info(ours)


def test_without_device_info_entries_kubevirt_writes_no_network_info() -> None:
    """No ``sriov: {}`` interface and a binding without ``downwardAPI``: no annotation, so the
    downward-API file stays empty, which is the fixtures' NETWORK_INFO_EMPTY."""
    cr = kubevirt_cr()
    del cr["spec"]["configuration"]["network"]["binding"]["kvnet"]["downwardAPI"]
    vmi = make_vmi({"red": "kvnet"})
    out = json.loads(peer("network-info", {"vmi": vmi, "kubevirt": cr, "networkStatus": network_status({"red": {}})}))
    assert "kubevirt.io/network-info" not in out["annotations"] and out["networkInfo"] is None
    assert NETWORK_INFO_EMPTY == ""
