"""kvnet.policy.nft: the table text for a pod's rules (and, as root, nft's own check of it)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from kvnet.core.errors import InvalidConfig
from kvnet.policy.model import AllowRule, AttachmentRules, PodRules, PortMatch
from kvnet.policy.nft import DELETE_SCRIPT, render, render_bridge, script

RULES = PodRules(
    "team",
    "b",
    "ns-b",
    (
        AttachmentRules(
            "net1",
            "team/blue",
            ingress=(
                AllowRule(
                    ports=(PortMatch("TCP", 80), PortMatch("UDP", 1000, 2000)), cidrs=("10.1.0.2/32", "fd00::2/128")
                ),
                AllowRule(cidrs=("192.168.0.0/16",), excluded=("192.168.3.0/24",)),
                AllowRule(ports=(PortMatch("SCTP"),), any_peer=True),
            ),
        ),
        AttachmentRules("net2", "team/red", egress=()),
    ),
)


def test_render_polices_only_the_named_interfaces() -> None:
    text = render(RULES)
    assert text == (
        "table inet kvnet-policy {\n"
        "\tchain input {\n"
        "\t\ttype filter hook input priority filter; policy accept;\n"
        '\t\tiifname "net1" jump ingress_0\n'
        "\t}\n"
        "\tchain output {\n"
        "\t\ttype filter hook output priority filter; policy accept;\n"
        '\t\toifname "net2" jump egress_1\n'
        "\t}\n"
        "\tchain ingress_0 {\n"
        '\t\tcomment "ingress net1 on team/blue"\n'
        "\t\tct state established,related accept\n"
        "\t\ticmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert } accept\n"
        "\t\tip saddr { 10.1.0.2/32 } tcp dport 80 accept\n"
        "\t\tip saddr { 10.1.0.2/32 } udp dport 1000-2000 accept\n"
        "\t\tip6 saddr { fd00::2/128 } tcp dport 80 accept\n"
        "\t\tip6 saddr { fd00::2/128 } udp dport 1000-2000 accept\n"
        "\t\tip saddr { 192.168.0.0/16 } ip saddr != { 192.168.3.0/24 } accept\n"
        "\t\tmeta l4proto sctp accept\n"
        "\t\tdrop\n"
        "\t}\n"
        "\tchain egress_1 {\n"
        '\t\tcomment "egress net2 on team/red"\n'
        "\t\tct state established,related accept\n"
        "\t\ticmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert } accept\n"
        "\t\tdrop\n"
        "\t}\n"
        "}\n"
    )


def test_script_replaces_the_table_in_one_transaction() -> None:
    text = script(RULES)
    assert text.startswith("table inet kvnet-policy {}\ndelete table inet kvnet-policy\ntable inet kvnet-policy {\n")
    assert DELETE_SCRIPT == "table inet kvnet-policy {}\ndelete table inet kvnet-policy\n"


@pytest.mark.parametrize("name", ['net"1', "a b", "x" * 16, ""])
def test_strange_interface_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidConfig):
        render(PodRules("t", "p", None, (AttachmentRules(name, "t/n", ingress=()),)))


def test_a_bridged_attachment_is_marked_in_the_bridge_and_filtered_in_forward() -> None:
    """net1 is a VM's pod link, a port of the in-pod bridge: its frames are marked in the
    bridge family's forward hook and judged by the inet forward chain (br_netfilter);
    net2 stays a pod interface."""
    bridged = frozenset({"net1"})
    text = render(RULES, bridged)
    assert "\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n\t}\n" in text
    assert (
        "\tchain forward {\n"
        "\t\ttype filter hook forward priority filter; policy accept;\n"
        "\t\tmeta mark 0x6b761000 jump ingress_0\n"
        "\t}\n"
    ) in text
    assert '\t\toifname "net2" jump egress_1\n' in text
    assert render_bridge(RULES, bridged) == (
        "table bridge kvnet-policy {\n"
        "\tchain forward {\n"
        "\t\ttype filter hook forward priority filter; policy accept;\n"
        '\t\tiifname "net1" meta mark set 0x6b761000\n'
        "\t}\n"
        "}\n"
    )
    assert render_bridge(RULES, frozenset()) is None
    both = PodRules("t", "vm", None, (AttachmentRules("pod1", "t/n", ingress=(), egress=()),))
    assert 'oifname "pod1" meta mark set 0x6b762000' in (render_bridge(both, frozenset({"pod1"})) or "")
    full = script(RULES, bridged)
    assert full.startswith(
        "table inet kvnet-policy {}\ndelete table inet kvnet-policy\n"
        "table bridge kvnet-policy {}\ndelete table bridge kvnet-policy\n"
    )
    assert full.endswith(render_bridge(RULES, bridged) or "")


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("nft") is None, reason="needs root and nft (nft -c)")
@pytest.mark.parametrize("bridged", [frozenset(), frozenset({"net1"})], ids=["pod", "vm"])
def test_nft_accepts_the_script(bridged: frozenset[str]) -> None:
    done = subprocess.run(
        ["unshare", "--net", "nft", "-c", "-f", "-"],
        input=script(RULES, bridged),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
