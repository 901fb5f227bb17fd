"""The daemon's watch-backed NAD and pod caches (kvnet.meta.watchcache) over a scripted
list + watch: hits only while synced, misses and unsynced reads are GETs, watch events
applied, an ended or failed watch unsyncs until the next list; a cached pod is the status
write's first try, and one of another UID is read again."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from kvnet.core.errors import ApiFailure
from kvnet.meta.watchcache import NadCache, PodCache, node_pods_path


def nad(namespace: str, name: str, config: str = "{}") -> dict[str, Any]:
    return {"metadata": {"namespace": namespace, "name": name}, "spec": {"config": config}}


class Source:
    """A list answer and a watch stream fed from a queue (None ends the stream)."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.lists = 0
        self.listed = threading.Event()
        self.fail_list: ApiFailure | None = None

    def get_json(self, path: str) -> Mapping[str, Any] | None:
        self.lists += 1
        self.listed.set()
        if self.fail_list is not None:
            raise self.fail_list
        return {"metadata": {"resourceVersion": "7"}, "items": list(self.items)}

    def watch(self, path: str, resource_version: str, *, timeout_seconds: int = 300) -> Iterator[Mapping[str, Any]]:
        while (event := self.events.get(timeout=10)) is not None:
            yield event

    def close(self) -> None:
        self.events.put(None)


class Api:
    def __init__(self) -> None:
        self.gets: list[tuple[str, str]] = []

    def get_nad(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        self.gets.append((namespace, name))
        return nad(namespace, name, "from GET")

    def get_pod(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return None

    def set_network_status(self, namespace: str, name: str, value: str) -> None:
        pass


def settle(source: Source) -> None:
    """Wait until the cache thread has taken every queued event."""
    for _ in range(500):
        if source.events.empty():
            break
        threading.Event().wait(0.01)
    threading.Event().wait(0.05)


def test_hits_misses_and_events() -> None:
    source, api = Source([nad("a", "blue")]), Api()
    cache = NadCache(api, source)
    try:
        assert cache.wait_synced(5)
        assert cache.get_nad("a", "blue") == nad("a", "blue") and api.gets == []
        assert cache.get_nad("a", "red") == nad("a", "red", "from GET") and api.gets == [("a", "red")]
        source.events.put({"type": "MODIFIED", "object": nad("a", "blue", "v2")})
        source.events.put({"type": "ADDED", "object": nad("b", "green")})
        source.events.put({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}})
        settle(source)
        assert cache.get_nad("a", "blue") == nad("a", "blue", "v2")
        assert cache.get_nad("b", "green") == nad("b", "green") and api.gets == [("a", "red")]
        source.events.put({"type": "DELETED", "object": nad("a", "blue", "v2")})
        settle(source)
        assert cache.get_nad("a", "blue") == nad("a", "blue", "from GET")
    finally:
        cache.close()


def test_an_ended_watch_unsyncs_until_the_next_list() -> None:
    source, api = Source([nad("a", "blue")]), Api()
    cache = NadCache(api, source, relist_after=0.05)
    try:
        assert cache.wait_synced(5)
        source.listed.clear()
        source.fail_list = ApiFailure("GET nads: 403 forbidden")
        source.events.put({"type": "ERROR", "object": {"message": "too old resource version"}})
        assert source.listed.wait(5)
        threading.Event().wait(0.05)
        assert not cache.synced
        assert cache.get_nad("a", "blue") == nad("a", "blue", "from GET") and api.gets == [("a", "blue")]
        source.fail_list = None
        source.listed.clear()
        assert source.listed.wait(5) and cache.wait_synced(5)
        assert cache.get_nad("a", "blue") == nad("a", "blue")
    finally:
        cache.close()


def test_a_refused_list_leaves_every_read_a_get() -> None:
    source, api = Source([nad("a", "blue")]), Api()
    source.fail_list = ApiFailure("GET nads: 403 forbidden")
    cache = NadCache(api, source, relist_after=60)
    try:
        assert source.listed.wait(5)
        assert not cache.wait_synced(0.1)
        assert cache.get_nad("a", "blue") == nad("a", "blue", "from GET")
    finally:
        cache.close()


def test_a_refused_list_is_logged_once_and_tried_less_often(caplog: pytest.LogCaptureFixture) -> None:
    source, api = Source([nad("a", "blue")]), Api()
    source.fail_list = ApiFailure("GET nads: 403 forbidden")
    caplog.set_level(logging.DEBUG, logger="kvnet.meta.watchcache")
    cache = NadCache(api, source, relist_after=0.01)
    try:
        for _ in range(5):  # tries after 0, 0.01, 0.02, 0.04 and 0.08 s
            source.listed.clear()
            assert source.listed.wait(5)
    finally:
        cache.close()
    tries = [r for r in caplog.records if "403 forbidden" in r.getMessage()]
    assert [r.levelno for r in tries][:4] == [logging.WARNING, logging.DEBUG, logging.DEBUG, logging.DEBUG]
    waits = [float(r.getMessage().rsplit(" in ", 1)[1].split()[0]) for r in tries[:4]]
    assert waits == sorted(waits) and waits[0] < waits[-1]


# --- the pod cache -----------------------------------------------------------------------


def pod(namespace: str, name: str, uid: str, version: str = "1") -> dict[str, Any]:
    return {"metadata": {"namespace": namespace, "name": name, "uid": uid, "resourceVersion": version}}


class PodApi(Api):
    """A client that counts its pod GETs and what it was asked to remember."""

    def __init__(self, pods: dict[tuple[str, str], dict[str, Any]]) -> None:
        super().__init__()
        self.pods = pods
        self.pod_gets: list[tuple[str, str]] = []
        self.remembered: list[dict[str, Any]] = []

    def get_pod(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        self.pod_gets.append((namespace, name))
        return self.pods.get((namespace, name))

    def remember_pod(self, namespace: str, name: str, pod: dict[str, Any]) -> None:
        self.remembered.append(pod)


def test_node_pods_path_selects_the_node() -> None:
    assert node_pods_path("worker-1") == "/api/v1/pods?fieldSelector=spec.nodeName%3Dworker-1"


def test_the_pod_cache_serves_and_remembers_the_watched_pod() -> None:
    source = Source([pod("a", "web", "u1")])
    api = PodApi({("a", "db"): pod("a", "db", "u2")})
    cache = PodCache(api, source, "worker-1")
    try:
        assert cache.wait_synced(5)
        assert cache.get_pod("a", "web") == pod("a", "web", "u1") and api.pod_gets == []
        assert api.remembered == [pod("a", "web", "u1")], "the status write's first try is the cached copy"
        assert cache.get_pod("a", "db") == pod("a", "db", "u2") and api.pod_gets == [("a", "db")]
        source.events.put({"type": "MODIFIED", "object": pod("a", "web", "u1", "2")})
        settle(source)
        assert cache.get_pod("a", "web") == pod("a", "web", "u1", "2")
        assert cache.get_nad("a", "blue") == nad("a", "blue", "from GET"), "NADs pass through"
    finally:
        cache.close()


def test_a_cached_pod_of_another_uid_is_read_again() -> None:
    """The watch still holds the pod deleted and created again under the same name: the
    ADD reads it by GET before calling it a mismatch; a real mismatch stays one."""
    from kvnet.core.errors import UnknownContainer
    from kvnet.meta.pod import PodArgs, get_pod

    source = Source([pod("a", "web", "old")])
    api = PodApi({("a", "web"): pod("a", "web", "new")})
    cache = PodCache(api, source, "worker-1")
    try:
        assert cache.wait_synced(5)
        found = get_pod(cache, PodArgs("a", "web", "new", "infra"), on_del=False)
        assert found == pod("a", "web", "new") and api.pod_gets == [("a", "web")]
        with pytest.raises(UnknownContainer, match="expected pod UID"):
            get_pod(cache, PodArgs("a", "web", "other", "infra"), on_del=False)
        assert get_pod(cache, PodArgs("a", "web", "other", "infra"), on_del=True) is None
    finally:
        cache.close()
