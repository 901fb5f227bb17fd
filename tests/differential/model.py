"""The shape of the differential lane's table: what a scenario sets up, the CNI calls it
makes, and which differences from Multus are deliberate or still known.

Strings in configs, NADs, pods and steps may use these tokens, replaced per scenario and
mode by the harness (``Tokens``): ``$NS`` (the scenario's namespace), ``$NS2`` (a second
one), ``$SYS`` (a third, used as ``multusNamespace``), ``$WORK`` (the scenario's folder,
shared by both programs and wiped between them), ``$BIN`` (the recording bin dir),
``$KUBECONFIG`` (the real server, or the fault proxy for ``api="faulty"``),
``$DEAD_KUBECONFIG`` (a port nobody listens on), ``$CID`` (the container ID), ``$NETNS``
(the pod netns path), ``$READY`` (the readiness indicator file), ``$UID`` (the pod's UID, in
``Step.env``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Json = Mapping[str, Any]

ASPECTS = ("exit", "error", "result", "pod", "status", "cache", "leases", "delegates", "node")
MODES = ("thin", "thick")


@dataclass(frozen=True)
class Nad:
    """A NetworkAttachmentDefinition: ``config`` as an object, as raw text (a broken
    config), or None for an empty spec (the conf file of that name in ``confDir``)."""

    name: str
    config: Json | str | None
    namespace: str = "$NS"
    annotations: Json = field(default_factory=dict)


@dataclass(frozen=True)
class Pod:
    """A pod on the API server (``spec.nodeName`` is the lab's node)."""

    name: str = "web"
    networks: str | None = None
    default_network: str | None = None
    namespace: str = "$NS"
    annotations: Json = field(default_factory=dict)


@dataclass(frozen=True)
class DeletePod:
    """The pod is deleted from the API before the step."""

    name: str = "web"
    namespace: str = "$NS"


@dataclass(frozen=True)
class DeleteNetns:
    """The runtime removed the pod netns before the step."""


@dataclass(frozen=True)
class Readiness:
    """The readiness indicator file is created (``present``) or removed before the step;
    with ``after`` it is created that many seconds after the step started."""

    present: bool
    after: float = 0.0


@dataclass(frozen=True)
class ApiFault:
    """The fault proxy (:mod:`kvnet.lab.faultproxy`) answers the next ``times`` requests
    matching ``method`` and the path suffix ``path`` with ``code``."""

    code: int
    method: str | None = None
    path: str | None = None
    times: int = 1


Action = DeletePod | DeleteNetns | Readiness | ApiFault


@dataclass(frozen=True)
class Step:
    """One CNI call as a runtime makes it.

    ``uid``: ``"api"`` sends the pod's real UID as ``K8S_POD_UID``, ``"none"`` leaves the key
    out, anything else is sent as it is. ``config`` overrides keys of the scenario's config
    for this call (None removes a key); ``env`` overrides CNI_* variables (None removes)."""

    command: str
    before: tuple[Action, ...] = ()
    config: Json = field(default_factory=dict)
    uid: str = "api"
    pod: str = "web"
    namespace: str = "$NS"
    ifname: str = "eth0"
    env: Json = field(default_factory=dict)
    stdin: str | None = None  # raw stdin instead of the config (a broken config)
    timeout: float = 30.0


ADD = Step("ADD")
DEL = Step("DEL")
CHECK = Step("CHECK")
ADD_DEL = (ADD, DEL)
NO_POD_ENV: Json = {"CNI_CONTAINERID": None, "CNI_NETNS": None, "CNI_IFNAME": None, "CNI_ARGS": None}
STATUS = Step("STATUS", env=NO_POD_ENV)


@dataclass(frozen=True)
class Deliberate:
    """A difference kvnet makes on purpose, in the named aspects (and modes). With
    ``match`` it covers only the differences that test true (a
    :class:`differential.harness.Difference`); a rule with ``match`` can be applied to
    every row (``GLOBAL_RULES``), as it recognises exactly its own difference."""

    id: str
    why: str
    aspects: tuple[str, ...]
    modes: tuple[str, ...] = MODES
    match: Callable[[Any], bool] | None = None


@dataclass(frozen=True)
class Known:
    """A difference kvnet still has (being fixed): its one-line cause and what Multus
    does instead (with the Multus source that does it); a row listing it is an expected
    failure in these modes until the fix lands. ``match`` as for :class:`Deliberate`."""

    id: str
    cause: str
    multus: str
    aspects: tuple[str, ...]
    modes: tuple[str, ...] = MODES
    match: Callable[[Any], bool] | None = None


@dataclass(frozen=True)
class Scenario:
    """One row: set-up, calls, what is compared, and the differences listed for it."""

    name: str
    what: str
    nads: tuple[Nad, ...] = ()
    pods: tuple[Pod, ...] = (Pod(),)
    config: Json = field(default_factory=dict)
    conf_files: Json = field(default_factory=dict)
    steps: tuple[Step, ...] = ADD_DEL
    modes: tuple[str, ...] = MODES
    api: str = "real"  # "real": the shared API server; "faulty": the same behind the fault proxy
    node: bool = False  # also compare the node netns (links, NAT rules, qdiscs)
    deliberate: tuple[str, ...] = ()  # ids of DELIBERATE entries
    known: tuple[str, ...] = ()  # ids of KNOWN entries

    @property
    def aspects(self) -> tuple[str, ...]:
        return tuple(a for a in ASPECTS if a != "node" or self.node)
