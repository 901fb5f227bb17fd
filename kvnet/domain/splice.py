"""Put rendered devices into the domain XML KubeVirt hands the sidecar.

Works on the text, not on a re-serialised tree: a device under ``<devices>`` whose
``<alias name>`` matches one of ours is replaced in place, anything else is appended
after the last device, and every other byte of the domain (comments, namespaces such as
KubeVirt's ``<metadata><kubevirt xmlns="http://kubevirt.io">``, ``qemu:`` elements,
attribute order and quoting, whitespace) stays exactly as it was. ElementTree would
rewrite default namespaces as ``ns0:``, which is why the splice does not go through it.
KubeVirt's domain arrives tab-indented with no XML header; new devices follow its indent.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
import xml.parsers.expat
from collections.abc import Sequence
from copy import deepcopy
from dataclasses import dataclass

from kvnet.core import naming
from kvnet.core.errors import RenderError
from kvnet.core.model import PciAddress


def parse_domain(domain_xml: str | bytes) -> ET.Element:
    """Parse a ``<domain>`` (read-only use: the splice never writes this tree back)."""
    try:
        root = ET.fromstring(domain_xml)
    except ET.ParseError as err:
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


@dataclass
class _Span:
    """Byte offsets of one element in the document (``end`` exclusive)."""

    start: int
    end: int = -1
    alias: str | None = None


@dataclass
class _Layout:
    devices: _Span
    devices_empty: bool  # written as <devices/>
    devices_open_end: int  # just after the <devices ...> start tag
    children: list[_Span]


def _tag_end(data: bytes, start: int) -> int:
    """Index just after the ``>`` of the tag at ``start`` (quotes in attribute values skipped)."""
    quote = 0
    for i in range(start + 1, len(data)):
        c = data[i]
        if quote:
            if c == quote:
                quote = 0
        elif c in (0x22, 0x27):  # " '
            quote = c
        elif c == 0x3E:  # >
            return i + 1
    raise RenderError("the domain XML has an unterminated tag")


def _layout(data: bytes) -> _Layout:
    parser = xml.parsers.expat.ParserCreate()
    stack: list[str] = []
    state: dict[str, object] = {}
    children: list[_Span] = []

    def on_start(name: str, attrs: dict[str, str]) -> None:
        stack.append(name)
        here = parser.CurrentByteIndex
        if stack == ["domain", "devices"] and "devices" not in state:
            end = _tag_end(data, here)
            empty = data[end - 2 : end] == b"/>"
            state["devices"] = _Span(here, end if empty else -1)
            state["open_end"] = end
            state["empty"] = empty
        elif (
            len(stack) == 3
            and stack[:2] == ["domain", "devices"]
            and state.get("devices") is not None
            and "closed" not in state
        ):
            child = _Span(here)
            end = _tag_end(data, here)
            if data[end - 2 : end] == b"/>":
                child.end = end  # <x/>: expat reports its end after the tag
            children.append(child)
        elif (
            len(stack) == 4
            and stack[:2] == ["domain", "devices"]
            and name == "alias"
            and children
            and "closed" not in state
        ) and children[-1].alias is None:
            children[-1].alias = attrs.get("name")

    def on_end(name: str) -> None:
        here = parser.CurrentByteIndex
        depth = len(stack)
        stack.pop()
        if depth not in (2, 3) or "closed" in state or state.get("devices") is None:
            return
        span = children[-1] if depth == 3 else state["devices"]
        assert isinstance(span, _Span)
        if span.end < 0:  # an explicit end tag starts here
            span.end = data.index(b">", here) + 1
        if depth == 2:
            state["closed"] = True

    parser.StartElementHandler = on_start
    parser.EndElementHandler = on_end
    try:
        parser.Parse(data, True)
    except xml.parsers.expat.ExpatError as err:
        raise RenderError(f"the domain XML does not parse: {err}") from None
    span = state.get("devices")
    if not isinstance(span, _Span):
        raise RenderError("the domain has no <devices>")
    open_end = state["open_end"]
    assert isinstance(open_end, int)
    return _Layout(span, bool(state["empty"]), open_end, children)


def _line_indent(data: bytes, pos: int) -> bytes:
    """The whitespace between the last newline before ``pos`` and ``pos`` (b"" if not only whitespace)."""
    line_start = data.rfind(b"\n", 0, pos) + 1
    lead = data[line_start:pos]
    return lead if lead.strip() == b"" else b""


def _device_text(elem: ET.Element, unit: str, indent: str) -> bytes:
    """``elem`` as ``ET.indent(copy, space=unit)`` then ``ET.tostring`` write it, each line after the first
    shifted by ``indent``; the caller's element is never touched."""
    try:
        out: list[str] = []
        _write_indented(elem, unit, 0, out)
        if elem.tail:
            out.append(_escape_cdata(elem.tail))
        text = "".join(out)
    except _NotPlain:  # namespaces, comments, non-text values: let ElementTree do it, on a copy
        copy = deepcopy(elem)
        ET.indent(copy, space=unit)
        text = ET.tostring(copy, encoding="unicode")
    return text.replace("\n", "\n" + indent).encode()


class _NotPlain(Exception):
    """An element :func:`_write_indented` leaves to ElementTree."""


def _escape_cdata(text: str) -> str:
    """ElementTree's escaping of character data."""
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        if ("&" in text or "<" in text or ">" in text)
        else text
    )


_ATTR_ESCAPES = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\r": "&#13;", "\n": "&#10;", "\t": "&#09;"}
)
_ATTR_SPECIAL = re.compile('[&<>"\r\n\t]').search


def _escape_attrib(value: str) -> str:
    """ElementTree's escaping of attribute values (most values need none)."""
    return value.translate(_ATTR_ESCAPES) if _ATTR_SPECIAL(value) else value


def _write_indented(elem: ET.Element, unit: str, level: int, out: list[str]) -> None:
    """Serialise like ``ET.indent`` + ``ET.tostring`` (short empty elements, ElementTree's
    escaping), without copying or changing ``elem`` (the element's own tail is the caller's).

    ``ET.tostring`` walks the tree for namespaces and goes through its writer machinery for
    every device, several times the cost of the text itself; kvnet's rendered devices are
    plain (no namespaces, comments or processing instructions, string values), and anything
    that is not raises ``_NotPlain``. A test compares the two on arbitrary elements.
    """
    tag = elem.tag
    if type(tag) is not str or tag[:1] == "{":
        raise _NotPlain
    out.append("<" + tag)
    for key, value in elem.items():
        if type(key) is not str or type(value) is not str or key[:1] == "{":
            raise _NotPlain
        out.append(f' {key}="{_escape_attrib(value)}"')
    text = elem.text
    if text is not None and type(text) is not str:
        raise _NotPlain
    children = list(elem)
    if not children:
        if text:
            out += [">", _escape_cdata(text), "</", tag, ">"]
        else:
            out.append(" />")
        return
    child_indent = "\n" + unit * (level + 1)
    if not text or not text.strip():
        text = child_indent
    out += [">", _escape_cdata(text)]
    last = len(children) - 1
    for i, child in enumerate(children):
        _write_indented(child, unit, level + 1, out)
        tail = child.tail
        if tail is not None and type(tail) is not str:
            raise _NotPlain
        if not tail or not tail.strip():
            tail = child_indent
        if i == last and not tail.strip():
            tail = "\n" + unit * level
        out.append(_escape_cdata(tail))
    out += ["</", tag, ">"]


def splice(domain_xml: str | bytes, devices: Sequence[ET.Element]) -> str:
    """The domain with ``devices`` replaced by alias or appended; everything else byte for byte."""
    data = domain_xml.encode() if isinstance(domain_xml, str) else bytes(domain_xml)
    root = parse_domain(data)
    _devices(root)  # the specific error for a domain without <devices>
    layout = _layout(data)
    devices_indent = _line_indent(data, layout.devices.start).decode()
    unit = devices_indent or "\t"
    if layout.children:
        child_indent = _line_indent(data, layout.children[0].start).decode() or devices_indent + unit
    else:
        child_indent = devices_indent + unit
    existing: dict[str, int] = {}  # alias -> index of the first device carrying it
    for i, child in enumerate(layout.children):
        if child.alias is not None:
            existing.setdefault(child.alias, i)
    replaced: dict[int, bytes] = {}
    appended: dict[
        str, bytes
    ] = {}  # alias -> text, in order; a later device of the same alias takes the first one's place
    for new in devices:
        alias = _alias(new)
        if not alias:
            raise RenderError(f"cannot splice <{new.tag}> without an <alias name>")
        text = _device_text(new, unit, child_indent)
        index = existing.get(alias)
        if index is not None:
            replaced[index] = text
        else:
            appended[alias] = text
    out: list[bytes] = []
    cursor = 0
    for i, child in enumerate(layout.children):
        if i in replaced:
            out += [data[cursor : child.start], replaced[i]]
            cursor = child.end
    block = b"".join(b"\n" + child_indent.encode() + text for text in appended.values())
    if layout.devices_empty:
        out += [
            data[cursor : layout.devices.start],
            b"<devices>",
            block,
            b"\n" + devices_indent.encode(),
            b"</devices>",
        ]
        cursor = layout.devices.end
    elif block:
        insert_at = layout.children[-1].end if layout.children else layout.devices_open_end
        out += [data[cursor:insert_at], block]
        cursor = insert_at
        if not layout.children:
            # an empty <devices></devices>: put the end tag back on its own line
            rest = data[cursor : layout.devices.end]
            if not rest.startswith(b"\n"):
                out.append(b"\n" + devices_indent.encode())
    out.append(data[cursor:])
    try:
        return b"".join(out).decode()
    except UnicodeDecodeError:
        raise RenderError("the domain XML is not UTF-8 (virt-launcher sends UTF-8)") from None


def kubevirt_hostdevs(domain_xml: str | bytes) -> dict[str, PciAddress]:
    """Alias → source address of the SR-IOV hostdevs KubeVirt put in the domain (``ua-sriov-*``)."""
    root = parse_domain(domain_xml)
    out: dict[str, PciAddress] = {}
    for hostdev in _devices(root).findall("hostdev"):
        alias = _alias(hostdev)
        if alias is None or naming.alias_interface(alias, sriov=True) is None:
            continue
        addr = hostdev.find("source/address")
        if addr is None:
            raise RenderError(f"hostdev {alias} in the domain has no source address")
        try:
            out[alias] = PciAddress(*(int(addr.get(k, ""), 16) for k in ("domain", "bus", "slot", "function")))
        except ValueError:
            raise RenderError(f"hostdev {alias} in the domain has a malformed source address {addr.attrib}") from None
    return out
