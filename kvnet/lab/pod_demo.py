"""The pod demo: ``kvnet-cni`` gives a pod four interfaces, exactly as a runtime would call it.

A "node" network namespace stands in for the node (its bridges, the macvlan uplink and
portmap's iptables chains live and die with it) and a "pod" namespace for the pod
sandbox. The Kubernetes API stand-in (:mod:`kvnet.lab.apiserver`) serves the example
pod and NADs from ``examples/pod-demo``; a process inside the node namespace cannot
reach the root namespace's 127.0.0.1, so the node gets a veth to the root namespace and
the stand-in listens on its root-side address. ``kvnet-cni`` then runs inside the node
namespace with ``CNI_NETNS`` pointing at the pod namespace, env + stdin like a runtime.

:class:`PodLab` is the reusable part (the netns tests and the benchmark drive it with
namespaces made by their own fixtures); :func:`run` is the demo.
"""

from __future__ import annotations

import copy
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import yaml

from kvnet.lab.apiserver import ApiStandIn
from kvnet.lab.kube import KubeCluster
from kvnet.lab.netns import IP, NetnsLike, in_ns, namespaces
from kvnet.lab.netns import ip as _ip
from kvnet.lab.teardown import cni_leftovers, lease_files, report_groups
from kvnet.meta.shim import standalone_script

PLUGIN_DIR = "/usr/lib/cni"
NETWORK_STATUS = "k8s.v1.cni.cncf.io/network-status"


def examples_dir() -> Path:
    """``examples/pod-demo`` of the source tree."""
    return Path(__file__).resolve().parents[2] / "examples" / "pod-demo"


def make_bin_dir(folder: Path, kvnet_bin_dir: str, plugin_dir: str = PLUGIN_DIR) -> Path:
    """A CNI bin dir of symlinks: the reference plugins plus kvnet's CNI programs."""
    folder.mkdir(parents=True, exist_ok=True)
    for plugin in sorted(os.listdir(plugin_dir)):
        link = folder / plugin
        if not link.exists():
            link.symlink_to(os.path.join(plugin_dir, plugin))
    for script in ("kvnet-cni", "kvnet-binding"):
        src = os.path.join(kvnet_bin_dir, script)
        if os.path.exists(src) and not (folder / script).exists():
            (folder / script).symlink_to(src)
    shim = folder / "kvnet-shim"  # as kvnet install writes it: standalone, for python -I -S
    shim.write_text(
        standalone_script(
            os.path.join(kvnet_bin_dir, "python")
            if os.path.exists(os.path.join(kvnet_bin_dir, "python"))
            else sys.executable
        )
    )
    shim.chmod(0o755)
    return folder


def set_host_local_data_dir(conf: Mapping[str, Any], data_dir: str) -> dict[str, Any]:
    """The conf (or conflist) with every host-local IPAM keeping its leases in ``data_dir``."""
    out = copy.deepcopy(dict(conf))
    for plugin in out.get("plugins", [out]) if not out.get("type") else [out]:
        ipam = plugin.get("ipam") if isinstance(plugin, dict) else None
        if isinstance(ipam, dict) and ipam.get("type") == "host-local":
            ipam["dataDir"] = data_dir
    return out


def patch_nad(nad: Mapping[str, Any], data_dir: str) -> dict[str, Any]:
    out = copy.deepcopy(dict(nad))
    config = out.get("spec", {}).get("config")
    if config:
        out["spec"]["config"] = json.dumps(set_host_local_data_dir(json.loads(config), data_dir))
    return out


def leases(data_dir: Path) -> list[str]:
    """host-local's lease files (not its lock or last-reserved bookkeeping)."""
    return lease_files(data_dir)


class PodLab:
    """A node netns reachable from the root netns, an API server, temp CNI folders.

    The API server is the real one when ``kube`` is given (shared, so the lab deletes what it
    created when it stops), else a fresh API stand-in (docs/api-standin.md says when)."""

    def __init__(
        self,
        node: NetnsLike,
        pod: NetnsLike,
        workdir: Path,
        *,
        kvnet_bin_dir: str,
        plugin_dir: str = PLUGIN_DIR,
        kube: KubeCluster | None = None,
    ) -> None:
        self.node = node
        self.pod = pod
        self.workdir = workdir
        self.bin_dir = make_bin_dir(workdir / "bin", kvnet_bin_dir, plugin_dir)
        self.cni_dir = workdir / "cni"
        self.data_dir = workdir / "ipam"
        self.kubeconfig = workdir / "kubeconfig"
        tag = uuid.uuid4().hex[:6]
        self.root_veth, self.node_veth = f"kvr{tag}", f"kvn{tag}"
        octet = random.randint(1, 250)
        quad = random.randint(0, 63) * 4
        self.root_ip, self.node_ip = f"169.254.{octet}.{quad + 1}", f"169.254.{octet}.{quad + 2}"
        self.kube = kube
        self.api: KubeCluster | ApiStandIn = kube if kube is not None else ApiStandIn(self.root_ip)
        self._made: list[tuple[str, str, str]] = []  # (kind, namespace, name) created on a shared server

    @property
    def real_api(self) -> bool:
        return self.kube is not None

    # --- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        _ip("link", "add", self.root_veth, "type", "veth", "peer", "name", self.node_veth)
        _ip("link", "set", self.node_veth, "netns", self.node.name)
        _ip("addr", "add", f"{self.root_ip}/30", "dev", self.root_veth)
        _ip("link", "set", self.root_veth, "up")
        in_ns(self.node, IP, "addr", "add", f"{self.node_ip}/30", "dev", self.node_veth)
        in_ns(self.node, IP, "link", "set", self.node_veth, "up")
        in_ns(self.node, IP, "link", "set", "lo", "up")
        if isinstance(self.api, ApiStandIn):
            self.api.start()
        else:
            self.api.route_from(self.node, self.root_ip)
        self.api.write_kubeconfig(str(self.kubeconfig))

    def stop(self) -> None:
        if isinstance(self.api, ApiStandIn):
            self.api.stop()
        else:
            for kind, namespace, name in reversed(self._made):
                self.api.delete(kind, namespace, name)
            self._made.clear()
        _ip("link", "del", self.root_veth, check=False)

    def api_down(self) -> None:
        """The API server becomes unreachable from the node (the stand-in stops; the real,
        shared one loses its route from the node netns: connections fail at once)."""
        if isinstance(self.api, ApiStandIn):
            self.api.stop()
        else:
            in_ns(self.node, IP, "route", "del", f"{self.api.address}/32", check=False)

    def __enter__(self) -> PodLab:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _load(self, objects: Iterable[Mapping[str, Any]]) -> Sequence[Mapping[str, Any]]:
        """Create ``objects`` on the lab's API server; what the server made of them."""
        if isinstance(self.api, ApiStandIn):
            docs = [dict(o) for o in objects]
            self.api.load(docs)
            return [
                self.api.get(str(d["kind"]), d["metadata"].get("namespace") or "default", d["metadata"]["name"]) or d
                for d in docs
            ]
        made = self.api.load(objects)
        for obj in made:
            meta = obj["metadata"]
            self._made.append((str(obj["kind"]), meta.get("namespace") or "default", meta["name"]))
        return made

    # --- content -------------------------------------------------------------------------

    def load(self, objects: Iterable[Mapping[str, Any]]) -> Sequence[Mapping[str, Any]]:
        """Create ``objects`` (removed again when the lab stops); what the server made of them."""
        return self._load(objects)

    def load_examples(self, folder: Path | None = None) -> None:
        folder = folder or examples_dir()
        nads = [
            patch_nad(doc, str(self.data_dir)) for doc in yaml.safe_load_all((folder / "nads.yaml").read_text()) if doc
        ]
        self._load(nads)
        self._load([d for d in yaml.safe_load_all((folder / "pod.yaml").read_text()) if d])

    def add_nad(self, name: str, config: Mapping[str, Any], namespace: str = "default", **annotations: str) -> None:
        meta: dict[str, Any] = {"name": name, "namespace": namespace}
        if annotations:
            meta["annotations"] = dict(annotations)
        conf = set_host_local_data_dir(config, str(self.data_dir))
        self._load([{"kind": "NetworkAttachmentDefinition", "metadata": meta, "spec": {"config": json.dumps(conf)}}])

    def add_pod(
        self,
        name: str,
        networks: str | None = None,
        namespace: str = "default",
        uid: str | None = None,
        node: str | None = None,
    ) -> str:
        """Create the pod (bound to ``node`` when given); its UID (the real server makes its
        own: ``uid`` only reaches the stand-in)."""
        notes = {"k8s.v1.cni.cncf.io/networks": networks} if networks else {}
        meta: dict[str, Any] = {"name": name, "namespace": namespace, "annotations": notes}
        if not self.real_api:
            meta["uid"] = uid or str(uuid.uuid4())
        spec: dict[str, Any] = {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.9"}]}
        if node is not None:
            spec["nodeName"] = node
        pod = {"kind": "Pod", "metadata": meta, "spec": spec}
        return str(self._load([pod])[0]["metadata"]["uid"])

    def config(self, delegates: Iterable[Mapping[str, Any]], **extra: Any) -> dict[str, Any]:
        """A kvnet config for this lab (temp cniDir, this bin dir, the stand-in's kubeconfig)."""
        conf: dict[str, Any] = {
            "cniVersion": "1.0.0",
            "name": "kvnet-lab",
            "type": "kvnet",
            "kubeconfig": str(self.kubeconfig),
            "cniDir": str(self.cni_dir),
            "binDir": str(self.bin_dir),
            "confDir": str(self.workdir / "conf"),
            "logToStderr": True,
            "logLevel": "verbose",
            "delegates": [set_host_local_data_dir(d, str(self.data_dir)) for d in delegates],
        }
        conf.update(extra)
        return conf

    def status(self, name: str, namespace: str = "default") -> list[dict[str, Any]] | None:
        pod = self.api.get("Pod", namespace, name)
        value = ((pod or {}).get("metadata", {}).get("annotations") or {}).get(NETWORK_STATUS)
        return json.loads(value) if value else None

    # --- calling the CNI like a runtime ----------------------------------------------------

    def cni(
        self,
        command: str,
        config: Mapping[str, Any],
        *,
        container: str,
        pod: str,
        uid: str = "",
        namespace: str = "default",
        ifname: str = "eth0",
        binary: str = "kvnet-cni",
        netns: str | None = None,
        timeout: float = 120,
        in_node: bool = True,
    ) -> tuple[int, Any, str]:
        """Run ``binary`` inside the node netns (or, ``in_node=False``, where we are: enough
        for ``kvnet-shim``, which only talks to its daemon); (exit status, stdout JSON or None, stderr)."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": container,
            "CNI_NETNS": self.pod.path if netns is None else netns,
            "CNI_IFNAME": ifname,
            "CNI_PATH": str(self.bin_dir),
            "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={pod};"
            f"K8S_POD_INFRA_CONTAINER_ID={container};K8S_POD_UID={uid}",
        }
        prefix = [IP, "netns", "exec", self.node.name] if in_node else []
        proc = subprocess.run(
            [*prefix, str(self.bin_dir / binary)],
            input=json.dumps(config).encode(),
            env=env,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        out = proc.stdout.decode()
        return proc.returncode, json.loads(out) if out.strip() else None, proc.stderr.decode()

    def pod_addresses(self) -> list[dict[str, Any]]:
        """``ip -j addr`` in the pod netns."""
        links: list[dict[str, Any]] = json.loads(in_ns(self.pod, IP, "-j", "addr").stdout or "[]")
        return links

    def pod_links(self) -> list[str]:
        return [link["ifname"] for link in json.loads(in_ns(self.pod, IP, "-j", "link").stdout or "[]")]

    def leftovers(self) -> dict[str, list[str]]:
        """Everything a clean DEL must have removed."""
        return cni_leftovers(self.pod_links(), self.data_dir, self.cni_dir)


# ------------------------------------------------------------------------------------
# the demo
# ------------------------------------------------------------------------------------


def _kvnet_bin_dir() -> str:
    found = shutil.which("kvnet-cni")
    return os.path.dirname(found) if found else os.path.dirname(sys.executable)


def _show_interfaces(lab: PodLab, out: TextIO) -> None:
    for link in lab.pod_addresses():
        addrs = ", ".join(
            f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", []) if a.get("scope") != "link"
        )
        out.write(f"  {link['ifname']:<8} {link.get('address', ''):<18} {addrs}\n")


def run(out: TextIO = sys.stderr, kube: KubeCluster | None = None, plugin_dir: str = PLUGIN_DIR) -> int:
    """The pod demo (on ``kube``, the real API server, when given; else on a fresh API
    stand-in); returns 0 when the pod got its interfaces and DEL left nothing behind."""
    if os.geteuid() != 0:
        out.write("kvnet demo (pod): needs root to create network namespaces\n")
        return 1
    if not (examples_dir() / "pod.yaml").exists():
        out.write(f"kvnet demo (pod): the examples are not at {examples_dir()} (run it from a source checkout)\n")
        return 1
    container = "demo" + uuid.uuid4().hex[:12]
    with (
        tempfile.TemporaryDirectory(prefix="kvnet-demo-") as tmp,
        namespaces("kvdemo-node", "kvdemo-pod") as (node, pod),
    ):
        with PodLab(node, pod, Path(tmp), kvnet_bin_dir=_kvnet_bin_dir(), plugin_dir=plugin_dir, kube=kube) as lab:
            lab.load_examples()
            pod_uid = str((lab.api.get("Pod", "default", "demo") or {}).get("metadata", {}).get("uid", ""))
            in_ns(node, IP, "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink1")
            in_ns(node, IP, "link", "set", "uplink0", "up")
            in_ns(node, IP, "link", "set", "uplink1", "up")
            base = json.loads((examples_dir() / "kvnet.conf").read_text())
            conf = lab.config(base["delegates"], name=base["name"])
            what = "kube-apiserver" if lab.real_api else "API stand-in (not a real API server)"
            out.write(f"{what} at {lab.api.url}; node netns {node.name}, pod netns {pod.name}\n")
            out.write("ADD: kvnet-cni with the pod default/demo (networks: blue@blue0, uplink, p2p@p2p0)\n")
            rc, result, err = lab.cni("ADD", conf, container=container, pod="demo", uid=pod_uid)
            if rc != 0:
                out.write(f"ADD failed ({rc}): {json.dumps(result)}\n{err}")
                lab.cni("DEL", conf, container=container, pod="demo", uid=pod_uid)
                return 1
            out.write("pod interfaces:\n")
            _show_interfaces(lab, out)
            routes = in_ns(pod, IP, "route").stdout.strip().splitlines()
            out.write("pod routes:\n" + "".join(f"  {r}\n" for r in routes))
            out.write("network-status annotation:\n")
            out.write(json.dumps(lab.status("demo"), indent=2) + "\n")
            from kvnet.lab import policy_demo

            skip = policy_demo.skip_reason(lab)
            if skip:
                out.write(f"policy: skipped: {skip}\n")
            elif not policy_demo.run(lab, conf, pod, out):
                lab.cni("DEL", conf, container=container, pod="demo", uid=pod_uid)
                out.write("policy: the connects did not go as the policy says\n")
                return 1
            out.write("DEL\n")
            rc, result, err = lab.cni("DEL", conf, container=container, pod="demo", uid=pod_uid)
            if rc != 0:
                out.write(f"DEL failed ({rc}): {json.dumps(result)}\n{err}")
                return 1
            left = lab.leftovers()
            out.write(report_groups(left))
            return 0 if not any(left.values()) else 1
