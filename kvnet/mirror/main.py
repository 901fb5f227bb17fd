"""The ``kvnet-mirror`` CNI entry point: a chained plugin after the attachment's main plugin
(bridge, ptp, ...) in a NAD's conflist. ADD mirrors the attachment's node-side port to the
configured target with tc, DEL removes exactly that, CHECK verifies it (docs/mirroring.md)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from kvnet.cni.protocol import CniRequest, plugin_main
from kvnet.core.errors import InvalidConfig, KvnetError, NetlinkFailure
from kvnet.mirror import plan, tc

ABOUT = "kvnet-mirror: mirrors an attachment's traffic to a port on the node (chained CNI plugin)"
log = logging.getLogger("kvnet.mirror")


def _prev(request: CniRequest) -> Mapping[str, Any] | None:
    prev = request.config.get("prevResult")
    return prev if isinstance(prev, Mapping) else None


def _port(request: CniRequest, links: list[plan.Link]) -> str:
    port = plan.node_port(_prev(request), links)
    if port is None:
        raise InvalidConfig(
            "kvnet-mirror: the previous result names no node-side veth to mirror "
            "(chain it after a plugin that makes one, such as bridge or ptp)"
        )
    return port


def add(request: CniRequest) -> Mapping[str, Any]:
    conf = plan.parse_conf(request.config)
    prev = _prev(request)
    if prev is None:
        raise InvalidConfig("kvnet-mirror is a chained plugin: it needs a prevResult (put it after the main plugin)")
    links = tc.links()
    if conf.target not in {link.name for link in links}:
        raise InvalidConfig(f"kvnet-mirror target {conf.target!r} does not exist on the node")
    port = _port(request, links)
    tc.ensure_clsact(port)
    try:
        for args in plan.tc_add(port, conf):
            tc.tc(args)
    except KvnetError:
        for args in plan.tc_del(port, tc.filters(port)):
            tc.tc(args, undo=True)
        raise
    log.info("container %s: %s mirrored (%s) to %s", request.container_id, port, conf.direction, conf.target)
    return prev


def delete(request: CniRequest) -> None:
    port = plan.node_port(_prev(request), tc.links())
    if port is None:  # no cached result, or the port is gone with the pod: nothing of ours is left
        return
    for args in plan.tc_del(port, tc.filters(port)):
        tc.tc(args, undo=True)


def check(request: CniRequest) -> None:
    conf = plan.parse_conf(request.config)
    port = _port(request, tc.links())
    gone = plan.missing(conf, tc.filters(port))
    if gone:
        raise NetlinkFailure(f"kvnet-mirror: {port} has no mirror to {conf.target} on its tc {' and '.join(gone)} hook")


def main() -> int:
    return plugin_main({"ADD": add, "DEL": delete, "CHECK": check}, about=ABOUT)


if __name__ == "__main__":
    raise SystemExit(main())
