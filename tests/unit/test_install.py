"""``kvnet install`` writing the kubeconfig of a ServiceAccount token file, as a DaemonSet's
install step does: tokenFile (never the token itself), the CA file, the server from the
options or the in-cluster environment, and files that others cannot read."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from kvnet import cli
from kvnet.commands import install
from kvnet.core.errors import InvalidConfig
from kvnet.meta import k8s

TOKEN = "eyJhbGciOiJSUzI1NiJ9.sa-token.sig"


def run_install(tmp_path: Path, *extra: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(
            [
                "install",
                "--bin-dir",
                str(tmp_path / "bin"),
                "--conf-dir",
                str(tmp_path / "net.d"),
                "--cni-dir",
                str(tmp_path / "cache"),
                "--cluster-network",
                "cbr0",
                *extra,
            ]
        )
    return rc, out.getvalue(), err.getvalue()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def secrets(tmp_path: Path) -> Path:
    """A ServiceAccount folder as the kubelet projects it."""
    folder = tmp_path / "serviceaccount"
    folder.mkdir()
    (folder / "token").write_text(TOKEN)
    (folder / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    return folder


def test_kubeconfig_names_the_token_file(tmp_path: Path, secrets: Path) -> None:
    kubeconfig = tmp_path / "net.d" / "kvnet.d" / "kvnet.kubeconfig"
    args = ["--kubeconfig", str(kubeconfig), "--token-file", str(secrets / "token")]
    args += ["--ca-file", str(secrets / "ca.crt"), "--server", "https://10.96.0.1:443"]
    rc, out, err = run_install(tmp_path, *args)
    assert rc == 0, err
    assert f"installed: {kubeconfig}\n" in out
    doc = yaml.safe_load(kubeconfig.read_text())
    assert doc["users"] == [{"name": "kvnet", "user": {"tokenFile": str(secrets / "token")}}]
    assert doc["clusters"] == [
        {
            "name": "kvnet",
            "cluster": {"server": "https://10.96.0.1:443", "certificate-authority": str(secrets / "ca.crt")},
        }
    ]
    assert TOKEN not in kubeconfig.read_text()  # named, never copied: a rotated token is read where it is
    conflist = tmp_path / "net.d" / "00-kvnet.conflist"
    assert json.loads(conflist.read_text())["plugins"][0]["kubeconfig"] == str(kubeconfig)
    assert mode(kubeconfig) == 0o600 and mode(conflist) == 0o600
    # what kvnet's clients make of it
    conf = k8s.load_kubeconfig(str(kubeconfig))
    assert (conf.server, conf.token, conf.token_file, conf.ca_file) == (
        "https://10.96.0.1:443",
        TOKEN,
        str(secrets / "token"),
        str(secrets / "ca.crt"),
    )
    assert k8s.token_file_of(str(kubeconfig)) == str(secrets / "token")
    # again: nothing changes, also not when the token rotates (the kubeconfig only names it)
    (secrets / "token").write_text("rotated")
    rc, out, _ = run_install(tmp_path, *args)
    assert rc == 0 and "installed" not in out and "updated" not in out


def test_in_cluster_takes_the_server_from_the_pod_environment(
    tmp_path: Path, secrets: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.setattr(install, "SERVICE_ACCOUNT_TOKEN", str(secrets / "token"))
    monkeypatch.setattr(install, "SERVICE_ACCOUNT_CA", str(secrets / "ca.crt"))
    kubeconfig = tmp_path / "kc"
    rc, _, err = run_install(tmp_path, "--mode", "thick", "--in-cluster", "--kubeconfig", str(kubeconfig))
    assert rc == 0, err
    conf = k8s.load_kubeconfig(str(kubeconfig))
    assert (conf.server, conf.token_file, conf.ca_file) == (
        "https://10.96.0.1:443",
        str(secrets / "token"),
        str(secrets / "ca.crt"),
    )
    # explicit options win over the in-cluster defaults
    (tmp_path / "other").write_text("other-token\n")
    rc, _, err = run_install(
        tmp_path,
        *("--mode", "thick", "--in-cluster", "--kubeconfig", str(kubeconfig), "--token-file", str(tmp_path / "other")),
    )
    assert rc == 0, err
    assert k8s.load_kubeconfig(str(kubeconfig)).token == "other-token"


@pytest.mark.parametrize(
    ("env", "server"),
    [
        ({"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}, "https://10.96.0.1:443"),
        ({"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443"}, "https://[fd00::1]:6443"),
        (
            {"KUBERNETES_SERVICE_HOST": "api", "KUBERNETES_SERVICE_PORT": "80", "KUBERNETES_SERVICE_PROTOCOL": "http"},
            "http://api:80",
        ),
    ],
)
def test_in_cluster_server(env: dict[str, str], server: str) -> None:
    assert install.in_cluster_server(env) == server


def test_in_cluster_server_needs_the_environment() -> None:
    with pytest.raises(InvalidConfig, match="needs --server, or KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT"):
        install.in_cluster_server({"KUBERNETES_SERVICE_HOST": "10.96.0.1"})


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--token-file", "{sa}/token", "--server", "https://x"], "--token-file needs --kubeconfig"),
        (["--kubeconfig", "{tmp}/kc", "--server", "https://x"], "--ca-file and --server describe a kubeconfig"),
        (
            ["--kubeconfig", "{tmp}/kc", "--token-file", "{tmp}/missing", "--server", "https://x"],
            "cannot read --token-file {tmp}/missing: No such file or directory",
        ),
        (["--kubeconfig", "{tmp}/kc", "--token-file", "{tmp}/empty", "--server", "https://x"], "is empty"),
        (
            ["--kubeconfig", "{tmp}/kc", "--token-file", "{sa}/token", "--ca-file", "{tmp}/nope", "--server", "x"],
            "cannot read --ca-file {tmp}/nope",
        ),
        (["--kubeconfig", "{tmp}/kc", "--token-file", "{sa}/token"], "needs --server, or KUBERNETES_SERVICE_HOST"),
    ],
)
def test_errors_name_the_option(
    tmp_path: Path, secrets: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    (tmp_path / "empty").write_text("\n")
    rc, _, err = run_install(tmp_path, *(a.format(tmp=tmp_path, sa=secrets) for a in args))
    assert rc == 1
    assert err.startswith("kvnet install: ") and message.format(tmp=tmp_path) in err
    assert not (tmp_path / "kc").exists() and not (tmp_path / "net.d" / "00-kvnet.conflist").exists()


def test_a_readable_conflist_from_an_older_install_is_made_private(tmp_path: Path) -> None:
    rc, _, err = run_install(tmp_path, "--kubeconfig", "/etc/kvnet/kubeconfig")
    assert rc == 0, err
    conflist = tmp_path / "net.d" / "00-kvnet.conflist"
    conflist.chmod(0o644)
    rc, out, _ = run_install(tmp_path, "--kubeconfig", "/etc/kvnet/kubeconfig")
    assert rc == 0 and f"updated: {conflist}\n" in out
    assert mode(conflist) == 0o600
    assert mode(tmp_path / "bin" / "kvnet-shim") == 0o755


def test_shim_python_names_the_nodes_interpreter(tmp_path: Path) -> None:
    rc, _, err = run_install(tmp_path, "--kubeconfig", "/k", "--mode", "thick", "--shim-python", "/usr/bin/python3")
    assert rc == 0, err
    assert (tmp_path / "bin" / "kvnet-shim").read_text().startswith("#!/usr/bin/python3 -IS\n")


def test_a_private_default_network_stays_private_in_the_conflist(tmp_path: Path) -> None:
    """The node's default network is embedded as ``delegates[0]``; a 0600 source holding a
    token must not come out readable by every user, whatever the umask."""
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    source = conf_dir / "10-calico.conflist"
    secret = {"cniVersion": "1.0.0", "name": "k8s-pod-network", "plugins": [{"type": "calico", "token": TOKEN}]}
    source.write_text(json.dumps(secret))
    source.chmod(0o600)
    old = os.umask(0)
    try:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cli.main(["install", "--bin-dir", str(tmp_path / "bin"), "--conf-dir", str(conf_dir)])
    finally:
        os.umask(old)
    assert rc == 0, err.getvalue()
    conflist = conf_dir / install.CONF_NAME
    assert json.loads(conflist.read_text())["plugins"][0]["delegates"] == [secret]
    assert mode(conflist) == 0o600
    assert sorted(p.name for p in conf_dir.iterdir()) == [install.CONF_NAME, source.name]  # no temp file left


@pytest.fixture
def in_cluster(secrets: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The pod environment: the service's address and the projected ServiceAccount files."""
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.setattr(install, "SERVICE_ACCOUNT_TOKEN", str(secrets / "token"))
    monkeypatch.setattr(install, "SERVICE_ACCOUNT_CA", str(secrets / "ca.crt"))
    return secrets


def test_thin_in_cluster_writes_the_token_and_the_ca_into_the_kubeconfig(tmp_path: Path, in_cluster: Path) -> None:
    """kvnet-cni runs on the node, where the pod's projected files are not: the kubeconfig
    carries them (Multus's multus.kubeconfig), and a rotated token rewrites it."""
    kubeconfig = tmp_path / "net.d" / "kvnet.d" / "kvnet.kubeconfig"
    rc, out, err = run_install(tmp_path, "--mode", "thin", "--in-cluster", "--kubeconfig", str(kubeconfig))
    assert rc == 0, err
    assert f"installed: {kubeconfig}\n" in out
    doc = yaml.safe_load(kubeconfig.read_text())
    assert doc["users"] == [{"name": "kvnet", "user": {"token": TOKEN}}]
    assert doc["clusters"][0]["cluster"] == {
        "server": "https://10.96.0.1:443",
        "certificate-authority-data": base64.b64encode((in_cluster / "ca.crt").read_bytes()).decode(),
    }
    assert str(in_cluster) not in kubeconfig.read_text()  # no path into the pod
    assert mode(kubeconfig) == 0o600
    conf = k8s.load_kubeconfig(str(kubeconfig))
    assert (conf.token, conf.token_file, conf.ca_file) == (TOKEN, None, None)
    assert conf.ca_data == (in_cluster / "ca.crt").read_bytes()
    rc, out, _ = run_install(tmp_path, "--mode", "thin", "--in-cluster", "--kubeconfig", str(kubeconfig))
    assert rc == 0 and "installed" not in out and "updated" not in out
    (in_cluster / "token").write_text("rotated\n")
    rc, out, _ = run_install(tmp_path, "--mode", "thin", "--in-cluster", "--kubeconfig", str(kubeconfig))
    assert rc == 0 and out.count("updated: ") == 1 and f"updated: {kubeconfig}\n" in out
    assert k8s.load_kubeconfig(str(kubeconfig)).token == "rotated"


def test_kubeconfig_only_writes_nothing_else(tmp_path: Path, in_cluster: Path) -> None:
    kubeconfig = tmp_path / "agent" / "kubeconfig"
    rc, out, err = run_install(tmp_path, "--in-cluster", "--kubeconfig-only", "--kubeconfig", str(kubeconfig))
    assert rc == 0, err
    assert out == f"installed: {kubeconfig}\n"
    assert not (tmp_path / "bin").exists() and not (tmp_path / "net.d").exists()
    # read inside the pod that has the token: named by tokenFile, as for the daemon
    assert k8s.load_kubeconfig(str(kubeconfig)).token_file == str(in_cluster / "token")
    rc, _, err = run_install(tmp_path, "--kubeconfig-only", "--kubeconfig", str(kubeconfig))
    assert rc == 1 and "--kubeconfig-only needs --token-file or --in-cluster" in err


def test_watch_rewrites_what_changed_until_sigterm(tmp_path: Path, in_cluster: Path) -> None:
    """``--watch``: the thin DaemonSet's long-running container keeps the node's files."""
    kubeconfig = tmp_path / "kvnet.kubeconfig"
    env = {
        **os.environ,
        "KUBERNETES_SERVICE_HOST": "10.96.0.1",
        "KUBERNETES_SERVICE_PORT": "443",
    }
    script = (
        "import sys; from kvnet import cli; from kvnet.commands import install; "
        f"install.SERVICE_ACCOUNT_TOKEN = {str(in_cluster / 'token')!r}; "
        f"install.SERVICE_ACCOUNT_CA = {str(in_cluster / 'ca.crt')!r}; "
        "sys.exit(cli.main(sys.argv[1:]))"
    )
    argv = [sys.executable, "-c", script, "install", "--mode", "thin", "--in-cluster"]
    argv += ["--kubeconfig", str(kubeconfig), "--bin-dir", str(tmp_path / "bin"), "--conf-dir", str(tmp_path / "net.d")]
    argv += ["--cni-dir", str(tmp_path / "cache"), "--cluster-network", "cbr0", "--watch", "0.1"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        conflist = tmp_path / "net.d" / install.CONF_NAME
        wait_until(lambda: conflist.exists() and kubeconfig.exists())
        (in_cluster / "token").write_text("rotated")
        wait_until(lambda: "rotated" in kubeconfig.read_text())
        conflist.unlink()
        (tmp_path / "bin" / "kvnet").unlink()
        wait_until(lambda: conflist.exists() and (tmp_path / "bin" / "kvnet").is_symlink())
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert f"updated: {kubeconfig}\n" in out
    assert f"installed: {conflist}\n" in out and f"installed: {tmp_path / 'bin' / 'kvnet'}\n" in out
    assert "unchanged" not in out.split(f"installed: {conflist}\n", 1)[1]  # rounds print only changes
    assert conflist.exists() and kubeconfig.exists()  # left in place on SIGTERM


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not true in time"
        time.sleep(0.05)


def test_watch_needs_a_positive_interval(tmp_path: Path) -> None:
    rc, _, err = run_install(tmp_path, "--kubeconfig", "/k", "--watch", "0")
    assert rc == 1 and "--watch needs a positive number of seconds" in err
