"""Fault injection with the real plugins on the real API server: a delegate that fails,
hangs or is killed at each position of the delegate list, and an API that answers 5xx or
429, is slow, conflicts without end or is gone (the fault proxy, kvnet.lab.faultproxy,
only for what the real server cannot be made to do). After each ADD and the runtime's DEL
the count of what is left behind must be zero.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from kvnet.lab.faultproxy import FaultProxy
from reliability.harness import RelLab, Tally, bridge, count, wait_no_processes

pytestmark = pytest.mark.root

MAIN = {**bridge("kvf-main", "10.140.0.0/24"), "name": "main"}
BAD = {
    "fails": {"cniVersion": "1.0.0", "type": "recorder", "failOn": ["ADD"]},
    "hangs": {"cniVersion": "1.0.0", "type": "recorder", "hang": 30},
    "is killed": {"cniVersion": "1.0.0", "type": "recorder", "die": ["ADD"]},
}


def _no_leak_but_cache(rel: RelLab, used: set[str]) -> None:
    wait_no_processes(used)
    left = rel.leaks(used)
    assert [k for k, v in left.items() if v] in ([], ["cache files"]), left


@pytest.mark.parametrize("how", list(BAD))
def test_delegate_fails_at_each_position(rel: RelLab, how: str) -> None:
    """Three delegates (the main network and two NADs); the one at position 0, 1 or 2
    fails, hangs past delegateTimeout or is killed: the ADD fails, every delegate before
    it is deleted at once, and the runtime's DEL leaves nothing."""
    lab = rel.lab
    lab.add_nad("a", bridge("kvf-a", "10.141.0.0/24"))
    lab.add_nad("b", bridge("kvf-b", "10.142.0.0/24"))
    lab.add_nad("bad", BAD[how])
    tally = Tally(f"delegate {how} (each position)")
    used: set[str] = set()
    for position, (main, networks) in enumerate(
        [({**BAD[how], "name": "main"}, "a,b"), (MAIN, "bad,b"), (MAIN, "a,bad")]
    ):
        name, cid = f"p{position}", f"rf{position}{how[0]}"
        used.add(cid)
        uid = lab.add_pod(name, networks)
        conf = lab.config([main], delegateTimeout=1)
        start = time.monotonic()
        rc, out, err = lab.cni("ADD", conf, container=cid, pod=name, uid=uid)
        tally.tries += 1
        tally.faults += 1
        assert rc == 1, f"{out}\n{err}"
        assert time.monotonic() - start < 20
        _no_leak_but_cache(rel, used)
        rc, out, err = lab.cni("DEL", conf, container=cid, pod=name, uid=uid)
        assert rc == 0, f"{out}\n{err}"
        left = rel.leaks(used)
        tally.leaks += count(left)
        assert count(left) == 0, left
    tally.report()


@pytest.fixture
def proxied(rel: RelLab) -> Iterator[tuple[RelLab, FaultProxy]]:
    lab = rel.lab
    assert lab.kube is not None
    with FaultProxy(lab.kube, lab.root_ip) as proxy:
        proxy.write_kubeconfig(lab.kubeconfig)
        yield rel, proxy


# (kind, faults to inject, does the ADD still succeed)
API_FAULTS: list[tuple[str, list[dict[str, Any]], bool]] = [
    (
        "500 once on the NAD read",
        [{"code": 500, "method": "GET", "path": "/network-attachment-definitions/blue"}],
        True,
    ),
    ("503 once on the pod read", [{"code": 503, "method": "GET", "path": "/pods/web"}], True),
    (
        "429 (Retry-After: 1) on the status write",
        [{"code": 429, "method": "PUT", "path": "/status", "retry_after": 1}],
        True,
    ),
    ("429 on the pod read", [{"code": 429, "method": "GET", "path": "/pods/web"}], True),
    (
        "500 storm on the NAD read (beyond the 5 s bound)",
        [{"code": 500, "method": "GET", "path": "/blue", "times": 40}],
        False,
    ),
    ("conflict storm on the status write", [{"code": 409, "method": "PUT", "path": "/status", "times": 40}], False),
    ("slow pod read (2 s)", [{"delay": 2.0, "method": "GET", "path": "/pods/web"}], True),
]


@pytest.mark.parametrize(("kind", "faults", "succeeds"), API_FAULTS, ids=[k for k, _, _ in API_FAULTS])
def test_api_faults(
    proxied: tuple[RelLab, FaultProxy], kind: str, faults: list[dict[str, Any]], succeeds: bool
) -> None:
    rel, proxy = proxied
    lab = rel.lab
    lab.add_nad("blue", bridge("kvf-blue", "10.143.0.0/24"))
    uid = lab.add_pod("web", "blue")
    conf = lab.config([MAIN])
    for f in faults:
        if "delay" in f:
            proxy.delay_next(f["delay"], method=f["method"], path=f["path"], times=f.get("times", 1))
        else:
            proxy.fail_next(
                f["code"], method=f["method"], path=f["path"], times=f.get("times", 1), retry_after=f.get("retry_after")
            )
    start = time.monotonic()
    rc, out, err = lab.cni("ADD", conf, container="ra1", pod="web", uid=uid)
    took = time.monotonic() - start
    assert (rc == 0) is succeeds, f"{out}\n{err}"
    if not succeeds:
        assert out["code"] == 103, out
    proxy.clear()
    rc, out, err = lab.cni("DEL", conf, container="ra1", pod="web", uid=uid)
    assert rc == 0, f"{out}\n{err}"
    left = rel.leaks({"ra1"})
    Tally(f"API: {kind}", tries=1, faults=1, leaks=count(left), notes={"add_seconds": round(took, 2)}).report()
    assert count(left) == 0, left


def test_api_gone(proxied: tuple[RelLab, FaultProxy]) -> None:
    """The API stops answering (every request held): DEL with the cache makes no request and
    returns at once (it waited for the pod read before: 10 s with the light client);
    the API gone altogether: ADD fails with nothing left, DEL succeeds."""
    rel, proxy = proxied
    lab = rel.lab
    lab.add_nad("blue", bridge("kvf-blue", "10.143.0.0/24"))
    uid = lab.add_pod("web", "blue")
    conf = lab.config([MAIN])
    rc, out, err = lab.cni("ADD", conf, container="rg1", pod="web", uid=uid)
    assert rc == 0, f"{out}\n{err}"
    proxy.delay_next(60.0, times=1000)  # a server that accepts and never answers
    seen = len(proxy.requests)
    start = time.monotonic()
    rc, out, err = lab.cni("DEL", conf, container="rg1", pod="web", uid=uid)
    del_seconds = time.monotonic() - start
    assert rc == 0, f"{out}\n{err}"
    assert del_seconds < 3.0, del_seconds
    assert len(proxy.requests) == seen
    proxy.clear()
    proxy.stop()  # gone: connections refused
    start = time.monotonic()
    rc, out, err = lab.cni("ADD", conf, container="rg2", pod="web", uid=uid)
    add_seconds = time.monotonic() - start
    assert rc == 1 and out["code"] == 103, f"{out}\n{err}"
    rc, out, err = lab.cni("DEL", conf, container="rg2", pod="web", uid=uid)
    assert rc == 0, f"{out}\n{err}"
    left = rel.leaks({"rg1", "rg2"})
    Tally(
        "API: not answering / gone",
        tries=2,
        faults=2,
        leaks=count(left),
        notes={"del_with_cache_seconds": round(del_seconds, 2), "add_seconds_api_gone": round(add_seconds, 2)},
    ).report()
    assert count(left) == 0, left
