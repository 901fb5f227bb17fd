"""Kubernetes API access behind one small Protocol; the only module using the kubernetes client.

Two implementations pass the same contract tests:

* :func:`light_api` — stdlib ``http.client`` plus the kubeconfig (PyYAML), for the CNI
  binary's hot path (importing the official client alone costs ~170 ms per call);
* :func:`client_api` — the official ``kubernetes`` client, for the long-lived daemon.

Both answer ``None`` for a 404, write ``network-status`` through the ``pods/status``
subresource with Multus's conflict retries (GET, set the annotation, PUT with the
``resourceVersion``; retry on 409), and turn every transport or API failure into
:class:`~kvnet.core.errors.ApiFailure` at this one boundary.

Both read a kubeconfig's ``tokenFile`` as client-go does (:class:`TokenFile`: re-read
when the last read is 50 s old, the last good token kept when a read fails) and, on a
401, re-read it at once and retry the request once, so a rotated ServiceAccount token is
used without a restart.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import http.client
import json
import logging
import os
import random
import re
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from urllib.parse import quote, urlsplit

import yaml

from kvnet.core.errors import ApiFailure, InvalidConfig
from kvnet.meta.ports import KubeApiFailure, RetriableApiFailure, client_go_text
from kvnet.meta.status import NETWORK_STATUS

log = logging.getLogger(__name__)

NAD_GROUP = "k8s.cni.cncf.io"
NAD_VERSION = "v1"
NAD_PLURAL = "network-attachment-definitions"

# client-go retry.DefaultRetry: 5 steps, 10 ms, factor 1.0, jitter 0.1
RETRY_STEPS = 5
RETRY_DELAY = 0.010
RETRY_JITTER = 0.1


class KubeApi(Protocol):
    """What kvnet needs from the API server."""

    def get_pod(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """The pod as JSON, or None when it does not exist."""
        ...

    def get_nad(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """The NetworkAttachmentDefinition as JSON, or None when it does not exist."""
        ...

    def set_network_status(self, namespace: str, name: str, value: str) -> None:
        """Write the network-status annotation through pods/status (no error when the pod is gone)."""
        ...


class _Conflict(Exception):
    """A 409 on an update: someone else wrote the pod first (``msg``: the error's text)."""

    def __init__(self, msg: str = "") -> None:
        super().__init__(msg)
        self.msg = msg


def pod_path(namespace: str, name: str, *, status: bool = False) -> str:
    path = f"/api/v1/namespaces/{quote(namespace, safe='')}/pods/{quote(name, safe='')}"
    return path + "/status" if status else path


def events_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{quote(namespace, safe='')}/events"


NADS_PATH = f"/apis/{NAD_GROUP}/{NAD_VERSION}/{NAD_PLURAL}"  # every namespace's: list and watch


def nad_path(namespace: str, name: str) -> str:
    return f"/apis/{NAD_GROUP}/{NAD_VERSION}/namespaces/{quote(namespace, safe='')}/{NAD_PLURAL}/{quote(name, safe='')}"


def _json_object(what: str, data: bytes) -> Mapping[str, Any]:
    """The API server's answer to ``what`` (``GET /api/...``) as a JSON object."""
    try:
        value = json.loads(data)
    except ValueError:
        raise ApiFailure(f"Kubernetes API {what}: the answer is not JSON") from None
    if not isinstance(value, dict):
        raise ApiFailure(f"Kubernetes API {what}: the answer is not a JSON object")
    return value


# apimachinery's knownReasons: a Status with one of these is judged by its reason alone
_KNOWN_REASONS = frozenset(
    {
        "Unauthorized",
        "Forbidden",
        "NotFound",
        "AlreadyExists",
        "Conflict",
        "Gone",
        "Invalid",
        "ServerTimeout",
        "StorageReadError",
        "Timeout",
        "TooManyRequests",
        "BadRequest",
        "MethodNotAllowed",
        "NotAcceptable",
        "RequestEntityTooLarge",
        "UnsupportedMediaType",
        "InternalError",
        "Expired",
        "ServiceUnavailable",
    }
)
_RETRIABLE_REASONS = ("InternalError", "ServiceUnavailable")


def retriable_answer(status: int, body: bytes | str | None) -> bool:
    """Multus's ``isCriticalRequestRetriable`` for an HTTP error answer, read as client-go reads it.

    client-go's error carries the answer's Status object when there is one (``kind:
    Status``, ``status: Failure``), else what ``NewGenericServerResponse`` makes of the
    HTTP code (503 ServiceUnavailable, 504 Timeout, any other 5xx InternalError). Retried
    are the reasons InternalError and ServiceUnavailable, and, for a reason apimachinery
    does not know, the codes 500 and 503 (``IsInternalError``, ``IsServiceUnavailable``).
    A 429 is not retried.
    """
    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = None
    if isinstance(data, dict) and data.get("kind") == "Status" and data.get("status") == "Failure":
        reason = data.get("reason") if isinstance(data.get("reason"), str) else ""
        code = data.get("code") if isinstance(data.get("code"), int) else 0
    else:
        reason = "ServiceUnavailable" if status == 503 else "InternalError" if status >= 500 and status != 504 else ""
        code = status
    if reason in _RETRIABLE_REASONS:
        return True
    return reason not in _KNOWN_REASONS and code in (500, 503)


def retriable_transport_error(err: BaseException) -> bool:
    """Multus's ``IsConnectionRefused`` / ``IsConnectionReset``: ECONNREFUSED or ECONNRESET
    anywhere in the error's chain (urllib3 keeps the cause in ``reason``). A server that
    closes the connection without an answer (EOF in Go) is neither."""
    seen: set[int] = set()
    todo: list[object] = [err]
    while todo:
        e = todo.pop()
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, http.client.RemoteDisconnected):
            continue
        if isinstance(e, (ConnectionRefusedError, ConnectionResetError)):
            return True
        todo.extend([e.__cause__, e.__context__, getattr(e, "reason", None), *e.args])
    return False


# NewGenericServerResponse's texts for an answer without a Status object
_GENERIC_TEXT = {
    400: "the server rejected our request for an unknown reason",
    401: "the server has asked for the client to provide credentials",
    404: "the server could not find the requested resource",
    405: "the server does not allow this method on the requested resource",
    409: "the server reported a conflict",
    422: "the server rejected our request due to an error in our request",
    429: "the server has received too many requests and has asked us to try again later",
    503: "the server is currently unable to handle the request",
    504: "the server was unable to return a response in the time allotted, but may still be processing the request",
}
_RESOURCE_PATH = re.compile(r"^/api(?:s/(?P<group>[^/]+))?/v1/namespaces/[^/]+/(?P<plural>[^/]+)/(?P<name>[^/]+)")


def answer_text(method: str, path: str, status: int, body: bytes | str | None) -> str:
    """client-go's error text for an HTTP error answer, which Multus's messages carry: the
    Status object's ``message`` when the body is one (``kind: Status``, ``status:
    Failure``), else ``NewGenericServerResponse``'s text for the code with the request's
    verb, resource and name (``... (get pods web)``)."""
    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = None
    if isinstance(data, dict) and data.get("kind") == "Status" and data.get("status") == "Failure":
        message = data.get("message")
        return message if isinstance(message, str) else ""
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else (body or "")
    server = text.strip() if text.strip() and data is None else "unknown"
    if status in (403, 415):
        message = server
    elif status == 406:
        message = (
            server
            if server != "unknown"
            else "the server was unable to respond with a content type that the client supports"
        )
    elif status in _GENERIC_TEXT:
        message = _GENERIC_TEXT[status]
    elif status >= 500:
        message = f"an error on the server ({json.dumps(server, ensure_ascii=False)}) has prevented the request from succeeding"
    else:
        message = f"the server responded with the status code {status} but did not return more information"
    where = _RESOURCE_PATH.match(path.partition("?")[0])
    if where:
        resource = where["plural"] + (f".{where['group']}" if where["group"] else "")
        message += f" ({method.lower()} {resource} {where['name']})"
    return message


class ThrottledApiFailure(KubeApiFailure):
    """A 429 (too many requests): not retried by Multus's GetPod rule, but by
    :class:`RetryingApi`, after the server's suggested delay (``retry_after``) if it gave one."""

    def __init__(self, msg: str, details: str = "", *, client_go_msg: str = "", retry_after: float | None = None):
        super().__init__(msg, details, client_go_msg=client_go_msg)
        self.retry_after = retry_after


class RetriableAfterFailure(RetriableApiFailure):
    """A retriable answer (500, 503) that says how long to wait (``retry_after``)."""

    def __init__(self, msg: str, details: str = "", *, client_go_msg: str = "", retry_after: float | None = None):
        super().__init__(msg, details, client_go_msg=client_go_msg)
        self.retry_after = retry_after


def suggested_delay(body: bytes | str | None) -> float | None:
    """apimachinery's ``SuggestsClientDelay``: the Status's ``details.retryAfterSeconds``
    (what the server also sends as the ``Retry-After`` header), else None."""
    try:
        data = json.loads(body) if body else None
    except ValueError:
        return None
    details = data.get("details") if isinstance(data, dict) else None
    seconds = details.get("retryAfterSeconds") if isinstance(details, dict) else None
    if isinstance(seconds, int) and not isinstance(seconds, bool) and seconds >= 0:
        return float(seconds)
    return None


def _answer_failure(
    method: str, path: str, status: int, body: bytes | str | None, retry_after: str | None = None
) -> KubeApiFailure:
    """The failure for an HTTP error answer: kvnet's message naming the request, client-go's
    text (:func:`answer_text`), retriable or not (:func:`retriable_answer`), with the delay
    the server suggests (its ``Retry-After`` header, else the Status's ``retryAfterSeconds``)."""
    reason = http.client.responses.get(status, "no answer")
    msg = f"Kubernetes API {method} {path}: {status} {_status_message(body, reason)}"
    text = answer_text(method, path, status, body)
    delay = suggested_delay(body)
    if retry_after is not None and retry_after.strip().isdigit():
        delay = float(retry_after.strip())
    if status == 429:
        return ThrottledApiFailure(msg, client_go_msg=text, retry_after=delay)
    if retriable_answer(status, body):
        if delay is not None:
            return RetriableAfterFailure(msg, client_go_msg=text, retry_after=delay)
        return RetriableApiFailure(msg, client_go_msg=text)
    return KubeApiFailure(msg, client_go_msg=text)


def _status_message(body: bytes | str | None, fallback: str) -> str:
    """The ``message`` of a Kubernetes Status body, else the fallback."""
    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = None
    message = data.get("message") if isinstance(data, dict) else None
    return message if isinstance(message, str) else fallback


RECENT_POD_SECONDS = 30.0  # a pod read this recently is the first try of its network-status write
RECENT_PODS = 256  # pods remembered for that, the most recent


class _RetryingStatusWriter:
    """Multus's ``setPodNetworkStatus``: GET the pod, set the annotation, PUT pods/status; retry on 409.

    One request fewer than Multus: the first try PUTs the pod as this client last read it
    (the ADD's own pod read, at most :data:`RECENT_POD_SECONDS` old, used once). The PUT
    carries that read's resourceVersion, so a pod changed since is a 409 and the write goes
    on as Multus's does, with a fresh GET: nothing written by others is lost.
    """

    sleep: Callable[[float], None] = staticmethod(time.sleep)

    def __init__(self) -> None:
        self._recent: dict[tuple[str, str], tuple[float, Mapping[str, Any]]] = {}
        self._recent_lock = threading.Lock()

    def get_pod(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        pod = self._read_pod(namespace, name)
        if pod is not None:
            self.remember_pod(namespace, name, pod)
        return pod

    def remember_pod(self, namespace: str, name: str, pod: Mapping[str, Any]) -> None:
        """``pod`` as the first try of its next network-status write (a pod the ADD read,
        by GET or from the daemon's pod cache)."""
        with self._recent_lock:
            self._recent.pop((namespace, name), None)
            self._recent[(namespace, name)] = (time.monotonic(), pod)
            while len(self._recent) > RECENT_PODS:
                del self._recent[next(iter(self._recent))]

    def _recent_pod(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """The pod as last read, when read in the last :data:`RECENT_POD_SECONDS` (forgotten)."""
        with self._recent_lock:
            seen = self._recent.pop((namespace, name), None)
        if seen is None or time.monotonic() - seen[0] > RECENT_POD_SECONDS:
            return None
        return seen[1]

    def _read_pod(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        raise NotImplementedError

    def _put_pod_status(self, namespace: str, name: str, pod: Mapping[str, Any]) -> bool:
        """PUT the pod to pods/status; False when the pod is gone; raises _Conflict on 409."""
        raise NotImplementedError

    def set_network_status(self, namespace: str, name: str, value: str) -> None:
        """Failures read as Multus's ``SetPodNetworkStatusAnnotation`` words them: the first
        read ``failed to query the pod``, the update (later reads, the PUT, conflicts to the
        end of the retries, with the last conflict's text) ``failed to update the pod``."""
        update = (
            f"SetPodNetworkStatusAnnotation: failed to update the pod {name} in out of cluster comm: "
            f"SetNetworkStatus: failed to update the pod {name} in out of cluster comm: "
            f"status update failed for pod {namespace}/{name}: "
        )
        conflict = ""
        recent = self._recent_pod(namespace, name)
        for attempt in range(1, RETRY_STEPS + 1):
            try:
                pod = recent if attempt == 1 and recent is not None else self._read_pod(namespace, name)
            except ApiFailure as err:
                what = (
                    f"SetPodNetworkStatusAnnotation: failed to query the pod {name} in out of cluster comm: "
                    if attempt == 1
                    else update
                )
                raise _reworded(err, what) from err
            if pod is None:
                log.info("pod %s/%s is gone: network-status not written", namespace, name)
                return
            updated = copy.deepcopy(dict(pod))
            meta = updated.setdefault("metadata", {})
            annotations = meta.get("annotations") or {}
            meta["annotations"] = {**annotations, NETWORK_STATUS: value}
            try:
                if not self._put_pod_status(namespace, name, updated):
                    log.info("pod %s/%s was deleted while writing network-status", namespace, name)
                return
            except _Conflict as err:
                conflict = err.msg
                log.debug("pod %s/%s: conflict writing network-status (attempt %d)", namespace, name, attempt)
                if attempt < RETRY_STEPS:
                    self.sleep(RETRY_DELAY * (1 + RETRY_JITTER * random.random()))
            except ApiFailure as err:
                raise _reworded(err, update) from err
        raise KubeApiFailure(
            f"status update failed for pod {namespace}/{name}: still conflicting after {RETRY_STEPS} attempts",
            client_go_msg=update + conflict,
        )


def _reworded(err: ApiFailure, prefix: str) -> KubeApiFailure:
    """The same failure (its kind and suggested delay kept), its client-go text after ``prefix``."""
    out = copy.copy(err) if isinstance(err, KubeApiFailure) else KubeApiFailure(err.msg, err.details)
    out.client_go_msg = prefix + client_go_text(err)
    return out


# ------------------------------------------------------------------------------------
# kubeconfig (for the light client)
# ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KubeConfig:
    """The parts of a kubeconfig's current context the light client uses.

    With ``token_file``, ``token`` is what the file held when the kubeconfig was read (the
    file wins over an inline ``token``, as in client-go; the inline one stays the fallback
    when the file cannot be read)."""

    server: str
    ca_file: str | None = None
    ca_data: bytes | None = None
    insecure: bool = False
    tls_server_name: str | None = None
    cert_file: str | None = None
    cert_data: bytes | None = None
    key_file: str | None = None
    key_data: bytes | None = None
    token: str | None = None
    username: str | None = None
    password: str | None = None
    token_file: str | None = None


# client-go's NewCachedFileTokenSource: a tokenFile is re-read a minute after it was last
# read, less a leeway of 10 s ("half of the duration between when the kubelet refreshes a
# projected service account token and when the original token expires")
TOKEN_FILE_PERIOD = 60.0
TOKEN_FILE_LEEWAY = 10.0


def read_token_file(path: str) -> str:
    """A bearer token file's content without surrounding whitespace (client-go's fileTokenSource)."""
    try:
        with open(path, encoding="utf-8") as fh:
            token = fh.read().strip()
    except (OSError, UnicodeDecodeError) as err:
        why = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise InvalidConfig(f"cannot read tokenFile {path}: {why}") from None
    if not token:
        raise InvalidConfig(f"read empty token from file {path}")
    return token


class TokenFile:
    """A kubeconfig's ``tokenFile`` as client-go's cached file token source reads it.

    :meth:`token` re-reads the file once the last read is ``TOKEN_FILE_PERIOD -
    TOKEN_FILE_LEEWAY`` seconds old; a failed read keeps the last token (and is tried again
    on the next call). :meth:`refresh` re-reads at once: the clients call it after a 401,
    where client-go only drops its cache and fails the request.
    """

    def __init__(self, path: str, token: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._token = token
        self._clock = clock
        self._read_at = clock()
        self._lock = threading.Lock()

    @property
    def current(self) -> str:
        """The token last read, without looking at the file."""
        return self._token

    def token(self) -> str:
        with self._lock:
            if self._clock() - self._read_at >= TOKEN_FILE_PERIOD - TOKEN_FILE_LEEWAY:
                self._read()
            return self._token

    def refresh(self) -> bool:
        """Read the file now; True when the token changed."""
        with self._lock:
            old = self._token
            self._read()
            return self._token != old

    def _read(self) -> None:
        try:
            token = read_token_file(self.path)
        except InvalidConfig as err:
            log.warning("unable to rotate token: %s (keeping the last one)", err.msg)
            return
        self._token = token
        self._read_at = self._clock()


def _named(items: object, name: str, what: str, path: str) -> Mapping[str, Any]:
    for item in items if isinstance(items, list) else []:
        if isinstance(item, Mapping) and item.get("name") == name:
            inner = item.get(what)
            return inner if isinstance(inner, Mapping) else {}
    raise InvalidConfig(f"kubeconfig {path}: no {what} named {name!r}")


def _current_context(path: str) -> tuple[Mapping[str, Any], Mapping[str, Any], Mapping[str, Any]]:
    """The current context's (context, cluster, user) of a kubeconfig."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml when present
    except OSError as err:
        raise InvalidConfig(f"cannot read kubeconfig {path}: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise InvalidConfig(f"kubeconfig {path} is not valid YAML: {err}") from None
    if not isinstance(data, Mapping):
        raise InvalidConfig(f"kubeconfig {path} is not a kubeconfig (expected a mapping)")
    current = data.get("current-context")
    if not isinstance(current, str) or not current:
        raise InvalidConfig(f"kubeconfig {path}: no current-context")
    context = _named(data.get("contexts"), current, "context", path)
    cluster = _named(data.get("clusters"), str(context.get("cluster")), "cluster", path)
    user = _named(data.get("users"), str(context.get("user")), "user", path) if context.get("user") else {}
    return context, cluster, user


def _path_in(kubeconfig: str, mapping: Mapping[str, Any], key: str) -> str | None:
    """A file named in a kubeconfig (relative paths are relative to the kubeconfig)."""
    value = mapping.get(key)
    if not isinstance(value, str) or not value:
        return None
    return os.path.join(os.path.dirname(os.path.abspath(kubeconfig)), value)


def token_file_of(path: str) -> str | None:
    """The current user's ``tokenFile`` of a kubeconfig, if it has one."""
    return _path_in(path, _current_context(path)[2], "tokenFile")


def load_kubeconfig(path: str) -> KubeConfig:
    """Read the current context of a kubeconfig (relative paths are relative to the file)."""
    context, cluster, user = _current_context(path)
    server = cluster.get("server")
    if not isinstance(server, str) or not server:
        raise InvalidConfig(f"kubeconfig {path}: cluster {context.get('cluster')!r} has no server")
    if "exec" in user or "auth-provider" in user:
        raise InvalidConfig(
            f"kubeconfig {path}: user {context.get('user')!r} uses exec/auth-provider credentials; the light "
            "client supports tokens, basic auth and client certificates (use the daemon mode)"
        )

    def file_of(mapping: Mapping[str, Any], key: str) -> str | None:
        return _path_in(path, mapping, key)

    def data_of(mapping: Mapping[str, Any], key: str) -> bytes | None:
        value = mapping.get(key)
        if not isinstance(value, str) or not value:
            return None
        try:
            return base64.b64decode(value, validate=True)
        except ValueError:
            raise InvalidConfig(f"kubeconfig {path}: {key} is not base64") from None

    token = user.get("token") if isinstance(user.get("token"), str) else None
    token_file = file_of(user, "tokenFile")
    if token_file:
        try:
            token = read_token_file(token_file)
        except InvalidConfig as err:
            if not token:
                raise InvalidConfig(f"kubeconfig {path}: {err.msg}") from None
            log.warning("kubeconfig %s: %s; using its inline token", path, err.msg)
    return KubeConfig(
        server=server.rstrip("/"),
        ca_file=file_of(cluster, "certificate-authority"),
        ca_data=data_of(cluster, "certificate-authority-data"),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        tls_server_name=cluster.get("tls-server-name") if isinstance(cluster.get("tls-server-name"), str) else None,
        cert_file=file_of(user, "client-certificate"),
        cert_data=data_of(user, "client-certificate-data"),
        key_file=file_of(user, "client-key"),
        key_data=data_of(user, "client-key-data"),
        token=token or None,
        username=user.get("username") if isinstance(user.get("username"), str) else None,
        password=user.get("password") if isinstance(user.get("password"), str) else None,
        token_file=token_file,
    )


def _ssl_context(conf: KubeConfig) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=conf.ca_file, cadata=conf.ca_data.decode() if conf.ca_data else None)
    if conf.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if conf.cert_file or conf.cert_data:
        with tempfile.TemporaryDirectory(prefix="kvnet-kubeconfig-") as tmp:
            cert = conf.cert_file
            key = conf.key_file
            if conf.cert_data:
                cert = os.path.join(tmp, "client.crt")
                with open(cert, "wb") as fh:
                    fh.write(conf.cert_data)
            if conf.key_data:
                key = os.path.join(tmp, "client.key")
                with open(os.open(key, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as fh:
                    fh.write(conf.key_data)
            assert cert is not None
            try:
                ctx.load_cert_chain(cert, key)
            except (OSError, ssl.SSLError) as err:
                raise InvalidConfig(f"kubeconfig client certificate cannot be loaded: {err}") from None
    return ctx


# ------------------------------------------------------------------------------------
# light client: stdlib http.client
# ------------------------------------------------------------------------------------


MAX_IDLE_CONNECTIONS = 8  # kept-alive connections of one light client (thick mode: one per call in flight)


class LightApi(_RetryingStatusWriter):
    """The API over ``http.client`` with the kubeconfig's server, CA, client cert or token.

    Connections are kept alive in a small pool: each request takes an idle one (or opens
    one) and gives it back, so calls from several threads (the daemon's pods) never wait
    for each other's answers."""

    _idle: list[http.client.HTTPConnection]

    def __init__(self, conf: KubeConfig, *, timeout: float = 10.0, kubeconfig: str | None = None) -> None:
        super().__init__()
        self.timeout = timeout
        self._kubeconfig = kubeconfig
        self._lock = threading.Lock()
        self._idle = []
        self._use(conf)

    def _use(self, conf: KubeConfig) -> None:
        """Take the server and credentials of ``conf`` (at start, and after a 401 re-read)."""
        parts = urlsplit(conf.server)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidConfig(f"kubeconfig server {conf.server!r} is not an http(s) URL")
        self.conf = conf
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._ssl = _ssl_context(conf) if self._https else None
        self._headers = {"Accept": "application/json", "User-Agent": "kvnet/light"}
        self._token_file = TokenFile(conf.token_file, conf.token) if conf.token_file and conf.token else None
        if conf.token:
            self._headers["Authorization"] = f"Bearer {conf.token}"
        elif conf.username is not None:
            basic = base64.b64encode(f"{conf.username}:{conf.password or ''}".encode()).decode()
            self._headers["Authorization"] = f"Basic {basic}"

    def _reload_credentials(self) -> bool:
        """After a 401: re-read the token file, else the kubeconfig (tokens rotate); True when
        the credentials changed."""
        if self._token_file is not None and self._token_file.refresh():
            log.info("tokenFile %s changed: using its new token", self._token_file.path)
            return True
        if self._kubeconfig is None:
            return False
        try:
            conf = load_kubeconfig(self._kubeconfig)
        except InvalidConfig as err:
            log.warning("kubeconfig %s cannot be re-read after a 401: %s", self._kubeconfig, err.msg)
            return False
        used = self.conf if self._token_file is None else dataclasses.replace(self.conf, token=self._token_file.current)
        if conf == used:
            return False
        log.info("kubeconfig %s changed: using its new credentials", self._kubeconfig)
        self.close()
        self._use(conf)
        return True

    def _connection(self) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=self.timeout, context=self._ssl)
        return http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)

    def close(self) -> None:
        """Drop the kept-alive connections (also done when the client is garbage-collected)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _give_back(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < MAX_IDLE_CONNECTIONS:
                self._idle.append(conn)
                return
        conn.close()

    def __del__(self) -> None:
        self.close()

    def request(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> tuple[int, bytes]:
        """One HTTP exchange; on 401 the kubeconfig is re-read once (a rotated token)."""
        status, payload, _ = self._request(method, path, body)
        return status, payload

    def _request(self, method: str, path: str, body: Mapping[str, Any] | None) -> tuple[int, bytes, str | None]:
        """:meth:`request` with the answer's ``Retry-After`` header."""
        status, payload, retry_after = self._exchange(method, path, body)
        if status == 401 and self._reload_credentials():
            status, payload, retry_after = self._exchange(method, path, body)
        return status, payload, retry_after

    def _request_headers(self) -> dict[str, str]:
        """The headers of one request: the client's, and the token file's current token."""
        headers = dict(self._headers)
        if self._token_file is not None:
            headers["Authorization"] = f"Bearer {self._token_file.token()}"
        return headers

    def _exchange(self, method: str, path: str, body: Mapping[str, Any] | None) -> tuple[int, bytes, str | None]:
        """One HTTP exchange on a kept-alive connection; transport failures become ApiFailure.

        A kept connection the server closed meanwhile is replaced once (every request
        kvnet makes is safe to repeat: GETs, and PUTs guarded by resourceVersion).
        """
        headers = self._request_headers()
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        for attempt in (1, 2):
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            reused = conn is not None
            if conn is None:
                conn = self._connection()
            try:
                conn.request(method, self._prefix + path, body=data, headers=headers)
                resp = conn.getresponse()
                payload = resp.read()
                if resp.will_close:
                    conn.close()
                else:
                    self._give_back(conn)
                return resp.status, payload, resp.getheader("Retry-After")
            except (OSError, http.client.HTTPException) as err:
                conn.close()
                stale = isinstance(err, (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError))
                if reused and stale and attempt == 1:
                    continue
                timed_out = isinstance(err, (socket.timeout, TimeoutError))
                what = "timed out" if timed_out else str(err) or type(err).__name__
                cls = RetriableApiFailure if retriable_transport_error(err) else KubeApiFailure
                raise cls(f"Kubernetes API {method} {self.conf.server}{path}: {what}") from None
        raise AssertionError("unreachable")

    def _json(self, method: str, path: str, status: int, data: bytes, retry_after: str | None) -> Mapping[str, Any]:
        if status >= 300:
            raise _answer_failure(method, path, status, data, retry_after)
        return _json_object(f"{method} {path}", data)

    def _get(self, path: str) -> Mapping[str, Any] | None:
        status, data, retry_after = self._request("GET", path, None)
        if status == 404:
            return None
        return self._json("GET", path, status, data, retry_after)

    def get_json(self, path: str) -> Mapping[str, Any] | None:
        """GET ``path`` as JSON (None for a 404); any other failure raised."""
        return self._get(path)

    def watch(self, path: str, resource_version: str, *, timeout_seconds: int = 300) -> Iterator[Mapping[str, Any]]:
        """The events of ``GET path?watch=1`` (``path`` may carry a query of its own, a
        fieldSelector) from ``resource_version`` (with bookmarks), one
        JSON object per line, on a connection of its own (never a pooled one) that the server
        ends after ``timeout_seconds``. Transport failures and non-200 answers are raised."""
        query = f"watch=1&allowWatchBookmarks=true&resourceVersion={quote(resource_version)}"
        url = f"{self._prefix}{path}{'&' if '?' in path else '?'}{query}&timeoutSeconds={timeout_seconds}"
        headers = self._request_headers()
        conn = self._connection()
        conn.timeout = timeout_seconds + 30
        try:
            try:
                conn.request("GET", url, headers=headers)
                resp = conn.getresponse()
                if resp.status != 200:
                    raise _answer_failure("GET", path, resp.status, resp.read(), resp.getheader("Retry-After"))
                while line := resp.readline():
                    if line.strip():
                        yield _json_object(f"watch {path}", line)
            except (OSError, http.client.HTTPException) as err:
                raise KubeApiFailure(
                    f"Kubernetes API watch {self.conf.server}{path}: {err or type(err).__name__}"
                ) from None
        finally:
            conn.close()

    def _read_pod(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self._get(pod_path(namespace, name))

    def get_nad(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self._get(nad_path(namespace, name))

    def create_event(self, namespace: str, event: Mapping[str, Any]) -> None:
        path = events_path(namespace)
        status, data, retry_after = self._request("POST", path, event)
        self._json("POST", path, status, data, retry_after)

    def _put_pod_status(self, namespace: str, name: str, pod: Mapping[str, Any]) -> bool:
        path = pod_path(namespace, name, status=True)
        status, data, retry_after = self._request("PUT", path, pod)
        if status == 409:
            raise _Conflict(answer_text("PUT", path, status, data))
        if status == 404:
            return False
        self._json("PUT", path, status, data, retry_after)
        return True


def light_api(kubeconfig: str, *, timeout: float = 10.0) -> KubeApi:
    """The stdlib client for the CNI binary's hot path."""
    return LightApi(load_kubeconfig(kubeconfig), timeout=timeout, kubeconfig=kubeconfig)


# ------------------------------------------------------------------------------------
# official client
# ------------------------------------------------------------------------------------


class ClientApi(_RetryingStatusWriter):
    """The API over the official ``kubernetes`` client (CoreV1Api, CustomObjectsApi)."""

    def __init__(self, kubeconfig: str, *, timeout: float = 10.0) -> None:
        from kubernetes import client, config
        from kubernetes.client.exceptions import ApiException
        from kubernetes.config.config_exception import ConfigException
        from urllib3.exceptions import HTTPError
        from urllib3.util.retry import Retry

        super().__init__()
        self._api_exception = ApiException
        self._transport_errors: tuple[type[BaseException], ...] = (HTTPError, OSError)
        self._config_errors: tuple[type[BaseException], ...] = (
            ConfigException,
            OSError,
            yaml.YAMLError,
            ValueError,
            TypeError,
        )
        self._client_module = client
        self._config_module = config
        self._retry = Retry
        self.timeout = timeout
        self._kubeconfig = kubeconfig
        self._connect()

    def _connect(self) -> None:
        """Build the client from the kubeconfig (at start, and after a 401 re-read)."""
        client, config = self._client_module, self._config_module
        configuration = client.Configuration()
        try:
            config.load_kube_config(
                config_file=self._kubeconfig, client_configuration=configuration, persist_config=False
            )
        except self._config_errors as err:
            raise InvalidConfig(f"cannot use kubeconfig {self._kubeconfig}: {err}") from None
        # A pooled connection the server dropped is replaced (connect/read retry once, at
        # once); HTTP error statuses are never retried here: the caller decides, as client-go.
        configuration.retries = self._retry(total=2, connect=1, read=1, redirect=0, status=0, other=0, backoff_factor=0)
        self._token_file = self._watch_token_file(configuration)
        api_client = client.ApiClient(configuration)
        self._api_client = api_client
        self._core = client.CoreV1Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)
        self.server = api_client.configuration.host
        self._credentials = (
            configuration.api_key,  # the live dict: the token hook keeps the last token used in it
            configuration.cert_file,
            configuration.key_file,
            configuration.username,
            configuration.password,
        )

    def _watch_token_file(self, configuration: Any) -> TokenFile | None:
        """The kubeconfig's ``tokenFile``, re-read as client-go does (the client library reads
        it once): the token goes into each request through ``refresh_api_key_hook``."""
        try:
            path = token_file_of(self._kubeconfig)
        except InvalidConfig:
            return None
        if path is None:
            return None
        loaded = str(configuration.api_key.get("BearerToken") or "").removeprefix("Bearer ")
        try:
            source = TokenFile(path, read_token_file(path))
        except InvalidConfig as err:
            if not loaded:
                raise InvalidConfig(f"cannot use kubeconfig {self._kubeconfig}: {err.msg}") from None
            source = TokenFile(path, loaded)

        def hook(conf: Any) -> None:
            conf.api_key["BearerToken"] = f"Bearer {source.token()}"

        configuration.refresh_api_key_hook = hook
        hook(configuration)
        return source

    def _reload_credentials(self) -> bool:
        """After a 401: re-read the token file, else the kubeconfig (tokens rotate); True when
        the credentials changed."""
        if self._token_file is not None and self._token_file.refresh():
            log.info("tokenFile %s changed: using its new token", self._token_file.path)
            return True
        old, old_client = self._credentials, self._api_client
        try:
            self._connect()
        except InvalidConfig as err:
            log.warning("kubeconfig %s cannot be re-read after a 401: %s", self._kubeconfig, err.msg)
            return False
        old_client.close()
        if self._credentials == old:
            return False
        log.info("kubeconfig %s changed: using its new credentials", self._kubeconfig)
        return True

    def close(self) -> None:
        """Release the connection pool (the daemon keeps one client for its lifetime)."""
        self._api_client.close()

    def _call(self, what: str, api: str, method: str, *args: Any) -> tuple[int, bytes]:
        """``self.<api>.<method>(*args)``; (status, body); on 401 the kubeconfig is re-read once."""
        status, body = self._call_once(what, api, method, *args)
        if status == 401 and self._reload_credentials():
            status, body = self._call_once(what, api, method, *args)
        return status, body

    def _call_once(self, what: str, api: str, method: str, *args: Any) -> tuple[int, bytes]:
        """Run one client call; transport failures become ApiFailure."""
        fn = getattr(getattr(self, api), method)
        try:
            resp = fn(*args, _preload_content=False, _request_timeout=self.timeout)
            return resp.status, resp.data
        except self._api_exception as err:
            if not err.status:  # the client's own failure (TLS, bad request body), no HTTP answer
                raise ApiFailure(f"Kubernetes API {what} at {self.server}: {err.reason}") from None
            body = err.body if isinstance(err.body, bytes) else str(err.body or "").encode()
            return int(err.status), body
        except self._transport_errors as err:
            cls = RetriableApiFailure if retriable_transport_error(err) else KubeApiFailure
            raise cls(f"Kubernetes API {what} at {self.server}: {err}") from None
        except ValueError as err:  # the client's own model validation refused the object
            raise ApiFailure(f"Kubernetes API {what}: the client refused the object: {err}") from None

    def _decode(self, what: str, status: int, data: bytes) -> Mapping[str, Any]:
        if status == 0 or status >= 300:
            method, _, path = what.partition(" ")
            raise _answer_failure(method, path, status, data)
        return _json_object(what, data)

    def _read_pod(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        what = f"GET {pod_path(namespace, name)}"
        status, data = self._call(what, "_core", "read_namespaced_pod", name, namespace)
        return None if status == 404 else self._decode(what, status, data)

    def get_nad(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        what = f"GET {nad_path(namespace, name)}"
        status, data = self._call(
            what, "_custom", "get_namespaced_custom_object", NAD_GROUP, NAD_VERSION, namespace, NAD_PLURAL, name
        )
        return None if status == 404 else self._decode(what, status, data)

    def create_event(self, namespace: str, event: Mapping[str, Any]) -> None:
        what = f"POST {events_path(namespace)}"
        status, data = self._call(what, "_core", "create_namespaced_event", namespace, dict(event))
        self._decode(what, status, data)

    def _put_pod_status(self, namespace: str, name: str, pod: Mapping[str, Any]) -> bool:
        what = f"PUT {pod_path(namespace, name, status=True)}"
        status, data = self._call(what, "_core", "replace_namespaced_pod_status", name, namespace, dict(pod))
        if status == 409:
            raise _Conflict(answer_text("PUT", pod_path(namespace, name, status=True), status, data))
        if status == 404:
            return False
        self._decode(what, status, data)
        return True


def client_api(kubeconfig: str, *, timeout: float = 10.0) -> KubeApi:
    """The official client, for the long-lived daemon (imported here, lazily)."""
    return ClientApi(kubeconfig, timeout=timeout)


# ------------------------------------------------------------------------------------
# transient failures
# ------------------------------------------------------------------------------------

_T = TypeVar("_T")
ApiObserver = Callable[[str, str, bool], None]  # (call, "ok" or "error", retried)
API_RETRY_FOR = 5.0  # seconds a NAD read or the network-status write is retried
API_RETRY_FIRST = 0.1  # the first pause; doubled after each try
API_RETRY_MAX_PAUSE = 1.0


class RetryingApi:
    """A :class:`KubeApi` that rides out a transient API failure instead of failing the ADD.

    NAD reads and the network-status write are retried for up to ``retry_for`` seconds on
    a retriable answer (500, 503, :func:`retriable_answer`), a refused or reset connection
    and a 429, after the delay the server suggests (``Retry-After``) or else after pauses
    of 0.1 s doubling up to 1 s; a suggested delay beyond the bound ends the retries. The
    pod read keeps Multus's own poll (``kvnet.meta.pod.get_pod``: 0.25 s for 2.5 s on
    retriable failures); here only a 429 on it is retried. Every other failure is raised
    at once.
    """

    def __init__(
        self,
        api: KubeApi,
        *,
        retry_for: float = API_RETRY_FOR,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.retry_for = retry_for
        self._sleep = sleep
        self._clock = clock
        self.observer: ApiObserver | None = None

    def get_pod(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self._retried("get_pod", lambda: self.api.get_pod(namespace, name), (ThrottledApiFailure,))

    def get_nad(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self._retried("get_nad", lambda: self.api.get_nad(namespace, name))

    def set_network_status(self, namespace: str, name: str, value: str) -> None:
        self._retried("set_network_status", lambda: self.api.set_network_status(namespace, name, value))

    def remember_pod(self, namespace: str, name: str, pod: Mapping[str, Any]) -> None:
        remember = getattr(self.api, "remember_pod", None)
        if callable(remember):
            remember(namespace, name, pod)

    def create_event(self, namespace: str, event: Mapping[str, Any]) -> None:
        """Not retried: an Event is best effort (``kvnet.meta.events`` drops what fails)."""
        create = getattr(self.api, "create_event", None)
        if create is None:
            raise ApiFailure("this API client cannot post Events")
        self._retried("create_event", lambda: create(namespace, event), ())

    def close(self) -> None:
        close = getattr(self.api, "close", None)
        if callable(close):
            close()

    def _retried(
        self,
        what: str,
        call: Callable[[], _T],
        kinds: tuple[type[KubeApiFailure], ...] = (RetriableApiFailure, ThrottledApiFailure),
    ) -> _T:
        deadline = self._clock() + self.retry_for
        pause = API_RETRY_FIRST
        observer = self.observer
        while True:
            try:
                out = call()
                if observer is not None:
                    observer(what, "ok", False)
                return out
            except ApiFailure as err:
                retry = isinstance(err, kinds)
                suggested = getattr(err, "retry_after", None)
                wait = pause if suggested is None else float(suggested)
                if retry and self._clock() + wait > deadline:
                    retry = False
                if observer is not None:
                    observer(what, "error", retry)
                if not retry:
                    raise
                log.info("transient API failure, trying again in %.2fs: %s", wait, err.msg)
                self._sleep(wait)
                pause = min(pause * 2, API_RETRY_MAX_PAUSE)
