"""``kvnet policy``: the MultiNetworkPolicy node agent (docs/policy.md).

Lists and watches MultiNetworkPolicies, pods and namespaces and keeps one nftables table
per policed pod of ``--node`` in the pod's netns; on SIGTERM or SIGINT it removes them.
``--once`` applies the tables once and exits, leaving them in place.
"""

from __future__ import annotations

import argparse
import logging
import signal
import types

from kvnet.policy.agent import Agent, KubeSource

log = logging.getLogger("kvnet.policy")


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", required=True, help="kubeconfig of the node agent's identity")
    parser.add_argument("--node", required=True, help="this node's name (spec.nodeName of the pods to police)")
    parser.add_argument(
        "--netns-dir",
        default="/var/run/netns",
        help="where the netns named by a pod's kvnet.io/netns annotation live (default: /var/run/netns)",
    )
    parser.add_argument("--once", action="store_true", help="apply the tables once and exit (they stay)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    agent = Agent(KubeSource(args.kubeconfig), args.node, netns_dir=args.netns_dir)
    if args.once:
        agent.run_once()
        return 0

    def stop(signum: int, frame: types.FrameType | None) -> None:
        log.info("signal %d: removing the tables and stopping", signum)
        agent.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("policing the pods of node %s", args.node)
    agent.run()
    return 0
