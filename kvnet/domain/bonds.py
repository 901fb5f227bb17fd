"""The ``kvnet.io/bonds`` VMI annotation: guest bonds over VM NICs.

A VM cannot use a pod-side bond of VFIO VFs, so a bond is declared on the VMI (which the
sidecar can read) and built inside the guest by cloud-init. Format (a JSON list)::

    [{"name": "bond0", "members": ["net-a", "net-b"], "mode": "active-backup",
      "miimon": 100, "failOverMac": "active",
      "addresses": ["10.1.0.5/24"], "gateways": ["10.1.0.1"],
      "routes": [{"to": "10.2.0.0/16", "via": "10.1.0.1"}]}]

``members`` are VMI interface names; each must exist and pin ``macAddress`` (the guest
matches members by MAC). ``mode`` defaults to active-backup, ``miimon`` to 100 (an
integer or a numeric string as bond-cni writes it); ``failOverMac`` is one of none,
active, follow. The L3 keys are optional.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kvnet.core.errors import InvalidAnnotation
from kvnet.core.model import GuestIpConfig
from kvnet.domain.vmi import BONDS_ANNOTATION, Vmi

BOND_MODES = ("balance-rr", "active-backup", "balance-xor", "broadcast", "802.3ad", "balance-tlb", "balance-alb")
FAIL_OVER_MAC = ("none", "active", "follow")
_BOND_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9_.-]{0,14}$")
_KEYS = {"name", "members", "mode", "miimon", "failOverMac", "addresses", "gateways", "routes"}


@dataclass(frozen=True)
class BondSpec:
    """One validated bond of the annotation (members are VMI interface names)."""

    name: str
    members: tuple[str, ...]
    mode: str = "active-backup"
    miimon: int | None = 100
    fail_over_mac: str | None = None
    ip: GuestIpConfig = GuestIpConfig()


def _cidrs(value: Any, bond: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise InvalidAnnotation(f"{BONDS_ANNOTATION}: bond {bond!r}: addresses must be a list of CIDRs")
    for a in value:
        try:
            if not isinstance(a, str) or "/" not in a:
                raise ValueError
            ipaddress.ip_interface(a)
        except ValueError:
            raise InvalidAnnotation(
                f"{BONDS_ANNOTATION}: bond {bond!r}: address {a!r} is not a CIDR (10.1.0.5/24)"
            ) from None
    return tuple(value)


def _ips(value: Any, bond: str, what: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise InvalidAnnotation(f"{BONDS_ANNOTATION}: bond {bond!r}: {what} must be a list of IP addresses")
    for a in value:
        try:
            if not isinstance(a, str):
                raise ValueError
            ipaddress.ip_address(a)
        except ValueError:
            raise InvalidAnnotation(
                f"{BONDS_ANNOTATION}: bond {bond!r}: {what} entry {a!r} is not an IP address"
            ) from None
    return tuple(value)


def _routes(value: Any, bond: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, list):
        raise InvalidAnnotation(f"{BONDS_ANNOTATION}: bond {bond!r}: routes must be a list of {{to, via}}")
    out = []
    for r in value:
        if not isinstance(r, Mapping) or set(r) != {"to", "via"}:
            raise InvalidAnnotation(f"{BONDS_ANNOTATION}: bond {bond!r}: route {r!r} must be {{to: CIDR, via: IP}}")
        try:
            ipaddress.ip_network(str(r["to"]), strict=False)
            ipaddress.ip_address(str(r["via"]))
        except ValueError:
            raise InvalidAnnotation(f"{BONDS_ANNOTATION}: bond {bond!r}: route {r!r} is not a CIDR via an IP") from None
        out.append((str(r["to"]), str(r["via"])))
    return tuple(out)


def _miimon(value: Any, bond: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidAnnotation(
            f"{BONDS_ANNOTATION}: bond {bond!r}: miimon {value!r} is not a non-negative integer (ms)"
        )
    return value


def parse_bonds(text: str | None) -> tuple[BondSpec, ...]:
    """Parse the annotation value (absent or empty → no bonds); checks its own shape only."""
    if text is None or not text.strip():
        return ()
    try:
        doc = json.loads(text)
    except ValueError as err:
        raise InvalidAnnotation(f"{BONDS_ANNOTATION} is not JSON: {err}") from None
    if not isinstance(doc, list):
        raise InvalidAnnotation(f"{BONDS_ANNOTATION} must be a JSON list of bonds")
    bonds: list[BondSpec] = []
    used: dict[str, str] = {}
    for i, raw in enumerate(doc):
        if not isinstance(raw, Mapping):
            raise InvalidAnnotation(f"{BONDS_ANNOTATION}[{i}] must be an object")
        name = raw.get("name")
        if not isinstance(name, str) or not _BOND_NAME.match(name):
            raise InvalidAnnotation(
                f"{BONDS_ANNOTATION}[{i}]: name {name!r} is not an interface name (letter first, at most 15 characters)"
            )
        extra = sorted(set(raw) - _KEYS)
        if extra:
            raise InvalidAnnotation(f"{BONDS_ANNOTATION}: bond {name!r}: unknown keys {extra}")
        if any(b.name == name for b in bonds):
            raise InvalidAnnotation(f"{BONDS_ANNOTATION}: bond {name!r} is declared twice")
        members = raw.get("members")
        if not isinstance(members, list) or len(members) < 1 or not all(isinstance(m, str) and m for m in members):
            raise InvalidAnnotation(
                f"{BONDS_ANNOTATION}: bond {name!r}: members must be a non-empty list of interface names"
            )
        for m in members:
            if m in used:
                raise InvalidAnnotation(
                    f"{BONDS_ANNOTATION}: bond {name!r}: member {m!r} is already a member of bond {used[m]!r}"
                )
            used[m] = name
        mode = raw.get("mode", "active-backup")
        if mode not in BOND_MODES:
            raise InvalidAnnotation(
                f"{BONDS_ANNOTATION}: bond {name!r}: mode {mode!r} is not one of {', '.join(BOND_MODES)}"
            )
        fom = raw.get("failOverMac")
        if fom is not None and fom not in FAIL_OVER_MAC:
            raise InvalidAnnotation(
                f"{BONDS_ANNOTATION}: bond {name!r}: failOverMac {fom!r} is not one of {', '.join(FAIL_OVER_MAC)}"
            )
        ip = GuestIpConfig(
            addresses=_cidrs(raw.get("addresses", []), name),
            gateways=_ips(raw.get("gateways", []), name, "gateways"),
            routes=_routes(raw.get("routes", []), name),
        )
        bonds.append(BondSpec(name, tuple(members), mode, _miimon(raw.get("miimon", 100), name), fom, ip))
    return tuple(bonds)


def vmi_bonds(vmi: Vmi) -> tuple[BondSpec, ...]:
    """The VMI's bonds, checked against its interfaces (member exists and has macAddress)."""
    bonds = parse_bonds(vmi.annotations.get(BONDS_ANNOTATION))
    for bond in bonds:
        for member in bond.members:
            iface = vmi.interface(member)
            if iface is None:
                raise InvalidAnnotation(
                    f"{BONDS_ANNOTATION}: bond {bond.name!r}: member {member!r} is not an interface of the VMI"
                )
            if iface.mac is None:
                raise InvalidAnnotation(
                    f"{BONDS_ANNOTATION}: bond {bond.name!r}: member interface {member!r} has no macAddress (the guest matches bond members by MAC)"
                )
            if iface.name == bond.name:
                raise InvalidAnnotation(
                    f"{BONDS_ANNOTATION}: bond {bond.name!r} has the same name as one of its members"
                )
    return bonds
