"""``kvnet-sidecar``: the virt-launcher hook sidecar. Only wires the server."""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import subprocess
import sys
import threading
from types import FrameType

from kvnet.core.errors import KvnetError
from kvnet.sidecar.server import (
    DEFAULT_HOOKS_DIR,
    HOOK_POINTS,
    NO_CLOUD_INIT_HOOK_POINTS,
    SidecarServer,
    socket_path,
)
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
    p.add_argument(
        "--no-guest-addressing",
        action="store_true",
        help="do not start kvnet-guestnet (DHCPv4, RA and DHCPv6 for the VM's NICs with IPAM)",
    )
    p.add_argument(
        "--no-cloud-init",
        dest="cloud_init",
        action="store_false",
        default=env.cloud_init,
        help="do not subscribe to PreCloudInitIso (for VMIs without a cloud-init volume; env KVNET_CLOUD_INIT=off)",
    )
    p.add_argument("--max-workers", type=int, default=8, help="concurrent hook calls")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logs on stderr")
    return p.parse_args(argv)


def start_guestnet(sys_class_net: str) -> subprocess.Popen[bytes] | None:
    """The guest-address server for the pod's life, as this container's user (docs/guest-addressing.md).

    It serves the NICs whose binding left a server tap and exits at once when there are none;
    it dies with the sidecar (``PR_SET_PDEATHSIG`` by setpriv: the gRPC server's threads are
    running, so no ``preexec_fn``).
    """
    setpriv = shutil.which("setpriv", path="/usr/bin:/bin")  # util-linux, in every Debian-based image
    pdeathsig = [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []
    cmd = [*pdeathsig, sys.executable, "-m", "kvnet.guestnet", "--sys-class-net", sys_class_net]
    try:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=sys.stderr)
    except OSError as err:
        log.error("cannot start kvnet-guestnet: %s", err.strerror)
        return None


def stop_guestnet(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.info("kvnet-guestnet exited with %s", proc.returncode)


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
        cloud_init=args.cloud_init,
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
            hook_points=HOOK_POINTS if settings.cloud_init else NO_CLOUD_INIT_HOOK_POINTS,
        )
        server.start()
    except KvnetError as err:
        print(f"kvnet-sidecar: {err.msg}", file=sys.stderr)
        return 1
    guestnet = None if args.no_guest_addressing else start_guestnet(args.sys_class_net)
    while not server.wait(1.0):
        pass
    server.stop(grace=2.0)
    if guestnet is not None:
        stop_guestnet(guestnet)
    log.info("%s: stopped", args.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
