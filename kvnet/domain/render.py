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

from kvnet.errors import RenderError
from kvnet.model import HostdevNic, TapNic, VmNic, VmNicPlan

TEMPLATES = {TapNic: ("interface_tap.xml.j2", "interface"), HostdevNic: ("hostdev_pci.xml.j2", "hostdev")}


@functools.cache
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(files("kvnet.templates"))),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
    )


def render_text(nic: VmNic) -> str:
    """The fragment as text (for people; :func:`render_nic` is what code uses)."""
    template_name, _ = TEMPLATES[type(nic)]
    context = {
        "nic": nic,
        "guest_pci": nic.pci_address.xml_attrs() if nic.pci_address else None,
        "source_pci": nic.source.xml_attrs() if isinstance(nic, HostdevNic) else None,
    }
    try:
        return environment().get_template(template_name).render(context)
    except jinja2.TemplateError as err:
        raise RenderError(f"interface {nic.name!r}: template {template_name} failed: {err}") from None


def render_nic(nic: VmNic) -> ET.Element:
    """One ``<interface>`` or ``<hostdev>`` element for ``nic``, parsed and checked."""
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
    return elem


def render_plan(plan: VmNicPlan) -> list[ET.Element]:
    """Elements for every NIC kvnet adds (hostdevs KubeVirt already rendered are skipped)."""
    return [render_nic(nic) for nic in plan.nics if not (isinstance(nic, HostdevNic) and nic.rendered_by_kubevirt)]
