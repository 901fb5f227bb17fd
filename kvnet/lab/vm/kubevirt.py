"""KubeVirt's part of the VM run played by KubeVirt's own code: ``build/peers/bin/kubevirt-peer``.

The peer (peers/kubevirt/, KubeVirt v1.8.4, docs/kubevirt-peer.md) runs virt-controller's
pod annotations and hook-sidecar list (``annotation``), its downward-API network-info
(``network-info``), virt-launcher's converter (``domain``) and virt-launcher's hook manager
(``hooks``: Info, PreCloudInitIso, the 2-3 OnDefineDomain calls of a start each fed the
previous answer, and Shutdown when the VM stops). Each call is one process, JSON on stdin
and stdout; a failed call is an :class:`IOFailure` carrying the peer's stderr.

When the peer is not built the run keeps the lab's own stand-ins
(:mod:`kvnet.lab.vm.scenario`, :class:`kvnet.lab.launcher.LauncherClient`).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kvnet.core.errors import IOFailure
from kvnet.lab.kube import PEERS

NAME = "kubevirt-peer"
CR_PATCH = Path(__file__).resolve().parents[3] / "deploy" / "kubevirt-cr-patch.yaml"


def deploy_kubevirt_cr(**binding: str) -> dict[str, Any]:
    """The KubeVirt CR with deploy/kubevirt-cr-patch.yaml applied (plus ``binding`` keys for
    kvnet's registration) and emulation on (no KVM here): what the peer is given as the cluster's CR."""
    patch = yaml.safe_load(CR_PATCH.read_text())
    patch["spec"]["configuration"]["network"]["binding"]["kvnet"].update(binding)
    patch["spec"]["configuration"]["developerConfiguration"] = {"useEmulation": True}
    return {"apiVersion": "kubevirt.io/v1", "kind": "KubeVirt", "metadata": {"name": "kubevirt"}, **patch}


def peer_path() -> Path:
    return PEERS / "bin" / NAME


def peer_missing() -> str | None:
    """None when ``kubevirt-peer`` is built, else what is missing."""
    path = peer_path()
    if not os.access(path, os.X_OK):
        return f"{NAME} not built ({path} missing; run `make peers`)"
    return None


@dataclass(frozen=True)
class HookStart:
    """What virt-launcher's hook manager did on a start (``hooks`` with stage ``start``)."""

    sidecars: list[dict[str, Any]]  # what each collected socket's Info said
    cloud_init_input: Mapping[str, Any] | None  # the cloud-init data PreCloudInitIso was given
    cloud_init: Mapping[str, Any]  # the PreCloudInitIso answer virt-launcher kept
    calls: list[dict[str, str]]  # each OnDefineDomain call: step, input, output
    domain_xml: str  # the last answer, what virt-launcher defines in libvirt


@dataclass(frozen=True)
class KubeVirtPeer:
    """One built ``kubevirt-peer`` and the KubeVirt CR every call reads its configuration from."""

    exe: Path
    kubevirt: Mapping[str, Any]

    def call(self, sub: str, payload: Mapping[str, Any], timeout: float = 120.0) -> str:
        try:
            done = subprocess.run(
                [str(self.exe), sub],
                input=json.dumps({**payload, "kubevirt": self.kubevirt}),
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise IOFailure(f"{NAME} {sub} did not answer within {timeout:.0f} s") from None
        if done.returncode != 0:
            raise IOFailure(f"{NAME} {sub} failed with status {done.returncode}", done.stderr.strip()[-2000:])
        return done.stdout

    def call_json(self, sub: str, payload: Mapping[str, Any], timeout: float = 120.0) -> dict[str, Any]:
        out = json.loads(self.call(sub, payload, timeout))
        if not isinstance(out, dict):
            raise IOFailure(f"{NAME} {sub} did not print a JSON object")
        return out

    def annotation(self, vmi: Mapping[str, Any]) -> dict[str, Any]:
        """virt-controller's pod annotations and hook sidecars: ``{annotations, hookSidecars}``."""
        return self.call_json("annotation", {"vmi": vmi})

    def network_info(self, vmi: Mapping[str, Any], network_status: str) -> str:
        """The ``kubevirt.io/network-info`` value virt-controller writes for this network-status
        ('' when it writes none: the downward-API file is then empty)."""
        out = self.call_json("network-info", {"vmi": vmi, "networkStatus": network_status})
        value = out.get("annotations", {}).get("kubevirt.io/network-info")
        return value if isinstance(value, str) else ""

    def domain(self, vmi: Mapping[str, Any]) -> str:
        """The converter's domain: what the first OnDefineDomain gets."""
        return self.call("domain", {"vmi": vmi}).rstrip("\n")

    def hooks_start(self, hooks_dir: Path, vmi: Mapping[str, Any], domain_xml: str, timeout: int = 30) -> HookStart:
        """Collect, PreCloudInitIso and the OnDefineDomain calls of a start, no Shutdown."""
        payload = {
            "hooksDir": str(hooks_dir),
            "vmi": vmi,
            "domainXML": domain_xml,
            "timeoutSeconds": timeout,
            "stage": "start",
        }
        out = self.call_json("hooks", payload, timeout=timeout + 60.0)
        pre = out.get("preCloudInitIso") or {}
        if "panic" in pre:
            raise IOFailure(f"virt-launcher's PreCloudInitIso panics: {pre['panic']}", str(pre.get("panicIn", "")))
        return HookStart(
            sidecars=list(out.get("sidecars") or []),
            cloud_init_input=pre.get("input"),
            cloud_init=pre.get("output") or {},
            calls=list(out.get("onDefineDomain") or []),
            domain_xml=str(out.get("domainXML", "")),
        )

    def hooks_shutdown(self, hooks_dir: Path, vmi: Mapping[str, Any], timeout: int = 10) -> str:
        """virt-launcher's Shutdown call on every sidecar ("ok", or the error)."""
        payload = {"hooksDir": str(hooks_dir), "vmi": vmi, "timeoutSeconds": timeout, "stage": "shutdown"}
        return str(self.call_json("hooks", payload, timeout=timeout + 60.0).get("shutdown", ""))


def find(kubevirt: Mapping[str, Any]) -> KubeVirtPeer | None:
    """The built peer with this KubeVirt CR, or None when it is not built."""
    return None if peer_missing() else KubeVirtPeer(peer_path(), kubevirt)


__all__ = ["HookStart", "KubeVirtPeer", "find", "peer_missing", "peer_path"]
