"""Parallel delegates: which delegates of one ADD may run together (the pure schedule), the
``delegateParallelism`` key, and ADD at parallelism 8 with a thread-safe fake runner that
holds the attachments at a barrier, so they provably run at once: results, network-status,
the cache, events, rollback and the error are the one-by-one run's."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from kvnet.cni import delegate as cni_delegate
from kvnet.cni import libcni_cache
from kvnet.cni.delegate import CallGuard, DelegateEnv
from kvnet.cni.protocol import parse_request
from kvnet.core.errors import DelegateFailed, InvalidConfig, KvnetError
from kvnet.meta import commands as meta
from kvnet.meta import events
from kvnet.meta import status as network_status
from kvnet.meta.cache import CachedDelegate
from kvnet.meta.config import DEFAULT_DELEGATE_PARALLELISM, parse_multus_config
from kvnet.meta.plan import AFTER, ALONE, FREE, concurrency, one_at_a_time, waves
from kvnet.meta.ports import Seams

NETWORKS = "k8s.v1.cni.cncf.io/networks"
MAIN = {
    "cniVersion": "1.0.0",
    "name": "main-net",
    "type": "ptp",
    "ipam": {"type": "host-local", "subnet": "10.0.0.0/24"},
}


# ------------------------------------------------------------------------------------
# the schedule (pure)
# ------------------------------------------------------------------------------------


def test_free_attachments_share_one_wave_after_the_main_network() -> None:
    assert waves([ALONE, FREE, FREE, FREE]) == ((0,), (1, 2, 3))
    assert waves([FREE]) == ((0,),)  # the main network alone, whatever it is
    assert waves([]) == ()


def test_serial_is_plan_order_one_by_one() -> None:
    assert waves([ALONE, FREE, FREE, AFTER], serial=True) == ((0,), (1,), (2,), (3,))


def test_an_alone_delegate_is_a_barrier() -> None:
    # 3 waits for 1 and 2; 4 and 5 wait for 3
    assert waves([ALONE, FREE, FREE, ALONE, FREE, FREE]) == ((0,), (1, 2), (3,), (4, 5))
    assert waves([ALONE, ALONE, ALONE]) == ((0,), (1,), (2,))


def test_after_delegates_follow_everything_before_them_and_run_alone() -> None:
    # KubeVirt's shape: each attachment then its binding
    assert waves([ALONE, FREE, AFTER, FREE, AFTER]) == ((0,), (1, 3), (2,), (4,))
    # a binding right after the main network: later attachments do not join its wave
    assert waves([ALONE, AFTER, FREE, FREE]) == ((0,), (1,), (2, 3))
    # after a barrier, the same
    assert waves([ALONE, FREE, ALONE, AFTER, FREE]) == ((0,), (1,), (2,), (3,), (4,))


@pytest.mark.parametrize(
    "kinds",
    [
        [ALONE, FREE, AFTER, FREE, ALONE, FREE, AFTER, AFTER, FREE],
        [ALONE, *([FREE] * 10)],
        [ALONE, AFTER, ALONE, FREE, AFTER, FREE, FREE, ALONE],
    ],
)
def test_every_dependency_is_kept(kinds: list[str]) -> None:
    """Whatever the kinds: each delegate exactly once, each wave in plan order, an AFTER or
    ALONE delegate after every earlier one and alone in its wave, nothing after an ALONE one
    before it, the main network first and alone."""
    plan = waves(kinds)
    at = {i: w for w, wave in enumerate(plan) for i in wave}
    assert sorted(at) == list(range(len(kinds)))
    assert all(list(wave) == sorted(wave) for wave in plan)
    assert plan[0] == (0,)
    for i, kind in enumerate(kinds):
        if i and kind in (AFTER, ALONE):
            assert all(at[j] < at[i] for j in range(i))
            assert plan[at[i]] == (i,)
        if kind == ALONE:
            assert all(at[j] > at[i] for j in range(i + 1, len(kinds)))


def cd(conf: Mapping[str, Any]) -> CachedDelegate:
    return CachedDelegate(name="n", conf=dict(conf))


def test_what_may_run_beside_others() -> None:
    assert concurrency(cd({"type": "bridge", "ipam": {"type": "host-local"}})) == FREE
    assert concurrency(cd({"type": "macvlan", "ipam": {"type": "whereabouts"}})) == FREE
    assert concurrency(cd({"type": "bridge", "ipam": {}})) == FREE
    # a chained conflist is as strict as its strictest plugin, and stays one call
    assert concurrency(cd({"plugins": [{"type": "bridge"}, {"type": "tuning"}]})) == FREE
    assert concurrency(cd({"plugins": [{"type": "bridge"}, {"type": "kvnet-binding"}]})) == AFTER
    assert concurrency(cd({"plugins": [{"type": "bridge"}, {"type": "sbr"}]})) == ALONE
    assert concurrency(cd({"type": "kvnet-binding"})) == AFTER
    # unknown plugins and IPAM, and shared iptables chains, run alone
    assert concurrency(cd({"type": "vrf"})) == ALONE
    assert concurrency(cd({"type": "bridge", "ipam": {"type": "my-ipam"}})) == ALONE
    assert concurrency(cd({"type": "bridge", "ipMasq": True, "ipam": {"type": "host-local"}})) == ALONE
    assert concurrency(cd({"plugins": []})) == ALONE
    # parallelPlugins: the operator vouches for more plugin and IPAM types; the binding stays AFTER
    assert concurrency(cd({"type": "vrf"}), ["vrf"]) == FREE
    assert concurrency(cd({"type": "bridge", "ipam": {"type": "my-ipam"}}), ["my-ipam"]) == FREE
    assert concurrency(cd({"type": "kvnet-binding"}), ["kvnet-binding"]) == AFTER
    assert concurrency(cd({"type": "bridge", "ipMasq": True}), ["bridge"]) == ALONE


def test_what_goes_one_at_a_time() -> None:
    assert one_at_a_time(cd({"type": "macvlan", "ipam": {"type": "whereabouts"}})) == {"whereabouts"}
    chain = {
        "name": "bw",
        "plugins": [{"type": "bridge", "ipam": {"type": "whereabouts"}}, {"type": "tuning"}, {"type": "bandwidth"}],
    }
    # whereabouts (its cluster-wide lease), bandwidth per network (its ifb device's name)
    assert one_at_a_time(cd(chain)) == {"whereabouts", "bandwidth:bw"}
    assert one_at_a_time(cd({"type": "bridge", "ipam": {"type": "host-local"}})) == set()
    assert one_at_a_time(cd({"type": "bridge"})) == set()


# ------------------------------------------------------------------------------------
# the key
# ------------------------------------------------------------------------------------


def test_delegate_parallelism_key() -> None:
    base = {"name": "k", "type": "kvnet", "delegates": [MAIN]}
    assert parse_multus_config(base).kvnet.delegate_parallelism == DEFAULT_DELEGATE_PARALLELISM == 1
    assert parse_multus_config({**base, "delegateParallelism": 8}).kvnet.delegate_parallelism == 8
    assert parse_multus_config({**base, "DelegateParallelism": 3}).kvnet.delegate_parallelism == 3  # Go's case folding
    for bad in (0, 65, 2.5, -1):
        with pytest.raises(InvalidConfig, match="delegateParallelism must be a whole number from 1 to 64"):
            parse_multus_config({**base, "delegateParallelism": bad})
    with pytest.raises(KvnetError, match=r"NetConf\.delegateParallelism of type int"):
        parse_multus_config(json.dumps({**base, "delegateParallelism": "4"}).encode())
    assert parse_multus_config(base).kvnet.parallel_plugins == ()
    assert parse_multus_config({**base, "parallelPlugins": ["noop", "my-ipam"]}).kvnet.parallel_plugins == (
        "noop",
        "my-ipam",
    )
    with pytest.raises(KvnetError, match=r"NetConf\.parallelPlugins of type \[\]string"):
        parse_multus_config({**base, "parallelPlugins": "noop"})


# ------------------------------------------------------------------------------------
# ADD at parallelism 8
# ------------------------------------------------------------------------------------


class FakeApi:
    def __init__(self, pod: Mapping[str, Any], nads: Mapping[str, Mapping[str, Any]]) -> None:
        self.pod = pod
        self.nads = nads
        self.status: list[str] = []

    def get_pod(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self.pod

    def get_nad(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        conf = self.nads.get(name)
        if conf is None:
            return None
        return {"metadata": {"name": name, "namespace": namespace}, "spec": {"config": json.dumps(conf)}}

    def set_network_status(self, namespace: str, name: str, value: str) -> None:
        self.status.append(value)


class ConcurrentRunner:
    """Thread-safe: ADDs of the networks in ``meet`` wait at a barrier until all of them are
    in (a run that is not concurrent times out and fails); results depend only on the call."""

    def __init__(
        self,
        meet: Sequence[str] = (),
        fail: Sequence[str] = (),
        slow: Sequence[str] = (),
        results_in: Path | None = None,
    ) -> None:
        self.results_in = results_in  # keep libcni's results cache there, as the real runner
        self.lock = threading.Lock()
        self.calls: list[tuple[str, str, str]] = []  # command, network, ifname, in start order
        self.spans: dict[str, tuple[float, float]] = {}
        self.guards: list[CallGuard | None] = []
        self.running = 0
        self.most = 0
        self.barrier = threading.Barrier(len(meet)) if len(meet) > 1 else None
        self.meet, self.fail, self.slow = set(meet), set(fail), set(slow)

    def run_network(
        self,
        command: str,
        network: Mapping[str, Any],
        env: DelegateEnv,
        *,
        runtime_config: Mapping[str, Any] | None = None,
        prev_result: Mapping[str, Any] | None = None,
        valid_attachments: Sequence[Mapping[str, str]] | None = None,
    ) -> dict[str, Any] | None:
        name = str(network.get("name"))
        with self.lock:
            self.calls.append((command, name, env.ifname))
            self.guards.append(cni_delegate.current_guard())
            self.running += 1
            self.most = max(self.most, self.running)
        start = time.monotonic()
        try:
            if command != "ADD":
                return None
            if name in self.meet and self.barrier is not None:
                self.barrier.wait(timeout=10)
            if name in self.slow:
                time.sleep(0.3)
            if name in self.fail:
                raise DelegateFailed(f'plugin type="bridge" failed (add): boom on {name}', code=11)
            n = int(env.ifname[3:]) if env.ifname.startswith("net") else 0
            result = {
                "cniVersion": "1.0.0",
                "interfaces": [{"name": env.ifname, "mac": f"0a:00:00:00:00:{n:02x}", "sandbox": env.netns}],
                "ips": [{"address": f"10.{n}.0.5/24", "gateway": f"10.{n}.0.1", "interface": 0}],
                "dns": {},
            }
            if self.results_in is not None:
                att = libcni_cache.CachedAttachment(name, env.container_id, env.ifname, b"{}", result=result)
                libcni_cache.write_result(self.results_in, att)
            return result
        finally:
            with self.lock:
                self.running -= 1
                self.spans[f"{command} {name}"] = (start, time.monotonic())

    def of(self, command: str) -> list[tuple[str, str]]:
        return [(n, i) for c, n, i in self.calls if c == command]


class Events:
    def __init__(self) -> None:
        self.posted: list[events.PodEvent] = []

    def post(self, ev: events.PodEvent) -> bool:
        self.posted.append(ev)
        return True


def bridge(name: str, **extra: Any) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": name, "type": "bridge", "bridge": "br-par", "ipam": {}, **extra}


def add(
    tmp_path: Path,
    annotation: str,
    nads: Mapping[str, Mapping[str, Any]],
    runner: ConcurrentRunner,
    *,
    parallelism: int,
    container: str = "c0ffee",
    seams: Seams = Seams(),
) -> tuple[Mapping[str, Any], FakeApi]:
    cfg = {
        "cniVersion": "1.0.0",
        "name": "kvnet",
        "type": "kvnet",
        "kubeconfig": "/k",
        "delegates": [MAIN],
        "cniDir": str(tmp_path / "cache"),
        "confDir": str(tmp_path / "conf"),
        "delegateParallelism": parallelism,
    }
    env = {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": container,
        "CNI_NETNS": "/var/run/netns/p",
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_UID=uid-1",
        "CNI_PATH": "/opt/cni/bin",
    }
    pod = {"metadata": {"name": "web", "namespace": "default", "uid": "uid-1", "annotations": {NETWORKS: annotation}}}
    api = FakeApi(pod, nads)
    req = parse_request(env, json.dumps(cfg).encode())
    conf = parse_multus_config(cfg)
    with CallGuard(conf.cni_dir, container, wait=5) as guard:
        result = meta.add(req, conf=conf, api=api, runner=runner, seams=seams)
        assert all(g is guard for g in runner.guards), "every delegate ran on behalf of the call's guard"
    return result, api


EIGHT = {f"n{i}": bridge(f"n{i}") for i in range(1, 9)}
EIGHT_ANNOTATION = ",".join(EIGHT)


def test_eight_attachments_at_once_give_the_sequential_result(tmp_path: Path) -> None:
    par = ConcurrentRunner(meet=list(EIGHT))
    ev = Events()
    result, api = add(tmp_path / "p", EIGHT_ANNOTATION, EIGHT, par, parallelism=8, seams=Seams(events=ev))
    assert par.most == 8  # the barrier let them through only together
    # the main network ran first and alone: its ADD ended before any attachment started
    main_end = par.spans["ADD main-net"][1]
    assert all(start >= main_end for key, (start, _) in par.spans.items() if key != "ADD main-net")

    seq = ConcurrentRunner()
    seq_result, seq_api = add(tmp_path / "s", EIGHT_ANNOTATION, EIGHT, seq, parallelism=1)
    assert seq.most == 1
    assert result == seq_result
    assert api.status == seq_api.status  # network-status in annotation order
    assert [s["interface"] for s in json.loads(api.status[0])] == ["eth0", *(f"net{i}" for i in range(1, 9))]
    assert (tmp_path / "p/cache/c0ffee").read_bytes() == (tmp_path / "s/cache/c0ffee").read_bytes()
    # the events in plan order, as the one-by-one run posts them
    assert [e.message.split()[1] for e in ev.posted] == ["eth0", *(f"net{i}" for i in range(1, 9))]


def test_whereabouts_attachments_run_one_after_the_other_beside_the_rest(tmp_path: Path) -> None:
    """whereabouts serialises its calls on a cluster-wide Lease and a loser retries only after
    its retry period: kvnet starts the next whereabouts attachment when the one before it
    ends, in plan order, and runs the other attachments beside them."""
    nads: dict[str, dict[str, Any]] = {}
    for i in range(1, 4):
        nads[f"b{i}"] = bridge(f"b{i}")
        nads[f"w{i}"] = bridge(f"w{i}", ipam={"type": "whereabouts", "range": "10.9.0.0/24"})
    runner = ConcurrentRunner(slow=list(nads))
    add(tmp_path, "w1,b1,w2,b2,w3,b3", nads, runner, parallelism=8)
    spans = sorted(runner.spans[f"ADD w{i}"] for i in range(1, 4))
    assert spans == [runner.spans[f"ADD w{i}"] for i in range(1, 4)]  # started in plan order
    assert all(earlier[1] <= later[0] for earlier, later in itertools.pairwise(spans))
    assert runner.most == 4  # the first whereabouts attachment and the three bridges


def test_parallelism_bounds_the_delegates_at_once(tmp_path: Path) -> None:
    runner = ConcurrentRunner(slow=list(EIGHT))
    add(tmp_path, EIGHT_ANNOTATION, EIGHT, runner, parallelism=3)
    assert runner.most == 3
    assert sorted(runner.of("ADD")) == sorted([("main-net", "eth0"), *((f"n{i}", f"net{i}") for i in range(1, 9))])


def test_two_failing_at_once_name_the_first_in_plan_order_and_roll_back_all_that_ran(tmp_path: Path) -> None:
    nads = {f"n{i}": bridge(f"n{i}") for i in range(1, 5)}
    runner = ConcurrentRunner(meet=list(nads), fail=["n2", "n4"])
    ev = Events()
    with pytest.raises(DelegateFailed) as err:
        add(tmp_path, "n1,n2,n3,n4", nads, runner, parallelism=8, seams=Seams(events=ev))
    assert err.value.msg == (
        '[default/web/uid-1:n2]: error adding container to network "n2": plugin type="bridge" failed (add): boom on n2'
    )
    assert err.value.cni_code == 11
    # all four had started together: every one gets DEL, in reverse plan order, then the main network
    assert runner.of("DEL") == [("n4", "net4"), ("n3", "net3"), ("n2", "net2"), ("n1", "net1"), ("main-net", "eth0")]
    # the events the one-by-one run would have posted: up to the failure only, then the failure
    assert [(e.reason, e.message.split()[1]) for e in ev.posted[:-1]] == [
        (events.ADDED_INTERFACE, "eth0"),
        (events.ADDED_INTERFACE, "net1"),
    ]
    assert ev.posted[-1].reason == events.FAILED_ADD_INTERFACE and ":n2]" in ev.posted[-1].message
    assert (tmp_path / "cache/c0ffee").exists()  # the cache stays for the runtime's DEL


def test_after_a_failure_only_delegates_before_it_still_start(tmp_path: Path) -> None:
    """n3 fails while n1 runs; the binding after n1 (plan index 2, an AFTER delegate) still
    runs, since the one-by-one run would have run it before n3, and fails first in plan
    order: its error is the one raised. n5, after n3, never starts."""
    nads = {
        "n1": bridge("n1"),
        "bind": {"cniVersion": "1.0.0", "name": "bind", "type": "kvnet-binding"},
        "n3": bridge("n3"),
        "n5": bridge("n5"),
    }
    runner = ConcurrentRunner(fail=["n3", "bind"], slow=["n1"])
    with pytest.raises(DelegateFailed) as err:
        add(tmp_path, "n1,bind,n3,n5", nads, runner, parallelism=2)
    assert ":bind]: " in err.value.msg
    adds = runner.of("ADD")
    assert ("bind", "net2") in adds and ("n5", "net4") not in adds
    # the rollback runs the waves backwards: the binding before the link it bound, n3 beside
    # n1 (they shared a wave), the main network last
    dels = runner.of("DEL")
    assert sorted(dels) == sorted([("n3", "net3"), ("bind", "net2"), ("n1", "net1"), ("main-net", "eth0")])
    assert dels.index(("bind", "net2")) < dels.index(("n1", "net1")) and dels[-1] == ("main-net", "eth0")


def test_default_route_pods_and_unknown_plugins_run_one_by_one(tmp_path: Path) -> None:
    nads = {f"n{i}": bridge(f"n{i}") for i in range(1, 4)}
    runner = ConcurrentRunner(slow=list(nads), results_in=tmp_path / "gw/cache")
    routes = NoRoutes()
    annotation = json.dumps([{"name": "n1"}, {"name": "n2", "default-route": ["10.2.0.1"]}, {"name": "n3"}])
    add(tmp_path / "gw", annotation, nads, runner, parallelism=8, seams=Seams(routes=routes))
    assert runner.most == 1
    assert runner.of("ADD") == [("main-net", "eth0"), ("n1", "net1"), ("n2", "net2"), ("n3", "net3")]
    # the edits right after each delegate, in plan order
    assert routes.ops == [
        ("del", "eth0", "4"),
        ("del", "eth0", "6"),
        ("del", "net1", "4"),
        ("del", "net1", "6"),
        ("del", "net2", "4"),
        ("del", "net2", "6"),
        ("set", "net2", "10.2.0.1"),
        ("del", "net3", "4"),
        ("del", "net3", "6"),
    ]

    odd = {f"n{i}": {"cniVersion": "1.0.0", "name": f"n{i}", "type": "vrf"} for i in range(1, 4)}
    runner = ConcurrentRunner(slow=list(odd))
    add(tmp_path / "vrf", "n1,n2,n3", odd, runner, parallelism=8)
    assert runner.most == 1
    assert runner.of("ADD") == [("main-net", "eth0"), ("n1", "net1"), ("n2", "net2"), ("n3", "net3")]


class NoRoutes:
    def __init__(self) -> None:
        self.ops: list[tuple[str, ...]] = []

    def delete_default(self, netns: str, ifname: str, family: int) -> None:
        self.ops.append(("del", ifname, str(family)))

    def set_default(self, netns: str, ifname: str, gateway: str) -> None:
        self.ops.append(("set", ifname, gateway))


@pytest.mark.parametrize("parallelism", [1, 8])
def test_a_failure_after_the_delegate_is_raised_as_it_is_without_rollback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, parallelism: int
) -> None:
    """network-status cannot be built from n1's result (the status builder refuses it): the
    one-by-one run raises that after n1, undoing nothing; so does the parallel one, whose
    n2 and n3 ran beside n1 and stay for the runtime's DEL, which the cache names them for."""
    build = network_status.status_from_result

    def refuse_n1(network_name: str, result: Mapping[str, Any], **kw: Any) -> Any:
        if network_name == "default/n1":
            raise InvalidConfig("no status from this result")
        return build(network_name, result, **kw)

    monkeypatch.setattr(network_status, "status_from_result", refuse_n1)
    nads = {f"n{i}": bridge(f"n{i}") for i in range(1, 4)}
    runner = ConcurrentRunner(meet=list(nads) if parallelism > 1 else ())
    with pytest.raises(KvnetError) as err:
        add(tmp_path, "n1,n2,n3", nads, runner, parallelism=parallelism)
    assert err.value.msg == "kvnet: [default/web/uid-1]: error setting network statuses: no status from this result"
    assert runner.of("DEL") == []
    adds = runner.of("ADD")
    assert adds[:2] == [("main-net", "eth0"), ("n1", "net1")]
    assert len(adds) == (2 if parallelism == 1 else 4)
    assert (tmp_path / "cache/c0ffee").exists()
