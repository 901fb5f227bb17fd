"""The VM demo's report: a row per network (what the pod got and what the guest saw), the
bond's failover, the run's result with its verdicts, the NIC table and the demo's text.

Pure: the rows are built from what the run collected (the domain's NICs, network-status,
the guest's console report); printing is the caller's.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kvnet.lab.teardown import report_list
from kvnet.lab.vm.scenario import DomainNic, Scenario

if TYPE_CHECKING:
    from kvnet.lab.console import GuestReport

# what the VM demo's teardown checks (the line a clean run ends with names them)
CHECKED = "netns, links, leases, cache files, domains, processes"
DHCP_CLIENTS = ("dhcp4", "dhcp6")  # the test guest's DHCP clients (udhcpc, dhcpcd), as its console names them


@dataclass(frozen=True)
class NicRow:
    """One line of the final table: what the pod got and what the guest saw."""

    network: str
    kind: str
    domain_mac: str
    guest_name: str | None
    guest_mac: str | None
    domain_mtu: int | None
    guest_mtu: int | None
    ipam_addresses: tuple[str, ...]  # from network-status (bare IPs)
    guest_addresses: tuple[str, ...]  # CIDRs on the guest link (the bond's for members)
    pings: tuple[tuple[str, bool | None], ...]  # (peer IP, result) for this network's peer
    ipam_subnets: tuple[str, ...] = ()  # what the scenario's NAD allocates from, in order (empty: no IPAM)
    addressing: str = "cloud-init"  # the scenario's: "cloud-init" or "dhcp"
    answered: tuple[str, ...] = ()  # where the guest's addresses came from: "cloud-init", or dhcp4/dhcp6/ra6
    unanswered: tuple[str, ...] = ()  # the guest's DHCP clients that got no answer on this NIC (dhcp4, dhcp6)
    peer_expected: bool = True  # False: a pure L2 NIC without a peer to ping

    def expected_guest_addresses(self) -> tuple[str, ...]:
        """The CIDRs the guest link must carry for this row's IPAM addresses (empty without
        IPAM); an IPv6 address from DHCPv6 is a /128 (the on-link prefix comes from the RA)."""
        dhcp = self.addressing == "dhcp"
        return tuple(
            f"{ip}/{128 if dhcp and ':' in ip else ipaddress.ip_network(sn).prefixlen}"
            for ip, sn in zip(self.ipam_addresses, self.ipam_subnets, strict=False)
        )

    def expected_answers(self) -> tuple[str, ...]:
        """What must have answered the guest: cloud-init's network data for a NIC with IPAM;
        for a guest without cloud-init, DHCPv4 per IPv4 range, DHCPv6 and an RA per IPv6 range."""
        if self.addressing != "dhcp":
            return ("cloud-init",) if self.ipam_subnets else ()
        v4 = any("." in sn for sn in self.ipam_subnets)
        v6 = any(":" in sn for sn in self.ipam_subnets)
        return (*(("dhcp4",) if v4 else ()), *(("dhcp6", "ra6") if v6 else ()))

    @property
    def answers_ok(self) -> bool:
        """Every client that should be answered was, and no other (a NIC without IPAM stays pure L2)."""
        if self.addressing != "dhcp":
            return True
        expected = self.expected_answers()
        silent = set(DHCP_CLIENTS) - set(expected)
        return set(self.answered) == set(expected) and set(self.unanswered) == silent

    @property
    def ipam_ok(self) -> bool:
        """network-status has one address from each subnet the NAD allocates from (none when
        it has no IPAM), and those are the guest link's addresses."""
        if len(self.ipam_addresses) != len(self.ipam_subnets):
            return False
        try:
            inside = all(
                ipaddress.ip_address(ip) in ipaddress.ip_network(sn)
                for ip, sn in zip(self.ipam_addresses, self.ipam_subnets, strict=False)
            )
        except ValueError:
            return False
        return inside and (
            not self.ipam_subnets or sorted(self.guest_addresses) == sorted(self.expected_guest_addresses())
        )

    @property
    def ok(self) -> bool:
        return (
            self.guest_mac == self.domain_mac
            and (self.domain_mtu is None or self.guest_mtu == self.domain_mtu)
            and self.ipam_ok
            and self.answers_ok
            and (bool(self.pings) or not self.peer_expected)
            and all(ok is True for _, ok in self.pings)
        )


@dataclass(frozen=True)
class Failover:
    """The active member before, after its link went down, and after failing back (its link
    up again, the other one down), with the pings through the bond after each switch."""

    bond: str
    before: str | None
    after: str | None
    ping_after: bool | None
    back: str | None = None
    ping_back: bool | None = None

    @property
    def ok(self) -> bool:
        return (
            self.before is not None
            and self.after not in (None, self.before)
            and self.ping_after is True
            and self.back == self.before
            and self.ping_back is True
        )


@dataclass(frozen=True)
class KubeVirtPart:
    """Who played KubeVirt's part in a run, and what it gave kvnet: ``by`` is
    ``"kubevirt-peer"`` (KubeVirt's own code) or ``"lab"`` (the lab's stand-ins)."""

    by: str
    pod_annotations: Mapping[str, str] = field(default_factory=dict)  # the virt-launcher pod's
    network_info: str = ""  # the downward-API file's content
    hook_calls: tuple[tuple[str, str, str], ...] = ()  # OnDefineDomain (step, input, output), in order
    shutdown: str = ""  # what virt-launcher's Shutdown call came to ("ok", or the error)


@dataclass(frozen=True)
class DemoResult:
    """What one run did: a row per network, the bond's failover, the timings, what the
    teardown left behind, the guest's console and the logs; ``error`` when a step failed."""

    scenario: Scenario
    rows: list[NicRow] = field(default_factory=list)
    failover: Failover | None = None
    timings: dict[str, float] = field(default_factory=dict)
    leftovers: list[str] = field(default_factory=list)
    console_text: str = ""
    guest_errors: list[str] = field(default_factory=list)
    error: str | None = None
    netns: list[str] = field(default_factory=list)  # every netns the run made (all deleted at the end)
    cni_log: str = ""  # the meta-plugin's logFile (debug level)
    binding_log: str = ""  # kvnet-binding's own logFile (only when it runs as a separate program)
    traceback: str = ""  # where an unexpected exception came from
    kubevirt: KubeVirtPart | None = None  # who played KubeVirt's part (None: the run stopped before)

    @property
    def ok(self) -> bool:
        return (
            self.error is None
            and [r.network for r in self.rows] == [n.name for n in self.scenario.nets]
            and all(r.ok for r in self.rows)
            and (self.failover is None or self.failover.ok)
            and not self.leftovers
            and not self.guest_errors
        )

    def console_tail(self, lines: int = 80) -> str:
        kept = self.console_text.splitlines()[-lines:]
        return f"--- guest console (last {len(kept)} lines) ---\n" + "\n".join(kept)

    def explain(self) -> str:
        """Everything a failing assertion should show."""
        parts = [format_table(self)]
        if self.error:
            parts.append(f"error: {self.error}")
        if self.traceback:
            parts.append(self.traceback.rstrip())
        if self.leftovers:
            parts.append(report_list(self.leftovers, CHECKED))
        if self.guest_errors:
            parts.append("guest errors:\n  " + "\n  ".join(self.guest_errors))
        parts.append(self.console_tail())
        return "\n".join(parts)


def format_table(result: DemoResult) -> str:
    head = (
        "network",
        "kind",
        "guest NIC",
        "MAC (domain = guest)",
        "MTU",
        "IPAM addresses",
        "guest addresses",
        "from",
        "pings",
    )
    rows = [head]
    for r in result.rows:
        mac = r.domain_mac if r.guest_mac == r.domain_mac else f"{r.domain_mac} != {r.guest_mac or '-'}"
        pings = ", ".join(f"{ip} {'-' if ok is None else ('ok' if ok else 'FAIL')}" for ip, ok in r.pings) or "-"
        mtu = (
            str(r.guest_mtu or "-") if r.guest_mtu == r.domain_mtu else f"{r.domain_mtu or '-'} != {r.guest_mtu or '-'}"
        )
        ipam = " ".join(r.ipam_addresses) or "-"
        source = "+".join(r.answered) or ("nothing answered" if r.unanswered else "-")
        if not r.answers_ok:
            source += f" (expected {'+'.join(r.expected_answers()) or 'none'})"
        guest_addrs = " ".join(r.guest_addresses) or "-"
        rows.append((r.network, r.kind, r.guest_name or "MISSING", mac, mtu, ipam, guest_addrs, source, pings))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if result.failover:
        f = result.failover
        verdict = "ok" if f.ok else "FAILED"
        ping = "-" if f.ping_after is None else ("ok" if f.ping_after else "FAIL")
        back = "-" if f.ping_back is None else ("ok" if f.ping_back else "FAIL")
        lines.append(
            f"failover {f.bond}: active {f.before or '-'} -> {f.after or '-'} (ping {ping}) -> back to {f.back or '-'} (ping {back}): {verdict}"
        )
    return "\n".join(lines)


def nic_rows(
    scenario: Scenario,
    nics: Mapping[str, DomainNic],
    status: Mapping[str, Mapping[str, Any]],
    report: GuestReport,
) -> list[NicRow]:
    """One row per network: the domain's NIC (``nics``), network-status (``status``, by pod
    interface) and what the guest reported on its console."""
    rows: list[NicRow] = []
    for n in scenario.nets:
        dn = nics.get(n.name)
        domain_mac = dn.mac if dn else "-"
        seen = any(nic.mac == domain_mac for nic in report.nics)
        # set-name gives the link the VMI interface name; bond members take the bond's MAC
        link = report.links.get(n.name) or (report.link_by_mac(domain_mac) if dn else None)
        st = status.get(n.pod_iface) or {}
        ips = st.get("ips") or []
        bond = scenario.bond_of(n.name)
        peer = scenario.expected_peer(n.name)
        if bond is not None:
            bond_link = report.links.get(bond.name)
            guest_addrs = bond_link.addrs if bond_link else ()
        else:
            guest_addrs = link.addrs if link else ()
        subnets = tuple(sn for sn in (n.subnet, n.subnet6) if sn) if n.subnet else ()
        name = link.name if link and seen else None
        if scenario.dhcp:
            answered = _answered(report, name) if name else ()
            unanswered = tuple(
                e.get("what") for e in report.errors if e.get("what") in DHCP_CLIENTS and name and e.get("link") == name
            )
        else:
            answered, unanswered = (("cloud-init",) if subnets and guest_addrs else ()), ()
        rows.append(
            NicRow(
                network=n.name,
                kind=n.kind + (f" ({bond.name})" if bond else ""),
                domain_mac=domain_mac,
                guest_name=name,
                guest_mac=domain_mac if seen else None,
                domain_mtu=dn.mtu if dn else None,
                guest_mtu=link.mtu if link and seen else None,
                ipam_addresses=tuple(ips),
                guest_addresses=guest_addrs,
                pings=tuple((ip, report.last_ping(ip)) for ip in (peer.ips if peer else ())),
                ipam_subnets=subnets,
                addressing=scenario.addressing,
                answered=answered,
                unanswered=unanswered,
                peer_expected=peer is not None,
            )
        )
    return rows


def _answered(report: GuestReport, link: str) -> tuple[str, ...]:
    """The guest's DHCP clients that got a lease on ``link``, and ``ra6`` when a router
    advertisement gave it a route (the link-local and multicast routes are the kernel's)."""
    out = [k for k in DHCP_CLIENTS if report.has(k, link=link)]
    for e in report.events:
        if e.kind == "ra6" and e.get("link") == link:
            if any(r not in ("fe80::/64", "multicast") for r in e.get("routes").split("+") if r):
                out.append("ra6")
            break
    return tuple(out)


def guest_errors(report: GuestReport, scenario: Scenario) -> list[str]:
    """The guest's ``error`` lines, one string each (kind and fields); for a guest without
    cloud-init a DHCP client that got no answer is the row's business (:attr:`NicRow.answers_ok`)."""
    return [
        " ".join([e.kind, *(f"{k}={v}" for k, v in e.fields.items())])
        for e in report.errors
        if not (scenario.dhcp and e.get("what") in DHCP_CLIENTS)
    ]


def summary(result: DemoResult) -> str:
    """What ``kvnet demo`` prints after the progress lines (before its verdict line): the NIC
    table, the timings, the error, what was left behind, the console when the run failed."""
    lines = ["", format_table(result)]
    t = result.timings
    if "add_to_nics" in t:
        lines.append(
            f"\nCNI ADD {t.get('cni_add', 0):.2f} s, sidecar {t.get('sidecar_start', 0) + t.get('sidecar_hooks', 0):.2f} s, "
            f"define+start {t.get('define_start', 0):.2f} s, guest boot to NIC report {t.get('guest_nics', 0):.2f} s "
            f"(ADD to NICs {t['add_to_nics']:.2f} s)"
        )
    if result.error:
        lines.append(f"\nerror: {result.error}")
    if result.traceback and not result.ok:
        lines.append(result.traceback.rstrip())
    lines.append(report_list(result.leftovers, CHECKED))
    if not result.ok:
        lines.append(result.console_tail(40))
    return "\n".join(lines)


__all__ = [
    "CHECKED",
    "DemoResult",
    "Failover",
    "KubeVirtPart",
    "NicRow",
    "format_table",
    "guest_errors",
    "nic_rows",
    "summary",
]
