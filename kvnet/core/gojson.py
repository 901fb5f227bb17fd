"""Go's ``encoding/json`` and ``net.Parse*`` as Multus's users see them.

Multus is Go: its error messages, what it accepts and what it writes follow Go's
``encoding/json`` (keys matched case-insensitively, unknown keys ignored, Go's wording for
wrong types, ``json.MarshalIndent``'s escapes) and ``net.ParseIP``/``ParseCIDR``/``ParseMAC``.
The annotation parsers (``selections``, ``status``), the config and the NAD reader use
these so kvnet accepts, refuses and words exactly what Multus does. Pure functions.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from kvnet.core.errors import InvalidAnnotation

# ------------------------------------------------------------------------------------
# Go-compatible value checks (net.ParseIP, net.ParseCIDR, net.ParseMAC)
# ------------------------------------------------------------------------------------


def go_quote(text: str) -> str:
    """Go's ``%q`` for the strings users write (close enough for ASCII and UTF-8)."""
    return json.dumps(text, ensure_ascii=False)


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Go's ``net.ParseIP``: dotted IPv4 or IPv6 without a zone; None when invalid."""
    if not isinstance(text, str) or "%" in text or not text.isascii():
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def parse_cidr(text: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface | None:
    """Go's ``net.ParseCIDR``: ``addr/prefixlen`` with a decimal prefix; None when invalid."""
    addr, sep, plen = text.partition("/")
    if not sep or not plen.isdigit() or not plen.isascii() or (len(plen) > 1 and plen[0] == "0"):
        return None
    ip = parse_ip(addr)
    if ip is None or int(plen) > ip.max_prefixlen:
        return None
    return ipaddress.ip_interface(f"{ip}/{int(plen)}")


def go_ip_string(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """``net.IP.String()``: IPv4-mapped IPv6 prints as dotted IPv4, IPv6 compressed."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return ip.compressed


_MAC_SEP = re.compile(r"^[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}(\1[0-9a-fA-F]{2})*$")
_MAC_DOT = re.compile(r"^[0-9a-fA-F]{4}(\.[0-9a-fA-F]{4})*$")


def parse_mac_ok(text: str) -> bool:
    """Go's ``net.ParseMAC``: 6, 8 or 20 bytes, ``:``/``-`` separated or dotted quads."""
    if _MAC_SEP.match(text):
        n = (len(text) + 1) // 3
    elif _MAC_DOT.match(text):
        n = (len(text) + 1) // 5 * 2
    else:
        return False
    return n in (6, 8, 20)


class GoNumber(float):
    """A JSON number written with a fraction or exponent, keeping its literal for Go-style errors."""

    literal: str

    def __new__(cls, literal: str | float) -> GoNumber:  # a float when copied or unpickled
        number = super().__new__(cls, literal)
        number.literal = literal if isinstance(literal, str) else repr(float(literal))
        return number


class GoJsonError(ValueError):
    """Text that Go's ``encoding/json`` would refuse, with Go's wording where it is fixed."""


def _no_constants(name: str) -> Any:
    if name.startswith("-"):
        raise GoJsonError(f"invalid character {name[1]!r} in numeric literal")
    raise GoJsonError(f"invalid character {name[0]!r} looking for beginning of value")


def go_loads(text: str) -> Any:
    """``json.loads`` that refuses what Go refuses (``NaN``, ``Infinity``) and words errors like Go.

    Truncated input is ``unexpected end of JSON input``; other syntax errors carry the
    offending character and offset with Python's detail. A lone surrogate (``"\\udcff"``)
    is U+FFFD, as Go decodes it (:func:`go_strings`).
    """
    try:
        value = json.loads(text, parse_constant=_no_constants, parse_float=GoNumber)
    except json.JSONDecodeError as err:
        raise GoJsonError(go_syntax_error(err)) from None
    return go_strings(value) if _SURROGATE_HINT.search(text) else value


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# a surrogate escape or character in JSON text: only then can a decoded string hold a lone one
_SURROGATE_HINT = re.compile("[\ud800-\udfff]|\\\\u[dD][89abcdefABCDEF]")


def go_text(text: str) -> str:
    """``text`` with each lone surrogate as U+FFFD: what Go's strings hold where Python's
    json decoder (or os.environ, for undecodable bytes) leaves a lone surrogate."""
    return _LONE_SURROGATE.sub("\ufffd", text) if _LONE_SURROGATE.search(text) else text


def go_strings(value: Any) -> Any:
    """A decoded JSON value with :func:`go_text` applied to every string, keys included."""
    if isinstance(value, str):
        return go_text(value)
    if isinstance(value, list):
        return [go_strings(v) for v in value]
    if isinstance(value, dict):
        return {go_text(k): go_strings(v) for k, v in value.items()}
    return value


def go_syntax_error(err: json.JSONDecodeError) -> str:
    """A syntax error in Go's words where they are fixed: truncated input is ``unexpected
    end of JSON input``; otherwise the offending character and offset, with Python's detail."""
    text = err.doc
    if err.pos >= len(text.rstrip()):
        return "unexpected end of JSON input"
    return f"invalid character {text[err.pos]!r} at offset {err.pos + 1}: {err.msg}"


def load_annotation(text: str, prefix: str) -> Any:
    """:func:`go_loads` for an annotation value: a syntax error is ``InvalidAnnotation`` (code 7)."""
    try:
        return go_loads(text)
    except GoJsonError as err:
        raise InvalidAnnotation(prefix + str(err)) from None


# ------------------------------------------------------------------------------------
# A small Go encoding/json look-alike for the selection element
# ------------------------------------------------------------------------------------


class GoTypeError(Exception):
    """``json: cannot unmarshal <json type> into Go struct field <path> of type <go type>``."""


def go_json_kind(value: object) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def go_type_error(value: object, path: str, go_type: str) -> GoTypeError:
    kind = go_json_kind(value)
    if kind == "number" and go_type == "int":
        kind = f"number {getattr(value, 'literal', None) or json.dumps(value)}"
    return GoTypeError(f"json: cannot unmarshal {kind} into Go struct field {path} of type {go_type}")


def as_str(value: object, path: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise go_type_error(value, path, "string")
    return value


_INT64 = range(-(2**63), 2**63)


def as_int(value: object, path: str) -> int:
    """A Go ``int`` (64-bit): only an integer literal in range; ``1.0`` and ``1e3`` are refused, as in Go."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value not in _INT64:
        raise go_type_error(value, path, "int")
    return value


def as_list(value: object, path: str, go_type: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise go_type_error(value, path, go_type)
    return value


def go_fields(obj: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """Go's key matching: each key goes to the field of that exact name, else of that name in
    any case; keys are taken in order, so a later key overwrites an earlier one for the same
    field (``{"name": "a", "Name": "b"}`` is ``b``, as in Go); unknown keys are ignored."""
    out: dict[str, Any] = {}
    lowered = {n.lower(): n for n in names}
    for key, value in obj.items():
        field = key if key in names else lowered.get(key.lower())
        if field is not None:
            out[field] = value
    return out


def _go_escape(text: str) -> str:
    """Go's encoding/json HTML-safe escapes: ``<>&`` and U+2028/9 as ``\\u`` sequences."""
    for char, esc in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, esc)
    return text


def go_marshal_indent(value: object) -> str:
    """``json.MarshalIndent(v, "", "    ")``: UTF-8 kept, ``<>&`` and U+2028/9 escaped as Go does."""
    return _go_escape(json.dumps(value, indent=4, ensure_ascii=False))


def go_marshal_map(value: object) -> str:
    """``json.Marshal`` of Go maps: compact, keys sorted, UTF-8 kept, Go's escapes."""
    return _go_escape(json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":")))
