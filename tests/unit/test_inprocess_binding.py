"""The meta-plugin runs kvnet's own binding delegate in-process; every other plugin as a process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvnet.lab.fakes import FakeExec, FakePlugin
from kvnet.meta.config import parse_multus_config
from kvnet.meta.wiring import InProcessBinding, LongLived, is_kvnet_binding, new_runner

SCRIPT = "#!/usr/bin/python3\nimport sys\nfrom kvnet.binding.main import main\nsys.exit(main())\n"


# the fallback for every other plugin: a bridge whose ADD answers a canned result
BRIDGE = FakePlugin(fail={"ADD": (0, b'{"cniVersion": "1.0.0"}', b"")})


@pytest.fixture
def binding_script(tmp_path: Path) -> str:
    path = tmp_path / "kvnet-binding"
    path.write_text(SCRIPT)
    path.chmod(0o755)
    return str(path)


@pytest.mark.parametrize(
    ("name", "content", "ours"),
    [
        ("kvnet-binding", SCRIPT, True),
        ("kvnet-binding", "#!/bin/sh\necho some other binding\n", False),
        ("bridge", SCRIPT, False),
    ],
)
def test_is_kvnet_binding(tmp_path: Path, name: str, content: str, ours: bool) -> None:
    path = tmp_path / name
    path.write_text(content)
    assert is_kvnet_binding(str(path)) is ours
    assert is_kvnet_binding(str(tmp_path / "missing" / "kvnet-binding")) is False


def test_other_plugins_run_as_processes(tmp_path: Path) -> None:
    fallback = FakeExec({"bridge": BRIDGE})
    status, out, _ = InProcessBinding(fallback)(str(tmp_path / "bridge"), b"{}", {"CNI_COMMAND": "ADD"}, 5.0)
    assert (status, json.loads(out), [c.path for c in fallback.calls]) == (
        0,
        {"cniVersion": "1.0.0"},
        [str(tmp_path / "bridge")],
    )


def test_binding_answers_in_process(binding_script: str) -> None:
    fallback = FakeExec({})
    status, out, err = InProcessBinding(fallback)(binding_script, b"", {"CNI_COMMAND": "VERSION"}, 5.0)
    assert status == 0 and fallback.calls == [] and err == b""
    assert "1.0.0" in json.loads(out)["supportedVersions"]


def test_binding_errors_keep_the_cni_shape(binding_script: str) -> None:
    conf = {"cniVersion": "1.0.0", "name": "kvnet-binding", "type": "kvnet-binding"}
    env = {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "c1",
        "CNI_NETNS": "/var/run/netns/none",
        "CNI_IFNAME": "net2",
        "CNI_PATH": "/usr/lib/cni",
    }  # no such netns
    status, out, _ = InProcessBinding(FakeExec({}))(binding_script, json.dumps(conf).encode(), env, 5.0)
    error = json.loads(out)
    assert (status, error["code"]) == (1, 104)
    assert error["msg"] == "network namespace /var/run/netns/none does not exist"


@pytest.mark.parametrize("mode", ["thin", "thick"])
@pytest.mark.parametrize(("setting", "in_process"), [({}, True), ({"inProcessBinding": False}, False)])
def test_runner_setting(setting: dict[str, object], in_process: bool, mode: str) -> None:
    """Thin (a runner per call) and thick (long-lived runners) wire the binding the same way."""
    conf = parse_multus_config(
        {
            "cniVersion": "1.0.0",
            "name": "kvnet",
            "type": "kvnet",
            "delegates": [{"type": "bridge", "name": "b"}],
            **setting,
        }
    )
    runner = new_runner(conf) if mode == "thin" else LongLived(lambda _k: None).runner(conf)  # type: ignore[arg-type,return-value]
    assert isinstance(runner.exec, InProcessBinding) is in_process  # type: ignore[attr-defined]
    assert runner.timeout == conf.kvnet.delegate_timeout  # type: ignore[attr-defined]
