"""The NAD reads of one pod's selections run at once (kvnet.meta.delegates._NadsOnce) and
are still handed out, and fail, in the selections' order."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import pytest

from kvnet.meta.delegates import NAD_READS_AT_ONCE, _NadsOnce
from kvnet.meta.ports import KubeApiFailure


class BarrierApi:
    """Each NAD read waits until ``parties`` reads are in flight together (a one-by-one
    reader would break the barrier); ``broken`` names fail."""

    def __init__(self, parties: int, broken: frozenset[str] = frozenset()) -> None:
        self.barrier = threading.Barrier(parties, timeout=10)
        self.broken = broken
        self.reads: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def get_pod(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return None

    def get_nad(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        with self.lock:
            self.reads.append((namespace, name))
        self.barrier.wait()
        if name in self.broken:
            raise KubeApiFailure(f"read of {name} failed")
        return None if name.startswith("missing") else {"metadata": {"name": name, "namespace": namespace}}

    def set_network_status(self, namespace: str, name: str, value: str) -> None:
        raise AssertionError("not called")


def test_reads_run_together_and_answer_in_order() -> None:
    keys = [("ns", f"net{i}") for i in range(4)] + [("ns", "missing")]
    api = BarrierApi(len(keys))
    nads = _NadsOnce(api)
    nads.prefetch([*keys, keys[0]])  # a repeated selection is read once
    assert [nads.get_nad(*k) for k in keys][-1] is None
    assert nads.get_nad("ns", "net1") == {"metadata": {"name": "net1", "namespace": "ns"}}
    nads.settle()
    assert sorted(api.reads) == sorted(keys)


def test_an_error_is_raised_where_that_selection_is_resolved() -> None:
    api = BarrierApi(3, frozenset({"b"}))
    nads = _NadsOnce(api)
    nads.prefetch([("ns", "a"), ("ns", "b"), ("ns", "c")])
    assert nads.get_nad("ns", "a") is not None
    with pytest.raises(KubeApiFailure, match="read of b failed"):
        nads.get_nad("ns", "b")
    nads.settle()  # c's read finished before any delegate may run
    assert not nads.pending and len(api.reads) == 3


def test_names_a_request_must_not_carry_are_not_read_ahead() -> None:
    api = BarrierApi(1)
    nads = _NadsOnce(api)
    nads.prefetch([("ns", "../secrets"), ("ns", "a/b"), ("ns", "ok")])
    assert not nads.pending  # one valid name left: read when it is resolved, as before
    assert nads.get_nad("ns", "ok") is not None and api.reads == [("ns", "ok")]


def test_the_pool_is_bounded() -> None:
    assert 2 <= NAD_READS_AT_ONCE <= 16
