"""A local STAND-IN for the Kubernetes API server — not a Kubernetes API server.

It speaks the API's HTTP/JSON for the few resources kvnet touches (pods, pods/status,
NetworkAttachmentDefinitions, plus enough discovery for the official client), so the
tests and the demo drive the same client code that talks to a real cluster. It keeps
objects in memory, bumps ``resourceVersion`` on every write, answers 404/409 with the
real server's ``Status`` bodies, and can fail on purpose (a one-shot 409 or 500).
There is no admission, no validation beyond what kvnet relies on, no watch, no RBAC.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import socket
import ssl
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import yaml

log = logging.getLogger(__name__)

NAD_GROUP = "k8s.cni.cncf.io"
NAD_PLURAL = "network-attachment-definitions"
STANDIN_VERSION = {
    "major": "1",
    "minor": "30",
    "gitVersion": "v1.30.0+kvnet-standin",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "n/a",
    "compiler": "n/a",
    "platform": "linux/amd64",
}

_POD_ROUTE = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods(?:/(?P<name>[^/]+)(?P<status>/status)?)?$")
_NAD_ROUTE = re.compile(
    rf"^/apis/{re.escape(NAD_GROUP)}/v1/namespaces/(?P<ns>[^/]+)/{NAD_PLURAL}(?:/(?P<name>[^/]+))?$"
)
_KINDS = {
    "pod": "pods",
    "pods": "pods",
    "networkattachmentdefinition": NAD_PLURAL,
    "nad": NAD_PLURAL,
    "net-attach-def": NAD_PLURAL,
    NAD_PLURAL: NAD_PLURAL,
}
_MERGE_PATCH_TYPES = ("application/merge-patch+json", "application/strategic-merge-patch+json")


@dataclass(frozen=True)
class StandInTls:
    """Serve HTTPS: the server's certificate and key, the CA that signed it (written into
    kubeconfigs), and optionally a client certificate the stand-in then requires."""

    cert_file: str
    key_file: str
    ca_file: str
    client_cert_file: str | None = None
    client_key_file: str | None = None


@dataclass
class _Fault:
    code: int
    method: str | None
    path: str | None
    remaining: int


class ApiError(Exception):
    """An error answer: HTTP code and the Status object to send."""

    def __init__(self, code: int, reason: str, message: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }
        if details is not None:
            self.body["details"] = dict(details)


def _qualified(plural: str) -> str:
    return plural if plural == "pods" else f"{plural}.{NAD_GROUP}"


def _details(plural: str, name: str) -> dict[str, str]:
    out = {"name": name, "kind": plural}
    if plural != "pods":
        out["group"] = NAD_GROUP
    return out


def not_found(plural: str, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{_qualified(plural)} "{name}" not found', _details(plural, name))


def conflict(plural: str, name: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {_qualified(plural)} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        _details(plural, name),
    )


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (strategic merge behaves the same on maps like annotations)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


class _Store:
    """Objects by (plural, namespace, name), one global resourceVersion counter."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.version = 0

    def _stamp(self, obj: dict[str, Any]) -> None:
        self.version += 1
        obj.setdefault("metadata", {})["resourceVersion"] = str(self.version)

    def create(self, plural: str, namespace: str, obj: Any) -> dict[str, Any]:
        if not isinstance(obj, dict):
            raise ApiError(400, "BadRequest", "the body of the request was not a JSON object")
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
            raise ApiError(422, "Invalid", "metadata.name: Required value: name is required")
        if meta.get("namespace") not in (None, "", namespace):
            raise ApiError(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the request",
            )
        name = meta["name"]
        with self.lock:
            key = (plural, namespace, name)
            if key in self.objects:
                raise ApiError(
                    409, "AlreadyExists", f'{_qualified(plural)} "{name}" already exists', _details(plural, name)
                )
            obj = copy.deepcopy(obj)
            obj["metadata"].update(
                namespace=namespace,
                uid=obj["metadata"].get("uid") or str(uuid.uuid4()),
                creationTimestamp=obj["metadata"].get("creationTimestamp")
                or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            )
            if plural == "pods":
                obj.setdefault("apiVersion", "v1")
                obj.setdefault("kind", "Pod")
                obj.setdefault("spec", {})
                obj.setdefault("status", {})
            else:
                obj.setdefault("apiVersion", f"{NAD_GROUP}/v1")
                obj.setdefault("kind", "NetworkAttachmentDefinition")
            self._stamp(obj)
            self.objects[key] = obj
            return copy.deepcopy(obj)

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        with self.lock:
            obj = self.objects.get((plural, namespace, name))
            if obj is None:
                raise not_found(plural, name)
            return copy.deepcopy(obj)

    def list(self, plural: str, namespace: str) -> list[dict[str, Any]]:
        with self.lock:
            return [
                copy.deepcopy(o) for (p, ns, _), o in sorted(self.objects.items()) if p == plural and ns == namespace
            ]

    def delete(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        with self.lock:
            obj = self.objects.pop((plural, namespace, name), None)
            if obj is None:
                raise not_found(plural, name)
            return obj

    def update(self, plural: str, namespace: str, name: str, body: Any, *, status_only: bool) -> dict[str, Any]:
        """PUT: optimistic concurrency on ``metadata.resourceVersion`` (empty = unconditional)."""
        if not isinstance(body, dict) or not isinstance(body.get("metadata", {}), dict):
            raise ApiError(400, "BadRequest", "the body of the request was not a JSON object")
        body_name = body.get("metadata", {}).get("name")
        if body_name not in (None, name):
            raise ApiError(
                400, "BadRequest", f"the name of the object ({body_name}) does not match the name on the URL ({name})"
            )
        with self.lock:
            current = self.objects.get((plural, namespace, name))
            if current is None:
                raise not_found(plural, name)
            wanted = body.get("metadata", {}).get("resourceVersion")
            if wanted and wanted != current["metadata"]["resourceVersion"]:
                raise conflict(plural, name)
            new = copy.deepcopy(current)
            if status_only:
                for key in ("annotations", "labels"):
                    if key in body["metadata"]:
                        new["metadata"][key] = copy.deepcopy(body["metadata"][key])
                    else:
                        new["metadata"].pop(key, None)
                new["status"] = copy.deepcopy(body.get("status", {}))
            else:
                keep = {k: current["metadata"][k] for k in ("uid", "creationTimestamp", "namespace", "name")}
                new = copy.deepcopy(body)
                new.setdefault("metadata", {}).update(keep)
                if plural == "pods":
                    new["status"] = copy.deepcopy(current.get("status", {}))
            self._stamp(new)
            self.objects[(plural, namespace, name)] = new
            return copy.deepcopy(new)

    def patch(self, plural: str, namespace: str, name: str, patch: Any, *, status_only: bool) -> dict[str, Any]:
        if not isinstance(patch, dict):
            raise ApiError(400, "BadRequest", "the body of the request was not a JSON object")
        with self.lock:
            current = self.objects.get((plural, namespace, name))
            if current is None:
                raise not_found(plural, name)
            wanted = (patch.get("metadata") or {}).get("resourceVersion")
            if wanted and wanted != current["metadata"]["resourceVersion"]:
                raise conflict(plural, name)
            new = merge_patch(current, patch)
            for key in ("uid", "creationTimestamp", "namespace", "name"):
                new["metadata"][key] = current["metadata"][key]
            if status_only:
                new["spec"] = copy.deepcopy(current.get("spec", {}))
            elif plural == "pods":
                new["status"] = copy.deepcopy(current.get("status", {}))
            self._stamp(new)
            self.objects[(plural, namespace, name)] = new
            return copy.deepcopy(new)


def _discovery(host: str) -> dict[str, Any]:
    core_resources = [
        {
            "name": "pods",
            "singularName": "pod",
            "namespaced": True,
            "kind": "Pod",
            "verbs": ["create", "delete", "get", "list", "patch", "update"],
            "shortNames": ["po"],
        },
        {
            "name": "pods/status",
            "singularName": "",
            "namespaced": True,
            "kind": "Pod",
            "verbs": ["get", "patch", "update"],
        },
    ]
    nad_resources = [
        {
            "name": NAD_PLURAL,
            "singularName": "network-attachment-definition",
            "namespaced": True,
            "kind": "NetworkAttachmentDefinition",
            "verbs": ["create", "delete", "get", "list", "patch", "update"],
            "shortNames": ["net-attach-def"],
        },
    ]
    group_version = {"groupVersion": f"{NAD_GROUP}/v1", "version": "v1"}
    return {
        "/version": STANDIN_VERSION,
        "/api": {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}],
        },
        "/api/v1": {"kind": "APIResourceList", "groupVersion": "v1", "resources": core_resources},
        "/apis": {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [{"name": NAD_GROUP, "versions": [group_version], "preferredVersion": group_version}],
        },
        f"/apis/{NAD_GROUP}": {
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": NAD_GROUP,
            "versions": [group_version],
            "preferredVersion": group_version,
        },
        f"/apis/{NAD_GROUP}/v1": {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{NAD_GROUP}/v1",
            "resources": nad_resources,
        },
    }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kvnet-apiserver-standin"
    timeout = 10
    disable_nagle_algorithm = True  # headers and body go out as separate writes: no 40 ms delayed-ACK stall
    standin: ApiStandIn  # set on the per-server subclass

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _send(self, code: int, body: Mapping[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError as err:
            raise ApiError(400, "BadRequest", f"error decoding request body: {err}") from None

    def _serve(self, method: str) -> None:
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        standin = self.standin
        body = None
        try:
            body = self._body()
            standin._record(method, path)
            standin._check_auth(self.headers.get("Authorization"))
            standin._maybe_fail(method, path)
            code, out = standin._route(method, path, body, self.headers.get("Content-Type", ""))
        except ApiError as err:
            self._send(err.code, err.body)
            return
        self._send(code, out)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._active: set[socket.socket] = set()
        self._active_lock = threading.Lock()
        self.accepted = 0

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self._active_lock:
            self._active.add(request)
            self.accepted += 1
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._active_lock:
                self._active.discard(request)

    def close_connections(self) -> None:
        """Cut kept-alive client connections, as a stopping API server does."""
        with self._active_lock:
            active = list(self._active)
        for sock in active:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A broken client connection (reset, failed TLS handshake) is the client's problem."""
        log.debug("API stand-in: error serving %s", client_address, exc_info=True)


class ApiStandIn:
    """The in-memory API stand-in on ``host:port`` (0 = a free port), run in a thread."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, token: str | None = None, tls: StandInTls | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.token = token
        self.tls = tls
        self._store = _Store()
        self._faults: list[_Fault] = []
        self._requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        handler = type("StandInHandler", (_Handler,), {"standin": self})
        server_class = (
            type("_Server6", (_Server,), {"address_family": socket.AF_INET6}) if ":" in self.host else _Server
        )
        server = server_class((self.host, self.port), handler)
        if self.tls is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(self.tls.cert_file, self.tls.key_file)
            if self.tls.client_cert_file:
                ctx.load_verify_locations(self.tls.ca_file)
                ctx.verify_mode = ssl.CERT_REQUIRED
            server.socket = ctx.wrap_socket(server.socket, server_side=True)
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="kvnet-apiserver-standin", daemon=True
        )
        self._thread.start()
        log.debug("API stand-in listening on %s", self.url)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.close_connections()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> ApiStandIn:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def write_kubeconfig(self, path: str) -> None:
        """A kubeconfig pointing at this stand-in (with the bearer token if one is set)."""
        user: dict[str, Any] = {"token": self.token} if self.token else {}
        cluster: dict[str, Any] = {"server": self.url}
        if self.tls is not None:
            cluster["certificate-authority"] = self.tls.ca_file
            if self.tls.client_cert_file:
                user["client-certificate"] = self.tls.client_cert_file
                user["client-key"] = self.tls.client_key_file
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kvnet-standin", "cluster": cluster}],
            "users": [{"name": "kvnet-standin", "user": user}],
            "contexts": [{"name": "kvnet-standin", "context": {"cluster": "kvnet-standin", "user": "kvnet-standin"}}],
            "current-context": "kvnet-standin",
        }
        with open(path, "w", encoding="utf-8") as fh:
            yaml.safe_dump(config, fh, sort_keys=False)

    # --- content -----------------------------------------------------------------------

    @staticmethod
    def _plural(kind: str) -> str:
        plural = _KINDS.get(kind.lower())
        if plural is None:
            raise ValueError(f"the API stand-in serves pods and network-attachment-definitions, not {kind!r}")
        return plural

    def load(self, objects: Iterable[Mapping[str, Any]]) -> None:
        """Add pods and NADs (dicts as in YAML manifests; ``List`` objects are unpacked)."""
        for obj in objects:
            if obj is None:
                continue
            if obj.get("kind", "").endswith("List") and isinstance(obj.get("items"), list):
                self.load(obj["items"])
                continue
            plural = self._plural(str(obj.get("kind", "")))
            namespace = (obj.get("metadata") or {}).get("namespace") or "default"
            try:
                self._store.create(plural, namespace, copy.deepcopy(dict(obj)))
            except ApiError as err:
                raise ValueError(f"cannot load {obj.get('kind')} {namespace}: {err}") from None

    def load_yaml(self, path: str) -> None:
        with open(path, encoding="utf-8") as fh:
            self.load(list(yaml.safe_load_all(fh)))

    def get(self, kind: str, namespace: str, name: str) -> Mapping[str, Any] | None:
        """The stored object (a copy), for test assertions; None when absent."""
        try:
            return self._store.get(self._plural(kind), namespace, name)
        except ApiError:
            return None

    def delete(self, kind: str, namespace: str, name: str) -> None:
        try:
            self._store.delete(self._plural(kind), namespace, name)
        except ApiError:
            pass

    # --- test hooks --------------------------------------------------------------------

    def fail_next(self, code: int, *, method: str | None = None, path: str | None = None, times: int = 1) -> None:
        """Answer the next ``times`` matching requests with ``code`` (409 Conflict, 500, 403, ...).

        ``path`` matches as a suffix of the request path (e.g. ``"/status"``).
        """
        with self._lock:
            self._faults.append(_Fault(code, method.upper() if method else None, path, times))

    @property
    def connections(self) -> int:
        """How many client connections were accepted (keep-alive reuse shows here)."""
        return self._server.accepted if self._server is not None else 0

    @property
    def requests(self) -> list[tuple[str, str]]:
        """Every (method, path) served, in order."""
        with self._lock:
            return list(self._requests)

    def _record(self, method: str, path: str) -> None:
        with self._lock:
            self._requests.append((method, path))

    def _check_auth(self, header: str | None) -> None:
        if self.token and header != f"Bearer {self.token}":
            raise ApiError(401, "Unauthorized", "Unauthorized")

    def _maybe_fail(self, method: str, path: str) -> None:
        with self._lock:
            for fault in self._faults:
                if (fault.method in (None, method)) and (fault.path is None or path.endswith(fault.path)):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    break
            else:
                return
        if fault.code == 409:
            name = path.rstrip("/").split("/")[-1]
            if name == "status":
                name = path.split("/")[-2]
            raise conflict("pods" if "/pods" in path else NAD_PLURAL, name)
        reasons = {
            401: "Unauthorized",
            403: "Forbidden",
            404: "NotFound",
            429: "TooManyRequests",
            500: "InternalError",
            503: "ServiceUnavailable",
        }
        message = {500: "Internal error occurred: injected failure", 403: "forbidden: injected failure"}.get(
            fault.code, f"injected failure {fault.code}"
        )
        raise ApiError(fault.code, reasons.get(fault.code, HTTPStatus(fault.code).phrase), message)

    # --- routing -----------------------------------------------------------------------

    def _route(self, method: str, path: str, body: Any, content_type: str) -> tuple[int, Mapping[str, Any]]:
        discovery = _discovery(f"{self.host}:{self.port}")
        if path in discovery:
            if method != "GET":
                raise ApiError(405, "MethodNotAllowed", f"the server does not allow this method on {path}")
            return 200, discovery[path]
        m = _POD_ROUTE.match(path)
        plural = "pods"
        if m is None:
            m = _NAD_ROUTE.match(path)
            plural = NAD_PLURAL
        if m is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        ns, name, status_only = m["ns"], m["name"], bool(m.groupdict().get("status"))
        store = self._store
        if name is None:
            if method == "GET":
                kind = "PodList" if plural == "pods" else "NetworkAttachmentDefinitionList"
                api_version = "v1" if plural == "pods" else f"{NAD_GROUP}/v1"
                return 200, {
                    "kind": kind,
                    "apiVersion": api_version,
                    "metadata": {"resourceVersion": str(store.version)},
                    "items": store.list(plural, ns),
                }
            if method == "POST":
                return 201, store.create(plural, ns, body)
            raise ApiError(405, "MethodNotAllowed", f"the server does not allow this method on {path}")
        if method == "GET":
            return 200, store.get(plural, ns, name)
        if method == "PUT":
            return 200, store.update(plural, ns, name, body, status_only=status_only)
        if method == "PATCH":
            if content_type.split(";")[0].strip() not in _MERGE_PATCH_TYPES:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    f"the body of the request was in an unknown format - accepted media types include: "
                    f"{', '.join(_MERGE_PATCH_TYPES)}",
                )
            return 200, store.patch(plural, ns, name, body, status_only=status_only)
        if method == "DELETE" and not status_only:
            store.delete(plural, ns, name)
            return 200, {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": _details(plural, name),
            }
        raise ApiError(405, "MethodNotAllowed", f"the server does not allow this method on {path}")


def iter_yaml_objects(paths: Iterable[str]) -> Iterator[Mapping[str, Any]]:
    """Every document of the given YAML files (for ``kvnet apiserver --load``)."""
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            for doc in yaml.safe_load_all(fh):
                if doc:
                    yield doc
