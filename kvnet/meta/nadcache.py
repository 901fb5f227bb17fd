"""A watch-backed cache of NetworkAttachmentDefinitions for the long-lived daemon.

Multus GETs each NAD a pod names on every ADD. The daemon instead lists every namespace's
NADs once and then follows the API server's watch from that list's resourceVersion, so an
ADD reads its NADs from memory. The rules (docs/meta-plugin.md, "NAD cache"):

* a NAD is served from the cache only while the watch is **synced**: after the list, and
  for as long as the watch stream that follows it stays open. When the stream ends or
  fails (a timeout, a 410 Gone, the server restarting) the cache stops serving until a new
  list has been taken, so a NAD is never older than the last watch event the server sent;
* a miss (a NAD the cache does not hold, or any read while not synced) is a GET, exactly
  as without the cache, and the GET's answer is not stored (the watch owns the contents),
  so a NAD created a moment before its pod is found either way;
* a list refused (403: the ServiceAccount has no list/watch on NADs, as with
  deploy/rbac.yaml alone) or failing leaves the cache unsynced, and the daemon keeps
  GETting; the list is tried again after 10 s, doubling up to 5 minutes while it keeps
  failing, and the same failure is logged once (a warning), not at every try.

Pods, network-status, Events and anything else pass straight through to the wrapped API.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

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


NadKey = tuple[str, str]
CacheObserver = Callable[[str], None]  # "hit" or "miss"


def _key(obj: Mapping[str, Any]) -> NadKey | None:
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping):
        return None
    namespace, name = meta.get("namespace"), meta.get("name")
    return (namespace, name) if isinstance(namespace, str) and isinstance(name, str) else None


class NadCache:
    """A :class:`KubeApi` whose ``get_nad`` is answered from a list + watch when synced."""

    def __init__(
        self,
        api: KubeApi,
        source: WatchSource,
        *,
        relist_after: float = RELIST_AFTER_FAILURE,
        watch_seconds: int = WATCH_SECONDS,
        start: bool = True,
    ) -> None:
        self.api = api
        self._source = source
        self._relist_after = relist_after
        self._watch_seconds = watch_seconds
        self._nads: dict[NadKey, Mapping[str, Any]] = {}
        self._synced = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.observer: CacheObserver | None = None
        self.lists = 0  # lists taken (the first, and one after each ended watch)
        self._thread = threading.Thread(target=self._run, name="kvnet-nad-cache", daemon=True)
        if start:
            self._thread.start()

    # -- the KubeApi -------------------------------------------------------------------

    def cached(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """The NAD as the watch last delivered it; None when not held or not synced."""
        with self._lock:
            return self._nads.get((namespace, name)) if self._synced else None

    def get_nad(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        found = self.cached(namespace, name)
        if self.observer is not None:
            self.observer("hit" if found is not None else "miss")
        return found if found is not None else self.api.get_nad(namespace, name)

    def get_pod(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self.api.get_pod(namespace, name)

    def set_network_status(self, namespace: str, name: str, value: str) -> None:
        self.api.set_network_status(namespace, name, value)

    def __getattr__(self, name: str) -> Any:
        """Whatever else the wrapped client offers (``create_event``, ...), as it offers it."""
        if name.startswith("_") or name == "api":
            raise AttributeError(name)
        return getattr(self.api, name)

    def close(self) -> None:
        self._stop.set()
        self._source.close()
        close = getattr(self.api, "close", None)
        if callable(close):
            close()

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

    # -- the list + watch loop -----------------------------------------------------------

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
                log.log(level, "NAD cache: %s; NADs are read by GET, the list is tried again in %.3g s", err.msg, delay)
                last = err.msg
            with self._lock:
                self._synced = False
            if self._stop.wait(delay):
                return

    def _list(self) -> str:
        listed = self._source.get_json(NADS_PATH)
        if listed is None:
            raise ApiFailure(f"GET {NADS_PATH}: not served (is the NetworkAttachmentDefinition CRD installed?)")
        items = listed.get("items") or []
        version = str((listed.get("metadata") or {}).get("resourceVersion") or "")
        nads = {key: obj for obj in items if isinstance(obj, Mapping) and (key := _key(obj)) is not None}
        with self._lock:
            self._nads = nads
            self._synced = True
        self.lists += 1
        log.info("NAD cache: %d NADs listed at resourceVersion %s, watching", len(nads), version)
        return version

    def _follow(self, version: str) -> None:
        """Apply the watch's events until the stream ends; an ERROR event ends it too."""
        for event in self._source.watch(NADS_PATH, version, timeout_seconds=self._watch_seconds):
            if self._stop.is_set():
                return
            kind, obj = event.get("type"), event.get("object")
            if not isinstance(obj, Mapping):
                continue
            if kind == "ERROR":  # 410 Gone (the version is compacted) and the like
                raise ApiFailure(f"NAD watch ended: {obj.get('message') or obj.get('reason') or 'ERROR event'}")
            key = _key(obj)
            if key is None:
                continue  # a BOOKMARK carries only a resourceVersion
            with self._lock:
                if kind in ("ADDED", "MODIFIED"):
                    self._nads[key] = obj
                elif kind == "DELETED":
                    self._nads.pop(key, None)
