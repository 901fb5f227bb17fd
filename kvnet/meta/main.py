"""``kvnet-cni``: the meta-plugin as a standalone CNI binary (config ``"type": "kvnet"``).

Thin mode: one process per call, wired by :func:`kvnet.meta.wiring.make_handlers` (the
light API client from ``kubeconfig``, the delegate runner over ``binDir``, ``CNI_PATH``
and ``/usr/lib/cni``, Multus-style logging). Installed under the name ``multus`` it runs
an existing Multus config unchanged. The hot path imports no heavy library (no kubernetes
client, pyroute2, grpc, jinja2 or libvirt).
"""

from __future__ import annotations

import sys

from kvnet.cni.protocol import plugin_main
from kvnet.meta.wiring import make_handlers

ABOUT = "kvnet meta-plugin (Multus-compatible) that delegates to other CNI plugins"


def main() -> int:
    return plugin_main(make_handlers(), about=ABOUT)


if __name__ == "__main__":
    sys.exit(main())
