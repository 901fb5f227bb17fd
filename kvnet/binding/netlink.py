"""Netlink in a pod network namespace: the only module that imports pyroute2.

pyroute2 the 0.9 way: ``IPRoute(netns=path, flags=0)`` (without ``flags=0`` a missing
netns would be created), ``link_lookup`` returns a list. Every ``NetlinkError`` and
``OSError`` is translated here into ``NetlinkFailure`` naming the operation, the link and
the netns; a netns that does not exist raises ``NetnsMissing`` (DEL treats it as done).
What it returns are frozen dataclasses, so callers never hold pyroute2 messages.
"""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from kvnet.core.errors import NetlinkFailure

ETH_P_ALL = 0x0003
INGRESS = 0xFFFF0000
IFF_UP = 0x1
RT_TABLE_MAIN = 254
RTPROT_BOOT = 3
RTPROT_KERNEL = 2

P = ParamSpec("P")
T = TypeVar("T")


class NetnsMissing(NetlinkFailure):
    """The pod network namespace does not exist (any more)."""


@dataclass(frozen=True)
class LinkState:
    """A link as netlink reports it. ``kind`` is IFLA_INFO_KIND ("" for a physical NIC)."""

    name: str
    index: int
    mac: str
    mtu: int
    kind: str = ""
    master: str | None = None
    up: bool = False
    alias: str = ""
    multi_queue: bool = False  # tun/tap only
    owner: int | None = None  # tun/tap only
    group: int | None = None  # tun/tap only


@dataclass(frozen=True)
class AddressState:
    """An address on a link: ``cidr`` like ``10.1.0.5/24``; ``scope`` 0 global, 253 link."""

    cidr: str
    scope: int = 0

    @property
    def family(self) -> int:
        return socket.AF_INET6 if ":" in self.cidr else socket.AF_INET


@dataclass(frozen=True)
class RouteState:
    """A main-table route out of a link; ``gateway`` None for a device route."""

    dst: str
    gateway: str | None = None
    proto: int = 0
    priority: int | None = None

    @property
    def family(self) -> int:
        return socket.AF_INET6 if ":" in self.dst else socket.AF_INET


def _translated(op: str) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """Turn pyroute2 and OS errors of one method into NetlinkFailure naming link and netns."""

    def wrap(fn: Callable[P, T]) -> Callable[P, T]:
        @functools.wraps(fn)
        def inner(*args: P.args, **kwargs: P.kwargs) -> T:
            try:
                return fn(*args, **kwargs)
            except (NetlinkError, OSError) as err:
                self = args[0]
                assert isinstance(self, PodNetns)
                raise NetlinkFailure(f"{op} {_subject(args[1:])} in netns {self.path}: {_describe(err)}") from None

        return inner

    return wrap


def _subject(args: tuple[object, ...]) -> str:
    """``link (detail, ...)`` for an error message."""
    if not args:
        return ""
    extra = [
        f"{a.dst} via {a.gateway}"
        if isinstance(a, RouteState) and a.gateway
        else a.dst
        if isinstance(a, RouteState)
        else str(a)
        for a in args[1:]
    ]
    return f"{args[0]} ({', '.join(extra)})" if extra else str(args[0])


def _describe(err: BaseException) -> str:
    if isinstance(err, NetlinkError):
        return f"{err.args[1] if len(err.args) > 1 else err} (errno {err.code})"
    return str(err)


class PodNetns:
    """One open netlink socket in one netns; every method names links by name."""

    def __init__(self, path: str, ipr: Any) -> None:
        self.path = path
        self._ipr = ipr

    # --- reading -------------------------------------------------------------------

    def _index(self, name: str) -> int | None:
        found = self._ipr.link_lookup(ifname=name)
        return found[0] if found else None

    def _require(self, name: str) -> int:
        index = self._index(name)
        if index is None:
            raise NetlinkFailure(f"link {name} not found in netns {self.path}")
        return index

    def _state(self, msg: Any) -> LinkState:
        master_index = msg.get("master")
        master = None
        if master_index:
            found = self._ipr.link("get", index=master_index)
            master = found[0].get("ifname") if found else None
        data = msg.get(("linkinfo", "data"))
        tun: dict[str, Any] = dict(data["attrs"]) if data is not None and msg.get(("linkinfo", "kind")) == "tun" else {}
        return LinkState(
            name=msg.get("ifname"),
            index=msg["index"],
            mac=(msg.get("address") or "").lower(),
            mtu=msg.get("mtu") or 0,
            kind=msg.get(("linkinfo", "kind")) or "",
            master=master,
            up=bool(msg["flags"] & IFF_UP),
            alias=msg.get("ifalias") or "",
            multi_queue=bool(tun.get("IFLA_TUN_MULTI_QUEUE")),
            owner=tun.get("IFLA_TUN_OWNER"),
            group=tun.get("IFLA_TUN_GROUP"),
        )

    @_translated("read link")
    def link(self, name: str) -> LinkState | None:
        index = self._index(name)
        if index is None:
            return None
        return self._state(self._ipr.link("get", index=index)[0])

    @_translated("list links")
    def link_names(self) -> tuple[str, ...]:
        return tuple(m.get("ifname") for m in self._ipr.get_links())

    @_translated("read addresses of")
    def addresses(self, name: str) -> tuple[AddressState, ...]:
        index = self._require(name)
        return tuple(
            AddressState(f"{m.get('address')}/{m['prefixlen']}", m["scope"]) for m in self._ipr.get_addr(index=index)
        )

    @_translated("read routes of")
    def routes(self, name: str) -> tuple[RouteState, ...]:
        """Main-table unicast routes leaving through ``name`` (both families)."""
        index = self._require(name)
        out = []
        for family in (socket.AF_INET, socket.AF_INET6):
            for m in self._ipr.get_routes(family=family, oif=index, table=RT_TABLE_MAIN):
                if m["type"] != 1:  # RTN_UNICAST only
                    continue
                dst = m.get("dst")
                dst = f"{dst}/{m['dst_len']}" if dst else ("0.0.0.0/0" if family == socket.AF_INET else "::/0")
                out.append(RouteState(dst, m.get("gateway"), m["proto"], m.get("priority")))
        return tuple(out)

    @_translated("read tc redirect of")
    def tc_redirect_target(self, name: str) -> str | None:
        """The link that ingress traffic of ``name`` is redirected to, if any."""
        index = self._require(name)
        for f in self._ipr.get_filters(index=index, parent=INGRESS):
            acts = f.get_nested("TCA_OPTIONS", "TCA_U32_ACT")
            for _, act in acts["attrs"] if acts is not None else ():
                parms = _mirred_parms(act)
                if parms is not None:
                    found = self._ipr.link("get", index=parms["ifindex"])
                    return found[0].get("ifname") if found else None
        return None

    # --- writing -------------------------------------------------------------------

    def _no_ipv6_addresses(self, index: int) -> None:
        """addrgenmode none: a pure L2 link gets no IPv6 link-local, so it never talks on its own."""
        self._ipr.link(
            "set", index=index, IFLA_AF_SPEC={"attrs": [["AF_INET6", {"attrs": [["IFLA_INET6_ADDR_GEN_MODE", 1]]}]]}
        )

    @_translated("create bridge")
    def create_bridge(self, name: str, *, mtu: int) -> None:
        """A bridge with no addresses of its own (created down; IPv6 link-local off)."""
        self._ipr.link("add", ifname=name, kind="bridge", mtu=mtu)
        self._no_ipv6_addresses(self._require(name))

    @_translated("create tap")
    def create_tap(self, name: str, *, owner_uid: int, owner_gid: int, multi_queue: bool, mtu: int) -> None:
        """A persistent tap (no PI header, vnet header for virtio-net offloads), IPv6 link-local off."""
        self._ipr.link(
            "add",
            ifname=name,
            kind="tuntap",
            mode="tap",
            uid=owner_uid,
            gid=owner_gid,
            ifr={"no_pi": True, "vnet_hdr": True, "multi_queue": multi_queue, "one_queue": False},
        )
        index = self._require(name)
        self._ipr.link("set", index=index, mtu=mtu)
        self._no_ipv6_addresses(index)

    @_translated("set master of")
    def set_master(self, name: str, master: str | None) -> None:
        self._ipr.link("set", index=self._require(name), master=self._require(master) if master else 0)

    @_translated("read bridge port of")
    def learning(self, name: str) -> bool | None:
        """Whether the bridge port ``name`` learns source MACs; None when it is no port."""
        index = self._require(name)
        found = self._ipr.brport("show", index=index)
        value = found[0].get(("protinfo", "learning")) if found else None
        return None if value is None else bool(value)

    @_translated("set bridge port learning of")
    def set_learning(self, name: str, learning: bool) -> None:
        self._ipr.brport("set", index=self._require(name), learning=int(learning))

    @_translated("set MAC of")
    def set_mac(self, name: str, mac: str) -> None:
        self._ipr.link("set", index=self._require(name), address=mac)

    @_translated("set MTU of")
    def set_mtu(self, name: str, mtu: int) -> None:
        index = self._require(name)
        self._ipr.link("set", index=index, mtu=mtu)
        self._no_ipv6_addresses(index)

    @_translated("set state of")
    def set_up(self, name: str, up: bool = True) -> None:
        self._ipr.link("set", index=self._require(name), state="up" if up else "down")

    @_translated("set alias of")
    def set_alias(self, name: str, alias: str) -> None:
        self._ipr.link("set", index=self._require(name), ifalias=alias)

    @_translated("add address to")
    def add_address(self, name: str, cidr: str) -> None:
        address, prefix = cidr.split("/")
        self._ipr.addr("add", index=self._require(name), address=address, prefixlen=int(prefix))

    @_translated("remove address from")
    def remove_address(self, name: str, cidr: str) -> None:
        address, prefix = cidr.split("/")
        self._ipr.addr("del", index=self._require(name), address=address, prefixlen=int(prefix))

    @_translated("add route on")
    def add_route(self, name: str, route: RouteState) -> None:
        kwargs = self._route_keys(name, route)
        kwargs["proto"] = route.proto or RTPROT_BOOT  # what `ip route add` and the CNI plugins leave
        self._ipr.route("add", **kwargs)

    @_translated("remove route on")
    def remove_route(self, name: str, route: RouteState) -> None:
        self._ipr.route("del", **self._route_keys(name, route))

    def _route_keys(self, name: str, route: RouteState) -> dict[str, Any]:
        """What names ``route`` on link ``name`` in the main table, for adding or removing it."""
        kwargs: dict[str, Any] = {"dst": route.dst, "oif": self._require(name), "table": RT_TABLE_MAIN}
        if route.gateway:
            kwargs["gateway"] = route.gateway
        if route.priority is not None:
            kwargs["priority"] = route.priority
        return kwargs

    @_translated("delete link")
    def delete_link(self, name: str) -> None:
        index = self._index(name)
        if index is not None:
            self._ipr.link("del", index=index)

    @_translated("redirect ingress of")
    def tc_redirect(self, name: str, to: str) -> None:
        """Ingress qdisc on ``name`` and a match-all u32 filter redirecting to ``to``'s egress."""
        index, target = self._require(name), self._require(to)
        self._ipr.tc("add", "ingress", index, "ffff:")
        self._ipr.tc(
            "add-filter",
            "u32",
            index,
            parent=INGRESS,
            protocol=ETH_P_ALL,
            target=0,
            keys=["0x0/0x0+0"],
            action={"kind": "mirred", "direction": "egress", "action": "redirect", "ifindex": target},
        )

    @_translated("clear tc of")
    def clear_tc(self, name: str) -> None:
        """Remove the ingress qdisc (and its filters) from ``name``; fine when there is none."""
        index = self._index(name)
        if index is None:
            return
        if any(q.get_attr("TCA_KIND") == "ingress" for q in self._ipr.get_qdiscs(index=index)):
            self._ipr.tc("del", "ingress", index, "ffff:")


def _mirred_parms(act: Any) -> dict[str, Any] | None:
    if not hasattr(act, "get_attr") or act.get_attr("TCA_ACT_KIND") != "mirred":
        return None
    options = act.get_attr("TCA_ACT_OPTIONS")
    parms = options.get_attr("TCA_MIRRED_PARMS") if options is not None else None
    return dict(parms) if parms is not None else None


@contextmanager
def open_netns(path: str) -> Iterator[PodNetns]:
    """A ``PodNetns`` for the netns at ``path`` (``/var/run/netns/x``, ``/proc/N/ns/net``)."""
    if not os.path.exists(path):  # checked first: pyroute2 leaks its event loop when this fails inside
        raise NetnsMissing(f"network namespace {path} does not exist")
    try:
        ipr = IPRoute(netns=path, flags=0)
    except FileNotFoundError:
        raise NetnsMissing(f"network namespace {path} does not exist") from None
    except (NetlinkError, OSError) as err:
        raise NetlinkFailure(f"cannot open netlink in netns {path}: {_describe(err)}") from None
    try:
        yield PodNetns(path, ipr)
    finally:
        ipr.close()
