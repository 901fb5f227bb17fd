"""Thick mode: a long-lived meta-plugin behind a unix socket (Multus's ``multus-daemon``).

``kvnet-shim`` posts each CNI call here as ``{"env": {CNI_*...}, "stdin": "<config>"}``
to ``POST /cni``; the daemon runs it through the very same
:func:`kvnet.cni.protocol.plugin_main` and :func:`kvnet.meta.wiring.make_handlers` as ``kvnet-cni``,
and answers ``{"exit": <status>, "stdout": "<result or CNI error JSON>"}``. What thick
mode saves is the per-call start-up: the Kubernetes client (one per kubeconfig) and
the delegate runners (their VERSION answers cached) live as long as the daemon.
``GET /healthz`` answers ``ok`` once the daemon serves. With ``metrics_address`` the
daemon also serves Prometheus metrics, ``/healthz`` and ``/readyz`` on TCP
(``kvnet.meta.metrics``). Each call is logged in one line by the wiring
(:func:`kvnet.meta.wiring.log_call`).

Stopping (:meth:`CniDaemon.drain`, on SIGTERM): new calls are refused with HTTP 503 (the
shim reports a daemon that is stopping, code 11), the calls in flight get up to the drain
bound to finish (``--drain-timeout``, default 20 s, within Kubernetes' default 30 s grace
period); the ADDs still running then are cancelled (their delegates killed, what they set
up deleted, code 11 to their shims), and the daemon waits up to ``ROLLBACK_GRACE`` for
them before it exits (docs/reliability.md).
"""

from __future__ import annotations

import io
import json
import logging
import os
import socketserver
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

from kvnet.cni.delegate import cancel_all
from kvnet.cni.protocol import Handler, plugin_main
from kvnet.core.errors import IOFailure
from kvnet.meta.wiring import LongLived, make_handlers

if TYPE_CHECKING:
    from kvnet.meta.metrics import DaemonMetrics, MetricsServer

log = logging.getLogger("kvnet.daemon")
MAX_BODY = 4 * 1024 * 1024
DRAIN_TIMEOUT = 20.0  # seconds the calls in flight get to finish on SIGTERM
ROLLBACK_GRACE = 10.0  # seconds cancelled ADDs get to delete what they set up
STOPPING = b'{"error":"the kvnet daemon is stopping: call refused"}'


def serve_call(handlers: Mapping[str, Handler], env: Mapping[str, str], stdin: bytes) -> tuple[int, str]:
    """One CNI call, exactly as the standalone binary would run it."""
    out = io.StringIO()
    status = plugin_main(handlers, environ=env, stdin=io.BytesIO(stdin), stdout=out)
    return status, out.getvalue()


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # the listen backlog: a node's pods may all start at once (socketserver's 5 refused some)
    handlers: Mapping[str, Handler]
    calls: _Calls
    metrics: DaemonMetrics | None


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http: " + format, *args)

    def address_string(self) -> str:
        return "unix"

    def _answer(self, code: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._answer(200, b"ok\n", "text/plain")
        else:
            self._answer(404, b'{"error":"not found"}')

    def do_POST(self) -> None:
        if self.path != "/cni":
            self._answer(404, b'{"error":"not found"}')
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
            if length <= 0 or length > MAX_BODY:
                raise ValueError(f"bad Content-Length {length}")
            req = json.loads(self.rfile.read(length))
            env = req["env"]
            stdin = str(req.get("stdin", "")).encode("utf-8", errors="surrogateescape")
            if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
                raise ValueError("env must be an object of strings")
        except (ValueError, KeyError, TypeError) as err:
            self._answer(400, json.dumps({"error": f"bad request: {err}"}).encode())
            return
        env = {k: v for k, v in env.items() if k.startswith("CNI_")}
        if not self.server.calls.begin():
            log.info("%s container=%s refused: stopping", env.get("CNI_COMMAND"), env.get("CNI_CONTAINERID"))
            self._answer(503, STOPPING)
            return
        metrics = self.server.metrics
        start = time.monotonic()
        if metrics is not None:
            metrics.in_flight.inc()
        try:
            status, out = serve_call(self.server.handlers, env, stdin)
        finally:
            self.server.calls.end()
            if metrics is not None:
                metrics.in_flight.dec()
        if metrics is not None:
            metrics.observe_call(env.get("CNI_COMMAND", ""), result_code(status, out), time.monotonic() - start)
        self._answer(200, json.dumps({"exit": status, "stdout": out}).encode())


def result_code(status: int, stdout: str) -> int:
    """The CNI code of a call: 0 on success, else the error object's ``code``."""
    if status == 0:
        return 0
    try:
        code = json.loads(stdout).get("code")
    except (ValueError, AttributeError):
        return 999
    return code if isinstance(code, int) else 999


class _Calls:
    """The calls in flight, and whether new ones are still taken."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.running = 0
        self.open = True

    def begin(self) -> bool:
        with self._cond:
            if not self.open:
                return False
            self.running += 1
            return True

    def end(self) -> None:
        with self._cond:
            self.running -= 1
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self.open = False

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.running:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True


class CniDaemon:
    """The thick-mode server: ``start()``/``stop()`` (or ``drain()`` then ``stop()``), or
    ``serve_forever()``; a context manager."""

    def __init__(
        self,
        socket_path: str,
        *,
        daemon_conf: Mapping[str, Any] | None = None,
        handlers: Mapping[str, Handler] | None = None,
        long_lived: LongLived | None = None,
        metrics_address: tuple[str, int] | None = None,
    ) -> None:
        """``metrics_address``: serve ``/metrics``, ``/healthz`` and ``/readyz`` there
        (``kvnet.meta.metrics``; None: no metrics, the default)."""
        self.socket_path = socket_path
        self.metrics: DaemonMetrics | None = None
        self._metrics_server: MetricsServer | None = None
        if metrics_address is not None:
            from kvnet.meta.metrics import DaemonMetrics, MetricsServer

            self.metrics = DaemonMetrics()
            self._metrics_server = MetricsServer(metrics_address, self.metrics, self.ready)
            if long_lived is None:
                long_lived = LongLived(metrics=self.metrics)
            else:
                long_lived.metrics = self.metrics
        self.long_lived = long_lived or LongLived()
        self.handlers = handlers or make_handlers(
            api_for=self.long_lived.api,
            runner_for=self.long_lived.runner,
            daemon_conf=daemon_conf,
            events_for=self.long_lived.events,
        )
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.calls = _Calls()

    def _bind(self) -> _Server:
        folder = os.path.dirname(self.socket_path)
        try:
            if folder:
                os.makedirs(folder, mode=0o700, exist_ok=True)
            if os.path.exists(self.socket_path):
                os.unlink(self.socket_path)  # a stale socket from a previous run
            server = _Server(self.socket_path, _Handler)
            os.chmod(self.socket_path, 0o600)
        except OSError as err:
            raise IOFailure(f"kvnet daemon: cannot listen on {self.socket_path}: {err}") from err
        server.handlers = self.handlers
        server.calls = self.calls
        server.metrics = self.metrics
        return server

    def ready(self) -> bool:
        """The socket listens and takes calls (``/readyz``)."""
        return self._server is not None and self.calls.open

    @property
    def metrics_port(self) -> int | None:
        return self._metrics_server.port if self._metrics_server is not None else None

    def _start_metrics(self) -> None:
        if self._metrics_server is not None:
            self._metrics_server.start()

    def start(self) -> None:
        self._start_metrics()
        self._server = self._bind()
        self._thread = threading.Thread(target=self._server.serve_forever, name="kvnet-daemon", daemon=True)
        self._thread.start()
        log.info("kvnet daemon listening on %s", self.socket_path)

    def serve_forever(self) -> None:
        self._start_metrics()
        self._server = self._bind()
        log.info("kvnet daemon listening on %s", self.socket_path)
        try:
            self._server.serve_forever()
        finally:
            self._close()

    def drain(self, timeout: float = DRAIN_TIMEOUT, grace: float = ROLLBACK_GRACE) -> bool:
        """Refuse new calls, give the ones in flight ``timeout`` seconds, then cancel the
        ADDs still running and give them ``grace`` seconds to undo themselves; True when
        no call was left running."""
        self.calls.close()
        log.info("kvnet daemon stopping: %d call(s) in flight, waiting up to %gs", self.calls.running, timeout)
        if self.calls.wait_idle(timeout):
            return True
        log.warning("kvnet daemon stopping: %d call(s) still running, cancelling them", self.calls.running)
        cancel_all(f"the kvnet daemon is stopping (drain bound of {timeout:g}s reached)")
        if self.calls.wait_idle(grace):
            return True
        log.error("kvnet daemon stopping: %d call(s) did not end within %gs", self.calls.running, grace)
        return False

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._close()

    def _close(self) -> None:
        if self._server is not None:
            self._server.server_close()
            self._server = None
        if self._metrics_server is not None:
            self._metrics_server.stop()
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass

    def __enter__(self) -> CniDaemon:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
