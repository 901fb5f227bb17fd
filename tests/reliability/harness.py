"""What the reliability tests share: a lab on the real API server with recording and slow
delegates, kvnet-cni and kvnet daemon started in the background, and the leak count.

Every test ends by counting what is left behind for the containers it used (links in
the pod and the node netns, host-local leases, cache files, processes that carry the
container ID) and asserts the count is zero. The figures of a run go, one JSON line per
test, to the file named by ``KVNET_RELIABILITY_REPORT`` (docs/reliability.md lists them).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvnet.lab import recorder
from kvnet.lab.netns import IP, NetnsLike, in_ns
from kvnet.lab.pod_demo import PodLab
from kvnet.lab.teardown import cache_files, lease_files
from kvnet.meta.shim import request as unix_request

SEED = 1212  # "random" kill points are drawn from random.Random(f"{SEED}-<test>"): runs repeat


def bridge(name: str, subnet: str, **extra: Any) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "type": "bridge",
        "bridge": name,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]]},
        **extra,
    }


def slow_bridge(name: str, subnet: str, *, add: float = 0.0, delete: float = 0.0, fork: bool = False) -> dict[str, Any]:
    """A bridge delegate that sleeps before it does its work (kvnet.lab.recorder ``then``)."""
    return {
        **bridge(name, subnet),
        "type": "recorder",
        "then": "bridge",
        "slow": {"ADD": add, "DEL": delete},
        "fork": fork,
    }


@dataclass
class Tally:
    """Tries, faults injected and leaks found for one fault kind."""

    kind: str
    tries: int = 0
    faults: int = 0
    leaks: int = 0
    notes: dict[str, Any] = field(default_factory=dict)

    def report(self) -> None:
        path = os.environ.get("KVNET_RELIABILITY_REPORT")
        if path:
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(self.__dict__) + "\n")


class RelLab:
    """A :class:`PodLab` with the recorder's plugins in its bin dir and leak accounting."""

    def __init__(self, lab: PodLab, plugin_dir: str) -> None:
        self.lab = lab
        recorder.install(lab.bin_dir, plugin_dir)
        self.daemon: subprocess.Popen[bytes] | None = None
        self.socket = str(lab.workdir / "run" / "kvnet.sock")
        self._daemon_log = lab.workdir / "daemon.log"

    # --- calls in the background ------------------------------------------------------

    def env(self, command: str, container: str, pod: str, uid: str, netns: str | None = None) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": container,
            "CNI_NETNS": netns or self.lab.pod.path,
            "CNI_IFNAME": "eth0",
            "CNI_PATH": str(self.lab.bin_dir),
            "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod};"
            f"K8S_POD_INFRA_CONTAINER_ID={container};K8S_POD_UID={uid}",
        }

    def start(
        self,
        command: str,
        conf: Mapping[str, Any],
        *,
        container: str,
        pod: str,
        uid: str,
        binary: str = "kvnet-cni",
        netns: str | None = None,
    ) -> subprocess.Popen[bytes]:
        """The CNI binary running one call, as a runtime starts it (``ip netns exec`` execs
        it, so the pid is kvnet's own); stdin already written and closed."""
        prefix = [IP, "netns", "exec", self.lab.node.name] if binary == "kvnet-cni" else []
        proc = subprocess.Popen(
            [*prefix, str(self.lab.bin_dir / binary)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env(command, container, pod, uid, netns),
        )
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(conf).encode())
        proc.stdin.close()
        proc.stdin = None  # written: communicate() only reads
        return proc

    @staticmethod
    def finish(proc: subprocess.Popen[bytes], timeout: float = 120) -> tuple[int, Any, str]:
        out, err = proc.communicate(timeout=timeout)
        text = out.decode()
        return proc.returncode, json.loads(text) if text.strip() else None, err.decode()

    # --- the daemon -------------------------------------------------------------------

    def start_daemon(self, *extra: str) -> None:
        kvnet = os.path.join(os.path.dirname(os.path.realpath(self.lab.bin_dir / "kvnet-cni")), "kvnet")
        log = self._daemon_log.open("ab")
        self.daemon = subprocess.Popen(
            [
                IP,
                "netns",
                "exec",
                self.lab.node.name,
                kvnet,
                "daemon",
                "--socket",
                self.socket,
                "--api",
                "light",
                *extra,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.daemon.poll() is None, self._daemon_log.read_text()[-3000:]
            try:
                if unix_request(self.socket, "GET", "/healthz", timeout=2)[0] == 200:
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        raise AssertionError("kvnet daemon did not come up")

    def signal_daemon(self, sig: int, *, wait: float = 60) -> int | None:
        proc = self.daemon
        if proc is None or proc.poll() is not None:
            return None if proc is None else proc.returncode
        os.kill(proc.pid, sig)
        proc.wait(timeout=wait)
        self.daemon = None
        return proc.returncode

    def daemon_usage(self) -> tuple[int, int]:
        """The daemon's resident memory (kB) and open file descriptors."""
        assert self.daemon is not None
        pid = self.daemon.pid
        rss = 0
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
        return rss, len(os.listdir(f"/proc/{pid}/fd"))

    def stop_daemon(self) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            os.killpg(self.daemon.pid, signal.SIGKILL)
            self.daemon.wait()
        self.daemon = None

    # --- what is left behind ----------------------------------------------------------

    def node_links(self) -> list[str]:
        """Links in the node netns a DEL must have removed: all but lo, the lab's uplink and
        the bridges (the bridge plugin keeps its bridge)."""
        links = json.loads(in_ns(self.lab.node, IP, "-d", "-j", "link").stdout or "[]")
        return [
            link["ifname"]
            for link in links
            if link["ifname"] not in ("lo", self.lab.node_veth)
            and (link.get("linkinfo") or {}).get("info_kind") != "bridge"
        ]

    def leaks(self, containers: Iterable[str], pods: Iterable[NetnsLike] = ()) -> dict[str, list[str]]:
        """Everything left behind for ``containers``: pod links (in the lab's pod netns and
        ``pods``), node links, host-local leases, cache files, processes carrying one of
        the container IDs."""
        ids = set(containers)
        pod_links = [f"{self.lab.pod.name}/{n}" for n in self.lab.pod_links() if n != "lo"]
        for ns in pods:
            links = json.loads(in_ns(ns, IP, "-j", "link").stdout or "[]")
            pod_links += [f"{ns.name}/{link['ifname']}" for link in links if link["ifname"] != "lo"]
        return {
            "pod links": pod_links,
            "node links": self.node_links(),
            "host-local leases": lease_files(self.lab.data_dir),
            "cache files": cache_files(self.lab.cni_dir),
            "processes": processes_of(ids),
        }


def processes_of(containers: set[str]) -> list[str]:
    """Processes whose environment has ``CNI_CONTAINERID`` set to one of ``containers``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            env = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        for item in env:
            if item.startswith(b"CNI_CONTAINERID=") and item[16:].decode(errors="replace") in containers:
                found.append(f"pid {entry}: {cmdline.strip()}")
    return found


def count(leaks: Mapping[str, list[str]]) -> int:
    return sum(len(v) for v in leaks.values())


def wait_no_processes(containers: set[str], timeout: float = 10.0) -> None:
    """Give processes that were just killed the time to be reaped."""
    deadline = time.monotonic() + timeout
    while processes_of(containers) and time.monotonic() < deadline:
        time.sleep(0.05)
