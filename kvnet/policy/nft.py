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
"""

from __future__ import annotations

import ipaddress
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


def render(pod: PodRules) -> str:
    """The table for ``pod`` (nft's own syntax, as ``nft list table`` prints it, near enough)."""
    jumps_in: list[str] = []
    jumps_out: list[str] = []
    chains: list[str] = []
    for i, att in enumerate(pod.attachments):
        ifname = _ifname(att.interface)
        comment = _comment(att)
        if att.ingress is not None:
            jumps_in.append(f'\t\tiifname "{ifname}" jump ingress_{i}')
            chains += _chain(f"ingress_{i}", f"ingress {comment}", att.ingress, "s")
        if att.egress is not None:
            jumps_out.append(f'\t\toifname "{ifname}" jump egress_{i}')
            chains += _chain(f"egress_{i}", f"egress {comment}", att.egress, "d")
    lines = [f"table {FAMILY} {TABLE} {{"]
    lines += ["\tchain input {", "\t\ttype filter hook input priority filter; policy accept;", *jumps_in, "\t}"]
    lines += ["\tchain output {", "\t\ttype filter hook output priority filter; policy accept;", *jumps_out, "\t}"]
    lines += chains
    lines.append("}")
    return "\n".join(lines) + "\n"


def _comment(att: AttachmentRules) -> str:
    text = f"{att.interface} on {att.network}"
    return re.sub(r'["\\\n]', "_", text)[:120]


def script(pod: PodRules) -> str:
    """One ``nft -f`` transaction that replaces the table with :func:`render`'s."""
    return f"table {FAMILY} {TABLE} {{}}\ndelete table {FAMILY} {TABLE}\n" + render(pod)


DELETE_SCRIPT = f"table {FAMILY} {TABLE} {{}}\ndelete table {FAMILY} {TABLE}\n"  # absent is fine


class Nft:
    """Runs ``nft`` in a network namespace given by its path (``nsenter --net=PATH``)."""

    def __init__(self, nft: str = NFT, nsenter: str = NSENTER, timeout: float = TIMEOUT) -> None:
        self.nft = nft
        self.nsenter = nsenter
        self.timeout = timeout

    def _run(self, netns: str, args: Sequence[str], stdin: str | None = None) -> str:
        argv = [self.nsenter, f"--net={netns}", self.nft, *args]
        try:
            done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=self.timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise IOFailure(f"nft in {netns} failed: {err}") from None
        if done.returncode != 0:
            raise IOFailure(f"nft {' '.join(args)} in {netns} failed (status {done.returncode})", done.stderr.strip())
        return done.stdout

    def apply(self, netns: str, text: str) -> None:
        """Run ``text`` (a :func:`script`) as one transaction in ``netns``."""
        self._run(netns, ["-f", "-"], text)

    def delete(self, netns: str) -> None:
        """Remove the table from ``netns`` (absent is fine)."""
        self._run(netns, ["-f", "-"], DELETE_SCRIPT)

    def tables(self, netns: str) -> list[str]:
        """``nft list tables`` in ``netns``, one ``family name`` per line."""
        return [line.removeprefix("table ").strip() for line in self._run(netns, ["list", "tables"]).splitlines()]
