"""kvnet's identity and RBAC on the real API server (root): deploy/rbac.yaml applied for
real, a ServiceAccount token minted by TokenRequest, kvnet run with the kubeconfig
``kvnet install --token-file`` writes, and the audit log read back.

- the role is enough for ADD, CHECK and DEL (no 403 in the audit log);
- it is no wider than needed: the (group, resource, verb) triples kvnet used are exactly
  the role's, so every rule is used;
- a role without one of its verbs makes ADD fail with the API server's message, which
  names the verb and the resource, under kvnet's API error code (103);
- a rotated token (the old one revoked by deleting and re-creating the ServiceAccount) is
  picked up by a long-lived ``kvnet daemon`` without a restart, with either client;
- the manifests in deploy/ pass the server's strict field validation.
"""

from __future__ import annotations

import copy
import http.client
import json
import os
import signal
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from kvnet.lab.kube import KubeCluster, object_path
from kvnet.lab.pod_demo import IP, PodLab
from kvnet.meta.shim import request as shim_request

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
RBAC = REPO / "deploy" / "rbac.yaml"
RBAC_THICK = REPO / "deploy" / "rbac-thick.yaml"  # the daemon's NAD cache: list + watch
DAEMONSET = REPO / "deploy" / "node-daemonset.yaml"
NAMESPACE = "kube-system"
ACCOUNT = "kvnet"
USER = f"system:serviceaccount:{NAMESPACE}:{ACCOUNT}"

Triple = tuple[str, str, str]  # (API group, resource[/subresource], verb)

_PLURALS = {
    "ServiceAccount": "serviceaccounts",
    "ClusterRole": "clusterroles",
    "ClusterRoleBinding": "clusterrolebindings",
    "DaemonSet": "daemonsets",
}


def manifest(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def collection_path(obj: Mapping[str, Any]) -> str:
    version = str(obj["apiVersion"])
    prefix = "/api/v1" if version == "v1" else f"/apis/{version}"
    namespace = (obj.get("metadata") or {}).get("namespace")
    return prefix + (f"/namespaces/{namespace}" if namespace else "") + f"/{_PLURALS[str(obj['kind'])]}"


def apply_strict(kube: KubeCluster, obj: Mapping[str, Any], *, dry_run: bool = False) -> tuple[int, Any]:
    """Create or replace ``obj`` with server-side strict field validation: an unknown or
    duplicate field is a 400, not a warning."""
    query = "?fieldValidation=Strict" + ("&dryRun=All" if dry_run else "")
    base = collection_path(obj)
    status, answer = kube.raw("POST", base + query, obj)
    if status != 409:
        return status, answer
    path = f"{base}/{obj['metadata']['name']}"
    current = kube.call("GET", path)
    body = copy.deepcopy(dict(obj))
    body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
    return kube.raw("PUT", path + query, body)


def role_rules(role: Mapping[str, Any]) -> set[Triple]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def the_role(path: Path = RBAC) -> dict[str, Any]:
    return next(d for d in manifest(path) if d["kind"] == "ClusterRole")


def used(events: list[dict[str, Any]]) -> set[Triple]:
    """The (group, resource, verb) triples of audit events."""
    out = set()
    for e in events:
        ref = e.get("objectRef") or {}
        resource = ref.get("resource", "") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        out.add((ref.get("apiGroup", ""), resource, e["verb"]))
    return out


def refused_logins(kube: KubeCluster, since: int) -> list[dict[str, Any]]:
    """Requests that failed authentication (401) from byte offset ``since``: the audit log
    has them at stage ResponseStarted, with no user (``KubeCluster.audit`` keeps only
    ResponseComplete events)."""
    with kube.audit_log.open("rb") as fh:
        fh.seek(since)
        events = [json.loads(line) for line in fh.read().splitlines() if line.strip()]
    return [e for e in events if (e.get("responseStatus") or {}).get("code") == 401]


def allowed(kube: KubeCluster, user: str, triple: Triple, namespace: str = "default") -> bool:
    """The authorizer's answer for ``user`` now (a SubjectAccessReview, as the admin)."""
    group, resource, verb = triple
    res, _, sub = resource.partition("/")
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": user,
            "groups": ["system:serviceaccounts", f"system:serviceaccounts:{NAMESPACE}", "system:authenticated"],
            "resourceAttributes": {
                "group": group,
                "resource": res,
                "subresource": sub,
                "verb": verb,
                "namespace": namespace,
            },
        },
    }
    answer = kube.call("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", review)
    return bool(answer["status"].get("allowed"))


def wait_for(what: str, predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout:.0f} s: {what}")
        time.sleep(0.1)


def wait_authorized(kube: KubeCluster, user: str, expected: Mapping[Triple, bool]) -> None:
    """RBAC changes reach the authorizer through its informers: wait until it agrees."""
    wait_for(
        f"{user} authorized as {dict(expected)}",
        lambda: all(allowed(kube, user, t) is want for t, want in expected.items()),
    )


def status_with_token(kube: KubeCluster, token: str) -> int:
    """The HTTP status of ``GET /api`` with a bearer token (401 once it is no longer valid)."""
    ctx = ssl.create_default_context(cafile=str(kube.ca_file))
    conn = http.client.HTTPSConnection(kube.address, kube.port, context=ctx, timeout=10)
    try:
        conn.request("GET", "/api", headers={"Authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def write_token(path: Path, token: str) -> None:
    """Replace the token file atomically (the kubelet swaps a projected volume's files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.new")
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:
        fh.write(token)
    os.replace(tmp, path)


@pytest.fixture(scope="module")
def rbac(kube: KubeCluster) -> Iterator[list[dict[str, Any]]]:
    """deploy/rbac.yaml and deploy/rbac-thick.yaml applied for real; the authorizer answers
    for the kvnet account (kvnet-cni in thin mode uses only the first)."""
    docs = [*manifest(RBAC), *manifest(RBAC_THICK)]
    kube.ensure_namespace(NAMESPACE)
    for doc in docs:
        status, answer = apply_strict(kube, doc)
        assert status in (200, 201), answer.get("message", answer)
    wait_authorized(kube, USER, {t: True for t in role_rules(the_role()) | role_rules(the_role(RBAC_THICK))})
    yield docs
    for doc in reversed(docs):
        kube.delete(doc["kind"], doc["metadata"].get("namespace"), doc["metadata"]["name"])


@pytest.fixture
def lab(peer_lab: PodLab) -> PodLab:
    return peer_lab


MAIN = {
    "cniVersion": "1.0.0",
    "name": "main",
    "type": "bridge",
    "bridge": "kvt-main",
    "isGateway": True,
    "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.82.0.0/24"}]]},
}
BLUE = {
    "cniVersion": "1.0.0",
    "type": "bridge",
    "bridge": "kvt-blue",
    "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.83.0.0/24"}]]},
}


def install_kvnet(lab: PodLab, kube: KubeCluster, token_file: Path, *extra: str) -> dict[str, Any]:
    """``kvnet install`` onto the lab's bin dir with a kubeconfig for ``token_file``; the
    plugin config of the conflist it writes, as a runtime hands it to the plugin."""
    conf_dir = lab.workdir / "net.d"
    conf_dir.mkdir(exist_ok=True)
    main = dict(MAIN, ipam={**MAIN["ipam"], "dataDir": str(lab.data_dir)})
    (conf_dir / "10-main.conf").write_text(json.dumps(main))
    kubeconfig = lab.workdir / "kvnet.d" / "kvnet.kubeconfig"
    done = subprocess.run(
        [
            str(Path(os.readlink(lab.bin_dir / "kvnet-cni")).parent / "kvnet"),  # beside the scripts the lab links
            "install",
            "--bin-dir", str(lab.bin_dir),
            "--conf-dir", str(conf_dir),
            "--cni-dir", str(lab.cni_dir),
            "--kubeconfig", str(kubeconfig),
            "--token-file", str(token_file),
            "--ca-file", str(kube.ca_file),
            "--server", kube.url,
            *extra,
        ],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert oct(kubeconfig.stat().st_mode & 0o777) == "0o600"
    conflist = json.loads((conf_dir / "00-kvnet.conflist").read_text())
    (plugin,) = conflist["plugins"]
    assert plugin["kubeconfig"] == str(kubeconfig)
    return {"cniVersion": conflist["cniVersion"], "name": conflist["name"], **plugin, "logLevel": "verbose"}


class PrivilegedKube(KubeCluster):
    """The lab's API server with ``--allow-privileged=true``, as clusters that run CNI node
    agents have it (kubeadm's default): without it every privileged container is refused."""

    def _spawn(self, name: str, argv: list[str]) -> None:
        super()._spawn(name, [*argv, "--allow-privileged=true"] if name == "kube-apiserver" else argv)


def test_deploy_manifests_pass_strict_validation(kube: KubeCluster, tmp_path: Path) -> None:
    """Every manifest of deploy/rbac.yaml and deploy/node-daemonset.yaml is accepted as it is."""
    (daemonset,) = manifest(DAEMONSET)
    assert daemonset["spec"]["template"]["spec"]["serviceAccountName"] == ACCOUNT
    # the shared server refuses privileged containers (no --allow-privileged), and says so
    status, answer = apply_strict(kube, daemonset, dry_run=True)
    assert status == 422 and "privileged: Forbidden: disallowed by cluster policy" in answer["message"]
    with PrivilegedKube(tmp_path / "kube") as cluster:
        cluster.ensure_namespace(NAMESPACE)
        for doc in [*manifest(RBAC), daemonset]:
            status, answer = apply_strict(cluster, doc)
            assert status in (200, 201), answer.get("message", answer)
        got = cluster.call("GET", f"{collection_path(daemonset)}/{daemonset['metadata']['name']}")
        assert got["spec"]["template"]["spec"]["serviceAccountName"] == ACCOUNT
        # the validation is strict: a misspelt field is refused, not dropped
        bad = copy.deepcopy(daemonset)
        bad["metadata"]["name"] = "kvnet-node-misspelt"
        bad["spec"]["template"]["spec"]["serviceAcountName"] = ACCOUNT
        status, answer = apply_strict(cluster, bad, dry_run=True)
        assert status == 400 and 'unknown field "spec.template.spec.serviceAcountName"' in answer["message"]


def test_the_role_is_enough_and_every_rule_is_used(lab: PodLab, kube: KubeCluster, rbac: list[dict[str, Any]]) -> None:
    token_file = lab.workdir / "sa" / "token"
    write_token(token_file, kube.token(ACCOUNT, NAMESPACE))
    conf = install_kvnet(lab, kube, token_file)
    lab.add_nad("blue", BLUE)
    uid = lab.add_pod("web", "blue@blue0")
    mark = kube.audit_mark()
    rc, result, err = lab.cni("ADD", conf, container="rbac1", pod="web", uid=uid, binary="kvnet")
    assert rc == 0, (result, err)
    assert [(s["name"], s["interface"]) for s in lab.status("web") or []] == [
        ("main", "eth0"),
        ("default/blue", "blue0"),
    ]
    rc, out, err = lab.cni("CHECK", conf, container="rbac1", pod="web", uid=uid, binary="kvnet")
    assert rc == 0, (out, err)
    rc, out, err = lab.cni("DEL", conf, container="rbac1", pod="web", uid=uid, binary="kvnet")
    assert rc == 0, (out, err)
    assert lab.leftovers() == {"pod links": [], "host-local leases": [], "cache files": []}

    events = kube.audit(user=USER, since=mark)
    assert events, "kvnet's calls are in the audit log under its ServiceAccount"
    refused = [
        (e["verb"], e["requestURI"], e["responseStatus"]["code"]) for e in events if e["responseStatus"]["code"] >= 400
    ]
    assert refused == []
    # no wider than needed: what kvnet used is exactly what the role grants
    assert used(events) == role_rules(the_role())


def narrowed_role(without: Triple) -> list[dict[str, Any]]:
    """deploy/rbac.yaml's objects as ``kvnet-narrow``, the role without one verb."""
    group, resource, verb = without
    docs = copy.deepcopy(manifest(RBAC))
    for doc in docs:
        doc["metadata"]["name"] = "kvnet-narrow"
        if doc["kind"] == "ClusterRole":
            rules = []
            for rule in doc["rules"]:
                if rule["apiGroups"] == [group] and rule["resources"] == [resource]:
                    rule["verbs"] = [v for v in rule["verbs"] if v != verb]
                if rule["verbs"]:
                    rules.append(rule)
            doc["rules"] = rules
        if doc["kind"] == "ClusterRoleBinding":
            doc["roleRef"]["name"] = "kvnet-narrow"
            doc["subjects"][0]["name"] = "kvnet-narrow"
    return docs


EVENTS_RULE: Triple = ("", "events", "create")  # best effort: ADD does not depend on it


@pytest.mark.parametrize(
    "without",
    sorted(role_rules(the_role()) - {EVENTS_RULE}),
    ids=lambda t: f"{t[2]}-{t[1].replace('/', '-')}",
)
def test_a_role_without_one_verb_fails_add_naming_it(
    lab: PodLab, kube: KubeCluster, rbac: list[dict[str, Any]], without: Triple
) -> None:
    group, resource, verb = without
    user = f"system:serviceaccount:{NAMESPACE}:kvnet-narrow"
    docs = narrowed_role(without)
    try:
        for doc in docs:
            status, answer = apply_strict(kube, doc)
            assert status in (200, 201), answer.get("message", answer)
        wait_authorized(kube, user, {t: t != without for t in role_rules(the_role())})
        token_file = lab.workdir / "sa" / "token"
        write_token(token_file, kube.token("kvnet-narrow", NAMESPACE))
        conf = install_kvnet(lab, kube, token_file)
        lab.add_nad("blue", BLUE)
        uid = lab.add_pod("web", "blue@blue0")
        mark = kube.audit_mark()
        rc, out, err = lab.cni("ADD", conf, container="narrow1", pod="web", uid=uid, binary="kvnet")
        assert rc == 1, (out, err)
        # the API server's words, passed through: who, which verb, which resource
        assert f'User "{user}" cannot {verb} resource "{resource.split("/")[0]}' in out["msg"]
        assert f'cannot {verb} resource "{resource}" in API group "{group}" in the namespace "default"' in out["msg"]
        assert out["code"] == 103, out  # kvnet's API error, not the generic 999
        assert out["msg"].startswith(f"kvnet: [default/web/{uid}]: ")
        denied = [e for e in kube.audit(user=user, since=mark) if e["responseStatus"]["code"] == 403]
        assert used(denied) == {without}
        # the runtime's DEL still cleans up under the narrowed role
        rc, out, err = lab.cni("DEL", conf, container="narrow1", pod="web", uid=uid, binary="kvnet")
        assert rc == 0, (out, err)
        assert lab.leftovers() == {"pod links": [], "host-local leases": [], "cache files": []}
    finally:
        for doc in reversed(docs):
            kube.delete(doc["kind"], doc["metadata"].get("namespace"), doc["metadata"]["name"])


def test_a_role_without_events_still_adds_the_pod(lab: PodLab, kube: KubeCluster, rbac: list[dict[str, Any]]) -> None:
    """Events are best effort: refused, they are dropped and the ADD succeeds."""
    user = f"system:serviceaccount:{NAMESPACE}:kvnet-narrow"
    docs = narrowed_role(EVENTS_RULE)
    try:
        for doc in docs:
            status, answer = apply_strict(kube, doc)
            assert status in (200, 201), answer.get("message", answer)
        wait_authorized(kube, user, {t: t != EVENTS_RULE for t in role_rules(the_role())})
        token_file = lab.workdir / "sa" / "token"
        write_token(token_file, kube.token("kvnet-narrow", NAMESPACE))
        conf = install_kvnet(lab, kube, token_file)
        lab.add_nad("blue", BLUE)
        uid = lab.add_pod("web", "blue@blue0")
        mark = kube.audit_mark()
        rc, out, err = lab.cni("ADD", conf, container="noevents1", pod="web", uid=uid, binary="kvnet")
        assert rc == 0, (out, err)
        assert [s["interface"] for s in lab.status("web") or []] == ["eth0", "blue0"]
        denied = [e for e in kube.audit(user=user, since=mark) if e["responseStatus"]["code"] == 403]
        assert used(denied) == {EVENTS_RULE}
        rc, out, err = lab.cni("DEL", conf, container="noevents1", pod="web", uid=uid, binary="kvnet")
        assert rc == 0, (out, err)
        assert lab.leftovers() == {"pod links": [], "host-local leases": [], "cache files": []}
    finally:
        for doc in reversed(docs):
            kube.delete(doc["kind"], doc["metadata"].get("namespace"), doc["metadata"]["name"])


def _wait_healthy(sock: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"kvnet daemon exited with {proc.returncode}")
        try:
            return os.path.exists(sock) and shim_request(sock, "GET", "/healthz", timeout=2)[0] == 200
        except (OSError, ValueError):
            return False

    wait_for("kvnet daemon answers /healthz", healthy, timeout)


@pytest.mark.parametrize("api", ["client", "light"])
def test_a_rotated_token_reaches_the_running_daemon(
    lab: PodLab, kube: KubeCluster, rbac: list[dict[str, Any]], kvnet_bin_dir: str, api: str
) -> None:
    sock = str(lab.workdir / "run" / "kvnet.sock")
    token_file = lab.workdir / "sa" / "token"
    old = kube.token(ACCOUNT, NAMESPACE)
    write_token(token_file, old)
    conf = install_kvnet(lab, kube, token_file, "--mode", "thick", "--socket", sock)
    assert conf["type"] == "kvnet-shim" and conf["socketPath"] == sock
    lab.add_nad("blue", BLUE)
    uid = lab.add_pod("web", "blue@blue0")
    log = open(lab.workdir / "daemon.log", "wb")  # noqa: SIM115 - closed after the daemon stops
    cmd = [os.path.join(kvnet_bin_dir, "kvnet"), "daemon", "--socket", sock, "--api", api]
    proc = subprocess.Popen(
        [IP, "netns", "exec", lab.node.name, *cmd], stdout=subprocess.DEVNULL, stderr=log, start_new_session=True
    )
    try:
        _wait_healthy(sock, proc)
        started = time.monotonic()
        rc, out, err = lab.cni("ADD", conf, container="rot1", pod="web", uid=uid, binary="kvnet-shim")
        assert rc == 0, (out, err, (lab.workdir / "daemon.log").read_text())
        rc, out, err = lab.cni("DEL", conf, container="rot1", pod="web", uid=uid, binary="kvnet-shim")
        assert rc == 0, (out, err)

        # revoke the old token: a re-created ServiceAccount has a new UID, its old tokens fail
        kube.delete("ServiceAccount", NAMESPACE, ACCOUNT)
        kube.create(
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": ACCOUNT, "namespace": NAMESPACE}}
        )
        wait_for("the old token is refused", lambda: status_with_token(kube, old) == 401)
        write_token(token_file, kube.token(ACCOUNT, NAMESPACE))
        mark = kube.audit_mark()
        rc, out, err = lab.cni("ADD", conf, container="rot2", pod="web", uid=uid, binary="kvnet-shim")
        assert rc == 0, (out, err, (lab.workdir / "daemon.log").read_text())
        assert proc.poll() is None, "the same daemon, not restarted"
        assert [(s["name"], s["interface"]) for s in lab.status("web") or []] == [
            ("main", "eth0"),
            ("default/blue", "blue0"),
        ]
        # the daemon still held the old token (its re-read is a minute apart): one 401 on the
        # pod read, the token file re-read at once, the same read again with the new token
        pod_read = object_path("Pod", "default", "web")
        refused = [e["requestURI"] for e in refused_logins(kube, mark)]
        if time.monotonic() - started < 45:
            assert refused == [pod_read], refused
        else:  # a slow run: the periodic re-read came first
            assert refused in ([], [pod_read]), refused
        rc, out, err = lab.cni("DEL", conf, container="rot2", pod="web", uid=uid, binary="kvnet-shim")
        assert rc == 0, (out, err)
        assert lab.leftovers() == {"pod links": [], "host-local leases": [], "cache files": []}
        events = kube.audit(user=USER, since=mark)
        assert [e for e in events if e["responseStatus"]["code"] >= 400] == []
        assert used(events) <= role_rules(the_role()) | role_rules(the_role(RBAC_THICK))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
