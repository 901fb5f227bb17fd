"""``kvnet render``: the libvirt NICs and guest network data a VM would get, offline.

Inputs are files: the VM (a VirtualMachine or VirtualMachineInstance, YAML or JSON),
optionally its NADs, KubeVirt's network-info, the pod's links and a domain to splice
into. Without ``--pod-links`` the pod is assumed plumbed as the binding CNI does it (see
:func:`assumed_plumbing`: ``kvnet.core.plumbing``, the binding's own model); the translation
and rendering are the sidecar's own.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from kvnet.core import bindrecord, naming
from kvnet.core.errors import DecodeFailure, InvalidConfig, IOFailure, NetworkNotFound
from kvnet.core.model import REDIRECT_KINDS, BindingRecord, GuestIpConfig, NetworkInfoEntry, PodFacts, PodLink, is_mac
from kvnet.core.plumbing import Macvtap, Plumbing, VfioVf, pod_links, tap_plumbing
from kvnet.domain import pipeline
from kvnet.domain.networkinfo import parse_network_info
from kvnet.domain.render import render_plan
from kvnet.domain.translate import pod_iface_name
from kvnet.domain.vmi import Vmi, parse_vmi
from kvnet.meta.nad import RESOURCE_NAME

log = logging.getLogger(__name__)

VM_KINDS = ("VirtualMachine", "VirtualMachineInstance")
NAD_KIND = "NetworkAttachmentDefinition"
DEFAULT_MTU = 1500


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("vm", help="VirtualMachine or VirtualMachineInstance (YAML or JSON; may also hold NADs)")
    parser.add_argument("nads", nargs="*", help="NetworkAttachmentDefinition files (YAML or JSON, multi-document)")
    parser.add_argument("--network-info", metavar="FILE", help="KubeVirt's network-info JSON (needed for SR-IOV NICs)")
    parser.add_argument(
        "--pod-links", metavar="FILE", help="the pod's links as JSON or YAML (default: assume the binding CNI's result)"
    )
    parser.add_argument("--domain", metavar="FILE", help="a domain XML to splice the NICs into (printed whole)")
    parser.add_argument("--binding-name", default="kvnet", help="the binding plugin name in the VMI (default: kvnet)")
    parser.add_argument(
        "--only", choices=("xml", "network-data"), help="print only the XML or only the guest network data"
    )
    parser.set_defaults(func=run)


# --- input files ------------------------------------------------------------------


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as err:
        raise IOFailure(f"cannot read {path}: {err.strerror}") from None


def load_documents(path: str) -> list[dict[str, Any]]:
    """All mapping documents of a YAML/JSON file (a ``List`` is flattened)."""
    try:
        docs = [d for d in yaml.safe_load_all(_read(path)) if d is not None]
    except yaml.YAMLError as err:
        raise DecodeFailure(f"{path} is not YAML or JSON: {err}") from None
    out: list[dict[str, Any]] = []
    for doc in docs:
        if not isinstance(doc, dict):
            raise DecodeFailure(f"{path}: every document must be an object")
        if doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            out.extend(d for d in doc["items"] if isinstance(d, dict))
        else:
            out.append(doc)
    return out


def _nad_key(nad: Mapping[str, Any]) -> str:
    meta = nad.get("metadata") or {}
    return f"{meta.get('namespace', 'default')}/{meta.get('name', '')}"


def _nad_config(nad: Mapping[str, Any]) -> dict[str, Any]:
    raw = (nad.get("spec") or {}).get("config") or "{}"
    try:
        conf = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError as err:
        raise DecodeFailure(f"NAD {_nad_key(nad)}: spec.config is not JSON: {err}") from None
    if not isinstance(conf, dict):
        raise DecodeFailure(f"NAD {_nad_key(nad)}: spec.config is not a JSON object")
    if "plugins" in conf and isinstance(conf["plugins"], list) and conf["plugins"]:
        first = conf["plugins"][0]
        return {**first, "mtu": first.get("mtu", conf.get("mtu"))} if isinstance(first, dict) else {}
    return conf


def parse_pod_links(doc: Any) -> dict[str, PodLink]:
    """``--pod-links``: a list of ``{name, mac, mtu, kind, master, up, multiQueue, ifalias | record}``.

    ``ifalias`` is the binding CNI's record text as it appears in the netns;
    ``record`` is the same as an object ``{originalMac, mtu, addresses, gateways, routes}``.
    """
    if isinstance(doc, Mapping) and "links" in doc:
        doc = doc["links"]
    if not isinstance(doc, list):
        raise DecodeFailure("pod links must be a list of links (or {links: [...]})")
    links: dict[str, PodLink] = {}
    for i, raw in enumerate(doc):
        if not isinstance(raw, Mapping) or not isinstance(raw.get("name"), str):
            raise DecodeFailure(f"pod links[{i}] must be an object with a name")
        name = raw["name"]
        problem = naming.ifname_problem(name)
        if problem:
            raise DecodeFailure(f"pod link {name!r}: {problem}")
        mac = raw.get("mac", "")
        if not is_mac(mac):
            raise DecodeFailure(f"pod link {name!r}: mac {mac!r} is not a MAC address")
        mtu = raw.get("mtu", DEFAULT_MTU)
        if isinstance(mtu, bool) or not isinstance(mtu, int):
            raise DecodeFailure(f"pod link {name!r}: mtu {mtu!r} is not an integer")
        record = bindrecord.decode(raw["ifalias"]) if raw.get("ifalias") else _record(raw.get("record"), name)
        links[name] = PodLink(
            name=name,
            mac=mac.lower(),
            mtu=mtu,
            kind=str(raw.get("kind", "")),
            master=raw.get("master"),
            up=bool(raw.get("up", True)),
            multi_queue=bool(raw.get("multiQueue", False)),
            record=record,
        )
    return links


def _record(raw: Any, link: str) -> BindingRecord | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise DecodeFailure(f"pod link {link!r}: record must be an object")
    routes = tuple((str(r["to"]), str(r.get("via", ""))) for r in raw.get("routes", []))
    ip = GuestIpConfig(tuple(raw.get("addresses", [])), tuple(raw.get("gateways", [])), routes)
    record = BindingRecord(
        original_mac=str(raw.get("originalMac", "")).lower(), mtu=int(raw.get("mtu", DEFAULT_MTU)), ip=ip
    )
    bindrecord.encode(record)  # validates (InvalidConfig names the problem)
    return record


# --- the assumed pod ----------------------------------------------------------------


def placeholder_mac(vmi: Vmi, network: str) -> str:
    """A stable, locally administered MAC standing in for one the attachment's plugin would pick."""
    return naming.stand_in_mac(f"{vmi.namespace}/{vmi.name}/{network}")


def _static_ip(conf: Mapping[str, Any]) -> GuestIpConfig:
    ipam = conf.get("ipam") or {}
    if not isinstance(ipam, Mapping) or ipam.get("type") != "static":
        return GuestIpConfig()
    addresses, gateways = [], []
    for a in ipam.get("addresses") or []:
        if isinstance(a, Mapping) and isinstance(a.get("address"), str):
            addresses.append(a["address"])
            if isinstance(a.get("gateway"), str):
                gateways.append(a["gateway"])
    routes = tuple(
        (str(r["dst"]), str(r.get("gw", ""))) for r in ipam.get("routes") or [] if isinstance(r, Mapping) and "dst" in r
    )
    return GuestIpConfig(tuple(addresses), tuple(gateways), routes)


def assumed_plumbing(
    vmi: Vmi, nads: Mapping[str, Mapping[str, Any]], info: Mapping[str, NetworkInfoEntry], binding_name: str
) -> list[Plumbing]:
    """The pod as the binding CNI leaves it, for every interface bound to ``binding_name``
    (``kvnet.core.plumbing``, the binding's own model of it):

    - network-info has a PCI device-info, or the NAD is SR-IOV (``resourceName`` or type
      ``sriov``): a VFIO VF — no link (the hostdev source comes from network-info);
    - the NAD's type is ``macvtap``: the pod interface is a macvtap;
    - network-info has a ``vhost-user`` device-info: no link (the socket is the NIC); a
      ``userspace`` NAD without one is an error (its socket path is the CNI's to pick);
    - otherwise a tap behind the pod interface, by the binding's ``auto`` mode rule:
      redirected for a ``macvlan`` or ``ipvlan`` NAD, else bridged (a veth pod link); the
      record carries the original MAC, the NAD's MTU and its static IPAM; the tap is
      multi-queue when the VMI asks for it.
    The attachment's MAC is the VMI's ``macAddress``, else network-info's ``mac``, else a
    stable placeholder.
    """
    out: list[Plumbing] = []
    for iface in vmi.interfaces:
        if iface.kind != "binding" or iface.binding != binding_name or iface.state == "absent":
            continue
        network = vmi.network(iface.name)
        pod_iface = pod_iface_name(vmi, network, PodFacts())
        entry = info.get(iface.name)
        nad = _find_nad(network.network_name, vmi.namespace, nads) if network.network_name else None
        conf = _nad_config(nad) if nad else {}
        annotations = ((nad or {}).get("metadata") or {}).get("annotations") or {}
        if entry and entry.device_info and entry.device_info.type == "vhost-user":
            continue  # the attachment's socket, no link: the translation reads it from network-info
        if conf.get("type") == "userspace":
            raise InvalidConfig(
                f"interface {iface.name!r}: NAD {network.network_name!r} is a userspace-CNI (vhost-user) attachment, whose "
                "socket path the CNI picks at pod start: give --network-info with its vhost-user device-info"
            )
        if (
            (entry and entry.device_info and entry.device_info.type == "pci")
            or RESOURCE_NAME in annotations
            or conf.get("type") == "sriov"
        ):
            out.append(VfioVf(pod_iface))
            continue
        mac = iface.mac or (entry.mac if entry and entry.mac else None)
        if mac is None:
            mac = placeholder_mac(vmi, iface.name)
            log.info(
                "interface %r: no macAddress and no network-info mac: %s stands in for the MAC the attachment will get",
                iface.name,
                mac,
            )
        nad_mtu = conf.get("mtu")
        mtu: int = nad_mtu if isinstance(nad_mtu, int) else (entry.mtu if entry and entry.mtu else DEFAULT_MTU)
        if conf.get("type") == "macvtap":
            out.append(Macvtap(pod_iface, mac, mtu))
            continue
        record = BindingRecord(original_mac=mac, mtu=mtu, ip=_static_ip(conf))
        kind = conf.get("type") if conf.get("type") in REDIRECT_KINDS else "veth"
        out.append(tap_plumbing(pod_iface, record, str(kind), multi_queue=vmi.multiqueue))
    return out


def assumed_pod_links(
    vmi: Vmi, nads: Mapping[str, Mapping[str, Any]], info: Mapping[str, NetworkInfoEntry], binding_name: str
) -> dict[str, PodLink]:
    """The links of :func:`assumed_plumbing`'s pod, as the sidecar would read them."""
    return pod_links(assumed_plumbing(vmi, nads, info, binding_name))


def _find_nad(network_name: str, namespace: str, nads: Mapping[str, Mapping[str, Any]]) -> Mapping[str, Any] | None:
    key = network_name if "/" in network_name else f"{namespace}/{network_name}"
    return nads.get(key)


def check_nads(vmi: Vmi, nads: Mapping[str, Mapping[str, Any]]) -> None:
    """When NADs are given, every Multus network of the VMI must be among them."""
    if not nads:
        return
    for network in vmi.networks:
        if network.network_name and _find_nad(network.network_name, vmi.namespace, nads) is None:
            raise NetworkNotFound(
                f"interface {network.name!r}: NetworkAttachmentDefinition {network.network_name!r} is not in the given files "
                f"(have {', '.join(sorted(nads))})"
            )


# --- the command --------------------------------------------------------------------


def render_outputs(args: argparse.Namespace) -> tuple[str, str | None]:
    """(XML text, guest network data YAML or None) for the parsed arguments."""
    docs = load_documents(args.vm)
    vm_docs = [d for d in docs if d.get("kind") in VM_KINDS]
    if not vm_docs and docs and "kind" not in docs[0]:
        vm_docs = docs[:1]
    if len(vm_docs) != 1:
        raise DecodeFailure(
            f"{args.vm} must hold exactly one VirtualMachine or VirtualMachineInstance, found {len(vm_docs)}"
        )
    vm_doc = vm_docs[0]
    nad_docs = [d for d in docs if d.get("kind") == NAD_KIND] + [
        d for p in args.nads for d in load_documents(p) if d.get("kind") == NAD_KIND
    ]
    vmi = parse_vmi(vm_doc)
    nads = {}
    for nad in nad_docs:
        meta = nad.setdefault("metadata", {})
        meta.setdefault("namespace", vmi.namespace)
        nads[_nad_key(nad)] = nad
    check_nads(vmi, nads)
    info = parse_network_info(_read(args.network_info)) if args.network_info else {}
    if args.pod_links:
        links = parse_pod_links(load_documents_or_list(args.pod_links))
    else:
        links = assumed_pod_links(vmi, nads, info, args.binding_name)
    domain = _read(args.domain) if args.domain else None
    facts = PodFacts(links=links, network_info=info)
    # the sidecar's own calls (kvnet.domain.pipeline), so the two cannot drift
    if domain is not None:
        xml_text = pipeline.define_domain(domain, vm_doc, facts, binding_name=args.binding_name)
    else:
        # no domain to splice into: the NICs alone; the hostdevs of sriov: {} bond members
        # are KubeVirt's to render, so their PCI addresses may be unknown (as in PreCloudInitIso)
        wrapper = ET.Element("devices")
        wrapper.extend(render_plan(pipeline.plan_for(vm_doc, facts, binding_name=args.binding_name)))
        ET.indent(wrapper, space="  ")
        xml_text = ET.tostring(wrapper, encoding="unicode")
    network_data = pipeline.cloud_init_network_data(
        vm_doc, facts, user_network_data=None, binding_name=args.binding_name
    )
    return xml_text, network_data


def load_documents_or_list(path: str) -> Any:
    try:
        return yaml.safe_load(_read(path))
    except yaml.YAMLError as err:
        raise DecodeFailure(f"{path} is not YAML or JSON: {err}") from None


def run(args: argparse.Namespace, out: Any = None) -> int:
    out = out or sys.stdout
    xml_text, network_data = render_outputs(args)
    if args.only != "network-data":
        out.write(xml_text.rstrip("\n") + "\n")
    if args.only != "xml":
        if args.only is None:
            out.write(
                "# guest network data (cloud-init network config v2)\n" if network_data else "# no guest network data\n"
            )
        if network_data:
            out.write(network_data)
    return 0


def main(argv: Sequence[str]) -> int:
    """Run as ``kvnet render ...`` without the top-level dispatcher (tests)."""
    parser = argparse.ArgumentParser(prog="kvnet render")
    register(parser)
    args = parser.parse_args(list(argv))
    return int(args.func(args))
