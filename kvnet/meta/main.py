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

_early: list[int] = []  # signals that came while the modules below were still loading
for _sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(_sig, lambda signum, frame: _early.append(signum))

from kvnet.cni import delegate  # noqa: E402 - after the early handlers on purpose
from kvnet.cni.protocol import CniRequest, plugin_main  # noqa: E402
from kvnet.meta.wiring import flush_thin_events, make_handlers  # noqa: E402

ABOUT = "kvnet meta-plugin (Multus-compatible) that delegates to other CNI plugins"


def _on_signal(signum: int, frame: FrameType | None) -> None:
    """Stop the call: where it is, unless a delegate runs (then it is killed and the call
    stops when it returns) or it has ended (its result is being written)."""
    reason = f"kvnet-cni got {signal.Signals(signum).name}"
    if delegate.current_guard() is None:
        if delegate.calls_begun == 0:
            raise delegate.Interrupted(f"kvnet: interrupted ({reason}) before the call had done anything")
        return
    if delegate.cancel_all(reason):
        raise delegate.Interrupted(reason)


def _early_stop(request: CniRequest) -> None:
    name = signal.Signals(_early[0]).name
    raise delegate.Interrupted(f"kvnet: interrupted (kvnet-cni got {name}) before the call had done anything")


def main() -> int:
    delegate.handle_signals(_on_signal, (signal.SIGTERM, signal.SIGINT))
    if _early:  # nothing has run yet: answer with the CNI error at once
        return plugin_main(dict.fromkeys(("ADD", "DEL", "CHECK", "STATUS", "GC"), _early_stop), about=ABOUT)
    try:
        return plugin_main(make_handlers(), about=ABOUT)
    finally:
        flush_thin_events()  # the result is written; the pod's events get a bounded wait


if __name__ == "__main__":
    sys.exit(main())
