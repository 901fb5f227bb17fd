"""The VM demo's run: from node set-up to teardown, one stage a step, each handing on what it made.

Driven the way a cluster drives it: the API stand-in holds the virt-launcher pod (its
networks annotation exactly as KubeVirt writes it) and the NADs; ``kvnet-cni`` ADD runs
as a runtime would run it (env + stdin, inside a "node" netns where the node bridges
live) and calls the real reference plugins and ``kvnet-binding``; ``kvnet-sidecar`` runs
in the pod netns and is called over gRPC by a small virt-launcher-like client (Info,
PreCloudInitIso, OnDefineDomain); libvirtd runs in the pod netns and starts the domain
under QEMU (TCG); the test guest reports what it saw on its serial console and pings a
peer on every network. Then the bond fails over, the VM stops, DEL runs, and the
teardown (:mod:`kvnet.lab.teardown`) proves nothing is left.

Each stage is a function of the run's :class:`Lab` and the values earlier stages
returned (:class:`Namespaces`, :class:`Api`, :class:`Attached`, :class:`Sidecar`,
:class:`Domain`, the booted :class:`Guest`, :class:`Observed`); every step registers its
undo with the lab's :class:`~kvnet.lab.teardown.Teardown`. :func:`run_in` runs the stages
and builds the :class:`~kvnet.lab.vm.report.DemoResult` once at the end.

Used by ``kvnet demo`` (:func:`demo`), the VM test lane (:func:`run_scenario`) and the
boot benchmark. The API stand-in listens in the root netns on a link-local address
reached from the node netns over a veth pair (a process in the node netns cannot reach
the root netns's 127.0.0.1).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import yaml

from kvnet.core.errors import InvalidEnvironment, IOFailure, KvnetError
from kvnet.lab import console, guest
from kvnet.lab.kube import peer_binary
from kvnet.lab.netns import POD_RESOLV_CONF, QEMU_UID, NetnsLike, launcher_container, make_netns
from kvnet.lab.teardown import POD_LINKS_KEPT, Teardown, leftovers, links_left
from kvnet.lab.thick import DEVINFO_ROOT, NODE_NAME, MultusDaemon, PrivateMounts
from kvnet.lab.vm.kubevirt import KubeVirtPeer
from kvnet.lab.vm.report import DemoResult, Failover, KubeVirtPart, NicRow, guest_errors, nic_rows, summary
from kvnet.lab.vm.scenario import (
    BINDING_NAME,
    NAMESPACE,
    STATUS_ANNOTATION,
    DomainNic,
    LabDomainEdits,
    RunFiles,
    Scenario,
    cloud_init_data,
    cni_config,
    cni_env,
    converter_paths,
    default_scenario,
    dhcp_scenario,
    domain_name,
    domain_nics,
    edit_converter_domain,
    launcher_domain,
    launcher_pod,
    nads,
    network_info,
    node_links,
    peer_launcher_parts,
    vmi,
    vmi_with_interface_status,
)

if TYPE_CHECKING:
    from kvnet.lab.apiserver import ApiStandIn
    from kvnet.lab.kube import KubeCluster
    from kvnet.lab.launcher import LauncherClient
    from kvnet.lab.libvirtd import Libvirtd

CNI_PLUGIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")

NetnsFactory = Callable[[str], NetnsLike]
Progress = Callable[[str], None]


# ------------------------------------------------------------------------------------
# Commands
# ------------------------------------------------------------------------------------


def sh(*cmd: str, check: bool = True, ns: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command (in ``ns`` when given); failures become IOFailure with its stderr."""
    argv = ["ip", "netns", "exec", ns, *cmd] if ns else list(cmd)
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise IOFailure(f"{' '.join(argv)} failed with status {done.returncode}", (done.stderr or done.stdout).strip())
    return done


def make_bin_dir(files: RunFiles) -> Path:
    """CNI_PATH/binDir: the reference plugins plus kvnet's own programs, side by side."""
    bindir = files.bin_dir
    bindir.mkdir()
    plugins = next((Path(d) for d in CNI_PLUGIN_DIRS if Path(d, "bridge").exists()), None)
    if plugins is None:
        raise InvalidEnvironment("reference CNI plugins not installed (apt-get install containernetworking-plugins)")
    for p in plugins.iterdir():
        (bindir / p.name).symlink_to(p)
    here = Path(sys.executable).parent
    for prog in ("kvnet-cni", "kvnet-binding", "kvnet-sidecar", "kvnet-mirror"):
        src = here / prog
        if not src.exists():
            raise InvalidEnvironment(f"{prog} is not installed next to {sys.executable} (pip install -e .)")
        (bindir / prog).symlink_to(src)
    return bindir


def link_multus(bindir: Path) -> None:
    """The real Multus (thin, and thick's shim) beside kvnet's programs, as a cluster that keeps Multus has it."""
    for name in ("multus", "multus-shim"):
        (bindir / name).symlink_to(peer_binary(name))


def program_of(meta: str) -> str:
    """The CNI program the runtime calls for the meta-plugin ``meta``."""
    return {"kvnet": "kvnet-cni", "multus": "multus", "multus-thick": "multus-shim"}[meta]


def daemon_socket_dir(files: RunFiles) -> Path:
    return files.workdir / "multus-daemon" / "run"


def start_multus_daemon(lab: Lab, ns: Namespaces) -> None:
    """``multus-daemon`` in the node netns on the real API server (kvnet/lab/thick.py), stopped
    after the CNI DEL of the way out (registered before it, so undone after it)."""
    if lab.kube is None:
        raise InvalidEnvironment("multus-thick needs the real API server (multus-daemon has no stand-in mode)")
    mounts = PrivateMounts([(lab.files.workdir / "devinfo", DEVINFO_ROOT)])
    daemon = MultusDaemon(lab.kube, ns.node, lab.files.workdir / "multus-daemon", mounts)
    lab.teardown.undo(mounts.cleanup)
    lab.teardown.undo(daemon.stop)
    t0 = time.monotonic()
    daemon.start()
    lab.timed("multus_daemon", t0)
    lab.say(f"multus-daemon in {ns.node.name} on {daemon.socket} in {lab.timings['multus_daemon']:.2f} s")


def file_tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` of a log file ('' when it cannot be read)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def link_leftovers(scenario: Scenario, pod_ns: str, node_ns: str) -> list[str]:
    """Links left after CNI DEL: the pod netns may hold only ``lo``, the node netns only
    what the demo made itself (:func:`~kvnet.lab.vm.scenario.node_links`). Run before the
    netns are deleted."""
    return [*links_left(pod_ns, POD_LINKS_KEPT, "pod"), *links_left(node_ns, node_links(scenario), "node")]


# ------------------------------------------------------------------------------------
# The run's context and what each stage hands on
# ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lab:
    """What every stage gets: the run's inputs and files, where it reports progress, the
    teardown its steps register their undo with, and the timings it records."""

    image: guest.GuestImage
    scenario: Scenario
    files: RunFiles
    say: Progress
    make_ns: NetnsFactory
    teardown: Teardown
    timings: dict[str, float]  # seconds by step, kept when a later step fails
    container_id: str
    api_link: str  # the root end of the veth the API server is reached through
    in_process_binding: bool = True
    kube: KubeCluster | None = None  # the real API server; None: a fresh API stand-in
    meta: str = "kvnet"  # the meta-plugin: kvnet-cni, or the real Multus from build/peers, "multus" or "multus-thick"
    kubevirt: KubeVirtPeer | None = None  # KubeVirt's own code plays KubeVirt's part; None: the lab's stand-ins
    seen: dict[str, Any] = field(default_factory=dict)  # what KubeVirt's part gave kvnet (report.KubeVirtPart)

    def netns(self) -> NetnsLike:
        """A fresh ``kvd-`` netns of this run (deleted on the way out)."""
        made = self.teardown.netns_made(self.make_ns("kvd"))
        return made

    def timed(self, key: str, start: float) -> float:
        now = time.monotonic()
        self.timings[key] = now - start
        return now


@dataclass(frozen=True)
class Namespaces:
    node: NetnsLike  # the node bridges, the macvlan uplink, kvnet-cni runs here
    pod: NetnsLike  # the virt-launcher pod's sandbox: the sidecar and libvirtd run here
    peers: tuple[NetnsLike, ...] = ()  # one per Scenario.peers(), in that order


@dataclass(frozen=True)
class Api:
    server: ApiStandIn | KubeCluster
    pod: Mapping[str, Any]  # the virt-launcher pod as the API server stored it (its UID)
    vmi: Mapping[str, Any]
    sidecar_container: str = "hook-sidecar-0"  # the binding sidecar's container: its hooks sub-folder


@dataclass(frozen=True)
class Attached:
    status: Mapping[str, Mapping[str, Any]]  # network-status after ADD, by pod interface


@dataclass(frozen=True)
class Sidecar:
    proc: subprocess.Popen[bytes]
    hook: LauncherClient | None  # the lab's virt-launcher hook client; None: KubeVirt's (kubevirt-peer hooks)


@dataclass(frozen=True)
class Domain:
    network_data: Mapping[str, Any]  # the sidecar's cloud-init network data, parsed
    cmdline: str  # the guest kernel's command line (the network data in it)
    xml: str  # the domain after OnDefineDomain
    nics: Mapping[str, DomainNic]  # its kvnet NICs by VMI interface name


@dataclass(frozen=True)
class Observed:
    report: console.GuestReport  # what the guest printed up to ``ready``
    rows: list[NicRow]
    guest_errors: list[str]


@dataclass(frozen=True)
class Up:
    """The running VM, for what a caller does while it is up (``run_in``'s ``while_up``)."""

    ns: Namespaces
    api: Api
    attached: Attached
    vm: Guest
    observed: Observed


WhileUp = Callable[[Up], None]


class Guest:
    """The booted domain: its libvirtd, its console, and the guest's command channel (one
    connection, opened on the first command and closed on the way out)."""

    def __init__(self, libvirtd: Libvirtd, name: str, files: RunFiles, teardown: Teardown) -> None:
        self.libvirtd = libvirtd
        self.name = name
        self.console_log = files.console_log
        self._channel_path = files.channel
        self._teardown = teardown
        self._seq = 0
        self._chan: socket.socket | None = None

    def alive(self) -> bool:
        done = self.libvirtd.virsh("domstate", self.name, check=False)
        return done.returncode == 0 and "running" in done.stdout

    def set_link(self, target: str, state: str) -> None:
        self.libvirtd.virsh("domif-setlink", self.name, target, state)

    def command(self, cmd: str, timeout: float = 30) -> console.GuestReport:
        """Send a line on the guest's command channel and wait for its ``done`` line."""
        self._seq += 1
        seq = str(self._seq)
        if self._chan is None:
            self._chan = socket.socket(socket.AF_UNIX)
            self._teardown.undo(self._chan.close)
            self._chan.connect(str(self._channel_path))
        self._chan.sendall(f"{cmd} {seq}\n".encode())
        report = console.wait_for(self.console_log, lambda r: r.has("done", seq=seq), timeout, alive=self.alive)
        if report is None:
            raise IOFailure(f"guest did not answer {cmd!r} within {timeout:.0f} s")
        return report


# ------------------------------------------------------------------------------------
# Node, peers, API
# ------------------------------------------------------------------------------------


def setup_node(lab: Lab) -> Namespaces:
    s = lab.scenario
    node_ns, pod_ns = lab.netns(), lab.netns()
    peer_ns = tuple(lab.netns() for _ in s.peers())
    ns = Namespaces(node=node_ns, pod=pod_ns, peers=peer_ns)
    node = ns.node.name
    segments = {n.segment: n.kind for n in s.nets}
    segments["kvc0"] = "bridge"
    for seg, kind in segments.items():
        if kind == "bridge":
            sh("ip", "-n", node, "link", "add", seg, "type", "bridge")
            sh("ip", "-n", node, "link", "set", seg, "up")
    for target in sorted({n.mirror for n in s.nets if n.mirror}):  # kvnet-mirror's targets
        sh("ip", "-n", node, "link", "add", target, "type", "veth", "peer", "name", f"{target}c")
        for end in (target, f"{target}c"):  # no IPv6: the ends send nothing of their own to count
            sh("sysctl", "-q", "-w", f"net.ipv6.conf.{end}.disable_ipv6=1", ns=node)
            sh("ip", "-n", node, "link", "set", end, "up")
    for i, (peer, pns) in enumerate(zip(s.peers(), peer_ns, strict=True)):
        if peer.kind == "bridge":
            sh("ip", "-n", node, "link", "add", f"kvp{i}", "type", "veth", "peer", "name", "eth0", "netns", pns.name)
            sh("ip", "-n", node, "link", "set", f"kvp{i}", "master", peer.segment, "up")
        else:  # macvlan uplink: a veth whose other end is the peer
            sh("ip", "-n", node, "link", "add", peer.segment, "type", "veth", "peer", "name", "eth0", "netns", pns.name)
            sh("ip", "-n", node, "link", "set", peer.segment, "up")
        for address in peer.addresses:
            sh("ip", "-n", pns.name, "addr", "add", address, "dev", "eth0", "nodad")
        sh("ip", "-n", pns.name, "link", "set", "eth0", "up")
    # runs after CNI DEL (registered later, so undone earlier) and before the netns go
    lab.teardown.check(lambda: link_leftovers(s, ns.pod.name, node))
    lab.say(f"node netns {node}, pod netns {ns.pod.name}, {len(s.peers())} peer netns")
    return ns


def start_api(lab: Lab, ns: Namespaces) -> Api:
    from kvnet.lab.apiserver import ApiStandIn

    s, files = lab.scenario, lab.files
    base = random.randrange(1, 254) * 256 + random.randrange(0, 64) * 4
    host_ip = str(ipaddress.ip_address("169.254.0.0") + base + 1)
    node_ip = str(ipaddress.ip_address("169.254.0.0") + base + 2)
    sh("ip", "link", "add", lab.api_link, "type", "veth", "peer", "name", "api0", "netns", ns.node.name)
    lab.teardown.root_link_made(lab.api_link)
    sh("ip", "addr", "add", f"{host_ip}/30", "dev", lab.api_link)
    sh("ip", "link", "set", lab.api_link, "up")
    sh("ip", "-n", ns.node.name, "addr", "add", f"{node_ip}/30", "dev", "api0")
    sh("ip", "-n", ns.node.name, "link", "set", "api0", "up")
    binding_log = None if lab.in_process_binding else str(files.binding_log)
    # scheduled to the lab's node on the real API server (multus-daemon and kvnet policy
    # watch only their node's pods); the stand-in has no scheduling
    node_name = NODE_NAME if lab.kube is not None else None
    the_vmi = vmi(s)
    parts = peer_launcher_parts(lab.kubevirt.annotation(the_vmi)) if lab.kubevirt else None
    objects = [*nads(s, str(files.ipam), binding_log), launcher_pod(s, node_name=node_name, parts=parts)]
    server: ApiStandIn | KubeCluster
    if lab.kube is None:
        server = ApiStandIn(host_ip, 0)
        server.start()
        lab.teardown.undo(server.stop)
        server.load(objects)
        pod = server.get("Pod", NAMESPACE, str(objects[-1]["metadata"]["name"])) or objects[-1]
        what = f"API stand-in (not a real API server) at {server.url}"
    else:
        server = lab.kube
        server.route_from(ns.node, host_ip)
        made = server.load(objects)
        for obj in made:
            kind, name = str(obj["kind"]), str(obj["metadata"]["name"])
            lab.teardown.undo(lambda kind=kind, name=name: server.delete(kind, NAMESPACE, name))
        pod = made[-1]
        what = f"kube-apiserver at {server.url}"
    server.write_kubeconfig(str(files.kubeconfig))
    sidecar = parts.sidecars[0][0] if parts and parts.sidecars else "hook-sidecar-0"
    if parts is not None and len(parts.sidecars) != 1:
        raise IOFailure(f"KubeVirt gives the virt-launcher pod {len(parts.sidecars)} hook sidecars, the lab runs one")
    api = Api(server, pod, the_vmi, sidecar)
    lab.seen["pod_annotations"] = dict(pod["metadata"].get("annotations") or {})
    by = "KubeVirt's code (kubevirt-peer annotation)" if lab.kubevirt else "the lab (KubeVirt's format)"
    lab.say(f"{what}: pod {NAMESPACE}/{pod['metadata']['name']} (annotations by {by}) and {len(s.nets) + 1} NADs")
    return api


# ------------------------------------------------------------------------------------
# CNI
# ------------------------------------------------------------------------------------


def cni(lab: Lab, ns: Namespaces, api: Api, command: str) -> dict[str, Any]:
    """``kvnet-cni COMMAND`` inside the node netns, as a runtime runs it (env + stdin)."""
    files = lab.files
    env = cni_env(
        command,
        api.pod,
        container_id=lab.container_id,
        netns=ns.pod.path,
        cni_path=files.bin_dir,
        path=os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
    )
    program = program_of(lab.meta)
    conf = cni_config(
        files, in_process_binding=lab.in_process_binding, meta=lab.meta, daemon_socket_dir=str(daemon_socket_dir(files))
    )
    done = subprocess.run(
        ["ip", "netns", "exec", ns.node.name, str(files.bin_dir / program)],
        input=json.dumps(conf),
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if done.returncode != 0:
        raise IOFailure(
            f"{program} {command} failed with status {done.returncode}: {done.stdout.strip()}",
            done.stderr.strip()[-2000:],
        )
    result: dict[str, Any] = json.loads(done.stdout) if done.stdout.strip() else {}
    return result


def cni_add(lab: Lab, ns: Namespaces, api: Api) -> Attached:
    bindir = make_bin_dir(lab.files)
    if lab.meta != "kvnet":
        link_multus(bindir)
    if lab.meta == "multus-thick":
        start_multus_daemon(lab, ns)
    t0 = time.monotonic()
    lab.teardown.check(lambda: cni_del(lab, ns, api))
    cni(lab, ns, api, "ADD")
    lab.timed("cni_add", t0)
    pod = api.server.get("Pod", NAMESPACE, api.pod["metadata"]["name"]) or {}
    status = json.loads(pod.get("metadata", {}).get("annotations", {}).get(STATUS_ANNOTATION, "[]"))
    lab.say(f"{program_of(lab.meta)} ADD: {len(status)} network-status entries in {lab.timings['cni_add']:.2f} s")
    return Attached({e.get("interface"): e for e in status})


def cni_del(lab: Lab, ns: Namespaces, api: Api) -> list[str]:
    """CNI DEL (on the way out, whatever happened); a failed DEL is a leftover."""
    t0 = time.monotonic()
    found = []
    try:
        cni(lab, ns, api, "DEL")
    except KvnetError as err:
        found.append(f"CNI DEL failed: {err.msg} {err.details}")
    lab.timed("cni_del", t0)
    return found


# ------------------------------------------------------------------------------------
# Sidecar
# ------------------------------------------------------------------------------------


def write_network_info(lab: Lab, api: Api, attached: Attached) -> None:
    """The downward-API file: KubeVirt's ``network-info`` from the network-status the
    meta-plugin really wrote (the lab's emulation without the peer)."""
    files = lab.files
    if lab.kubevirt is None:
        text = json.dumps(network_info(lab.scenario, attached.status))
    else:
        status = json.dumps(list(attached.status.values()))
        text = lab.kubevirt.network_info(vmi_with_interface_status(api.vmi, attached.status), status)
    files.network_info.write_text(text)
    lab.seen["network_info"] = text


def start_sidecar(lab: Lab, ns: Namespaces, api: Api, attached: Attached) -> Sidecar:
    """``kvnet-sidecar`` in the pod netns as KubeVirt runs its container (uid 107, no
    capabilities, the pod's hostname and resolv.conf: :func:`~kvnet.lab.netns.launcher_container`),
    with its kvnet-guestnet, until its socket is there. With KubeVirt's code
    the sidecar's hooks folder is its container's sub-folder of the shared one (what
    virt-launcher 1.6+ reads) and its environment is what virt-controller 1.8 sets."""
    files = lab.files
    t0 = time.monotonic()
    files.hooks.mkdir()
    hooks = files.hooks / api.sidecar_container if lab.kubevirt else files.hooks
    hooks.mkdir(exist_ok=True)
    write_network_info(lab, api, attached)
    # the sidecar container's user (uid 107, no capabilities) reaches its files and owns its hooks folder
    files.workdir.chmod(0o755)
    os.chown(hooks, QEMU_UID, QEMU_UID)
    scratch = files.workdir / "sidecar-dev"
    scratch.mkdir()
    resolv = files.workdir / "resolv.conf"
    resolv.write_text(POD_RESOLV_CONF)
    log = files.sidecar_log.open("ab")
    lab.teardown.undo(log.close)
    env = {**os.environ, "CONTAINER_NAME": api.sidecar_container}
    if lab.kubevirt is None:
        env["NETWORK_BINDING_PLUGIN_NAME"] = BINDING_NAME
    proc = subprocess.Popen(
        launcher_container(
            ns.pod.name,
            str(scratch),
            str(resolv),
            lab.scenario.vmi_name,
            str(files.bin_dir / "kvnet-sidecar"),
            "--hooks-dir",
            str(hooks),
            "--name",
            BINDING_NAME,
            "--network-info",
            str(files.network_info),
            "--network-info-timeout",
            "10",
            *(("--no-cloud-init",) if lab.scenario.dhcp else ()),
        ),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        env=env,
        start_new_session=True,
    )
    lab.teardown.undo(stop_process, proc)
    deadline = time.monotonic() + 20
    sock: Path | None = None
    while sock is None:
        sock = next((p for p in hooks.iterdir() if p.is_socket()), None) if hooks.exists() else None
        if proc.poll() is not None:
            raise IOFailure(
                f"kvnet-sidecar exited with status {proc.returncode} before listening", file_tail(files.sidecar_log)
            )
        if time.monotonic() > deadline:
            raise IOFailure("kvnet-sidecar did not publish its socket within 20 s", file_tail(files.sidecar_log))
        time.sleep(0.02)
    if lab.kubevirt is not None:
        peer = lab.kubevirt
        # virt-launcher's Shutdown (kubevirt-peer hooks, stage shutdown) before the process is stopped
        lab.teardown.undo(shut_down_by_peer, lab, proc, peer, api.vmi)
        lab.timed("sidecar_start", t0)
        return Sidecar(proc, None)
    from kvnet.lab.launcher import LauncherClient  # grpc and the generated messages, only when a VM runs

    hook = LauncherClient(hooks)  # virt-launcher's hook manager: Info with a 1 s deadline, newest version
    lab.teardown.undo(shut_down, lab, proc, hook)  # before the process is stopped
    hook.collect(1, timeout=max(1.0, deadline - time.monotonic()))
    lab.timed("sidecar_start", t0)
    return Sidecar(proc, hook)


def hook_errors(hook: LauncherClient, point: str) -> contextlib.AbstractContextManager[None]:
    """A failed hook call as an ``IOFailure`` naming the sidecar and the hook point."""
    from kvnet.lab.launcher import as_io_failure

    return as_io_failure(point, ", ".join(sc.name for sc in hook.sidecars) or BINDING_NAME)


def shut_down_by_peer(lab: Lab, proc: subprocess.Popen[bytes], peer: KubeVirtPeer, the_vmi: Mapping[str, Any]) -> None:
    """virt-launcher's Shutdown call by KubeVirt's hook manager, then up to 5 s for the sidecar to exit."""
    if proc.poll() is None:
        try:
            lab.seen["shutdown"] = peer.hooks_shutdown(lab.files.hooks, the_vmi, timeout=5)
        except KvnetError as err:
            lab.seen["shutdown"] = f"{err.msg} {err.details}".strip()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def shut_down(lab: Lab, proc: subprocess.Popen[bytes], hook: LauncherClient) -> None:
    """virt-launcher's Shutdown call, then up to 5 s for the sidecar to exit."""
    if proc.poll() is None:
        with contextlib.suppress(KvnetError), hook_errors(hook, "Shutdown"):
            hook.shutdown(timeout=5.0)
            lab.seen["shutdown"] = "ok"
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """A process still running: terminated, killed after 5 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def parse_network_data(lab: Lab, answer: Mapping[str, Any]) -> dict[str, Any]:
    """The sidecar's PreCloudInitIso answer's NetworkData (cloud-init v2 YAML), parsed."""
    text = answer.get("NetworkData") or ""
    try:
        network_data: dict[str, Any] = yaml.safe_load(text) if text.strip() else {"version": 2}
    except yaml.YAMLError as err:
        raise IOFailure(f"the sidecar's NetworkData for VMI {lab.scenario.vmi_name} is not YAML: {err}") from None
    return network_data


def guest_cmdline(lab: Lab, network_data: Mapping[str, Any], stay: int) -> str:
    """The guest kernel's command line: the network data (or, for a guest without
    cloud-init, ``kvnet.dhcp=1``: DHCP clients on every NIC), the peers to ping, how long to stay up."""
    peers = [ip for p in lab.scenario.peers() for ip in p.ips]
    if lab.scenario.dhcp:
        return lab.image.cmdline("kvnet.dhcp=1 " + guest.network_cmdline({"version": 2}, peers=peers, stay=stay))
    return lab.image.cmdline(guest.network_cmdline(network_data, peers=peers, stay=stay))


def call_hooks(lab: Lab, sidecar: Sidecar, api: Api, stay: int) -> Domain:
    """PreCloudInitIso (the network data), then OnDefineDomain on a KubeVirt-shaped domain:
    by KubeVirt's own code when the peer is built (:func:`call_hooks_by_peer`), else by the
    lab's hook client on the lab's domain."""
    if lab.kubevirt is not None:
        return call_hooks_by_peer(lab, lab.kubevirt, api, stay)
    if sidecar.hook is None:
        raise InvalidEnvironment("no hook client for the sidecar")
    s, files = lab.scenario, lab.files
    t0 = time.monotonic()
    network_data: dict[str, Any] = {"version": 2}
    if not s.dhcp:  # virt-launcher calls PreCloudInitIso only for a cloud-init volume
        with hook_errors(sidecar.hook, "PreCloudInitIso"):
            answer = sidecar.hook.pre_cloud_init_iso(api.vmi, cloud_init_data(s), timeout=30.0)
        network_data = parse_network_data(lab, answer)
    cmdline = guest_cmdline(lab, network_data, stay)
    uid = api.vmi["metadata"]["uid"]
    domain = launcher_domain(domain_name(s), uid, lab.image, cmdline, files.console_log, files.channel)
    with hook_errors(sidecar.hook, "OnDefineDomain"):
        domain_xml = sidecar.hook.on_define_domain(domain, api.vmi, timeout=30.0)
    nics = domain_nics(domain_xml)
    files.domain_xml.write_text(domain_xml)
    lab.seen["hook_calls"] = (("define", domain, domain_xml),)
    lab.timed("sidecar_hooks", t0)
    lab.say(
        f"sidecar: network data for {len(network_data.get('ethernets', {}))} ethernets, "
        f"{len(network_data.get('bonds', {}))} bonds; domain has {len(nics)} kvnet NICs"
    )
    return Domain(network_data, cmdline, domain_xml, nics)


def call_hooks_by_peer(lab: Lab, peer: KubeVirtPeer, api: Api, stay: int) -> Domain:
    """KubeVirt's converter makes the domain (``kubevirt-peer domain``); KubeVirt's hook
    manager (``kubevirt-peer hooks``, stage start) collects the sidecar, calls
    PreCloudInitIso with the VMI's cloud-init data and OnDefineDomain as virt-launcher does
    on a start (2-3 calls, each fed the previous answer); the lab then adds to the last
    answer only what the converter cannot know here (:func:`edit_converter_domain`)."""
    files = lab.files
    t0 = time.monotonic()
    converted = peer.domain(api.vmi)
    files.workdir.joinpath("domain-converter.xml").write_text(converted)
    started = peer.hooks_start(files.hooks, api.vmi, converted, timeout=30)
    files.workdir.joinpath("hook-calls.json").write_text(json.dumps(started.calls, indent=1))
    lab.seen["hook_calls"] = tuple((c.get("step", ""), c.get("input", ""), c.get("output", "")) for c in started.calls)
    network_data = parse_network_data(lab, started.cloud_init)
    cmdline = guest_cmdline(lab, network_data, stay)
    edits = LabDomainEdits(lab.image.kernel, lab.image.initrd, cmdline, files.console_log, files.channel)
    domain_xml = edit_converter_domain(started.domain_xml, edits)
    prepare_launcher_paths(files, domain_xml)
    nics = domain_nics(domain_xml)
    files.domain_xml.write_text(domain_xml)
    lab.timed("sidecar_hooks", t0)
    steps = ", ".join(c.get("step", "?") for c in started.calls)
    lab.say(
        f"KubeVirt's hook manager: {len(started.sidecars)} sidecar, "
        f"{'no PreCloudInitIso subscribed' if lab.scenario.dhcp else 'PreCloudInitIso'}, "
        f"OnDefineDomain x{len(started.calls)} "
        f"({steps}); network data for {len(network_data.get('ethernets', {}))} ethernets, "
        f"{len(network_data.get('bonds', {}))} bonds; domain has {len(nics)} kvnet NICs"
    )
    return Domain(network_data, cmdline, domain_xml, nics)


RUN_DIRS = ("/var/run/", "/run/")  # libvirtd's private /run is its workdir's run/ (kvnet/lab/libvirtd.py)


def prepare_launcher_paths(files: RunFiles, domain_xml: str) -> None:
    """The folders of the converter's paths under /run (virt-launcher makes them: the
    serial console's socket, VNC's socket, the cloud-init disk) inside libvirtd's private
    /run, and an empty 1 MiB file where virt-launcher writes the NoCloud ISO (the guest gets
    its network data on the kernel command line, see docs/vm-demo.md)."""
    for path in converter_paths(domain_xml):
        prefix = next((p for p in RUN_DIRS if path.startswith(p)), None)
        if prefix is None:
            continue
        local = files.libvirtd / "run" / path[len(prefix) :]
        local.parent.mkdir(parents=True, exist_ok=True)
        if path.endswith(".iso"):
            with local.open("wb") as f:
                f.truncate(1 << 20)


# ------------------------------------------------------------------------------------
# libvirt and the guest
# ------------------------------------------------------------------------------------


def domains_left(libvirtd: Libvirtd) -> list[str]:
    done = libvirtd.virsh("list", "--all", "--name", check=False)
    names = [n for n in done.stdout.split() if n]
    return [f"libvirt domains still defined: {', '.join(names)}"] if names else []


def boot(lab: Lab, ns: Namespaces, domain: Domain, t_start: float) -> Guest:
    """libvirtd in the pod netns, the domain defined (schema-validated) and started, until
    the guest reports its NICs (``t_start``: when CNI ADD began)."""
    from kvnet.lab.libvirtd import Libvirtd

    files, td = lab.files, lab.teardown
    name = domain_name(lab.scenario)
    t0 = time.monotonic()
    libvirtd = Libvirtd(str(files.libvirtd), netns=ns.pod.name)
    libvirtd.start()
    td.undo(libvirtd.stop)
    with contextlib.suppress(OSError, ValueError):
        td.process_started(int((files.libvirtd / "run" / "libvirtd.pid").read_text().split()[0]))
    td.check(lambda: domains_left(libvirtd))
    lab.timed("libvirtd_start", t0)
    t1 = time.monotonic()
    # virt-launcher defines without schema validation (DomainDefineXML), and KubeVirt's
    # domain does not pass libvirt 9.0's schema (empty <bios/> in <sysinfo>): validated
    # only when the lab made the domain
    libvirtd.define(domain.xml, validate=lab.kubevirt is None)
    td.undo(libvirtd.undefine, name)
    libvirtd.start_domain(name)
    t2 = lab.timed("define_start", t1)
    lab.say(f"domain {name} defined and started in the pod netns ({lab.timings['define_start']:.2f} s)")
    vm = Guest(libvirtd, name, files, td)
    want = len(lab.scenario.nets)
    report = console.wait_for(files.console_log, lambda r: r.has("nics"), 90, alive=vm.alive)
    if report is None:
        raise IOFailure(f"guest did not report its NICs within 90 s (domain {name})")
    lab.timed("guest_nics", t2)
    lab.timings["add_to_nics"] = time.monotonic() - t_start
    lab.say(f"guest up: {len(report.nics)}/{want} NICs reported {lab.timings['guest_nics']:.2f} s after start")
    return vm


def observe(lab: Lab, vm: Guest, domain: Domain, attached: Attached) -> Observed:
    """Wait until the guest configured its links and pinged; a row per network."""
    report = console.wait_for(vm.console_log, lambda r: r.has("ready") or r.has("poweroff"), 90, alive=vm.alive)
    if report is None:
        raise IOFailure("guest did not finish configuring and pinging within 90 s")
    return Observed(
        report, nic_rows(lab.scenario, domain.nics, attached.status, report), guest_errors(report, lab.scenario)
    )


def fail_over(lab: Lab, vm: Guest, domain: Domain, report: console.GuestReport) -> Iterator[Failover]:
    """Per bond: its active member's link down until the bond switches, then back (that
    link up, the other one down); yields the failover as far as it got after each step."""
    s, nics = lab.scenario, domain.nics
    for bond in s.bonds:
        state = report.bonds.get(bond.name)
        before = state.active if state else None
        peer = s.expected_peer(bond.members[0])
        if before is None or before not in nics:
            yield Failover(bond.name, before, None, None)
            continue
        ips = peer.ips if peer else ()
        target = nics[before].target or nics[before].mac
        vm.set_link(target, "down")
        lab.say(f"failover: {bond.name} active member {before}; virsh domif-setlink {target} down")
        after, ping = switched(vm, bond.name, before, ips)
        yield Failover(bond.name, before, after, ping)
        lab.say(f"failover: {bond.name} now on {after or '-'}, ping {' '.join(ips) or '-'}: {'ok' if ping else 'FAIL'}")
        if after is None or after == before or after not in nics:
            continue
        other = nics[after].target or nics[after].mac
        vm.set_link(target, "up")
        time.sleep(3 * bond.miimon / 1000)  # let miimon see the link come back
        vm.set_link(other, "down")
        back, ping_back = switched(vm, bond.name, after, ips)
        yield Failover(bond.name, before, after, ping, back, ping_back)
        lab.say(
            f"failback: {other} down, {target} up: {bond.name} on {back or '-'}, ping: {'ok' if ping_back else 'FAIL'}"
        )


def switched(vm: Guest, bond: str, old: str, ips: Sequence[str]) -> tuple[str | None, bool | None]:
    """Ask the guest until the bond's active member is not ``old`` (20 s); then the pings."""
    deadline = time.monotonic() + 20
    active: str | None = old
    report: console.GuestReport | None = None
    while time.monotonic() < deadline:
        report = vm.command("status")
        now = report.bonds.get(bond)
        active = now.active if now else None
        if active not in (None, old):
            break
        time.sleep(0.2)
    results = [report.last_ping(ip) for ip in ips] if report else []
    return active, (all(results) if results else None)


def power_off(lab: Lab, vm: Guest) -> None:
    with contextlib.suppress(KvnetError, OSError):
        vm.command("poweroff", timeout=10)
    deadline = time.monotonic() + 20
    while vm.alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    if vm.alive():
        vm.libvirtd.destroy_domain(vm.name)
        lab.say("guest did not power off; domain destroyed")
    else:
        lab.say("guest powered off")


# ------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------


def run_in(
    workdir: Path,
    image: guest.GuestImage,
    scenario: Scenario,
    *,
    progress: Progress | None = None,
    netns_factory: NetnsFactory | None = None,
    failover: bool = True,
    stay: int = 120,
    in_process_binding: bool = True,
    kube: KubeCluster | None = None,
    meta: str = "kvnet",
    kubevirt: KubeVirtPeer | None = None,
    while_up: WhileUp | None = None,
) -> DemoResult:
    """Every stage in ``workdir``, then the teardown and its sweep; never raises for a failed
    step (the error, its traceback, the console log and any leftovers are in the result).
    ``kubevirt``: KubeVirt's own code plays KubeVirt's part (None: the lab's stand-ins);
    ``while_up`` runs once the guest has reported and failed over, before it powers off
    (what it raises is the run's error, as a stage's)."""
    files = RunFiles(workdir)
    lab = Lab(
        image=image,
        scenario=scenario,
        files=files,
        say=progress or (lambda _msg: None),
        make_ns=netns_factory or make_netns,
        teardown=Teardown(),
        timings={},
        container_id=uuid.uuid4().hex,
        api_link=f"kvd{uuid.uuid4().hex[:6]}a",
        in_process_binding=in_process_binding,
        kube=kube,
        meta=meta,
        kubevirt=kubevirt,
    )
    observed: Observed | None = None
    bond_failover: Failover | None = None
    console_text = ""
    error: str | None = None
    where = ""
    try:
        with lab.teardown:
            ns = setup_node(lab)
            api = start_api(lab, ns)
            t_start = time.monotonic()
            attached = cni_add(lab, ns, api)
            sidecar = start_sidecar(lab, ns, api, attached)
            domain = call_hooks(lab, sidecar, api, stay)
            vm = boot(lab, ns, domain, t_start)
            observed = observe(lab, vm, domain, attached)
            if failover and scenario.bonds:
                for step in fail_over(lab, vm, domain, observed.report):
                    bond_failover = step  # as far as it got, also when a later step fails
            if while_up is not None:
                while_up(Up(ns, api, attached, vm, observed))
            power_off(lab, vm)
            console_text = console.read_text(files.console_log)
    except KvnetError as err:
        error = f"{type(err).__name__}: {err.msg}" + (f"\n{err.details}" if err.details else "")
        where = traceback.format_exc()
    except Exception as err:  # any failure keeps the console log and runs the leftovers check
        error = f"{type(err).__name__}: {err}"
        where = traceback.format_exc()
    td = lab.teardown
    part = KubeVirtPart("kubevirt-peer" if kubevirt else "lab", **lab.seen)
    return DemoResult(
        scenario,
        rows=observed.rows if observed else [],
        failover=bond_failover,
        timings=dict(lab.timings),
        leftovers=[*td.found, *leftovers(workdir, td.netns, td.root_links, lab.container_id, td.pids)],
        console_text=console_text or console.read_text(files.console_log),
        guest_errors=observed.guest_errors if observed else [],
        error=error,
        netns=list(td.netns),
        cni_log=console.read_text(files.cni_log),
        binding_log=console.read_text(files.binding_log),
        traceback=where,
        kubevirt=part,
    )


def run_scenario(
    guest_dir: str | Path,
    scenario: Scenario | None = None,
    *,
    progress: Progress | None = None,
    failover: bool = True,
    stay: int = 120,
    netns_factory: NetnsFactory | None = None,
    keep_workdir: bool = False,
    in_process_binding: bool = True,
    kube: KubeCluster | None = None,
    meta: str = "kvnet",
    kubevirt: KubeVirtPeer | None = None,
    while_up: WhileUp | None = None,
) -> DemoResult:
    """Run the whole path once in a fresh work folder and return what happened (never raises
    for a failed step: the error, the console log and any leftovers are in the result).

    ``in_process_binding=False`` puts ``"inProcessBinding": false`` in the kvnet-cni config,
    so each ``kvnet-binding`` delegate runs as its own program (what Multus users get); the
    binding NAD then has its own ``logFile``, read into ``DemoResult.binding_log``."""
    if os.geteuid() != 0:
        raise InvalidEnvironment("the VM demo needs root (network namespaces, libvirtd)")
    image = guest.load(Path(guest_dir))
    workdir = Path(tempfile.mkdtemp(prefix="kvnet-vm-"))
    try:
        return run_in(
            workdir,
            image,
            scenario or default_scenario(),
            progress=progress,
            netns_factory=netns_factory,
            failover=failover,
            stay=stay,
            in_process_binding=in_process_binding,
            kube=kube,
            meta=meta,
            kubevirt=kubevirt,
            while_up=while_up,
        )
    finally:
        if not keep_workdir:
            subprocess.run(["rm", "-rf", str(workdir)], check=False)


def demo(
    guest_dir: str | Path,
    out: TextIO = sys.stderr,
    kube: KubeCluster | None = None,
    kubevirt: KubeVirtPeer | None = None,
) -> int:
    """``kvnet demo``'s VM half: progress lines, the guest's NIC table, the failover, 0 on success.
    ``kubevirt``: KubeVirt's own code plays KubeVirt's part; without it the lab's stand-ins do, and
    the first line says so."""
    start = time.monotonic()

    def say(msg: str) -> None:
        print(f"[{time.monotonic() - start:6.1f}s] {msg}", file=out, flush=True)

    part = (
        "KubeVirt's part by KubeVirt v1.8.4's own code (kubevirt-peer)"
        if kubevirt
        else "KubeVirt's part by the lab's stand-ins (kubevirt-peer not built: `make peers`)"
    )
    say(f"VM demo: a VM in a pod gets one NIC per attachment (real plugins, libvirtd, QEMU TCG); {part}")
    results = []
    for scenario in (default_scenario(), dhcp_scenario()):
        if scenario.dhcp:
            say("second VM: no cloud-init volume, the guest only runs DHCP clients; kvnet-guestnet answers")
        try:
            result = run_scenario(guest_dir, scenario, progress=say, kube=kube, kubevirt=kubevirt)
        except KvnetError as err:
            print(f"VM demo cannot run: {err.msg}", file=out)
            return 1
        print(summary(result), file=out)
        results.append(result)
    ok = all(r.ok for r in results)
    print(f"VM demo {'passed' if ok else 'FAILED'} in {time.monotonic() - start:.0f} s", file=out)
    return 0 if ok else 1


__all__ = [
    "Lab",
    "demo",
    "link_leftovers",
    "run_in",
    "run_scenario",
    "sh",
]
