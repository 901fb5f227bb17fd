"""Reading the test guest's serial console: its ``KVNET <event> key=value`` lines.

The guest's /init (``kvnet/lab/data/init``) reports what it saw in one line per fact;
everything else on the console (kernel messages, busybox complaints) is kept for the
log attached to a failure but ignored by the parser.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "KVNET "


@dataclass(frozen=True)
class ConsoleEvent:
    """One ``KVNET <kind> k=v ...`` line."""

    kind: str
    fields: Mapping[str, str] = field(default_factory=dict)

    def get(self, key: str, default: str = "") -> str:
        return self.fields.get(key, default)


@dataclass(frozen=True)
class GuestNic:
    """A NIC as the guest's kernel made it, before the network data renamed it."""

    name: str
    mac: str


@dataclass(frozen=True)
class GuestLink:
    """A link after the network data was applied (``addrs`` in CIDR form)."""

    name: str
    mac: str
    mtu: int
    master: str | None
    addrs: tuple[str, ...]


@dataclass(frozen=True)
class GuestBondState:
    name: str
    mode: str
    active: str | None
    slaves: tuple[str, ...]


@dataclass(frozen=True)
class GuestReport:
    """Everything the guest printed, parsed; later lines win for links and bonds."""

    events: tuple[ConsoleEvent, ...]
    nics: tuple[GuestNic, ...]
    links: Mapping[str, GuestLink]
    bonds: Mapping[str, GuestBondState]
    pings: tuple[tuple[str, bool], ...]  # (destination, ok) in the order printed
    errors: tuple[ConsoleEvent, ...]

    def has(self, kind: str, **match: str) -> bool:
        return any(e.kind == kind and all(e.get(k) == v for k, v in match.items()) for e in self.events)

    def last_ping(self, dst: str) -> bool | None:
        results = [ok for d, ok in self.pings if d == dst]
        return results[-1] if results else None

    def nics_reported_at(self) -> float | None:
        """Guest uptime (s) when it had listed all its NICs."""
        for e in self.events:
            if e.kind == "nics":
                return float(e.get("uptime", "nan"))
        return None

    def link_by_mac(self, mac: str) -> GuestLink | None:
        mac = mac.lower()
        return next((link for link in self.links.values() if link.mac == mac and link.master is None), None) or next(
            (link for link in self.links.values() if link.mac == mac), None
        )


def parse_line(line: str) -> ConsoleEvent | None:
    """The event on one console line, or None for anything that is not a KVNET line."""
    at = line.find(PREFIX)
    if at < 0:
        return None
    words = line[at + len(PREFIX) :].strip().split()
    if not words:
        return None
    fields: dict[str, str] = {}
    for word in words[1:]:
        key, sep, value = word.partition("=")
        if sep:
            fields[key] = value
    return ConsoleEvent(words[0], fields)


def _opt(value: str) -> str | None:
    return None if value in ("", "-") else value


def _list(value: str) -> tuple[str, ...]:
    return tuple(v for v in value.split("+") if v and v != "-")


def parse(text: str) -> GuestReport:
    events = tuple(e for e in map(parse_line, text.splitlines()) if e is not None)
    nics: list[GuestNic] = []
    links: dict[str, GuestLink] = {}
    bonds: dict[str, GuestBondState] = {}
    pings: list[tuple[str, bool]] = []
    for e in events:
        if e.kind == "nic":
            nics.append(GuestNic(e.get("name"), e.get("mac").lower()))
        elif e.kind == "link":
            mtu = e.get("mtu")
            links[e.get("name")] = GuestLink(
                e.get("name"),
                e.get("mac").lower(),
                int(mtu) if mtu.isdigit() else 0,
                _opt(e.get("master")),
                _list(e.get("addrs")),
            )
        elif e.kind == "bond":
            bonds[e.get("name")] = GuestBondState(
                e.get("name"), e.get("mode"), _opt(e.get("active")), _list(e.get("slaves"))
            )
        elif e.kind == "ping":
            pings.append((e.get("dst"), e.get("result") == "ok"))
    return GuestReport(
        events=events,
        nics=tuple(nics),
        links=links,
        bonds=bonds,
        pings=tuple(pings),
        errors=tuple(e for e in events if e.kind == "error"),
    )


def read(path: Path) -> GuestReport:
    return parse(read_text(path))


def read_text(path: Path) -> str:
    """The console log so far ('' before the guest wrote anything)."""
    try:
        return Path(path).read_bytes().decode(errors="replace")
    except FileNotFoundError:
        return ""


def wait_for(
    path: Path,
    done: Callable[[GuestReport], bool],
    timeout: float,
    *,
    alive: Callable[[], bool] | None = None,
    interval: float = 0.05,
) -> GuestReport | None:
    """Poll the console until ``done(report)``; None on timeout or when ``alive()`` says no."""
    deadline = time.monotonic() + timeout
    while True:
        report = read(path)
        if done(report):
            return report
        if time.monotonic() > deadline or (alive is not None and not alive()):
            report = read(path)
            return report if done(report) else None
        time.sleep(interval)


def tail(path: Path, lines: int = 80) -> str:
    """The end of the console log, for an assertion message."""
    text = read_text(path)
    kept = text.splitlines()[-lines:]
    return f"--- guest console ({path.name}, last {len(kept)} lines) ---\n" + "\n".join(kept)
