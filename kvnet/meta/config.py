"""The meta-plugin's own network config (what a Multus ``00-multus.conf`` holds).

Pure: bytes or a decoded mapping in, a frozen :class:`MultusConfig` out. Keys are
matched as Go's ``encoding/json`` matches them (exact name first, else ignoring case),
unknown keys are ignored, defaults are Multus 4.2's, and bad configs raise
:class:`~kvnet.core.errors.InvalidConfig` (or :class:`~kvnet.core.errors.DecodeFailure` for bytes
that are not a JSON object of the right types) with Multus's ``LoadNetConf`` messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kvnet.core.errors import DecodeFailure, InvalidConfig
from kvnet.core.gojson import GoJsonError, GoTypeError, go_fields, go_json_kind, go_loads, go_type_error
from kvnet.meta.nad import delegate_problem

DEFAULT_CNI_DIR = "/var/lib/cni/multus"
DEFAULT_CONF_DIR = "/etc/cni/multus/net.d"
DEFAULT_BIN_DIR = "/opt/cni/bin"
DEFAULT_MULTUS_NAMESPACE = "kube-system"
DEFAULT_GLOBAL_NAMESPACES = ("default",)
DEFAULT_SYSTEM_NAMESPACES = ("kube-system",)
LOG_LEVELS = ("debug", "verbose", "error", "panic")
DEFAULT_LOG_LEVEL = "panic"  # Multus logs nothing below panic unless logLevel says so

_KEYS = (
    "name",
    "type",
    "cniVersion",
    "kubeconfig",
    "clusterNetwork",
    "defaultNetworks",
    "delegates",
    "confDir",
    "cniDir",
    "binDir",
    "logFile",
    "logLevel",
    "logToStderr",
    "logOptions",
    "readinessindicatorfile",
    "namespaceIsolation",
    "globalNamespaces",
    "systemNamespaces",
    "multusNamespace",
    "runtimeConfig",
    "capabilities",
    "retryDeleteOnError",
)
# kvnet's own keys (Multus ignores unknown keys, so a config with them still works there)
_KVNET_KEYS = (
    "delegateTimeout",
    "delegateParallelism",
    "parallelPlugins",
    "inProcessBinding",
    "podResourcesSocket",
    "deviceInfoDir",
    "events",
)
_PREFIX = "LoadNetConf: "

DEFAULT_DELEGATE_TIMEOUT = 60.0  # seconds
MAX_DELEGATE_TIMEOUT = 86400.0  # a day: beyond it a timeout is a mistake (and overflows the kernel's timers)
# attachments of one pod run at once (docs/meta-plugin.md, "Parallel delegates"); 1 is Multus's one by one
DEFAULT_DELEGATE_PARALLELISM = 1
MAX_DELEGATE_PARALLELISM = 64


@dataclass(frozen=True)
class KvnetOptions:
    """kvnet's own config keys, typed once (docs/meta-plugin.md lists them).

    ``delegate_timeout``: seconds before a delegate is killed; ``delegate_parallelism``: how
    many attachments of one pod ADD may run at once (1: one after the other, as Multus);
    ``parallel_plugins``: plugin and IPAM types the operator declares safe to run beside
    others, besides kvnet's own list (``kvnet.meta.plan.PARALLEL_PLUGINS``);
    ``in_process_binding``: run
    kvnet's own binding delegate inside the meta-plugin; ``pod_resources_socket`` and
    ``device_info_dir`` move the kubelet socket and the device-info root (None: the defaults);
    ``events``: post Events on the pod (``kvnet.meta.events``; Multus always does).
    """

    delegate_timeout: float = DEFAULT_DELEGATE_TIMEOUT
    delegate_parallelism: int = DEFAULT_DELEGATE_PARALLELISM
    parallel_plugins: tuple[str, ...] = ()
    in_process_binding: bool = True
    pod_resources_socket: str | None = None
    device_info_dir: str | None = None
    events: bool = True


@dataclass(frozen=True)
class MultusConfig:
    """The meta-plugin config, every Multus key resolved to its value or Multus's default.

    ``delegates`` are the raw delegate configs (conf or conflist), first = main network;
    ``global_namespaces`` is ``globalNamespaces`` split on commas (default ``default``);
    ``raw`` is the whole config as received (for ``prevResult`` and unknown keys).
    """

    name: str
    cni_version: str
    kubeconfig: str | None
    cluster_network: str | None
    default_networks: tuple[str, ...]
    delegates: tuple[Mapping[str, Any], ...]
    conf_dir: str
    cni_dir: str
    bin_dir: str
    log_file: str | None
    log_level: str
    log_to_stderr: bool
    log_options: Mapping[str, Any] | None
    readiness_indicator_file: str | None
    namespace_isolation: bool
    global_namespaces: tuple[str, ...]
    system_namespaces: tuple[str, ...]
    multus_namespace: str
    runtime_config: Mapping[str, Any]
    capabilities: Mapping[str, bool]
    retry_delete_on_error: bool
    kvnet: KvnetOptions
    raw: Mapping[str, Any]

    def namespace_allowed(self, pod_namespace: str, target_namespace: str) -> bool:
        """Namespace isolation: a pod may name NADs in its own namespace or a global one."""
        if not self.namespace_isolation or pod_namespace == target_namespace:
            return True
        return target_namespace in self.global_namespaces

    def is_system_namespace(self, namespace: str) -> bool:
        """Pods here get no ``defaultNetworks`` (Multus's ``systemNamespaces``)."""
        return namespace in self.system_namespaces


def _path(key: str) -> str:
    return f"NetConf.{key}"


def _str(f: Mapping[str, Any], key: str, default: str = "") -> str:
    value = f.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise go_type_error(value, _path(key), "string")
    return value


def _bool(f: Mapping[str, Any], key: str, default: bool) -> bool:
    value = f.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise go_type_error(value, _path(key), "bool")
    return value


def _strs(f: Mapping[str, Any], key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = f.get(key)
    if value is None:
        return default
    if not isinstance(value, list):
        raise go_type_error(value, _path(key), "[]string")
    for item in value:
        if not isinstance(item, str):
            raise go_type_error(item, _path(key), "string")
    return tuple(value)


def _obj(f: Mapping[str, Any], key: str, go_type: str) -> dict[str, Any] | None:
    value = f.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise go_type_error(value, _path(key), go_type)
    return value


def _timeout(f: Mapping[str, Any], key: str) -> float:
    value = f.get(key)
    if value is None:
        return DEFAULT_DELEGATE_TIMEOUT
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise go_type_error(value, _path(key), "float64")
    if not 0 < value <= MAX_DELEGATE_TIMEOUT:
        raise InvalidConfig(
            f"{_PREFIX}{key} must be more than 0 and at most {MAX_DELEGATE_TIMEOUT:g} seconds, not {value}"
        )
    return float(value)


def _parallelism(f: Mapping[str, Any], key: str) -> int:
    value = f.get(key)
    if value is None:
        return DEFAULT_DELEGATE_PARALLELISM
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise go_type_error(value, _path(key), "int")
    if value != int(value) or not 1 <= value <= MAX_DELEGATE_PARALLELISM:
        raise InvalidConfig(f"{_PREFIX}{key} must be a whole number from 1 to {MAX_DELEGATE_PARALLELISM}, not {value}")
    return int(value)


def _options(raw: Mapping[str, Any]) -> KvnetOptions:
    f = go_fields(raw, _KVNET_KEYS)
    return KvnetOptions(
        delegate_timeout=_timeout(f, "delegateTimeout"),
        delegate_parallelism=_parallelism(f, "delegateParallelism"),
        parallel_plugins=_strs(f, "parallelPlugins", ()),
        in_process_binding=_bool(f, "inProcessBinding", True),
        pod_resources_socket=_str(f, "podResourcesSocket") or None,
        device_info_dir=_str(f, "deviceInfoDir") or None,
        events=_bool(f, "events", True),
    )


def parse_multus_config(data: bytes | Mapping[str, Any]) -> MultusConfig:
    """Turn the meta-plugin's stdin config into a :class:`MultusConfig`."""
    if isinstance(data, (bytes, bytearray)):
        text = bytes(data).decode("utf-8", errors="replace")
        try:
            raw = go_loads(text)
        except GoJsonError as err:
            raise DecodeFailure(f"{_PREFIX}failed to load netconf: {err}") from None
    else:
        raw = dict(data)
    if not isinstance(raw, dict):
        raise DecodeFailure(
            f"{_PREFIX}failed to load netconf: json: cannot unmarshal {go_json_kind(raw)} "
            "into Go value of type types.NetConf"
        )
    try:
        return _build(raw)
    except GoTypeError as err:
        raise DecodeFailure(f"{_PREFIX}failed to load netconf: {err}") from None


def _build(raw: dict[str, Any]) -> MultusConfig:
    f = go_fields(raw, _KEYS)
    delegates_raw = f.get("delegates")
    if delegates_raw is None:
        delegates_raw = []
    if not isinstance(delegates_raw, list):
        raise go_type_error(delegates_raw, _path("delegates"), "[]map[string]interface {}")
    for item in delegates_raw:
        if not isinstance(item, dict):
            raise go_type_error(item, _path("delegates"), "map[string]interface {}")
    cluster_network = _str(f, "clusterNetwork")
    kubeconfig = _str(f, "kubeconfig")

    if not delegates_raw and not cluster_network:
        raise InvalidConfig(f"{_PREFIX}at least one delegate/clusterNetwork must be specified")
    if cluster_network:
        # LoadNetConf loads the delegates only without clusterNetwork: with it they are
        # ignored, not even checked
        delegates_raw = []
    for idx, conf in enumerate(delegates_raw):
        problem = delegate_problem(conf)
        if problem:
            raise InvalidConfig(f"{_PREFIX}failed to load delegate {idx} config: {problem}")

    global_raw = _str(f, "globalNamespaces")
    global_namespaces = tuple(ns.strip() for ns in global_raw.split(",")) if global_raw else DEFAULT_GLOBAL_NAMESPACES
    level = _str(f, "logLevel").lower()
    capabilities = _obj(f, "capabilities", "map[string]bool") or {}
    for _cap, on in capabilities.items():
        if not isinstance(on, bool):
            raise go_type_error(on, _path("capabilities"), "bool")
    log_options = _obj(f, "logOptions", "logging.LogOptions")
    if log_options is not None:
        opts = go_fields(log_options, ("maxAge", "maxSize", "maxBackups", "compress"))
        for key, value in opts.items():
            want = bool if key == "compress" else int
            if value is not None and (
                not isinstance(value, want) or (want is int and isinstance(value, (bool, float)))
            ):
                raise go_type_error(value, f"NetConf.logOptions.{key}", want.__name__)
        log_options = {k: v for k, v in opts.items() if v is not None}  # the keys as Multus spells them
    runtime_config = _obj(f, "runtimeConfig", "types.RuntimeConfig") or {}
    _str(f, "type")

    return MultusConfig(
        name=_str(f, "name"),
        cni_version=_str(f, "cniVersion"),
        kubeconfig=kubeconfig or None,
        cluster_network=cluster_network or None,
        default_networks=_strs(f, "defaultNetworks", ()),
        delegates=tuple(delegates_raw),
        conf_dir=_str(f, "confDir") or DEFAULT_CONF_DIR,
        cni_dir=_str(f, "cniDir") or DEFAULT_CNI_DIR,
        bin_dir=_str(f, "binDir") or DEFAULT_BIN_DIR,
        log_file=_str(f, "logFile") or None,
        log_level=level if level in LOG_LEVELS else DEFAULT_LOG_LEVEL,
        log_to_stderr=_bool(f, "logToStderr", True),
        log_options=log_options,
        readiness_indicator_file=_str(f, "readinessindicatorfile") or None,
        namespace_isolation=_bool(f, "namespaceIsolation", False),
        global_namespaces=global_namespaces,
        system_namespaces=_strs(f, "systemNamespaces", DEFAULT_SYSTEM_NAMESPACES),
        multus_namespace=_str(f, "multusNamespace") or DEFAULT_MULTUS_NAMESPACE,
        runtime_config=runtime_config,
        capabilities=capabilities,
        retry_delete_on_error=_bool(f, "retryDeleteOnError", False),
        kvnet=_options(raw),
        raw=raw,
    )
