"""The differential lane's harness: one scenario, run once through real Multus 4.3 and
once through kvnet on the same API server, the same delegates and the same netns layout,
then compared aspect by aspect.

Layout (one per test module): a node netns wired to the real API server (the
``kube`` fixture's, through :class:`kvnet.lab.pod_demo.PodLab`), one pod netns that is
re-created under the same name before each program runs (so ``CNI_NETNS`` is the same
path), and one CNI bin dir where every reference plugin is a recording wrapper
(:mod:`kvnet.lab.recorder`) beside ``multus``, ``multus-shim``, ``kvnet-cni`` and
``kvnet-shim``. Thick mode adds ``multus-daemon`` and ``kvnet daemon`` in the node netns
(:mod:`kvnet.lab.thick`). Both programs of a scenario see the very same config (only the
shim keys for both daemons are in it), the same NADs and pods (created once, before the
first program runs) and the same folders (wiped in between).

After each CNI call the harness takes one observation: exit status, CNI error or result,
the pod netns (links, addresses, routes), the network-status annotation as written, the
files in ``cniDir`` and the device-info folder, host-local's leases, what every delegate
was given (stdin and CNI_* env), and for some scenarios the node netns. :func:`normalise`
is the one place that takes out what must differ between two runs; :func:`compare` lists
every other difference.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import json
import os
import re
import shutil
import ssl
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from differential.model import (
    ApiFault,
    DeleteNetns,
    DeletePod,
    Deliberate,
    Known,
    Nad,
    Pod,
    Readiness,
    Scenario,
    Step,
)
from kvnet.lab import recorder
from kvnet.lab.faultproxy import FaultProxy
from kvnet.lab.kube import KubeCluster, object_path, peer_binary
from kvnet.lab.netns import IP, Netns, delete_netns, make_netns
from kvnet.lab.pod_demo import PodLab
from kvnet.lab.thick import DEVINFO_ROOT, NODE_NAME, KvnetDaemon, MultusDaemon, PrivateMounts
from kvnet.meta.shim import standalone_script

NETWORK_STATUS = "k8s.v1.cni.cncf.io/network-status"
NETWORKS = "k8s.v1.cni.cncf.io/networks"
DEFAULT_NETWORK = "v1.multus-cni.io/default-network"
CONTAINER_ID = "3f2a9c41d07b"
PROGRAMS = ("multus", "kvnet")
BINARIES = {("thin", "multus"): "multus", ("thin", "kvnet"): "kvnet-cni"}
BINARIES |= {("thick", "multus"): "multus-shim", ("thick", "kvnet"): "kvnet-shim"}
PLUGIN_TYPE = {"thin": "multus", "thick": "multus-shim"}
DEAD_SERVER = "https://169.254.0.77:1"  # the API address, a port nobody listens on

MAIN: Mapping[str, Any] = {
    "cniVersion": "1.0.0",
    "name": "main",
    "type": "bridge",
    "bridge": "kvd-main",
    "isGateway": True,
    "isDefaultGateway": True,
    "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.100.0.0/24"}]]},
}


def bridge_net(bridge: str, subnet: str, **extra: Any) -> dict[str, Any]:
    """A bridge + host-local network (no name: a NAD gets its own)."""
    conf: dict[str, Any] = {
        "cniVersion": "1.0.0",
        "type": "bridge",
        "bridge": bridge,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]]},
    }
    conf.update(extra)
    return conf


def base_config(mode: str) -> dict[str, Any]:
    """The meta-plugin config both programs get (the scenario's keys go on top)."""
    conf: dict[str, Any] = {
        "cniVersion": "1.0.0",
        "name": "multus-cni-network",
        "type": PLUGIN_TYPE[mode],
        "kubeconfig": "$KUBECONFIG",
        "cniDir": "$WORK/cni",
        "binDir": "$BIN",
        "confDir": "$WORK/conf",
        "logLevel": "verbose",
        "logToStderr": True,
        "delegates": [MAIN],
    }
    if mode == "thick":
        conf["daemonSocketDir"] = "$MULTUS_SOCKET_DIR"  # multus-shim's key
        conf["socketPath"] = "$KVNET_SOCKET"  # kvnet-shim's key
    return conf


# --------------------------------------------------------------------------------------
# the lab
# --------------------------------------------------------------------------------------


def _ip(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run([IP, *args], capture_output=True, text=True, check=check)


def _ip_json(*args: str) -> list[dict[str, Any]]:
    done = _ip("-j", *args)
    out: list[dict[str, Any]] = json.loads(done.stdout or "[]") if done.returncode == 0 else []
    return out


class Lane:
    """The node netns, the pod netns, the bin dir and (for thick mode) the two daemons."""

    def __init__(self, kube: KubeCluster, tmp: Path, *, kvnet_bin_dir: str, plugin_dir: str) -> None:
        self.kube = kube
        self.tmp = tmp
        self.kvnet_bin_dir = kvnet_bin_dir
        self.plugin_dir = plugin_dir
        self.bin_dir = tmp / "bin"
        self.node: Netns | None = None
        pod_name = f"kvdp-{uuid.uuid4().hex[:8]}"
        self.pod = Netns(pod_name, f"/var/run/netns/{pod_name}")
        self.lab: PodLab | None = None
        self.mounts = {mode: PrivateMounts([(tmp / mode / "devinfo", DEVINFO_ROOT)]) for mode in ("thin", "thick")}
        self.daemons: dict[str, MultusDaemon | KvnetDaemon] = {}
        self.api = ApiSession(kube)
        self.proxy: FaultProxy | None = None
        self._prepared: set[tuple[str, str]] = set()
        self._made: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()

    # --- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        self.node = make_netns("kvdn")
        self.recreate_pod_netns()
        self.lab = PodLab(
            self.node,
            self.pod,
            self.tmp / "lab",
            kvnet_bin_dir=self.kvnet_bin_dir,
            plugin_dir=self.plugin_dir,
            kube=self.kube,
        )
        self.lab.start()
        self.proxy = FaultProxy(self.kube, self.lab.root_ip)
        self.proxy.start()
        self.proxy.write_kubeconfig(self.tmp / "proxy.kubeconfig")
        text = (self.tmp / "lab" / "kubeconfig").read_text().replace(self.kube.url, DEAD_SERVER)
        (self.tmp / "dead.kubeconfig").write_text(text)
        recorder.install(self.bin_dir, self.plugin_dir)
        for name in ("multus", "multus-shim"):
            (self.bin_dir / name).symlink_to(peer_binary(name))
        (self.bin_dir / "kvnet-cni").symlink_to(os.path.join(self.kvnet_bin_dir, "kvnet-cni"))
        shim = self.bin_dir / "kvnet-shim"
        shim.write_text(standalone_script(os.path.join(self.kvnet_bin_dir, "python")))
        shim.chmod(0o755)

    def start_thick(self) -> None:
        """Both daemons (once per lane)."""
        if self.daemons:
            return
        assert self.node is not None
        mounts = self.mounts["thick"]
        multus = MultusDaemon(self.kube, self.node, self.tmp / "thick" / "multus-daemon", mounts)
        kvnet = KvnetDaemon(self.node, self.tmp / "thick" / "kvnet-daemon", mounts, kvnet_bin_dir=self.kvnet_bin_dir)
        try:
            multus.start()
            self.daemons["multus"] = multus
            kvnet.start()
            self.daemons["kvnet"] = kvnet
        except BaseException:
            self.stop_thick()
            raise

    def stop_thick(self) -> None:
        for daemon in self.daemons.values():
            daemon.stop()
        self.daemons.clear()

    def stop(self) -> None:
        self.stop_thick()
        self._parallel(lambda api, made: api.delete(*made), list(reversed(self._made)))
        self._made.clear()
        self.api.close()
        if self.proxy is not None:
            self.proxy.stop()
        if self.lab is not None:
            self.lab.stop()
        for mounts in self.mounts.values():
            mounts.cleanup()
        delete_netns(self.pod)
        if self.node is not None:
            delete_netns(self.node)

    def recreate_pod_netns(self) -> None:
        """A fresh pod netns under the same name (so the same CNI_NETNS path)."""
        _ip("netns", "delete", self.pod.name)
        _ip("netns", "add", self.pod.name, check=True)
        _ip("-n", self.pod.name, "link", "set", "lo", "up", check=True)

    def reset_node(self, *, firewall: bool) -> None:
        """The node netns as the lab made it: its uplink veth and lo only."""
        assert self.node is not None and self.lab is not None
        for link in _ip_json("-n", self.node.name, "link"):
            name = str(link["ifname"])
            if name not in ("lo", self.lab.node_veth):
                _ip("-n", self.node.name, "link", "delete", name)
        if firewall:
            for table in ("nat", "filter", "mangle"):
                _ip("netns", "exec", self.node.name, "iptables", "-t", table, "-F")
                _ip("netns", "exec", self.node.name, "iptables", "-t", table, "-X")

    # --- API objects ---------------------------------------------------------------------

    def prepare(self, scenario: Scenario, mode: str, api: ApiSession | None = None) -> None:
        """The scenario's NADs and pods on the API server, once per (scenario, mode), made
        before the first program runs so that multus-daemon's informers have them."""
        with self._lock:
            if (scenario.name, mode) in self._prepared:
                return
            self._prepared.add((scenario.name, mode))
        api = api or self.api
        tokens = Tokens.of(self, scenario, mode)
        made: list[tuple[str, str, str]] = []
        for nad in scenario.nads:
            obj = nad_object(nad, tokens)
            api.create(obj)
            made.append(("NetworkAttachmentDefinition", obj["metadata"]["namespace"], nad_name(nad, tokens)))
        for pod in scenario.pods:
            obj = pod_object(pod, tokens)
            api.create(obj)
            made.append(("Pod", obj["metadata"]["namespace"], pod.name))
        with self._lock:
            self._made += made

    def prepare_all(self, cases: Sequence[tuple[Scenario, str]]) -> None:
        """:meth:`prepare` for many cases, over a few connections at once."""
        self._parallel(lambda api, case: self.prepare(case[0], case[1], api), cases)

    def _parallel(self, fn: Callable[[ApiSession, Any], None], items: Sequence[Any], workers: int = 4) -> None:
        local = threading.local()
        sessions: list[ApiSession] = []

        def one(item: Any) -> None:
            if not hasattr(local, "api"):
                local.api = ApiSession(self.kube)
                with self._lock:
                    sessions.append(local.api)
            fn(local.api, item)

        try:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(one, items))
        finally:
            for session in sessions:
                session.close()


class ApiSession:
    """The harness's own admin connection to the real API server, kept alive (one TLS
    set-up for the whole lane, where each of the lab's ``KubeCluster`` calls makes one)."""

    API_VERSIONS: ClassVar[dict[str, str]] = {
        "Pod": "v1",
        "Namespace": "v1",
        "ServiceAccount": "v1",
        "NetworkAttachmentDefinition": "k8s.cni.cncf.io/v1",
    }

    def __init__(self, kube: KubeCluster) -> None:
        self.kube = kube
        self._ctx = ssl.create_default_context(cafile=str(kube.ca_file))
        self._ctx.load_cert_chain(str(kube.pki / "admin.crt"), str(kube.pki / "admin.key"))
        self._conn: http.client.HTTPSConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = http.client.HTTPSConnection(
                    self.kube.address, self.kube.port, context=self._ctx, timeout=30
                )
            try:
                self._conn.request(method, path, body=data, headers=headers)
                resp = self._conn.getresponse()
                payload = resp.read()
                break
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt == 2:
                    raise
        return resp.status, json.loads(payload) if payload else {}

    _namespaces: ClassVar[dict[str, threading.Event]] = {}  # made (or being made), by any session
    _ns_lock: ClassVar[threading.Lock] = threading.Lock()

    def _ensure_namespace(self, namespace: str) -> None:
        with self._ns_lock:
            done = self._namespaces.get(namespace)
            mine = done is None
            if mine:
                done = self._namespaces[namespace] = threading.Event()
        assert done is not None
        if not mine:
            done.wait(30)
            return
        try:
            for kind, body in (
                ("Namespace", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
                ("ServiceAccount", {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}}),
            ):
                status, answer = self.request("POST", object_path(kind, namespace), body)
                if status >= 300 and status != 409:
                    raise RuntimeError(f"POST {kind} {namespace}: {status} {answer}")
        finally:
            done.set()

    def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        kind, namespace = str(obj["kind"]), str(obj["metadata"]["namespace"])
        self._ensure_namespace(namespace)
        status, answer = self.request(
            "POST", object_path(kind, namespace), {"apiVersion": self.API_VERSIONS[kind], **obj}
        )
        if status >= 300:
            raise RuntimeError(f"POST {kind} {namespace}: {status} {answer.get('message', answer)}")
        created: dict[str, Any] = answer
        return created

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        status, answer = self.request("GET", object_path(kind, namespace, name))
        if status == 404:
            return None
        if status >= 300:
            raise RuntimeError(f"GET {kind} {namespace}/{name}: {status} {answer}")
        got: dict[str, Any] = answer
        return got

    def put_status(self, pod: Mapping[str, Any]) -> None:
        meta = pod["metadata"]
        status, answer = self.request("PUT", object_path("Pod", meta["namespace"], meta["name"]) + "/status", pod)
        if status >= 300:
            raise RuntimeError(f"PUT pod status {meta['namespace']}/{meta['name']}: {status} {answer}")

    def delete(self, kind: str, namespace: str, name: str) -> None:
        self.request(
            "DELETE",
            object_path(kind, namespace, name),
            {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0},
        )


def nad_name(nad: Nad, tokens: Tokens) -> str:
    return str(tokens.sub(nad.name))


def nad_object(nad: Nad, tokens: Tokens) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": nad_name(nad, tokens), "namespace": tokens.sub(nad.namespace)}
    if nad.annotations:
        meta["annotations"] = dict(tokens.sub(dict(nad.annotations)))
    if nad.config is None:
        spec: dict[str, Any] = {}
    elif isinstance(nad.config, str):
        spec = {"config": tokens.sub(nad.config)}
    else:
        spec = {"config": json.dumps(with_data_dir(tokens.sub(dict(nad.config)), tokens))}
    return {"kind": "NetworkAttachmentDefinition", "metadata": meta, "spec": spec}


def pod_object(pod: Pod, tokens: Tokens) -> dict[str, Any]:
    notes: dict[str, str] = {}
    if pod.networks is not None:
        notes[NETWORKS] = tokens.sub(pod.networks)
    if pod.default_network is not None:
        notes[DEFAULT_NETWORK] = tokens.sub(pod.default_network)
    notes.update(tokens.sub(dict(pod.annotations)))
    meta: dict[str, Any] = {"name": pod.name, "namespace": tokens.sub(pod.namespace), "annotations": notes}
    return {
        "kind": "Pod",
        "metadata": meta,
        "spec": {"nodeName": NODE_NAME, "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]},
    }


def with_data_dir(conf: Any, tokens: Tokens) -> Any:
    """Every host-local IPAM of a conf or conflist keeps its leases in the scenario's folder."""
    if isinstance(conf, dict):
        out = {k: with_data_dir(v, tokens) for k, v in conf.items()}
        ipam = out.get("ipam")
        if isinstance(ipam, dict) and ipam.get("type") == "host-local":
            ipam.setdefault("dataDir", str(tokens.work / "ipam"))
        return out
    if isinstance(conf, list):
        return [with_data_dir(v, tokens) for v in conf]
    return conf


@dataclass
class Tokens:
    """The values of the ``$`` tokens for one scenario in one mode."""

    values: dict[str, str]
    work: Path

    @staticmethod
    def of(lane: Lane, scenario: Scenario, mode: str) -> Tokens:
        ns = f"{mode}-{scenario.name}"
        work = lane.tmp / mode / scenario.name
        values = {
            "NS2": f"{ns}-b",
            "NS": ns,
            "SYS": f"{ns}-sys",
            "WORK": str(work),
            "BIN": str(lane.bin_dir),
            "KUBECONFIG": str(lane.tmp / ("proxy.kubeconfig" if scenario.api == "faulty" else "lab/kubeconfig")),
            "CID": CONTAINER_ID,
            "NETNS": lane.pod.path,
            "READY": str(work / "ready"),
            "MULTUS_SOCKET_DIR": str(lane.tmp / "thick" / "multus-daemon" / "run"),
            "KVNET_SOCKET": str(lane.tmp / "thick" / "kvnet-daemon" / "run" / "kvnet.sock"),
            "DEAD_KUBECONFIG": str(lane.tmp / "dead.kubeconfig"),
        }
        return Tokens(values, work)

    _TOKEN = re.compile(r"\$([A-Z_][A-Z0-9_]*)")

    def sub(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._TOKEN.sub(lambda m: self.values.get(m.group(1), m.group(0)), value)
        if isinstance(value, Mapping):
            return {self.sub(k): self.sub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.sub(v) for v in value]
        return value


# --------------------------------------------------------------------------------------
# running one scenario through one program
# --------------------------------------------------------------------------------------


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``over``'s keys (None removes a key)."""
    out = dict(base)
    for key, value in over.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


@dataclass
class Call:
    """One CNI call's raw outcome."""

    exit: int | str  # the status, or "timeout"
    stdout: str
    stderr: str


class Run:
    """One scenario in one mode: both programs, one after the other."""

    def __init__(self, lane: Lane, scenario: Scenario, mode: str) -> None:
        self.lane = lane
        self.scenario = scenario
        self.mode = mode
        self.tokens = Tokens.of(lane, scenario, mode)
        self.work = self.tokens.work
        self.uids: dict[tuple[str, str], str] = {}
        self.all_uids: set[str] = set()
        self._timers: list[threading.Timer] = []

    # --- set-up between the programs -------------------------------------------------------

    def _reset(self) -> None:
        lane = self.lane
        lane.reset_node(firewall=self.scenario.node)
        lane.recreate_pod_netns()
        for sub in ("cni", "ipam", "records", "conf"):
            shutil.rmtree(self.work / sub, ignore_errors=True)
        (self.work / "ready").unlink(missing_ok=True)
        devinfo = lane.tmp / self.mode / "devinfo"  # emptied, not replaced: the daemons have it mounted
        devinfo.mkdir(parents=True, exist_ok=True)
        for entry in devinfo.iterdir():
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        self.work.mkdir(parents=True, exist_ok=True)
        (self.work / "conf").mkdir()
        for name, content in self.scenario.conf_files.items():
            text = (
                content
                if isinstance(content, str)
                else json.dumps(with_data_dir(self.tokens.sub(content), self.tokens))
            )
            (self.work / "conf" / name).write_text(self.tokens.sub(text))
        recorder.record_into(lane.bin_dir, self.work / "records")
        self._reset_pods()

    def _reset_pods(self) -> None:
        """Each pod as prepared: re-created if a program's run deleted it, else without the
        network-status annotation the previous program wrote."""
        api = self.lane.api
        for pod in self.scenario.pods:
            ns = self.tokens.sub(pod.namespace)
            current = api.get("Pod", ns, pod.name)
            if current is None:
                current = api.create(pod_object(pod, self.tokens))
            else:
                notes = current["metadata"].get("annotations") or {}
                if NETWORK_STATUS in notes:
                    del notes[NETWORK_STATUS]
                    current["metadata"]["annotations"] = notes
                    api.put_status(current)
            self.uids[(ns, pod.name)] = str(current["metadata"]["uid"])
        self.all_uids |= set(self.uids.values())

    # --- the calls -----------------------------------------------------------------------

    def config(self, step: Step) -> dict[str, Any]:
        conf = merge(merge(base_config(self.mode), self.scenario.config), step.config)
        out: dict[str, Any] = with_data_dir(self.tokens.sub(conf), self.tokens)
        return out

    def env(self, step: Step) -> dict[str, str]:
        ns = self.tokens.sub(step.namespace)
        uid = {"api": self.uids.get((ns, step.pod), ""), "none": ""}.get(step.uid, step.uid)
        args = (
            f"IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={step.pod};K8S_POD_INFRA_CONTAINER_ID={CONTAINER_ID}"
        )
        if step.uid != "none":
            args += f";K8S_POD_UID={uid}"
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CNI_COMMAND": step.command,
            "CNI_CONTAINERID": CONTAINER_ID,
            "CNI_NETNS": self.lane.pod.path,
            "CNI_IFNAME": step.ifname,
            "CNI_PATH": str(self.lane.bin_dir),
            "CNI_ARGS": args,
        }
        for key, value in self.tokens.sub(dict(step.env)).items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value.replace("$UID", uid)
        return env

    def _act(self, action: object) -> None:
        lane = self.lane
        if isinstance(action, DeletePod):
            lane.api.delete("Pod", self.tokens.sub(action.namespace), action.name)
        elif isinstance(action, DeleteNetns):
            _ip("netns", "delete", lane.pod.name)
        elif isinstance(action, Readiness):
            ready = self.work / "ready"
            if not action.present:
                ready.unlink(missing_ok=True)
            elif action.after:
                timer = threading.Timer(action.after, ready.write_text, args=("",))
                timer.start()
                self._timers.append(timer)
            else:
                ready.write_text("")
        elif isinstance(action, ApiFault):
            assert lane.proxy is not None and self.scenario.api == "faulty", "faults need the fault proxy"
            lane.proxy.fail_next(action.code, method=action.method, path=action.path, times=action.times)
        else:
            raise TypeError(f"unknown action {action!r}")

    def call(self, program: str, step: Step) -> Call:
        for action in step.before:
            self._act(action)
        stdin = self.tokens.sub(step.stdin) if step.stdin is not None else json.dumps(self.config(step))
        binary = str(self.lane.bin_dir / BINARIES[(self.mode, program)])
        assert self.lane.node is not None
        argv = self.lane.mounts[self.mode].argv(self.lane.node, [binary])
        try:
            done = subprocess.run(
                argv, input=stdin.encode(), env=self.env(step), capture_output=True, timeout=step.timeout, check=False
            )
        except subprocess.TimeoutExpired as err:
            return Call("timeout", (err.stdout or b"").decode(errors="replace"), (err.stderr or b"").decode())
        finally:
            for timer in self._timers:
                timer.cancel()
            self._timers.clear()
        return Call(done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace"))

    def run(self, program: str) -> tuple[list[dict[str, Any]], list[str]]:
        """All steps through ``program``: (observations, stderr of each call)."""
        self._reset()
        observations: list[dict[str, Any]] = []
        logs: list[str] = []
        try:
            for step in self.scenario.steps:
                call = self.call(program, step)
                observations.append(self.observe(program, step, call))
                logs.append(call.stderr)
        finally:
            recorder.record_into(self.lane.bin_dir, None)
            if self.lane.proxy is not None:
                self.lane.proxy.clear()
        return observations, logs

    # --- what is looked at after each call ------------------------------------------------

    def observe(self, program: str, step: Step, call: Call) -> dict[str, Any]:
        parsed: Any = None
        if call.stdout.strip():
            try:
                parsed = json.loads(call.stdout)
            except ValueError:
                parsed = {"unparsed stdout": call.stdout}
        ok = call.exit == 0
        error = None
        if not ok and isinstance(parsed, dict):
            error = dict(parsed)
            if isinstance(error.get("msg"), str):
                error["msg"] = strip_program_prefix(error["msg"], program, self.mode)
        obs: dict[str, Any] = {
            "exit": call.exit,
            "error": error,
            "result": parsed if ok else None,
            "pod": pod_view(self.lane.pod.name),
            "status": self.status_view(),
            "cache": files_view(self.work / "cni", self.lane.tmp / self.mode / "devinfo"),
            "leases": leases_view(self.work / "ipam"),
            "delegates": delegate_view(self.work / "records"),
        }
        recorder.clear(self.work / "records")
        if self.scenario.node:
            assert self.lane.node is not None
            obs["node"] = node_view(self.lane.node.name, self.lane.lab.node_veth if self.lane.lab else "")
        return obs

    def status_view(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for pod in self.scenario.pods:
            ns = self.tokens.sub(pod.namespace)
            got = self.lane.api.get("Pod", ns, pod.name)
            if got is None:
                out[pod.name] = "<pod gone>"
            else:
                out[pod.name] = (got.get("metadata", {}).get("annotations") or {}).get(NETWORK_STATUS)
        return out


# --------------------------------------------------------------------------------------
# views
# --------------------------------------------------------------------------------------


def pod_view(netns: str) -> dict[str, Any]:
    """Links, addresses and routes of the pod netns (kernel indexes and IPv6 link-local
    addresses left out: they differ between two runs by nature)."""
    links = []
    for link in _ip_json("-n", netns, "-d", "addr", "show"):
        addrs = [
            f"{a['local']}/{a['prefixlen']} {a.get('scope', '')}"
            for a in link.get("addr_info", [])
            if not (a.get("family") == "inet6" and str(a.get("local", "")).startswith("fe80:"))
        ]
        links.append(
            {
                "name": link.get("ifname"),
                "kind": (link.get("linkinfo") or {}).get("info_kind") or link.get("link_type"),
                "mac": link.get("address"),
                "mtu": link.get("mtu"),
                "state": link.get("operstate"),
                "addresses": addrs,
            }
        )
    routes = []
    for family in ("-4", "-6"):
        for r in _ip_json("-n", netns, family, "route", "show"):
            if str(r.get("dst", "")).startswith(("fe80:", "ff00:", "multicast")):
                continue
            routes.append({k: r[k] for k in ("dst", "gateway", "dev", "protocol", "scope", "metric") if k in r})
    return {"links": sorted(links, key=lambda x: str(x["name"])), "routes": routes}


def node_view(netns: str, uplink: str) -> dict[str, Any]:
    """Links, NAT rules and qdiscs the delegates left in the node netns."""
    links = [
        {"name": _VETH.sub("<veth>", str(link.get("ifname"))), "kind": (link.get("linkinfo") or {}).get("info_kind")}
        for link in _ip_json("-n", netns, "-d", "link", "show")
        if link.get("ifname") not in ("lo", uplink)
    ]
    nat = subprocess.run(
        [IP, "netns", "exec", netns, "iptables-save", "-t", "nat"], capture_output=True, text=True, check=False
    ).stdout
    rules = [re.sub(r"\[\d+:\d+\]", "", line) for line in nat.splitlines() if line and not line.startswith("#")]
    qdiscs = [
        f"{q.get('dev')} {q.get('kind')}"
        for q in json.loads(
            subprocess.run(
                ["tc", "-n", netns, "-j", "qdisc", "show"], capture_output=True, text=True, check=False
            ).stdout
            or "[]"
        )
        if q.get("kind") not in ("noqueue",)
    ]
    return {"links": sorted(links, key=lambda x: str(x["name"])), "nat": rules, "qdiscs": sorted(qdiscs)}


def _decoded(value: Any) -> Any:
    """Base64 fields of Multus's and libcni's caches (``Bytes``, ``config``) as their JSON."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if k in ("Bytes", "config") and isinstance(v, str) and v:
                try:
                    out[k] = {"base64 of": json.loads(base64.b64decode(v, validate=True))}
                    continue
                except (binascii.Error, ValueError):
                    pass
            out[k] = _decoded(v)
        return out
    if isinstance(value, list):
        return [_decoded(v) for v in value]
    return value


def files_view(*roots: Path) -> dict[str, Any]:
    """Every file under ``cniDir`` (Multus's delegate cache, libcni's results) and the
    device-info folder, parsed."""
    out: dict[str, Any] = {}
    for root in roots:
        if not root.exists():
            continue
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            text = path.read_text(errors="replace")
            try:
                content: Any = _decoded(json.loads(text))
            except ValueError:
                content = text
            out[f"{root.name}/{path.relative_to(root)}"] = content
    return out


def leases_view(data_dir: Path) -> dict[str, str]:
    """host-local's lease files (address → container and ifname), not its bookkeeping."""
    if not data_dir.exists():
        return {}
    return {
        str(p.relative_to(data_dir)): p.read_text().strip()
        for p in sorted(data_dir.rglob("*"))
        if p.is_file() and p.name != "lock" and not p.name.startswith("last_reserved_ip")
    }


def delegate_view(folder: Path) -> list[dict[str, Any]]:
    """What each delegate was given, in call order."""
    return [{"plugin": r["plugin"], "env": r["env"], "stdin": r["stdin"]} for r in recorder.records(folder)]


# --------------------------------------------------------------------------------------
# normalisation: the one place that takes out what must differ
# --------------------------------------------------------------------------------------

_MULTUS_SHIM = re.compile(
    r"^Cmd\w+ \(shim\): (?:CNI request failed with status \d+: '(?P<inner>.*)'\n?: StdinData: .*)?", re.S
)
_ERRORED = re.compile(r"^ContainerID:.*? ERRORED: (?:error configuring pod \[[^\]]*\] networking: )?", re.S)


def strip_program_prefix(msg: str, program: str, mode: str) -> str:
    """The message without what names the program: ``Multus: `` / ``kvnet: `` and, in
    Multus's thick mode, the shim's and the daemon's envelope (``CmdAdd (shim): CNI request
    failed with status 400: 'ContainerID:... ERRORED: error configuring pod [ns/name]
    networking: <message>\\n': StdinData: <config>``)."""
    if program == "multus" and mode == "thick":
        m = _MULTUS_SHIM.match(msg)
        if m:
            inner = m.group("inner")
            msg = msg[m.end() :] if inner is None else inner
            msg = _ERRORED.sub("", msg).rstrip("\n")
    for prefix in ("Multus: ", "kvnet: "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    return msg


_MAC = re.compile(r"\b(?:[0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}\b")
_VETH = re.compile(r"\bveth[0-9a-f]{8}\b")


def normalise(observations: Sequence[Mapping[str, Any]], *, pinned: set[str], uids: set[str]) -> list[Any]:
    """The observations with what two runs cannot share replaced: pod UIDs (``<uid>``: a
    pod re-created between the programs gets a new one), MAC addresses a scenario did not
    pin (``<mac>``: the kernel picks them, and a bridge takes the lowest of its ports', so
    not even which ones are equal is stable) and the host ends of veths (``<veth>``: the
    bridge plugin names them at random). Container IDs, paths and namespace names are the
    same for both programs by construction; program prefixes are taken off in
    :func:`strip_program_prefix`."""
    keep = {m.lower() for m in pinned} | {"00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff"}

    def mac(m: re.Match[str]) -> str:
        value = m.group(0).lower()
        return value if value in keep else "<mac>"

    def text(s: str) -> str:
        for uid in uids:
            if uid:
                s = s.replace(uid, "<uid>")
        return _VETH.sub("<veth>", _MAC.sub(mac, s))

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return text(value)
        if isinstance(value, Mapping):
            return {text(str(k)): walk(value[k]) for k in sorted(value, key=str)}
        if isinstance(value, list | tuple):
            return [walk(v) for v in value]
        return value

    return [walk(o) for o in observations]


def pinned_macs(scenario: Scenario) -> set[str]:
    """MAC addresses written into the scenario (requested, in results): compared as they are."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, str):
            found.update(m.lower() for m in _MAC.findall(value))
        elif isinstance(value, Mapping):
            for v in value.values():
                walk(v)
        elif isinstance(value, list | tuple):
            for v in value:
                walk(v)
        elif hasattr(value, "__dataclass_fields__"):
            for name in value.__dataclass_fields__:
                walk(getattr(value, name))

    walk(scenario)
    return found


# --------------------------------------------------------------------------------------
# comparison and verdict
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    step: int
    command: str
    aspect: str
    path: str
    multus: Any
    kvnet: Any

    def __str__(self) -> str:
        m, k = (json.dumps(v, sort_keys=True)[:600] for v in (self.multus, self.kvnet))
        return (
            f"step {self.step + 1} {self.command} [{self.aspect}] {self.path or '.'}:\n    Multus: {m}\n    kvnet:  {k}"
        )


_ABSENT = "<absent>"


def _diff(a: Any, b: Any, path: str) -> Iterator[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            yield from _diff(a.get(key, _ABSENT), b.get(key, _ABSENT), f"{path}.{key}" if path else str(key))
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            yield from _diff(x, y, f"{path}[{i}]")
    elif a != b:
        yield path, a, b


def compare(
    scenario: Scenario, multus: Sequence[Mapping[str, Any]], kvnet: Sequence[Mapping[str, Any]]
) -> list[Difference]:
    out: list[Difference] = []
    for i, step in enumerate(scenario.steps):
        for aspect in scenario.aspects:
            for path, a, b in _diff(multus[i].get(aspect), kvnet[i].get(aspect), ""):
                out.append(Difference(i, step.command, aspect, path, a, b))
    return out


@dataclass
class Verdict:
    """What a row came to in one mode."""

    outcome: str  # "same", "deliberate", "known", "DIFFERS"
    deliberate: list[Deliberate] = field(default_factory=list)
    known: list[Known] = field(default_factory=list)
    uncovered: list[Difference] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)  # listed differences that did not show
    differences: list[Difference] = field(default_factory=list)


def entries(ids: Sequence[str], mode: str) -> list[str]:
    """A row's ids that apply in ``mode`` (``"id@thin"`` applies in thin mode only)."""
    out = []
    for entry in ids:
        name, _, only = entry.partition("@")
        if not only or only == mode:
            out.append(name)
    return out


def covers(rule: Deliberate | Known, diff: Difference, mode: str) -> bool:
    if mode not in rule.modes or diff.aspect not in rule.aspects:
        return False
    return rule.match is None or bool(rule.match(diff))


def judge(
    scenario: Scenario,
    mode: str,
    diffs: list[Difference],
    rules: Mapping[str, Deliberate],
    global_rules: Sequence[str],
    knowns: Mapping[str, Known],
) -> Verdict:
    """Sort each difference under a rule: a global deliberate one, one the row lists, a
    known one the row lists; what is left DIFFERS. Listed entries that matched nothing
    are stale (the table must not claim more than a run shows)."""
    row_rules = [rules[r] for r in entries(scenario.deliberate, mode) if mode in rules[r].modes]
    row_known = [knowns[k] for k in entries(scenario.known, mode) if mode in knowns[k].modes]
    used_rules: dict[str, Deliberate] = {}
    used_known: dict[str, Known] = {}
    uncovered: list[Difference] = []
    # the precise entries (with a match) before the broad ones (whole aspects)
    candidates: list[Deliberate | Known] = [rules[g] for g in global_rules]
    candidates += [r for r in row_rules if r.match is not None] + [k for k in row_known if k.match is not None]
    candidates += [r for r in row_rules if r.match is None] + [k for k in row_known if k.match is None]
    for d in diffs:
        entry = next((c for c in candidates if covers(c, d, mode)), None)
        if isinstance(entry, Deliberate):
            used_rules[entry.id] = entry
        elif isinstance(entry, Known):
            used_known[entry.id] = entry
        else:
            uncovered.append(d)
    stale = [r.id for r in row_rules if r.id not in used_rules]
    stale += [k.id for k in row_known if k.id not in used_known]
    if uncovered:
        outcome = "DIFFERS"
    elif used_known:
        outcome = "known"
    elif used_rules:
        outcome = "deliberate"
    else:
        outcome = "same"
    return Verdict(outcome, list(used_rules.values()), list(used_known.values()), uncovered, stale, diffs)


def discover(
    scenario: Scenario, mode: str, diffs: list[Difference], rules: Mapping[str, Deliberate], knowns: Mapping[str, Known]
) -> dict[str, Any]:
    """Which entries of the two lists would account for a run's differences (a help for
    keeping the table current: ``KVNET_DIFF_DISCOVER=<file>``)."""
    deliberate: set[str] = set()
    known: set[str] = set()
    left: list[str] = []
    for d in diffs:
        rule = next((r for r in rules.values() if r.match is not None and covers(r, d, mode)), None)
        if rule is not None:
            deliberate.add(rule.id)
            continue
        k = next((k for k in knowns.values() if k.match is not None and covers(k, d, mode)), None)
        if k is not None:
            known.add(k.id)
            continue
        left.append(str(d))
    return {"deliberate": sorted(deliberate), "known": sorted(known), "left": left}


RESULTS: dict[tuple[str, str], Verdict] = {}


# --------------------------------------------------------------------------------------
# the table in docs/multus-compat.md
# --------------------------------------------------------------------------------------

BEGIN = "<!-- differential-lane:begin (generated: KVNET_WRITE_COMPAT_TABLE=1 pytest tests/differential) -->"
END = "<!-- differential-lane:end -->"
BASE_ASPECTS = ("exit", "error", "result", "pod", "status", "cache", "leases", "delegates")


def _cell(verdict: Verdict | None) -> str:
    if verdict is None:
        return "—"
    if verdict.outcome == "same":
        return "same"
    if verdict.outcome == "deliberate":
        return "deliberate: " + ", ".join(f"[{r.id}](#d-{r.id})" for r in verdict.deliberate)
    if verdict.outcome == "known":
        known = ", ".join(f"[{k.id}](#k-{k.id})" for k in verdict.known)
        also = ", ".join(f"[{r.id}](#d-{r.id})" for r in verdict.deliberate)
        return f"**known (open)**: {known}" + (f"; deliberate: {also}" if also else "")
    return "**DIFFERS**: " + "; ".join(sorted({f"{d.command} {d.aspect} {d.path or '.'}" for d in verdict.uncovered}))


def _calls(scenario: Scenario) -> str:
    calls = ", ".join(s.command for s in scenario.steps)
    return calls + (" (+ node)" if scenario.node else "") + (" (fault proxy)" if scenario.api == "faulty" else "")


def compat_table(
    results: Mapping[tuple[str, str], Verdict],
    scenarios: Sequence[Scenario],
    rules: Mapping[str, Deliberate],
    knowns: Mapping[str, Known],
    global_rules: Sequence[str],
) -> str:
    """The section "Differential lane: kvnet vs Multus 4.3" as the last run found it."""
    used_rules = {r.id for v in results.values() for r in v.deliberate}
    used_known = {k.id for v in results.values() for k in v.known}
    counts: dict[str, dict[str, int]] = {}
    for (_, mode), verdict in results.items():
        counts.setdefault(mode, {}).setdefault(verdict.outcome, 0)
        counts[mode][verdict.outcome] += 1
    summary = "; ".join(
        f"{mode}: " + ", ".join(f"{counts[mode].get(o, 0)} {o}" for o in ("same", "deliberate", "known", "DIFFERS"))
        for mode in ("thin", "thick")
        if mode in counts
    )
    lines = [
        BEGIN,
        "## Differential lane: kvnet vs Multus 4.3",
        "",
        "`tests/differential` runs every scenario below once through real Multus v4.3.0 and once through "
        "kvnet, on the same real API server, with the same NADs, pods, config, delegates (the reference "
        "plugins v1.10.0 and a recording plugin) and netns layout, and compares the two field by field. "
        "**thin**: `multus` against `kvnet-cni`; **thick**: `multus-shim` + `multus-daemon` against "
        "`kvnet-shim` + `kvnet daemon`, both daemons in the node netns (`kvnet/lab/thick.py` says how "
        "multus-daemon is set up: daemon config, socket dir, in-cluster ServiceAccount, `MULTUS_NODE_NAME`). "
        "Rows marked *fault proxy* point both programs at the real server through `kvnet/lab/faultproxy.py`, "
        "which answers chosen requests with 5xx or 409: the API stand-in cannot be used for them, because "
        "Multus's client-go writes network-status as protobuf, which the stand-in cannot decode.",
        "",
        "After every call the lane compares: the exit status; the CNI error (code, message after the "
        "program's own prefix, details, cniVersion); the result JSON; the pod netns (links, addresses, "
        "routes); the network-status annotation as written (byte for byte); every file in `cniDir` "
        "(Multus's delegate cache, libcni's results, base64 fields decoded) and the device-info folder; "
        "host-local's leases; what each delegate was given (stdin and CNI_* env; VERSION probes are not "
        "compared); with *(+ node)* also the node netns (links, NAT rules, qdiscs). Only what must differ "
        "between two runs is normalised (`tests/differential/harness.py`, `normalise` and "
        "`strip_program_prefix`): pod UIDs, MAC addresses the scenario did not pin, the random names of "
        "veth host ends, `Multus: `/`kvnet: ` and multus-shim's envelope around the daemon's message. "
        "Container IDs, paths and namespaces are the same for both programs by construction.",
        "",
        "A difference fails the lane unless it is listed: as deliberate (below, with why), or as known "
        "(kvnet still differs; the row's test is a strict xfail, so a fix turns it into a failure until "
        "the entry is removed). Listed entries a run does not show fail too.",
        "",
        f"Last run: {len(scenarios)} scenarios; {summary}.",
        "",
        "### Deliberate differences",
        "",
    ]
    for rule in rules.values():
        if rule.id in used_rules or rule.id in global_rules:
            scope = " (every row)" if rule.id in global_rules else ""
            lines.append(f'- <a id="d-{rule.id}"></a>**{rule.id}**{scope}: {rule.why}.')
    lines += ["", "### Known differences (open)", ""]
    open_known = [k for k in knowns.values() if k.id in used_known]
    if not open_known:
        lines.append("None.")
    for k in open_known:
        lines.append(f'- <a id="k-{k.id}"></a>**{k.id}**: kvnet: {k.cause}. Multus: {k.multus}.')
    lines += [
        "",
        "### The table",
        "",
        "| scenario | what | calls | thin | thick |",
        "| --- | --- | --- | --- | --- |",
    ]
    for s in scenarios:
        what = s.what.replace("|", "\\|")
        lines.append(
            f"| `{s.name}` | {what} | {_calls(s)} | {_cell(results.get((s.name, 'thin')))} | "
            f"{_cell(results.get((s.name, 'thick')))} |"
        )
    lines += ["", END]
    return "\n".join(lines) + "\n"


def write_compat_table(doc: Path, section: str) -> None:
    """Put ``section`` into ``doc`` in place of the previous one (or at its end)."""
    text = doc.read_text()
    if BEGIN in text and END in text:
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END + "\n")
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section
    doc.write_text(text)
