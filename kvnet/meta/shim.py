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

from __future__ import annotations

import json
import os
import socket
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
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(head + body)
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
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


def socket_path(config: Mapping[str, Any]) -> str:
    path = config.get("socketPath")
    if isinstance(path, str) and path:
        return path
    folder = config.get("socketDir")
    if isinstance(folder, str) and folder:
        return os.path.join(folder, SOCKET_NAME)
    return DEFAULT_SOCKET


def _version_of(stdin: bytes) -> str:
    try:
        conf = json.loads(stdin.decode("utf-8", errors="replace"))
        v = conf.get("cniVersion") if isinstance(conf, dict) else None
    except ValueError:
        v = None
    return v if isinstance(v, str) and v else "1.0.0"


class DaemonTrouble(Exception):
    """The daemon gave no CNI answer; the text says what happened."""


def call_daemon(path: str, env: Mapping[str, str], stdin: bytes, timeout: float = TIMEOUT) -> tuple[int, str]:
    """One CNI call through the daemon: (exit status, stdout text); :class:`DaemonTrouble`
    when there is no CNI answer (no daemon, a stopping one, one that went away)."""
    body = json.dumps({"env": dict(env), "stdin": stdin.decode("utf-8", errors="surrogateescape")})
    command = env.get("CNI_COMMAND", "")
    try:
        status, data = request(path, "POST", REQUEST_PATH, body.encode("utf-8", errors="surrogateescape"), timeout)
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
    try:
        answer = json.loads(data)
        return int(answer["exit"]), str(answer.get("stdout", ""))
    except (ValueError, KeyError, TypeError) as err:
        raise DaemonTrouble(f"the kvnet daemon at {path} answered {command} with something unreadable: {err}") from None


def run(environ: Mapping[str, str], stdin: bytes, stdout: Any) -> int:
    """The shim's whole job, with its inputs passed in (tests call this directly)."""
    command = environ.get("CNI_COMMAND", "")
    if command == "VERSION":
        stdout.write(json.dumps({"cniVersion": "1.1.0", "supportedVersions": list(SUPPORTED_VERSIONS)}) + "\n")
        return 0
    if not command:
        sys.stderr.write("kvnet-shim: thick-mode CNI shim for the kvnet daemon\n")
        return 0
    try:  # bytes that are not UTF-8 read as U+FFFD, as kvnet-cni (and Go) read them
        conf = json.loads(stdin.decode("utf-8", errors="replace"))
        problem = "" if isinstance(conf, dict) else f"expected a JSON object, got {type(conf).__name__}"
    except json.JSONDecodeError as err:
        # kvnet.core.gojson.go_syntax_error's rule: the installed shim is one file, stdlib
        # only, so it is repeated here (test_meta compares the shim's error with kvnet-cni's)
        truncated = err.pos >= len(err.doc.rstrip())
        where = "" if truncated else f"invalid character {err.doc[err.pos]!r} at offset {err.pos + 1}: {err.msg}"
        conf, problem = {}, where or "unexpected end of JSON input"
    except (ValueError, UnicodeDecodeError) as err:
        conf, problem = {}, str(err)
    if problem:  # skel's validateConfig, in kvnet-cni's words
        error = {"cniVersion": SUPPORTED_VERSIONS[-1], "code": DECODING_FAILURE}
        error["msg"] = f"error unmarshall network config: {problem}"
        stdout.write(json.dumps(error, indent=4) + "\n")
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
        stdout.write(json.dumps(error) + "\n")
        return 1
    stdout.write(out)
    stdout.flush()
    return status


def standalone_script(python: str) -> str:
    """This module as a self-contained CNI binary for ``python -I -S``.

    It needs nothing but the standard library, so it can skip ``site`` (and with it the
    package machinery of the installation): ``kvnet install`` and the test lab install
    this script as ``kvnet-shim`` instead of the console-script wrapper.
    """
    with open(__file__, encoding="utf-8") as fh:
        source = fh.read()
    return f"#!{python} -IS\n" + source


def main() -> int:
    stdin = b"" if os.environ.get("CNI_COMMAND") == "VERSION" else sys.stdin.buffer.read()
    return run(os.environ, stdin, sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
