"""The API clients against the API stand-in over real HTTP on 127.0.0.1 (no root needed).

One contract, two clients: ``light_api`` (stdlib) and ``client_api`` (the official
kubernetes client) must behave the same. Then the stand-in's own HTTP behaviour:
Status bodies, conflicts on a stale resourceVersion, patches, create/delete, discovery.
"""

from __future__ import annotations

import base64
import http.client
import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from kvnet.core.errors import ApiFailure, InvalidConfig
from kvnet.lab.apiserver import ApiStandIn, StandInTls
from kvnet.meta import k8s
from kvnet.meta.ports import RetriableApiFailure, client_go_text
from kvnet.meta.status import NETWORK_STATUS

POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "web",
        "namespace": "pods",
        "annotations": {"k8s.v1.cni.cncf.io/networks": "blue", "keep": "me"},
    },
    "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    "status": {"phase": "Pending"},
}
NAD: dict[str, Any] = {
    "apiVersion": "k8s.cni.cncf.io/v1",
    "kind": "NetworkAttachmentDefinition",
    "metadata": {
        "name": "blue",
        "namespace": "pods",
        "annotations": {"k8s.v1.cni.cncf.io/resourceName": "intel.com/vf"},
    },
    "spec": {"config": '{"cniVersion":"1.0.0","type":"bridge"}'},
}
STATUS_VALUE = '[{\n    "name": "pods/blue",\n    "interface": "net1",\n    "dns": {}\n}]'

Factory = Callable[[str], k8s.KubeApi]


def make_light(kubeconfig: str) -> k8s.KubeApi:
    return k8s.light_api(kubeconfig, timeout=5.0)


def make_client(kubeconfig: str) -> k8s.KubeApi:
    return k8s.client_api(kubeconfig, timeout=5.0)


@pytest.fixture
def standin() -> Iterator[ApiStandIn]:
    with ApiStandIn() as server:
        server.load([POD, NAD])
        yield server


@pytest.fixture
def kubeconfig(standin: ApiStandIn, tmp_path: Path) -> str:
    path = str(tmp_path / "kubeconfig")
    standin.write_kubeconfig(path)
    return path


@pytest.fixture(params=[make_light, make_client], ids=["light_api", "client_api"])
def factory(request: pytest.FixtureRequest) -> Factory:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def api(factory: Factory, kubeconfig: str) -> Iterator[k8s.KubeApi]:
    client = factory(kubeconfig)
    client.sleep = lambda _s: None  # type: ignore[attr-defined]  # no waiting between retries
    yield client
    close = getattr(client, "close", None)
    if close:
        close()


# --- the contract ----------------------------------------------------------------------------


def test_get_pod_and_nad(api: k8s.KubeApi) -> None:
    pod = api.get_pod("pods", "web")
    assert pod is not None
    assert pod["metadata"]["name"] == "web" and pod["metadata"]["annotations"]["keep"] == "me"
    assert pod["metadata"]["uid"] and pod["metadata"]["resourceVersion"]
    nad = api.get_nad("pods", "blue")
    assert nad is not None
    assert nad["spec"]["config"] == NAD["spec"]["config"]
    assert nad["metadata"]["annotations"]["k8s.v1.cni.cncf.io/resourceName"] == "intel.com/vf"


def test_not_found_is_none(api: k8s.KubeApi, standin: ApiStandIn) -> None:
    assert api.get_pod("pods", "nope") is None
    assert api.get_pod("elsewhere", "web") is None
    assert api.get_nad("pods", "nope") is None
    assert ("GET", "/apis/k8s.cni.cncf.io/v1/namespaces/pods/network-attachment-definitions/nope") in standin.requests


def test_status_written_through_subresource(api: k8s.KubeApi, standin: ApiStandIn) -> None:
    before = standin.get("pod", "pods", "web")
    assert before is not None
    api.set_network_status("pods", "web", STATUS_VALUE)
    after = standin.get("pod", "pods", "web")
    assert after is not None
    assert after["metadata"]["annotations"] == {**POD["metadata"]["annotations"], NETWORK_STATUS: STATUS_VALUE}
    assert int(after["metadata"]["resourceVersion"]) > int(before["metadata"]["resourceVersion"])
    assert after["spec"] == POD["spec"] and after["status"] == POD["status"]
    assert [r for r in standin.requests if r[0] == "PUT"] == [("PUT", "/api/v1/namespaces/pods/pods/web/status")]
    # and readable back through the same client
    pod = api.get_pod("pods", "web")
    assert pod is not None and pod["metadata"]["annotations"][NETWORK_STATUS] == STATUS_VALUE


def test_one_conflict_is_retried(api: k8s.KubeApi, standin: ApiStandIn) -> None:
    standin.fail_next(409, method="PUT", path="/status")
    api.set_network_status("pods", "web", STATUS_VALUE)
    pod = standin.get("pod", "pods", "web")
    assert pod is not None and pod["metadata"]["annotations"][NETWORK_STATUS] == STATUS_VALUE
    assert standin.requests[-4:] == [
        ("GET", "/api/v1/namespaces/pods/pods/web"),
        ("PUT", "/api/v1/namespaces/pods/pods/web/status"),
        ("GET", "/api/v1/namespaces/pods/pods/web"),
        ("PUT", "/api/v1/namespaces/pods/pods/web/status"),
    ]


def test_concurrent_writer_wins_then_we_retry(api: k8s.KubeApi, standin: ApiStandIn) -> None:
    # someone else writes between our GET and PUT: the stand-in answers a real 409 (stale version)
    real_get = api._read_pod  # type: ignore[attr-defined]
    writes: list[int] = []

    def racing_get(namespace: str, name: str) -> Any:
        pod = real_get(namespace, name)
        if not writes:
            writes.append(1)
            conn = http.client.HTTPConnection("127.0.0.1", standin.port, timeout=5)
            body = json.dumps({"metadata": {"annotations": {"other": "writer"}}})
            conn.request(
                "PATCH",
                "/api/v1/namespaces/pods/pods/web/status",
                body,
                {"Content-Type": "application/merge-patch+json"},
            )
            assert conn.getresponse().status == 200
            conn.close()
        return pod

    api._read_pod = racing_get  # type: ignore[attr-defined]
    api.set_network_status("pods", "web", STATUS_VALUE)
    pod = standin.get("pod", "pods", "web")
    assert pod is not None
    assert pod["metadata"]["annotations"]["other"] == "writer"  # the other write survived
    assert pod["metadata"]["annotations"][NETWORK_STATUS] == STATUS_VALUE
    assert [r[0] for r in standin.requests].count("PUT") == 2


def other_writer(standin: ApiStandIn) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", standin.port, timeout=5)
    body = json.dumps({"metadata": {"annotations": {"other": "writer"}}})
    conn.request(
        "PATCH", "/api/v1/namespaces/pods/pods/web/status", body, {"Content-Type": "application/merge-patch+json"}
    )
    assert conn.getresponse().status == 200
    conn.close()


def test_the_status_write_after_a_pod_read_puts_that_read(api: k8s.KubeApi, standin: ApiStandIn) -> None:
    """The ADD's own pod read is the write's first try: one PUT, no second GET."""
    assert api.get_pod("pods", "web") is not None
    mark = len(standin.requests)
    api.set_network_status("pods", "web", STATUS_VALUE)
    assert standin.requests[mark:] == [("PUT", "/api/v1/namespaces/pods/pods/web/status")]
    pod = standin.get("pod", "pods", "web")
    assert pod is not None and pod["metadata"]["annotations"][NETWORK_STATUS] == STATUS_VALUE
    # used once: the next write reads the pod again, as Multus's does
    mark = len(standin.requests)
    api.set_network_status("pods", "web", STATUS_VALUE)
    assert [r[0] for r in standin.requests[mark:]] == ["GET", "PUT"]


def test_a_pod_changed_since_its_read_is_read_again(api: k8s.KubeApi, standin: ApiStandIn) -> None:
    """Someone writes the pod between the ADD's read and the status write: that PUT is a 409
    (its resourceVersion is stale), the write reads the pod again and the other write survives."""
    assert api.get_pod("pods", "web") is not None
    other_writer(standin)
    mark = len(standin.requests)
    api.set_network_status("pods", "web", STATUS_VALUE)
    assert [r[0] for r in standin.requests[mark:]] == ["PUT", "GET", "PUT"]
    pod = standin.get("pod", "pods", "web")
    assert pod is not None
    assert pod["metadata"]["annotations"]["other"] == "writer"
    assert pod["metadata"]["annotations"][NETWORK_STATUS] == STATUS_VALUE


def test_an_old_pod_read_is_not_used(api: k8s.KubeApi, standin: ApiStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    assert api.get_pod("pods", "web") is not None
    monkeypatch.setattr(k8s, "RECENT_POD_SECONDS", -1.0)
    mark = len(standin.requests)
    api.set_network_status("pods", "web", STATUS_VALUE)
    assert [r[0] for r in standin.requests[mark:]] == ["GET", "PUT"]


def test_endless_conflicts_fail(api: k8s.KubeApi, standin: ApiStandIn) -> None:
    standin.fail_next(409, method="PUT", times=10)
    with pytest.raises(ApiFailure) as info:
        api.set_network_status("pods", "web", STATUS_VALUE)
    assert info.value.msg == "status update failed for pod pods/web: still conflicting after 5 attempts"
    assert info.value.cni_code == 103
    assert [r[0] for r in standin.requests].count("PUT") == 5


def test_status_of_missing_pod_is_not_an_error(api: k8s.KubeApi, standin: ApiStandIn) -> None:
    api.set_network_status("pods", "gone", STATUS_VALUE)
    assert standin.requests[-1] == ("GET", "/api/v1/namespaces/pods/pods/gone")
    # deleted between GET and PUT: also fine
    standin.fail_next(404, method="PUT")
    api.set_network_status("pods", "web", STATUS_VALUE)


@pytest.mark.parametrize(
    ("code", "text"), [(500, "500 Internal error occurred: injected failure"), (403, "403 forbidden: injected failure")]
)
def test_server_errors_are_api_failures(api: k8s.KubeApi, standin: ApiStandIn, code: int, text: str) -> None:
    standin.fail_next(code, method="GET")
    with pytest.raises(ApiFailure) as info:
        api.get_pod("pods", "web")
    assert info.value.msg == f"Kubernetes API GET /api/v1/namespaces/pods/pods/web: {text}"
    standin.fail_next(code, path="/status")
    with pytest.raises(ApiFailure, match=str(code)):
        api.set_network_status("pods", "web", STATUS_VALUE)
    standin.fail_next(code)
    with pytest.raises(ApiFailure, match=str(code)):
        api.get_nad("pods", "blue")


@pytest.mark.parametrize(("code", "retriable"), [(500, True), (503, True), (429, False), (403, False), (504, False)])
def test_retriable_failures_as_multus_judges_them(
    api: k8s.KubeApi, standin: ApiStandIn, code: int, retriable: bool
) -> None:
    """Multus's isCriticalRequestRetriable: only InternalError and ServiceUnavailable
    answers (and refused or reset connections) are retried."""
    for call in (lambda: api.get_pod("pods", "web"), lambda: api.get_nad("pods", "blue")):
        standin.fail_next(code, method="GET")
        with pytest.raises(ApiFailure) as info:
            call()
        assert isinstance(info.value, RetriableApiFailure) is retriable, code
        assert info.value.to_cni("1.0.0")["code"] == 103


@pytest.mark.parametrize(
    ("status", "body", "retriable"),
    [
        # a Status object: its reason decides, its code only for a reason apimachinery does not know
        (500, {"kind": "Status", "status": "Failure", "reason": "InternalError", "code": 500}, True),
        (500, {"kind": "Status", "status": "Failure", "reason": "ServiceUnavailable", "code": 500}, True),
        (503, {"kind": "Status", "status": "Failure", "reason": "Timeout", "code": 503}, False),
        (502, {"kind": "Status", "status": "Failure", "reason": "Bad Gateway", "code": 502}, False),
        (599, {"kind": "Status", "status": "Failure", "reason": "Odd", "code": 503}, True),
        (599, {"kind": "Status", "status": "Failure", "code": 500}, True),
        (429, {"kind": "Status", "status": "Failure", "reason": "TooManyRequests", "code": 429}, False),
        # no Status object: client-go's NewGenericServerResponse reading of the HTTP code
        (502, "<html>bad gateway</html>", True),
        (500, {"message": "not a Status"}, True),
        (503, None, True),
        (504, None, False),
        (429, None, False),
        (404, None, False),
    ],
)
def test_retriable_answer_rule(status: int, body: Any, retriable: bool) -> None:
    raw = json.dumps(body) if isinstance(body, dict) else body
    assert k8s.retriable_answer(status, raw) is retriable


def test_client_go_text_of_failures(api: k8s.KubeApi, standin: ApiStandIn) -> None:
    """Beside kvnet's message, each failure keeps client-go's text (the server's Status
    message), which Multus's messages carry; the status write's is worded as Multus's
    SetPodNetworkStatusAnnotation words it."""
    standin.fail_next(500, method="GET")
    with pytest.raises(ApiFailure) as info:
        api.get_pod("pods", "web")
    assert client_go_text(info.value) == "Internal error occurred: injected failure"
    update = (
        "SetPodNetworkStatusAnnotation: failed to update the pod web in out of cluster comm: SetNetworkStatus: "
        "failed to update the pod web in out of cluster comm: status update failed for pod pods/web: "
    )
    standin.fail_next(403, path="/status")
    with pytest.raises(ApiFailure) as info:
        api.set_network_status("pods", "web", STATUS_VALUE)
    assert client_go_text(info.value) == update + "forbidden: injected failure"
    standin.fail_next(500, method="GET")
    with pytest.raises(ApiFailure) as info:
        api.set_network_status("pods", "web", STATUS_VALUE)
    assert client_go_text(info.value) == (
        "SetPodNetworkStatusAnnotation: failed to query the pod web in out of cluster comm: "
        "Internal error occurred: injected failure"
    )
    standin.fail_next(409, path="/status", times=10)
    with pytest.raises(ApiFailure) as info:
        api.set_network_status("pods", "web", STATUS_VALUE)
    assert client_go_text(info.value).startswith(update + 'Operation cannot be fulfilled on pods "web"')


@pytest.mark.parametrize(
    ("method", "path", "status", "body", "text"),
    [
        (
            "GET",
            "/api/v1/namespaces/ns/pods/web",
            503,
            None,
            "the server is currently unable to handle the request (get pods web)",
        ),
        (
            "GET",
            "/apis/k8s.cni.cncf.io/v1/namespaces/ns/network-attachment-definitions/blue",
            502,
            "bad gateway",
            'an error on the server ("bad gateway") has prevented the request from succeeding '
            "(get network-attachment-definitions.k8s.cni.cncf.io blue)",
        ),
        (
            "PUT",
            "/api/v1/namespaces/ns/pods/web/status",
            429,
            None,
            "the server has received too many requests and has asked us to try again later (put pods web)",
        ),
        (
            "GET",
            "/api/v1/namespaces/ns/pods/web",
            500,
            {"kind": "Status", "status": "Failure", "message": "etcd down"},
            "etcd down",
        ),
    ],
)
def test_answer_text_is_client_gos(method: str, path: str, status: int, body: Any, text: str) -> None:
    raw = json.dumps(body) if isinstance(body, dict) else body
    assert k8s.answer_text(method, path, status, raw) == text


def test_retriable_transport_errors() -> None:
    refused = ConnectionRefusedError(111, "Connection refused")
    wrapped = OSError("max retries")
    wrapped.__cause__ = refused
    assert k8s.retriable_transport_error(refused) and k8s.retriable_transport_error(wrapped)
    assert k8s.retriable_transport_error(ConnectionResetError(104, "reset"))
    assert not k8s.retriable_transport_error(http.client.RemoteDisconnected("closed"))  # Go's EOF
    assert not k8s.retriable_transport_error(TimeoutError("timed out"))
    assert not k8s.retriable_transport_error(OSError(113, "No route to host"))


def test_api_down(factory: Factory, standin: ApiStandIn, kubeconfig: str) -> None:
    client = factory(kubeconfig)
    standin.stop()
    for call in (
        lambda: client.get_pod("pods", "web"),
        lambda: client.get_nad("pods", "blue"),
        lambda: client.set_network_status("pods", "web", "[]"),
    ):
        with pytest.raises(ApiFailure) as info:
            call()
        assert "Connection refused" in info.value.msg
        assert isinstance(info.value, RetriableApiFailure)  # Multus retries a refused connection
        assert info.value.to_cni("1.0.0")["code"] == 103


def test_timeout(factory: Factory, tmp_path: Path) -> None:
    # a server that accepts and never answers
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        path = tmp_path / "kubeconfig"
        server = ApiStandIn(port=sock.getsockname()[1])
        server.write_kubeconfig(str(path))
        client = (
            k8s.light_api(str(path), timeout=0.3) if factory is make_light else k8s.client_api(str(path), timeout=0.3)
        )
        start = time.monotonic()
        with pytest.raises(ApiFailure, match=r"timed out|Read timed out"):
            client.get_pod("pods", "web")
        assert time.monotonic() - start < 3


def test_bearer_token(factory: Factory, tmp_path: Path) -> None:
    with ApiStandIn(token="s3cret") as server:
        server.load([POD])
        good = tmp_path / "good"
        server.write_kubeconfig(str(good))
        pod = factory(str(good)).get_pod("pods", "web")
        assert pod is not None and pod["metadata"]["name"] == "web"
        server.token = "other"
        with pytest.raises(ApiFailure, match="401 Unauthorized"):
            factory(str(good)).get_pod("pods", "web")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read kubeconfig {path}: No such file or directory"),
        ("a: [", "kubeconfig {path} is not valid YAML"),
        ("current-context: x\ncontexts: []\n", "kubeconfig {path}: no context named 'x'"),
        ("- 1\n", "kubeconfig {path} is not a kubeconfig (expected a mapping)"),
        (
            "current-context: c\ncontexts: [{name: c, context: {cluster: k}}]\nclusters: [{name: k, cluster: {server: 'ftp://x'}}]\n",
            "kubeconfig server 'ftp://x' is not an http(s) URL",
        ),
        (
            "current-context: c\ncontexts: [{name: c, context: {cluster: k}}]\nclusters: [{name: k, cluster: {}}]\n",
            "kubeconfig {path}: cluster 'k' has no server",
        ),
    ],
)
def test_bad_kubeconfig_light(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "kc"
    if content is not None:
        path.write_text(content)
    with pytest.raises(InvalidConfig) as info:
        k8s.light_api(str(path))
    assert info.value.msg.startswith(message.format(path=path))


def test_bad_kubeconfig_client(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfig, match="cannot use kubeconfig"):
        k8s.client_api(str(tmp_path / "missing"))


def test_kubeconfig_details(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("tok-from-file\n")
    (tmp_path / "kc").write_text(
        """
apiVersion: v1
kind: Config
current-context: ctx
contexts: [{name: ctx, context: {cluster: c1, user: u1}}]
clusters: [{name: c1, cluster: {server: "https://10.0.0.1:6443/", insecure-skip-tls-verify: true, tls-server-name: api.local}}]
users: [{name: u1, user: {tokenFile: token, client-key: keys/k.pem}}]
"""
    )
    conf = k8s.load_kubeconfig(str(tmp_path / "kc"))
    assert conf.server == "https://10.0.0.1:6443"
    assert conf.insecure and conf.tls_server_name == "api.local"
    assert conf.token == "tok-from-file"
    assert conf.key_file == str(tmp_path / "keys" / "k.pem")


def test_exec_credentials_are_refused_by_light_client(tmp_path: Path) -> None:
    (tmp_path / "kc").write_text(
        "current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n"
        "clusters: [{name: k, cluster: {server: 'https://x'}}]\nusers: [{name: u, user: {exec: {command: aws}}}]\n"
    )
    with pytest.raises(InvalidConfig, match="exec/auth-provider"):
        k8s.light_api(str(tmp_path / "kc"))


def test_light_client_does_not_import_kubernetes(kubeconfig: str) -> None:
    code = (
        "import sys; from kvnet.meta import k8s; api = k8s.light_api(sys.argv[1]); "
        "assert api.get_pod('pods', 'web'); print('kubernetes' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, kubeconfig], capture_output=True, text=True, check=True, timeout=30
    )
    assert out.stdout.strip() == "False"


# --- TLS with client certificates (openssl makes the certificates) ------------------------------


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate (EC keys: fast)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make test certificates")
    d = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=kvnet test CA", cwd=d
    )
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name, subj in (("server", "/CN=127.0.0.1"), ("client", "/CN=kvnet-cni")):
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subj, cwd=d)
        extra = ["-extfile", "san.ext"] if name == "server" else []
        openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.crt",
            "-days",
            "2",
            *extra,
            cwd=d,
        )
    return d


def tls_of(pki: Path, *, client: bool) -> StandInTls:
    return StandInTls(
        cert_file=str(pki / "server.crt"),
        key_file=str(pki / "server.key"),
        ca_file=str(pki / "ca.crt"),
        client_cert_file=str(pki / "client.crt") if client else None,
        client_key_file=str(pki / "client.key") if client else None,
    )


def test_https_with_ca_and_client_certificate(factory: Factory, pki: Path, tmp_path: Path) -> None:
    with ApiStandIn(tls=tls_of(pki, client=True)) as server:
        server.load([POD])
        kubeconfig = tmp_path / "kc"
        server.write_kubeconfig(str(kubeconfig))
        assert server.url.startswith("https://127.0.0.1:")
        api = factory(str(kubeconfig))
        api.set_network_status("pods", "web", "[]")
        pod = api.get_pod("pods", "web")
        assert pod is not None and pod["metadata"]["annotations"][NETWORK_STATUS] == "[]"


def test_https_with_embedded_data(factory: Factory, pki: Path, tmp_path: Path) -> None:
    """``*-data`` keys (base64) instead of file paths, as kubeadm writes them."""
    with ApiStandIn(tls=tls_of(pki, client=True)) as server:
        server.load([POD])
        b64 = lambda name: base64.b64encode((pki / name).read_bytes()).decode()  # noqa: E731
        kubeconfig = tmp_path / "kc"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "c",
                    "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
                    "clusters": [
                        {"name": "k", "cluster": {"server": server.url, "certificate-authority-data": b64("ca.crt")}}
                    ],
                    "users": [
                        {
                            "name": "u",
                            "user": {
                                "client-certificate-data": b64("client.crt"),
                                "client-key-data": b64("client.key"),
                            },
                        }
                    ],
                }
            )
        )
        pod = factory(str(kubeconfig)).get_pod("pods", "web")
        assert pod is not None and pod["metadata"]["name"] == "web"


def test_https_unknown_ca_is_refused(factory: Factory, pki: Path, tmp_path: Path) -> None:
    with ApiStandIn(tls=tls_of(pki, client=False)) as server:
        server.load([POD])
        kubeconfig = tmp_path / "kc"
        server.write_kubeconfig(str(kubeconfig))
        text = kubeconfig.read_text().replace(str(pki / "ca.crt"), str(pki / "server.crt"))
        kubeconfig.write_text(text)  # trust the wrong certificate
        with pytest.raises(ApiFailure, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            factory(str(kubeconfig)).get_pod("pods", "web")


# --- the stand-in's own HTTP behaviour ------------------------------------------------------------


def call(
    server: ApiStandIn, method: str, path: str, body: Any = None, content_type: str = "application/json"
) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        data = json.dumps(body) if body is not None else None
        conn.request(method, path, data, {"Content-Type": content_type} if data else {})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_standin_404_status_like_the_real_server(standin: ApiStandIn) -> None:
    assert call(standin, "GET", "/api/v1/namespaces/pods/pods/nope") == (
        404,
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": 'pods "nope" not found',
            "reason": "NotFound",
            "details": {"name": "nope", "kind": "pods"},
            "code": 404,
        },
    )
    code, body = call(standin, "GET", "/apis/k8s.cni.cncf.io/v1/namespaces/pods/network-attachment-definitions/x")
    assert code == 404
    assert body["message"] == 'network-attachment-definitions.k8s.cni.cncf.io "x" not found'
    assert body["details"] == {"name": "x", "kind": "network-attachment-definitions", "group": "k8s.cni.cncf.io"}
    assert call(standin, "GET", "/api/v1/nodes")[0] == 404


def test_standin_409_on_stale_resource_version(standin: ApiStandIn) -> None:
    pod = standin.get("pod", "pods", "web")
    assert pod is not None
    stale = json.loads(json.dumps(pod))
    code, first = call(standin, "PUT", "/api/v1/namespaces/pods/pods/web/status", pod)
    assert code == 200 and int(first["metadata"]["resourceVersion"]) > int(pod["metadata"]["resourceVersion"])
    code, body = call(standin, "PUT", "/api/v1/namespaces/pods/pods/web/status", stale)
    assert code == 409 and body["reason"] == "Conflict"
    assert body["message"] == (
        'Operation cannot be fulfilled on pods "web": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )


def test_standin_status_put_keeps_spec(standin: ApiStandIn) -> None:
    pod = standin.get("pod", "pods", "web")
    assert pod is not None
    changed = json.loads(json.dumps(pod))
    changed["spec"] = {"containers": []}
    changed["status"] = {"phase": "Running"}
    code, body = call(standin, "PUT", "/api/v1/namespaces/pods/pods/web/status", changed)
    assert code == 200 and body["spec"] == POD["spec"] and body["status"] == {"phase": "Running"}


@pytest.mark.parametrize("ctype", ["application/merge-patch+json", "application/strategic-merge-patch+json"])
def test_standin_patch_annotations(standin: ApiStandIn, ctype: str) -> None:
    patch = {"metadata": {"annotations": {NETWORK_STATUS: "[]", "keep": None}}}
    code, body = call(standin, "PATCH", "/api/v1/namespaces/pods/pods/web/status", patch, ctype)
    assert code == 200
    assert body["metadata"]["annotations"] == {"k8s.v1.cni.cncf.io/networks": "blue", NETWORK_STATUS: "[]"}
    code, body = call(standin, "PATCH", "/api/v1/namespaces/pods/pods/web/status", patch, "application/json-patch+json")
    assert code == 415


def test_standin_create_list_delete(standin: ApiStandIn) -> None:
    nad = {
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": "red"},
        "spec": {"config": "{}"},
    }
    base = "/apis/k8s.cni.cncf.io/v1/namespaces/pods/network-attachment-definitions"
    code, created = call(standin, "POST", base, nad)
    assert code == 201 and created["metadata"]["namespace"] == "pods" and created["metadata"]["uid"]
    assert call(standin, "POST", base, nad)[0] == 409
    code, listed = call(standin, "GET", base)
    assert code == 200 and listed["kind"] == "NetworkAttachmentDefinitionList"
    assert [i["metadata"]["name"] for i in listed["items"]] == ["blue", "red"]
    assert call(standin, "DELETE", base + "/red")[0] == 200
    assert call(standin, "DELETE", base + "/red")[0] == 404
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p2", "namespace": "other"}}
    assert call(standin, "POST", "/api/v1/namespaces/pods/pods", pod)[0] == 400  # namespace mismatch
    assert call(standin, "POST", "/api/v1/namespaces/other/pods", pod)[0] == 201
    assert standin.get("Pod", "other", "p2") is not None
    assert call(standin, "DELETE", "/api/v1/namespaces/other/pods/p2")[0] == 200
    assert standin.get("Pod", "other", "p2") is None


def test_standin_discovery(standin: ApiStandIn) -> None:
    assert call(standin, "GET", "/version")[1]["gitVersion"].endswith("kvnet-standin")
    assert call(standin, "GET", "/api")[1]["versions"] == ["v1"]
    groups = call(standin, "GET", "/apis")[1]["groups"]
    assert [g["name"] for g in groups] == ["k8s.cni.cncf.io"]
    resources = call(standin, "GET", "/apis/k8s.cni.cncf.io/v1")[1]["resources"]
    assert resources[0]["name"] == "network-attachment-definitions" and resources[0]["shortNames"] == ["net-attach-def"]


def test_standin_load_rejects_other_kinds() -> None:
    server = ApiStandIn()
    with pytest.raises(ValueError, match="not 'Service'"):
        server.load([{"kind": "Service", "metadata": {"name": "s"}}])
    server.load([{"kind": "List", "items": [POD]}])
    assert server.get("pod", "pods", "web") is not None


# --- `kvnet apiserver` ----------------------------------------------------------------------------


def test_apiserver_command(kvnet_bin_dir: str, tmp_path: Path) -> None:
    objects = tmp_path / "objects.yaml"
    objects.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: pods}\n---\n"
        "apiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\n"
        'metadata: {name: blue, namespace: pods}\nspec: {config: \'{"type": "bridge"}\'}\n'
    )
    kubeconfig = tmp_path / "kubeconfig"
    proc = subprocess.Popen(
        [
            f"{kvnet_bin_dir}/kvnet",
            "apiserver",
            "--listen",
            "127.0.0.1:0",
            "--load",
            str(objects),
            "--kubeconfig",
            str(kubeconfig),
            "--ready",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = ""
        while not line.startswith("ready "):
            line = proc.stderr.readline()
            assert line, "kvnet apiserver exited before it was ready"
        api = k8s.light_api(str(kubeconfig))
        nad = api.get_nad("pods", "blue")
        assert nad is not None and nad["spec"]["config"] == '{"type": "bridge"}'
        api.set_network_status("pods", "web", "[]")
        pod = api.get_pod("pods", "web")
        assert pod is not None and pod["metadata"]["annotations"] == {NETWORK_STATUS: "[]"}
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
        assert proc.returncode == 0
        assert out == ""  # nothing on stdout
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_apiserver_command_bad_file(kvnet_bin_dir: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Service\nmetadata: {name: s}\n")
    out = subprocess.run(
        [f"{kvnet_bin_dir}/kvnet", "apiserver", "--listen", "127.0.0.1:0", "--load", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1 and out.stdout == ""
    assert "serves pods and network-attachment-definitions, not 'Service'" in out.stderr


def test_client_keeps_its_connection(factory: Factory, standin: ApiStandIn, kubeconfig: str) -> None:
    api = factory(kubeconfig)
    for _ in range(3):
        assert api.get_pod("pods", "web") is not None
    api.set_network_status("pods", "web", "[]")
    assert standin.connections == 1
    # the server goes away and comes back on the same port: the stale connection is replaced
    port = standin.port
    standin.stop()
    with ApiStandIn(port=port) as again:
        again.load([POD])
        pod = api.get_pod("pods", "web")
        assert pod is not None and NETWORK_STATUS not in pod["metadata"]["annotations"]
        assert again.connections == 1
    api.close()  # type: ignore[attr-defined]


def test_official_client_discovery_and_typed_calls(standin: ApiStandIn, kubeconfig: str, tmp_path: Path) -> None:
    """The stand-in serves enough discovery for the official client, typed and dynamic."""
    from kubernetes import client, config
    from kubernetes.dynamic import DynamicClient

    api_client = config.new_client_from_config(config_file=kubeconfig)
    try:
        assert client.VersionApi(api_client).get_code().git_version == "v1.30.0+kvnet-standin"
        assert client.CoreApi(api_client).get_api_versions().versions == ["v1"]
        assert [g.name for g in client.ApisApi(api_client).get_api_versions().groups] == ["k8s.cni.cncf.io"]
        assert [p.metadata.name for p in client.CoreV1Api(api_client).list_namespaced_pod("pods").items] == ["web"]
        dynamic = DynamicClient(api_client, cache_file=str(tmp_path / "discovery.json"))  # not in /tmp
        nads = dynamic.resources.get(api_version="k8s.cni.cncf.io/v1", kind="NetworkAttachmentDefinition")
        assert nads.get(namespace="pods", name="blue").spec.config == NAD["spec"]["config"]
    finally:
        api_client.close()


def test_standin_on_ipv6_loopback(tmp_path: Path) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this Python build")
    try:
        server = ApiStandIn("::1")
        server.start()
    except OSError as err:
        pytest.skip(f"cannot listen on ::1 here: {err}")
    try:
        server.load([POD])
        assert server.url.startswith("http://[::1]:")
        server.write_kubeconfig(str(tmp_path / "kc"))
        pod = k8s.light_api(str(tmp_path / "kc")).get_pod("pods", "web")
        assert pod is not None
    finally:
        server.stop()


def test_rotated_token_is_picked_up(factory: Factory, tmp_path: Path) -> None:
    """A 401 makes the client re-read its kubeconfig once (service-account tokens rotate)."""
    with ApiStandIn(token="first") as server:
        server.load([POD])
        kubeconfig = tmp_path / "kc"
        server.write_kubeconfig(str(kubeconfig))
        api = factory(str(kubeconfig))
        assert api.get_pod("pods", "web") is not None
        server.token = "second"
        server.write_kubeconfig(str(kubeconfig))
        assert api.get_pod("pods", "web") is not None
        assert [r for r in server.requests if r[0] == "GET"][-2:] == [("GET", "/api/v1/namespaces/pods/pods/web")] * 2
        server.token = "third"  # the kubeconfig still says "second": one re-read, then the 401 stands
        with pytest.raises(ApiFailure, match="401 Unauthorized"):
            api.get_pod("pods", "web")


# --- the stand-in's optimistic concurrency, as a property ------------------------------------------

ops = st.lists(
    st.tuples(
        st.sampled_from(["put-current", "put-stale", "put-unconditional", "patch", "patch-stale"]),
        st.sampled_from(["a", "b", "c"]),
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=25, deadline=None)
@given(ops)
def test_standin_resource_versions(sequence: list[tuple[str, str]]) -> None:
    with ApiStandIn() as server:
        server.load([POD])
        path = "/api/v1/namespaces/pods/pods/web/status"
        current = server.get("pod", "pods", "web")
        assert current is not None
        stale = current["metadata"]["resourceVersion"]
        expected = dict(current["metadata"]["annotations"])
        seen = {int(stale)}
        for op, value in sequence:
            rv = current["metadata"]["resourceVersion"]
            body = json.loads(json.dumps(current))
            body["metadata"]["annotations"] = {**expected, "k": value}
            if op.startswith("put"):
                if op == "put-stale" and stale != rv:
                    body["metadata"]["resourceVersion"] = stale
                elif op == "put-unconditional":
                    body["metadata"].pop("resourceVersion")
                code, answer = call(server, "PUT", path, body)
            else:
                patch: dict[str, Any] = {"metadata": {"annotations": {"k": value}}}
                if op == "patch-stale" and stale != rv:
                    patch["metadata"]["resourceVersion"] = stale
                code, answer = call(server, "PATCH", path, patch, "application/merge-patch+json")
            if op.endswith("stale") and stale != rv:
                assert code == 409 and answer["reason"] == "Conflict"
                continue
            assert code == 200
            new_rv = int(answer["metadata"]["resourceVersion"])
            assert new_rv > max(seen)
            seen.add(new_rv)
            expected["k"] = value
            stale, current = rv, answer
            assert answer["metadata"]["annotations"] == expected
        assert server.get("pod", "pods", "web") == current


def test_client_side_validation_is_an_api_failure(kubeconfig: str, standin: ApiStandIn) -> None:
    """The official client validates the pod it writes back; its refusal is an ApiFailure, not a crash."""
    standin.load(
        [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bare", "namespace": "default"}, "spec": {}}]
    )
    api = make_client(kubeconfig)
    with pytest.raises(ApiFailure, match="the client refused the object"):
        api.set_network_status("default", "bare", "[]")
    light = make_light(kubeconfig)
    light.set_network_status("default", "bare", "[]")
    assert standin.get("pod", "default", "bare")["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"] == "[]"


# --- transient failures (RetryingApi) and no head-of-line blocking -----------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("code", [500, 503, 429])
def test_one_transient_failure_does_not_fail_the_call(api: k8s.KubeApi, standin: ApiStandIn, code: int) -> None:
    """One 500, 503 or 429 on a NAD read or the status write: retried, the call succeeds
    (without the wrapper the same answer fails it: test_server_errors_are_api_failures)."""
    clock = _Clock()
    retrying = k8s.RetryingApi(api, sleep=clock.sleep, clock=clock)
    standin.fail_next(code, method="GET", path="/blue")
    assert retrying.get_nad("pods", "blue") is not None
    standin.fail_next(code, method="PUT", path="/status")
    retrying.set_network_status("pods", "web", STATUS_VALUE)
    pod = standin.get("Pod", "pods", "web")
    assert pod is not None and pod["metadata"]["annotations"][NETWORK_STATUS] == STATUS_VALUE
    assert clock.slept == [0.1, 0.1]
    if code == 429:  # the pod read: only a 429 is retried here (pod.get_pod polls the rest)
        standin.fail_next(429, method="GET", path="/pods/web")
        assert retrying.get_pod("pods", "web") is not None


def test_transient_failures_end_at_the_bound(api: k8s.KubeApi, standin: ApiStandIn) -> None:
    clock = _Clock()
    retrying = k8s.RetryingApi(api, retry_for=2.0, sleep=clock.sleep, clock=clock)
    standin.fail_next(503, method="GET", path="/blue", times=50)
    with pytest.raises(RetriableApiFailure):
        retrying.get_nad("pods", "blue")
    assert clock.slept == [0.1, 0.2, 0.4, 0.8] and clock.now <= 2.0
    # not transient: raised at once
    clock.slept.clear()
    standin.fail_next(403, method="GET", path="/web")
    with pytest.raises(ApiFailure):
        retrying.get_pod("pods", "web")
    assert clock.slept == []


def test_retry_after_is_honoured() -> None:
    """The server's suggested delay (Retry-After, or the Status's retryAfterSeconds) is
    waited; one beyond the bound ends the retries."""
    throttled = json.dumps(
        {
            "kind": "Status",
            "status": "Failure",
            "reason": "TooManyRequests",
            "code": 429,
            "details": {"retryAfterSeconds": 2},
        }
    )
    err = k8s._answer_failure("GET", "/api/v1/namespaces/a/pods/b", 429, throttled)
    assert isinstance(err, k8s.ThrottledApiFailure) and err.retry_after == 2.0
    assert not isinstance(err, RetriableApiFailure)  # Multus's GetPod rule does not retry a 429
    err = k8s._answer_failure("GET", "/api/v1/namespaces/a/pods/b", 503, None, "3")
    assert isinstance(err, k8s.RetriableAfterFailure) and err.retry_after == 3.0
    answers: list[Exception | str] = [err, "ok"]

    class Api:
        def get_nad(self, namespace: str, name: str) -> Any:
            answer = answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return {"ok": answer}

    clock = _Clock()
    assert k8s.RetryingApi(Api(), sleep=clock.sleep, clock=clock).get_nad("a", "b") == {"ok": "ok"}  # type: ignore[arg-type]
    assert clock.slept == [3.0]
    answers[:] = [k8s._answer_failure("GET", "/x", 503, None, "30"), "ok"]
    with pytest.raises(k8s.RetriableAfterFailure):
        k8s.RetryingApi(Api(), sleep=clock.sleep, clock=clock).get_nad("a", "b")  # type: ignore[arg-type]


def test_light_client_serves_threads_side_by_side(tmp_path: Path) -> None:
    """One slow answer does not hold up another thread's request on the same client (the
    daemon shares one client between pods): pod b is answered while pod a's read waits."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    release = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            if self.path.endswith("/pods/a"):
                release.wait(10)
            body = json.dumps({"kind": "Pod", "metadata": {"name": self.path.rsplit("/", 1)[-1]}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        api = k8s.LightApi(k8s.KubeConfig(server=f"http://127.0.0.1:{server.server_address[1]}"), timeout=10)
        slow = threading.Thread(target=api.get_pod, args=("ns", "a"))
        slow.start()
        time.sleep(0.2)  # pod a's request is in flight
        start = time.monotonic()
        pod = api.get_pod("ns", "b")
        took = time.monotonic() - start
        release.set()
        slow.join(10)
        assert pod is not None and pod["metadata"]["name"] == "b"
        assert took < 2.0, f"pod b waited {took:.2f}s behind pod a"
        api.close()
    finally:
        release.set()
        server.shutdown()
        server.server_close()
