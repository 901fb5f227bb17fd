"""The daemon's watch-backed NAD cache (kvnet.meta.nadcache) over a scripted list + watch:
hits only while synced, misses and unsynced reads are GETs, watch events applied, an
ended or failed watch unsyncs until the next list."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from kvnet.core.errors import ApiFailure
from kvnet.meta.nadcache import NadCache


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
    caplog.set_level(logging.DEBUG, logger="kvnet.meta.nadcache")
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
