"""A pod's wanted rules as one nftables table inside its netns, applied with the ``nft`` tool.

:func:`render` is pure: :class:`~kvnet.policy.model.PodRules` to the text of ``table inet
kvnet-policy``, with an ``input`` and an ``output`` base chain that jump, per policed
interface only (``iifname``/``oifname``), to that interface's ingress or egress chain:
established and related traffic accepted, IPv6 neighbour discovery accepted (an isolated
IPv6 attachment must still resolve its peers), then the allow rules, then ``drop``.
Interfaces no policy selects (eth0, the cluster network) never reach a policy chain.

:func:`script` makes it atomic: ``nft -f`` runs a file as one transaction, and the file
first creates the table (a no-op when it exists), deletes it, then declares it anew, so the
pod has the old rules or the new ones, never none. :class:`Nft` runs the tool in the pod's
netns (``nsenter --net=PATH nft -f -``).

A VM behind kvnet's binding is different: its attachment's pod link (``pod<hash>``) is a
port of the in-pod bridge ``k6t-<x>`` with the guest's tap, so the guest's packets are
bridged, never seen by the pod's ``input``/``output`` hooks. For such an attachment (one
the agent found enslaved to a bridge in the pod netns, the ``bridged`` argument) the
filtering moves to where the frames flow: ``table bridge kvnet-policy`` marks, in the
bridge's ``forward`` hook, the frames that cross the pod link (``iifname`` towards the
guest, ``oifname`` from it), and the inet table's ``forward`` chain jumps on that mark
to the same ingress/egress chains. The inet hook sees bridged IPv4/IPv6 through
br_netfilter (``net.bridge.bridge-nf-call-ip{,6}tables``, which :meth:`Nft.bridge_netfilter`
turns on in the pod netns), which also gives those frames conntrack: this kernel's bridge
family has no conntrack of its own (``nf_conntrack_bridge``), and "established, related"
needs it. ARP is not IP: it never reaches the inet chains and the guest keeps resolving.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
from collections.abc import Sequence

from kvnet.core.errors import InvalidConfig, IOFailure
from kvnet.policy.model import AllowRule, AttachmentRules, PodRules, PortMatch

TABLE = "kvnet-policy"
FAMILY = "inet"
NFT = shutil.which("nft") or "/usr/sbin/nft"
NSENTER = shutil.which("nsenter") or "/usr/bin/nsenter"
IP = shutil.which("ip") or "/usr/sbin/ip"
SYSCTL = shutil.which("sysctl") or "/usr/sbin/sysctl"
BRIDGE = "bridge"  # the family of the marking table of bridged (VM) attachments
FAMILIES = (FAMILY, BRIDGE)
# the frames a bridged attachment's chains get: MARK_IN + i towards the guest, MARK_OUT + i from it
MARK_IN, MARK_OUT = 0x6B761000, 0x6B762000
BRIDGE_NETFILTER = ("net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables")
TIMEOUT = 20.0
_IFNAME = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")
_ND = "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert } accept"


def _ifname(name: str) -> str:
    if not _IFNAME.match(name):
        raise InvalidConfig(f"interface name {name!r} cannot be policed (not a plain Linux interface name)")
    return name


def _ports(ports: Sequence[PortMatch]) -> list[str]:
    if not ports:
        return [""]
    out = []
    for p in ports:
        proto = p.protocol.lower()
        if p.port is None:
            out.append(f"meta l4proto {proto}")
        elif p.end_port is not None:
            out.append(f"{proto} dport {p.port}-{p.end_port}")
        else:
            out.append(f"{proto} dport {p.port}")
    return out


def _set(items: Sequence[str]) -> str:
    return "{ " + ", ".join(items) + " }"


def _rule_lines(rule: AllowRule, side: str) -> list[str]:
    """nft rules for one allow rule; ``side`` is ``s`` (ingress: the peer is the source) or
    ``d`` (egress: the peer is the destination)."""
    matches: list[str] = []
    if rule.any_peer:
        matches.append("")
    else:
        for version, family in ((4, "ip"), (6, "ip6")):
            cidrs = [c for c in rule.cidrs if ipaddress.ip_network(c).version == version]
            if not cidrs:
                continue
            match = f"{family} {side}addr {_set(cidrs)}"
            excluded = [c for c in rule.excluded if ipaddress.ip_network(c).version == version]
            if excluded:
                match += f" {family} {side}addr != {_set(excluded)}"
            matches.append(match)
    return [" ".join(part for part in (m, p, "accept") if part) for m in matches for p in _ports(rule.ports)]


def _chain(name: str, comment: str, rules: Sequence[AllowRule], side: str) -> list[str]:
    lines = [f"\tchain {name} {{", f'\t\tcomment "{comment}"']
    lines += ["\t\tct state established,related accept", f"\t\t{_ND}"]
    for rule in rules:
        lines += [f"\t\t{line}" for line in _rule_lines(rule, side)]
    lines += ["\t\tdrop", "\t}"]
    return lines


def render(pod: PodRules, bridged: frozenset[str] = frozenset()) -> str:
    """The inet table for ``pod`` (nft's own syntax, as ``nft list table`` prints it, near
    enough); the attachments whose interface is in ``bridged`` are filtered in the
    ``forward`` hook on :func:`render_bridge`'s marks instead of ``input``/``output``."""
    jumps_in: list[str] = []
    jumps_out: list[str] = []
    jumps_fwd: list[str] = []
    chains: list[str] = []
    for i, att in enumerate(pod.attachments):
        ifname = _ifname(att.interface)
        comment = _comment(att)
        if att.ingress is not None:
            if ifname in bridged:
                jumps_fwd.append(f"\t\tmeta mark {MARK_IN + i:#x} jump ingress_{i}")
            else:
                jumps_in.append(f'\t\tiifname "{ifname}" jump ingress_{i}')
            chains += _chain(f"ingress_{i}", f"ingress {comment}", att.ingress, "s")
        if att.egress is not None:
            if ifname in bridged:
                jumps_fwd.append(f"\t\tmeta mark {MARK_OUT + i:#x} jump egress_{i}")
            else:
                jumps_out.append(f'\t\toifname "{ifname}" jump egress_{i}')
            chains += _chain(f"egress_{i}", f"egress {comment}", att.egress, "d")
    lines = [f"table {FAMILY} {TABLE} {{"]
    lines += ["\tchain input {", "\t\ttype filter hook input priority filter; policy accept;", *jumps_in, "\t}"]
    lines += ["\tchain output {", "\t\ttype filter hook output priority filter; policy accept;", *jumps_out, "\t}"]
    if jumps_fwd:
        lines += ["\tchain forward {", "\t\ttype filter hook forward priority filter; policy accept;", *jumps_fwd]
        lines.append("\t}")
    lines += chains
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_bridge(pod: PodRules, bridged: frozenset[str]) -> str | None:
    """The bridge table that marks the frames crossing each bridged attachment's pod link in
    an isolated direction (None when no policed attachment is bridged). Its ``forward``
    chain (priority filter, -200) runs before br_netfilter hands the frame to the inet
    ``forward`` hook, where the mark picks the attachment's chain."""
    marks: list[str] = []
    for i, att in enumerate(pod.attachments):
        ifname = _ifname(att.interface)
        if ifname not in bridged:
            continue
        if att.ingress is not None:
            marks.append(f'\t\tiifname "{ifname}" meta mark set {MARK_IN + i:#x}')
        if att.egress is not None:
            marks.append(f'\t\toifname "{ifname}" meta mark set {MARK_OUT + i:#x}')
    if not marks:
        return None
    head = ["\tchain forward {", "\t\ttype filter hook forward priority filter; policy accept;"]
    return "\n".join([f"table {BRIDGE} {TABLE} {{", *head, *marks, "\t}", "}"]) + "\n"


def families(pod: PodRules, bridged: frozenset[str] = frozenset()) -> tuple[str, ...]:
    """The tables :func:`script` declares for ``pod``."""
    return FAMILIES if render_bridge(pod, bridged) is not None else (FAMILY,)


def _comment(att: AttachmentRules) -> str:
    text = f"{att.interface} on {att.network}"
    return re.sub(r'["\\\n]', "_", text)[:120]


def delete_script(tables: tuple[str, ...] = (FAMILY,)) -> str:
    """Delete the tables of the given families (absent is fine)."""
    return "".join(f"table {f} {TABLE} {{}}\ndelete table {f} {TABLE}\n" for f in tables)


def script(pod: PodRules, bridged: frozenset[str] = frozenset()) -> str:
    """One ``nft -f`` transaction that replaces the table(s) with :func:`render`'s (and
    :func:`render_bridge`'s, for bridged attachments)."""
    bridge = render_bridge(pod, bridged)
    text = delete_script(families(pod, bridged)) + render(pod, bridged)
    return text + (bridge or "")


DELETE_SCRIPT = delete_script()  # the inet table only


class Nft:
    """Runs ``nft`` in a network namespace given by its path (``nsenter --net=PATH``)."""

    def __init__(self, nft: str = NFT, nsenter: str = NSENTER, timeout: float = TIMEOUT) -> None:
        self.nft = nft
        self.nsenter = nsenter
        self.timeout = timeout

    def _run(self, netns: str, args: Sequence[str], stdin: str | None = None) -> str:
        return self._run_tool(netns, [self.nft, *args], stdin)

    def apply(self, netns: str, text: str) -> None:
        """Run ``text`` (a :func:`script`) as one transaction in ``netns``."""
        self._run(netns, ["-f", "-"], text)

    def delete(self, netns: str, tables: tuple[str, ...] = (FAMILY,)) -> None:
        """Remove the tables of ``tables`` (families) from ``netns`` (absent is fine)."""
        self._run(netns, ["-f", "-"], delete_script(tables))

    def tables(self, netns: str) -> list[str]:
        """``nft list tables`` in ``netns``, one ``family name`` per line."""
        return [line.removeprefix("table ").strip() for line in self._run(netns, ["list", "tables"]).splitlines()]

    def _run_tool(self, netns: str, argv: Sequence[str], stdin: str | None = None) -> str:
        full = [self.nsenter, f"--net={netns}", *argv]
        try:
            done = subprocess.run(full, input=stdin, capture_output=True, text=True, timeout=self.timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as err:
            name = os.path.basename(argv[0])
            raise IOFailure(f"{name} in {netns} failed: {err}") from None
        if done.returncode != 0:
            what = " ".join([os.path.basename(argv[0]), *argv[1:]])
            raise IOFailure(f"{what} in {netns} failed (status {done.returncode})", done.stderr.strip())
        return done.stdout

    def masters(self, netns: str) -> dict[str, str | None]:
        """Every link of ``netns`` and the bridge (or bond) it is a port of, None for none."""
        text = self._run_tool(netns, [IP, "-j", "link", "show"])
        try:
            links = json.loads(text or "[]")
        except ValueError:
            raise IOFailure(f"ip -j link show in {netns} printed no JSON", text[:200]) from None
        return {str(link["ifname"]): (str(link["master"]) if link.get("master") else None) for link in links}

    def bridge_netfilter(self, netns: str) -> None:
        """Turn on br_netfilter's hand-over of bridged IPv4/IPv6 to the inet hooks in ``netns``
        (per netns; without it a bridged attachment's chains would see nothing)."""
        self._run_tool(netns, [SYSCTL, "-q", "-w", *(f"{key}=1" for key in BRIDGE_NETFILTER)])
