"""Rendering: the XML per kind, escaping of every string field, and the template rules."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace
from typing import Any

import pytest

from kvnet.core.errors import RenderError, TranslationError
from kvnet.core.model import GuestBond, HostdevNic, PciAddress, TapNic, VmNicPlan
from kvnet.domain.render import environment, nic_from_element, render_nic, render_plan, render_text
from kvnet.domain.vmi import parse_vmi

EVIL = ['"/><evil/>', "'&<", "a\"b='c'", "]]><!--", "<evil a='1'>"]

TAP = TapNic(
    name="blue",
    target="tap16477688c0e",
    mac="02:00:00:00:00:01",
    mtu=1500,
    pci_address=PciAddress(0, 0, 0x0A, 0),
    acpi_index=4,
    boot_order=2,
    link_up=False,
    queues=4,
    model="virtio-non-transitional",
)
HOSTDEV = HostdevNic(
    name="vf", source=PciAddress(0, 0x81, 0x10, 1), pci_address=PciAddress(0, 0, 0x0B, 0), boot_order=3
)


def shape(elem: ET.Element) -> list[tuple[str, tuple[str, ...]]]:
    return [(e.tag, tuple(sorted(e.attrib))) for e in elem.iter()]


def test_tap_xml() -> None:
    elem = render_nic(replace(TAP, boot_order=None, link_up=True, queues=None, acpi_index=None, pci_address=None))
    assert ET.canonicalize(ET.tostring(elem, encoding="unicode"), strip_text=True) == ET.canonicalize(
        '<interface type="ethernet"><target dev="tap16477688c0e" managed="no"/><model type="virtio-non-transitional"/>'
        '<mac address="02:00:00:00:00:01"/><mtu size="1500"/><alias name="ua-blue"/><rom enabled="no"/></interface>',
        strip_text=True,
    )


def test_tap_optional_fields() -> None:
    elem = render_nic(TAP)
    assert elem.find("boot").get("order") == "2"  # type: ignore[union-attr]
    assert elem.find("rom") is None  # bootable: no <rom enabled="no">
    assert elem.find("link").get("state") == "down"  # type: ignore[union-attr]
    assert elem.find("driver").attrib == {"name": "vhost", "queues": "4"}  # type: ignore[union-attr]
    assert elem.find("acpi").get("index") == "4"  # type: ignore[union-attr]
    assert elem.find("address").attrib == {
        "type": "pci",
        "domain": "0x0000",
        "bus": "0x00",
        "slot": "0x0a",
        "function": "0x0",
    }  # type: ignore[union-attr]


def test_hostdev_xml_source_has_no_type() -> None:
    elem = render_nic(HOSTDEV)
    assert elem.attrib == {"mode": "subsystem", "type": "pci", "managed": "no"}
    assert elem.find("source/address").attrib == {"domain": "0x0000", "bus": "0x81", "slot": "0x10", "function": "0x1"}  # type: ignore[union-attr]
    assert elem.find("alias").get("name") == "ua-sriov-vf"  # type: ignore[union-attr]
    assert elem.find("address").get("type") == "pci"  # type: ignore[union-attr]
    assert elem.find("mac") is None  # the VF's MAC is programmed by sriov-cni, not libvirt


def test_round_trip() -> None:
    for nic in (TAP, HOSTDEV, replace(TAP, link_up=True, boot_order=None)):
        assert nic_from_element(render_nic(nic)) == nic


@pytest.mark.parametrize("evil", EVIL)
@pytest.mark.parametrize("field", ["name", "target", "mac", "model"])
def test_tap_injection_is_escaped(field: str, evil: str) -> None:
    baseline = shape(render_nic(TAP))
    nic = replace(TAP, **{field: evil})
    elem = render_nic(nic)
    assert shape(elem) == baseline, "an injected string added an element or attribute"
    back = nic_from_element(elem)
    assert getattr(back, field) == evil
    assert "<evil" not in [e.tag for e in elem.iter()]


@pytest.mark.parametrize("evil", EVIL)
def test_hostdev_injection_is_escaped(evil: str) -> None:
    baseline = shape(render_nic(HOSTDEV))
    elem = render_nic(replace(HOSTDEV, name=evil))
    assert shape(elem) == baseline
    assert elem.find("alias").get("name") == f"ua-sriov-{evil}"  # type: ignore[union-attr]


VMI_FIELDS: list[tuple[str, Any]] = [
    (
        "name",
        lambda v, e: (
            v["spec"]["domain"]["devices"]["interfaces"][0].update(name=e),
            v["spec"]["networks"][0].update(name=e),
        ),
    ),
    ("macAddress", lambda v, e: v["spec"]["domain"]["devices"]["interfaces"][0].update(macAddress=e)),
    ("model", lambda v, e: v["spec"]["domain"]["devices"]["interfaces"][0].update(model=e)),
    ("pciAddress", lambda v, e: v["spec"]["domain"]["devices"]["interfaces"][0].update(pciAddress=e)),
    ("state", lambda v, e: v["spec"]["domain"]["devices"]["interfaces"][0].update(state=e)),
]


@pytest.mark.parametrize("evil", EVIL)
@pytest.mark.parametrize(("field", "mutate"), VMI_FIELDS, ids=[f for f, _ in VMI_FIELDS])
def test_vmi_strings_that_reach_xml_are_rejected(field: str, mutate: Any, evil: str) -> None:
    doc = {
        "metadata": {"name": "vm"},
        "spec": {
            "networks": [{"name": "blue", "multus": {"networkName": "n"}}],
            "domain": {"devices": {"interfaces": [{"name": "blue", "binding": {"name": "kvnet"}}]}},
        },
    }
    mutate(doc, evil)
    with pytest.raises(TranslationError) as err:
        parse_vmi(doc)
    assert repr(evil) in err.value.msg


def test_autoescape_is_forced_for_xml_j2() -> None:
    env = environment()
    assert env.autoescape is True  # select_autoescape() would not escape *.xml.j2
    assert "&lt;" in env.from_string("{{ x }}").render(x="<")


def test_render_plan_skips_kubevirt_hostdevs() -> None:
    theirs = HostdevNic(
        name="sa", source=PciAddress(0, 0x81, 0x10, 2), mac="02:00:00:00:00:0a", rendered_by_kubevirt=True
    )
    plan = VmNicPlan(nics=(TAP, HOSTDEV, theirs), bonds=(GuestBond(name="bond0", members=(TAP, theirs)),))
    assert [e.find("alias").get("name") for e in render_plan(plan)] == ["ua-blue", "ua-sriov-vf"]  # type: ignore[union-attr]


def test_unknown_kind_and_foreign_elements() -> None:
    with pytest.raises(RenderError, match="no template for GuestBond"):
        render_nic(GuestBond(name="b", members=()))  # type: ignore[arg-type]
    with pytest.raises(RenderError, match="<disk> with alias 'ua-x' is not a device kvnet renders"):
        nic_from_element(ET.fromstring('<disk><alias name="ua-x"/></disk>'))


def test_render_text_is_readable() -> None:
    text = render_text(TAP)
    assert text.startswith('<interface type="ethernet">\n  <target')
