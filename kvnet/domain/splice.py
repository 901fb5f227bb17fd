"""Put rendered devices into the domain XML KubeVirt hands the sidecar.

Works on a copy: a device whose ``<alias name>`` matches one of ours is replaced in
place, anything else is appended to ``<devices>``; everything else (comments, namespaced
``qemu:`` elements, attribute order) is left as it was. KubeVirt's domain arrives
tab-indented with no XML header, and goes back the same way.
"""

from __future__ import annotations

import copy
import io
import xml.etree.ElementTree as ET
from collections.abc import Sequence

from kvnet.errors import RenderError
from kvnet.model import PciAddress

SRIOV_ALIAS_PREFIX = "ua-sriov-"


def _register_namespaces(text: str) -> None:
    """Keep the domain's own prefixes (``qemu:``) instead of ElementTree's ``ns0:``."""
    for _, (prefix, uri) in ET.iterparse(io.StringIO(text), events=("start-ns",)):
        if prefix:
            ET.register_namespace(prefix, uri)


def parse_domain(domain_xml: str | bytes) -> ET.Element:
    """Parse a ``<domain>`` keeping comments and processing instructions."""
    text = domain_xml.decode() if isinstance(domain_xml, bytes) else domain_xml
    try:
        _register_namespaces(text)
        parser = ET.XMLParser(target=ET.TreeBuilder(insert_comments=True, insert_pis=True))
        parser.feed(text)
        root = parser.close()
    except (ET.ParseError, UnicodeDecodeError) as err:
        raise RenderError(f"the domain XML does not parse: {err}") from None
    if root.tag != "domain":
        raise RenderError(f"the domain XML has root <{root.tag}>, expected <domain>")
    return root


def _devices(root: ET.Element) -> ET.Element:
    devices = root.find("devices")
    if devices is None:
        raise RenderError(f"domain {root.findtext('name', '?')!r} has no <devices>")
    return devices


def _alias(elem: ET.Element) -> str | None:
    alias = elem.find("alias")
    return alias.get("name") if alias is not None else None


def _indent_unit(devices: ET.Element) -> str:
    """The domain's own indent step (KubeVirt: a tab), read from the whitespace before a device."""
    inner = (devices.text or "").rsplit("\n", 1)[-1]
    if inner and not inner.strip() and len(inner) % 2 == 0:
        return inner[: len(inner) // 2]
    return "\t"


def splice(domain_xml: str | bytes, devices: Sequence[ET.Element]) -> str:
    """The domain with ``devices`` replaced by alias or appended; the input is not modified."""
    root = parse_domain(domain_xml)
    devs = _devices(root)
    unit = _indent_unit(devs)
    children = list(devs)
    for new in devices:
        alias = _alias(new)
        if not alias:
            raise RenderError(f"cannot splice <{new.tag}> without an <alias name>")
        elem = copy.deepcopy(new)
        ET.indent(elem, space=unit, level=2)
        index = next((i for i, old in enumerate(children) if _alias(old) == alias), None)
        if index is not None:
            elem.tail = children[index].tail
            devs.remove(children[index])
            devs.insert(index, elem)
            children[index] = elem
        else:
            if children:
                elem.tail = children[-1].tail
                children[-1].tail = "\n" + unit * 2
            else:
                devs.text = "\n" + unit * 2
                elem.tail = "\n" + unit
            devs.append(elem)
            children.append(elem)
    return ET.tostring(root, encoding="unicode")


def kubevirt_hostdevs(domain_xml: str | bytes) -> dict[str, PciAddress]:
    """Alias → source address of the SR-IOV hostdevs KubeVirt put in the domain (``ua-sriov-*``)."""
    root = parse_domain(domain_xml)
    out: dict[str, PciAddress] = {}
    for hostdev in _devices(root).findall("hostdev"):
        alias = _alias(hostdev)
        if not alias or not alias.startswith(SRIOV_ALIAS_PREFIX):
            continue
        addr = hostdev.find("source/address")
        if addr is None:
            raise RenderError(f"hostdev {alias} in the domain has no source address")
        try:
            out[alias] = PciAddress(*(int(addr.get(k, ""), 16) for k in ("domain", "bus", "slot", "function")))
        except ValueError:
            raise RenderError(f"hostdev {alias} in the domain has a malformed source address {addr.attrib}") from None
    return out

