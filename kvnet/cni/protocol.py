"""The CNI plugin side of the protocol: env + stdin in, result or error JSON out.

Every kvnet CNI binary (the meta-plugin, the binding plugin, the shim) is a handful of
handlers under :func:`plugin_main`, the way Go plugins sit under ``skel.PluginMainFuncs``.
Validation follows the spec and libcni's skel, with its error codes and wording, so a
runtime sees the same answers from kvnet as from any Go plugin.

Stdlib only: this module is on the CNI hot path.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, TextIO

from kvnet.cni.results import convert_result, version_key
from kvnet.core.errors import (
    DecodeFailure,
    IncompatibleVersion,
    InvalidConfig,
    InvalidEnvironment,
    IOFailure,
    KvnetError,
    UnknownContainer,
)
from kvnet.core.gojson import go_strings, go_syntax_error
from kvnet.core.naming import (
    MAX_CONTAINER_ID,
    MAX_IFNAME,
    NAME_MAX,
    IfnameFault,
    cni_name_ok,
    ifname_fault,
    name_bytes,
)

SUPPORTED_VERSIONS: tuple[str, ...] = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
COMMANDS: tuple[str, ...] = ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC")
DEFAULT_CNI_VERSION = "0.1.0"  # what libcni assumes when a config has no cniVersion
INTERNAL_ERROR_CODE = 999

# Which variables each command needs (libcni skel's table; CNI_NETNS only for ADD/CHECK).
_REQUIRED_ENV: dict[str, tuple[str, ...]] = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"),
    "GC": ("CNI_PATH",),
    "STATUS": ("CNI_PATH",),
    "VERSION": (),
}
_ENV_ORDER = ("CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH")
# The first config version that knows each command.
_COMMAND_FLOOR = {"CHECK": "0.4.0", "GC": "1.1.0", "STATUS": "1.1.0"}

Handler = Callable[["CniRequest"], "Mapping[str, Any] | None"]


class InvalidNetNS(KvnetError):
    """CNI_NETNS names the plugin's own network namespace (spec code 8)."""

    cni_code = 8


def is_own_netns(netns: str, own: str = "/proc/self/ns/net") -> bool:
    """True when ``netns`` is the namespace this process runs in (skel's CheckNetNS);
    a path that cannot be opened is not ours (DEL of a netns already gone is fine)."""
    try:
        a, b = os.stat(netns), os.stat(own)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


@dataclass(frozen=True)
class CniRequest:
    """One invocation of a CNI plugin, validated: env variables plus the stdin config."""

    command: str
    container_id: str
    netns: str
    ifname: str
    args: Mapping[str, str]
    path: tuple[str, ...]
    config: Mapping[str, Any]
    stdin: bytes
    args_str: str = field(default="", compare=False)

    @property
    def cni_version(self) -> str:
        """The config's ``cniVersion``; ``0.1.0`` when absent, as the spec and libcni say."""
        v = self.config.get("cniVersion")
        return v if isinstance(v, str) and v else DEFAULT_CNI_VERSION


def parse_cni_args(raw: str) -> dict[str, str]:
    """``K=V;K=V`` → an ordered dict. Empty segments are skipped; a value may hold ``=``."""
    out: dict[str, str] = {}
    for pair in raw.split(";"):
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidEnvironment(f"ARGS: invalid pair {pair!r}", f"CNI_ARGS={raw}")
        out[key] = value
    return out


def validate_container_id(container_id: str) -> None:
    if not container_id:
        raise UnknownContainer("missing containerID")
    if not cni_name_ok(container_id):
        raise InvalidEnvironment("invalid characters in containerID", container_id)


def validate_env_text(environ: Mapping[str, str]) -> None:
    """Every ``CNI_*`` variable is text a Go plugin can pass on: no NUL byte (a kvnet-shim
    call carries the env as JSON, where one can hide) and valid UTF-8 (os.environ keeps
    undecodable bytes as lone surrogates, which no result or API call can carry)."""
    for name in _ENV_ORDER:
        value = environ.get(name)
        if not value:
            continue
        if "\x00" in value:
            raise InvalidEnvironment(f"{name} contains a NUL byte", repr(value))
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidEnvironment(f"{name} is not valid UTF-8", repr(value)) from None


def validate_container_id_length(container_id: str) -> None:
    """A container ID names kvnet's cache files, so it must fit in one (ADD, CHECK; a DEL
    of such an ID finds nothing, as nothing can have been added)."""
    if name_bytes(container_id) > MAX_CONTAINER_ID:
        raise InvalidEnvironment(
            f"CNI_CONTAINERID is {name_bytes(container_id)} bytes long, more than {MAX_CONTAINER_ID} "
            f"(libcni's cache file <network>-<containerID>-<ifname> must fit in NAME_MAX {NAME_MAX})",
            container_id[:64] + "...",
        )


def validate_ifname(ifname: str) -> None:
    """libcni's ``ValidateInterfaceName`` errors, word for word (its details never name the
    value: the runtime set ``CNI_IFNAME`` and knows it), for the rule in naming."""
    fault = ifname_fault(ifname)
    if fault is IfnameFault.EMPTY:
        raise InvalidEnvironment("interface name is empty")
    if fault is IfnameFault.TOO_LONG:
        raise InvalidEnvironment(
            "interface name is too long", f"interface name should be less than {MAX_IFNAME + 1} characters"
        )
    if fault is IfnameFault.DOT:
        raise InvalidEnvironment("interface name is . or ..")
    if fault is IfnameFault.BAD_CHAR:
        raise InvalidEnvironment("interface name contains / or : or whitespace characters")


def validate_network_name(name: object) -> None:
    if not name:
        raise InvalidConfig("missing network name")
    if not cni_name_ok(name):
        raise InvalidConfig("invalid characters found in network name", str(name))


def _decode_config(stdin: bytes) -> dict[str, Any]:
    try:
        # UTF-8 only (json.loads of bytes would guess UTF-16/32), and bytes that are no UTF-8
        # read as U+FFFD, as Go's decoder reads them: a syntax error outside a string
        # and a lone surrogate escape is U+FFFD too (go_strings)
        conf = go_strings(json.loads(stdin.decode("utf-8", errors="replace")))
    except json.JSONDecodeError as e:  # skel's validateConfig wording around Go's message
        raise DecodeFailure(f"error unmarshall network config: {go_syntax_error(e)}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise DecodeFailure(f"error unmarshall network config: {e}") from None
    if not isinstance(conf, dict):
        raise DecodeFailure(f"error unmarshall network config: expected a JSON object, got {type(conf).__name__}")
    return conf


def check_version(command: str, cni_version: str, supported: Sequence[str]) -> None:
    """The config version must be one the plugin speaks, and new enough for the command."""
    if cni_version not in supported:
        quoted = " ".join(f'"{v}"' for v in supported)
        raise IncompatibleVersion("incompatible CNI versions", f'config is "{cni_version}", plugin supports [{quoted}]')
    floor = _COMMAND_FLOOR.get(command)
    if floor and version_key(cni_version) < version_key(floor):
        raise IncompatibleVersion(f"config version does not allow {command}", f'config is "{cni_version}"')


def parse_request(
    environ: Mapping[str, str], stdin: bytes, *, supported_versions: Sequence[str] = SUPPORTED_VERSIONS
) -> CniRequest:
    """Validate the CNI env and stdin into a :class:`CniRequest` (spec codes, skel wording)."""
    command = environ.get("CNI_COMMAND", "")
    required = _REQUIRED_ENV.get(command, ())
    missing = [name for name in _ENV_ORDER if not environ.get(name) and (name == "CNI_COMMAND" or name in required)]
    if missing:
        raise InvalidEnvironment(f"required env variables [{','.join(missing)}] missing")
    if command not in _REQUIRED_ENV:
        raise InvalidEnvironment(f"unknown CNI_COMMAND: {command}")
    validate_env_text(environ)
    container_id = environ.get("CNI_CONTAINERID", "")
    ifname = environ.get("CNI_IFNAME", "")
    if "CNI_CONTAINERID" in required:
        validate_container_id(container_id)
        if command != "DEL":
            validate_container_id_length(container_id)
    if "CNI_IFNAME" in required:
        validate_ifname(ifname)
    args_str = environ.get("CNI_ARGS", "")
    args = parse_cni_args(args_str)
    path = tuple(p for p in environ.get("CNI_PATH", "").split(":") if p)
    config: dict[str, Any] = {}
    if command != "VERSION":
        config = _decode_config(stdin)
        validate_network_name(config.get("name"))
        version = config.get("cniVersion") or DEFAULT_CNI_VERSION
        if not isinstance(version, str):
            raise DecodeFailure(f"error unmarshall network config: cniVersion must be a string, got {version!r}")
        check_version(command, version, supported_versions)
    return CniRequest(
        command=command,
        container_id=container_id,
        netns=environ.get("CNI_NETNS", ""),
        ifname=ifname,
        args=args,
        path=path,
        config=config,
        stdin=stdin if command != "VERSION" else b"",
        args_str=args_str,
    )


def version_info(supported_versions: Sequence[str]) -> dict[str, Any]:
    """The VERSION answer: the newest version as ``cniVersion`` plus the full list."""
    newest = max(supported_versions, key=version_key)
    return {"cniVersion": newest, "supportedVersions": list(supported_versions)}


def _error_version(stdin: bytes, supported_versions: Sequence[str]) -> str:
    """The version to stamp on an error: the config's if it can be read, else our newest."""
    try:
        v = json.loads(stdin).get("cniVersion")
    except (ValueError, UnicodeDecodeError, AttributeError):
        v = None
    return v if isinstance(v, str) and v else max(supported_versions, key=version_key)


def _print(obj: Mapping[str, Any], stdout: TextIO) -> None:
    stdout.write(json.dumps(obj, indent=4))
    stdout.write("\n")
    stdout.flush()


def plugin_main(
    handlers: Mapping[str, Handler],
    *,
    supported_versions: Sequence[str] = SUPPORTED_VERSIONS,
    about: str = "",
    environ: Mapping[str, str] | None = None,
    stdin: BinaryIO | None = None,
    stdout: TextIO | None = None,
) -> int:
    """Run one CNI invocation: parse, answer VERSION, dispatch, print; return the exit status.

    A handler returns the ADD result; whatever DEL/CHECK/STATUS/GC handlers return is
    not printed (those commands have no output). A known command with no handler
    succeeds silently, like skel with a nil callback. Errors become the CNI
    error object on stdout and exit status 1: :class:`KvnetError` with its own code, any
    other exception with code 999 and a log line on stderr.
    """
    env = os.environ if environ is None else environ
    out = sys.stdout if stdout is None else stdout
    if not env.get("CNI_COMMAND") and about:
        sys.stderr.write(f"{about}\nCNI protocol versions supported: {', '.join(supported_versions)}\n")
        return 0
    raw = b""
    try:
        if env.get("CNI_COMMAND") != "VERSION":
            try:
                raw = (sys.stdin.buffer if stdin is None else stdin).read()
            except OSError as e:
                raise IOFailure(f"error reading from stdin: {e}") from None
        request = parse_request(env, raw, supported_versions=supported_versions)
        if request.command == "VERSION":
            _print(version_info(supported_versions), out)
            return 0
        if request.command in ("ADD", "DEL") and request.netns and is_own_netns(request.netns):
            raise InvalidNetNS("plugin's netns and netns from CNI_NETNS should not be the same", request.netns)
        handler = handlers.get(request.command)
        result = handler(request) if handler is not None else None
        if result is not None and request.command == "ADD":
            _print(_in_version(result, request.cni_version), out)
        return 0
    except KvnetError as e:
        _print(e.to_cni(_error_version(raw, supported_versions)), out)
        return 1
    except Exception as e:
        sys.stderr.write(
            f"kvnet: {env.get('CNI_COMMAND', '?')} container={env.get('CNI_CONTAINERID', '')} "
            f"ifname={env.get('CNI_IFNAME', '')}: unexpected {type(e).__name__}: {e}\n"
        )
        err = {
            "cniVersion": _error_version(raw, supported_versions),
            "code": INTERNAL_ERROR_CODE,
            "msg": str(e) or type(e).__name__,
        }
        _print(err, out)
        return 1


def _in_version(result: Mapping[str, Any], cni_version: str) -> dict[str, Any]:
    """A handler's result in the request's version (converted if it came back in another)."""
    have = result.get("cniVersion")
    if not have:
        out = dict(result)
        out["cniVersion"] = cni_version
        return out
    if have == cni_version:
        return dict(result)
    return convert_result(result, cni_version)
