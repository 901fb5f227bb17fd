"""A kubeconfig's ``tokenFile`` as both API clients read it: client-go's cached file token
source (re-read after 50 s, the last good token kept), a re-read at once on a 401, the
file winning over an inline token. Against the API stand-in with a bearer token, through
the kubeconfig ``kvnet install --token-file`` writes."""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kvnet import cli
from kvnet.core.errors import ApiFailure, InvalidConfig
from kvnet.lab.apiserver import ApiStandIn
from kvnet.meta import k8s

POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "web", "namespace": "pods"},
    "spec": {"containers": [{"name": "c", "image": "busybox"}]},
}
POD_PATH = ("GET", "/api/v1/namespaces/pods/pods/web")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def rotate(path: Path, token: str) -> None:
    """Replace the token file atomically, as the kubelet's atomic writer does."""
    tmp = path.with_name(f".{path.name}.new")
    tmp.write_text(token + "\n")
    os.replace(tmp, path)


def test_token_file_is_re_read_after_fifty_seconds(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("first\n")
    clock = Clock()
    source = k8s.TokenFile(str(path), k8s.read_token_file(str(path)), clock=clock)
    assert source.token() == "first"
    rotate(path, "second")
    clock.now += 49.9
    assert source.token() == "first"  # still cached
    clock.now += 0.1
    assert source.token() == "second"
    rotate(path, "third")
    clock.now += 10
    assert source.token() == "second" and source.current == "second"
    assert source.refresh() is True and source.current == "third"  # after a 401: at once
    assert source.refresh() is False


@pytest.mark.parametrize("damage", ["missing", "empty"])
def test_a_failed_re_read_keeps_the_last_token(tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "token"
    path.write_text("first")
    clock = Clock()
    source = k8s.TokenFile(str(path), "first", clock=clock)
    if damage == "missing":
        path.unlink()
    else:
        path.write_text(" \n")
    clock.now += 60
    with caplog.at_level(logging.WARNING, logger="kvnet.meta.k8s"):
        assert source.token() == "first"
        assert source.refresh() is False
    assert "unable to rotate token" in caplog.text
    rotate(path, "second")  # tried again on the next call, not a minute later
    clock.now += 1
    assert source.token() == "second"


def test_read_token_file(tmp_path: Path) -> None:
    (tmp_path / "t").write_text("  tok \n")
    assert k8s.read_token_file(str(tmp_path / "t")) == "tok"
    (tmp_path / "e").write_text("\n")
    with pytest.raises(InvalidConfig, match="read empty token from file"):
        k8s.read_token_file(str(tmp_path / "e"))
    with pytest.raises(InvalidConfig, match=r"cannot read tokenFile .*/m: No such file or directory"):
        k8s.read_token_file(str(tmp_path / "m"))


def kubeconfig_with(path: Path, user: dict[str, Any]) -> str:
    path.write_text(
        yaml.safe_dump(
            {
                "current-context": "c",
                "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
                "clusters": [{"name": "k", "cluster": {"server": "http://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": user}],
            }
        )
    )
    return str(path)


def test_the_token_file_wins_over_an_inline_token(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("from-file\n")
    both = kubeconfig_with(tmp_path / "kc", {"token": "inline", "tokenFile": "token"})
    assert k8s.load_kubeconfig(both).token == "from-file"
    # an unreadable file falls back to the inline token (client-go's bearer token) ...
    (tmp_path / "token").unlink()
    assert k8s.load_kubeconfig(both).token == "inline"
    # ... and without one it is an error naming the file
    only = kubeconfig_with(tmp_path / "kc2", {"tokenFile": "token"})
    with pytest.raises(InvalidConfig, match=r"kubeconfig .*/kc2: cannot read tokenFile .*/token: No such file"):
        k8s.load_kubeconfig(only)
    with pytest.raises(InvalidConfig, match=r"cannot use kubeconfig .*/kc2"):
        k8s.client_api(only)


Factory = Callable[[str], k8s.KubeApi]


def make_light(kubeconfig: str) -> k8s.KubeApi:
    return k8s.light_api(kubeconfig, timeout=5.0)


def make_client(kubeconfig: str) -> k8s.KubeApi:
    return k8s.client_api(kubeconfig, timeout=5.0)


@pytest.fixture(params=[make_light, make_client], ids=["light_api", "client_api"])
def factory(request: pytest.FixtureRequest) -> Factory:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def server() -> Iterator[ApiStandIn]:
    with ApiStandIn(token="first") as standin:
        standin.load([POD])
        yield standin


def installed_kubeconfig(tmp_path: Path, server: ApiStandIn, token_file: Path) -> str:
    """The kubeconfig ``kvnet install --token-file`` writes for the stand-in."""
    kubeconfig = tmp_path / "kvnet.kubeconfig"
    args = ["install", "--bin-dir", str(tmp_path / "bin"), "--conf-dir", str(tmp_path / "net.d")]
    args += ["--cluster-network", "cbr0", "--kubeconfig", str(kubeconfig)]
    args += ["--token-file", str(token_file), "--server", server.url]
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main(args) == 0
    return str(kubeconfig)


def test_a_rotated_token_is_used_after_one_401(factory: Factory, server: ApiStandIn, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    api = factory(installed_kubeconfig(tmp_path, server, token))
    assert api.get_pod("pods", "web") is not None
    # the old token is revoked and the file holds a new one: one 401, one re-read, one retry
    server.token = "second"
    rotate(token, "second")
    before = len(server.requests)
    assert api.get_pod("pods", "web") is not None
    assert server.requests[before:] == [POD_PATH, POD_PATH]
    # and the writes too (GET + PUT pods/status)
    api.set_network_status("pods", "web", "[]")
    # a token the file does not hold: one re-read, then the 401 stands
    server.token = "third"
    with pytest.raises(ApiFailure, match="401 Unauthorized"):
        api.get_pod("pods", "web")


def test_a_rotated_token_is_read_before_it_is_needed(
    factory: Factory, server: ApiStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The periodic re-read (here: at every request) picks up a rotated file without a 401."""
    monkeypatch.setattr(k8s, "TOKEN_FILE_PERIOD", k8s.TOKEN_FILE_LEEWAY)
    token = tmp_path / "token"
    token.write_text("first\n")
    api = factory(installed_kubeconfig(tmp_path, server, token))
    assert api.get_pod("pods", "web") is not None
    rotate(token, "second")
    server.token = "second"
    before = len(server.requests)
    assert api.get_pod("pods", "web") is not None
    assert server.requests[before:] == [POD_PATH]


def test_without_a_periodic_re_read_the_cached_token_is_used(
    factory: Factory, server: ApiStandIn, tmp_path: Path
) -> None:
    """Within the minute the file is not looked at: a rotated file whose old token still
    works changes nothing (client-go's cache)."""
    token = tmp_path / "token"
    token.write_text("first\n")
    api = factory(installed_kubeconfig(tmp_path, server, token))
    rotate(token, "second")
    assert api.get_pod("pods", "web") is not None  # still "first", which the server accepts
