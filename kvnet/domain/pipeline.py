"""The two calls the sidecar makes, each a pure function of its inputs.

``define_domain`` serves OnDefineDomain (also called on a migration target, so it has
no side effects); ``cloud_init_network_data`` serves PreCloudInitIso. The sidecar reads
the pod facts (links, binding records, network-info) and passes them in. Each input may
come parsed already (the VMI as a ``Vmi``, the domain as a ``DomainXml``) or as the caller
has it (a dict, the XML text); either way each is parsed once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kvnet.core.model import PodFacts, VmNicPlan
from kvnet.domain.netdata import guest_network_data, merge_network_data
from kvnet.domain.render import render_plan
from kvnet.domain.splice import DomainXml, kubevirt_hostdevs, parse_domain, splice
from kvnet.domain.translate import plan_vm_nics
from kvnet.domain.vmi import Vmi, parse_vmi

VmiInput = Vmi | Mapping[str, Any]
DomainInput = DomainXml | bytes | str


def vmi_of(vmi: VmiInput) -> Vmi:
    """The VMI parsed (a ``Vmi`` as it is)."""
    return vmi if isinstance(vmi, Vmi) else parse_vmi(vmi)


def plan_for(
    vmi: VmiInput, facts: PodFacts, *, binding_name: str = "kvnet", domain_xml: DomainInput | None = None
) -> VmNicPlan:
    """Parse the VMI and translate it; hostdevs KubeVirt rendered are read from ``domain_xml``.

    Without a domain (PreCloudInitIso) only the guest side is needed: hostdev sources may be unknown.
    """
    if domain_xml is None:
        return plan_vm_nics(vmi_of(vmi), facts, binding_name=binding_name, need_hostdev_sources=False)
    hostdevs = kubevirt_hostdevs(domain_xml)
    return plan_vm_nics(vmi_of(vmi), facts, binding_name=binding_name, kubevirt_hostdevs=hostdevs)


def define_domain(domain_xml: DomainInput, vmi: VmiInput, facts: PodFacts, *, binding_name: str = "kvnet") -> str:
    """The domain with kvnet's NICs spliced in (replaced by alias, else appended)."""
    domain = parse_domain(domain_xml)
    plan = plan_for(vmi, facts, binding_name=binding_name, domain_xml=domain)
    return splice(domain, render_plan(plan))


def cloud_init_network_data(
    vmi: VmiInput, facts: PodFacts, *, user_network_data: str | None, binding_name: str = "kvnet"
) -> str | None:
    """The guest's NetworkData: the user's, plus kvnet's bonds and addresses (None: leave it alone)."""
    ours = guest_network_data(plan_for(vmi, facts, binding_name=binding_name))
    if ours is None:
        return user_network_data
    return merge_network_data(user_network_data, ours)
