"""``kvnet apiserver``: run the local Kubernetes API stand-in (for the demo and manual tests).

It is a stand-in, not a Kubernetes API server: pods, pods/status and
NetworkAttachmentDefinitions in memory, over plain HTTP. Runs until SIGTERM or SIGINT;
writes nothing on stdout (an optional ready line goes to stderr).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType

import yaml

from kvnet.core.errors import InvalidConfig
from kvnet.lab.apiserver import ApiStandIn, iter_yaml_objects

log = logging.getLogger(__name__)


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6); port 0 picks a free one."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"--listen {text!r}: expected HOST:PORT")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen",
        type=parse_listen,
        default=("127.0.0.1", 8001),
        metavar="HOST:PORT",
        help="address to serve on (default 127.0.0.1:8001; port 0 = any free port)",
    )
    parser.add_argument(
        "--load",
        action="append",
        default=[],
        metavar="FILE.yaml",
        help="YAML file(s) of Pods and NetworkAttachmentDefinitions to serve (repeatable)",
    )
    parser.add_argument("--kubeconfig", metavar="OUT", help="write a kubeconfig pointing at the stand-in here")
    parser.add_argument("--token", help="require this bearer token (written into the kubeconfig)")
    parser.add_argument("--ready", action="store_true", help="print 'ready <url>' on stderr once serving")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    host, port = args.listen
    server = ApiStandIn(host, port, token=args.token)
    try:
        server.load(iter_yaml_objects(args.load))
    except OSError as err:
        raise InvalidConfig(f"cannot read {err.filename}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise InvalidConfig(f"--load: not valid YAML: {err}") from None
    except ValueError as err:
        raise InvalidConfig(str(err)) from None
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("API stand-in: signal %d, stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    try:
        if args.kubeconfig:
            server.write_kubeconfig(args.kubeconfig)
        log.info("API stand-in (not a Kubernetes API server) serving on %s", server.url)
        if args.ready:
            print(f"ready {server.url}", file=sys.stderr, flush=True)
        while not stop.wait(3600):
            pass
    finally:
        server.stop()
    return 0
