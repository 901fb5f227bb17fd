"""A real Kubernetes API server for the lab: etcd + kube-apiserver from ``build/peers/bin``.

Started with TLS, client-certificate and ServiceAccount-token authentication, the Node and
RBAC authorizers and an audit log (every request, with its user: how the tests count API
calls). It listens on :data:`API_ADDRESS`, a link-local address added to the root netns's
``lo`` (this kernel has no dummy links), so a lab's node netns reaches it with one route through its veth (``route_from``),
and the serving certificate names it. The CRDs in ``crds/`` (and whereabouts', when built)
are applied for real; there is no controller-manager, so the launcher creates each
namespace's ``default`` ServiceAccount itself (the ServiceAccount admission needs it).

Only the standard library talks to it (the lab may not use the ``kubernetes`` client: one
module owns each outside library, docs/design.md §2).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from kvnet.core.errors import InvalidEnvironment
from kvnet.lab.netns import IP, NetnsLike, in_ns
from kvnet.lab.netns import ip as _ip

REPO = Path(__file__).resolve().parents[2]
PEERS = Path(os.environ.get("KVNET_PEERS", REPO / "build" / "peers"))
API_ADDRESS = "169.254.0.77"  # the lab's API address (the pod labs use 169.254.1-250.x)
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 5.0  # then SIGKILL: the lab's etcd data is thrown away anyway


@dataclass(frozen=True)
class Resource:
    """Where a kind lives in the API."""

    prefix: str  # /api/v1 or /apis/<group>/<version>
    plural: str
    namespaced: bool = True


RESOURCES: Mapping[str, Resource] = {
    "Namespace": Resource("/api/v1", "namespaces", namespaced=False),
    "Pod": Resource("/api/v1", "pods"),
    "ServiceAccount": Resource("/api/v1", "serviceaccounts"),
    "Secret": Resource("/api/v1", "secrets"),
    "Event": Resource("/api/v1", "events"),
    "NetworkAttachmentDefinition": Resource("/apis/k8s.cni.cncf.io/v1", "network-attachment-definitions"),
    "CustomResourceDefinition": Resource(
        "/apis/apiextensions.k8s.io/v1", "customresourcedefinitions", namespaced=False
    ),
    "ClusterRole": Resource("/apis/rbac.authorization.k8s.io/v1", "clusterroles", namespaced=False),
    "ClusterRoleBinding": Resource("/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings", namespaced=False),
    "Role": Resource("/apis/rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": Resource("/apis/rbac.authorization.k8s.io/v1", "rolebindings"),
    "IPPool": Resource("/apis/whereabouts.cni.cncf.io/v1alpha1", "ippools"),
    "OverlappingRangeIPReservation": Resource(
        "/apis/whereabouts.cni.cncf.io/v1alpha1", "overlappingrangeipreservations"
    ),
}
_ALIASES = {"nad": "NetworkAttachmentDefinition", "net-attach-def": "NetworkAttachmentDefinition"}


def resource(kind: str) -> Resource:
    key = _ALIASES.get(kind.lower(), kind)
    for name, res in RESOURCES.items():
        if name.lower() == key.lower():
            return res
    raise ValueError(f"the lab's API client knows {sorted(RESOURCES)}, not {kind!r}")


def object_path(kind: str, namespace: str | None, name: str | None = None) -> str:
    res = resource(kind)
    path = res.prefix
    if res.namespaced:
        path += f"/namespaces/{quote(namespace or 'default', safe='')}"
    path += f"/{res.plural}"
    return path + (f"/{quote(name, safe='')}" if name else "")


class ApiFailure(Exception):
    """The API server answered with an error status."""

    def __init__(self, method: str, path: str, status: int, body: Mapping[str, Any]) -> None:
        self.status = status
        self.body = body
        super().__init__(f"{method} {path}: {status} {body.get('message', '')}")


def peer_binary(name: str) -> Path:
    path = PEERS / "bin" / name
    if not os.access(path, os.X_OK):
        raise InvalidEnvironment(f"peer {name} is not built at {path}", "run `make peers` (peers/README.md)")
    return path


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise InvalidEnvironment(f"openssl {args[0]} failed", done.stderr.strip())


def make_pki(folder: Path, addresses: Iterable[str]) -> None:
    """A CA, the serving certificate for ``addresses``, the admin client certificate and
    the ServiceAccount signing key pair, all in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    _openssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "30",
        "-subj",
        "/CN=kvnet-lab-ca",
        cwd=folder,
    )
    sans = ",".join([*(f"IP:{a}" for a in addresses), "DNS:localhost", "DNS:kubernetes.default.svc"])
    exts = {
        "apiserver": f"subjectAltName={sans}\nextendedKeyUsage=serverAuth\n",
        "admin": "extendedKeyUsage=clientAuth\n",
    }
    subjects = {"apiserver": "/CN=kube-apiserver", "admin": "/O=system:masters/CN=kvnet-lab-admin"}
    for name, ext in exts.items():
        (folder / f"{name}.ext").write_text(
            ext + "keyUsage=critical,digitalSignature,keyEncipherment\nbasicConstraints=CA:FALSE\n"
        )
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subjects[name], cwd=folder)
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "30", "-extfile", f"{name}.ext", cwd=folder,
        )  # fmt: skip
    _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "sa.key", cwd=folder)
    _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=folder)


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata"}],
}


class KubeCluster:
    """etcd + kube-apiserver in ``workdir``; a context manager."""

    def __init__(self, workdir: Path, *, address: str = API_ADDRESS) -> None:
        self.workdir = workdir
        self.address = address
        self.pki = workdir / "pki"
        self.port = 0
        self.admin_kubeconfig = workdir / "admin.kubeconfig"
        self.audit_log = workdir / "audit.log"
        self._procs: list[subprocess.Popen[bytes]] = []
        self._added_address = False
        self._ctx: ssl.SSLContext | None = None
        self._namespaces: set[str] = set()

    # --- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        etcd, apiserver = peer_binary("etcd"), peer_binary("kube-apiserver")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._link_up()
        make_pki(self.pki, [self.address, "127.0.0.1"])
        (self.workdir / "audit-policy.yaml").write_text(yaml.safe_dump(AUDIT_POLICY))
        client, peer = _free_port("127.0.0.1"), _free_port("127.0.0.1")
        self.port = _free_port(self.address)
        self._spawn(
            "etcd",
            [
                str(etcd), "--name", "kvnet", "--data-dir", str(self.workdir / "etcd"),
                "--listen-client-urls", f"http://127.0.0.1:{client}", "--advertise-client-urls", f"http://127.0.0.1:{client}",
                "--listen-peer-urls", f"http://127.0.0.1:{peer}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-cluster", f"kvnet=http://127.0.0.1:{peer}", "--initial-cluster-state", "new",
                "--log-level", "warn", "--unsafe-no-fsync",
            ],
        )  # fmt: skip
        pki = self.pki
        self._spawn(
            "kube-apiserver",
            [
                str(apiserver), f"--etcd-servers=http://127.0.0.1:{client}",
                f"--bind-address={self.address}", f"--secure-port={self.port}", f"--advertise-address={self.address}",
                "--endpoint-reconciler-type=none", "--service-cluster-ip-range=10.96.0.0/24",
                f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--service-account-key-file={pki / 'sa.pub'}", f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc", "--authorization-mode=Node,RBAC",
                f"--audit-policy-file={self.workdir / 'audit-policy.yaml'}", f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json", "--audit-log-mode=blocking",
            ],
        )  # fmt: skip
        try:
            self._wait_ready()
            self.write_kubeconfig(self.admin_kubeconfig)
            self._apply_crds()
            self.ensure_namespace("default")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for proc in reversed(self._procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self._procs):
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs.clear()
        if self._added_address and not self._others_listen():
            _ip("addr", "del", f"{self.address}/32", "dev", "lo", check=False)
        self._added_address = False

    def __enter__(self) -> KubeCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _link_up(self) -> None:
        if self.address.startswith("127."):
            return
        if f" {self.address}/32 " not in _ip("-o", "addr", "show", "dev", "lo").stdout:
            _ip("addr", "add", f"{self.address}/32", "dev", "lo")
            self._added_address = True

    def _others_listen(self) -> bool:
        """Whether another lab's API server still listens on the address (then it stays)."""
        done = subprocess.run(["ss", "-Htln", "src", self.address], capture_output=True, text=True, check=False)
        return done.returncode != 0 or bool(done.stdout.strip())

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = (self.workdir / f"{name}.log").open("wb")
        self._procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        log.close()

    def log_tail(self, name: str = "kube-apiserver", lines: int = 30) -> str:
        path = self.workdir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            for proc, name in zip(self._procs, ("etcd", "kube-apiserver"), strict=False):
                if proc.poll() is not None:
                    raise InvalidEnvironment(f"{name} exited with status {proc.returncode}", self.log_tail(name))
            with contextlib.suppress(OSError, ssl.SSLError, http.client.HTTPException):
                if self.raw("GET", "/readyz")[0] == 200:
                    return
            time.sleep(0.1)
        raise InvalidEnvironment(f"kube-apiserver not ready after {READY_TIMEOUT:.0f} s", self.log_tail())

    # --- reaching it ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"https://{self.address}:{self.port}"

    @property
    def ca_file(self) -> Path:
        return self.pki / "ca.crt"

    def route_from(self, ns: NetnsLike, via: str) -> None:
        """Let ``ns`` reach the API (one host route through its uplink gateway ``via``)."""
        in_ns(ns, IP, "route", "replace", f"{self.address}/32", "via", via)

    def write_kubeconfig(self, path: str | Path, *, token_file: str | None = None, token: str | None = None) -> None:
        """A kubeconfig for this server: the admin client certificate, or a bearer token
        (``token``) or token file (``tokenFile``, re-read by clients when it rotates)."""
        user: dict[str, Any]
        if token_file:
            user = {"tokenFile": token_file}
        elif token:
            user = {"token": token}
        else:
            user = {"client-certificate": str(self.pki / "admin.crt"), "client-key": str(self.pki / "admin.key")}
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "kvnet-lab", "cluster": {"server": self.url, "certificate-authority": str(self.ca_file)}}
            ],
            "users": [{"name": "kvnet-lab", "user": user}],
            "contexts": [{"name": "kvnet-lab", "context": {"cluster": "kvnet-lab", "user": "kvnet-lab"}}],
            "current-context": "kvnet-lab",
        }
        Path(path).write_text(yaml.safe_dump(config, sort_keys=False))

    def kubectl(self, *args: str, timeout: float = 60) -> str:
        """``kubectl`` (build/peers) as the admin; its output, or ApiFailure with its stderr."""
        if not self.admin_kubeconfig.exists():
            self.write_kubeconfig(self.admin_kubeconfig)
        argv = [str(peer_binary("kubectl")), "--kubeconfig", str(self.admin_kubeconfig), *args]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise ApiFailure("kubectl", " ".join(args), done.returncode, {"message": done.stderr.strip()})
        return done.stdout

    def _context(self) -> ssl.SSLContext:
        if self._ctx is None:
            ctx = ssl.create_default_context(cafile=str(self.ca_file))
            ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
            self._ctx = ctx
        return self._ctx

    def raw(
        self, method: str, path: str, body: Any = None, *, content_type: str = "application/json"
    ) -> tuple[int, Any]:
        """One request as the admin: (status, decoded JSON body or text)."""
        conn = http.client.HTTPSConnection(self.address, self.port, context=self._context(), timeout=30)
        try:
            data = None if body is None else json.dumps(body).encode()
            headers = {"Accept": "application/json"}
            if data is not None:
                headers["Content-Type"] = content_type
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
        finally:
            conn.close()
        try:
            return resp.status, json.loads(payload) if payload else {}
        except ValueError:
            return resp.status, payload.decode(errors="replace")

    def call(self, method: str, path: str, body: Any = None, *, content_type: str = "application/json") -> Any:
        status, answer = self.raw(method, path, body, content_type=content_type)
        if status >= 300:
            raise ApiFailure(method, path, status, answer if isinstance(answer, dict) else {"message": str(answer)})
        return answer

    # --- objects -------------------------------------------------------------------------

    def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        kind = str(obj.get("kind", ""))
        namespace = (obj.get("metadata") or {}).get("namespace") or "default"
        if resource(kind).namespaced:
            self.ensure_namespace(namespace)
        body = dict(obj)
        body.setdefault("apiVersion", _api_version(kind))
        created: dict[str, Any] = self.call("POST", object_path(kind, namespace), body)
        return created

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create, or replace what is there (server-side apply would need field managers)."""
        try:
            return self.create(obj)
        except ApiFailure as err:
            if err.status != 409:
                raise
        kind, meta = str(obj["kind"]), obj.get("metadata") or {}
        current = self.get(kind, meta.get("namespace"), meta["name"]) or {}
        body = {**obj, "apiVersion": obj.get("apiVersion", _api_version(kind))}
        body["metadata"] = {**meta, "resourceVersion": current.get("metadata", {}).get("resourceVersion")}
        replaced: dict[str, Any] = self.call("PUT", object_path(kind, meta.get("namespace"), meta["name"]), body)
        return replaced

    def load(self, objects: Iterable[Mapping[str, Any] | None]) -> list[dict[str, Any]]:
        """Create pods, NADs and the rest (dicts as in manifests; ``List`` objects unpacked)."""
        made: list[dict[str, Any]] = []
        for obj in objects:
            if not obj:
                continue
            if str(obj.get("kind", "")).endswith("List") and isinstance(obj.get("items"), list):
                made += self.load(obj["items"])
            else:
                made.append(self.create(obj))
        return made

    def load_yaml(self, path: str | Path) -> list[dict[str, Any]]:
        return self.load(list(yaml.safe_load_all(Path(path).read_text())))

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        status, answer = self.raw("GET", object_path(kind, namespace, name))
        if status == 404:
            return None
        if status >= 300:
            raise ApiFailure("GET", object_path(kind, namespace, name), status, answer)
        obj: dict[str, Any] = answer
        return obj

    def delete(self, kind: str, namespace: str | None, name: str) -> None:
        """Delete now (grace period 0; the lab's pods are never scheduled, so nothing waits)."""
        path = object_path(kind, namespace, name)
        status, answer = self.raw(
            "DELETE", path, {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0}
        )
        if status >= 300 and status != 404:
            raise ApiFailure("DELETE", path, status, answer)

    def ensure_namespace(self, namespace: str) -> None:
        """The namespace and its ``default`` ServiceAccount (no controller-manager here)."""
        if namespace in self._namespaces:
            return
        for obj in (
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": namespace}},
        ):
            status, answer = self.raw("POST", object_path(str(obj["kind"]), namespace), obj)
            if status >= 300 and status != 409:
                raise ApiFailure("POST", object_path(str(obj["kind"]), namespace), status, answer)
        self._namespaces.add(namespace)

    def token(self, account: str, namespace: str, *, seconds: int = 3600) -> str:
        """A bound ServiceAccount token (TokenRequest), as the kubelet projects it into a pod."""
        path = object_path("ServiceAccount", namespace, account) + "/token"
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": seconds},
        }
        answer = self.call("POST", path, body)
        return str(answer["status"]["token"])

    def _apply_crds(self) -> None:
        """Apply every CRD and wait until each is Established and its storage answers a list."""
        files = sorted((REPO / "crds").glob("*.yaml")) + sorted((PEERS / "crds").glob("*.yaml"))
        crds = [doc for path in files for doc in yaml.safe_load_all(path.read_text()) if doc]
        self.load(crds)
        deadline = time.monotonic() + READY_TIMEOUT
        for crd in crds:
            spec = crd["spec"]
            version = next(v["name"] for v in spec["versions"] if v.get("served", True))
            lists = f"/apis/{spec['group']}/{version}/{spec['names']['plural']}"
            while not (
                _established(self.get("CustomResourceDefinition", None, crd["metadata"]["name"]))
                and self.raw("GET", lists)[0] == 200
            ):
                if time.monotonic() > deadline:
                    raise InvalidEnvironment(f"CRD {crd['metadata']['name']} not served", self.log_tail())
                time.sleep(0.05)

    # --- what happened -------------------------------------------------------------------

    def audit(self, *, user: str | None = None, since: int = 0) -> list[dict[str, Any]]:
        """Audit events (stage ResponseComplete) from byte offset ``since``, optionally of one user."""
        if not self.audit_log.exists():
            return []
        with self.audit_log.open("rb") as fh:
            fh.seek(since)
            lines = fh.read().splitlines()
        events = [json.loads(line) for line in lines if line.strip()]
        return [
            e
            for e in events
            if e.get("stage") == "ResponseComplete" and (user is None or e.get("user", {}).get("username") == user)
        ]

    def audit_mark(self) -> int:
        return self.audit_log.stat().st_size if self.audit_log.exists() else 0


def _established(crd: Mapping[str, Any] | None) -> bool:
    conditions = ((crd or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)


def _api_version(kind: str) -> str:
    prefix = resource(kind).prefix
    return prefix.removeprefix("/api/").removeprefix("/apis/")


def peers_built() -> str | None:
    """None when the API server peers are there, else what is missing."""
    missing = [n for n in ("etcd", "kube-apiserver") if not os.access(PEERS / "bin" / n, os.X_OK)]
    if missing:
        return f"peers not built ({', '.join(missing)} missing in {PEERS / 'bin'}; run `make peers`)"
    if shutil.which("openssl") is None:
        return "openssl is not installed (apt-get install openssl)"
    return None
