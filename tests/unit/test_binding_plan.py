"""The binding's pure parts (config, pod interface name, plan) and add/delete/check on a fake netns."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from kvnet.binding import plan as binding
from kvnet.binding.netlink import AddressState, LinkState, NetnsMissing, RouteState
from kvnet.binding.plan import (
    BindingConfig,
    DesiredPlumbing,
    ObservedPodLink,
    TapSpec,
    find_pod_iface,
    plan,
    swapped_mac,
)
from kvnet.binding.sriov import VfInfo
from kvnet.core import bindrecord
from kvnet.core.errors import DecodeFailure, DeviceError, InvalidConfig, NetlinkFailure
from kvnet.core.model import REDIRECT_KINDS, BindingRecord, GuestIpConfig, PciAddress, PodLink
from kvnet.core.plumbing import BridgedTap, Macvtap, RedirectedTap, VfioVf
from kvnet.lab.fake_sysfs import FakePf, FakeVf, make_fake_sysfs

BLUE = "pod16477688c0e"
MAC = "0a:58:0a:4d:00:02"


def veth(**kw: Any) -> LinkState:
    return replace(LinkState(BLUE, 2, MAC, 1400, kind="veth", up=True), **kw)


def observed(link: LinkState | None = None, **kw: Any) -> ObservedPodLink:
    base = ObservedPodLink(
        link or veth(),
        (AddressState("10.77.0.2/24"), AddressState("fe80::858:aff:fe4d:2/64", 253)),
        (
            RouteState("0.0.0.0/0", "10.77.0.1", 3),
            RouteState("10.77.0.0/24", None, 2),
            RouteState("10.88.0.0/16", "10.77.0.1", 3),
            RouteState("fe80::/64", None, 2),
        ),
    )
    return replace(base, **kw)


RECORD = BindingRecord(MAC, 1400, GuestIpConfig(("10.77.0.2/24",), ("10.77.0.1",), (("10.88.0.0/16", "10.77.0.1"),)))


# --- config --------------------------------------------------------------------------


def test_config_defaults() -> None:
    assert BindingConfig.parse({"name": "b"}) == BindingConfig("auto", False, 107, 107, None, "error")


def test_config_all_keys() -> None:
    conf = {
        "mode": "redirect",
        "multiQueue": True,
        "tapOwner": {"uid": 0, "gid": 36},
        "logFile": "/var/log/b.log",
        "logLevel": "debug",
        "deviceID": "0000:81:00.2",
        "sysfsRoot": "/tmp/sysfs",
    }
    assert BindingConfig.parse(conf) == BindingConfig(
        "redirect", True, 0, 36, "/var/log/b.log", "debug", "0000:81:00.2", "/tmp/sysfs"
    )


@pytest.mark.parametrize(
    ("conf", "expected"),
    [
        ({}, None),
        ({"deviceID": "0000:81:00.2", "pciBusID": "0000:81:00.2"}, "0000:81:00.2"),  # a NAD with resourceName
        ({"runtimeConfig": {"deviceID": "0000:81:00.3"}}, "0000:81:00.3"),  # the deviceID capability
        ({"deviceID": "0000:81:00.2", "runtimeConfig": {"deviceID": "0000:81:00.3"}}, "0000:81:00.3"),  # runtime wins
        ({"deviceID": "0000:81:00.2", "runtimeConfig": {"deviceID": ""}}, "0000:81:00.2"),
        ({"deviceID": "", "runtimeConfig": {}}, None),
        ({"runtimeConfig": "weird"}, None),
    ],
)
def test_config_device_id_as_multus_passes_it(conf: dict[str, Any], expected: str | None) -> None:
    assert BindingConfig.parse({"name": "b", **conf}).device_id == expected


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"mode": "macvtap"}, "binding conf 'b': mode 'macvtap' is not one of auto, bridge, redirect"),
        ({"multiQueue": "yes"}, "binding conf 'b': multiQueue must be true or false, got 'yes'"),
        ({"tapOwner": 107}, "binding conf 'b': tapOwner must be an object"),
        ({"tapOwner": {"uid": -1}}, "binding conf 'b': tapOwner.uid must be a non-negative integer, got -1"),
        ({"tapOwner": {"gid": True}}, "binding conf 'b': tapOwner.gid must be a non-negative integer, got True"),
        ({"logFile": ""}, "binding conf 'b': logFile must be a path, got ''"),
        ({"logLevel": "loud"}, "binding conf 'b': logLevel 'loud' is not one of debug, verbose, error, panic"),
        ({"deviceID": 7}, "binding conf 'b': deviceID must be a PCI address string, got 7"),
        (
            {"runtimeConfig": {"deviceID": ["x"]}},
            "binding conf 'b': runtimeConfig.deviceID must be a PCI address string, got ['x']",
        ),
        ({"sysfsRoot": "sys"}, "binding conf 'b': sysfsRoot must be an absolute path, got 'sys'"),
        ({"sysfsRoot": None}, "binding conf 'b': sysfsRoot must be an absolute path, got None"),
    ],
)
def test_config_errors(conf: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidConfig) as err:
        BindingConfig.parse({"name": "b", **conf})
    assert err.value.msg.startswith(message)
    assert err.value.cni_code == 7


@pytest.mark.parametrize(
    "conf",
    [
        {},
        {"args": {}},
        {"args": {"cni": {}}},
        {"args": {"cni": {"logicNetworkName": ""}}},
        {"args": {"cni": {"logicNetworkName": 3}}},
    ],
)
def test_logic_network_name_missing(conf: dict[str, Any]) -> None:
    with pytest.raises(InvalidConfig, match=r"binding conf 'b': args.cni.logicNetworkName is missing"):
        binding.logic_network_name({"name": "b", **conf})


# --- names ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("links", "ifname", "expected"),
    [
        (("lo", "eth0", BLUE), "net2", BLUE),
        (("lo", "eth0", "net1", BLUE), "net2", BLUE),  # hashed wins when both exist
        (("lo", "eth0", "net1"), "net2", "net1"),  # ordinal pod: the entry before this one
        (("lo", "eth0", "net1", "net2", "net3"), "net4", "net3"),
        (("lo", "eth0", "net1"), "net1", BLUE),  # no net0: fall back to the hashed name
        (("lo", "eth0"), "net2", BLUE),  # nothing there (a VFIO VF): the hashed name, absent
        (("lo", "eth0", "net1"), "eth1", BLUE),
    ],
)
def test_find_pod_iface(links: tuple[str, ...], ifname: str, expected: str) -> None:
    assert find_pod_iface(links, "blue", ifname) == expected


@pytest.mark.parametrize("mac", [MAC, "02:00:00:00:00:01", "ff:ff:ff:ff:ff:ff", "0A:58:0A:4D:00:02"])
def test_swapped_mac_is_local_unicast_stable_and_different(mac: str) -> None:
    new = swapped_mac(mac)
    first = int(new[:2], 16)
    assert first & 0x02 and not first & 0x01
    assert new != mac.lower() and new == swapped_mac(mac.upper())


# --- plan ----------------------------------------------------------------------------

CFG = BindingConfig()


@pytest.mark.parametrize(
    ("obs", "config", "expected"),
    [
        pytest.param(
            observed(),
            CFG,
            DesiredPlumbing(
                "blue",
                BLUE,
                "bridge",
                "auto for a veth pod link",
                RECORD,
                TapSpec("tap16477688c0e", 1400, 107, 107, False),
                "k6t-16477688c0e",
                swapped_mac(MAC),
                BridgedTap(BLUE, RECORD, "veth"),
            ),
            id="veth-bridge-mac-swap",
        ),
        pytest.param(
            observed(veth(kind="macvlan")),
            CFG,
            DesiredPlumbing(
                "blue",
                BLUE,
                "redirect",
                "auto for a macvlan pod link",
                RECORD,
                TapSpec("tap16477688c0e", 1400, 107, 107, False),
                None,
                MAC,
                RedirectedTap(BLUE, RECORD, "macvlan"),
            ),
            id="macvlan-redirect",
        ),
        pytest.param(
            observed(veth(kind="ipvlan")),
            CFG,
            DesiredPlumbing(
                "blue",
                BLUE,
                "redirect",
                "auto for a ipvlan pod link",
                RECORD,
                TapSpec("tap16477688c0e", 1400, 107, 107, False),
                None,
                MAC,
                RedirectedTap(BLUE, RECORD, "ipvlan"),
            ),
            id="ipvlan-redirect",
        ),
        pytest.param(
            observed(veth(kind="bond")),
            CFG,
            DesiredPlumbing(
                "blue",
                BLUE,
                "bridge",
                "auto for a bond pod link",
                RECORD,
                TapSpec("tap16477688c0e", 1400, 107, 107, False),
                "k6t-16477688c0e",
                swapped_mac(MAC),
                BridgedTap(BLUE, RECORD, "bond"),
            ),
            id="bond-bridge",  # a bond bond-cni built in the pod is just a kernel link
        ),
        pytest.param(
            observed(veth(kind="", mtu=9000)),
            BindingConfig(multi_queue=True, tap_uid=0, tap_gid=36),
            DesiredPlumbing(
                "blue",
                BLUE,
                "bridge",
                "auto for a physical pod link",
                replace(RECORD, mtu=9000),
                TapSpec("tap16477688c0e", 9000, 0, 36, True),
                "k6t-16477688c0e",
                swapped_mac(MAC),
                BridgedTap(BLUE, replace(RECORD, mtu=9000), "", multi_queue=True),
            ),
            id="physical-multiqueue-owner-mtu",
        ),
        pytest.param(
            observed(veth(kind="macvlan")),
            BindingConfig(mode="bridge"),
            DesiredPlumbing(
                "blue",
                BLUE,
                "bridge",
                "set in the binding conf",
                RECORD,
                TapSpec("tap16477688c0e", 1400, 107, 107, False),
                "k6t-16477688c0e",
                swapped_mac(MAC),
                BridgedTap(BLUE, RECORD, "macvlan"),
            ),
            id="mode-override",
        ),
        pytest.param(
            observed(veth(kind="macvtap")),
            BindingConfig(mode="bridge"),
            DesiredPlumbing(
                "blue",
                BLUE,
                "none",
                f"pod link {BLUE} is a macvtap: the VM uses it directly",
                after=Macvtap(BLUE, MAC, 1400),
            ),
            id="macvtap-nothing",
        ),
        pytest.param(
            observed(veth(kind="tun")),
            CFG,
            DesiredPlumbing("blue", BLUE, "none", f"pod link {BLUE} is a tun: the VM uses it directly"),
            id="tap-nothing",
        ),
        pytest.param(
            None,
            CFG,
            DesiredPlumbing("blue", BLUE, "none", f"no pod link {BLUE} (a VFIO VF, or no netdev)"),
            id="absent-nothing",
        ),
        pytest.param(
            observed(
                veth(mac=swapped_mac(MAC), master="k6t-16477688c0e", alias=bindrecord.encode(RECORD)),
                addresses=(),
                routes=(),
            ),
            CFG,
            DesiredPlumbing(
                "blue",
                BLUE,
                "bridge",
                "auto for a veth pod link",
                RECORD,
                TapSpec("tap16477688c0e", 1400, 107, 107, False),
                "k6t-16477688c0e",
                swapped_mac(MAC),
                BridgedTap(BLUE, RECORD, "veth"),
            ),
            id="already-plumbed-same-plan",
        ),
        pytest.param(
            observed(addresses=(), routes=()),
            CFG,
            DesiredPlumbing(
                "blue",
                BLUE,
                "bridge",
                "auto for a veth pod link",
                BindingRecord(MAC, 1400),
                TapSpec("tap16477688c0e", 1400, 107, 107, False),
                "k6t-16477688c0e",
                swapped_mac(MAC),
                BridgedTap(BLUE, BindingRecord(MAC, 1400), "veth"),
            ),
            id="no-ipam-pure-l2",
        ),
    ],
)
def test_plan(obs: ObservedPodLink | None, config: BindingConfig, expected: DesiredPlumbing) -> None:
    got = plan(obs, "blue", config, pod_iface=BLUE)
    assert replace(got, server_tap=None) == expected
    # the guest-address server gets a tap on the bridge when the record has addresses
    served = expected.bridge is not None and expected.record is not None and bool(expected.record.ip.addresses)
    assert got.server_tap == ("kvd16477688c0e" if served else None)
    assert expected.describe().startswith(f"network blue ({BLUE}): ")


def test_plan_ipv6_gateway_and_device_route() -> None:
    obs = observed(
        addresses=(AddressState("fd00::2/64"), AddressState("fe80::1/64", 253)),
        routes=(
            RouteState("::/0", "fd00::1", 3),
            RouteState("fd00:9::/64", None, 3),
            RouteState("fd00::/64", None, 2),
            RouteState("ff00::/8", None, 3),
        ),
    )
    record = plan(obs, "blue", CFG, pod_iface=BLUE).record
    assert record == BindingRecord(MAC, 1400, GuestIpConfig(("fd00::2/64",), ("fd00::1",), (("fd00:9::/64", ""),)))


@pytest.mark.parametrize(
    ("obs", "error", "message"),
    [
        (
            observed(veth(kind="bridge")),
            InvalidConfig,
            f"network blue: pod interface {BLUE} is a bridge; kvnet-binding cannot bind it",
        ),
        (
            observed(veth(alias="uplink to rack 3")),
            InvalidConfig,
            f"network blue: pod interface {BLUE} already carries an ifalias not written by kvnet",
        ),
        (
            observed(veth(alias='{"kvnet":9}')),
            DecodeFailure,
            f"network blue: pod interface {BLUE}: unsupported kvnet binding record version 9",
        ),
        (
            observed(routes=tuple(RouteState(f"fd00:{i:x}::/64", "fd00::1", 3) for i in range(9))),
            InvalidConfig,
            f"network blue: pod interface {BLUE}: binding record for MAC {MAC} is",
        ),
    ],
)
def test_plan_errors(obs: ObservedPodLink, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as err:
        plan(obs, "blue", CFG, pod_iface=BLUE)
    assert str(err.value).startswith(message)


def test_plan_refuses_an_ordinal_name_whose_tap_name_is_too_long() -> None:
    long = "net123456789012"
    with pytest.raises(InvalidConfig, match="cannot name the tap"):
        plan(observed(veth(name=long)), "blue", CFG, pod_iface=long + "x")


# --- add / delete / check on a fake netns ----------------------------------------------


@dataclass
class FakeNetns:
    """An in-memory netns with the PodNetlink operations; ``fail_on`` makes one op fail."""

    links: dict[str, LinkState] = field(default_factory=dict)
    addrs: dict[str, list[AddressState]] = field(default_factory=dict)
    rts: dict[str, list[RouteState]] = field(default_factory=dict)
    tc: dict[str, str] = field(default_factory=dict)
    learn: dict[str, bool] = field(default_factory=dict)  # bridge ports; the kernel's default is on
    fail_on: str = ""
    calls: list[str] = field(default_factory=list)

    def _op(self, name: str) -> None:
        self.calls.append(name)
        if name == self.fail_on:
            raise NetlinkFailure(f"{name} failed (injected)")

    def _set(self, name: str, **kw: Any) -> None:
        if name not in self.links:
            raise NetlinkFailure(f"link {name} not found")
        self.links[name] = replace(self.links[name], **kw)

    def link(self, name: str) -> LinkState | None:
        return self.links.get(name)

    def link_names(self) -> tuple[str, ...]:
        return tuple(self.links)

    def addresses(self, name: str) -> tuple[AddressState, ...]:
        return tuple(self.addrs.get(name, []))

    def routes(self, name: str) -> tuple[RouteState, ...]:
        return tuple(self.rts.get(name, []))

    def tc_redirect_target(self, name: str) -> str | None:
        return self.tc.get(name)

    def create_bridge(self, name: str, *, mtu: int) -> None:
        self._op("create_bridge")
        self.links[name] = LinkState(name, 10, "02:00:00:00:00:10", mtu, kind="bridge")

    def create_tap(self, name: str, *, owner_uid: int, owner_gid: int, multi_queue: bool, mtu: int) -> None:
        self._op("create_tap")
        self.links[name] = LinkState(
            name, 11, "02:00:00:00:00:11", mtu, "tun", multi_queue=multi_queue, owner=owner_uid, group=owner_gid
        )

    def set_master(self, name: str, master: str | None) -> None:
        self._op("set_master")
        self._set(name, master=master)
        self.learn.pop(name, None)  # a new port starts with learning on

    def learning(self, name: str) -> bool | None:
        return self.learn.get(name, True) if self.links[name].master else None

    def set_learning(self, name: str, learning: bool) -> None:
        self._op("set_learning")
        self.learn[name] = learning

    def set_mac(self, name: str, mac: str) -> None:
        self._op("set_mac")
        self._set(name, mac=mac)

    def set_up(self, name: str, up: bool = True) -> None:
        self._set(name, up=up)

    def set_alias(self, name: str, alias: str) -> None:
        self._op("set_alias")
        self._set(name, alias=alias)

    def add_address(self, name: str, cidr: str) -> None:
        self.addrs.setdefault(name, []).append(AddressState(cidr))
        self.rts.setdefault(name, []).append(RouteState(str(ipaddress.ip_interface(cidr).network), None, 2))

    def remove_address(self, name: str, cidr: str) -> None:
        self._op("remove_address")
        self.addrs[name] = [a for a in self.addrs[name] if a.cidr != cidr]
        self.rts[name] = [r for r in self.rts.get(name, []) if r.proto != 2 or ":" in r.dst]

    def add_route(self, name: str, route: RouteState) -> None:
        self.rts.setdefault(name, []).append(RouteState(route.dst, route.gateway, 3))

    def remove_route(self, name: str, route: Any) -> None:
        self._op("remove_route")
        self.rts[name] = [r for r in self.rts[name] if (r.dst, r.gateway) != (route.dst, route.gateway)]

    def delete_link(self, name: str) -> None:
        self._op("delete_link")
        self.links.pop(name, None)
        self.tc.pop(name, None)  # the kernel drops a deleted link's qdiscs

    def tc_redirect(self, name: str, to: str) -> None:
        self._op("tc_redirect")
        self.tc[name] = to

    def clear_tc(self, name: str) -> None:
        self.tc.pop(name, None)

    def state(self) -> tuple[Any, ...]:
        return (
            dict(self.links),
            {k: sorted(a.cidr for a in v) for k, v in self.addrs.items()},
            {k: sorted((r.dst, r.gateway or "") for r in v) for k, v in self.rts.items()},
            dict(self.tc),
        )


def fake_pod(kind: str = "veth") -> FakeNetns:
    ns = FakeNetns()
    ns.links = {"lo": LinkState("lo", 1, "00:00:00:00:00:00", 65536, up=True), BLUE: veth(kind=kind)}
    ns.addrs = {BLUE: [AddressState("10.77.0.2/24")]}
    ns.rts = {
        BLUE: [
            RouteState("10.77.0.0/24", None, 2),
            RouteState("0.0.0.0/0", "10.77.0.1", 3),
            RouteState("10.88.0.0/16", "10.77.0.1", 3),
        ]
    }
    return ns


@dataclass(frozen=True)
class Req:
    netns: str = "/var/run/netns/pod"
    container_id: str = "c1"
    ifname: str = "net2"
    config: Any = field(
        default_factory=lambda: {
            "cniVersion": "0.4.0",
            "name": "kvnet-binding",
            "args": {"cni": {"logicNetworkName": "blue"}},
        }
    )


def opener(ns: FakeNetns | None) -> Any:
    @contextmanager
    def open_(path: str) -> Iterator[FakeNetns]:
        if ns is None:
            raise NetnsMissing(f"network namespace {path} does not exist")
        yield ns

    return open_


@pytest.mark.parametrize("kind", ["veth", "macvlan"])
def test_add_is_idempotent_and_delete_restores(kind: str) -> None:
    ns = fake_pod(kind)
    before = ns.state()
    assert binding.add(Req(), nl=opener(ns)) == {"cniVersion": "0.4.0"}
    plumbed = ns.state()
    assert ns.links[BLUE].alias == bindrecord.encode(RECORD)
    assert ns.addrs[BLUE] == [] and ns.rts[BLUE] == []
    assert binding.add(Req(), nl=opener(ns)) == {"cniVersion": "0.4.0"}
    assert ns.state() == plumbed
    binding.check(Req(), nl=opener(ns))
    binding.delete(Req(), nl=opener(ns))
    assert ns.state() == before
    binding.delete(Req(), nl=opener(ns))
    assert ns.state() == before


@pytest.mark.parametrize(
    ("kind", "config"), [("veth", CFG), ("macvlan", CFG), ("veth", BindingConfig(multi_queue=True))]
)
def test_add_leaves_the_pod_its_plan_says(kind: str, config: BindingConfig) -> None:
    """The netns after ADD is ``DesiredPlumbing.after``'s links (``kvnet.core.plumbing``), as the
    sidecar reads them: names, kinds, masters, MTUs, the pod link's MAC and record, multi-queue.
    Only the MACs the kernel picks (the tap's, and so the bridge's) are the model's stand-ins."""
    ns = fake_pod(kind)
    conf = {**Req().config, "multiQueue": config.multi_queue}
    desired, _ = binding._prepare(Req(config=conf), ns)
    binding.add(Req(config=conf), nl=opener(ns))
    assert desired.after is not None
    expected = {link.name: link for link in desired.after.links()}
    if desired.server_tap:  # the guest-address server's tap: the server's, the VM never sees it
        server = ns.links[desired.server_tap]
        assert (server.kind, server.master, server.up) == ("tun", desired.bridge, True)
        assert not server.multi_queue
    assert set(ns.links) - {"lo", desired.server_tap} == set(expected)
    for name, want in expected.items():
        got = ns.links[name]
        seen = PodLink(
            name,
            got.mac if name == BLUE else want.mac,
            got.mtu,
            kind=got.kind,
            master=got.master,
            up=got.up,
            multi_queue=got.multi_queue,
            record=bindrecord.decode(got.alias),
        )
        assert seen == want


@pytest.mark.parametrize(
    "step",
    [
        "set_alias",
        "create_bridge",
        "create_tap",
        "set_master",
        "set_mac",
        "remove_address",
        "remove_route",
        "set_learning",
    ],
)
def test_failed_add_undoes_every_step(step: str) -> None:
    ns = fake_pod()
    before = ns.state()
    ns.fail_on = step
    with pytest.raises(NetlinkFailure, match="injected"):
        binding.add(Req(), nl=opener(ns))
    assert ns.state() == before


def test_failed_redirect_add_undoes_tc() -> None:
    ns = fake_pod("macvlan")
    before = ns.state()
    calls = 0
    real = ns.tc_redirect

    def second_fails(name: str, to: str) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise NetlinkFailure("tc failed (injected)")
        real(name, to)

    ns.tc_redirect = second_fails  # type: ignore[method-assign]
    with pytest.raises(NetlinkFailure):
        binding.add(Req(), nl=opener(ns))
    assert ns.state() == before


def test_delete_when_netns_is_gone_or_empty() -> None:
    binding.delete(Req(), nl=opener(None))
    binding.delete(replace(Req(), netns=""), nl=opener(None))
    empty = FakeNetns(links={"lo": LinkState("lo", 1, "00:00:00:00:00:00", 65536)})
    binding.delete(Req(), nl=opener(empty))
    assert empty.calls == []


def test_delete_without_logic_network_name_succeeds_and_touches_nothing() -> None:
    ns = fake_pod()
    binding.add(Req(), nl=opener(ns))
    plumbed, calls = ns.state(), len(ns.calls)
    binding.delete(replace(Req(), config={"name": "kvnet-binding"}), nl=opener(ns))
    assert ns.state() == plumbed and len(ns.calls) == calls


def test_delete_with_a_corrupt_record_still_unplumbs() -> None:
    ns = fake_pod()
    binding.add(Req(), nl=opener(ns))
    ns._set(BLUE, alias='{"kvnet":1,"mac":"broken"}')
    binding.delete(Req(), nl=opener(ns))
    assert list(ns.links) == ["lo", BLUE]
    assert ns.links[BLUE].master is None and ns.links[BLUE].alias == ""
    assert ns.links[BLUE].mac == swapped_mac(MAC)  # nothing to restore it from


def test_delete_leaves_a_foreign_alias_and_link_alone() -> None:
    ns = fake_pod()
    ns._set(BLUE, alias="uplink to rack 3", master="somebody-elses-bridge")
    before = ns.state()
    binding.delete(Req(), nl=opener(ns))
    assert ns.state() == before


def test_delete_removes_orphan_tap_and_bridge_when_the_pod_link_is_gone() -> None:
    ns = fake_pod()
    binding.add(Req(), nl=opener(ns))
    del ns.links[BLUE]
    binding.delete(Req(), nl=opener(ns))
    assert list(ns.links) == ["lo"]


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (
            lambda ns: ns._set(BLUE, mac=MAC),
            f"network blue: pod interface {BLUE} has MAC {MAC}, expected {swapped_mac(MAC)}",
        ),
        (
            lambda ns: ns.add_address(BLUE, "10.77.0.2/24"),
            f"network blue: pod interface {BLUE} still has addresses ['10.77.0.2/24']",
        ),
        (lambda ns: ns.links.pop("tap16477688c0e"), "network blue: tap tap16477688c0e is missing"),
        (
            lambda ns: ns._set("tap16477688c0e", mtu=1500),
            "network blue: tap tap16477688c0e has MTU 1500, expected 1400",
        ),
        (lambda ns: ns.links.pop("k6t-16477688c0e"), "network blue: bridge k6t-16477688c0e is missing"),
        (lambda ns: ns._set(BLUE, master=None), f"network blue: {BLUE} is not a port of k6t-16477688c0e (master None)"),
        (lambda ns: ns._set(BLUE, alias=""), f"network blue: pod interface {BLUE} carries no kvnet binding record"),
        (
            lambda ns: ns.set_learning(BLUE, True),
            f"network blue: bridge port {BLUE} learns MAC addresses; expected learning off",
        ),
    ],
)
def test_check_names_what_drifted(breakage: Any, message: str) -> None:
    ns = fake_pod()
    binding.add(Req(), nl=opener(ns))
    breakage(ns)
    with pytest.raises(binding.PlumbingDrift) as err:
        binding.check(Req(), nl=opener(ns))
    assert err.value.msg == message
    assert err.value.cni_code == 104


def test_check_redirect_targets() -> None:
    ns = fake_pod("macvlan")
    binding.add(Req(), nl=opener(ns))
    ns.tc.pop("tap16477688c0e")
    with pytest.raises(
        binding.PlumbingDrift, match=f"ingress of tap16477688c0e is redirected to None, expected {BLUE}"
    ):
        binding.check(Req(), nl=opener(ns))


def test_shipped_binding_nad_parses() -> None:
    """deploy/binding-nad.yaml holds a conf the binding accepts, with the documented keys."""
    nad = yaml.safe_load((Path(__file__).resolve().parents[2] / "deploy" / "binding-nad.yaml").read_text())
    assert (nad["apiVersion"], nad["kind"]) == ("k8s.cni.cncf.io/v1", "NetworkAttachmentDefinition")
    conf = json.loads(nad["spec"]["config"])
    assert conf["type"] == "kvnet-binding" and conf["name"] == nad["metadata"]["name"]
    assert BindingConfig.parse(conf) == BindingConfig()


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
_keys = st.sampled_from(
    [
        "mode",
        "multiQueue",
        "tapOwner",
        "logFile",
        "logLevel",
        "name",
        "args",
        "deviceID",
        "runtimeConfig",
        "sysfsRoot",
        "other",
    ]
)


@given(st.dictionaries(_keys, _json, max_size=6))
def test_config_parse_gives_a_config_or_invalid_config(conf: dict[str, Any]) -> None:
    try:
        parsed = BindingConfig.parse(conf)
    except InvalidConfig as err:
        assert err.msg.startswith("binding conf ")
        return
    assert parsed.mode in ("auto", "bridge", "redirect") and isinstance(parsed.multi_queue, bool)
    assert 0 <= parsed.tap_uid < 2**32 and 0 <= parsed.tap_gid < 2**32
    assert parsed.device_id is None or (isinstance(parsed.device_id, str) and parsed.device_id)
    assert parsed.sysfs_root.startswith("/")


@given(st.dictionaries(st.sampled_from(["args", "name"]), _json, max_size=2))
def test_logic_network_name_gives_a_name_or_invalid_config(conf: dict[str, Any]) -> None:
    try:
        name = binding.logic_network_name(conf)
    except InvalidConfig:
        return
    assert isinstance(name, str) and name


def test_a_failing_undo_step_does_not_hide_the_original_error() -> None:
    """The tap cannot be created and deleting the new bridge fails too: ADD reports the tap."""
    ns = fake_pod()
    ns.fail_on = "create_tap"
    real_delete = ns.delete_link

    def delete_fails(name: str) -> None:
        raise NetlinkFailure(f"delete {name} failed (injected)")

    ns.delete_link = delete_fails  # type: ignore[method-assign]
    with pytest.raises(NetlinkFailure, match=r"^create_tap failed \(injected\)$"):
        binding.add(Req(), nl=opener(ns))
    assert ns.links[BLUE].alias == ""  # the other undo steps still ran
    real_delete("k6t-16477688c0e")


def test_redirect_kinds_are_the_models() -> None:
    """One rule for which pod links get redirect mode, shared with the translation.

    The binding decides the mode through ``kvnet.core.plumbing.tap_plumbing``, which
    ``kvnet render`` uses too.
    """
    from kvnet.core import plumbing
    from kvnet.domain import translate

    assert frozenset({"macvlan", "ipvlan"}) == REDIRECT_KINDS
    assert plumbing.REDIRECT_KINDS is REDIRECT_KINDS and translate.REDIRECT_KINDS is REDIRECT_KINDS
    assert binding.tap_plumbing is plumbing.tap_plumbing
    for kind in sorted(REDIRECT_KINDS):
        assert plan(observed(veth(kind=kind)), "blue", CFG, pod_iface=BLUE).mode == "redirect"
    for kind in ("veth", "vxlan", "vlan", "bond", ""):
        assert plan(observed(veth(kind=kind)), "blue", CFG, pod_iface=BLUE).mode == "bridge"


# --- no pod link, an SR-IOV deviceID: discovery on fake sysfs trees ------------------------

PF = "0000:81:00.0"
VFIO_VF, KERNEL_VF, MOVED_VF, UNBOUND_VF = "0000:81:00.2", "0000:81:00.4", "0000:81:00.5", "0000:81:00.6"


@pytest.fixture
def sysfs_root(tmp_path: Path) -> str:
    """A PF with a VFIO VF, a kernel VF whose netdev is still on the node, one whose netdev
    left the node's view (moved to some netns), and an unbound VF."""
    root = str(tmp_path / "root")
    make_fake_sysfs(
        root,
        {
            PF: FakePf(
                vfs=[
                    FakeVf(VFIO_VF, iommu_group=60),
                    FakeVf(KERNEL_VF, driver="iavf", iommu_group=62, netdev="ens1f0v2"),
                    FakeVf(MOVED_VF, driver="iavf", iommu_group=63),
                    FakeVf(UNBOUND_VF, driver=None),
                ],
                netdev="ens1f0",
            )
        },
    )
    return root


def sriov_req(device_id: str | None, root: str, *, runtime: bool = False) -> Req:
    conf: dict[str, Any] = {
        "cniVersion": "1.0.0",
        "name": "kvnet-binding",
        "args": {"cni": {"logicNetworkName": "blue"}},
        "sysfsRoot": root,
    }
    if device_id is not None:
        if runtime:
            conf["runtimeConfig"] = {"deviceID": device_id}
        else:
            conf.update(deviceID=device_id, pciBusID=device_id)
    return Req(config=conf)


def no_pod_link() -> FakeNetns:
    return FakeNetns(links={"lo": LinkState("lo", 1, "00:00:00:00:00:00", 65536, up=True)})


def vf_info(driver: str | None, netdevs: tuple[str, ...] = ()) -> VfInfo:
    return VfInfo(PciAddress(0, 0x81, 0, 4), PciAddress(0, 0x81, 0, 0), 1, driver, 62 if driver else None, netdevs)


def test_plan_vfio_vf_nothing_to_plumb() -> None:
    vf = replace(vf_info("vfio-pci"), address=PciAddress(0, 0x81, 0, 2))
    assert plan(None, "blue", CFG, pod_iface=BLUE, vf=vf) == DesiredPlumbing(
        "blue", BLUE, "none", "VFIO VF 0000:81:00.2: nothing to plumb", after=VfioVf(BLUE, PciAddress(0, 0x81, 0, 2))
    )


@pytest.mark.parametrize(
    ("vf", "message"),
    [
        (
            vf_info("iavf", ("ens1f0v2",)),
            f"network blue: SR-IOV VF 0000:81:00.4 (deviceID) is bound to iavf, not vfio-pci, but its netdev (ens1f0v2, still on"
            f" the node) is not in the pod as {BLUE}: the attachment's plugin did not move it there (or bind the VF to vfio-pci"
            " for a PCI hostdev)",
        ),
        (
            vf_info("mlx5_core"),
            f"network blue: SR-IOV VF 0000:81:00.4 (deviceID) is bound to mlx5_core, not vfio-pci, but its netdev (not on the"
            f" node either) is not in the pod as {BLUE}",
        ),
        (
            vf_info(None),
            f"network blue: SR-IOV VF 0000:81:00.4 (deviceID) is bound to no driver: it has no netdev for the pod link {BLUE}"
            " and no VM can take it (bind it to vfio-pci for a PCI hostdev)",
        ),
    ],
)
def test_plan_kernel_vf_without_its_pod_link_is_an_error(vf: VfInfo, message: str) -> None:
    with pytest.raises(InvalidConfig) as err:
        plan(None, "blue", CFG, pod_iface=BLUE, vf=vf)
    assert err.value.msg.startswith(message)
    assert err.value.cni_code == 7


@pytest.mark.parametrize("runtime", [False, True], ids=["top-level", "runtimeConfig"])
def test_add_vfio_vf_succeeds_and_says_so(sysfs_root: str, runtime: bool, caplog: pytest.LogCaptureFixture) -> None:
    ns = no_pod_link()
    before = ns.state()
    req = sriov_req(VFIO_VF, sysfs_root, runtime=runtime)
    with caplog.at_level("INFO", logger="kvnet.binding"):
        assert binding.add(req, nl=opener(ns)) == {"cniVersion": "1.0.0"}
    assert [r.getMessage() for r in caplog.records] == [
        f"ADD container c1: network blue ({BLUE}): nothing to do: VFIO VF {VFIO_VF}: nothing to plumb"
    ]
    assert ns.state() == before and ns.calls == []
    binding.check(req, nl=opener(ns))
    binding.delete(req, nl=opener(ns))
    assert ns.state() == before and ns.calls == []


@pytest.mark.parametrize(
    ("device_id", "message"),
    [
        (
            KERNEL_VF,
            f"network blue: SR-IOV VF {KERNEL_VF} (deviceID) is bound to iavf, not vfio-pci, but its netdev"
            f" (ens1f0v2, still on the node) is not in the pod as {BLUE}",
        ),
        (
            MOVED_VF,
            f"network blue: SR-IOV VF {MOVED_VF} (deviceID) is bound to iavf, not vfio-pci, but its netdev"
            f" (not on the node either) is not in the pod as {BLUE}",
        ),
        (UNBOUND_VF, f"network blue: SR-IOV VF {UNBOUND_VF} (deviceID) is bound to no driver"),
    ],
)
def test_add_kernel_vf_whose_netdev_is_not_in_the_pod_fails(sysfs_root: str, device_id: str, message: str) -> None:
    ns = no_pod_link()
    before = ns.state()
    for call in (binding.add, binding.check):
        with pytest.raises(InvalidConfig) as err:
            call(sriov_req(device_id, sysfs_root), nl=opener(ns))
        assert err.value.msg.startswith(message)
    assert ns.state() == before and ns.calls == []


@pytest.mark.parametrize(
    ("device_id", "message"),
    [
        ("0000:81:01.7", "network blue: deviceID '0000:81:01.7': PCI device 0000:81:01.7: no such device"),
        (PF, f"network blue: deviceID '{PF}': PCI device {PF} is not an SR-IOV VF (it has no physfn link)"),
        ("81:00.2/../..", "network blue: deviceID '81:00.2/../..': SR-IOV VF: "),
    ],
)
def test_add_with_a_device_id_that_is_no_vf(sysfs_root: str, device_id: str, message: str) -> None:
    with pytest.raises(DeviceError) as err:
        binding.add(sriov_req(device_id, sysfs_root), nl=opener(no_pod_link()))
    assert err.value.msg.startswith(message)
    assert err.value.cni_code == 107


def test_without_device_id_an_absent_pod_link_is_still_nothing(sysfs_root: str) -> None:
    ns = no_pod_link()
    assert binding.add(sriov_req(None, sysfs_root), nl=opener(ns)) == {"cniVersion": "1.0.0"}
    assert ns.calls == []


def test_device_id_is_not_read_when_the_pod_link_is_there(tmp_path: Path) -> None:
    """A VF's netdev moved into the pod is bound like any pod link; sysfs is not even read."""
    ns = fake_pod()
    req = sriov_req(KERNEL_VF, str(tmp_path / "no-such-root"))
    assert binding.add(req, nl=opener(ns)) == {"cniVersion": "1.0.0"}
    assert ns.links[BLUE].master == "k6t-16477688c0e" and ns.links[BLUE].alias == bindrecord.encode(RECORD)
    binding.check(req, nl=opener(ns))
