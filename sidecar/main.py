"""``kvnet-sidecar``: the virt-launcher hook sidecar. Only wires the server."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType

from kvnet.core.errors import KvnetError
from kvnet.sidecar.server import DEFAULT_HOOKS_DIR, SidecarServer, socket_path
from kvnet.sidecar.wiring import SidecarSettings, build_hooks

log = logging.getLogger("kvnet.sidecar")


def parse_args(argv: list[str]) -> argparse.Namespace:
    env = SidecarSettings.from_env()
    p = argparse.ArgumentParser(prog="kvnet-sidecar", description="KubeVirt hook sidecar of the kvnet network binding")
    p.add_argument("--hooks-dir", default=DEFAULT_HOOKS_DIR, help="where virt-launcher looks for hook sockets")
    p.add_argument(
        "--name", default=env.name, help="binding plugin name and socket name (env NETWORK_BINDING_PLUGIN_NAME)"
    )
    p.add_argument("--network-info", default=env.network_info, help="KubeVirt's downward-API network-info file")
    p.add_argument(
        "--network-info-timeout", type=float, default=env.network_info_timeout, help="seconds to wait for network-info"
    )
    p.add_argument("--sys-class-net", default=env.sys_class_net, help="the pod netns's /sys/class/net")
    p.add_argument("--echo", action="store_true", help="change nothing: answer every hook with its input (diagnostics)")
    p.add_argument("--max-workers", type=int, default=8, help="concurrent hook calls")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logs on stderr")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    settings = SidecarSettings(
        name=args.name,
        network_info=args.network_info,
        sys_class_net=args.sys_class_net,
        network_info_timeout=args.network_info_timeout,
        echo=args.echo,
    )
    stopping = threading.Event()  # Shutdown or a signal; also ends a call waiting for network-info

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("%s: signal %s, stopping", args.name, signal.Signals(signum).name)
        stopping.set()

    # Before the socket appears: a signal right after it must still end in a clean exit 0.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, on_signal)
    try:
        server = SidecarServer(
            build_hooks(settings, stopping=stopping),
            socket_path(args.hooks_dir, args.name),
            max_workers=args.max_workers,
            shutdown_requested=stopping,
        )
        server.start()
    except KvnetError as err:
        print(f"kvnet-sidecar: {err.msg}", file=sys.stderr)
        return 1
    while not server.wait(1.0):
        pass
    server.stop(grace=2.0)
    log.info("%s: stopped", args.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
