"""What ``kvnet-mirror`` wants, as values: the config, the attachment's node-side port and
the tc filters that mirror it (docs/mirroring.md: clsact, an all-matching u32
filter, a mirred mirror action). Pure: the links and filters it judges
are read by :mod:`kvnet.mirror.tc` and passed in.

Directions are the attachment's, as the pod sees it: ``ingress`` is what the pod receives
(it leaves the node-side veth end: that end's tc *egress* hook), ``egress`` what the pod
sends (it arrives on the node-side end: its tc *ingress* hook), ``both`` is both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kvnet.core.errors import InvalidConfig
from kvnet.core.naming import ifname_problem

DIRECTIONS = {"ingress": ("egress",), "egress": ("ingress",), "both": ("ingress", "egress")}
PREF = 4711  # the tc filter priority kvnet-mirror owns on a port (others' filters are left alone)
# every packet: u32 with an empty match (cls_u32 is in every kernel the bandwidth plugin runs
# on; matchall is the modern spelling but not built into every kernel, this host's among them)
CLASSIFIER = ("u32", "match", "u32", "0", "0")


@dataclass(frozen=True)
class MirrorConf:
    """The plugin's own keys: ``target`` (a link on the node: an interface or a bridge
    port) and ``direction``."""

    target: str
    direction: str

    @property
    def hooks(self) -> tuple[str, ...]:
        """The tc hooks of the node-side port that carry ``direction``."""
        return DIRECTIONS[self.direction]


@dataclass(frozen=True)
class Link:
    name: str
    kind: str  # ip's linkinfo info_kind ("veth", "bridge", ...; "" for a plain device)


@dataclass(frozen=True)
class Filter:
    """One tc filter on a port's hook, as ``tc -j filter show`` reports it."""

    hook: str
    pref: int
    kind: str
    mirror_to: str  # the mirred action's target ("" when it has none)


def parse_conf(conf: Mapping[str, Any]) -> MirrorConf:
    target = conf.get("target")
    if not isinstance(target, str) or not target:
        raise InvalidConfig('kvnet-mirror needs "target": the node interface that receives the copies')
    problem = ifname_problem(target)
    if problem:
        raise InvalidConfig(f"kvnet-mirror target: {problem}")
    direction = conf.get("direction", "both")
    if direction not in DIRECTIONS:
        raise InvalidConfig(f'kvnet-mirror "direction" must be one of ingress, egress, both, not {direction!r}')
    return MirrorConf(target, str(direction))


def node_port(prev_result: Mapping[str, Any] | None, links: Sequence[Link]) -> str | None:
    """The node-side end of the attachment: the first interface of the previous result that
    is not in the pod (no ``sandbox``) and is a veth on the node; None when there is none."""
    if not prev_result:
        return None
    kinds = {link.name: link.kind for link in links}
    for iface in prev_result.get("interfaces") or ():
        if not isinstance(iface, Mapping) or iface.get("sandbox"):
            continue
        name = iface.get("name")
        if isinstance(name, str) and kinds.get(name) == "veth":
            return name
    return None


def missing(conf: MirrorConf, filters: Sequence[Filter]) -> list[str]:
    """The hooks whose mirror filter to ``conf.target`` is not there (CHECK's verdict)."""
    have = {(f.hook, f.mirror_to) for f in filters if f.pref == PREF and f.kind == CLASSIFIER[0]}
    return [hook for hook in conf.hooks if (hook, conf.target) not in have]


def tc_add(port: str, conf: MirrorConf) -> list[list[str]]:
    """The tc commands that mirror ``port`` to the target (after a clsact qdisc exists)."""
    match = ["pref", str(PREF), "protocol", "all", *CLASSIFIER]
    action = ["action", "mirred", "egress", "mirror", "dev", conf.target]
    return [["filter", "add", "dev", port, hook, *match, *action] for hook in conf.hooks]


def tc_del(port: str, filters: Sequence[Filter]) -> list[list[str]]:
    """The tc commands that remove kvnet-mirror's filters from ``port``, and its clsact
    qdisc when no other filter is left on it."""
    ours = sorted({f.hook for f in filters if f.pref == PREF})
    cmds = [["filter", "del", "dev", port, hook, "pref", str(PREF)] for hook in ours]
    if ours and all(f.pref == PREF for f in filters):
        cmds.append(["qdisc", "del", "dev", port, "clsact"])
    return cmds


def parse_filters(hook: str, shown: Any) -> list[Filter]:
    """``tc -j filter show dev X <hook>`` → filters (one entry per filter with options)."""
    out: list[Filter] = []
    for entry in shown if isinstance(shown, list) else ():
        if not isinstance(entry, Mapping) or "options" not in entry:
            continue
        target = ""
        for action in (entry.get("options") or {}).get("actions") or ():
            if isinstance(action, Mapping) and action.get("kind") == "mirred":
                target = str(action.get("to_dev", ""))
        out.append(Filter(hook, int(entry.get("pref", 0)), str(entry.get("kind", "")), target))
    return out
