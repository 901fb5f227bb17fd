"""Put rendered devices into the domain XML KubeVirt hands the sidecar.

The domain is parsed once (:func:`parse_domain`) into a :class:`DomainXml`: its bytes and
where its ``<devices>`` and each device are. Both readers of the domain work on that one
parse: :func:`kubevirt_hostdevs` (the SR-IOV hostdevs KubeVirt rendered) and :func:`splice`.

The splice works on the bytes, not on a re-serialised tree: a device under ``<devices>``
whose ``<alias name>`` matches one of ours is replaced in place, anything else is appended
after the last device, and every other byte of the domain (comments, namespaces such as
KubeVirt's ``<metadata><kubevirt xmlns="http://kubevirt.io">``, ``qemu:`` elements,
attribute order and quoting, whitespace) stays exactly as it was. ElementTree would
rewrite default namespaces as ``ns0:``, which is why the splice does not go through it.
KubeVirt's domain arrives tab-indented with no XML header; new devices follow its indent.

A vhost-user NIC (``<interface type="vhostuser">``) needs the guest's memory shared with the
backend: when one is spliced in, the domain gets ``<memoryBacking><access mode="shared"/>``
unless its memory backing already says shared; a domain that says private (``<access
mode="private">`` or a NUMA cell's ``memAccess="private"``) is an ``InvalidConfig`` rather
than a silent change of what its author asked for.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
import xml.parsers.expat
from collections.abc import Mapping, Sequence
from copy import deepcopy
from dataclasses import dataclass

from kvnet.core import naming
from kvnet.core.errors import InvalidConfig, RenderError
from kvnet.core.model import PciAddress


class MalformedDomain(RenderError):
    """The domain XML does not parse, or its root is not ``<domain>``.

    ``syntax`` is the parser's message (ElementTree's wording) when the XML does not parse;
    ``root`` is the root's tag (ElementTree's ``{namespace}name`` form) when it is not
    ``<domain>``. A caller that words the fault its own way (the sidecar's input check) reads them.
    """

    def __init__(self, *, syntax: str | None = None, root: str | None = None) -> None:
        super().__init__(
            f"the domain XML does not parse: {syntax}"
            if syntax is not None
            else f"the domain XML has root <{root}>, expected <domain>"
        )
        self.syntax = syntax
        self.root = root


@dataclass(frozen=True)
class _Device:
    """One child of the first ``<devices>``: its byte span (``end`` exclusive) and what is read of it."""

    tag: str
    start: int
    end: int
    aliases: tuple[str | None, ...]  # the name of each <alias> child, in document order
    source_address: Mapping[str, str] | None  # the attributes of its first <source><address>

    @property
    def alias(self) -> str | None:
        """The alias the splice replaces by: the first ``<alias>`` child that has a name."""
        return next((a for a in self.aliases if a is not None), None)


@dataclass(frozen=True)
class DomainXml:
    """A ``<domain>`` parsed once: its bytes, its name, where its first ``<devices>`` and each
    device in it are.

    ``devices`` is ``(start, end)`` of the first ``<devices>``; None when the domain has none,
    an error for whoever needs them (:meth:`require_devices`).
    """

    data: bytes
    name: str  # the text of <name>, "?" without one (ElementTree's findtext("name", "?"))
    devices: tuple[int, int] | None
    devices_empty: bool  # written as <devices/>
    devices_open_end: int  # just after the <devices ...> start tag
    children: tuple[_Device, ...]
    # the first <memoryBacking>: (start, end), None without one; its first <access>'s mode
    # ("" for an <access> without one, None without <access>); the NUMA cells' memAccess values
    memory_backing: tuple[int, int] | None = None
    memory_backing_empty: bool = False  # written as <memoryBacking/>
    memory_backing_open_end: int = -1  # just after the <memoryBacking ...> start tag
    memory_access: str | None = None
    numa_mem_access: tuple[str, ...] = ()

    def require_devices(self) -> tuple[int, int]:
        if self.devices is None:
            raise RenderError(f"domain {self.name!r} has no <devices>")
        return self.devices

    @property
    def text(self) -> str:
        """The domain as text (virt-launcher sends UTF-8)."""
        return _utf8(self.data)


def _et_name(name: str) -> str:
    """An expat name in namespace mode (``uri}local``) as ElementTree writes it (``{uri}local``)."""
    return "{" + name if "}" in name else name


class _UndefinedEntity(Exception):
    """ElementTree's error for an entity only a DTD could define (expat passes it on)."""


def _ignore(text: str) -> None:
    pass


class _Parse:
    """The handlers of the one expat pass over a domain, and what they collect."""

    def __init__(self, data: bytes, *, layout: bool = True) -> None:
        self.data = data
        self.layout = layout  # False: only whether it is a well-formed <domain>
        # namespace mode, as ElementTree parses: an unbound prefix is an error, a namespaced tag is not "domain"
        self.parser = parser = xml.parsers.expat.ParserCreate(namespace_separator="}")
        parser.StartElementHandler = self.on_start
        parser.EndElementHandler = self.on_end
        parser.StartDoctypeDeclHandler = self.on_doctype
        self.stack: list[str] = []
        self.root = ""
        self.name: list[str] | None = None  # the text of the first <name> of the domain
        self.reading_name = False
        self.dtd = False
        self.devices: list[int] = []  # start (and end) of the first <devices>
        self.devices_open_end = -1
        self.devices_empty = False
        self.devices_closed = False
        self.spans: list[list[int]] = []  # start (and end) of each device
        self.tags: list[str] = []
        self.aliases: list[list[str | None]] = []
        self.addresses: list[dict[str, str] | None] = []
        self.memory_backing: list[int] = []  # start (and end) of the first <memoryBacking>
        self.memory_backing_open_end = -1
        self.memory_backing_empty = False
        self.in_memory_backing = False
        self.memory_access: str | None = None
        self.numa_mem_access: list[str] = []

    def _in_devices(self) -> bool:
        return bool(self.devices) and not self.devices_closed and self.stack[:2] == ["domain", "devices"]

    def on_start(self, tag: str, attrs: dict[str, str]) -> None:
        if self.reading_name:  # ElementTree's text of <name> ends at its first child
            self._stop_name()
        self.stack.append(tag)
        depth, here, data = len(self.stack), self.parser.CurrentByteIndex, self.data
        if depth == 1:
            self.root = tag
            if not self.layout:  # the rest is expat's alone, at C speed
                self.parser.StartElementHandler = self.parser.EndElementHandler = None
        elif depth == 2 and self.root == "domain":
            if tag == "name" and self.name is None:
                self.name, self.reading_name = [], True
                self.parser.CharacterDataHandler = self.name.append
            elif tag == "devices" and not self.devices:
                end = _tag_end(data, here)
                self.devices_empty = data[end - 2 : end] == b"/>"
                self.devices = [here, end] if self.devices_empty else [here]
                self.devices_open_end = end
            elif tag == "memoryBacking" and not self.memory_backing:
                end = _tag_end(data, here)
                self.memory_backing_empty = data[end - 2 : end] == b"/>"
                self.memory_backing = [here, end] if self.memory_backing_empty else [here]
                self.memory_backing_open_end = end
                self.in_memory_backing = not self.memory_backing_empty
        elif depth == 3 and self.in_memory_backing:
            if tag == "access" and self.memory_access is None:
                self.memory_access = attrs.get("mode", "")
        elif depth == 4 and tag == "cell" and self.stack[:3] == ["domain", "cpu", "numa"] and "memAccess" in attrs:
            self.numa_mem_access.append(attrs["memAccess"])
        elif depth == 3 and self._in_devices():
            end = _tag_end(data, here)
            self.spans.append([here, end] if data[end - 2 : end] == b"/>" else [here])  # <x/>: its end is known now
            self.tags.append(_et_name(tag))
            self.aliases.append([])
            self.addresses.append(None)
        elif depth == 4 and tag == "alias" and self.spans and self._in_devices():
            self.aliases[-1].append(attrs.get("name"))
        elif (
            depth == 5
            and tag == "address"
            and self.stack[3] == "source"
            and self.spans
            and self._in_devices()
            and self.addresses[-1] is None  # ElementTree's find("source/address"): the first in document order
        ):
            self.addresses[-1] = {_et_name(k): v for k, v in attrs.items()}

    def _stop_name(self) -> None:
        self.parser.CharacterDataHandler = _ignore if self.dtd else None
        self.reading_name = False

    def on_end(self, tag: str) -> None:
        if self.reading_name:
            self._stop_name()
        depth, here = len(self.stack), self.parser.CurrentByteIndex
        in_devices = self._in_devices()
        self.stack.pop()
        if depth == 2 and self.in_memory_backing:
            self.memory_backing.append(self.data.index(b">", here) + 1)
            self.in_memory_backing = False
            return
        if depth not in (2, 3) or not in_devices:
            return
        span = self.spans[-1] if depth == 3 else self.devices
        if len(span) == 1:  # an explicit end tag starts here
            span.append(self.data.index(b">", here) + 1)
        if depth == 2:
            self.devices_closed = True

    def on_doctype(self, *_: object) -> None:
        # with a DTD expat passes an entity it cannot resolve to the default handler instead of
        # failing, where ElementTree fails; character data must then go elsewhere (as in ElementTree)
        self.dtd = True
        self.parser.DefaultHandlerExpand = self.on_default
        if not self.reading_name:
            self.parser.CharacterDataHandler = _ignore

    def on_default(self, text: str) -> None:
        if len(text) >= 2 and text[0] == "&":
            line, column = self.parser.CurrentLineNumber, self.parser.CurrentColumnNumber
            raise _UndefinedEntity(f"undefined entity {text[:100]}: line {line}, column {column}")

    def check(self) -> None:
        """Parse it all; raise ``MalformedDomain`` unless it is a well-formed ``<domain>``."""
        try:
            self.parser.Parse(self.data, True)
        except (xml.parsers.expat.ExpatError, _UndefinedEntity) as err:
            raise MalformedDomain(syntax=str(err)) from None
        if self.root != "domain":
            raise MalformedDomain(root=_et_name(self.root))

    def result(self) -> DomainXml:
        self.check()
        return DomainXml(
            data=self.data,
            name="?" if self.name is None else "".join(self.name),
            devices=(self.devices[0], self.devices[1]) if self.devices else None,
            devices_empty=self.devices_empty,
            devices_open_end=self.devices_open_end,
            children=tuple(
                _Device(tag, span[0], span[1], tuple(aliases), address)
                for tag, span, aliases, address in zip(self.tags, self.spans, self.aliases, self.addresses, strict=True)
            ),
            memory_backing=(self.memory_backing[0], self.memory_backing[1]) if self.memory_backing else None,
            memory_backing_empty=self.memory_backing_empty,
            memory_backing_open_end=self.memory_backing_open_end,
            memory_access=self.memory_access,
            numa_mem_access=tuple(self.numa_mem_access),
        )


def parse_domain(domain_xml: str | bytes | DomainXml) -> DomainXml:
    """The domain parsed once, accepted and refused as ``ElementTree.fromstring`` would.

    Raises :class:`MalformedDomain` for XML that does not parse or a root that is not
    ``<domain>``. A domain parsed already is returned as it is.
    """
    if isinstance(domain_xml, DomainXml):
        return domain_xml
    return _Parse(domain_xml.encode() if isinstance(domain_xml, str) else bytes(domain_xml)).result()


def check_domain_xml(domain_xml: str | bytes) -> None:
    """Raise :class:`MalformedDomain` unless ``domain_xml`` is a well-formed ``<domain>``,
    judged as :func:`parse_domain` judges it, without reading any further (a domain built,
    checked before it leaves)."""
    _Parse(domain_xml.encode() if isinstance(domain_xml, str) else bytes(domain_xml), layout=False).check()


def _alias(elem: ET.Element) -> str | None:
    alias = elem.find("alias")
    return alias.get("name") if alias is not None else None


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


def splice(domain_xml: str | bytes | DomainXml, devices: Sequence[ET.Element]) -> str:
    """The domain with ``devices`` replaced by alias or appended; everything else byte for byte.

    A domain parsed already (:func:`parse_domain`) is not parsed again.
    """
    domain = parse_domain(domain_xml)
    data = domain.data
    devices_start, devices_end = domain.require_devices()
    devices_indent = _line_indent(data, devices_start).decode()
    unit = devices_indent or "\t"
    if domain.children:
        child_indent = _line_indent(data, domain.children[0].start).decode() or devices_indent + unit
    else:
        child_indent = devices_indent + unit
    existing: dict[str, int] = {}  # alias -> index of the first device carrying it
    for i, child in enumerate(domain.children):
        if child.alias is not None:
            existing.setdefault(child.alias, i)
    edits: list[tuple[int, int, bytes]] = []  # (start, end, text) replacing data[start:end]
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
            edits.append((domain.children[index].start, domain.children[index].end, text))
        else:
            appended[alias] = text
    edits = list({start: (start, end, text) for start, end, text in edits}.values())  # the last text per device
    block = b"".join(b"\n" + child_indent.encode() + text for text in appended.values())
    if domain.devices_empty:
        edits.append(
            (devices_start, devices_end, b"<devices>" + block + b"\n" + devices_indent.encode() + b"</devices>")
        )
    elif block:
        insert_at = domain.children[-1].end if domain.children else domain.devices_open_end
        if not domain.children and not data[insert_at:devices_end].startswith(b"\n"):
            # an empty <devices></devices>: put the end tag back on its own line
            block += b"\n" + devices_indent.encode()
        edits.append((insert_at, insert_at, block))
    vhost_user = [_alias(d) or "" for d in devices if d.tag == "interface" and d.get("type") == "vhostuser"]
    if vhost_user:
        edits.extend(_shared_memory_edits(domain, vhost_user, devices_start, devices_indent, unit))
    out: list[bytes] = []
    cursor = 0
    for start, end, text in sorted(edits, key=lambda e: (e[0], e[1])):
        out += [data[cursor:start], text]
        cursor = end
    out.append(data[cursor:])
    return _utf8(b"".join(out))


SHARED_ACCESS = b'<access mode="shared" />'


def _shared_memory_edits(
    domain: DomainXml, aliases: Sequence[str], devices_start: int, devices_indent: str, unit: str
) -> list[tuple[int, int, bytes]]:
    """What gives the domain shared memory for the vhost-user NICs ``aliases``: nothing when it
    has it, ``<access mode="shared"/>`` in its ``<memoryBacking>`` (one before ``<devices>``
    without one); ``InvalidConfig`` when the domain asks for private memory."""
    nics = ", ".join(aliases)
    if domain.memory_access is not None and domain.memory_access != "shared":
        raise InvalidConfig(
            f"domain {domain.name!r} has <memoryBacking><access mode={domain.memory_access!r}>, but the vhost-user "
            f"NIC(s) {nics} need the guest memory shared with their backend (mode 'shared'); kvnet does not change it",
            nics,
        )
    private = [m for m in domain.numa_mem_access if m != "shared"]
    if private:
        raise InvalidConfig(
            f"domain {domain.name!r} has a NUMA cell with memAccess={private[0]!r}, but the vhost-user NIC(s) {nics} "
            "need the guest memory shared with their backend; kvnet does not change it",
            nics,
        )
    if domain.memory_access == "shared":
        return []
    data = domain.data
    if domain.memory_backing is None:
        indent = devices_indent.encode()
        text = (
            b"<memoryBacking>\n"
            + indent
            + unit.encode()
            + SHARED_ACCESS
            + b"\n"
            + indent
            + b"</memoryBacking>\n"
            + indent
        )
        return [(devices_start, devices_start, text)]
    start, end = domain.memory_backing
    indent = _line_indent(data, start)
    inner = indent + (unit.encode() if indent else b"")
    if domain.memory_backing_empty:
        open_tag = data[start : end - 2].rstrip() + b">"
        text = open_tag + b"\n" + inner + SHARED_ACCESS + b"\n" + indent + b"</memoryBacking>"
        return [(start, end, text)]
    at = domain.memory_backing_open_end
    return [(at, at, b"\n" + inner + SHARED_ACCESS)]


def _utf8(data: bytes) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise RenderError("the domain XML is not UTF-8 (virt-launcher sends UTF-8)") from None


def kubevirt_hostdevs(domain_xml: str | bytes | DomainXml) -> dict[str, PciAddress]:
    """Alias → source address of the SR-IOV hostdevs KubeVirt put in the domain (``ua-sriov-*``)."""
    domain = parse_domain(domain_xml)
    domain.require_devices()
    out: dict[str, PciAddress] = {}
    for hostdev in domain.children:
        if hostdev.tag != "hostdev":
            continue
        alias = hostdev.aliases[0] if hostdev.aliases else None  # ElementTree's find("alias").get("name")
        if alias is None or naming.alias_interface(alias, sriov=True) is None:
            continue
        addr = hostdev.source_address
        if addr is None:
            raise RenderError(f"hostdev {alias} in the domain has no source address")
        try:
            out[alias] = PciAddress(*(int(addr.get(k, ""), 16) for k in ("domain", "bus", "slot", "function")))
        except ValueError:
            raise RenderError(f"hostdev {alias} in the domain has a malformed source address {dict(addr)}") from None
    return out
