"""``kvnet-shim``: the thick-mode CNI binary. Standard library only, on purpose.

Like Multus's ``multus-shim`` it does no networking itself: it sends the CNI call (the
``CNI_*`` environment and the stdin config) as JSON over HTTP on a unix socket to
``kvnet daemon``, prints what the daemon answers and exits with its status. The daemon
runs the same meta-plugin code with long-lived clients, so a call costs a Python start
with nothing but the standard library plus one round trip.

Socket: the config's ``socketPath``, else ``<socketDir>/kvnet.sock``, else
``/run/kvnet/kvnet.sock``. VERSION is answered locally. A config that is not a JSON
object is refused here with code 6, as ``kvnet-cni`` refuses it (``multus-shim`` runs
skel, which checks the config before it calls its daemon). When the daemon cannot answer
the error says which way, with code 11 (try again later) so the runtime retries: no daemon
listens on the socket; the daemon is stopping and refused the call; the daemon went away
during the call (what the call had done is undone by the runtime's DEL, which waits for
anything still running: docs/reliability.md); no answer within the shim's timeout.
"""

# Only C modules on the path of a call that goes well: ``json`` (it imports ``re``) and
# ``socket`` (``enum``, ``selectors``) cost this program more than the interpreter's own
# start, so a call parses and writes JSON with their C halves (``_json``, what ``json`` runs
# for valid input anyway) and talks on ``_socket``. The ``json`` package is imported only to
# word an error. No ``from __future__`` either: the annotations that need typing are strings.
import _json
import _socket
import posix
import sys

TYPE_CHECKING = False  # not typing's: importing typing costs this program several ms
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

DEFAULT_SOCKET = "/run/kvnet/kvnet.sock"
SOCKET_NAME = "kvnet.sock"
REQUEST_PATH = "/cni"
TIMEOUT = 600.0  # seconds; the daemon applies its own per-delegate timeouts
SUPPORTED_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
TRY_AGAIN_LATER = 11
DECODING_FAILURE = 6
# what json.dumps writes for VERSION, written out: the answer needs no encoder
VERSION_ANSWER = (
    '{"cniVersion": "1.1.0", "supportedVersions": [' + ", ".join(f'"{v}"' for v in SUPPORTED_VERSIONS) + "]}\n"
)
_WHITESPACE = " \t\n\r"  # JSON's


class _Decoding:
    """The settings ``json.loads`` gives its C scanner (``json.JSONDecoder()``'s defaults)."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}.__getitem__


_scan = _json.make_scanner(_Decoding())  # type: ignore[arg-type]  # it reads the attributes alone
_quote = _json.encode_basestring_ascii  # json.dumps's string encoder (ensure_ascii)
_NOT_JSON = object()


def _loads(text: str) -> object:
    """``json.loads(text)`` for one valid JSON document, by the C scanner alone;
    ``_NOT_JSON`` for anything else (the caller asks ``json`` for the words)."""
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        value, end = _scan(text, start)
    except (StopIteration, ValueError, RecursionError, SystemError):
        # SystemError: the scanner words its errors with json.decoder's exception class,
        # found only once ``json`` is imported; without it the error comes out as this
        return _NOT_JSON
    return _NOT_JSON if text[end:].strip(_WHITESPACE) else value


def _dumps(value: object, indent: int | None = None) -> str:
    """``json.dumps``, for the error answers only (importing ``json`` costs several ms)."""
    import json

    return json.dumps(value, indent=indent)


def request(path: str, method: str, url: str, body: bytes = b"", timeout: float = TIMEOUT) -> tuple[int, bytes]:
    """One HTTP/1.1 exchange over the unix socket ``path``: (status, body).

    Written by hand on a plain socket: ``http.client`` pulls in the ``email`` package,
    which costs more than everything else this program imports.
    """
    head = (
        f"{method} {url} HTTP/1.1\r\nHost: kvnet\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    chunks: list[bytes] = []
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(head + body)
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        sock.close()
    data = b"".join(chunks)
    header, sep, payload = data.partition(b"\r\n\r\n")
    lines = header.split(b"\r\n")
    parts = lines[0].split(None, 2)
    if not sep or len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise ConnectionError(f"not an HTTP answer from {path}: {data[:80]!r}")
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            payload = payload[: int(value.strip())]
    return int(parts[1]), payload


def socket_path(config: "Mapping[str, Any]") -> str:
    path = config.get("socketPath")
    if isinstance(path, str) and path:
        return path
    folder = config.get("socketDir")
    if isinstance(folder, str) and folder:
        return folder + SOCKET_NAME if folder.endswith("/") else f"{folder}/{SOCKET_NAME}"
    return DEFAULT_SOCKET


def _version_of(stdin: bytes) -> str:
    conf = _loads(stdin.decode("utf-8", errors="replace"))
    v = conf.get("cniVersion") if isinstance(conf, dict) else None
    return v if isinstance(v, str) and v else "1.0.0"


class DaemonTrouble(Exception):
    """The daemon gave no CNI answer; the text says what happened."""


def _request_body(env: "Mapping[str, str]", stdin: bytes) -> bytes:
    """``json.dumps({"env": env, "stdin": stdin})`` as bytes (stdin's undecodable bytes as
    lone surrogates, which the daemon turns back into the same bytes)."""
    pairs = ", ".join(f"{_quote(k)}: {_quote(v)}" for k, v in env.items())
    text = f'{{"env": {{{pairs}}}, "stdin": {_quote(stdin.decode("utf-8", errors="surrogateescape"))}}}'
    return text.encode("ascii")


def call_daemon(path: str, env: "Mapping[str, str]", stdin: bytes, timeout: float = TIMEOUT) -> tuple[int, str]:
    """One CNI call through the daemon: (exit status, stdout text); :class:`DaemonTrouble`
    when there is no CNI answer (no daemon, a stopping one, one that went away)."""
    command = env.get("CNI_COMMAND", "")
    try:
        status, data = request(path, "POST", REQUEST_PATH, _request_body(env, stdin), timeout)
    except (FileNotFoundError, ConnectionRefusedError) as err:
        raise DaemonTrouble(f"no kvnet daemon is listening at {path} (is it running?): {err}") from None
    except BlockingIOError as err:
        raise DaemonTrouble(f"the kvnet daemon at {path} takes no more calls now (its queue is full): {err}") from None
    except TimeoutError:
        raise DaemonTrouble(f"the kvnet daemon at {path} gave no answer to {command} within {timeout:g}s") from None
    except (OSError, ValueError) as err:
        raise DaemonTrouble(
            f"the kvnet daemon at {path} went away during {command} without answering ({err}); "
            "the call may have partly run: the runtime's DEL undoes it"
        ) from None
    if status == 503:
        raise DaemonTrouble(f"the kvnet daemon at {path} is stopping and refused {command}; try again")
    if status != 200:
        raise DaemonTrouble(
            f"the kvnet daemon at {path} refused {command}: HTTP {status}: {data.decode(errors='replace')[:500]}"
        )
    answer = _loads(data.decode("utf-8", errors="replace"))
    try:
        return int(answer["exit"]), str(answer.get("stdout", ""))  # type: ignore[index,attr-defined]
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        what = "not one JSON object" if answer is _NOT_JSON else f"{type(err).__name__}: {err}"
        raise DaemonTrouble(
            f"the kvnet daemon at {path} answered {command} with something unreadable: {what}"
        ) from None


def _config_problem(text: str) -> str:
    """Why ``text`` is not a CNI config (a JSON object), in kvnet-cni's words."""
    import json

    try:
        conf = json.loads(text)
    except json.JSONDecodeError as err:
        # kvnet.core.gojson.go_syntax_error's rule: the installed shim is one file, stdlib
        # only, so it is repeated here (test_meta compares the shim's error with kvnet-cni's)
        truncated = err.pos >= len(err.doc.rstrip())
        where = "" if truncated else f"invalid character {err.doc[err.pos]!r} at offset {err.pos + 1}: {err.msg}"
        return where or "unexpected end of JSON input"
    except (ValueError, RecursionError) as err:
        return str(err)
    return "" if isinstance(conf, dict) else f"expected a JSON object, got {type(conf).__name__}"


def run(environ: "Mapping[str, str]", stdin: bytes, stdout: "Any") -> int:
    """The shim's whole job, with its inputs passed in (tests call this directly)."""
    command = environ.get("CNI_COMMAND", "")
    if command == "VERSION":
        stdout.write(VERSION_ANSWER)
        return 0
    if not command:
        sys.stderr.write("kvnet-shim: thick-mode CNI shim for the kvnet daemon\n")
        return 0
    text = stdin.decode("utf-8", errors="replace")  # bytes that are not UTF-8 read as U+FFFD, as in kvnet-cni (and Go)
    conf = _loads(text)
    if not isinstance(conf, dict):  # skel's validateConfig, in kvnet-cni's words
        error = {"cniVersion": SUPPORTED_VERSIONS[-1], "code": DECODING_FAILURE}
        error["msg"] = f"error unmarshall network config: {_config_problem(text)}"
        stdout.write(_dumps(error, indent=4) + "\n")
        return 1
    path = socket_path(conf)
    env = {k: v for k, v in environ.items() if k.startswith("CNI_")}
    try:
        status, out = call_daemon(path, env, stdin)
    except DaemonTrouble as err:
        error = {
            "cniVersion": _version_of(stdin),
            "code": TRY_AGAIN_LATER,
            "msg": f"kvnet-shim: {err}",
            "details": "the daemon runs as: kvnet daemon --socket " + path,
        }
        stdout.write(_dumps(error) + "\n")
        return 1
    stdout.write(out)
    stdout.flush()
    return status


def standalone_script(python: str) -> str:
    """This module as a self-contained CNI binary for ``python -I -S``.

    It needs nothing but the standard library, so it can skip ``site`` (and with it the
    package machinery of the installation): ``kvnet install`` and the test lab install
    this script as ``kvnet-shim`` instead of the console-script wrapper. The script holds
    the module compiled (``marshal``) as well as its source: compiling the source on every
    call would cost the shim more than a millisecond and a half, so a ``python`` whose
    bytecode magic is the installing Python's runs the compiled code, any other compiles
    the source.
    """
    import marshal
    from importlib.util import MAGIC_NUMBER

    with open(__file__, encoding="utf-8") as fh:
        source = fh.read()
    code = marshal.dumps(compile(source, "kvnet-shim", "exec"))
    return (
        f"#!{python} -IS\n"
        "# kvnet-shim, written by kvnet install from kvnet/meta/shim.py: its code compiled, and its source\n"
        "import marshal, sys\n"
        f'if sys.modules["_frozen_importlib_external"].MAGIC_NUMBER == {MAGIC_NUMBER!r}:\n'
        f"    exec(marshal.loads({code!r}))\n"
        "else:\n"
        f'    exec(compile({source!r}, "kvnet-shim", "exec"))\n'
    )


def _environ() -> dict[str, str]:
    """The ``CNI_*`` variables, decoded as ``os.environ`` decodes them (``os`` is not imported)."""
    decode = sys.getfilesystemencoding()
    return {
        k.decode(decode, "surrogateescape"): v.decode(decode, "surrogateescape")
        for k, v in posix.environ.items()
        if k.startswith(b"CNI_")
    }


def main() -> int:
    environ = _environ()
    stdin = b"" if environ.get("CNI_COMMAND") == "VERSION" else sys.stdin.buffer.read()
    return run(environ, stdin, sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
