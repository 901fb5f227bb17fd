"""Thick mode in the lab: Multus's ``multus-daemon`` and ``kvnet daemon`` in a node netns.

Both daemons run the delegates themselves, so they run inside the lab's node netns (where
the bridges and the node ends of the veths belong), started with ``ip netns exec``. That
also gives each a private mount namespace (``ip netns exec`` unshares it and makes ``/``
a slave), in which :class:`PrivateMounts` bind-mounts the lab's folders over the fixed
paths the programs use, so nothing of the host is written:

- ``/run/k8s.cni.cncf.io`` (device-info files: Multus has no key to move them);
- for ``multus-daemon`` only, ``/run/secrets/kubernetes.io/serviceaccount``: the daemon
  talks to the API only through the in-cluster configuration (``k8sclient.InClusterK8sClient``:
  ``KUBERNETES_SERVICE_HOST``/``_PORT`` plus the ServiceAccount token and CA at that path).

How ``multus-daemon`` (v4.3.0) is made to run here, from its source:

- ``-config <file>``, the daemon config JSON (``server.LoadDaemonNetConf`` and
  ``config.ParseMultusConfig`` read the same file): ``socketDir`` (the socket is
  ``<socketDir>/multus.sock``), ``logLevel``, ``logToStderr``, ``cniVersion`` and
  ``multusConfigFile: "auto"`` with ``multusAutoconfigDir``/``cniConfigDir`` in the lab.
  Only ``auto`` keeps it running: with a user-provided file ``main`` has nothing to wait
  for and exits at once. ``auto`` needs a primary CNI config in ``multusAutoconfigDir``
  (a loopback conf here) and writes ``00-multus.conf`` into ``cniConfigDir``.
- Every key of the daemon config is copied over each call's config
  (``overrideCNIConfigWithServerConfig``), ``cniVersion`` included: the lab's daemon config
  therefore carries only keys that leave a call's meaning alone.
- ``MULTUS_NODE_NAME``: the pod informer watches only pods with that ``spec.nodeName``; a
  pod it does not see is found by a live GET after 2.5 s of polling, but its network-status
  is then not written (``SetNetworkStatus`` reads the pod from the informer and tolerates
  "not found"). Lab pods for thick mode therefore name the node.
- RBAC as Multus's own manifest (``deployments/multus-daemonset-thick.yml``): the
  ServiceAccount ``kube-system/multus`` with the ClusterRole ``multus``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kvnet.core.errors import InvalidEnvironment
from kvnet.lab.kube import KubeCluster, peer_binary
from kvnet.lab.netns import IP, NetnsLike
from kvnet.meta.shim import request as unix_request

DEVINFO_ROOT = "/run/k8s.cni.cncf.io"
SERVICE_ACCOUNT_DIR = "/run/secrets/kubernetes.io/serviceaccount"
NODE_NAME = "kvnet-node"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0

_BIND_AND_EXEC = 'set -e; while [ "$1" != "--" ]; do mount --bind "$1" "$2"; shift 2; done; shift; exec "$@"'


class PrivateMounts:
    """Bind mounts made in each program's private mount namespace, never on the host.

    A mount point must exist: a target missing on the host is created as an empty folder
    (under ``/run``, a tmpfs) and removed again by :meth:`cleanup`."""

    def __init__(self, mounts: Sequence[tuple[Path, str]] = ()) -> None:
        self.mounts: list[tuple[Path, str]] = []
        self._made: list[Path] = []
        for source, target in mounts:
            self.add(source, target)

    def add(self, source: Path, target: str) -> None:
        source.mkdir(parents=True, exist_ok=True)
        missing = [p for p in [Path(target), *Path(target).parents] if not p.exists()]
        Path(target).mkdir(parents=True, exist_ok=True)
        self._made += missing  # deepest first
        self.mounts.append((source, target))

    def argv(self, node: NetnsLike, command: Sequence[str]) -> list[str]:
        """``command`` run inside ``node`` with these mounts in its own mount namespace."""
        pairs = [str(x) for source, target in self.mounts for x in (source, target)]
        return [IP, "netns", "exec", node.name, "sh", "-c", _BIND_AND_EXEC, "sh", *pairs, "--", *command]

    def cleanup(self) -> None:
        for folder in self._made:
            try:
                folder.rmdir()
            except OSError:
                pass
        self._made.clear()


class _NodeDaemon:
    """A long-lived program in the node netns: started, waited for, stopped by its id."""

    name = "daemon"

    def __init__(self, node: NetnsLike, workdir: Path, mounts: PrivateMounts) -> None:
        self.node = node
        self.workdir = workdir
        self.mounts = mounts
        self.log_path = workdir / f"{self.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> str:
        raise NotImplementedError

    def _spawn(self, command: Sequence[str], env: Mapping[str, str], mounts: PrivateMounts) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                mounts.argv(self.node, command),
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise InvalidEnvironment(f"{self.name} exited with status {self._proc.returncode}", self.log_tail())
            if os.path.exists(self.socket):
                try:
                    if unix_request(self.socket, "GET", "/healthz", timeout=2)[0] == 200:
                        return
                except (OSError, ValueError):
                    pass
            time.sleep(0.05)
        self.stop()
        raise InvalidEnvironment(f"{self.name} did not answer on {self.socket}", self.log_tail())

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


MULTUS_RBAC: tuple[Mapping[str, Any], ...] = (
    {"kind": "ServiceAccount", "apiVersion": "v1", "metadata": {"name": "multus", "namespace": "kube-system"}},
    {
        "kind": "ClusterRole",
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "metadata": {"name": "multus"},
        "rules": [
            {"apiGroups": ["k8s.cni.cncf.io"], "resources": ["*"], "verbs": ["*"]},
            {"apiGroups": [""], "resources": ["pods", "pods/status"], "verbs": ["get", "list", "update", "watch"]},
            {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch", "update"]},
        ],
    },
    {
        "kind": "ClusterRoleBinding",
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "metadata": {"name": "multus"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "multus"},
        "subjects": [{"kind": "ServiceAccount", "name": "multus", "namespace": "kube-system"}],
    },
)


class MultusDaemon(_NodeDaemon):
    """``multus-daemon`` v4.3.0 in the node netns, on the lab's real API server."""

    name = "multus-daemon"

    def __init__(
        self,
        kube: KubeCluster,
        node: NetnsLike,
        workdir: Path,
        mounts: PrivateMounts,
        *,
        cni_version: str = "1.0.0",
        node_name: str = NODE_NAME,
    ) -> None:
        super().__init__(node, workdir, mounts)
        self.kube = kube
        self.node_name = node_name
        self.socket_dir = workdir / "run"
        self._own_mounts: PrivateMounts | None = None
        self.config: dict[str, Any] = {
            "cniVersion": cni_version,
            "logLevel": "verbose",
            "logToStderr": True,
            "socketDir": str(self.socket_dir),
            "multusConfigFile": "auto",
            "multusAutoconfigDir": str(workdir / "autoconf"),
            "cniConfigDir": str(workdir / "net.d"),
        }

    @property
    def socket(self) -> str:
        return str(self.socket_dir / "multus.sock")

    def start(self) -> None:
        binary = peer_binary("multus-daemon")
        for obj in MULTUS_RBAC:
            self.kube.apply(obj)
        account = self.workdir / "serviceaccount"
        account.mkdir(parents=True, exist_ok=True)
        (account / "token").write_text(self.kube.token("multus", "kube-system", seconds=4 * 3600))
        (account / "ca.crt").write_text(self.kube.ca_file.read_text())
        (account / "namespace").write_text("kube-system")
        autoconf = Path(self.config["multusAutoconfigDir"])
        autoconf.mkdir(parents=True, exist_ok=True)
        (autoconf / "10-primary.conf").write_text(
            json.dumps({"cniVersion": self.config["cniVersion"], "name": "primary", "type": "loopback"})
        )
        Path(self.config["cniConfigDir"]).mkdir(parents=True, exist_ok=True)
        config_file = self.workdir / "daemon-config.json"
        config_file.write_text(json.dumps(self.config, indent=2))
        self._own_mounts = PrivateMounts([*self.mounts.mounts, (account, SERVICE_ACCOUNT_DIR)])
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "KUBERNETES_SERVICE_HOST": self.kube.address,
            "KUBERNETES_SERVICE_PORT": str(self.kube.port),
            "MULTUS_NODE_NAME": self.node_name,
        }
        self._spawn([str(binary), "-config", str(config_file)], env, self._own_mounts)

    def stop(self) -> None:
        super().stop()
        if self._own_mounts is not None:
            self._own_mounts.cleanup()


class KvnetDaemon(_NodeDaemon):
    """``kvnet daemon`` in the node netns (the kubeconfig comes with each call's config)."""

    name = "kvnet-daemon"

    def __init__(
        self,
        node: NetnsLike,
        workdir: Path,
        mounts: PrivateMounts,
        *,
        kvnet_bin_dir: str,
        args: Sequence[str] = (),
        node_name: str = NODE_NAME,
    ) -> None:
        super().__init__(node, workdir, mounts)
        self.kvnet = os.path.join(kvnet_bin_dir, "kvnet")
        self.args = tuple(args)  # more ``kvnet daemon`` options
        self.node_name = node_name  # $NODE_NAME: its pod cache follows this node's pods, as multus-daemon's informer

    @property
    def socket(self) -> str:
        return str(self.workdir / "run" / "kvnet.sock")

    def start(self) -> None:
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "NODE_NAME": self.node_name}
        self._spawn([self.kvnet, "daemon", "--socket", self.socket, *self.args], env, self.mounts)
