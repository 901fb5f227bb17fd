"""The CNI plugin skeleton: env/stdin validation (codes and skel wording) and plugin_main."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvnet.cni.protocol import (
    SUPPORTED_VERSIONS,
    CniRequest,
    parse_cni_args,
    parse_request,
    plugin_main,
)
from kvnet.core.errors import DelegateFailed, KvnetError

# a loaded CI machine must not turn slowness into hypothesis failures
NO_DEADLINE = settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])

CONF = {"cniVersion": "1.0.0", "name": "net1", "type": "kvnet"}


def env(**over: str) -> dict[str, str]:
    base = {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "abc123",
        "CNI_NETNS": "/var/run/netns/x",
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": "IgnoreUnknown=true;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p",
        "CNI_PATH": "/opt/cni/bin:/usr/lib/cni",
    }
    base.update(over)
    return {k: v for k, v in base.items() if v != "<unset>"}


def stdin(conf: dict[str, Any] | None = None, **over: Any) -> bytes:
    c = dict(CONF if conf is None else conf)
    c.update(over)
    return json.dumps(c).encode()


def error_of(environ: dict[str, str], data: bytes) -> KvnetError:
    with pytest.raises(KvnetError) as info:
        parse_request(environ, data)
    return info.value


# (id, env, stdin, code, msg, details-substring)
BAD = [
    ("no-command", env(CNI_COMMAND="<unset>"), stdin(), 4, "required env variables [CNI_COMMAND] missing", ""),
    (
        "add-no-containerid",
        env(CNI_CONTAINERID="<unset>"),
        stdin(),
        4,
        "required env variables [CNI_CONTAINERID] missing",
        "",
    ),
    ("add-no-netns", env(CNI_NETNS=""), stdin(), 4, "required env variables [CNI_NETNS] missing", ""),
    ("add-no-ifname", env(CNI_IFNAME="<unset>"), stdin(), 4, "required env variables [CNI_IFNAME] missing", ""),
    ("add-no-path", env(CNI_PATH="<unset>"), stdin(), 4, "required env variables [CNI_PATH] missing", ""),
    (
        "add-bare",
        {"CNI_COMMAND": "ADD"},
        stdin(),
        4,
        "required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME,CNI_PATH] missing",
        "",
    ),
    (
        "check-no-netns",
        env(CNI_COMMAND="CHECK", CNI_NETNS="<unset>"),
        stdin(),
        4,
        "required env variables [CNI_NETNS] missing",
        "",
    ),
    (
        "del-no-ifname",
        env(CNI_COMMAND="DEL", CNI_IFNAME="<unset>"),
        stdin(),
        4,
        "required env variables [CNI_IFNAME] missing",
        "",
    ),
    (
        "del-no-containerid",
        env(CNI_COMMAND="DEL", CNI_CONTAINERID="<unset>"),
        stdin(),
        4,
        "required env variables [CNI_CONTAINERID] missing",
        "",
    ),
    ("unknown-command", env(CNI_COMMAND="FROB"), stdin(), 4, "unknown CNI_COMMAND: FROB", ""),
    ("lowercase-command", env(CNI_COMMAND="add"), stdin(), 4, "unknown CNI_COMMAND: add", ""),
    ("containerid-dotdot", env(CNI_CONTAINERID="../x"), stdin(), 4, "invalid characters in containerID", "../x"),
    ("containerid-slash", env(CNI_CONTAINERID="a/b"), stdin(), 4, "invalid characters in containerID", "a/b"),
    ("containerid-leading-dash", env(CNI_CONTAINERID="-abc"), stdin(), 4, "invalid characters in containerID", "-abc"),
    ("containerid-percent", env(CNI_CONTAINERID="1234%%%"), stdin(), 4, "invalid characters in containerID", "1234%%%"),
    # libcni's ValidateInterfaceName words, details included (they never name the value)
    (
        "ifname-too-long",
        env(CNI_IFNAME="a" * 16),
        stdin(),
        4,
        "interface name is too long",
        "interface name should be less than 16 characters",
    ),
    ("ifname-dot", env(CNI_IFNAME="."), stdin(), 4, "interface name is . or ..", ""),
    ("ifname-dotdot", env(CNI_IFNAME=".."), stdin(), 4, "interface name is . or ..", ""),
    (
        "ifname-slash",
        env(CNI_IFNAME="eth/0"),
        stdin(),
        4,
        "interface name contains / or : or whitespace characters",
        "",
    ),
    (
        "ifname-colon",
        env(CNI_IFNAME="eth0:1"),
        stdin(),
        4,
        "interface name contains / or : or whitespace characters",
        "",
    ),
    (
        "ifname-space",
        env(CNI_IFNAME="eth 0"),
        stdin(),
        4,
        "interface name contains / or : or whitespace characters",
        "",
    ),
    (
        "ifname-tab",
        env(CNI_IFNAME="eth\t0"),
        stdin(),
        4,
        "interface name contains / or : or whitespace characters",
        "",
    ),
    (
        "bad-args-no-equals",
        env(CNI_ARGS="IgnoreUnknown=true;K8S_POD_NAME"),
        stdin(),
        4,
        "ARGS: invalid pair 'K8S_POD_NAME'",
        "",
    ),
    ("bad-args-empty-key", env(CNI_ARGS="=v"), stdin(), 4, "ARGS: invalid pair '=v'", ""),
    ("bad-json", env(), b"{not json", 6, "error unmarshall network config:", ""),
    ("empty-stdin", env(), b"", 6, "error unmarshall network config:", ""),
    ("json-not-object", env(), b"[1, 2]", 6, "error unmarshall network config: expected a JSON object, got list", ""),
    ("bad-utf8", env(), b"\xff\xfe", 6, "error unmarshall network config:", ""),
    ("no-name", env(), stdin({"cniVersion": "1.0.0", "type": "x"}), 7, "missing network name", ""),
    ("bad-name", env(), stdin(name="../etc"), 7, "invalid characters found in network name", "../etc"),
    ("version-unsupported", env(), stdin(cniVersion="9.9.9"), 1, "incompatible CNI versions", 'config is "9.9.9"'),
    ("version-garbage", env(), stdin(cniVersion="one"), 1, "incompatible CNI versions", 'config is "one"'),
    ("version-not-string", env(), stdin(cniVersion=1), 6, "error unmarshall network config: cniVersion", ""),
    (
        "check-too-old",
        env(CNI_COMMAND="CHECK"),
        stdin(cniVersion="0.3.1"),
        1,
        "config version does not allow CHECK",
        "",
    ),
    ("gc-too-old", env(CNI_COMMAND="GC"), stdin(cniVersion="1.0.0"), 1, "config version does not allow GC", ""),
    (
        "status-too-old",
        env(CNI_COMMAND="STATUS"),
        stdin(cniVersion="1.0.0"),
        1,
        "config version does not allow STATUS",
        "",
    ),
]


@pytest.mark.parametrize("environ,data,code,msg,details", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_gets_spec_code_and_message(
    environ: dict[str, str], data: bytes, code: int, msg: str, details: str
) -> None:
    err = error_of(environ, data)
    assert err.cni_code == code
    assert err.msg.startswith(msg), err.msg
    assert details in err.details


def test_unsupported_version_details_list_what_the_plugin_speaks() -> None:
    err = error_of(env(), stdin(cniVersion="2.0.0"))
    assert err.details == (
        'config is "2.0.0", plugin supports ["0.1.0" "0.2.0" "0.3.0" "0.3.1" "0.4.0" "1.0.0" "1.1.0"]'
    )


def test_missing_containerid_checked_before_stdin() -> None:
    """The env is checked first: a bad env with bad stdin reports the env."""
    err = error_of(env(CNI_CONTAINERID="<unset>"), b"garbage")
    assert err.cni_code == 4


def test_good_add_request() -> None:
    req = parse_request(env(), stdin())
    assert req == CniRequest(
        command="ADD",
        container_id="abc123",
        netns="/var/run/netns/x",
        ifname="eth0",
        args={"IgnoreUnknown": "true", "K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": "p"},
        path=("/opt/cni/bin", "/usr/lib/cni"),
        config=CONF,
        stdin=stdin(),
    )
    assert list(req.args) == ["IgnoreUnknown", "K8S_POD_NAMESPACE", "K8S_POD_NAME"]
    assert req.cni_version == "1.0.0"
    assert req.args_str == "IgnoreUnknown=true;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p"


@pytest.mark.parametrize("command", ["DEL", "GC", "STATUS", "VERSION"])
def test_netns_optional_where_spec_says(command: str) -> None:
    version = "1.1.0"
    environ = env(CNI_COMMAND=command, CNI_NETNS="<unset>")
    if command in ("GC", "STATUS", "VERSION"):
        environ = {"CNI_COMMAND": command, "CNI_PATH": "/opt/cni/bin"}
    req = parse_request(environ, stdin(cniVersion=version))
    assert req.command == command and req.netns == ""


def test_version_ignores_stdin() -> None:
    req = parse_request({"CNI_COMMAND": "VERSION"}, b"not json at all")
    assert req.config == {} and req.stdin == b""


def test_missing_cni_version_defaults_to_010() -> None:
    req = parse_request(env(), stdin({"name": "n", "type": "x"}))
    assert req.cni_version == "0.1.0"


@pytest.mark.parametrize(
    "raw,parsed",
    [
        ("", {}),
        ("A=1", {"A": "1"}),
        ("A=1;B=2", {"A": "1", "B": "2"}),
        ("A=1;;B=2;", {"A": "1", "B": "2"}),
        ("A=;B=x=y", {"A": "", "B": "x=y"}),
        ("A=1;A=2", {"A": "2"}),
    ],
)
def test_cni_args_table(raw: str, parsed: dict[str, str]) -> None:
    assert parse_cni_args(raw) == parsed


_key = st.text(alphabet=st.characters(blacklist_characters=";=", blacklist_categories=("Cs",)), min_size=1)
_val = st.text(alphabet=st.characters(blacklist_characters=";", blacklist_categories=("Cs",)))


@NO_DEADLINE
@given(st.lists(st.tuples(_key, _val), max_size=8))
def test_cni_args_round_trip(pairs: list[tuple[str, str]]) -> None:
    raw = ";".join(f"{k}={v}" for k, v in pairs)
    assert parse_cni_args(raw) == dict(pairs)


# --- plugin_main ---------------------------------------------------------------------


def run_main(handlers: dict[str, Any], environ: dict[str, str], data: bytes = b"", **kw: Any) -> tuple[int, Any]:
    out = io.StringIO()
    rc = plugin_main(handlers, environ=environ, stdin=io.BytesIO(data), stdout=out, **kw)
    text = out.getvalue()
    return rc, (json.loads(text) if text.strip() else None)


def test_version_answered_by_the_skeleton() -> None:
    rc, out = run_main({}, {"CNI_COMMAND": "VERSION"})
    assert rc == 0
    assert out == {"cniVersion": "1.1.0", "supportedVersions": list(SUPPORTED_VERSIONS)}


def test_version_with_own_supported_list() -> None:
    _rc, out = run_main({}, {"CNI_COMMAND": "VERSION"}, supported_versions=("0.4.0", "1.0.0"))
    assert out == {"cniVersion": "1.0.0", "supportedVersions": ["0.4.0", "1.0.0"]}


def test_add_prints_handler_result() -> None:
    seen: list[CniRequest] = []

    def add(req: CniRequest) -> dict[str, Any]:
        seen.append(req)
        return {"cniVersion": "1.0.0", "interfaces": [{"name": req.ifname}], "dns": {}}

    rc, out = run_main({"ADD": add}, env(), stdin())
    assert rc == 0
    assert out == {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0"}], "dns": {}}
    assert seen[0].container_id == "abc123"


def test_add_result_converted_to_request_version() -> None:
    def add(req: CniRequest) -> dict[str, Any]:
        return {
            "cniVersion": "1.1.0",
            "interfaces": [{"name": "eth0", "mtu": 1400}],
            "ips": [{"address": "10.0.0.2/24", "interface": 0}],
        }

    rc, out = run_main({"ADD": add}, env(), stdin(cniVersion="0.3.1"))
    assert rc == 0
    assert out == {
        "cniVersion": "0.3.1",
        "interfaces": [{"name": "eth0"}],
        "ips": [{"version": "4", "interface": 0, "address": "10.0.0.2/24"}],
        "dns": {},  # types040 always writes it
    }


def test_result_without_version_gets_the_request_version() -> None:
    _rc, out = run_main({"ADD": lambda req: {"dns": {}}}, env(), stdin(cniVersion="0.4.0"))
    assert out == {"dns": {}, "cniVersion": "0.4.0"}


@pytest.mark.parametrize("command", ["DEL", "CHECK"])
def test_non_add_commands_print_nothing(command: str) -> None:
    called: list[str] = []

    def handler(req: CniRequest) -> dict[str, Any]:
        called.append(req.command)
        return {"cniVersion": "1.0.0", "something": "ignored"}

    rc, out = run_main({command: handler}, env(CNI_COMMAND=command), stdin())
    assert (rc, out, called) == (0, None, [command])


def test_command_without_handler_succeeds_silently() -> None:
    rc, out = run_main({}, {"CNI_COMMAND": "STATUS", "CNI_PATH": "/x"}, stdin(cniVersion="1.1.0"))
    assert (rc, out) == (0, None)


def test_kvnet_error_becomes_cni_error_json() -> None:
    def add(req: CniRequest) -> None:
        raise DelegateFailed('plugin type="bridge" failed (add): boom', "more", code=11)

    rc, out = run_main({"ADD": add}, env(), stdin(cniVersion="0.4.0"))
    assert rc == 1
    assert out == {
        "cniVersion": "0.4.0",
        "code": 11,
        "msg": 'plugin type="bridge" failed (add): boom',
        "details": "more",
    }


def test_validation_error_printed_with_spec_code() -> None:
    rc, out = run_main({}, env(CNI_CONTAINERID="../x"), stdin())
    assert rc == 1
    assert out == {"cniVersion": "1.0.0", "code": 4, "msg": "invalid characters in containerID", "details": "../x"}


def test_undecodable_stdin_error_uses_newest_version() -> None:
    rc, out = run_main({}, env(), b"{")
    assert rc == 1 and out["code"] == 6 and out["cniVersion"] == "1.1.0"


def test_unknown_command_is_code_4() -> None:
    rc, out = run_main({}, env(CNI_COMMAND="FROB"), stdin())
    assert rc == 1 and out["code"] == 4 and out["msg"] == "unknown CNI_COMMAND: FROB"


def test_unexpected_exception_is_code_999_and_logged(capsys: pytest.CaptureFixture[str]) -> None:
    def add(req: CniRequest) -> None:
        raise ZeroDivisionError("division by zero")

    rc, out = run_main({"ADD": add}, env(), stdin())
    assert rc == 1
    assert out == {"cniVersion": "1.0.0", "code": 999, "msg": "division by zero"}
    err = capsys.readouterr().err
    assert "ZeroDivisionError" in err and "container=abc123" in err


def test_about_printed_to_stderr_without_command(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = run_main({}, {}, about="kvnet CNI v0.1.0")
    assert (rc, out) == (0, None)
    assert "kvnet CNI v0.1.0" in capsys.readouterr().err


def test_missing_command_without_about_is_an_error() -> None:
    rc, out = run_main({}, {})
    assert rc == 1 and out["code"] == 4


def test_own_netns_is_refused_before_the_handler_runs() -> None:
    called: list[str] = []
    rc, out = run_main({"ADD": lambda req: called.append("ADD")}, env(CNI_NETNS="/proc/self/ns/net"), stdin())
    assert rc == 1 and called == []
    assert out == {
        "cniVersion": "1.0.0",
        "code": 8,
        "msg": "plugin's netns and netns from CNI_NETNS should not be the same",
        "details": "/proc/self/ns/net",
    }


def test_is_own_netns(tmp_path: Any) -> None:
    from kvnet.cni.protocol import is_own_netns

    assert is_own_netns("/proc/self/ns/net")
    assert not is_own_netns(str(tmp_path / "missing"))
    assert not is_own_netns(str(tmp_path))


_ascii = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=127), max_size=20)


@NO_DEADLINE
@given(_ascii)
def test_ifname_validation_agrees_with_naming_rules(name: str) -> None:
    from kvnet.cni.protocol import validate_ifname
    from kvnet.core.errors import InvalidEnvironment
    from kvnet.core.naming import ifname_problem

    try:
        validate_ifname(name)
        ok = True
    except InvalidEnvironment:
        ok = False
    assert ok == (ifname_problem(name) is None)


@NO_DEADLINE
@given(_ascii)
def test_container_id_validation_agrees_with_naming_rules(cid: str) -> None:
    from kvnet.cni.protocol import validate_container_id
    from kvnet.core.naming import cni_name_ok

    try:
        validate_container_id(cid)
        ok = True
    except KvnetError:
        ok = False
    assert ok == cni_name_ok(cid)


def test_ifname_length_counts_bytes() -> None:
    """15 bytes is the kernel's limit: eight two-byte characters are too long."""
    err = error_of(env(CNI_IFNAME="ä" * 8), stdin())
    assert (err.cni_code, err.msg) == (4, "interface name is too long")
    parse_request(env(CNI_IFNAME="ä" * 7), stdin())


_env_keys = st.sampled_from(["CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH"])
_env_vals = st.sampled_from(
    ["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION", "", "x", "../x", "eth0", "a=b;c"]
) | st.text(max_size=20)


@NO_DEADLINE
@given(st.dictionaries(_env_keys, _env_vals), st.binary(max_size=64) | st.sampled_from([stdin(), b"{}", b"null"]))
def test_any_env_and_stdin_fail_only_with_kvnet_errors(environ: dict[str, str], data: bytes) -> None:
    """Whatever a runtime sends, the answer is a request or a CNI error, never a crash."""
    try:
        req = parse_request(environ, data)
    except KvnetError as e:
        assert e.cni_code in (1, 3, 4, 6, 7) and e.msg
        return
    assert req.command in ("ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION")


@NO_DEADLINE
@given(st.dictionaries(_env_keys, _env_vals), st.binary(max_size=64) | st.sampled_from([stdin(), b"{}"]))
def test_plugin_main_stdout_is_always_one_json_object(environ: dict[str, str], data: bytes) -> None:
    handlers = {"ADD": lambda req: {"cniVersion": "1.1.0", "ips": [{"address": "10.0.0.2/24"}]}}
    rc, out = run_main(
        handlers, {**environ, "CNI_NETNS": "/nonexistent/ns"} if "CNI_NETNS" in environ else environ, data
    )
    assert rc in (0, 1)
    if rc == 1:
        assert isinstance(out, dict) and {"cniVersion", "code", "msg"} <= out.keys()
    else:
        assert out is None or (isinstance(out, dict) and "cniVersion" in out)
