"""A fault-injecting proxy in front of the lab's real API server.

A healthy kube-apiserver does not answer 500 or 503 on demand. The API stand-in
(:mod:`kvnet.lab.apiserver`) can, but it speaks JSON only, and Multus's client-go sends
its writes as protobuf (``k8sclient.GetK8sClient`` sets ``ContentType:
application/vnd.kubernetes.protobuf``), so Multus could not write network-status there.
This proxy forwards every request, body and content type untouched, to the real server
as the lab's admin, and answers the requests chosen with :meth:`FaultProxy.fail_next`
itself, with the same ``Status`` bodies as the stand-in (a 429 or 503 with the
``Retry-After`` a real server sends, when asked), or holds chosen requests for a while
before forwarding them (:meth:`FaultProxy.delay_next`: a slow server). It listens on plain HTTP (the
kubeconfig it writes says ``http://``); no watch requests are needed by the thin programs
that use it.
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from kvnet.lab.kube import KubeCluster

_REASONS = {429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable", 409: "Conflict"}
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


@dataclass
class _Fault:
    code: int  # 0: forward after ``delay``
    method: str | None
    path: str | None
    remaining: int
    delay: float = 0.0
    retry_after: int | None = None


class FaultProxy:
    """``http://<host>:<port>`` → the real API server; a context manager."""

    def __init__(self, kube: KubeCluster, host: str, port: int = 0) -> None:
        self.kube = kube
        self.host = host
        self.port = port
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status answered)
        ctx = ssl.create_default_context(cafile=str(kube.ca_file))
        ctx.load_cert_chain(str(kube.pki / "admin.crt"), str(kube.pki / "admin.key"))
        self._ctx = ctx

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        handler = type("FaultProxyHandler", (_Handler,), {"proxy": self})
        self._server = ThreadingHTTPServer((self.host, self.port), handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def write_kubeconfig(self, path: str | Path) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kvnet-proxy", "cluster": {"server": self.url}}],
            "users": [{"name": "kvnet-proxy", "user": {}}],
            "contexts": [{"name": "kvnet-proxy", "context": {"cluster": "kvnet-proxy", "user": "kvnet-proxy"}}],
            "current-context": "kvnet-proxy",
        }
        Path(path).write_text(yaml.safe_dump(config, sort_keys=False))

    def fail_next(
        self,
        code: int,
        *,
        method: str | None = None,
        path: str | None = None,
        times: int = 1,
        retry_after: int | None = None,
    ) -> None:
        """Answer the next ``times`` requests matching ``method`` and the path suffix
        ``path`` (query left out) with ``code`` (with ``Retry-After: <retry_after>`` and the
        Status's ``retryAfterSeconds``, as a real server's 429, when given)."""
        with self._lock:
            self._faults.append(_Fault(code, method.upper() if method else None, path, times, retry_after=retry_after))

    def delay_next(self, seconds: float, *, method: str | None = None, path: str | None = None, times: int = 1) -> None:
        """Hold the next ``times`` matching requests ``seconds`` before forwarding them."""
        with self._lock:
            self._faults.append(_Fault(0, method.upper() if method else None, path, times, delay=seconds))

    def clear(self) -> None:
        """Forget the faults not yet used and the requests seen."""
        with self._lock:
            self._faults.clear()
            self.requests.clear()

    def _fault_for(self, method: str, path: str) -> _Fault | None:
        bare = path.split("?", 1)[0]
        with self._lock:
            for fault in self._faults:
                if fault.method in (None, method) and (fault.path is None or bare.endswith(fault.path)):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPSConnection(self.kube.address, self.kube.port, context=self._ctx, timeout=30)
        try:
            conn.request(method, path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP_HEADERS], data
        finally:
            conn.close()


def fault_status(code: int, path: str, retry_after: int | None = None) -> dict[str, Any]:
    """The ``Status`` a real server sends with ``code`` (the stand-in's wording)."""
    message = {500: "Internal error occurred: injected failure"}.get(code, f"injected failure {code}")
    if code == 409:
        name = path.split("?", 1)[0].rstrip("/").removesuffix("/status").rsplit("/", 1)[-1]
        message = (
            f'Operation cannot be fulfilled on pods "{name}": the object has been modified; '
            "please apply your changes to the latest version and try again"
        )
    status: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": _REASONS.get(code, "Unknown"),
        "code": code,
    }
    if retry_after is not None:
        status["details"] = {"retryAfterSeconds": retry_after}
    return status


class _Handler(BaseHTTPRequestHandler):
    proxy: FaultProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        method, path = self.command, self.path
        fault = self.proxy._fault_for(method, path)
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        elif fault is not None:
            code = fault.code
            data = json.dumps(fault_status(code, path, fault.retry_after)).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            if fault.retry_after is not None:
                self.send_header("Retry-After", str(fault.retry_after))
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            self.proxy.requests.append((method, path, code))
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS | {"authorization"}}
        status, answer_headers, data = self.proxy.forward(method, path, headers, body)
        self.send_response(status)
        for key, value in answer_headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.proxy.requests.append((method, path, status))

    do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = _serve
