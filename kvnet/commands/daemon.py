"""``kvnet daemon``: run the thick-mode meta-plugin server for ``kvnet-shim``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
from typing import Any

from kvnet.cni.delegate import handle_signals
from kvnet.core.errors import InvalidConfig

DEFAULT_SOCKET = "/run/kvnet/kvnet.sock"


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--socket", default=DEFAULT_SOCKET, help=f"unix socket to listen on (default {DEFAULT_SOCKET})")
    parser.add_argument(
        "--config",
        help="a kvnet/Multus config file (JSON); its keys override the ones the shim sends, "
        "except cniVersion, name and type",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=20.0,
        metavar="SECONDS",
        help="on SIGTERM, how long the calls in flight get to finish before the ADDs still running are "
        "cancelled and undone (default 20; new calls are refused meanwhile)",
    )
    parser.add_argument(
        "--api",
        choices=("client", "light"),
        default="client",
        help="Kubernetes client kept for the daemon's life: the official client (default) or kvnet's stdlib one",
    )
    parser.add_argument(
        "--metrics-address",
        metavar="HOST:PORT",
        help="serve Prometheus /metrics, /healthz and /readyz on this TCP address (:PORT for every "
        "address); off by default (the DaemonSet sets :9465)",
    )
    parser.add_argument(
        "--nad-cache",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="answer NAD reads from a list + watch of every namespace's NADs, a GET on a miss or while the "
        "watch is not synced (default on; needs list and watch on network-attachment-definitions, without "
        "them every read is a GET)",
    )
    parser.add_argument(
        "--pod-cache",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="answer pod reads from a list + watch of this node's pods (spec.nodeName = --node-name), a GET on "
        "a miss, while not synced or for a pod whose UID is not the runtime's (default on, as multus-daemon's "
        "informer; needs list and watch on pods and a node name)",
    )
    parser.add_argument(
        "--node-name",
        default=os.environ.get("NODE_NAME", ""),
        help="this node's name, for the pod cache (default: $NODE_NAME, which the DaemonSet sets from spec.nodeName)",
    )
    parser.set_defaults(func=run)


def load_config(path: str | None) -> dict[str, Any] | None:
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as err:
        raise InvalidConfig(f"kvnet daemon: cannot load --config {path}: {err}") from err
    if not isinstance(data, dict):
        raise InvalidConfig(f"kvnet daemon: --config {path} is not a JSON object")
    return data


def run(args: argparse.Namespace) -> int:
    from kvnet.meta.daemon import CniDaemon
    from kvnet.meta.wiring import LongLived, client_api, light_api

    factory = light_api if args.api == "light" else client_api
    if args.pod_cache and not args.node_name:
        logging.getLogger("kvnet.daemon").warning(
            "no node name (--node-name or $NODE_NAME): no pod cache, every pod read is a GET"
        )
    address = None
    if args.metrics_address:
        from kvnet.meta.metrics import parse_address

        address = parse_address(args.metrics_address)
    daemon = CniDaemon(
        args.socket,
        daemon_conf=load_config(args.config),
        long_lived=LongLived(
            factory, nad_cache=args.nad_cache, pod_cache_node=args.node_name if args.pod_cache else ""
        ),
        metrics_address=address,
    )
    stop = threading.Event()
    handle_signals(lambda *_: stop.set(), (signal.SIGTERM, signal.SIGINT))
    daemon.start()
    try:
        stop.wait()
        daemon.drain(args.drain_timeout)
    finally:
        daemon.stop()
    return 0
