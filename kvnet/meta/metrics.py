"""The thick-mode daemon's metrics and probes, on a TCP port of its own (``--metrics-address``).

This module owns ``prometheus_client``: kvnet defines its metrics here and the exposition
is the library's (``generate_latest``), never hand-written. Served paths:

- ``/metrics``: the registry below plus the library's process collector
  (``process_resident_memory_bytes`` is the daemon's own memory);
- ``/healthz``: 200 while the process serves HTTP at all (the liveness probe);
- ``/readyz``: 200 once the CNI socket listens and while calls are taken, 503 while the
  daemon drains on SIGTERM (the readiness probe).

Thin mode (``kvnet-cni``, a process per call) has no metrics: nothing would live long
enough to be scraped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from kvnet.core.errors import InvalidConfig, IOFailure

log = logging.getLogger("kvnet.metrics")

CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class DaemonMetrics:
    """Every metric the daemon keeps, in its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        r = self.registry
        self.calls = Counter(
            "kvnet_cni_calls",
            "CNI calls served, by command and CNI result code (0: success)",
            ["command", "code"],
            registry=r,
        )
        self.call_seconds = Histogram(
            "kvnet_cni_call_duration_seconds",
            "Time to serve one CNI call",
            ["command"],
            buckets=CALL_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("kvnet_cni_calls_in_flight", "CNI calls being served now", registry=r)
        self.delegate_seconds = Histogram(
            "kvnet_delegate_duration_seconds",
            "Time one delegate plugin ran, by plugin type and command",
            ["type", "command"],
            buckets=CALL_BUCKETS,
            registry=r,
        )
        self.delegate_timeouts = Counter(
            "kvnet_delegate_timeouts", "Delegate plugins killed at the delegate timeout", ["type"], registry=r
        )
        self.api_requests = Counter(
            "kvnet_api_requests",
            "Kubernetes API calls, by call and outcome (ok, error)",
            ["call", "result"],
            registry=r,
        )
        self.api_retries = Counter(
            "kvnet_api_retries", "Kubernetes API calls tried again after a transient failure", ["call"], registry=r
        )
        self.events = Counter(
            "kvnet_events", "Pod Events, by outcome (posted, dropped, failed, filtered)", ["result"], registry=r
        )
        self.nad_cache = Counter(
            "kvnet_nad_cache", "NAD reads, by whether the watch-backed cache answered (hit) or a GET (miss)",
            ["result"], registry=r,
        )  # fmt: skip
        self.pod_cache = Counter(
            "kvnet_pod_cache", "Pod reads, by whether the watch-backed cache of the node's pods answered (hit) or a GET (miss)",
            ["result"], registry=r,
        )  # fmt: skip

    # --- the observers the daemon's parts are given ----------------------------------------

    def observe_plugin(self, plugin_type: str, command: str, seconds: float, timed_out: bool) -> None:
        self.delegate_seconds.labels(plugin_type, command).observe(seconds)
        if timed_out:
            self.delegate_timeouts.labels(plugin_type).inc()

    def observe_api(self, call: str, result: str, retried: bool) -> None:
        self.api_requests.labels(call, result).inc()
        if retried:
            self.api_retries.labels(call).inc()

    def observe_event(self, result: str) -> None:
        self.events.labels(result).inc()

    def observe_nad_cache(self, result: str) -> None:
        self.nad_cache.labels(result).inc()

    def observe_pod_cache(self, result: str) -> None:
        self.pod_cache.labels(result).inc()

    def observe_call(self, command: str, code: int, seconds: float) -> None:
        self.calls.labels(command, str(code)).inc()
        self.call_seconds.labels(command).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``:PORT`` (every address) for ``--metrics-address``."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidConfig(f"--metrics-address {text!r}: expected HOST:PORT or :PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    metrics: DaemonMetrics
    ready: Callable[[], bool]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics http: " + format, *args)

    def _answer(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._answer(200, self.server.metrics.exposition(), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._answer(200, b"ok\n")
        elif path == "/readyz":
            ready = self.server.ready()
            self._answer(
                200 if ready else 503, b"ok\n" if ready else b"not ready: the CNI socket does not take calls\n"
            )
        else:
            self._answer(404, b"not found\n")


class MetricsServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` on ``address``; ``start()``/``stop()``."""

    def __init__(self, address: tuple[str, int], metrics: DaemonMetrics, ready: Callable[[], bool]) -> None:
        self.address = address
        self.metrics = metrics
        self.ready = ready
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server is not None else self.address[1]

    def start(self) -> None:
        try:
            server = _Server(self.address, _Handler)
        except OSError as err:
            raise IOFailure(
                f"kvnet daemon: cannot serve metrics on {self.address[0]}:{self.address[1]}: {err}"
            ) from err
        server.metrics = self.metrics
        server.ready = self.ready
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="kvnet-metrics", daemon=True)
        self._thread.start()
        log.info("kvnet daemon metrics on %s:%d", self.address[0], self.port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
