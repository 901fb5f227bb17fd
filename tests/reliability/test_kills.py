"""kill -9 and SIGTERM of kvnet-cni and of kvnet daemon at random points (fixed seed) of an
ADD or a DEL whose delegate is slow (a real bridge plugin behind a sleep), on the real API
server with the real plugins; then the runtime's DEL. Nothing may be left behind: no pod
or node link, no host-local lease, no cache file, no process with the container's ID.

Before the fix a delegate still running when kvnet died finished after the runtime's DEL
and leaked a pod link, a node veth and a lease (10/10 after SIGKILL of kvnet-cni, 4/5
after SIGTERM, 5/5 and 3/3 for the daemon).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from reliability.harness import SEED, RelLab, Tally, bridge, count, slow_bridge, wait_no_processes

pytestmark = pytest.mark.root

TRIES = 3  # per signal and command: docs/reliability.md
SLOW = 1.0  # seconds the slow delegate sleeps before its bridge work


def _setup(rel: RelLab, *, fork: bool = False) -> tuple[dict[str, Any], str]:
    lab = rel.lab
    lab.add_nad("slow", slow_bridge("kvr-slow", "10.131.0.0/24", add=SLOW, delete=SLOW, fork=fork))
    uid = lab.add_pod("web", "slow")
    return lab.config([{**bridge("kvr-main", "10.130.0.0/24"), "name": "main"}]), uid


def _check_stopped(sig: int, rc: int, out: Any, err: str) -> None:
    """A signalled kvnet-cni ADD: SIGKILL leaves no answer; SIGTERM rolls back and answers
    with a CNI error (code 11), never a traceback (or it finished before the signal)."""
    if sig == signal.SIGTERM:
        assert "Traceback" not in err, err
        assert rc == 0 or (rc == 1 and out["code"] == 11 and "interrupted" in out["msg"].lower()), (rc, out, err)


def _stopped_add_leaves_nothing(
    rel: RelLab,
    proc: subprocess.Popen[bytes],
    sig: int,
    conf: dict[str, Any],
    uid: str,
    cid: str,
    used: set[str],
    tally: Tally,
    attempt: int,
) -> None:
    """The ADD ``proc`` got ``sig``: it answered as :func:`_check_stopped` wants (after
    SIGTERM's rollback only the cache stays), and the runtime's DEL that follows leaves
    nothing of any container in ``used``."""
    rc, out, err = rel.finish(proc)
    tally.tries += 1
    tally.faults += rc != 0
    _check_stopped(sig, rc, out, err)
    if sig == signal.SIGTERM and rc != 0:  # rolled back before it answered: only the cache stays
        wait_no_processes(used)
        assert [k for k, v in rel.leaks(used).items() if v] in ([], ["cache files"]), rel.leaks(used)
    rc, out, err = rel.lab.cni("DEL", conf, container=cid, pod="web", uid=uid)  # the runtime's DEL
    assert rc == 0, f"{out}\n{err}"
    wait_no_processes(used)
    left = rel.leaks(used)
    tally.leaks += count(left)
    assert count(left) == 0, (attempt, left)


@pytest.mark.parametrize("fork", [False, True], ids=["delegate", "delegate-with-child"])
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_kvnet_cni_killed_during_add(rel: RelLab, sig: int, fork: bool) -> None:
    conf, uid = _setup(rel, fork=fork)
    rng = random.Random(f"{SEED}-cni-add-{sig}-{fork}")
    tally = Tally(
        f"kvnet-cni {signal.Signals(sig).name} during ADD ({'delegate with a child' if fork else 'delegate'})"
    )
    used: set[str] = set()
    for i in range(TRIES):
        cid = f"rk{i}{'f' if fork else ''}{int(sig)}"
        used.add(cid)
        proc = rel.start("ADD", conf, container=cid, pod="web", uid=uid)
        time.sleep(rng.uniform(0.2, SLOW + 0.6))
        proc.send_signal(sig)
        _stopped_add_leaves_nothing(rel, proc, sig, conf, uid, cid, used, tally, i)
    tally.report()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_kvnet_cni_killed_during_del(rel: RelLab, sig: int) -> None:
    conf, uid = _setup(rel)
    rng = random.Random(f"{SEED}-cni-del-{sig}")
    tally = Tally(f"kvnet-cni {signal.Signals(sig).name} during DEL")
    used: set[str] = set()
    for i in range(TRIES):
        cid = f"rd{i}{int(sig)}"
        used.add(cid)
        rc, out, err = rel.lab.cni("ADD", conf, container=cid, pod="web", uid=uid)
        assert rc == 0, f"{out}\n{err}"
        proc = rel.start("DEL", conf, container=cid, pod="web", uid=uid)
        time.sleep(rng.uniform(0.05, SLOW + 0.4))
        proc.send_signal(sig)
        rc, out, err = rel.finish(proc)
        tally.tries += 1
        tally.faults += rc != 0
        if sig == signal.SIGTERM:
            assert "Traceback" not in err, err
        rc, out, err = rel.lab.cni("DEL", conf, container=cid, pod="web", uid=uid)  # the runtime retries
        assert rc == 0, f"{out}\n{err}"
        wait_no_processes(used)
        left = rel.leaks(used)
        tally.leaks += count(left)
        assert count(left) == 0, (i, left)
    tally.report()


PARALLEL = 4  # slow attachments, all at once (docs/meta-plugin.md, "Parallel delegates")


def _running_delegates(container: str, kvnet_pid: int) -> int:
    """Delegates running ADD for ``container`` now: their process groups (each delegate is
    a process group of its own), kvnet-cni itself left out."""
    groups = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == kvnet_pid:
            continue
        try:
            env = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            group = int(Path(f"/proc/{entry}/stat").read_bytes().rpartition(b")")[2].split()[2])
        except (OSError, ValueError, IndexError):
            continue
        if f"CNI_CONTAINERID={container}".encode() in env and b"CNI_COMMAND=ADD" in env:
            groups.add(group)
    return len(groups)


@pytest.mark.parametrize("fork", [False, True], ids=["delegate", "delegate-with-child"])
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_kvnet_cni_killed_during_a_parallel_add(rel: RelLab, sig: int, fork: bool) -> None:
    """Four slow bridge attachments at ``delegateParallelism`` 4 (the recorder declared safe
    through ``parallelPlugins``): the signal finds all four running at once, started from
    worker threads acting for the call. After kill -9, PR_SET_PDEATHSIG ends the delegates
    but not a child doing their work (``fork``): the next call finds each delegate in the
    lock file the workers wrote concurrently and kills what is left of it. SIGTERM kills
    them and rolls back. Then the runtime's DEL: nothing is left."""
    lab = rel.lab
    lab.add_nad("slow", slow_bridge("kvr-slow", "10.131.0.0/24", add=SLOW, fork=fork))
    uid = lab.add_pod("web", ",".join(f"slow@s{i}" for i in range(PARALLEL)))
    main = {**bridge("kvr-main", "10.130.0.0/24"), "name": "main"}
    conf = lab.config([main], delegateParallelism=PARALLEL, parallelPlugins=["recorder"])
    rng = random.Random(f"{SEED}-cni-parallel-add-{sig}-{fork}")
    tally = Tally(
        f"kvnet-cni {signal.Signals(sig).name} during a parallel ADD ({'delegates with a child' if fork else 'delegates'})"
    )
    used: set[str] = set()
    for i in range(TRIES):
        cid = f"rp{i}{'f' if fork else ''}{int(sig)}"
        used.add(cid)
        proc = rel.start("ADD", conf, container=cid, pod="web", uid=uid)
        deadline = time.monotonic() + 10
        while _running_delegates(cid, proc.pid) < PARALLEL:
            assert proc.poll() is None and time.monotonic() < deadline, "the attachments never ran at once"
            time.sleep(0.01)
        time.sleep(rng.uniform(0, SLOW))
        proc.send_signal(sig)
        _stopped_add_leaves_nothing(rel, proc, sig, conf, uid, cid, used, tally, i)
    tally.report()


def test_del_while_add_still_runs_waits_for_it(rel: RelLab) -> None:
    """A DEL that arrives while the ADD for the same container still runs (a runtime that
    gave up on the ADD) waits for it, then undoes it: nothing is left."""
    conf, uid = _setup(rel)
    add = rel.start("ADD", conf, container="rw1", pod="web", uid=uid)
    time.sleep(0.3)
    rc, out, err = rel.lab.cni("DEL", conf, container="rw1", pod="web", uid=uid)
    assert rc == 0, f"{out}\n{err}"
    rc_add, _, err_add = rel.finish(add)
    assert rc_add == 0, err_add  # the ADD was left to finish ...
    left = rel.leaks({"rw1"})
    assert count(left) == 0, left  # ... and the DEL that waited for it removed everything
    Tally("DEL while the ADD still runs", tries=1, faults=1, leaks=count(left)).report()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
@pytest.mark.parametrize("command", ["ADD", "DEL"])
def test_daemon_killed_during_a_call(rel: RelLab, sig: int, command: str) -> None:
    """Thick mode: the daemon gets the signal while a call with a slow delegate is in
    flight. SIGTERM drains (the call finishes, new ones are refused); kill -9 takes the
    delegates along (PR_SET_PDEATHSIG) and the runtime's DEL through a new daemon
    cleans up."""
    conf, uid = _setup(rel)
    conf = {**conf, "type": "kvnet-shim", "socketPath": rel.socket}
    rng = random.Random(f"{SEED}-daemon-{command}-{sig}")
    tally = Tally(f"kvnet daemon {signal.Signals(sig).name} during {command}")
    used: set[str] = set()
    rel.start_daemon()
    for i in range(TRIES):
        cid = f"rt{command[0]}{i}{int(sig)}"
        used.add(cid)
        if command == "DEL":
            rc, out, err = rel.lab.cni(
                "ADD", conf, container=cid, pod="web", uid=uid, binary="kvnet-shim", in_node=False
            )
            assert rc == 0, f"{out}\n{err}"
        proc = rel.start(command, conf, container=cid, pod="web", uid=uid, binary="kvnet-shim")
        time.sleep(rng.uniform(0.1, SLOW + 0.4))
        rel.signal_daemon(sig)
        rc, out, err = rel.finish(proc)
        tally.tries += 1
        tally.faults += 1
        if rc != 0:
            assert out["code"] == 11 and out["msg"].startswith("kvnet-shim: "), out
        elif sig == signal.SIGKILL:
            pass  # the call had ended before the kill
        rel.start_daemon()
        rc, out, err = rel.lab.cni("DEL", conf, container=cid, pod="web", uid=uid, binary="kvnet-shim", in_node=False)
        assert rc == 0, f"{out}\n{err}"
        wait_no_processes(used)
        left = rel.leaks(used)
        tally.leaks += count(left)
        assert count(left) == 0, (i, left)
    tally.report()


def test_daemon_drain_bound_cancels_and_undoes_the_add(rel: RelLab) -> None:
    """SIGTERM with a drain bound shorter than the ADD: new calls are refused, the ADD is
    cancelled, its delegates killed and deleted; its shim gets code 11 saying so."""
    conf, uid = _setup(rel)
    conf = {**conf, "type": "kvnet-shim", "socketPath": rel.socket}
    rel.start_daemon("--drain-timeout", "0.3")
    proc = rel.start("ADD", conf, container="rdr1", pod="web", uid=uid, binary="kvnet-shim")
    time.sleep(0.5)  # the slow delegate runs
    assert rel.daemon is not None
    daemon = rel.daemon
    daemon.send_signal(signal.SIGTERM)
    time.sleep(0.1)
    refused = rel.lab.cni("ADD", conf, container="rdr2", pod="web", uid=uid, binary="kvnet-shim", in_node=False)
    rc, out, err = rel.finish(proc)
    assert daemon.wait(timeout=30) == 0
    rel.daemon = None
    assert rc == 1 and out["code"] == 11 and "ADD interrupted" in out["msg"], (out, err)
    assert refused[0] == 1 and refused[1]["code"] == 11, refused
    assert "stopping" in refused[1]["msg"] or "no kvnet daemon is listening" in refused[1]["msg"], refused
    left = rel.leaks({"rdr1", "rdr2"})
    assert {k: v for k, v in left.items() if k != "cache files"} == {
        "pod links": [],
        "node links": [],
        "host-local leases": [],
        "processes": [],
    }, left
    rel.start_daemon()
    rc, out, err = rel.lab.cni("DEL", conf, container="rdr1", pod="web", uid=uid, binary="kvnet-shim", in_node=False)
    assert rc == 0, f"{out}\n{err}"
    left = rel.leaks({"rdr1", "rdr2"})
    assert count(left) == 0, left
    Tally("kvnet daemon SIGTERM, drain bound reached during ADD", tries=1, faults=1, leaks=count(left)).report()
