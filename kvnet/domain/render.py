"""VM NICs → libvirt device XML, through one jinja2 template per device kind.

The only jinja2 user. Templates are dumb (substitutions, ``{% if %}`` on optional
fields); decisions live in :mod:`kvnet.domain.translate`. Autoescape is forced on for
every template (``select_autoescape`` would not escape ``*.xml.j2``), undefined names
fail loudly, and every fragment is parsed right after rendering so a broken one never
reaches a domain.
"""

from __future__ import annotations

import functools
import xml.etree.ElementTree as ET
from importlib.resources import files

import jinja2

from kvnet.core import naming
from kvnet.core.errors import RenderError
from kvnet.core.model import HostdevNic, PciAddress, TapNic, VhostUserNic, VmNic, VmNicPlan

TEMPLATES = {
    TapNic: ("interface_tap.xml.j2", "interface"),
    HostdevNic: ("hostdev_pci.xml.j2", "hostdev"),
    VhostUserNic: ("interface_vhostuser.xml.j2", "interface"),
}


@functools.cache
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(files("kvnet.templates"))),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
    )


@functools.cache
def template(name: str) -> jinja2.Template:
    """A template, compiled once per process (jinja2 would otherwise stat its file on every lookup)."""
    return environment().get_template(name)


def render_text(nic: VmNic) -> str:
    """The fragment as text (for people; :func:`render_nic` is what code uses)."""
    template_name, _ = TEMPLATES[type(nic)]
    context = {
        "nic": nic,
        "guest_pci": nic.pci_address.xml_attrs() if nic.pci_address else None,
        "source_pci": nic.source.xml_attrs() if isinstance(nic, HostdevNic) else None,
    }
    try:
        return template(template_name).render(context)
    except jinja2.TemplateError as err:
        raise RenderError(f"interface {nic.name!r}: template {template_name} failed: {err}") from None


def render_nic(nic: VmNic) -> ET.Element:
    """One ``<interface>`` or ``<hostdev>`` element for ``nic``, parsed and checked (root tag,
    alias, and a vhost-user NIC's socket path and mode)."""
    if type(nic) not in TEMPLATES:
        raise RenderError(f"no template for {type(nic).__name__}")
    text = render_text(nic)
    try:
        elem = ET.fromstring(text)
    except ET.ParseError as err:
        raise RenderError(f"interface {nic.name!r}: rendered XML does not parse: {err}") from None
    expected = TEMPLATES[type(nic)][1]
    if elem.tag != expected:
        raise RenderError(f"interface {nic.name!r}: rendered <{elem.tag}>, expected <{expected}>")
    alias = elem.find("alias")
    if alias is None or alias.get("name") != nic.alias:
        raise RenderError(f"interface {nic.name!r}: rendered alias does not match {nic.alias!r}")
    if isinstance(nic, VhostUserNic):
        source = elem.find("source")
        if source is None or (source.get("path"), source.get("mode")) != (nic.socket_path, nic.mode):
            raise RenderError(f"interface {nic.name!r}: rendered vhost-user source does not match {nic.socket_path!r}")
    return elem


def render_plan(plan: VmNicPlan) -> list[ET.Element]:
    """Elements for every NIC kvnet adds (hostdevs KubeVirt already rendered are skipped)."""
    return [render_nic(nic) for nic in plan.nics if not (isinstance(nic, HostdevNic) and nic.rendered_by_kubevirt)]


def _pci(elem: ET.Element | None) -> PciAddress | None:
    if elem is None:
        return None
    try:
        return PciAddress(*(int(elem.get(k, ""), 16) for k in ("domain", "bus", "slot", "function")))
    except ValueError:
        raise RenderError(f"malformed PCI address {elem.attrib}") from None


def _int(elem: ET.Element | None, attr: str) -> int | None:
    value = elem.get(attr) if elem is not None else None
    return int(value) if value is not None else None


def nic_from_element(elem: ET.Element) -> VmNic:
    """The guest- and host-side fields back from a rendered element (round-trip checks, tools).

    The inverse of :func:`render_nic` for everything the XML carries (not the guest IP config).
    """
    alias = (elem.find("alias").get("name") if elem.find("alias") is not None else None) or ""  # type: ignore[union-attr]
    tap_name = naming.alias_interface(alias)
    sriov_name = naming.alias_interface(alias, sriov=True)
    if elem.tag == "interface" and elem.get("type") == "ethernet" and tap_name is not None:
        target, model, mac = elem.find("target"), elem.find("model"), elem.find("mac")
        if target is None or model is None or mac is None:
            raise RenderError(f"<interface> {alias} lacks target, model or mac")
        link = elem.find("link")
        return TapNic(
            name=tap_name,
            target=target.get("dev", ""),
            mac=mac.get("address", ""),
            model=model.get("type", ""),
            mtu=_int(elem.find("mtu"), "size"),
            pci_address=_pci(elem.find("address")),
            acpi_index=_int(elem.find("acpi"), "index"),
            boot_order=_int(elem.find("boot"), "order"),
            link_up=link is None or link.get("state") != "down",
            queues=_int(elem.find("driver"), "queues"),
        )
    if elem.tag == "interface" and elem.get("type") == "vhostuser" and tap_name is not None:
        unix, model, mac = elem.find("source"), elem.find("model"), elem.find("mac")
        if unix is None or model is None:
            raise RenderError(f"<interface> {alias} lacks source or model")
        link = elem.find("link")
        return VhostUserNic(
            name=tap_name,
            socket_path=unix.get("path", ""),
            mode=unix.get("mode", ""),
            mac=mac.get("address") if mac is not None else None,
            model=model.get("type", ""),
            mtu=_int(elem.find("mtu"), "size"),
            pci_address=_pci(elem.find("address")),
            acpi_index=_int(elem.find("acpi"), "index"),
            boot_order=_int(elem.find("boot"), "order"),
            link_up=link is None or link.get("state") != "down",
            queues=_int(elem.find("driver"), "queues"),
        )
    if elem.tag == "hostdev" and sriov_name is not None:
        source = _pci(elem.find("source/address"))
        if source is None:
            raise RenderError(f"<hostdev> {alias} has no source address")
        return HostdevNic(
            name=sriov_name,
            source=source,
            pci_address=_pci(elem.find("address")),
            boot_order=_int(elem.find("boot"), "order"),
        )
    raise RenderError(f"<{elem.tag}> with alias {alias!r} is not a device kvnet renders")
