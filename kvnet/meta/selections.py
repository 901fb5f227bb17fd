"""``k8s.v1.cni.cncf.io/networks`` and ``v1.multus-cni.io/default-network``: what a pod asks for.

Parsed and formatted exactly as Multus 4.2 does, short form (``ns/name@ifname,...``) and
JSON form. Pure functions: every malformed value raises
:class:`~kvnet.core.errors.InvalidAnnotation` (CNI code 7) with the message Multus prints
for it, so a user reading kvnet's error can search Multus's docs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from kvnet.core.errors import InvalidAnnotation
from kvnet.core.gojson import (
    GoTypeError,
    as_int,
    as_list,
    as_str,
    go_fields,
    go_ip_string,
    go_json_kind,
    go_quote,
    go_text,
    go_type_error,
    load_annotation,
    parse_cidr,
    parse_ip,
    parse_mac_ok,
)
from kvnet.core.model import NetworkSelection
from kvnet.core.naming import MAX_IFNAME, ifname_problem

NETWORKS = "k8s.v1.cni.cncf.io/networks"
DEFAULT_NETWORK = "v1.multus-cni.io/default-network"

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_JSON_HINT = re.compile(r'[\[{"]')
_SHORT_FORM_BAD_CHARS = set(" \t\n\v\f\r/")  # what Multus's short-form parser refuses with its own message

_PREFIX = "parsePodNetworkAnnotation: "
_OBJ_PREFIX = _PREFIX + "parsePodNetworkObjectName: "
_JSON_PREFIX = _PREFIX + "failed to parse pod Network Attachment Selection Annotation JSON format: "


_PORT_FIELDS = ("hostPort", "containerPort", "protocol", "hostIP")
_BANDWIDTH_FIELDS = ("ingressRate", "ingressBurst", "egressRate", "egressBurst")
_ELEMENT_FIELDS = (
    "name",
    "namespace",
    "ips",
    "mac",
    "infiniband-guid",
    "interface",
    "interfaceRequest",
    "portMappings",
    "bandwidth",
    "deviceID",
    "cni-args",
    "default-route",
)
_ELEM = "NetworkSelectionElement"


def _port_mapping(value: object) -> dict[str, Any]:
    path = f"{_ELEM}.portMappings"
    if not isinstance(value, dict):
        raise go_type_error(value, path, "types.PortMapEntry")
    f = go_fields(value, _PORT_FIELDS)
    out: dict[str, Any] = {
        "hostPort": as_int(f.get("hostPort"), f"{path}.hostPort"),
        "containerPort": as_int(f.get("containerPort"), f"{path}.containerPort"),
    }
    for key in ("protocol", "hostIP"):
        text = as_str(f.get(key), f"{path}.{key}")
        if text:
            out[key] = text
    return out


def _bandwidth(value: object) -> dict[str, int]:
    path = f"{_ELEM}.bandwidth"
    if not isinstance(value, dict):
        raise go_type_error(value, path, "types.BandwidthEntry")
    f = go_fields(value, _BANDWIDTH_FIELDS)
    return {key: as_int(f.get(key), f"{path}.{key}") for key in _BANDWIDTH_FIELDS}


def _default_route(value: object) -> tuple[str, ...]:
    out = []
    for item in as_list(value, f"{_ELEM}.default-route", "[]net.IP"):
        if item is None:
            continue
        if not isinstance(item, str):
            raise go_type_error(item, f"{_ELEM}.default-route", "net.IP")
        ip = parse_ip(item)
        if ip is None:
            raise InvalidAnnotation(f"{_JSON_PREFIX}invalid IP address: {item}")
        out.append(go_ip_string(ip))
    return tuple(out)


def _element(raw: object, index: int, pod_namespace: str) -> NetworkSelection:
    if raw is None:
        raise InvalidAnnotation(f"{_JSON_PREFIX}element {index} is null")
    if not isinstance(raw, dict):
        raise GoTypeError(f"json: cannot unmarshal {go_json_kind(raw)} into Go value of type types.{_ELEM}")
    f = go_fields(raw, _ELEMENT_FIELDS)
    name = as_str(f.get("name"), f"{_ELEM}.name")
    namespace = as_str(f.get("namespace"), f"{_ELEM}.namespace")
    interface = as_str(f.get("interface"), f"{_ELEM}.interface") or as_str(
        f.get("interfaceRequest"), f"{_ELEM}.interfaceRequest"
    )
    ips = tuple(as_str(i, f"{_ELEM}.ips") for i in as_list(f.get("ips"), f"{_ELEM}.ips", "[]string"))
    mac = as_str(f.get("mac"), f"{_ELEM}.mac")
    guid = as_str(f.get("infiniband-guid"), f"{_ELEM}.infiniband-guid")
    ports = tuple(
        _port_mapping(p)
        for p in as_list(f.get("portMappings"), f"{_ELEM}.portMappings", "[]*types.PortMapEntry")
        if p is not None
    )
    bandwidth = _bandwidth(f["bandwidth"]) if f.get("bandwidth") is not None else None
    device_id = as_str(f.get("deviceID"), f"{_ELEM}.deviceID")
    cni_args = f.get("cni-args")
    if cni_args is not None and not isinstance(cni_args, dict):
        raise go_type_error(cni_args, f"{_ELEM}.cni-args", "map[string]interface {}")
    gateways = _default_route(f.get("default-route"))

    where = f"element {index}"
    if not name:
        raise InvalidAnnotation(f"{_PREFIX}{where} has no network name")
    if not _DNS1123_SUBDOMAIN.match(name) or len(name) > 253:
        raise InvalidAnnotation(
            f"{_PREFIX}{where}: network name {name!r} is not a valid object name "
            "(lower case alphanumeric characters, '-' or '.', starting and ending with an alphanumeric character)"
        )
    if namespace and (not _DNS1123_LABEL.match(namespace) or len(namespace) > 63):
        raise InvalidAnnotation(
            f"{_PREFIX}{where}: namespace {namespace!r} is not a valid namespace name "
            "(lower case alphanumeric characters or '-', starting and ending with an alphanumeric character)"
        )
    if interface:
        problem = ifname_problem(interface)
        if problem:
            raise InvalidAnnotation(f"{_PREFIX}{where}: {problem}")
    return NetworkSelection(
        name=name,
        namespace=namespace or pod_namespace,
        interface=interface or None,
        ips=ips,
        mac=mac or None,
        infiniband_guid=guid or None,
        port_mappings=ports,
        bandwidth=bandwidth,
        device_id=device_id or None,
        cni_args=cni_args,
        default_route=gateways,
    )


# ------------------------------------------------------------------------------------
# k8s.v1.cni.cncf.io/networks
# ------------------------------------------------------------------------------------


def _parse_short_item(item: str, pod_namespace: str) -> NetworkSelection:
    """``[namespace/]name[@ifname]`` as Multus's parsePodNetworkObjectName reads it."""
    slash = item.split("/")
    if len(slash) == 2:
        namespace, rest = slash[0].strip(), slash[1]
    elif len(slash) == 1:
        namespace, rest = "", slash[0]
    else:
        raise InvalidAnnotation(f"{_OBJ_PREFIX}Invalid network object (failed at '/')")
    at = rest.split("@")
    name = at[0].strip()
    ifname = ""
    if len(at) == 2:
        ifname = at[1].strip()
    elif len(at) != 1:
        raise InvalidAnnotation(f"{_OBJ_PREFIX}Invalid network object (failed at '@')")
    for part in (namespace, name):
        if part and not _DNS1123_LABEL.match(part):
            raise InvalidAnnotation(
                f"{_OBJ_PREFIX}Failed to parse: one or more items did not match comma-delimited format "
                "(must consist of lower case alphanumeric characters). Must start and end with an "
                f"alphanumeric character), mismatch @ '{part}'"
            )
    if ifname:
        if len(ifname.encode()) > MAX_IFNAME or any(c in _SHORT_FORM_BAD_CHARS for c in ifname):
            raise InvalidAnnotation(
                f"{_OBJ_PREFIX}Failed to parse interface name: must be less than 15 chars and not contain "
                f"'/' or spaces. interface name '{ifname}'"
            )
        problem = ifname_problem(ifname)
        if problem:
            raise InvalidAnnotation(f"{_OBJ_PREFIX}Failed to parse interface name: {problem}")
    if not name:
        raise InvalidAnnotation(f"{_OBJ_PREFIX}Failed to parse: empty network name in {item!r}")
    return NetworkSelection(name=name, namespace=namespace or pod_namespace, interface=ifname or None)


def _validate_requests(sel: NetworkSelection) -> None:
    """The checks Multus runs after decoding: mac, infiniband-guid, ips."""
    if sel.mac is not None and not parse_mac_ok(sel.mac):
        raise InvalidAnnotation(f"{_PREFIX}failed to mac: address {sel.mac}: invalid MAC address")
    if sel.infiniband_guid is not None and not parse_mac_ok(sel.infiniband_guid):
        raise InvalidAnnotation(
            f"{_PREFIX}failed to validate infiniband GUID: address {sel.infiniband_guid}: invalid MAC address"
        )
    for ip in sel.ips:
        if "/" in ip:
            if parse_cidr(ip) is None:
                raise InvalidAnnotation(f"failed to parse CIDR {go_quote(ip)}: invalid CIDR address: {ip}")
        elif parse_ip(ip) is None:
            raise InvalidAnnotation(f"failed to parse IP address {go_quote(ip)}")


def parse_networks(value: str, pod_namespace: str) -> tuple[NetworkSelection, ...]:
    """Parse the networks annotation (short or JSON form); namespaces default to ``pod_namespace``.

    JSON is used when the value contains ``[``, ``{`` or ``"`` (as Multus decides). A lone
    surrogate in the value is U+FFFD, as in the string client-go decoded for Multus.
    """
    value = go_text(value)
    if value == "":
        raise InvalidAnnotation(f'{_PREFIX}pod annotation does not have "network" as key')
    if _JSON_HINT.search(value):
        data = load_annotation(value, _JSON_PREFIX)
        if data is None:
            return ()
        try:
            if not isinstance(data, list):
                raise GoTypeError(f"json: cannot unmarshal {go_json_kind(data)} into Go value of type []*types.{_ELEM}")
            selections = tuple(_element(raw, i, pod_namespace) for i, raw in enumerate(data))
        except GoTypeError as err:
            raise InvalidAnnotation(f"{_JSON_PREFIX}{err}") from None
    else:
        selections = tuple(_parse_short_item(item.strip(), pod_namespace) for item in value.split(","))
    for sel in selections:
        _validate_requests(sel)
    return selections


def default_route_given(value: str) -> tuple[bool, ...]:
    """Per element of a networks annotation (already parsed by :func:`parse_networks`):
    whether it has a ``default-route`` key that is not null. Go's ``*[]net.IP`` tells an
    empty list (a gateway request without a gateway, which still makes Multus filter the
    other delegates' default routes) from no key, which ``NetworkSelection.default_route``
    does not."""
    if not _JSON_HINT.search(value):
        return ()
    data = load_annotation(value, _JSON_PREFIX)
    if not isinstance(data, list):
        return ()
    return tuple(
        isinstance(raw, dict) and go_fields(raw, _ELEMENT_FIELDS).get("default-route") is not None for raw in data
    )


def parse_default_network(value: str, pod_namespace: str) -> NetworkSelection:
    """Parse ``v1.multus-cni.io/default-network``: exactly one network.

    Multus resolves a namespace-less entry in its ``multusNamespace``, so callers pass
    that namespace here (the parameter keeps the name of ``parse_networks``'s).
    """
    try:
        selections = parse_networks(value, pod_namespace)
    except InvalidAnnotation as err:
        raise InvalidAnnotation(f"tryLoadK8sPodDefaultNetwork: failed to parse CRD object: {err.msg}") from None
    if len(selections) > 1:
        raise InvalidAnnotation(f"tryLoadK8sPodDefaultNetwork: more than one default network is specified: {value}")
    if not selections:
        raise InvalidAnnotation(f"tryLoadK8sPodDefaultNetwork: no default network is specified: {value}")
    return selections[0]


def selection_to_json(sel: NetworkSelection, *, with_namespace: bool = True) -> dict[str, Any]:
    """One selection element as JSON, in Multus's field order, empty fields left out."""
    out: dict[str, Any] = {"name": sel.name}
    if with_namespace and sel.namespace:
        out["namespace"] = sel.namespace
    if sel.ips:
        out["ips"] = list(sel.ips)
    if sel.mac:
        out["mac"] = sel.mac
    if sel.infiniband_guid:
        out["infiniband-guid"] = sel.infiniband_guid
    if sel.interface:
        out["interface"] = sel.interface
    if sel.port_mappings:
        out["portMappings"] = [dict(p) for p in sel.port_mappings]
    if sel.bandwidth is not None:
        out["bandwidth"] = dict(sel.bandwidth)
    if sel.device_id:
        out["deviceID"] = sel.device_id
    if sel.cni_args is not None:
        out["cni-args"] = dict(sel.cni_args)
    if sel.default_route:
        out["default-route"] = list(sel.default_route)
    return out


def format_networks_json(selections: Sequence[NetworkSelection]) -> str:
    """The networks annotation in JSON form (every key kept)."""
    return json.dumps([selection_to_json(s) for s in selections], separators=(",", ":"))


def format_networks_short(selections: Sequence[NetworkSelection]) -> str:
    """The networks annotation in short form ``ns/name@if, ...``; only name, namespace, interface."""
    items = []
    for sel in selections:
        extra = selection_to_json(sel).keys() - {"name", "namespace", "interface"}
        if extra:
            raise InvalidAnnotation(f"network {sel.namespace}/{sel.name}: {sorted(extra)} need the JSON form")
        text = f"{sel.namespace}/{sel.name}" if sel.namespace else sel.name
        items.append(f"{text}@{sel.interface}" if sel.interface else text)
    return ",".join(items)
