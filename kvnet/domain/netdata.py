"""Guest network configuration (cloud-init network config v2) for a VM NIC plan.

Two things need the guest's cooperation: a bond (the host cannot bond VFIO VFs for the
guest) and the attachment's IPAM addresses, which the binding CNI took from the pod and
kept in its record. Both are written as netplan-style v2 ``ethernets`` matched by MAC and
``bonds``; the sidecar hands the result to KubeVirt through PreCloudInitIso, merged with
the user's own NetworkData without overwriting any of it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

import yaml

from kvnet.core import naming
from kvnet.core.errors import TranslationError
from kvnet.core.model import GuestBond, GuestIpConfig, VmNic, VmNicPlan

DEFAULT_V4 = "0.0.0.0/0"
DEFAULT_V6 = "::/0"
_ID_SECTIONS = ("ethernets", "bonds", "bridges", "vlans", "wifis", "tunnels", "vrfs", "modems")


def _l3(ip: GuestIpConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if ip.addresses:
        out["addresses"] = list(ip.addresses)
    routes: list[dict[str, str]] = []
    for gw in ip.gateways:
        to = DEFAULT_V6 if ipaddress.ip_address(gw).version == 6 else DEFAULT_V4
        routes.append({"to": to, "via": gw})
    for dest, via in ip.routes:
        route = {"to": dest, "via": via} if via else {"to": dest}  # via "": a device route
        if route not in routes:
            routes.append(route)
    if routes:
        out["routes"] = routes
    return out


def _ethernet(nic: VmNic) -> dict[str, Any]:
    if not nic.mac:
        raise TranslationError(
            f"interface {nic.name!r}: the guest needs configuration for it but it has no MAC to match"
        )
    out: dict[str, Any] = {"match": {"macaddress": nic.mac}}
    if naming.ifname_problem(nic.name) is None:
        out["set-name"] = nic.name
    return out


def _bond(bond: GuestBond) -> dict[str, Any]:
    params: dict[str, Any] = {"mode": bond.mode}
    if bond.miimon is not None:
        params["mii-monitor-interval"] = bond.miimon
    if bond.fail_over_mac is not None:
        params["fail-over-mac-policy"] = bond.fail_over_mac
    return {"interfaces": [m.name for m in bond.members], "parameters": params, **_l3(bond.ip)}


def guest_network_data(plan: VmNicPlan) -> dict[str, Any] | None:
    """Network config v2 for the plan; None when the guest needs nothing from kvnet."""
    members = {m.name for b in plan.bonds for m in b.members}
    ethernets: dict[str, Any] = {}
    for bond in plan.bonds:
        for member in bond.members:
            ethernets[member.name] = _ethernet(member)
    for nic in plan.nics:
        if nic.name in members:
            continue
        l3 = _l3(nic.ip)
        if l3:
            ethernets[nic.name] = {**_ethernet(nic), **l3}
    if not ethernets and not plan.bonds:
        return None
    out: dict[str, Any] = {"version": 2, "ethernets": ethernets}
    if plan.bonds:
        out["bonds"] = {b.name: _bond(b) for b in plan.bonds}
    return out


def dump(data: Mapping[str, Any]) -> str:
    return str(yaml.safe_dump(dict(data), sort_keys=False, default_flow_style=False))


def _macs(section: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    if isinstance(section, Mapping):
        for key, value in section.items():
            match = value.get("match") if isinstance(value, Mapping) else None
            mac = match.get("macaddress") if isinstance(match, Mapping) else None
            if isinstance(mac, str):
                out[mac.lower()] = str(key)
    return out


def merge_network_data(user: str | None, ours: Mapping[str, Any]) -> str:
    """The user's NetworkData with ours added; any conflict is an error, never an overwrite."""
    if user is None or not user.strip():
        return dump(ours)
    try:
        doc = yaml.safe_load(user)
    except yaml.YAMLError as err:
        raise TranslationError(f"the VMI's cloud-init NetworkData is not YAML/JSON: {err}") from None
    if not isinstance(doc, Mapping):
        raise TranslationError("the VMI's cloud-init NetworkData is not a mapping")
    wrapped = "network" in doc and isinstance(doc["network"], Mapping)
    body: dict[str, Any] = dict(doc["network"] if wrapped else doc)
    if body.get("version") != 2:
        raise TranslationError(
            f"the VMI's cloud-init NetworkData is version {body.get('version')!r}; kvnet's guest network data "
            "(bonds, addresses) is version 2 and cannot be merged into it"
        )
    user_ids = {str(k): s for s in _ID_SECTIONS if isinstance(body.get(s), Mapping) for k in body[s]}
    user_macs = _macs(body.get("ethernets"))
    for section in ("ethernets", "bonds"):
        for key, value in ours.get(section, {}).items():
            if key in user_ids:
                raise TranslationError(
                    f"NetworkData conflict: the VMI's cloud-init NetworkData already defines {user_ids[key]}.{key}, which kvnet needs for interface or bond {key!r}"
                )
            mac = value.get("match", {}).get("macaddress") if section == "ethernets" else None
            if mac and mac.lower() in user_macs:
                raise TranslationError(
                    f"NetworkData conflict: the VMI's cloud-init NetworkData already matches MAC {mac} (ethernets.{user_macs[mac.lower()]}), "
                    f"which kvnet configures for interface {key!r}"
                )
        if ours.get(section):
            merged = dict(body.get(section) or {})
            merged.update(ours[section])
            body[section] = merged
    return dump({**doc, "network": body} if wrapped else body)
