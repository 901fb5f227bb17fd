"""``kvnet-cni``: the meta-plugin as a standalone CNI binary (config ``"type": "kvnet"``).

Thin: it builds the production side effects from the config (a light API client from
``kubeconfig``, a delegate runner over ``binDir``, ``CNI_PATH`` and ``/usr/lib/cni``,
Multus-style logging) and hands every command to :mod:`kvnet.meta.commands`. Installed under
the name ``multus`` it runs an existing Multus config unchanged. The hot path imports
no heavy library (no kubernetes client, pyroute2, grpc, jinja2 or libvirt): a CNI
binary starts once per call. The thick-mode daemon reuses :func:`make_handlers` with
long-lived clients.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

from kvnet.cni.delegate import FALLBACK_BIN_DIR, DelegateRunner, Exec, subprocess_exec
from kvnet.cni.protocol import CniRequest, Handler, plugin_main
from kvnet.meta import commands as meta
from kvnet.meta.config import MultusConfig, parse_multus_config

ABOUT = "kvnet meta-plugin (Multus-compatible) that delegates to other CNI plugins"
DEFAULT_DELEGATE_TIMEOUT = 60.0
_LEVELS = {"debug": logging.DEBUG, "verbose": logging.INFO, "error": logging.ERROR, "panic": logging.CRITICAL}
_FORMAT = "%(asctime)s [%(levelname)s] %(name)s: %(message)s"

ApiFactory = Callable[[str], "meta.KubeApi"]
RunnerFactory = Callable[[MultusConfig, CniRequest], "meta.Runner"]
SeamsFactory = Callable[[MultusConfig], meta.Seams]

_configured: tuple[Any, ...] | None = None


def setup_logging(conf: MultusConfig) -> None:
    """Multus's ``logFile``/``logLevel``/``logToStderr``; never stdout (the result channel)."""
    global _configured
    key = (conf.log_file, conf.log_level, conf.log_to_stderr)
    if key == _configured:
        return
    logger = logging.getLogger("kvnet")
    for h in list(logger.handlers):
        if getattr(h, "_kvnet_cni", False):
            logger.removeHandler(h)
            h.close()
    handlers: list[logging.Handler] = []
    if conf.log_to_stderr:
        handlers.append(logging.StreamHandler(sys.stderr))
    if conf.log_file:
        try:
            handlers.append(logging.FileHandler(conf.log_file))
        except OSError as err:
            sys.stderr.write(f"kvnet: cannot open logFile {conf.log_file}: {err}\n")
    for h in handlers:
        h.setFormatter(logging.Formatter(_FORMAT))
        h._kvnet_cni = True  # type: ignore[attr-defined]
        logger.addHandler(h)
    logger.setLevel(_LEVELS.get(conf.log_level, logging.CRITICAL))
    logger.propagate = False
    _configured = key


def light_api(kubeconfig: str) -> meta.KubeApi:
    from kvnet.meta import k8s

    return k8s.light_api(kubeconfig)


def delegate_timeout(conf: MultusConfig) -> float:
    """kvnet's own ``delegateTimeout`` key (seconds; Multus ignores unknown keys)."""
    value = conf.raw.get("delegateTimeout")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    return DEFAULT_DELEGATE_TIMEOUT


BINDING_PLUGIN = "kvnet-binding"
BINDING_MARK = b"kvnet.binding.main"


def is_kvnet_binding(plugin: str) -> bool:
    """True for kvnet's own ``kvnet-binding`` program (its console script names the module)."""
    if os.path.basename(plugin) != BINDING_PLUGIN:
        return False
    try:
        with open(plugin, "rb") as f:
            return BINDING_MARK in f.read(4096)
    except OSError:
        return False


class InProcessBinding:
    """An :class:`Exec` that runs kvnet's own binding delegate inside this process.

    A VM with N attachments means N binding calls; as processes each pays Python's start-up
    and the pyroute2 import (about 0.2 s here), which made ADD grow with the NIC count.
    In-process the call gets the same env, stdin, stdout and exit status as the program;
    every other plugin still runs as a process. The delegate timeout does not apply to the
    in-process call (the binding does a bounded amount of netlink work). The config key
    ``inProcessBinding: false`` turns this off.
    """

    def __init__(self, fallback: Exec = subprocess_exec) -> None:
        self.fallback = fallback

    def __call__(self, plugin: str, stdin: bytes, env: Mapping[str, str], timeout: float) -> tuple[int, bytes, bytes]:
        if not is_kvnet_binding(plugin):
            return self.fallback(plugin, stdin, env, timeout)
        from kvnet.binding import main as binding_main

        out = io.StringIO()
        status = binding_main.run(environ=dict(env), stdin=io.BytesIO(stdin), stdout=out, own_logging=False)
        return status, out.getvalue().encode(), b""


def new_runner(conf: MultusConfig, request: CniRequest) -> meta.Runner:
    """binDir first, then CNI_PATH (added per call by the runner), then /usr/lib/cni."""
    exec_ = None if conf.raw.get("inProcessBinding") is False else InProcessBinding()
    return DelegateRunner(
        [conf.bin_dir, FALLBACK_BIN_DIR], timeout=delegate_timeout(conf), exec=exec_, cache_dir=conf.cni_dir
    )


def _raw_str(conf: MultusConfig, key: str) -> str | None:
    value = conf.raw.get(key)
    return value if isinstance(value, str) and value else None


def default_seams(conf: MultusConfig) -> meta.Seams:
    """Device IDs from the kubelet's PodResources API (gRPC is imported only when a NAD
    asks for a resource), device-info files, default-route edits with iproute2.

    kvnet's own keys ``podResourcesSocket`` and ``deviceInfoDir`` move the kubelet socket
    and the device-info root (tests, unusual kubelet layouts)."""
    from kvnet.meta.podresources import DEFAULT_SOCKET, PodResourcesClient

    return meta.Seams(
        allocator=PodResourcesClient(_raw_str(conf, "podResourcesSocket") or DEFAULT_SOCKET),
        devinfo=meta.DeviceInfoFiles(_raw_str(conf, "deviceInfoDir")),
        routes=meta.IpRouteEditor(),
    )


def overlay_config(request_conf: Mapping[str, Any], daemon_conf: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The config to act on: the daemon's own config (thick mode) wins over the request's,
    except ``cniVersion``, ``name`` and ``type``, which stay the runtime's."""
    if not daemon_conf:
        return request_conf
    merged = dict(request_conf)
    for key, value in daemon_conf.items():
        if key.lower() not in ("cniversion", "name", "type"):
            merged[key] = value
    return merged


def make_handlers(
    api_for: ApiFactory = light_api,
    runner_for: RunnerFactory = new_runner,
    seams_for: SeamsFactory = default_seams,
    daemon_conf: Mapping[str, Any] | None = None,
) -> dict[str, Handler]:
    """The five CNI commands bound to :mod:`kvnet.meta.commands` with the given side effects."""

    def bind(fn: Callable[..., Any]) -> Handler:
        def handler(request: CniRequest) -> Mapping[str, Any] | None:
            conf = parse_multus_config(overlay_config(request.config, daemon_conf))
            setup_logging(conf)
            api = api_for(conf.kubeconfig) if conf.kubeconfig else None
            out: Mapping[str, Any] | None = fn(
                request, conf=conf, api=api, runner=runner_for(conf, request), seams=seams_for(conf)
            )
            return out

        return handler

    return {
        "ADD": bind(meta.add),
        "DEL": bind(meta.delete),
        "CHECK": bind(meta.check),
        "STATUS": bind(meta.status),
        "GC": bind(meta.gc),
    }


def main() -> int:
    return plugin_main(make_handlers(), about=ABOUT)


if __name__ == "__main__":
    sys.exit(main())
