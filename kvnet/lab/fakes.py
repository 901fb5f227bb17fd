"""Test doubles the lanes share, one home each (the way Multus keeps ``pkg/testing``).

:class:`FakeClock` is a clock that moves only when slept on (for bounded polls: pass it
as the clock and its ``sleep`` as the sleep). :class:`FakeExec` stands in for the delegate runner's ``Exec`` seam
(:class:`kvnet.cni.delegate.Exec`): each plugin it knows answers like a CNI plugin would
(VERSION with its versions, ADD with a result in the config's version, or the answer
given for a command) and every call is recorded. The other fakes of the lab have their
own modules: a pod's /sys/class/net (:mod:`kvnet.lab.fake_pod`), SR-IOV sysfs trees
(:mod:`kvnet.lab.fake_sysfs`), the Kubernetes API (:mod:`kvnet.lab.apiserver`), the
kubelet's PodResources (:mod:`kvnet.lab.podresources_server`), a recording bin dir of
real plugins (:mod:`kvnet.lab.recorder`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kvnet.cni.results import convert_result


class FakeClock:
    """A monotonic clock that only moves when slept on: calling it gives the time, ``sleep``
    moves it on, records the step (``slept``, rounded to microseconds) and then calls
    ``on_sleep`` with the number of sleeps so far (to change the world mid-poll)."""

    def __init__(self, on_sleep: Callable[[int], object] | None = None) -> None:
        self.now = 0.0
        self.slept: list[float] = []
        self.on_sleep = on_sleep

    def __call__(self) -> float:
        return self.now

    @property
    def sleeps(self) -> int:
        return len(self.slept)

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept.append(round(seconds, 6))
        if self.on_sleep is not None:
            self.on_sleep(self.sleeps)


@dataclass(frozen=True)
class FakePlugin:
    """How one fake plugin answers: the versions VERSION lists, a canned ``(status, stdout,
    stderr)`` per command (``fail``, also for answers that succeed), the address ADD hands out."""

    versions: tuple[str, ...] = ("0.3.0", "0.3.1", "0.4.0", "1.0.0")
    fail: Mapping[str, tuple[int, bytes, bytes]] = field(default_factory=dict)
    ip: str = "10.0.0.2/24"


@dataclass(frozen=True)
class ExecCall:
    """One call a :class:`FakeExec` answered."""

    plugin: str  # the plugin's file name (its type)
    command: str
    conf: dict[str, Any]  # stdin, parsed ({} when empty)
    env: dict[str, str]
    path: str = ""  # the plugin's path as the runner found it


class FakeExec:
    """An ``Exec`` whose plugins are :class:`FakePlugin` values by name; records every call.

    ADD answers a result converted to the config's ``cniVersion`` (or the prevResult it was
    given, once that has IPs), other commands answer nothing; a config version the plugin
    does not list is CNI's "incompatible CNI versions" error. An unknown plugin is a
    KeyError (a test that calls one has a bug)."""

    def __init__(self, plugins: Mapping[str, FakePlugin]) -> None:
        self.plugins = dict(plugins)
        self.calls: list[ExecCall] = []

    def __call__(self, plugin: str, stdin: bytes, env: Mapping[str, str], timeout: float) -> tuple[int, bytes, bytes]:
        name = os.path.basename(plugin)
        fake = self.plugins[name]
        command = env["CNI_COMMAND"]
        conf: dict[str, Any] = json.loads(stdin) if stdin else {}
        self.calls.append(ExecCall(name, command, conf, dict(env), plugin))
        if command == "VERSION":
            answer = {"cniVersion": fake.versions[-1], "supportedVersions": list(fake.versions)}
            return 0, json.dumps(answer).encode(), b""
        if command in fake.fail:
            return fake.fail[command]
        if conf["cniVersion"] not in fake.versions:
            return 1, json.dumps({"code": 1, "msg": "incompatible CNI versions"}).encode(), b""
        if command != "ADD":
            return 0, b"", b""
        prev = conf.get("prevResult") or {"cniVersion": conf["cniVersion"]}
        result = (
            convert_result(
                {
                    "cniVersion": "1.1.0",
                    "interfaces": [{"name": env["CNI_IFNAME"], "sandbox": env["CNI_NETNS"], "mtu": 1500}],
                    "ips": [{"interface": 0, "address": fake.ip, "gateway": "10.0.0.1"}],
                    "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1", "table": 5}],
                    "dns": {},
                },
                conf["cniVersion"],
            )
            if "ips" not in prev
            else prev
        )
        return 0, json.dumps(result).encode(), b""

    def commands(self, skip_version: bool = True) -> list[tuple[str, str]]:
        """(plugin, command) of every call, VERSION probes left out unless asked for."""
        return [(c.plugin, c.command) for c in self.calls if not (skip_version and c.command == "VERSION")]


__all__ = ["ExecCall", "FakeClock", "FakeExec", "FakePlugin"]
