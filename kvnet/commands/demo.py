"""``kvnet demo``: the local end-to-end demo on the shipped examples.

First the pod half (kvnet-cni ADD/DEL through real plugins, network-status written to the
API server), then the VM half (the guest boots with one NIC per attachment).

The API server is the real kube-apiserver + etcd from ``build/peers`` when they are built
(``--api auto``, the default) or asked for (``--api real``); otherwise the embedded API
stand-in, and the demo says so: building the peers cold takes longer than the demo itself
(README), so a first ``./run demo`` on a fresh machine does not wait for it. The same rule
holds for KubeVirt's part of the VM half: KubeVirt's own code (``kubevirt-peer``, built with
the peers) when it is built, else the lab's stand-ins, and the first line says which.
"""

from __future__ import annotations

import argparse
import sys


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--guest", default="build/guest", help="guest image folder (kvnet guest build)")
    parser.add_argument("--pod-only", action="store_true", help="run only the pod half (no VM)")
    parser.add_argument(
        "--api",
        choices=("auto", "real", "standin"),
        default="auto",
        help="real: kube-apiserver + etcd from build/peers (make peers); standin: the embedded "
        "API stand-in; auto (default): real when the peers are built",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import contextlib
    import tempfile
    from pathlib import Path

    from kvnet.lab import kube as lab_kube
    from kvnet.lab import pod_demo
    from kvnet.lab.vm import kubevirt as vm_kubevirt
    from kvnet.lab.vm import run as vm_run
    from kvnet.lab.vm.scenario import kubevirt_cr

    missing = lab_kube.peers_built()
    if args.api == "real" and missing:
        print(f"kvnet demo: --api real, but the {missing}", file=sys.stderr)
        return 1
    kubevirt = None if args.pod_only else vm_kubevirt.find(kubevirt_cr())
    part = (
        ""
        if args.pod_only
        else "; KubeVirt's part: KubeVirt v1.8.4's own code (kubevirt-peer)"
        if kubevirt
        else f"; KubeVirt's part: the lab's stand-ins ({vm_kubevirt.peer_missing()})"
    )
    with contextlib.ExitStack() as stack:
        kube = None
        if args.api == "real" or (args.api == "auto" and not missing):
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kvnet-demo-kube-")))
            kube = stack.enter_context(lab_kube.KubeCluster(workdir))
            print(f"API: kube-apiserver (real, from build/peers) at {kube.url}{part}", file=sys.stdout)
        else:
            why = missing if args.api == "auto" else "--api standin"
            print(
                f"API: the embedded API stand-in, not a real API server ({why}); "
                f"`make peers` then `kvnet demo --api real` runs on a real kube-apiserver{part}",
                file=sys.stdout,
            )
        status = int(pod_demo.run(out=sys.stdout, kube=kube) or 0)
        if status or args.pod_only:
            return status
        return int(vm_run.demo(args.guest, out=sys.stdout, kube=kube, kubevirt=kubevirt) or 0)
