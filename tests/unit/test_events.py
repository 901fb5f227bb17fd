"""Events on the pod: the message formats, the Event object, and a recorder that never blocks."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import pytest

from kvnet.core.errors import ApiFailure
from kvnet.meta import events

POD = events.PodRef("ns1", "web", "uid-1", "42")


@pytest.mark.parametrize(
    ("ifname", "ips", "network", "message"),
    [
        ("net1", ["10.1.0.5/24"], "ns1/blue", "Add net1 [10.1.0.5/24] from ns1/blue"),
        ("eth0", ["10.0.0.2/24", "fd00::2/64"], "main", "Add eth0 [10.0.0.2/24 fd00::2/64] from main"),
        ("net2", [], "ns1/plain", "Add net2 [] from ns1/plain"),
        ("net3", ["10.9.0.1/16"], "", "Add net3 [10.9.0.1/16]"),
    ],
)
def test_added_interface_has_multus_message(ifname: str, ips: list[str], network: str, message: str) -> None:
    ev = events.added_interface(POD, ifname, ips, network)
    assert (ev.type, ev.reason, ev.message) == ("Normal", "AddedInterface", message)


@pytest.mark.parametrize(
    ("result", "ips"),
    [
        ({"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.5/24"}]}, ["10.1.0.5/24"]),
        ({"cniVersion": "0.3.1", "ips": [{"version": "4", "address": "10.1.0.6/24"}]}, ["10.1.0.6/24"]),
        (
            {"cniVersion": "0.2.0", "ip4": {"ip": "10.1.0.7/24"}, "ip6": {"ip": "fd00::7/64"}},
            ["10.1.0.7/24", "fd00::7/64"],
        ),
        ({"cniVersion": "1.0.0"}, []),
    ],
)
def test_result_ips_of_every_version(result: Mapping[str, Any], ips: list[str]) -> None:
    assert events.result_ips(result) == ips


def test_event_body_is_what_client_go_writes() -> None:
    ev = events.add_failed(POD, "x" * 2000)
    body = events.event_body(ev, host="node1", now_ns=1_700_000_000_250_000_000, serial=3)
    assert body["metadata"] == {"name": f"web.{1_700_000_000_250_000_000 + 3:x}", "namespace": "ns1"}
    assert body["involvedObject"] == {
        "kind": "Pod",
        "apiVersion": "v1",
        "namespace": "ns1",
        "name": "web",
        "uid": "uid-1",
        "resourceVersion": "42",
    }
    assert (body["type"], body["reason"]) == ("Warning", "FailedAddInterface")
    assert len(body["message"]) == events.MAX_MESSAGE and body["message"].endswith("...")
    assert body["source"] == {"component": "kvnet", "host": "node1"}
    assert body["firstTimestamp"] == body["lastTimestamp"] == "2023-11-14T22:13:20Z"
    assert body["count"] == 1


class SlowApi:
    """Blocks every post until released; records what it got."""

    def __init__(self, fail: bool = False) -> None:
        self.release = threading.Event()
        self.got: list[tuple[str, Mapping[str, Any]]] = []
        self.fail = fail

    def create_event(self, namespace: str, event: Mapping[str, Any]) -> None:
        self.release.wait(10)
        if self.fail:
            raise ApiFailure("403 forbidden")
        self.got.append((namespace, event))


def test_a_slow_api_drops_events_instead_of_blocking() -> None:
    api = SlowApi()
    rec = events.EventRecorder(api, bound=2, workers=1, host="n")
    results = [rec.post(events.added_interface(POD, f"net{i}", [], "x")) for i in range(6)]
    # one is being posted (blocked), two wait in the queue, the rest are dropped
    assert results.count(True) in (2, 3) and results[:2] == [True, True]
    assert rec.flush(0.05) is False  # bounded: the caller is not held
    api.release.set()
    assert rec.flush(5)
    assert rec.counts["posted"] == results.count(True)
    assert rec.counts["dropped"] == results.count(False)
    assert [e["message"] for _, e in api.got] == [f"Add net{i} [] from x" for i in range(results.count(True))]


def test_failed_posts_are_counted_not_raised() -> None:
    api = SlowApi(fail=True)
    api.release.set()
    seen: list[str] = []
    rec = events.EventRecorder(api, host="n", observer=seen.append)
    assert rec.post(events.add_failed(POD, "boom"))
    assert rec.flush(5)
    assert rec.counts == {"posted": 0, "dropped": 0, "failed": 1, "filtered": 0} and seen == ["failed"]


def test_recorder_only_for_clients_that_post_events() -> None:
    assert events.recorder_for(object()) is None
    assert isinstance(events.recorder_for(SlowApi()), events.EventRecorder)


def test_an_event_without_a_pod_name_is_not_posted() -> None:
    rec = events.EventRecorder(SlowApi(), host="n")
    assert rec.post(events.add_failed(events.PodRef("ns1", ""), "boom")) is False


def test_the_spam_filter_is_client_gos_bucket() -> None:
    """25 events about one pod, then one per 300 s; other pods have their own bucket."""
    now = [0.0]
    spam = events.SpamFilter(clock=lambda: now[0])
    other = events.PodRef("ns1", "other", "u2")
    assert [spam.allow(POD) for _ in range(26)] == [True] * 25 + [False]
    assert spam.allow(other)
    now[0] = 299.0
    assert not spam.allow(POD)
    now[0] = 300.5
    assert spam.allow(POD) and not spam.allow(POD)
    now[0] = 300.5 + 25 * 300.0
    assert [spam.allow(POD) for _ in range(26)] == [True] * 25 + [False]  # refilled to the burst, no more


def test_the_spam_filter_forgets_the_least_recent_pod() -> None:
    spam = events.SpamFilter(burst=1, size=2, clock=lambda: 0.0)
    a, b, c = (events.PodRef("ns", n) for n in "abc")
    assert spam.allow(a) and spam.allow(b) and not spam.allow(a)
    assert spam.allow(c)  # b is forgotten (a was seen last), then
    assert spam.allow(b) and not spam.allow(c)


def test_events_over_the_burst_are_filtered_not_queued() -> None:
    api = SlowApi()
    api.release.set()
    seen: list[str] = []
    rec = events.EventRecorder(api, host="n", observer=seen.append)
    results = [rec.post(events.added_interface(POD, f"net{i}", [], "x")) for i in range(30)]
    assert results == [True] * 25 + [False] * 5
    assert rec.flush(5)
    assert rec.counts == {"posted": 25, "dropped": 0, "failed": 0, "filtered": 5}
    assert seen.count("filtered") == 5 and len(api.got) == 25
