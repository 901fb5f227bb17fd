"""``kvnet demo``: the local end-to-end demo on the shipped examples.

First the pod half (kvnet-cni ADD/DEL through real plugins, network-status written to the
local API stand-in), then the VM half (the guest boots with one NIC per attachment).
"""

from __future__ import annotations

import argparse
import sys


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--guest", default="build/guest", help="guest image folder (kvnet guest build)")
    parser.add_argument("--pod-only", action="store_true", help="run only the pod half (no VM)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kvnet.lab import pod_demo
    from kvnet.lab.vm import run as vm_run

    status = int(pod_demo.run(out=sys.stdout) or 0)
    if status or args.pod_only:
        return status
    return int(vm_run.demo(args.guest, out=sys.stdout) or 0)
