"""The meta-plugin wired to its production side effects, one way for thin and thick mode.

``kvnet-cni`` (thin: a process per call, the light stdlib API client) and ``kvnet
daemon`` (thick: long-lived API clients and delegate runners, :class:`LongLived`) both
call :func:`make_handlers`; the delegate runner (:func:`new_runner`, with kvnet's own
binding in-process unless ``inProcessBinding`` is false) and the optional side effects
(:func:`default_seams`) are the same in both. Nothing heavy is imported here: the thin
binary starts once per call.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from kvnet.cni.delegate import FALLBACK_BIN_DIR, CallGuard, DelegateRunner, Exec, Interrupted, subprocess_exec
from kvnet.cni.protocol import CniRequest, Handler
from kvnet.core.errors import KvnetError
from kvnet.meta import commands
from kvnet.meta.config import MultusConfig, parse_multus_config
from kvnet.meta.events import THIN_FLUSH, EventRecorder, recorder_for

if TYPE_CHECKING:
    from kvnet.meta.metrics import DaemonMetrics
from kvnet.meta.pod import pod_args
from kvnet.meta.ports import DeviceInfoFiles, EventSink, IpRouteEditor, KubeApi, Runner, Seams
from kvnet.meta.wording import cmd_err, cmd_prefix

log = logging.getLogger("kvnet.meta")
LOCK_WAIT_EXTRA = 30.0  # seconds a call waits for a live call on its container, beyond one delegate timeout

_LEVELS = {"debug": logging.DEBUG, "verbose": logging.INFO, "error": logging.ERROR, "panic": logging.CRITICAL}
_FORMAT = "%(asctime)s [%(levelname)s] %(name)s: %(message)s"

ApiFactory = Callable[[str], KubeApi]
EventsFactory = Callable[[str, KubeApi], EventSink | None]
RunnerFactory = Callable[[MultusConfig, CniRequest], Runner]
SeamsFactory = Callable[[MultusConfig], Seams]

_configured: tuple[Any, ...] | None = None


def setup_logging(conf: MultusConfig) -> None:
    """Multus's ``logFile`` (rotated by ``logOptions``, ``kvnet.meta.logfile``), ``logLevel``
    and ``logToStderr``; never stdout (the result channel)."""
    global _configured
    key = (conf.log_file, conf.log_level, conf.log_to_stderr, tuple(sorted((conf.log_options or {}).items())))
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
            from kvnet.meta.logfile import RotatingLog

            handlers.append(RotatingLog(conf.log_file, conf.log_options))
        except OSError as err:
            sys.stderr.write(f"kvnet: cannot open logFile {conf.log_file}: {err}\n")
    for h in handlers:
        h.setFormatter(logging.Formatter(_FORMAT))
        h._kvnet_cni = True  # type: ignore[attr-defined]
        logger.addHandler(h)
    logger.setLevel(_LEVELS.get(conf.log_level, logging.CRITICAL))
    logger.propagate = False
    _configured = key


def light_api(kubeconfig: str) -> KubeApi:
    """The stdlib client, transient failures retried (:class:`kvnet.meta.k8s.RetryingApi`)."""
    from kvnet.meta import k8s

    return k8s.RetryingApi(k8s.light_api(kubeconfig))


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


def new_runner(conf: MultusConfig, request: CniRequest | None = None) -> Runner:
    """binDir first, then CNI_PATH (added per call by the runner), then /usr/lib/cni; kvnet's
    own binding in-process unless ``inProcessBinding`` is false (thin and thick alike)."""
    return DelegateRunner(
        [conf.bin_dir, FALLBACK_BIN_DIR],
        timeout=conf.kvnet.delegate_timeout,
        exec=InProcessBinding() if conf.kvnet.in_process_binding else None,
        cache_dir=conf.cni_dir,
    )


def default_seams(conf: MultusConfig) -> Seams:
    """Device IDs from the kubelet's PodResources API (gRPC is imported only when a NAD
    asks for a resource), device-info files, default-route edits with iproute2.

    kvnet's own keys ``podResourcesSocket`` and ``deviceInfoDir`` move the kubelet socket
    and the device-info root (tests, unusual kubelet layouts)."""
    from kvnet.meta.podresources import DEFAULT_SOCKET, PodResourcesClient

    return Seams(
        allocator=PodResourcesClient(conf.kvnet.pod_resources_socket or DEFAULT_SOCKET),
        devinfo=DeviceInfoFiles(conf.kvnet.device_info_dir),
        routes=IpRouteEditor(),
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


_thin_recorders: dict[str, EventRecorder | None] = {}


def thin_events(kubeconfig: str, api: KubeApi) -> EventSink | None:
    """kvnet-cni's recorder for one kubeconfig; :func:`flush_thin_events` drains it at exit."""
    if kubeconfig not in _thin_recorders:
        _thin_recorders[kubeconfig] = recorder_for(api)
    return _thin_recorders[kubeconfig]


def flush_thin_events(timeout: float = THIN_FLUSH) -> None:
    """The events of this process get up to ``timeout`` seconds in all; the rest are dropped."""
    deadline = time.monotonic() + timeout
    for recorder in _thin_recorders.values():
        if recorder is not None and not recorder.flush(max(0.0, deadline - time.monotonic())):
            log.warning("events not posted within %gs were dropped", timeout)


def make_handlers(
    api_for: ApiFactory = light_api,
    runner_for: RunnerFactory = new_runner,
    seams_for: SeamsFactory = default_seams,
    daemon_conf: Mapping[str, Any] | None = None,
    events_for: EventsFactory | None = thin_events,
) -> dict[str, Handler]:
    """The five CNI commands bound to ``kvnet.meta.commands`` with the given side effects
    (``events_for``: the Events recorder of an API client; None posts none)."""

    def bind(fn: Callable[..., Any], *, wrap_netconf: bool = False) -> Handler:
        def handler(request: CniRequest) -> Mapping[str, Any] | None:
            try:
                conf = parse_multus_config(overlay_config(request.config, daemon_conf))
            except KvnetError as err:
                if wrap_netconf:  # CmdAdd, CmdStatus, CmdGC: cmdErr(nil, "error loading netconf: %v")
                    raise cmd_err(None, err, "error loading netconf") from err
                raise  # CmdDel and CmdCheck return LoadNetConf's error as it is
            setup_logging(conf)
            try:
                out = serve(request, conf)
            except KvnetError as err:
                log_call(request, f"error {err.cni_code}: {err.msg}")
                raise
            log_call(request, "ok")
            return out

        def serve(request: CniRequest, conf: MultusConfig) -> Mapping[str, Any] | None:
            api = api_for(conf.kubeconfig) if conf.kubeconfig else None
            runner, seams = runner_for(conf, request), seams_for(conf)
            if api is not None and conf.kubeconfig and conf.kvnet.events and events_for is not None:
                seams = replace(seams, events=events_for(conf.kubeconfig, api))
            if request.command not in ("ADD", "DEL"):
                out: Mapping[str, Any] | None = fn(request, conf=conf, api=api, runner=runner, seams=seams)
                return out
            wait = conf.kvnet.delegate_timeout + LOCK_WAIT_EXTRA
            with CallGuard(conf.cni_dir, request.container_id, wait=wait, command=request.command) as guard:
                try:
                    out = fn(request, conf=conf, api=api, runner=runner, seams=seams)
                    if guard.cancelled and request.command == "ADD":
                        raise Interrupted(guard.cancelled)
                    return out
                except Exception as err:  # whatever stopped an interrupted ADD, it undoes itself
                    if request.command != "ADD" or not guard.cancelled:
                        raise
                    raise _undone(request, conf, runner, seams, guard.cancelled) from err

        return handler

    return {
        "ADD": bind(commands.add, wrap_netconf=True),
        "DEL": bind(commands.delete),
        "CHECK": bind(commands.check),
        "STATUS": bind(commands.status, wrap_netconf=True),
        "GC": bind(commands.gc, wrap_netconf=True),
    }


def log_call(request: CniRequest, result: str) -> None:
    """The one line per call: command, container, pod, interface and result (never the
    config: a NAD's config may carry credentials)."""
    pa = pod_args(request)
    log.info(
        "%s container=%s pod=%s/%s ifname=%s: %s",
        request.command,
        request.container_id,
        pa.namespace,
        pa.name,
        request.ifname,
        result,
    )


def _undone(request: CniRequest, conf: MultusConfig, runner: Runner, seams: Seams, reason: str) -> Interrupted:
    """An interrupted ADD undoes everything it did, as the runtime's DEL would (from the
    delegate cache, without the API; the cache stays for that DEL), and says so."""
    what = "every delegate it had started was deleted"
    try:
        commands.delete(request, conf=conf, api=None, runner=runner, seams=seams, keep_cache=True)
    except KvnetError as err:
        what = f"deleting its delegates failed, the runtime's DEL retries it: {err.msg}"
    return Interrupted(f"{cmd_prefix(pod_args(request))}ADD interrupted ({reason}): {what}")


def client_api(kubeconfig: str) -> KubeApi:
    """The official client, transient failures retried (:class:`kvnet.meta.k8s.RetryingApi`)."""
    from kvnet.meta import k8s

    return k8s.RetryingApi(k8s.client_api(kubeconfig))


def nad_cache(kubeconfig: str, api: KubeApi, metrics: DaemonMetrics | None) -> KubeApi:
    """``api`` with its NAD reads answered from a list + watch (:mod:`kvnet.meta.watchcache`)."""
    from kvnet.meta import k8s
    from kvnet.meta.watchcache import NadCache

    cached = NadCache(api, k8s.LightApi(k8s.load_kubeconfig(kubeconfig), kubeconfig=kubeconfig))
    if metrics is not None:
        cached.observer = metrics.observe_nad_cache
    return cached


def pod_cache(kubeconfig: str, api: KubeApi, node: str, metrics: DaemonMetrics | None) -> KubeApi:
    """``api`` with its pod reads answered from a list + watch of ``node``'s pods
    (:mod:`kvnet.meta.watchcache`)."""
    from kvnet.meta import k8s
    from kvnet.meta.watchcache import PodCache

    cached = PodCache(api, k8s.LightApi(k8s.load_kubeconfig(kubeconfig), kubeconfig=kubeconfig), node)
    if metrics is not None:
        cached.observer = metrics.observe_pod_cache
    return cached


class LongLived:
    """API clients per kubeconfig and delegate runners per (binDir, cniDir, timeout)."""

    def __init__(
        self,
        api_factory: Callable[[str], KubeApi] = client_api,
        metrics: DaemonMetrics | None = None,
        *,
        nad_cache: bool = False,
        pod_cache_node: str = "",
    ) -> None:
        self._api_factory = api_factory
        self.metrics = metrics
        self.nad_cache = nad_cache
        self.pod_cache_node = pod_cache_node  # "": no pod cache
        self._apis: dict[str, KubeApi] = {}
        self._runners: dict[tuple[str, str, float, bool], Runner] = {}
        self._recorders: dict[str, EventRecorder | None] = {}
        self._lock = threading.Lock()

    def api(self, kubeconfig: str) -> KubeApi:
        with self._lock:
            if kubeconfig not in self._apis:
                api = self._api_factory(kubeconfig)
                if self.metrics is not None and hasattr(api, "observer"):
                    api.observer = self.metrics.observe_api
                if self.nad_cache:
                    api = nad_cache(kubeconfig, api, self.metrics)
                if self.pod_cache_node:
                    api = pod_cache(kubeconfig, api, self.pod_cache_node, self.metrics)
                self._apis[kubeconfig] = api
            return self._apis[kubeconfig]

    def events(self, kubeconfig: str, api: KubeApi) -> EventSink | None:
        """One recorder (queue and posting threads) per kubeconfig, for the daemon's life."""
        with self._lock:
            if kubeconfig not in self._recorders:
                observer = self.metrics.observe_event if self.metrics is not None else None
                self._recorders[kubeconfig] = recorder_for(api, observer=observer)
            return self._recorders[kubeconfig]

    def runner(self, conf: MultusConfig, request: CniRequest | None = None) -> Runner:
        """The runner :func:`new_runner` builds, one per setting that shapes it."""
        key = (conf.bin_dir, conf.cni_dir, conf.kvnet.delegate_timeout, conf.kvnet.in_process_binding)
        with self._lock:
            if key not in self._runners:
                runner = new_runner(conf)
                if self.metrics is not None and isinstance(runner, DelegateRunner):
                    runner.observer = self.metrics.observe_plugin
                self._runners[key] = runner
            return self._runners[key]
