"""Watch-backed caches for the long-lived daemon: the NADs, and the pods of its node.

Multus GETs each NAD a pod names on every ADD; multus-daemon reads the pod from an
informer of its node's pods. The daemon lists every namespace's NADs (and, given its node's
name, the pods with that ``spec.nodeName``) once and then follows the API server's watch
from that list's resourceVersion, so an ADD reads them from memory. The rules
(docs/meta-plugin.md, "NAD cache" and "Pod cache"):

* an object is served from a cache only while its watch is **synced**: after the list,
  and for as long as the watch stream that follows it stays open. When the stream ends or
  fails (a timeout, a 410 Gone, the server restarting) the cache stops serving until a new
  list has been taken, so an object is never older than the last watch event the server
  sent;
* a miss (an object the cache does not hold, or any read while not synced) is a GET,
  exactly as without the cache, and the GET's answer is not stored (the watch owns the
  contents), so a NAD created a moment before its pod, or a pod the watch has not
  delivered yet, is found either way;
* a list refused (403: the ServiceAccount has no list/watch, as with deploy/rbac.yaml
  alone) or failing leaves the cache unsynced, and the daemon keeps GETting; the list is
  tried again after 10 s, doubling up to 5 minutes while it keeps failing, and the same
  failure is logged once (a warning), not at every try;
* a pod served from the cache is also the first try of its network-status write (the
  client's ``remember_pod``), as a pod the ADD read by GET is; a pod changed since is a 409
  and the write goes on with a fresh GET. A cached pod whose UID is not the runtime's is
  read again by GET (``get_pod_live``) before the ADD calls it a mismatch.

Everything else passes straight through to the wrapped API.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol
from urllib.parse import quote

from kvnet.core.errors import ApiFailure
from kvnet.meta.k8s import NADS_PATH
from kvnet.meta.ports import KubeApi

log = logging.getLogger(__name__)

RELIST_AFTER_FAILURE = 10.0  # seconds before a failed list or watch is tried again
RELIST_AFTER_MAX = 300.0  # ... doubling while it keeps failing, up to this
WATCH_SECONDS = 300  # the server ends each watch after this long; the cache then re-lists


class WatchSource(Protocol):
    """What the cache needs from a client: a list and a watch of one path."""

    def get_json(self, path: str) -> Mapping[str, Any] | None: ...

    def watch(self, path: str, resource_version: str, *, timeout_seconds: int = ...) -> Iterator[Mapping[str, Any]]: ...

    def close(self) -> None: ...


ObjectKey = tuple[str, str]  # (namespace, name)
CacheObserver = Callable[[str], None]  # "hit" or "miss"


def _key(obj: Mapping[str, Any]) -> ObjectKey | None:
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping):
        return None
    namespace, name = meta.get("namespace"), meta.get("name")
    return (namespace, name) if isinstance(namespace, str) and isinstance(name, str) else None


class WatchedObjects:
    """The objects at ``path`` (a list URL, with its query), kept by a list and then the
    watch from the list's resourceVersion, in a thread of their own; ``what`` names them in
    the log ("NAD", "pod")."""

    def __init__(
        self,
        source: WatchSource,
        path: str,
        what: str,
        *,
        relist_after: float = RELIST_AFTER_FAILURE,
        watch_seconds: int = WATCH_SECONDS,
        start: bool = True,
    ) -> None:
        self._source = source
        self._path = path
        self._what = what
        self._relist_after = relist_after
        self._watch_seconds = watch_seconds
        self._objects: dict[ObjectKey, Mapping[str, Any]] = {}
        self._synced = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.lists = 0  # lists taken (the first, and one after each ended watch)
        self._thread = threading.Thread(target=self._run, name=f"kvnet-{what.lower()}-cache", daemon=True)
        if start:
            self._thread.start()

    def cached(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """The object as the watch last delivered it; None when not held or not synced."""
        with self._lock:
            return self._objects.get((namespace, name)) if self._synced else None

    @property
    def synced(self) -> bool:
        with self._lock:
            return self._synced

    def wait_synced(self, timeout: float) -> bool:
        """True once the first list is in (for tests and the daemon's readiness)."""
        deadline = time.monotonic() + timeout
        while not self.synced and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.synced

    def close(self) -> None:
        self._stop.set()
        self._source.close()

    def _run(self) -> None:
        failures, last = 0, ""
        while not self._stop.is_set():
            try:
                version = self._list()
                failures, last = 0, ""
                self._follow(version)
                delay = 0.0  # the server ended the watch (its timeout): list again at once
            except ApiFailure as err:
                delay = min(self._relist_after * 2**failures, RELIST_AFTER_MAX)
                failures += 1
                level = logging.WARNING if err.msg != last else logging.DEBUG
                log.log(
                    level,
                    "%s cache: %s; %ss are read by GET, the list is tried again in %.3g s",
                    self._what,
                    err.msg,
                    self._what,
                    delay,
                )
                last = err.msg
            with self._lock:
                self._synced = False
            if self._stop.wait(delay):
                return

    def _list(self) -> str:
        listed = self._source.get_json(self._path)
        if listed is None:
            raise ApiFailure(f"GET {self._path}: not served (is the {self._what} resource installed?)")
        items = listed.get("items") or []
        version = str((listed.get("metadata") or {}).get("resourceVersion") or "")
        objects = {key: obj for obj in items if isinstance(obj, Mapping) and (key := _key(obj)) is not None}
        with self._lock:
            self._objects = objects
            self._synced = True
        self.lists += 1
        log.info("%s cache: %d listed at resourceVersion %s, watching", self._what, len(objects), version)
        return version

    def _follow(self, version: str) -> None:
        """Apply the watch's events until the stream ends; an ERROR event ends it too."""
        for event in self._source.watch(self._path, version, timeout_seconds=self._watch_seconds):
            if self._stop.is_set():
                return
            kind, obj = event.get("type"), event.get("object")
            if not isinstance(obj, Mapping):
                continue
            if kind == "ERROR":  # 410 Gone (the version is compacted) and the like
                raise ApiFailure(
                    f"{self._what} watch ended: {obj.get('message') or obj.get('reason') or 'ERROR event'}"
                )
            key = _key(obj)
            if key is None:
                continue  # a BOOKMARK carries only a resourceVersion
            with self._lock:
                if kind in ("ADDED", "MODIFIED"):
                    self._objects[key] = obj
                elif kind == "DELETED":
                    self._objects.pop(key, None)


class _CachedApi:
    """A :class:`KubeApi` wrapper over one :class:`WatchedObjects`; what it does not answer
    passes through to the wrapped client."""

    def __init__(self, api: KubeApi, objects: WatchedObjects) -> None:
        self.api = api
        self.objects = objects
        self.observer: CacheObserver | None = None

    def _observe(self, found: object) -> None:
        if self.observer is not None:
            self.observer("hit" if found is not None else "miss")

    def get_pod(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self.api.get_pod(namespace, name)

    def get_nad(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self.api.get_nad(namespace, name)

    def set_network_status(self, namespace: str, name: str, value: str) -> None:
        self.api.set_network_status(namespace, name, value)

    def __getattr__(self, name: str) -> Any:
        """Whatever else the wrapped client offers (``create_event``, ...), as it offers it."""
        if name.startswith("_") or name in ("api", "objects"):
            raise AttributeError(name)
        return getattr(self.api, name)

    @property
    def synced(self) -> bool:
        return self.objects.synced

    @property
    def lists(self) -> int:
        return self.objects.lists

    def cached(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self.objects.cached(namespace, name)

    def wait_synced(self, timeout: float) -> bool:
        return self.objects.wait_synced(timeout)

    def close(self) -> None:
        self.objects.close()
        close = getattr(self.api, "close", None)
        if callable(close):
            close()


class NadCache(_CachedApi):
    """A :class:`KubeApi` whose ``get_nad`` is answered from a list + watch of every
    namespace's NADs when synced."""

    def __init__(self, api: KubeApi, source: WatchSource, **options: Any) -> None:
        """``options``: :class:`WatchedObjects`' (``relist_after``, ``watch_seconds``, ``start``)."""
        super().__init__(api, WatchedObjects(source, NADS_PATH, "NAD", **options))

    def get_nad(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        found = self.cached(namespace, name)
        self._observe(found)
        return found if found is not None else self.api.get_nad(namespace, name)


def node_pods_path(node: str) -> str:
    """Every namespace's pods with ``spec.nodeName`` = ``node`` (multus-daemon's informer)."""
    return f"/api/v1/pods?fieldSelector={quote('spec.nodeName=' + node, safe='')}"


class PodCache(_CachedApi):
    """A :class:`KubeApi` whose ``get_pod`` is answered from a list + watch of the pods
    of one node when synced; the pod served is remembered by the client as the first try
    of its network-status write."""

    def __init__(self, api: KubeApi, source: WatchSource, node: str, **options: Any) -> None:
        super().__init__(api, WatchedObjects(source, node_pods_path(node), "pod", **options))

    def get_pod(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        found = self.cached(namespace, name)
        self._observe(found)
        if found is None:
            return self.api.get_pod(namespace, name)
        remember = getattr(self.api, "remember_pod", None)
        if callable(remember):
            remember(namespace, name, found)
        return found

    def get_pod_live(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """The pod read by GET, past the cache (a cached pod with another UID is read so)."""
        return self.api.get_pod(namespace, name)
