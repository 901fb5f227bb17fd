"""``kvnet-cni``: the meta-plugin as a standalone CNI binary (config ``"type": "kvnet"``).

Thin mode: one process per call, wired by :func:`kvnet.meta.wiring.make_handlers` (the
light API client from ``kubeconfig``, the delegate runner over ``binDir``, ``CNI_PATH``
and ``/usr/lib/cni``, Multus-style logging). Installed under the name ``multus`` it runs
an existing Multus config unchanged. The hot path imports no heavy library (no kubernetes
client, pyroute2, grpc, jinja2 or libvirt).

SIGTERM and SIGINT stop a call cleanly: an ADD kills the delegate it runs, deletes every
delegate it started and exits with a CNI error (code 11); a DEL finishes first
(``kvnet.cni.delegate.cancel_all``, docs/reliability.md).
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

from kvnet.cni import delegate
from kvnet.cni.protocol import plugin_main
from kvnet.meta.wiring import make_handlers

ABOUT = "kvnet meta-plugin (Multus-compatible) that delegates to other CNI plugins"


def _on_signal(signum: int, frame: FrameType | None) -> None:
    """Stop the call: where it is, unless a delegate runs (then it is killed and the call
    stops when it returns) or it has ended (its result is being written)."""
    reason = f"kvnet-cni got {signal.Signals(signum).name}"
    if delegate.current_guard() is None:
        if delegate.calls_begun == 0:
            raise delegate.Interrupted(f"kvnet: {reason} before the call started")
        return
    if delegate.cancel_all(reason):
        raise delegate.Interrupted(reason)


def main() -> int:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _on_signal)
    return plugin_main(make_handlers(), about=ABOUT)


if __name__ == "__main__":
    sys.exit(main())
