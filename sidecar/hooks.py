"""What the sidecar does on each KubeVirt hook, apart from gRPC.

``KvnetHooks`` turns the bytes virt-launcher sends into a call of the domain pipeline and
back into bytes; ``EchoHooks`` answers with its input (the no-op sidecar used to chain and
to measure). Pod facts (network-info, /sys/class/net) and the translation are passed in as
small Protocols, so tests give fakes and the server and the shim share one code path.
Nothing here writes anything: OnDefineDomain also runs on migration targets, where its
result is thrown away.

Each input is parsed once, up front: the VMI JSON (then the VMI itself, ``kvnet.domain.vmi``),
the domain XML (``kvnet.domain.splice.parse_domain``); the pod is read next, exactly the
links the VMI's kvnet interfaces name (``kvnet.domain.translate.pod_link_query``), into a
plain ``PodFacts``; the translation then runs on those values alone.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kvnet.core.errors import DecodeFailure, KvnetError, RenderError, TryAgainLater
from kvnet.core.model import NetworkInfoEntry, PodFacts, PodLink
from kvnet.domain.splice import DomainXml, MalformedDomain, check_domain_xml, parse_domain
from kvnet.domain.translate import PodLinkQuery, pod_link_query
from kvnet.domain.vmi import BONDS_ANNOTATION, Vmi
from kvnet.domain.vmi import parse_vmi as vmi_spec

log = logging.getLogger("kvnet.sidecar")


# --------------------------------------------------------------------------------------
# Errors specific to the hook calls (they map to gRPC status codes in the server)
# --------------------------------------------------------------------------------------


class BadHookInput(DecodeFailure):
    """virt-launcher sent a VMI, domain or cloud-init data that cannot be read."""


class PodFactsUnavailable(TryAgainLater):
    """network-info or the pod links could not be read (missing, late or malformed)."""


# --------------------------------------------------------------------------------------
# What the hooks need from the outside
# --------------------------------------------------------------------------------------


class Translator(Protocol):
    """The domain pipeline (``kvnet.domain.pipeline``): pure functions of their inputs, parsed already."""

    def define_domain(self, domain: DomainXml, vmi: Vmi, facts: PodFacts, *, binding_name: str) -> str: ...

    def cloud_init_network_data(
        self, vmi: Vmi, facts: PodFacts, *, user_network_data: str | None, binding_name: str
    ) -> str | None: ...


class FactsSource(Protocol):
    """Reads what the pod shows for the given VMI interfaces (read-only), all of it now.

    ``query`` names the links the translation will look at (``kvnet.domain.translate``);
    without one every link is read.
    """

    def read(self, interfaces: Sequence[str], query: PodLinkQuery | None = None) -> PodFacts: ...


class Hooks(Protocol):
    """What the gRPC server (and the shim) call; bytes in, bytes out."""

    name: str

    def on_define_domain(self, domain_xml: bytes, vmi_json: bytes) -> bytes: ...

    def pre_cloud_init_iso(
        self, vmi_json: bytes, cloud_init_data: bytes, no_cloud_source: bytes
    ) -> CloudInitResult: ...


@dataclass(frozen=True)
class CloudInitResult:
    """PreCloudInitIso's answer: ``CloudInitData`` JSON and the legacy NoCloud source JSON."""

    cloud_init_data: bytes
    no_cloud_source: bytes


# --------------------------------------------------------------------------------------
# Parsing what virt-launcher sends
# --------------------------------------------------------------------------------------


def _json_object(data: bytes | str, what: str) -> dict[str, Any]:
    """``data`` decoded as a JSON object; ``what`` names it in the error."""
    try:
        parsed = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BadHookInput(f"{what} JSON is malformed: {err}") from None
    if not isinstance(parsed, dict):
        raise BadHookInput(f"{what} JSON is a {type(parsed).__name__}, expected an object")
    return parsed


def parse_vmi(vmi_json: bytes | str) -> dict[str, Any]:
    """The VMI JSON as a dict, checked just enough to find its interfaces."""
    vmi = _json_object(vmi_json, "VMI")
    spec = vmi.get("spec")
    if not isinstance(spec, dict):
        raise BadHookInput(f"VMI {vmi_name(vmi)} has no spec object")
    domain = spec.get("domain", {})
    devices = domain.get("devices", {}) if isinstance(domain, dict) else None
    if not isinstance(devices, dict):
        raise BadHookInput(f"VMI {vmi_name(vmi)}: spec.domain.devices is not an object")
    interfaces = devices.get("interfaces", [])
    if not isinstance(interfaces, list):
        raise BadHookInput(f"VMI {vmi_name(vmi)}: spec.domain.devices.interfaces is not a list")
    for i, iface in enumerate(interfaces):
        if not isinstance(iface, dict) or not isinstance(iface.get("name"), str) or not iface["name"]:
            raise BadHookInput(f"VMI {vmi_name(vmi)}: spec.domain.devices.interfaces[{i}] has no name")
        binding = iface.get("binding")
        if binding is not None and not (isinstance(binding, dict) and isinstance(binding.get("name"), str)):
            raise BadHookInput(f"VMI {vmi_name(vmi)}: interface {iface['name']}: binding must be an object with a name")
    return vmi


def vmi_name(vmi: Mapping[str, Any]) -> str:
    """``namespace/name`` for log and error messages."""
    meta = vmi.get("metadata")
    if not isinstance(meta, Mapping):
        return "<unnamed>"
    return f"{meta.get('namespace', '?')}/{meta.get('name', '?')}"


def bound_interfaces(vmi: Mapping[str, Any], binding_name: str) -> list[str]:
    """Names of the VMI interfaces whose ``binding.name`` is this plugin's name."""
    interfaces = vmi["spec"].get("domain", {}).get("devices", {}).get("interfaces", [])
    return [
        i["name"] for i in interfaces if isinstance(i.get("binding"), dict) and i["binding"].get("name") == binding_name
    ]


def declares_bonds(vmi: Mapping[str, Any]) -> bool:
    annotations = vmi.get("metadata", {}).get("annotations") if isinstance(vmi.get("metadata"), dict) else None
    return isinstance(annotations, dict) and bool(annotations.get(BONDS_ANNOTATION))


def read_domain(domain_xml: bytes | str, *, what: str = "domain XML") -> DomainXml:
    """The domain parsed, once, after checking it is UTF-8 and a parseable ``<domain>``."""
    with _domain_faults(what):
        if isinstance(domain_xml, bytes):
            domain_xml.decode()
        domain = parse_domain(domain_xml)
    return domain


def check_domain(domain_xml: bytes | str, *, what: str = "domain XML") -> str:
    """The domain as text after checking it is a parseable ``<domain>`` (not read any further)."""
    with _domain_faults(what):
        text = domain_xml.decode() if isinstance(domain_xml, bytes) else domain_xml
        check_domain_xml(domain_xml)
    return text


@contextmanager
def _domain_faults(what: str) -> Iterator[None]:
    """A domain that is not UTF-8, does not parse or is not a ``<domain>``, as ``BadHookInput``."""
    try:
        yield
    except UnicodeDecodeError as err:
        raise BadHookInput(f"{what} is malformed: {err}") from None
    except MalformedDomain as err:
        if err.syntax is not None:
            raise BadHookInput(f"{what} is malformed: {err.syntax}") from None
        raise BadHookInput(f"{what} has root <{err.root}>, expected <domain>") from None


def parse_cloud_init_data(data: bytes | str) -> dict[str, Any]:
    parsed = _json_object(data, "cloudInitData")
    nd = parsed.get("NetworkData")
    if nd is not None and not isinstance(nd, str):
        raise BadHookInput("cloudInitData NetworkData must be a string")
    return parsed


# --------------------------------------------------------------------------------------
# The hooks
# --------------------------------------------------------------------------------------


class EchoHooks:
    """Answers every hook with its input: a sidecar that changes nothing."""

    def __init__(self, name: str = "echo") -> None:
        self.name = name

    def on_define_domain(self, domain_xml: bytes, vmi_json: bytes) -> bytes:
        return domain_xml

    def pre_cloud_init_iso(self, vmi_json: bytes, cloud_init_data: bytes, no_cloud_source: bytes) -> CloudInitResult:
        return CloudInitResult(cloud_init_data, no_cloud_source)


class KvnetHooks:
    """kvnet's answers: add the NICs of ``binding.name == name`` interfaces, and their guest network data."""

    def __init__(self, name: str, facts: FactsSource, translator: Translator) -> None:
        self.name = name
        self.facts = facts
        self.translator = translator

    def on_define_domain(self, domain_xml: bytes, vmi_json: bytes) -> bytes:
        vmi = parse_vmi(vmi_json)
        names = bound_interfaces(vmi, self.name)
        if not names:
            log.info("OnDefineDomain %s: no interface uses binding %s, domain unchanged", vmi_name(vmi), self.name)
            return domain_xml
        try:
            domain = read_domain(domain_xml)
        except BadHookInput as err:
            raise BadHookInput(f"interfaces {', '.join(names)}: {err.msg}") from None
        with _unexpected_as_render_error(names):
            spec = vmi_spec(vmi)
            facts = self.facts.read(names, pod_link_query(spec, binding_name=self.name))
            out = self.translator.define_domain(domain, spec, facts, binding_name=self.name)
        try:
            check_domain(out, what="the domain kvnet built")
        except BadHookInput as err:
            raise RenderError(f"interfaces {', '.join(names)}: {err.msg}") from None
        log.info("OnDefineDomain %s: interfaces %s added", vmi_name(vmi), ", ".join(names))
        return out.encode()

    def pre_cloud_init_iso(self, vmi_json: bytes, cloud_init_data: bytes, no_cloud_source: bytes) -> CloudInitResult:
        vmi = parse_vmi(vmi_json)
        names = bound_interfaces(vmi, self.name)
        if not names and not declares_bonds(vmi):
            return CloudInitResult(cloud_init_data, no_cloud_source)
        try:
            data = parse_cloud_init_data(cloud_init_data)
        except BadHookInput as err:
            raise BadHookInput(f"interfaces {', '.join(names) or '(bonds only)'}: {err.msg}") from None
        user = data.get("NetworkData") or None
        with _unexpected_as_render_error(names):
            spec = vmi_spec(vmi)
            facts = self.facts.read(names, pod_link_query(spec, binding_name=self.name))
            merged = self.translator.cloud_init_network_data(
                spec, facts, user_network_data=user, binding_name=self.name
            )
        if merged is None or merged == user:
            return CloudInitResult(cloud_init_data, no_cloud_source)
        data["NetworkData"] = merged
        legacy = legacy_no_cloud_source(no_cloud_source, data)
        log.info("PreCloudInitIso %s: guest network data for %s", vmi_name(vmi), ", ".join(names) or "bonds")
        return CloudInitResult(json.dumps(data).encode(), legacy)


@contextmanager
def _unexpected_as_render_error(names: Sequence[str]) -> Iterator[None]:
    """An exception that is not a kvnet error, raised while reading the pod facts or
    translating, becomes a ``RenderError`` naming the interfaces (gRPC INTERNAL)."""
    try:
        yield
    except KvnetError:
        raise
    except Exception as err:  # a bug in the facts reader or the translator: name the interfaces anyway
        log.error("interfaces %s: unexpected %s", ", ".join(names) or "(bonds only)", type(err).__name__, exc_info=True)
        raise RenderError(
            f"interfaces {', '.join(names) or '(bonds only)'}: unexpected {type(err).__name__}: {err}"
        ) from err


LEGACY_FIELDS = (
    ("userData", "UserData"),
    ("networkData", "NetworkData"),
)  # CloudInitNoCloudSource key, CloudInitData key


def no_cloud_source(cloud_init_data: Mapping[str, Any]) -> bytes:
    """The legacy ``CloudInitNoCloudSource`` JSON virt-launcher sends beside this
    ``CloudInitData``: its non-empty user and network data under the legacy keys."""
    return json.dumps({k: cloud_init_data[K] for k, K in LEGACY_FIELDS if cloud_init_data.get(K)}).encode()


def legacy_no_cloud_source(no_cloud_source: bytes, data: Mapping[str, Any]) -> bytes:
    """The legacy ``CloudInitNoCloudSource`` answer carrying the same user and network data.

    virt-launcher uses it only when the ``CloudInitData`` answer has no UserData or no
    metadata; keeping both in step means the guest gets the network data either way.
    """
    try:
        legacy = json.loads(no_cloud_source) if no_cloud_source else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        legacy = {}
    if not isinstance(legacy, dict):
        legacy = {}
    if data.get("UserData"):
        legacy["userData"] = data["UserData"]
    legacy["networkData"] = data["NetworkData"]
    legacy.pop("networkDataBase64", None)
    legacy.pop("networkDataSecretRef", None)
    return json.dumps(legacy).encode()


# --------------------------------------------------------------------------------------
# Pod facts: network-info (polled: KubeVirt fills it after the pod starts) and links
# --------------------------------------------------------------------------------------


LinkReader = Callable[..., Mapping[str, PodLink]]
"""``read_links(sys_class_net)`` reads every link, ``read_links(sys_class_net, query)`` the
query's (``kvnet.sidecar.podfacts.read_pod_links``)."""


class PodFactsReader:
    """Reads ``/etc/podinfo/network-info`` (bounded poll) and the pod links, nothing else.

    The downward-API file exists from the start but stays empty until KubeVirt writes the
    ``kubevirt.io/network-info`` annotation; it is replaced atomically, so a file that does
    not parse is an error, not a half-written one.
    """

    def __init__(
        self,
        network_info_path: str,
        sys_class_net: str,
        *,
        read_links: LinkReader,
        parse_network_info: Callable[[str], Mapping[str, NetworkInfoEntry]],
        timeout: float = 30.0,
        interval: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        stopping: threading.Event | None = None,
    ) -> None:
        self.network_info_path = Path(network_info_path)
        self.sys_class_net = sys_class_net
        self.read_links = read_links
        self.parse_network_info = parse_network_info
        self.timeout = timeout
        self.interval = interval
        self.clock = clock
        self.sleep = sleep
        self.stopping = stopping  # set when the sidecar shuts down: a waiting call gives up at once

    def read(self, interfaces: Sequence[str], query: PodLinkQuery | None = None) -> PodFacts:
        """network-info, then the links ``query`` names (every link without one), as plain values."""
        text = self._wait_network_info(interfaces)
        try:
            info = self.parse_network_info(text)
        except KvnetError as err:
            raise PodFactsUnavailable(
                f"interfaces {', '.join(interfaces)}: network-info {self.network_info_path} is malformed: {err.msg}"
            ) from None
        unreadable = f"interfaces {', '.join(interfaces)}: cannot read the pod links in {self.sys_class_net}"
        try:
            links = self.read_links(self.sys_class_net) if query is None else self.read_links(self.sys_class_net, query)
        except KvnetError as err:
            raise PodFactsUnavailable(f"{unreadable}: {err.msg}") from None
        except OSError as err:
            raise PodFactsUnavailable(f"{unreadable}: {err}") from None
        return PodFacts(links=dict(links), network_info=dict(info))

    def _wait_network_info(self, interfaces: Sequence[str]) -> str:
        deadline = self.clock() + self.timeout
        while True:
            try:
                text = self.network_info_path.read_text()
            except FileNotFoundError:
                text = ""
            except (OSError, UnicodeDecodeError) as err:
                raise PodFactsUnavailable(
                    f"interfaces {', '.join(interfaces)}: cannot read network-info {self.network_info_path}: {err}"
                ) from None
            if text.strip():
                return text
            if self.stopping is not None and self.stopping.is_set():
                raise PodFactsUnavailable(
                    f"interfaces {', '.join(interfaces)}: the sidecar is shutting down while waiting for network-info"
                )
            if self.clock() >= deadline:
                raise PodFactsUnavailable(
                    f"interfaces {', '.join(interfaces)}: network-info {self.network_info_path} still empty after "
                    f"{self.timeout:g} s (is the binding registered with downwardAPI: device-info?)"
                )
            if self.stopping is not None:
                self.stopping.wait(self.interval)
            else:
                self.sleep(self.interval)
