"""Production defaults, shared by the gRPC sidecar and the shim commands.

The heavy pieces (the domain pipeline with jinja2, the pod-facts reader) are imported
here, when a sidecar is built, so ``kvnet.sidecar.hooks`` stays importable on its own.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from kvnet.core.model import PodFacts
from kvnet.domain.splice import DomainXml
from kvnet.domain.vmi import Vmi
from kvnet.sidecar.hooks import EchoHooks, Hooks, KvnetHooks, PodFactsReader

DEFAULT_NAME = "kvnet"
DEFAULT_NETWORK_INFO = "/etc/podinfo/network-info"
DEFAULT_SYS_CLASS_NET = "/sys/class/net"
DEFAULT_NETWORK_INFO_TIMEOUT = 30.0


@dataclass(frozen=True)
class SidecarSettings:
    """Where the sidecar looks; each field has an environment variable (for the shim form)."""

    name: str = DEFAULT_NAME
    network_info: str = DEFAULT_NETWORK_INFO
    sys_class_net: str = DEFAULT_SYS_CLASS_NET
    network_info_timeout: float = DEFAULT_NETWORK_INFO_TIMEOUT
    echo: bool = False
    cloud_init: bool = True  # subscribe to PreCloudInitIso (KVNET_CLOUD_INIT=off: for VMIs without cloud-init)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SidecarSettings:
        env = os.environ if environ is None else environ
        return cls(
            name=env.get("NETWORK_BINDING_PLUGIN_NAME") or DEFAULT_NAME,
            network_info=env.get("KVNET_NETWORK_INFO") or DEFAULT_NETWORK_INFO,
            sys_class_net=env.get("KVNET_SYS_CLASS_NET") or DEFAULT_SYS_CLASS_NET,
            network_info_timeout=float(env.get("KVNET_NETWORK_INFO_TIMEOUT") or DEFAULT_NETWORK_INFO_TIMEOUT),
            cloud_init=(env.get("KVNET_CLOUD_INIT") or "on").lower() not in ("off", "0", "false", "no"),
        )


class PipelineTranslator:
    """``Translator`` over ``kvnet.domain.pipeline``.

    The pipeline (jinja2, templates, PyYAML) is imported when the translator is built, so a
    broken install fails at start-up, before the socket appears, not at the first VM.
    """

    def __init__(self) -> None:
        from kvnet.domain import pipeline

        self._pipeline = pipeline

    def define_domain(self, domain: DomainXml, vmi: Vmi, facts: PodFacts, *, binding_name: str) -> str:
        return self._pipeline.define_domain(domain, vmi, facts, binding_name=binding_name)

    def cloud_init_network_data(
        self, vmi: Vmi, facts: PodFacts, *, user_network_data: str | None, binding_name: str
    ) -> str | None:
        return self._pipeline.cloud_init_network_data(
            vmi, facts, user_network_data=user_network_data, binding_name=binding_name
        )


def build_hooks(settings: SidecarSettings, *, stopping: threading.Event | None = None) -> Hooks:
    """The hooks object the server and the shim call; ``stopping`` cuts a network-info wait short."""
    if settings.echo:
        return EchoHooks(settings.name)
    from kvnet.domain.networkinfo import parse_network_info
    from kvnet.sidecar.podfacts import read_pod_links

    reader = PodFactsReader(
        settings.network_info,
        settings.sys_class_net,
        read_links=read_pod_links,  # with each call's query: the links its VMI's kvnet interfaces name
        parse_network_info=parse_network_info,
        timeout=settings.network_info_timeout,
        stopping=stopping,
    )
    return KvnetHooks(settings.name, reader, PipelineTranslator())
