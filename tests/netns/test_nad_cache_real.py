"""The daemon's watch-backed NAD and pod caches (kvnet.meta.watchcache) on the real API server (root).

- in process, over the light client: the first list, then every create, update and delete
  of a NAD arrives by the watch and is served from memory (no GET); a NAD the cache does
  not hold is a GET; the server ending the watch (its timeoutSeconds) brings a new list;
- ``kvnet daemon`` under the kvnet ServiceAccount with deploy/rbac.yaml and
  deploy/rbac-thick.yaml: an ADD makes no NAD GET at all (the audit log shows the list
  and the watch instead), and a NAD changed between two ADDs is used as changed;
- with deploy/rbac.yaml alone the list is refused, the daemon logs it once and reads every
  NAD by GET, and the ADD succeeds as before;
- the pod cache, in process: only the pods bound to its node, followed through a delete and
  a re-create under the same name; and ``kvnet daemon`` with ``$NODE_NAME``: an ADD of a pod
  of its node makes no pod GET (its status PUT carries the watched copy), and a pod created
  again under the same name is ADDed with its new UID.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from test_rbac_real import (
    ACCOUNT,
    BLUE,
    NAMESPACE,
    RBAC,
    RBAC_THICK,
    USER,
    _wait_healthy,
    apply_strict,
    install_kvnet,
    manifest,
    role_rules,
    the_role,
    wait_authorized,
    wait_for,
    write_token,
)

from kvnet.lab.kube import KubeCluster
from kvnet.lab.pod_demo import IP, PodLab
from kvnet.meta import k8s
from kvnet.meta.watchcache import NadCache, PodCache

pytestmark = pytest.mark.root

NAD_RESOURCE = ("k8s.cni.cncf.io", "network-attachment-definitions")
POD_RESOURCE = ("", "pods")
NODE = "kvnet-cache-node"


class CountingApi:
    """The light client, counting the NAD GETs that reach it (the cache's misses)."""

    def __init__(self, api: k8s.LightApi) -> None:
        self.api = api
        self.gets: list[tuple[str, str]] = []

    def get_nad(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        self.gets.append((namespace, name))
        return self.api.get_nad(namespace, name)

    def get_pod(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self.api.get_pod(namespace, name)

    def set_network_status(self, namespace: str, name: str, value: str) -> None:
        self.api.set_network_status(namespace, name, value)


def nad_object(namespace: str, name: str, subnet: str) -> dict[str, Any]:
    conf = {
        "cniVersion": "1.0.0",
        "type": "bridge",
        "bridge": "kvt-cache",
        "ipam": {"type": "host-local", "subnet": subnet},
    }
    return {
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"config": json.dumps(conf)},
    }


def subnet_of(nad: Mapping[str, Any] | None) -> str | None:
    return json.loads(nad["spec"]["config"])["ipam"]["subnet"] if nad else None


def eventually(what: str, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    wait_for(what, predicate, timeout)


def test_the_cache_follows_the_real_watch(kube: KubeCluster) -> None:
    for ns in ("cache-a", "cache-b"):
        kube.ensure_namespace(ns)
    kube.create(nad_object("cache-a", "blue", "10.91.0.0/24"))
    conf = k8s.load_kubeconfig(str(kube.admin_kubeconfig))
    api = CountingApi(k8s.LightApi(conf, kubeconfig=str(kube.admin_kubeconfig)))
    source = k8s.LightApi(conf, kubeconfig=str(kube.admin_kubeconfig))
    cache = NadCache(api, source, watch_seconds=2)
    try:
        assert cache.wait_synced(10)
        assert subnet_of(cache.get_nad("cache-a", "blue")) == "10.91.0.0/24" and api.gets == []

        # an update, a create in another namespace and a delete all arrive by the watch
        current = kube.get("NetworkAttachmentDefinition", "cache-a", "blue")
        assert current is not None
        changed = copy.deepcopy(current)
        changed["spec"] = nad_object("cache-a", "blue", "10.91.1.0/24")["spec"]
        kube.call("PUT", "/apis/k8s.cni.cncf.io/v1/namespaces/cache-a/network-attachment-definitions/blue", changed)
        kube.create(nad_object("cache-b", "green", "10.92.0.0/24"))
        eventually(
            "the update and the new NAD are in the cache",
            lambda: (
                subnet_of(cache.cached("cache-a", "blue")) == "10.91.1.0/24"
                and subnet_of(cache.cached("cache-b", "green")) == "10.92.0.0/24"
            ),
        )
        assert subnet_of(cache.get_nad("cache-b", "green")) == "10.92.0.0/24"
        assert api.gets == [], "every read so far was answered from the watch"
        kube.delete("NetworkAttachmentDefinition", "cache-a", "blue")
        eventually("the delete reached the cache", lambda: cache.cached("cache-a", "blue") is None)
        assert cache.get_nad("cache-a", "blue") is None
        assert api.gets == [("cache-a", "blue")], "a NAD the cache does not hold is a GET (a 404 here)"

        # the server ends each watch after timeoutSeconds; the cache lists again and goes on
        eventually("the server ended the watch and the cache listed again", lambda: cache.lists >= 3, 15)
        assert cache.synced
        api.gets.clear()
        kube.create(nad_object("cache-a", "blue", "10.91.2.0/24"))
        eventually(
            "a NAD created after a re-list", lambda: subnet_of(cache.get_nad("cache-a", "blue")) == "10.91.2.0/24"
        )
    finally:
        cache.close()
        for ns, name in (("cache-a", "blue"), ("cache-b", "green")):
            kube.delete("NetworkAttachmentDefinition", ns, name)


@pytest.fixture
def lab(peer_lab: PodLab) -> PodLab:
    return peer_lab


def audit_lines(kube: KubeCluster, since: int) -> list[dict[str, Any]]:
    """Every audit event from ``since``, of any stage (a watch still open has only started)."""
    with kube.audit_log.open("rb") as fh:
        fh.seek(since)
        return [json.loads(line) for line in fh.read().splitlines() if line.strip()]


def nad_verbs(
    events: list[dict[str, Any]], user: str, resource: tuple[str, str] = NAD_RESOURCE
) -> list[tuple[str, int]]:
    """(verb, HTTP status) of ``user``'s requests on NADs (or ``resource``), one per request;
    a subresource's verb is named with it (``update pods/status``: ``update/status``)."""
    seen: dict[str, tuple[str, int]] = {}
    for e in events:
        ref = e.get("objectRef") or {}
        if (e.get("user") or {}).get("username") != user or (ref.get("apiGroup", ""), ref.get("resource")) != resource:
            continue
        verb = e["verb"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        seen[e["auditID"]] = (verb, (e.get("responseStatus") or {}).get("code", 0))
    return list(seen.values())


class Daemon:
    """``kvnet daemon`` in the lab's node netns under the kubeconfig ``kvnet install`` wrote."""

    def __init__(self, lab: PodLab, kvnet_bin_dir: str, sock: str, node: str = "") -> None:
        self.log_path = lab.workdir / "daemon.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        cmd = [os.path.join(kvnet_bin_dir, "kvnet"), "daemon", "--socket", sock, "--api", "client"]
        self.proc = subprocess.Popen(
            [IP, "netns", "exec", lab.node.name, "env", f"NODE_NAME={node}", *cmd],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            start_new_session=True,
        )
        _wait_healthy(sock, self.proc)

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


@contextlib.contextmanager
def thick_node(lab: PodLab, kube: KubeCluster, rbac: tuple[Path, ...]) -> Iterator[tuple[dict[str, Any], str]]:
    """The ``rbac`` files applied (strict validation), the kvnet ServiceAccount authorized for
    their rules, kvnet installed in thick mode under its token: (the conflist, the socket);
    the RBAC objects removed at the end."""
    docs = [doc for path in rbac for doc in manifest(path)]
    kube.ensure_namespace(NAMESPACE)
    for doc in docs:
        status, answer = apply_strict(kube, doc)
        assert status in (200, 201), answer.get("message", answer)
    try:
        wait_authorized(kube, USER, {t: True for path in rbac for t in role_rules(the_role(path))})
        token_file = lab.workdir / "sa" / "token"
        write_token(token_file, kube.token(ACCOUNT, NAMESPACE))
        sock = str(lab.workdir / "run" / "kvnet.sock")
        yield install_kvnet(lab, kube, token_file, "--mode", "thick", "--socket", sock), sock
    finally:
        for doc in reversed(docs):
            kube.delete(doc["kind"], doc["metadata"].get("namespace"), doc["metadata"]["name"])


def add_and_del(lab: PodLab, conf: dict[str, Any], uid: str, container: str, daemon: Daemon) -> list[dict[str, Any]]:
    rc, out, err = lab.cni("ADD", conf, container=container, pod="web", uid=uid, binary="kvnet-shim")
    assert rc == 0, (out, err, daemon.log())
    status = lab.status("web") or []
    rc, out, err = lab.cni("DEL", conf, container=container, pod="web", uid=uid, binary="kvnet-shim")
    assert rc == 0, (out, err)
    assert lab.leftovers() == {"pod links": [], "host-local leases": [], "cache files": []}
    return status


def test_the_daemon_reads_nads_from_its_watch(lab: PodLab, kube: KubeCluster, kvnet_bin_dir: str) -> None:
    with thick_node(lab, kube, (RBAC, RBAC_THICK)) as (conf, sock):
        lab.add_nad("blue", BLUE)
        lab.add_nad("red", {**BLUE, "bridge": "kvt-red", "ipam": {"type": "host-local", "subnet": "10.84.0.0/24"}})
        uid = lab.add_pod("web", "blue@blue0,red@red0")
        mark = kube.audit_mark()
        with Daemon(lab, kvnet_bin_dir, sock) as daemon:
            # the first call for a kubeconfig starts its cache; until the list is in, reads are GETs
            status = add_and_del(lab, conf, uid, "cache1", daemon)
            assert [(s["name"], s["interface"]) for s in status] == [
                ("main", "eth0"),
                ("default/blue", "blue0"),
                ("default/red", "red0"),
            ]
            assert [s["ips"][0].split(".")[:3] for s in status[1:]] == [["10", "83", "0"], ["10", "84", "0"]]
            eventually(
                "the daemon's NAD watch is open", lambda: ("watch", 200) in nad_verbs(audit_lines(kube, mark), USER)
            )
            assert ("list", 200) in nad_verbs(audit_lines(kube, mark), USER)

            # a NAD changed between two ADDs: the next ADD uses it as changed, without a GET
            mark = kube.audit_mark()
            current = kube.get("NetworkAttachmentDefinition", "default", "red")
            assert current is not None
            changed = copy.deepcopy(current)
            red = {**BLUE, "bridge": "kvt-red", "ipam": {"type": "host-local", "subnet": "10.85.0.0/24"}}
            changed["spec"]["config"] = json.dumps({**red, "ipam": {**red["ipam"], "dataDir": str(lab.data_dir)}})
            kube.call("PUT", "/apis/k8s.cni.cncf.io/v1/namespaces/default/network-attachment-definitions/red", changed)
            time.sleep(0.5)  # the watch event's way to the daemon (milliseconds on loopback)
            for container in ("cache2", "cache3"):
                status = add_and_del(lab, conf, uid, container, daemon)
                assert status[2]["ips"][0].startswith("10.85.0."), status
            verbs = nad_verbs(audit_lines(kube, mark), USER)
            assert [v for v in verbs if v[0] == "get"] == [], f"no NAD read by GET: {verbs}"


def test_without_list_and_watch_every_nad_read_is_a_get(lab: PodLab, kube: KubeCluster, kvnet_bin_dir: str) -> None:
    with thick_node(lab, kube, (RBAC,)) as (conf, sock):
        lab.add_nad("blue", BLUE)
        uid = lab.add_pod("web", "blue@blue0")
        mark = kube.audit_mark()
        with Daemon(lab, kvnet_bin_dir, sock) as daemon:
            status = add_and_del(lab, conf, uid, "nocache1", daemon)
            assert [s["interface"] for s in status] == ["eth0", "blue0"]
            eventually(
                "the daemon tried to list NADs", lambda: ("list", 403) in nad_verbs(audit_lines(kube, mark), USER)
            )
            status = add_and_del(lab, conf, uid, "nocache2", daemon)
            assert [s["interface"] for s in status] == ["eth0", "blue0"]
            verbs = nad_verbs(audit_lines(kube, mark), USER)
            assert verbs.count(("get", 200)) == 2 and {v for v in verbs if v[0] != "get"} == {("list", 403)}, verbs
            refused = [line for line in daemon.log().splitlines() if "NAD cache" in line and "403" in line]
            assert len(refused) == 1, daemon.log()


def pod_object(namespace: str, name: str, node: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.9"}]},
    }


class CountingPods(CountingApi):
    """... and the pod GETs."""

    def __init__(self, api: k8s.LightApi) -> None:
        super().__init__(api)
        self.pod_gets: list[tuple[str, str]] = []

    def get_pod(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        self.pod_gets.append((namespace, name))
        return self.api.get_pod(namespace, name)


def test_the_pod_cache_follows_its_node(kube: KubeCluster) -> None:
    kube.ensure_namespace("cache-p")
    kube.create(pod_object("cache-p", "web", NODE))
    kube.create(pod_object("cache-p", "elsewhere", "another-node"))
    conf = k8s.load_kubeconfig(str(kube.admin_kubeconfig))
    api = CountingPods(k8s.LightApi(conf, kubeconfig=str(kube.admin_kubeconfig)))
    cache = PodCache(api, k8s.LightApi(conf, kubeconfig=str(kube.admin_kubeconfig)), NODE)
    try:
        assert cache.wait_synced(10)
        first = cache.get_pod("cache-p", "web")
        assert first is not None and api.pod_gets == []
        assert cache.cached("cache-p", "elsewhere") is None, "only the pods bound to its node"
        assert cache.get_pod("cache-p", "elsewhere") is not None and api.pod_gets == [("cache-p", "elsewhere")]

        # deleted and created again under the same name: the watch brings the new pod
        kube.delete("Pod", "cache-p", "web")
        eventually("the delete reached the cache", lambda: cache.cached("cache-p", "web") is None)
        kube.create(pod_object("cache-p", "web", NODE))
        eventually("the new pod is in the cache", lambda: cache.cached("cache-p", "web") is not None)
        again = cache.get_pod("cache-p", "web")
        assert again is not None and again["metadata"]["uid"] != first["metadata"]["uid"]
        assert api.pod_gets == [("cache-p", "elsewhere")]
    finally:
        cache.close()
        for name in ("web", "elsewhere"):
            kube.delete("Pod", "cache-p", name)


def test_the_daemon_reads_its_nodes_pods_from_its_watch(lab: PodLab, kube: KubeCluster, kvnet_bin_dir: str) -> None:
    with thick_node(lab, kube, (RBAC, RBAC_THICK)) as (conf, sock):
        lab.add_nad("blue", BLUE)
        uid = lab.add_pod("web", "blue@blue0", node=NODE)
        mark = kube.audit_mark()
        with Daemon(lab, kvnet_bin_dir, sock, node=NODE) as daemon:
            add_and_del(lab, conf, uid, "podcache0", daemon)  # starts the caches (this one may GET)
            eventually(
                "the daemon's pod watch is open",
                lambda: ("watch", 200) in nad_verbs(audit_lines(kube, mark), USER, POD_RESOURCE),
            )
            time.sleep(0.5)  # the watch event of the first ADD's status write on its way to the daemon
            mark = kube.audit_mark()
            status = add_and_del(lab, conf, uid, "podcache1", daemon)
            assert [(s["name"], s["interface"]) for s in status] == [("main", "eth0"), ("default/blue", "blue0")]
            verbs = nad_verbs(audit_lines(kube, mark), USER, POD_RESOURCE)
            assert verbs == [("update/status", 200)], f"the ADD's pod came from the watch, its copy was PUT: {verbs}"

            # the pod deleted and created again under its name, ADDed at once with its new UID:
            # whether or not the watch has delivered it yet, the ADD finds the new pod
            lab.api.delete("Pod", "default", "web")
            new_uid = lab.add_pod("web", "blue@blue0", node=NODE)
            assert new_uid != uid
            status = add_and_del(lab, conf, new_uid, "podcache2", daemon)
            assert [s["interface"] for s in status] == ["eth0", "blue0"]
