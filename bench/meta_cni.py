"""The meta-plugin against real Multus 4.3, measured in one run (issue 11's table).

Four programs, each called as a runtime calls a CNI binary (env + stdin), on the same node
netns, pod netns, delegates, NADs and pods, one after the other in every repetition
(A B C D A B C D ...), so a load drift hits all of them alike:

- ``multus`` (Multus 4.3 thin) and ``kvnet-cni`` (standalone), run inside the node netns;
- ``multus-shim`` to ``multus-daemon`` and ``kvnet-shim`` to ``kvnet daemon`` (thick, with
  the options a node runs, :data:`DAEMON_ARGS`: deploy/node-daemonset.yaml), both daemons in the node netns
  as :mod:`kvnet.lab.thick` runs them, the shims where a runtime runs them.

A pod has N attachments: the main network plus N-1 NAD selections, one NAD each. Two
delegates: a no-op recording ``/bin/sh`` plugin (one line per call in a file; the run
checks every ADD got its DEL) and the real bridge plugin with host-local IPAM, all on one
bridge and one range. Two API servers: the real one (etcd + kube-apiserver from
build/peers, :class:`kvnet.lab.kube.KubeCluster`), where each program talks as its own
ServiceAccount so the audit log counts its requests, and the API stand-in
(:mod:`kvnet.lab.apiserver`), where only kvnet runs: it reads JSON bodies only (Multus's
client writes the pod status as protobuf) and has no watch (``multus-daemon``'s
informers); there the stand-in's own request log counts.

Further sections: daemon RSS and open fds under 8 concurrent callers (``--cycles``
ADD/DEL cycles, sampled at cycle 100 and at the end), one ADD of kvnet's daemon code under
cProfile (docs/bench/meta_cni_profile.md), and the start-up of ``kvnet-shim`` with and
without ``-I -S`` (``-X importtime`` too).

``--parallelism P`` adds kvnet-cni and kvnet thick once more at ``delegateParallelism: P``
(with the no-op delegate in ``parallelPlugins``), as rows of their own in the same
interleaving, and a table of both degrees side by side; ``--delegates`` and
``--no-multus`` narrow the run.

Run as root: ``.venv/bin/python -m bench.meta_cni`` (writes docs/bench/meta_cni.md and
docs/bench/meta_cni_profile.md); ``--help`` for a quicker run.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pstats
import re
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvnet.lab import apiserver
from kvnet.lab.apiserver import ApiStandIn
from kvnet.lab.kube import KubeCluster, peer_binary, peers_built
from kvnet.lab.netns import IP, Netns, namespaces
from kvnet.lab.pod_demo import PodLab, set_host_local_data_dir
from kvnet.lab.thick import DEVINFO_ROOT, MULTUS_RBAC, NODE_NAME, KvnetDaemon, MultusDaemon, PrivateMounts

# The stand-in answers keep-alive requests with the headers and the body in two writes;
# with Nagle on, every request then waits ~40 ms for the client's delayed ACK, which a
# real API server (Go net/http sets TCP_NODELAY) does not cost. Measure the programs, not that.
apiserver._Handler.disable_nagle_algorithm = True

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "bench" / "meta_cni.md"
PROFILE_OUT = ROOT / "docs" / "bench" / "meta_cni_profile.md"
SIZES = (1, 10, 100)
REPS = {("noop", 1): 9, ("noop", 10): 5, ("noop", 100): 2, ("bridge", 1): 5, ("bridge", 10): 3, ("bridge", 100): 1}
NETWORKS = "k8s.v1.cni.cncf.io/networks"
NAMESPACE = "default"
BRIDGE = "kvbench-br"
SUBNET = "10.200.0.0/16"
MIB = 1024 * 1024


@dataclass(frozen=True)
class Program:
    name: str
    binary: str
    thick: bool
    multus: bool
    account: str  # the ServiceAccount it talks as on the real API server (kube-system)
    parallelism: int = 1  # kvnet's delegateParallelism (docs/meta-plugin.md, "Parallel delegates")


PROGRAMS = (
    Program("Multus thin", "multus", thick=False, multus=True, account="bench-multus-thin"),
    Program("Multus thick", "multus-shim", thick=True, multus=True, account="multus"),
    Program("kvnet-cni", "kvnet-cni", thick=False, multus=False, account="bench-kvnet-cni"),
    Program("kvnet thick", "kvnet-shim", thick=True, multus=False, account="bench-kvnet-thick"),
)


def parallel_programs(parallelism: int) -> tuple[Program, ...]:
    """kvnet-cni and kvnet thick once more at ``delegateParallelism`` (none for 1): rows of
    their own, interleaved with the others, so one run compares both degrees."""
    if parallelism <= 1:
        return ()
    return tuple(
        Program(f"{p.name} ∥{parallelism}", p.binary, p.thick, p.multus, p.account, parallelism)
        for p in PROGRAMS
        if not p.multus
    )


# The delegates of the matrix: (name, main network, NAD prefix).
DELEGATES = ("noop", "bridge")

# ``kvnet daemon`` as deploy/node-daemonset.yaml runs it: the light client, the NAD cache on
# (its default); the profile's in-process daemon is wired the same way.
DAEMON_ARGS = ("--api", "light")

# What the stand-in cannot serve Multus (its client sends protobuf bodies, its daemon watches).
STANDIN_SKIPS = {
    "Multus thin": "the stand-in reads JSON only; Multus writes the pod status as protobuf",
    "Multus thick": "the stand-in has no watch (multus-daemon's informers) and reads JSON only",
}

# A no-op delegate that records each call (one line: command, container, ifname).
NOOP = """#!/bin/sh
echo "$CNI_COMMAND $CNI_CONTAINERID $CNI_IFNAME" >> {record}
case "$CNI_COMMAND" in
VERSION) echo '{{"cniVersion":"1.0.0","supportedVersions":["0.3.1","0.4.0","1.0.0"]}}' ;;
ADD) cat >/dev/null; echo '{{"cniVersion":"1.0.0","interfaces":[{{"name":"'"$CNI_IFNAME"'","sandbox":"'"$CNI_NETNS"'"}}],"dns":{{}}}}' ;;
*) cat >/dev/null ;;
esac
"""
NOOP_MAIN: Mapping[str, Any] = {"cniVersion": "1.0.0", "name": "noop", "type": "noop"}
BRIDGE_MAIN: Mapping[str, Any] = {
    "cniVersion": "1.0.0",
    "name": "br",
    "type": "bridge",
    "bridge": BRIDGE,
    "ipam": {"type": "host-local", "ranges": [[{"subnet": SUBNET}]]},
}


@dataclass(frozen=True)
class Sample:
    add_ms: float
    del_ms: float
    add_requests: int
    del_requests: int


@dataclass(frozen=True)
class Row:
    api: str
    delegate: str
    attachments: int
    program: str
    samples: tuple[Sample, ...]
    error: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.samples) and not self.error

    @property
    def add_ms(self) -> float:
        return statistics.median(s.add_ms for s in self.samples)

    @property
    def del_ms(self) -> float:
        return statistics.median(s.del_ms for s in self.samples)

    @property
    def total_ms(self) -> float:
        return statistics.median(s.add_ms + s.del_ms for s in self.samples)

    @property
    def best_ms(self) -> float:
        return min(s.add_ms + s.del_ms for s in self.samples)

    @property
    def add_requests(self) -> float:
        return statistics.median(s.add_requests for s in self.samples)

    @property
    def del_requests(self) -> float:
        return statistics.median(s.del_requests for s in self.samples)


@dataclass(frozen=True)
class Memory:
    program: str
    callers: int
    points: tuple[tuple[int, int, int], ...]  # (cycle, RSS bytes, open fds)
    seconds: float
    failures: int


@dataclass
class Bench:
    """One API server's lab: the pods, the per-program configs and the request counter."""

    lab: PodLab
    api_name: str
    workdir: Path
    namespace: str = NAMESPACE
    uids: dict[str, str] = field(default_factory=dict)
    kubeconfigs: dict[str, str] = field(default_factory=dict)
    sockets: dict[str, str] = field(default_factory=dict)

    @property
    def real(self) -> bool:
        return isinstance(self.lab.api, KubeCluster)

    def mark(self) -> int:
        api = self.lab.api
        return api.audit_mark() if isinstance(api, KubeCluster) else len(api.requests)

    def requests_since(self, mark: int, program: Program) -> int:
        """Requests the program made since ``mark`` (watches, long-running, left out)."""
        api = self.lab.api
        if isinstance(api, ApiStandIn):
            return len(api.requests) - mark
        user = f"system:serviceaccount:kube-system:{program.account}"
        return sum(1 for e in api.audit(user=user, since=mark) if e.get("verb") != "watch")

    def config(self, program: Program, main: Mapping[str, Any]) -> dict[str, Any]:
        slug = program.binary
        conf = self.lab.config(
            [main],
            name="multus-cni-network",
            type="multus-shim" if program.thick else "multus",
            kubeconfig=self.kubeconfigs.get(program.account, str(self.lab.kubeconfig)),
            cniDir=str(self.workdir / "cni" / slug),
            confDir=str(self.workdir / "conf" / slug),
            logLevel="error",
        )
        if program.thick:
            conf["daemonSocketDir"] = self.sockets.get("multus", "")
            conf["socketPath"] = self.sockets.get("kvnet", "")
        if program.parallelism > 1:
            conf["delegateParallelism"] = program.parallelism
            conf["parallelPlugins"] = ["noop"]  # it touches nothing but its record (O_APPEND lines)
        return conf

    def add_del(
        self, program: Program, conf: Mapping[str, Any], pod: str, *, count: bool = True, container: str = ""
    ) -> Sample:
        """One ADD then DEL of ``pod``, with the API requests of each (``count``)."""
        container = container or f"b{uuid.uuid4().hex[:12]}"
        uid = self.uids[pod]
        times: list[float] = []
        counts: list[int] = []
        for command in ("ADD", "DEL"):
            mark = self.mark() if count else 0
            t0 = time.perf_counter()
            rc, out, err = self.lab.cni(
                command,
                conf,
                container=container,
                pod=pod,
                uid=uid,
                namespace=self.namespace,
                binary=program.binary,
                in_node=not program.thick,
            )
            times.append((time.perf_counter() - t0) * 1000)
            if rc != 0:  # what the failed call left behind goes, as a runtime would DEL it
                self.delete(program, conf, pod, container)
            if rc != 0:
                raise RuntimeError(f"{command} {pod} through {program.binary} failed ({rc}): {out} {err[-2000:]}")
            counts.append(self.requests_since(mark, program) if count else 0)
        return Sample(times[0], times[1], counts[0], counts[1])

    def delete(self, program: Program, conf: Mapping[str, Any], pod: str, container: str, tries: int = 10) -> bool:
        """DEL until it succeeds, as a runtime retries it; whether it did."""
        for attempt in range(tries):
            rc, _, _ = self.lab.cni(
                "DEL",
                conf,
                container=container,
                pod=pod,
                uid=self.uids[pod],
                namespace=self.namespace,
                binary=program.binary,
                in_node=not program.thick,
            )
            if rc == 0:
                return True
            time.sleep(0.1 * (attempt + 1))
        return False


# --------------------------------------------------------------------------------------
# the lab
# --------------------------------------------------------------------------------------


def add_objects(bench: Bench, n_max: int, load_pods: int, sizes: Sequence[int] = SIZES) -> None:
    """The NADs (one per attachment, as real pods have) and the pods ``noop-<n>``,
    ``br-<n>`` and ``load-<i>``, all on the bench's node (multus-daemon's informer)."""
    lab = bench.lab
    noop = lab.bin_dir / "noop"
    noop.write_text(NOOP.format(record=bench.workdir / "noop.calls"))
    noop.chmod(0o755)
    nads: list[dict[str, Any]] = []
    for i in range(1, n_max):
        for name, conf in ((f"noop{i}", {"cniVersion": "1.0.0", "type": "noop"}), (f"br{i}", dict(BRIDGE_MAIN))):
            conf.pop("name", None)
            conf = set_host_local_data_dir(conf, str(lab.data_dir))
            nad_meta = {"name": name, "namespace": bench.namespace}
            nads.append(
                {"kind": "NetworkAttachmentDefinition", "metadata": nad_meta, "spec": {"config": json.dumps(conf)}}
            )
    lab.api.load(nads)
    pods = {f"{d}-{n}": ",".join(f"{d}{i}" for i in range(1, n)) for d in ("noop", "br") for n in sizes}
    pods |= {f"load-{i}": "noop1" for i in range(load_pods)}
    for name, networks in pods.items():
        meta: dict[str, Any] = {
            "name": name,
            "namespace": bench.namespace,
            "annotations": {NETWORKS: networks} if networks else {},
        }
        if not bench.real:
            meta["uid"] = str(uuid.uuid4())
        pod = {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": meta,
            "spec": {"nodeName": NODE_NAME, "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]},
        }
        made = lab.api.load([pod])
        bench.uids[name] = str(made[0]["metadata"]["uid"]) if made else meta["uid"]


def accounts(kube: KubeCluster, workdir: Path) -> dict[str, str]:
    """A ServiceAccount per program, bound to Multus's ClusterRole (a superset of what
    kvnet needs, deploy/rbac.yaml), and a kubeconfig with its token: the audit log then
    tells the programs apart."""
    for obj in MULTUS_RBAC:
        kube.apply(obj)
    names = [p.account for p in PROGRAMS if p.account != "multus"]
    for name in names:
        kube.apply({"kind": "ServiceAccount", "metadata": {"name": name, "namespace": "kube-system"}})
    kube.apply(
        {
            "kind": "ClusterRoleBinding",
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "metadata": {"name": "kvnet-bench"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "multus"},
            "subjects": [{"kind": "ServiceAccount", "name": n, "namespace": "kube-system"} for n in names],
        }
    )
    out: dict[str, str] = {}
    for name in names:
        path = workdir / f"{name}.kubeconfig"
        kube.write_kubeconfig(path, token=kube.token(name, "kube-system", seconds=4 * 3600))
        out[name] = str(path)
    return out


def link_peers(lab: PodLab) -> None:
    for name in ("multus", "multus-shim"):
        link = lab.bin_dir / name
        if not link.exists():
            link.symlink_to(peer_binary(name))


@contextmanager
def daemons(bench: Bench, node: Netns, tag: str, *, multus: bool) -> Iterator[dict[str, MultusDaemon | KvnetDaemon]]:
    """kvnet daemon (and multus-daemon on the real API server) in the node netns, as the
    differential lane runs them; their sockets land in ``bench.sockets``."""
    mounts = PrivateMounts([(bench.workdir / tag / "devinfo", DEVINFO_ROOT)])
    started: dict[str, MultusDaemon | KvnetDaemon] = {}
    try:
        if multus and isinstance(bench.lab.api, KubeCluster):
            md = MultusDaemon(bench.lab.api, node, bench.workdir / tag / "multus-daemon", mounts)
            md.config["logLevel"] = "error"  # as the calls' own configs: no verbose log on the clock
            md.start()
            started["multus"] = md
            bench.sockets["multus"] = str(md.socket_dir)
        kd = KvnetDaemon(
            node, bench.workdir / tag / "kvnet-daemon", mounts, kvnet_bin_dir=kvnet_bin_dir(), args=DAEMON_ARGS
        )
        kd.start()
        started["kvnet"] = kd
        bench.sockets["kvnet"] = kd.socket
        yield started
    finally:
        for d in started.values():
            d.stop()
        mounts.cleanup()


def kvnet_bin_dir() -> str:
    return os.path.dirname(sys.executable)


def socket_pid(path: str) -> int:
    """The pid of the process listening on a unix socket (SO_PEERCRED of a connection)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        creds = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, _, _ = struct.unpack("3i", creds)
    return int(pid)


def rss_fds(pid: int) -> tuple[int, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1)) * 1024  # type: ignore[union-attr]
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


# --------------------------------------------------------------------------------------
# the measurements
# --------------------------------------------------------------------------------------


def matrix(
    bench: Bench,
    programs: Sequence[Program],
    sizes: Sequence[int],
    reps_scale: float,
    delegates: Sequence[str] = DELEGATES,
) -> list[Row]:
    rows: list[Row] = []
    for delegate, main, prefix in (("noop", NOOP_MAIN, "noop"), ("bridge", BRIDGE_MAIN, "br")):
        if delegate not in delegates:
            continue
        confs = {p.name: bench.config(p, main) for p in programs}
        failed: dict[str, str] = {}
        for p in programs:  # warm-up: daemon clients, page cache, informers
            try:
                bench.add_del(p, confs[p.name], f"{prefix}-1")
            except RuntimeError as err:
                failed[p.name] = str(err)
        for n in sizes:
            reps = max(1, round(REPS[(delegate, n)] * reps_scale))
            got: dict[str, list[Sample]] = {p.name: [] for p in programs}
            for _ in range(reps):  # interleaved: A B C D A B C D ...
                for p in programs:
                    if p.name in failed:
                        continue
                    try:
                        got[p.name].append(bench.add_del(p, confs[p.name], f"{prefix}-{n}"))
                    except RuntimeError as err:
                        failed[p.name] = str(err)
            for p in programs:
                row = Row(bench.api_name, delegate, n, p.name, tuple(got[p.name]), failed.get(p.name, ""))
                rows.append(row)
                if row.ok:
                    print(
                        f"{bench.api_name:10} {delegate:6} {n:4} {p.name:13} ADD {row.add_ms:8.1f} DEL {row.del_ms:8.1f} "
                        f"best {row.best_ms:8.1f} ms  requests {row.add_requests:g}/{row.del_requests:g}",
                        file=sys.stderr,
                        flush=True,
                    )
                else:
                    print(
                        f"{bench.api_name:10} {delegate:6} {n:4} {p.name:13} FAILED {row.error[:1500]}", file=sys.stderr
                    )
    return rows


def check_records(record: Path) -> tuple[int, int]:
    """(ADD, DEL) calls the no-op delegate recorded: every attachment added must be deleted."""
    lines = _records(record)
    adds = sum(1 for r in lines if r and r[0] == "ADD")
    dels = sum(1 for r in lines if r and r[0] == "DEL")
    return adds, dels


def memory(bench: Bench, program: Program, daemon_socket: str, cycles: int, callers: int) -> Memory:
    """``cycles`` ADD+DEL cycles (pods load-<i>, noop delegate, 2 attachments) from
    ``callers`` threads at once; RSS and fds of the daemon at 0, 100 and the last cycle."""
    conf = bench.config(program, NOOP_MAIN)
    pid = socket_pid(daemon_socket)
    points = [(0, *rss_fds(pid))]
    lock = threading.Lock()
    done = [0, 0]  # cycles, failures
    sample_at = {100} if cycles > 100 else set()

    def caller(i: int) -> None:
        while True:
            with lock:
                if done[0] + done[1] >= cycles:
                    return
            container = f"m{uuid.uuid4().hex[:12]}"
            try:
                bench.add_del(program, conf, f"load-{i}", count=False, container=container)
                ok = True
            except RuntimeError as err:  # the call was refused: count it, and DEL until it is gone
                print(f"{program.name}: {str(err)[:400]}", file=sys.stderr)
                ok = False
                if not bench.delete(program, conf, f"load-{i}", container):
                    print(f"{program.name}: DEL of {container} never succeeded", file=sys.stderr)
            with lock:
                done[0 if ok else 1] += 1
                total = done[0] + done[1]
                if total in sample_at:
                    points.append((total, *rss_fds(pid)))

    t0 = time.monotonic()
    threads = [threading.Thread(target=caller, args=(i,)) for i in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    points.append((done[0] + done[1], *rss_fds(pid)))
    return Memory(program.name, callers, tuple(points), time.monotonic() - t0, done[1])


# --- the profile -----------------------------------------------------------------------

PROFILE_CODE = """
import cProfile, io, json, sys, time
from kvnet.meta.daemon import CniDaemon, serve_call
from kvnet.meta.wiring import LongLived, light_api
args = json.loads(sys.argv[1])
d = CniDaemon(args["socket"], long_lived=LongLived(light_api, nad_cache=True, pod_cache_node=args["node"]))
env, stdin = args["env"], args["stdin"].encode()
def call(command, cid):
    e = dict(env, CNI_COMMAND=command, CNI_CONTAINERID=cid)
    e["CNI_ARGS"] = e["CNI_ARGS"].replace("CID", cid)
    status, out = serve_call(d.handlers, e, stdin)
    if status != 0:
        raise SystemExit(f"{command} failed: {out}")
for i in range(args["warm"]):
    call("ADD", f"warm{i}"); call("DEL", f"warm{i}")
walls = []
prof = cProfile.Profile()
for i in range(args["reps"]):
    t0 = time.perf_counter()
    prof.enable(); call("ADD", f"prof{i}"); prof.disable()
    walls.append(time.perf_counter() - t0)
    call("DEL", f"prof{i}")
prof.dump_stats(args["out"])
print(json.dumps({"walls": walls}))
"""

BUCKETS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("API client (kubernetes, urllib3, http.client, ssl, socket)", (
        "/kubernetes/", "/urllib3/", "/http/client.py", "/ssl.py", "/socket.py", "/kvnet/meta/k8s.py",
        "_ssl.", "_socket.", "/email/", "/dateutil/", "/six.py",
    )),
    ("delegate exec (subprocess, fork/exec, pipes, waitpid)", ("/subprocess.py", "/selectors.py", "/kvnet/cni/delegate.py")),
    ("JSON and YAML", ("/json/", "/yaml/", "_json")),
    ("logging", ("/logging/",)),
    ("kvnet's own code (kvnet/meta, kvnet/cni, kvnet/core)", ("/kvnet/",)),
)  # fmt: skip


def _bucket(key: tuple[str, int, str]) -> str:
    where = f"{key[0]}:{key[2]}"
    for name, marks in BUCKETS:
        if any(m in where for m in marks):
            return name
    return "other (stdlib, locks, threads, imports)"


def buckets(stats: pstats.Stats) -> dict[str, float]:
    """Own time per bucket; a builtin's own time goes to its callers' buckets."""
    out: dict[str, float] = {}
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for key, (_, _, tt, _, callers) in raw.items():
        if key[0] == "~" and callers and not any(m in key[2] for _, marks in BUCKETS for m in marks):
            total = sum(c[2] for c in callers.values()) or 1.0
            for ckey, c in callers.items():
                name = _bucket(ckey)
                out[name] = out.get(name, 0.0) + tt * c[2] / total
        else:
            name = _bucket(key)
            out[name] = out.get(name, 0.0) + tt
    return out


NAMED = (
    ("get_pod", "the pod reads (API)"),
    ("get_nad", "the NAD reads (API)"),
    ("set_network_status", "the network-status write (API)"),
    ("exec_argv", "delegate execs (fork, exec, wait)"),
    ("negotiate", "delegate version negotiation"),
    ("parse_multus_config", "parsing the config"),
    ("overlay_config", "overlaying the daemon config"),
    ("setup_logging", "setting up logging"),
    ("_cache_write", "writing libcni's cache files"),
    ("<built-in method _posixsubprocess.fork_exec>", "fork + exec of the children (own time)"),
    ("<built-in method posix.read>", "reads of pipes (the exec-error pipe and the children's output)"),
)


def named(stats: pstats.Stats, reps: int) -> dict[str, float]:
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    out: dict[str, float] = {}
    for fn, _ in NAMED:
        cts = [v[3] for k, v in raw.items() if k[2] == fn]
        calls = [v[1] for k, v in raw.items() if k[2] == fn]
        if calls:
            out[f"{fn}#calls"] = float(max(calls)) / reps
        if cts:
            out[fn] = max(cts) / reps * 1000
    return out


def top(stats: pstats.Stats, sort: str, limit: int) -> list[str]:
    buf = io.StringIO()
    stats.stream = buf  # type: ignore[attr-defined]
    stats.sort_stats(sort).print_stats(limit)
    text = buf.getvalue()
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip().startswith("ncalls")), 0)
    return [_short(line) for line in lines[start:] if line.strip()]


def _short(text: str) -> str:
    """Paths as the package or the repository names them."""
    text = re.sub(r"/\S*/(?:site-packages|python3\.\d+)/", "", text)
    return text.replace(str(ROOT) + "/", "")


@dataclass(frozen=True)
class Profile:
    attachments: int
    reps: int
    wall_ms: float
    profiled_ms: float
    buckets: dict[str, float]
    cumulative: list[str]
    own: list[str]
    named: dict[str, float]  # cumulative ms per ADD of the functions in NAMED (the outermost of a name)


def profile_add(bench: Bench, node: Netns, attachments: int, reps: int) -> Profile:
    """ADDs of ``noop-<n>`` through kvnet's daemon handlers (``CniDaemon``, the client a
    node runs) in the node netns, in process (no socket hop), under cProfile."""
    kvnet = next(p for p in PROGRAMS if p.name == "kvnet thick")
    conf = bench.config(kvnet, NOOP_MAIN)
    pod = f"noop-{attachments}"
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "CNI_NETNS": bench.lab.pod.path,
        "CNI_IFNAME": "eth0",
        "CNI_PATH": str(bench.lab.bin_dir),
        "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE={bench.namespace};K8S_POD_NAME={pod};"
        f"K8S_POD_INFRA_CONTAINER_ID=CID;K8S_POD_UID={bench.uids[pod]}",
    }
    out = bench.workdir / f"add-{attachments}.prof"
    args = {
        "socket": str(bench.workdir / "profile.sock"),
        "env": env,
        "stdin": json.dumps(conf),
        "warm": 2,
        "node": NODE_NAME,
        "reps": reps,
        "out": str(out),
    }
    done = subprocess.run(
        [IP, "netns", "exec", node.name, sys.executable, "-c", PROFILE_CODE, json.dumps(args)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    if done.returncode != 0:
        raise RuntimeError(f"profile run failed: {done.stdout} {done.stderr[-2000:]}")
    walls = json.loads(done.stdout.strip().splitlines()[-1])["walls"]
    stats = pstats.Stats(str(out))
    total: float = stats.total_tt  # type: ignore[attr-defined]
    return Profile(
        attachments,
        reps,
        statistics.median(walls) * 1000,
        total / reps * 1000,
        {k: v / reps * 1000 for k, v in buckets(stats).items()},
        top(stats, "cumulative", 25),
        top(stats, "tottime", 20),
        named(stats, reps),
    )


# --- the shim's start --------------------------------------------------------------------


def timed(cmd: Sequence[str], reps: int) -> tuple[float, float]:
    """(median, best) ms of running ``cmd`` for VERSION."""
    env = {**os.environ, "CNI_COMMAND": "VERSION"}
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        subprocess.run(list(cmd), capture_output=True, check=False, env=env, stdin=subprocess.DEVNULL)
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples), min(samples)


def importtime(cmd: Sequence[str]) -> tuple[int, float, list[tuple[str, float]]]:
    """(modules imported, total self import ms, the 8 slowest by self time) from -X importtime."""
    env = {**os.environ, "CNI_COMMAND": "VERSION"}
    done = subprocess.run(list(cmd), capture_output=True, text=True, check=False, env=env, stdin=subprocess.DEVNULL)
    mods: list[tuple[str, float]] = []
    for line in done.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|\s*(.+)$", line)
        if m:
            mods.append((m.group(3).strip(), int(m.group(1)) / 1000))
    return len(mods), sum(ms for _, ms in mods), sorted(mods, key=lambda x: -x[1])[:8]


NOOP_EXEC = "the no-op plugin (subprocess.run, no preexec_fn)"


def shim_start(lab: PodLab, reps: int) -> list[tuple[str, float, float, int, float, str]]:
    shim = str(lab.bin_dir / "kvnet-shim")
    py = sys.executable
    cases = (
        ("python -I -S -c pass", [py, "-I", "-S", "-c", "pass"]),
        ("python -c pass (site)", [py, "-c", "pass"]),
        ("kvnet-shim as installed (#! ... -IS)", [shim]),
        ("python -I -S kvnet-shim", [py, "-I", "-S", shim]),
        ("python kvnet-shim (site)", [py, shim]),
        ("kvnet-cni (console script, site, full imports)", [str(lab.bin_dir / "kvnet-cni")]),
        ("multus-shim", [str(lab.bin_dir / "multus-shim")]),
        ("multus", [str(lab.bin_dir / "multus")]),
        (NOOP_EXEC, [str(lab.bin_dir / "noop")]),
    )
    out = []
    for name, cmd in cases:
        median, best = timed(cmd, reps)
        count, total, slow = 0, 0.0, list[tuple[str, float]]()
        if cmd[0] == py or cmd[0] == shim:
            argv = [py, "-X", "importtime", *cmd[1:]] if cmd[0] == py else [py, "-X", "importtime", "-I", "-S", shim]
            count, total, slow = importtime(argv)
        worst = ", ".join(f"{m} {ms:.1f}" for m, ms in slow[:4])
        out.append((name, median, best, count, total, worst))
    return out


# --------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------


def _find(rows: Sequence[Row], api: str, delegate: str, n: int, program: str) -> Row | None:
    for r in rows:
        if (r.api, r.delegate, r.attachments, r.program) == (api, delegate, n, program) and r.ok:
            return r
    return None


def _ratio(a: Row | None, b: Row | None) -> str:
    return f"{a.total_ms / b.total_ms:.2f}×" if a and b else "—"


def _ms(r: Row | None) -> str:
    return f"{r.total_ms:.0f}" if r else "—"


def render(
    rows: Sequence[Row],
    mems: Sequence[Memory],
    starts: Sequence[tuple[str, float, float, int, float, str]],
    profile: Sequence[Profile],
    header: Mapping[str, str],
    programs: Sequence[Program] = PROGRAMS,
) -> str:
    lines = [
        "# Meta-plugin benchmark: kvnet against Multus 4.3, ADD+DEL wall time",
        "",
        f"Measured {header['when']} by `python -m bench.meta_cni {header['argv']}`".rstrip() + " on this machine: "
        f"{header['cpus']} cores, **shared with other test runs while measuring** (load average before: "
        f"{header['load_before']}; after: {header['load_after']}). Numbers move with that load; the programs were "
        "interleaved in every repetition (A B C D A B C D ...) so a drift hits all of them alike.",
        "",
        "Each row is one pod with N attachments (the main network plus N-1 NAD selections, one NAD each), ADD then",
        "DEL, called as a runtime calls a CNI binary (env + stdin), on the same node netns, pod netns, delegates,",
        "NADs and pods for every program. **Multus thin**: `multus` 4.3; **Multus thick**: `multus-shim` to",
        "`multus-daemon` 4.3; **kvnet-cni**: standalone; **kvnet thick**: `kvnet-shim` to `kvnet daemon` with the",
        "light client and its NAD and pod caches (the mode deploy/node-daemonset.yaml runs). Both daemons run in the node netns, as",
        "kvnet/lab/thick.py runs them for the differential lane. **noop**: a `/bin/sh` delegate that records each",
        "call (the run checks every ADD got its DEL); **bridge**: the bridge plugin with host-local, every",
        "attachment on one bridge and one range. **real**: etcd + kube-apiserver (build/peers), each program its",
        "own ServiceAccount, requests counted in the audit log (watches left out: multus-daemon's informers",
        "watch all the time); **stand-in**: kvnet/lab/apiserver.py (plain HTTP), kvnet only: it reads JSON",
        "bodies only (Multus's client writes the pod status as protobuf) and has no watch (multus-daemon's",
        "informers); requests counted by the stand-in.",
        "",
        f"The no-op delegate recorded, over the whole run, {header['records']}.",
        "",
        "Times are ms; *med* is the median over the repetitions, *best* the fastest; ×thin and ×thick are",
        "kvnet's median ADD+DEL over Multus thin's and Multus thick's; req/ADD and req/DEL are API requests.",
        "",
        "## Summary (ADD+DEL median, ms)",
        "",
        "| API | delegate | N | Multus thin | Multus thick | kvnet-cni | kvnet thick | kvnet thick ×thin | kvnet thick ×thick | kvnet-cni ×thin |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    keys = sorted(
        {(r.api, r.delegate, r.attachments) for r in rows}, key=lambda k: (k[0] != "real", k[1] != "noop", k[2])
    )
    for api, delegate, n in keys:
        mt, mk, kc, kt = (_find(rows, api, delegate, n, p.name) for p in PROGRAMS)
        lines.append(
            f"| {api} | {delegate} | {n} | {_ms(mt)} | {_ms(mk)} | {_ms(kc)} | {_ms(kt)} | "
            f"{_ratio(kt, mt)} | {_ratio(kt, mk)} | {_ratio(kc, mt)} |"
        )
    lines += [
        "",
        "## All rows",
        "",
        "| API | delegate | N | program | reps | ADD med | DEL med | ADD+DEL med | ADD+DEL best | ×thin | ×thick | req/ADD | req/DEL |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    present = {r.program for r in rows}
    listed = [p for p in programs if p.name in present]
    for api, delegate, n in keys:
        mt, mk = _find(rows, api, delegate, n, "Multus thin"), _find(rows, api, delegate, n, "Multus thick")
        for p in listed:
            r = next(
                (x for x in rows if (x.api, x.delegate, x.attachments, x.program) == (api, delegate, n, p.name)), None
            )
            if r is None:
                continue
            if not r.ok:
                why = f"not run: {STANDIN_SKIPS[p.name]}" if api == "stand-in" and p.name in STANDIN_SKIPS else "failed"
                lines.append(f"| {api} | {delegate} | {n} | {p.name} | — | {why} | | | | | | | |")
                continue
            vs_thin = "" if p.multus else _ratio(r, mt)
            vs_thick = "" if p.multus else _ratio(r, mk)
            lines.append(
                f"| {api} | {delegate} | {n} | {p.name} | {len(r.samples)} | {r.add_ms:.1f} | {r.del_ms:.1f} | "
                f"{r.total_ms:.1f} | {r.best_ms:.1f} | {vs_thin} | {vs_thick} | {r.add_requests:g} | {r.del_requests:g} |"
            )
    parallel = [p for p in programs if p.parallelism > 1]
    if parallel:
        lines += [
            "",
            "## Parallel delegates (ADD+DEL median, ms)",
            "",
            'kvnet at `delegateParallelism` 1 and above it, in the same run (docs/meta-plugin.md, "Parallel',
            'delegates"); the no-op delegate is declared safe through `parallelPlugins`, the bridge plugin is',
            "safe by kvnet's own list. DEL stays one by one.",
            "",
            "| API | delegate | N | program | parallelism 1 | ADD | parallelism P | ADD | × ADD+DEL | × ADD |",
            "|---|---|---:|---|---:|---:|---:|---:|---:|---:|",
        ]
        for api, delegate, n in keys:
            for p in parallel:
                base = p.name.rpartition(" ∥")[0]
                one, par = _find(rows, api, delegate, n, base), _find(rows, api, delegate, n, p.name)
                if one is None or par is None:
                    continue
                lines.append(
                    f"| {api} | {delegate} | {n} | {base} | {one.total_ms:.0f} | {one.add_ms:.0f} | "
                    f"{par.total_ms:.0f} (P={p.parallelism}) | {par.add_ms:.0f} | {par.total_ms / one.total_ms:.2f}× | "
                    f"{par.add_ms / one.add_ms:.2f}× |"
                )
    failures = [r for r in rows if r.error and not (r.api == "stand-in" and r.program in STANDIN_SKIPS)]
    if failures:
        lines += ["", "Failures:", ""]
        for r in failures:
            lines.append(f"- {r.api} {r.delegate} N={r.attachments} {r.program}: `{r.error[:400]}`")
    if mems:
        lines += [
            "",
            "## Daemon memory under load",
            "",
            f"ADD+DEL cycles of pods `load-<i>` (noop delegate, 2 attachments) from {mems[0].callers} concurrent",
            "callers through each shim, real API server; RSS (VmRSS) and open fds of the daemon process (found",
            "by SO_PEERCRED on its socket), at start, after cycle 100 and at the end; fresh daemons. A refused",
            "call (the shim could not reach its daemon) counts as a cycle and is DELeted until it succeeds.",
            "",
            "| daemon | cycles | refused calls | seconds | cycles/s | RSS MiB at 0 | at 100 | at end | fds at 0 | at 100 | at end |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for m in mems:
            at = {c: (rss, fds) for c, rss, fds in m.points}
            end = m.points[-1]
            mid = at.get(100)
            lines.append(
                f"| {m.program} | {end[0]} | {m.failures} | {m.seconds:.0f} | {end[0] / m.seconds:.1f} | "
                f"{m.points[0][1] / MIB:.1f} | "
                f"{(mid[0] / MIB) if mid else float('nan'):.1f} | {end[1] / MIB:.1f} | {m.points[0][2]} | "
                f"{mid[1] if mid else '—'} | {end[2]} |"
            )
    if starts:
        lines += [
            "",
            "## Start-up (VERSION)",
            "",
            "`-X importtime` columns: modules imported and the sum of their self times (the shim's rows with",
            "`-I -S`; the site rows as run). See docs/bench/meta_cni_profile.md for what it means.",
            "",
            "| command | ms med | ms best | modules | import self ms | slowest imports (ms) |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for name, med, best, count, total, worst in starts:
            lines.append(
                f"| {name} | {med:.1f} | {best:.1f} | {count or '—'} | {f'{total:.1f}' if count else '—'} | {worst} |"
            )
    lines += ["", "## Against issue 11's targets", "", *targets(rows, mems), ""]
    if profile:
        lines += ["## Where one ADD's time goes", ""]
        for prof in profile:
            top_bucket = max(prof.buckets.items(), key=lambda x: x[1])
            lines.append(
                f"- one ADD (noop, N={prof.attachments}) in kvnet's daemon code: {prof.wall_ms:.1f} ms wall under "
                f"cProfile; the largest share: {top_bucket[0]}, {top_bucket[1]:.1f} ms"
            )
        lines += ["", "docs/bench/meta_cni_profile.md has the profile and the optimisations it suggests.", ""]
    return "\n".join(lines)


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def targets(rows: Sequence[Row], mems: Sequence[Memory]) -> list[str]:
    """The issue's targets, judged on the real API server's medians."""
    out: list[str] = []
    api = "real" if any(r.api == "real" for r in rows) else "stand-in"
    # kvnet thick as the DaemonSet runs it (delegateParallelism 1), and at --parallelism
    thicks = sorted({r.program for r in rows if r.program.startswith("kvnet thick")})
    for delegate in ("noop", "bridge"):
        for thick in thicks:
            for n in (1, 10):
                kt = _find(rows, api, delegate, n, thick)
                mt, mk = _find(rows, api, delegate, n, "Multus thin"), _find(rows, api, delegate, n, "Multus thick")
                if kt and mt:
                    r = kt.total_ms / mt.total_ms
                    line = f"- {thick} ≤ 1.0× Multus thin, {delegate}, N={n}: {r:.2f}× — {_verdict(r <= 1.0)}"
                    line += "" if r <= 1.0 else f" by {kt.total_ms - mt.total_ms:.0f} ms ({(r - 1) * 100:.0f} %)"
                    if mk:
                        rk = kt.total_ms / mk.total_ms
                        line += f"; ≤ Multus thick: {rk:.2f}× — {_verdict(rk <= 1.0)}"
                        line += "" if rk <= 1.0 else f" by {kt.total_ms - mk.total_ms:.0f} ms"
                    out.append(line)
            kt = _find(rows, api, delegate, 100, thick)
            multus = [r for r in (_find(rows, api, delegate, 100, m) for m in ("Multus thin", "Multus thick")) if r]
            if kt and multus:
                best = min(multus, key=lambda r: r.total_ms)
                r = kt.total_ms / best.total_ms
                line = f"- {thick}, N=100 ≤ 0.5× Multus ({best.program}, the faster), {delegate}: {r:.2f}× — "
                line += _verdict(r <= 0.5) + ("" if r <= 0.5 else f" by {kt.total_ms - 0.5 * best.total_ms:.0f} ms")
                out.append(line)
    for n in SIZES:
        kc, kt = _find(rows, api, "noop", n, "kvnet-cni"), _find(rows, api, "noop", n, "kvnet thick")
        if kc and kt:
            out.append(
                f"- kvnet-cni standalone (report), noop, N={n}: {kc.total_ms:.0f} ms, "
                f"{kc.total_ms / kt.total_ms:.2f}× kvnet thick ({kc.total_ms - kt.total_ms:+.0f} ms; the fixed part is "
                "two Python starts with kvnet's imports)"
            )
    for m in mems:
        if m.program.startswith("kvnet"):
            at = {c: rss for c, rss, _ in m.points}
            end = m.points[-1][1]
            line = f"- kvnet daemon RSS ≤ 60 MiB after {m.points[-1][0]} cycles ({m.callers} callers): {end / MIB:.1f} MiB — {_verdict(end <= 60 * MIB)}"
            if 100 in at:
                growth = (end - at[100]) / MIB
                line += f"; flat between cycle 100 and the end: {growth:+.1f} MiB — {_verdict(growth <= 1.0)} (≤ 1 MiB counted as flat)"
            out.append(line)
    # like with like: each kvnet mode against Multus's same mode
    for delegate in ("noop", "bridge"):
        for n in SIZES:
            for k, m in (("kvnet thick", "Multus thick"), ("kvnet-cni", "Multus thin")):
                kr, mr = _find(rows, api, delegate, n, k), _find(rows, api, delegate, n, m)
                if kr and mr:
                    out.append(
                        f"- API requests per ADD fewer than {m}'s, {k}, {delegate}, N={n}: {kr.add_requests:g} against "
                        f"{mr.add_requests:g} — {_verdict(kr.add_requests < mr.add_requests)}"
                    )
    return out


def render_profile(
    profiles: Sequence[Profile], starts: Sequence[tuple[str, float, float, int, float, str]], header: Mapping[str, str]
) -> str:
    lines = [
        "# Where one ADD's time goes in kvnet's daemon",
        "",
        f"Measured {header['when']} by `python -m bench.meta_cni` (load average {header['load_before']}, the",
        "machine shared with other test runs). The ADD runs kvnet's daemon code in process: the handlers of",
        "`kvnet.meta.daemon.CniDaemon` (the light client and the NAD and pod caches, as deploy/node-daemonset.yaml runs it) called",
        "through `serve_call`, in the node netns, on the real API server, after two warm-up ADD/DEL pairs, so",
        "the client, its connections and the runner's VERSION answers are warm. The socket hop and the shim are",
        "not in it. cProfile adds its own overhead to every Python call, so profiled times are above the wall",
        "time of an unprofiled call; the shares are what matters. cProfile sees the calling thread only.",
        "",
    ]
    for p in profiles:
        total = sum(p.buckets.values()) or 1.0
        lines += [
            f"## noop delegate, N = {p.attachments} ({p.reps} ADDs profiled)",
            "",
            f"Wall time per ADD under the profiler {p.wall_ms:.1f} ms; profiled own time {p.profiled_ms:.1f} ms.",
            "",
            "| where (own time, builtins charged to their callers) | ms per ADD | share |",
            "|---|---:|---:|",
        ]
        for name, ms in sorted(p.buckets.items(), key=lambda x: -x[1]):
            lines.append(f"| {name} | {ms:.2f} | {ms / total * 100:.0f} % |")
        lines += [
            "",
            "Selected functions, cumulative ms per ADD (a wrapped name counts once, at its outermost; rows",
            "overlap where one calls another: the status write reads the pod first):",
            "",
            "| function | what | ms per ADD |",
            "|---|---|---:|",
        ]
        for fn, what in NAMED:
            if fn in p.named:
                lines.append(f"| `{fn}` | {what} | {p.named[fn]:.2f} |")
        lines += ["", "Top functions by cumulative time:", "", "```", *p.cumulative, "```", ""]
        lines += ["Top functions by own time:", "", "```", *p.own, "```", ""]
    shim = {name: (med, count, total) for name, med, _, count, total, _ in starts}
    lines += ["## The shim's start", ""]
    for name in (
        "python -I -S -c pass",
        "python -c pass (site)",
        "kvnet-shim as installed (#! ... -IS)",
        "python -I -S kvnet-shim",
        "python kvnet-shim (site)",
        "multus-shim",
    ):
        if name in shim:
            med, count, total = shim[name]
            extra = f", {count} modules, {total:.1f} ms of import self time" if count else ""
            lines.append(f"- {name}: {med:.1f} ms median{extra}")
    lines += ["", OPTIMISATIONS.format(**_opt_numbers(profiles, shim)), ""]
    return "\n".join(lines)


def _opt_numbers(profiles: Sequence[Profile], shim: Mapping[str, tuple[float, int, float]]) -> dict[str, str]:
    p = profiles[-1] if profiles else None
    api = p.buckets.get(BUCKETS[0][0], 0.0) if p else 0.0
    exec_ms = p.buckets.get(BUCKETS[1][0], 0.0) if p else 0.0
    total = sum(p.buckets.values()) if p else 0.0
    site = shim.get("python kvnet-shim (site)", (0.0, 0, 0.0))[0]
    direct = shim.get(NOOP_EXEC, (0.0, 0, 0.0))[0]
    nosite = shim.get("kvnet-shim as installed (#! ... -IS)", (0.0, 0, 0.0))[0]
    bare = shim.get("python -I -S -c pass", (0.0, 0, 0.0))[0]
    nm = p.named if p else {}
    return {
        "nad": f"{nm.get('get_nad', 0.0):.1f}",
        "pod": f"{nm.get('get_pod', 0.0):.1f}",
        "parse": f"{nm.get('parse_multus_config', 0.0) + nm.get('overlay_config', 0.0):.1f}",
        "execs": f"{nm.get('exec_argv', 0.0):.1f}",
        "exec_calls": f"{nm.get('exec_argv#calls', 0.0):.0f}",
        "per_exec": f"{nm.get('exec_argv', 0.0) / max(nm.get('exec_argv#calls', 1.0), 1.0):.1f}",
        "fork": f"{nm.get('<built-in method _posixsubprocess.fork_exec>', 0.0):.1f}",
        "n": str(p.attachments if p else 0),
        "api": f"{api:.1f}",
        "api_share": f"{api / total * 100:.0f}" if total else "0",
        "exec": f"{exec_ms:.1f}",
        "exec_share": f"{exec_ms / total * 100:.0f}" if total else "0",
        "site": f"{site:.1f}",
        "nosite": f"{nosite:.1f}",
        "bare": f"{bare:.1f}",
        "direct": f"{direct:.1f}",
    }


OPTIMISATIONS = """## Optimisations, with the gain expected from these numbers

Figures are from the N = {n} profile above (profiled ms; an unprofiled call is faster, the shares hold).

1. **Watch-backed NAD cache** (fall back to a GET on a miss; never older than the last watch event):
   built, on in this profile (kvnet/meta/watchcache.py; docs/meta-plugin.md, "NAD cache"). The API client
   bucket is {api} ms ({api_share} %) of the profiled ADD; the NAD reads (`get_nad`, from memory once
   the cache is synced) are {nad} ms of it. The pod reads ({pod} ms) stay (the pod's annotations and
   UID must be current).
2. **Parallel delegates** (distinct interfaces; chained conflists in order; the cluster network keeps
   its place). The delegate execs (`exec_argv`) are {execs} ms of the profiled ADD (the subprocess
   bucket: {exec} ms, {exec_share} %), nearly all of it waiting for the child; with k workers the wait
   shrinks towards 1/k on an idle machine (bounded by the cores for CPU-bound plugins such as bridge +
   host-local, whose host-local takes a file lock per call).
3. **No per-call config re-parse**: `parse_multus_config(overlay_config(...))` and the runner/seams
   lookups run on every call (kvnet/meta/wiring.py): {parse} ms per ADD here, not worth a cache.
4. **Delegate exec by vfork**: built. The parent-death signal comes from util-linux `setpriv`
   exec'd in front of the plugin (kvnet/cni/delegate.py), so CPython starts the child with vfork
   instead of forking the whole daemon for a `preexec_fn`. The {exec_calls} execs of the profiled ADD
   cost {per_exec} ms each (`exec_argv`, most of it waiting for the child), {fork} ms of them in
   `_posixsubprocess.fork_exec` itself; the same no-op plugin run alone by `subprocess.run` costs
   {direct} ms (the start-up table). The difference is setpriv's own exec and Popen's pipes and
   reaping; what remains per delegate is mostly the plugin itself.
5. **The shim's start**: built. `kvnet-shim` runs as `#!python -IS` and a call that goes well imports
   only `_json`, `_socket` and `posix` (no `json`, `socket` or `os`, which import `re` and `enum`): it
   starts in {nosite} ms against {bare} ms for `python -I -S -c pass` and {site} ms for the same script
   with `site`. The interpreter's own start is what is left, which only a non-Python shim removes
   (`multus-shim` row for comparison).
"""


# --------------------------------------------------------------------------------------


def smoke(kube: KubeCluster, node: Netns, pod: Netns, workdir: Path) -> dict[str, tuple[Sample, list[list[str]]]]:
    """One ADD+DEL of a pod with one attachment (noop) through each program on ``kube``, in
    a namespace of its own: each program's sample and what the no-op delegate recorded."""
    out: dict[str, tuple[Sample, list[list[str]]]] = {}
    with PodLab(node, pod, workdir / "lab", kvnet_bin_dir=kvnet_bin_dir(), kube=kube) as lab:
        bench = Bench(lab, "real", workdir, namespace=f"kvbench-{uuid.uuid4().hex[:6]}")
        link_peers(lab)
        bench.kubeconfigs = accounts(kube, workdir)
        add_objects(bench, 1, 0, sizes=(1,))
        record = workdir / "noop.calls"
        try:
            with daemons(bench, node, "smoke", multus=True):
                for p in PROGRAMS:
                    seen = len(_records(record))
                    sample = bench.add_del(p, bench.config(p, NOOP_MAIN), "noop-1")
                    out[p.name] = (sample, _records(record)[seen:])
        finally:
            kube.delete("Pod", bench.namespace, "noop-1")
    return out


def _records(record: Path) -> list[list[str]]:
    return [line.split() for line in record.read_text().splitlines()] if record.exists() else []


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("bench.meta_cni needs root (network namespaces)", file=sys.stderr)
        return 1
    apis = ("real", "stand-in") if args.api == "both" else (args.api,)
    missing = peers_built()
    if "real" in apis and missing:
        print(f"bench.meta_cni: {missing}", file=sys.stderr)
        return 1
    header = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "argv": " ".join(sys.argv[1:]),
        "cpus": str(os.cpu_count()),
        "load_before": load(),
    }
    sizes = tuple(args.sizes)
    rows: list[Row] = []
    mems: list[Memory] = []
    profiles: list[Profile] = []
    starts: list[tuple[str, float, float, int, float, str]] = []
    records: list[str] = []
    with (
        tempfile.TemporaryDirectory(prefix="kvnet-bench-") as tmp,
        namespaces("kvbench-node", "kvbench-pod") as (node, pod),
    ):
        work = Path(tmp)
        for api_name in apis:
            with ExitStack() as stack:
                kube = stack.enter_context(KubeCluster(work / "kube")) if api_name == "real" else None
                bw = work / api_name
                lab = stack.enter_context(PodLab(node, pod, bw / "lab", kvnet_bin_dir=kvnet_bin_dir(), kube=kube))
                bench = Bench(lab, api_name, bw)
                link_peers(lab)
                if kube is not None:
                    bench.kubeconfigs = accounts(kube, bw)
                add_objects(bench, max(sizes), args.callers)
                programs = [
                    p
                    for p in (*PROGRAMS, *parallel_programs(args.parallelism))
                    if (kube is not None or p.name not in STANDIN_SKIPS) and (args.multus or not p.multus)
                ]
                with daemons(bench, node, "matrix", multus=args.multus):
                    rows += matrix(bench, programs, sizes, args.reps, args.delegates)
                if kube is None and args.multus:  # the Multus rows, marked as not run
                    for d in args.delegates:
                        rows += [Row(api_name, d, n, p, (), why) for p, why in STANDIN_SKIPS.items() for n in sizes]
                if kube is not None and args.cycles:
                    for p in (PROGRAMS[3], PROGRAMS[1]):
                        with daemons(bench, node, f"load-{p.binary}", multus=p.multus) as ds:
                            sock = ds["multus" if p.multus else "kvnet"].socket
                            print(
                                f"{p.name}: {args.cycles} cycles, {args.callers} callers", file=sys.stderr, flush=True
                            )
                            mems.append(memory(bench, p, sock, args.cycles, args.callers))
                if kube is not None and args.profile:
                    for n in sorted({1, max(sizes)} & set(sizes) or {sizes[0]}):
                        profiles.append(profile_add(bench, node, n, args.profile))
                if not starts:
                    starts = shim_start(lab, 20)
                adds, dels = check_records(bw / "noop.calls")
                records.append(
                    f"{api_name}: {adds} ADD and {dels} DEL calls ({'match' if adds == dels else 'MISMATCH'})"
                )
                print(f"the no-op delegate recorded, {records[-1]}", file=sys.stderr)
    header["load_after"] = load()
    header["records"] = "; ".join(records)
    shown = (*PROGRAMS, *parallel_programs(args.parallelism))
    text = re.sub(r"/tmp/kvnet-bench-[^/\s]+", "<workdir>", render(rows, mems, starts, profiles, header, shown))
    print(text)
    if args.write:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(text)
        if profiles:
            PROFILE_OUT.write_text(_short(render_profile(profiles, starts, header)))
    return 0 if all(r.endswith("(match)") for r in records) else 1


def parse(argv: Sequence[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.meta_cni", description=__doc__.splitlines()[0])
    ap.add_argument("--api", choices=("both", "real", "stand-in"), default="both")
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="attachments per pod (1, 10, 100)")
    ap.add_argument("--reps", type=float, default=1.0, help="scale the repetitions per row (default 1)")
    ap.add_argument("--cycles", type=int, default=1000, help="ADD/DEL cycles of the memory run (0: skip)")
    ap.add_argument("--callers", type=int, default=8, help="concurrent callers of the memory run")
    ap.add_argument("--profile", type=int, default=5, help="ADDs profiled per size (0: skip)")
    ap.add_argument(
        "--parallelism",
        type=int,
        default=1,
        help="also run kvnet-cni and kvnet thick at this delegateParallelism (rows of their own; 1: not)",
    )
    ap.add_argument("--delegates", nargs="+", choices=DELEGATES, default=list(DELEGATES), help="noop, bridge")
    ap.add_argument("--no-multus", dest="multus", action="store_false", help="kvnet's programs only")
    ap.add_argument("--no-write", dest="write", action="store_false", help="print only, leave docs/bench alone")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    return run(parse(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
