"""Golden XML and guest network data per case, compared by meaning (canonical XML).

Each ``tests/golden/<case>/`` holds the inputs ``kvnet render`` takes (``vmi.yaml``, and
when the case needs them ``pod-links.json``, ``network-info.json``, ``domain.xml``) and
the expected outputs ``expected.xml`` and ``expected-network-data.yaml`` (absent when
the guest needs nothing). ``pytest tests/unit/test_golden.py --regen-golden`` rewrites them.
"""

from __future__ import annotations

import argparse
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from kvnet.commands.render import render_outputs
from kvnet.domain.render import nic_from_element, render_nic

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "vmi.yaml").is_file())
REQUIRED = {"bridge", "sriov", "bond-vfs", "bond-taps", "eight-mixed", "multiqueue", "all-fields", "ordinal", "macvtap"}


def case_args(case: Path) -> argparse.Namespace:
    def opt(name: str) -> str | None:
        return str(case / name) if (case / name).is_file() else None

    return argparse.Namespace(
        vm=str(case / "vmi.yaml"),
        nads=[],
        network_info=opt("network-info.json"),
        pod_links=opt("pod-links.json"),
        domain=opt("domain.xml"),
        binding_name="kvnet",
        only=None,
    )


def canonical(text: str) -> str:
    return ET.canonicalize(xml_data=text, strip_text=True)


def test_every_required_case_exists() -> None:
    assert set(CASES) >= REQUIRED


@pytest.mark.parametrize("name", CASES)
def test_golden(name: str, regen_golden: bool) -> None:
    case = GOLDEN / name
    xml_text, network_data = render_outputs(case_args(case))
    expected_xml, expected_nd = case / "expected.xml", case / "expected-network-data.yaml"
    if regen_golden:
        expected_xml.write_text(xml_text.rstrip("\n") + "\n")
        if network_data is None:
            expected_nd.unlink(missing_ok=True)
        else:
            expected_nd.write_text(network_data)
    assert canonical(xml_text) == canonical(expected_xml.read_text())
    if network_data is None:
        assert not expected_nd.exists(), f"{name}: the code gives no network data but {expected_nd.name} exists"
    else:
        assert yaml.safe_load(network_data) == yaml.safe_load(expected_nd.read_text())


def _devices(xml_text: str) -> list[ET.Element]:
    root = ET.fromstring(xml_text)
    devices = root if root.tag == "devices" else root.find("devices")
    assert devices is not None
    return [e for e in devices if e.tag in ("interface", "hostdev")]


@pytest.mark.parametrize("name", CASES)
def test_render_parse_render(name: str) -> None:
    """Every device kvnet rendered parses back to the same NIC, which renders to the same XML."""
    case = GOLDEN / name
    xml_text, _ = render_outputs(case_args(case))
    theirs = (
        {ET.tostring(e) for e in _devices((case / "domain.xml").read_text())}
        if (case / "domain.xml").exists()
        else set()
    )
    for elem in _devices(xml_text):
        if ET.tostring(elem) in theirs:
            continue  # KubeVirt's own device, passed through untouched
        again = render_nic(nic_from_element(elem))
        assert canonical(ET.tostring(again, encoding="unicode")) == canonical(ET.tostring(elem, encoding="unicode"))


def test_bond_vfs_leaves_kubevirt_hostdevs_alone() -> None:
    """The bond of two sriov: {} VFs adds nothing to the domain: KubeVirt rendered the hostdevs."""
    case = GOLDEN / "bond-vfs"
    xml_text, network_data = render_outputs(case_args(case))
    assert canonical(xml_text) == canonical((case / "domain.xml").read_text())
    assert network_data is not None
    bond = yaml.safe_load(network_data)["bonds"]["bond0"]
    assert bond["interfaces"] == ["sriov-a", "sriov-b"]
    assert bond["parameters"] == {
        "mode": "active-backup",
        "mii-monitor-interval": 100,
        "fail-over-mac-policy": "active",
    }


def test_eight_mixed_has_eight_nics_in_order() -> None:
    xml_text, _ = render_outputs(case_args(GOLDEN / "eight-mixed"))
    aliases = [e.find("alias").get("name") for e in _devices(xml_text)]  # type: ignore[union-attr]
    assert aliases == ["ua-n1", "ua-n2", "ua-n3", "ua-sriov-n4", "ua-sriov-n5", "ua-n6", "ua-n7", "ua-n8"]
