"""The API stand-in against the real kube-apiserver: the same requests to both, the same
answers (status code and Status body) where kvnet relies on them (root: the real server
listens on the lab's API address).

The stand-in stays only for faults the real server cannot be made to produce (5xx, slow
answers, conflict storms; docs/api-standin.md); this lane keeps what it does answer true.
"""

from __future__ import annotations

import copy
import http.client
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from kvnet.lab.apiserver import ApiStandIn
from kvnet.lab.kube import KubeCluster
from kvnet.meta.status import NETWORK_STATUS

pytestmark = pytest.mark.root

NS = "fidelity"


def pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "annotations": {"keep": "me", "drop": "me"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }


NAD_BASE = f"/apis/k8s.cni.cncf.io/v1/namespaces/{NS}/network-attachment-definitions"
POD_BASE = f"/api/v1/namespaces/{NS}/pods"


class Both:
    """One request, sent to the real server and to the stand-in."""

    def __init__(self, kube: KubeCluster, standin: ApiStandIn) -> None:
        self.kube = kube
        self.standin = standin

    def _standin(self, method: str, path: str, body: Any, ctype: str) -> tuple[int, Any]:
        conn = http.client.HTTPConnection(self.standin.host, self.standin.port, timeout=5)
        try:
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, path, body=data, headers={"Content-Type": ctype})
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read() or b"{}")
        finally:
            conn.close()

    def call(
        self, method: str, path: str, body: Any = None, ctype: str = "application/json"
    ) -> tuple[tuple[int, Any], tuple[int, Any]]:
        real = self.kube.raw(method, path, copy.deepcopy(body), content_type=ctype)
        fake = self._standin(method, path, copy.deepcopy(body), ctype)
        return real, fake


@pytest.fixture
def both(kube: KubeCluster) -> Iterator[Both]:
    kube.ensure_namespace(NS)
    with ApiStandIn() as standin:
        yield Both(kube, standin)


def status_body(answer: tuple[int, Any]) -> tuple[int, dict[str, Any]]:
    code, body = answer
    return code, {k: body.get(k) for k in ("kind", "apiVersion", "status", "message", "reason", "details", "code")}


def test_not_found_bodies_are_the_real_ones(both: Both) -> None:
    for path in (f"{POD_BASE}/nope", f"{NAD_BASE}/nope", f"{POD_BASE}/nope/status"):
        real, fake = both.call("GET", path)
        assert status_body(fake) == status_body(real), path
        assert real[0] == 404


def test_create_twice_and_delete_twice(both: Both) -> None:
    name = f"p-{uuid.uuid4().hex[:6]}"
    real, fake = both.call("POST", POD_BASE, pod(name))
    assert real[0] == fake[0] == 201
    assert real[1]["metadata"]["namespace"] == fake[1]["metadata"]["namespace"] == NS
    real, fake = both.call("POST", POD_BASE, pod(name))
    assert status_body(fake) == status_body(real) and real[0] == 409
    real, fake = both.call(
        "DELETE", f"{POD_BASE}/{name}", {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0}
    )
    assert real[0] == fake[0] == 200
    real, fake = both.call("DELETE", f"{POD_BASE}/{name}")
    assert status_body(fake) == status_body(real) and real[0] == 404


def test_namespace_mismatch_is_refused_alike(both: Both) -> None:
    body = pod("p-mismatch")
    body["metadata"]["namespace"] = "elsewhere"
    real, fake = both.call("POST", POD_BASE, body)
    assert real[0] == fake[0] == 400
    assert fake[1]["message"] == real[1]["message"]


def test_status_put_conflict_and_spec_kept(both: Both) -> None:
    name = f"p-{uuid.uuid4().hex[:6]}"
    real_pod, fake_pod = (answer[1] for answer in both.call("POST", POD_BASE, pod(name)))
    answers = []
    senders = (
        (real_pod, lambda method, path, body: both.kube.raw(method, path, body)),
        (fake_pod, lambda method, path, body: both._standin(method, path, body, "application/json")),
    )
    for server_pod, send in senders:
        changed = copy.deepcopy(server_pod)
        changed["metadata"]["annotations"][NETWORK_STATUS] = "[]"
        changed["spec"]["containers"][0]["image"] = "other"  # the status subresource ignores spec
        first = send("PUT", f"{POD_BASE}/{name}/status", changed)
        stale = send("PUT", f"{POD_BASE}/{name}/status", changed)  # the same resourceVersion again
        answers.append((first, stale, server_pod))
    (real_first, real_stale, real_before), (fake_first, fake_stale, fake_before) = answers
    assert real_first[0] == fake_first[0] == 200
    assert real_first[1]["spec"] == real_before["spec"] and fake_first[1]["spec"] == fake_before["spec"]
    assert real_first[1]["metadata"]["annotations"] == fake_first[1]["metadata"]["annotations"]
    assert status_body(fake_stale) == status_body(real_stale) and real_stale[0] == 409
    both.kube.delete("Pod", NS, name)


@pytest.mark.parametrize("ctype", ["application/merge-patch+json", "application/strategic-merge-patch+json"])
def test_annotation_patch_on_status(both: Both, ctype: str) -> None:
    name = f"p-{uuid.uuid4().hex[:6]}"
    both.call("POST", POD_BASE, pod(name))
    patch = {"metadata": {"annotations": {NETWORK_STATUS: "[]", "drop": None}}}
    real, fake = both.call("PATCH", f"{POD_BASE}/{name}/status", patch, ctype)
    assert real[0] == fake[0] == 200
    assert (
        real[1]["metadata"]["annotations"] == fake[1]["metadata"]["annotations"] == {"keep": "me", NETWORK_STATUS: "[]"}
    )
    both.kube.delete("Pod", NS, name)


def test_nad_list_kind_and_order(both: Both) -> None:
    names = sorted(f"n-{uuid.uuid4().hex[:6]}" for _ in range(3))
    for name in reversed(names):
        nad = {"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition", "metadata": {"name": name}}
        nad["spec"] = {"config": "{}"}
        real, fake = both.call("POST", NAD_BASE, nad)
        assert real[0] == fake[0] == 201
    real, fake = both.call("GET", NAD_BASE)
    assert real[1]["kind"] == fake[1]["kind"] == "NetworkAttachmentDefinitionList"
    ours = [i["metadata"]["name"] for i in fake[1]["items"]]
    theirs = [i["metadata"]["name"] for i in real[1]["items"] if i["metadata"]["name"] in names]
    assert ours == theirs == names  # both list by name
    for name in names:
        both.kube.delete("nad", NS, name)
