"""The sidecar's hot-path shortcuts give what the plain code gives.

OnDefineDomain reads, up front, exactly the pod links the translation looks at
(``kvnet.sidecar.podfacts.read_pod_links`` with ``kvnet.domain.translate.pod_link_query``),
decides the pod's naming scheme from the listed names, and writes the new devices without
``ET.tostring`` (``kvnet.domain.splice``). Each is checked here against the straightforward
version, and the errors stay what they were.

No client: ``KvnetHooks`` and the pipeline are called directly, on KubeVirt's converter
domain (``KUBEVIRT_DOMAIN``).
"""

from __future__ import annotations

import copy
import json
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pod_inputs import KUBEVIRT_DOMAIN, PodFiles, add_bridge_binding, make_vmi, network_info, write_link

from kvnet.core import bindrecord, naming
from kvnet.core.errors import DecodeFailure, KvnetError, TranslationError
from kvnet.core.model import BindingRecord, PodFacts, PodLink
from kvnet.core.naming import hashed_pod_iface
from kvnet.core.plumbing import BridgedTap, Macvtap, RedirectedTap
from kvnet.domain import pipeline, splice
from kvnet.domain.networkinfo import parse_network_info
from kvnet.domain.translate import pod_link_query
from kvnet.domain.vmi import parse_vmi
from kvnet.lab.fake_pod import write_plumbing
from kvnet.sidecar.hooks import KvnetHooks, PodFactsReader, PodFactsUnavailable
from kvnet.sidecar.podfacts import read_pod_links
from kvnet.sidecar.server import status_for
from kvnet.sidecar.wiring import PipelineTranslator

BAD_RECORD = '{"kvnet":1,"mac":"zz"}'


def _pod(tmp_path: Path, networks: tuple[str, ...] = ("red", "blue")) -> PodFiles:
    pod = PodFiles(tmp_path / "pod")
    pod.sys_class_net.mkdir(parents=True)
    pod.network_info.parent.mkdir(parents=True)
    write_link(pod.sys_class_net, "eth0", mac="0a:58:0a:f4:00:0c")
    for i, net in enumerate(networks):
        add_bridge_binding(pod.sys_class_net, net, original_mac=f"02:00:00:00:00:{i + 10:02x}")
    pod.network_info.write_text(network_info({net: {} for net in networks}))
    return pod


def _hooks(pod: PodFiles) -> KvnetHooks:
    reader = PodFactsReader(
        str(pod.network_info),
        str(pod.sys_class_net),
        read_links=read_pod_links,
        parse_network_info=parse_network_info,
        timeout=1.0,
    )
    return KvnetHooks("kvnet", reader, PipelineTranslator())


def _query(networks: dict[str, str | None]) -> Any:
    return pod_link_query(parse_vmi(make_vmi(networks)), binding_name="kvnet")


# --- the links read up front ------------------------------------------------------------


def test_a_query_reads_the_eager_links_it_names(tmp_path: Path) -> None:
    pod = _pod(tmp_path)
    write_link(pod.sys_class_net, "lo", mac="00:00:00:00:00:00")
    (pod.sys_class_net / "lo" / "type").write_text("772\n")
    (pod.sys_class_net / "gone").mkdir()  # a link deleted mid-read: its folder has no files
    eager = read_pod_links(str(pod.sys_class_net))
    assert "lo" not in eager and "gone" not in eager
    red = hashed_pod_iface("red")
    read = read_pod_links(str(pod.sys_class_net), _query({"red": "kvnet"}))
    assert read == {name: eager[name] for name in (red, naming.tap_name(red))}  # not the bridge, eth0 or blue's
    both = read_pod_links(str(pod.sys_class_net), _query({"red": "kvnet", "blue": "kvnet"}))
    assert set(both) == {red, naming.tap_name(red), hashed_pod_iface("blue"), naming.tap_name(hashed_pod_iface("blue"))}


def test_a_query_reads_only_the_links_it_names(tmp_path: Path) -> None:
    pod = _pod(tmp_path)
    write_link(pod.sys_class_net, "pod0000000000a", mac="02:00:00:00:00:99", ifalias=BAD_RECORD)
    read = read_pod_links(str(pod.sys_class_net), _query({"red": "kvnet"}))  # the malformed record is not read
    assert set(read) == {hashed_pod_iface("red"), naming.tap_name(hashed_pod_iface("red"))}
    (pod.sys_class_net / hashed_pod_iface("red") / "ifalias").write_text(BAD_RECORD + "\n")
    with pytest.raises(DecodeFailure, match=f"link {hashed_pod_iface('red')} in the pod netns: malformed kvnet"):
        read_pod_links(str(pod.sys_class_net), _query({"red": "kvnet"}))
    with pytest.raises(DecodeFailure):
        read_pod_links(str(pod.sys_class_net))  # reading them all reads it too


def test_the_record_is_looked_for_where_the_translation_looks(tmp_path: Path) -> None:
    """A pod link without a record: its bridge and tap are read, in the translation's order."""
    root = tmp_path / "scn"
    root.mkdir()
    red = hashed_pod_iface("red")
    write_link(root, red, mac="02:00:00:00:00:01", master=naming.bridge_name(red))
    record = bindrecord.encode(BindingRecord("0a:58:0a:01:00:05", 1450))
    write_link(root, naming.bridge_name(red), mac="02:00:00:00:00:02", devtype="bridge", ifalias=record)
    write_link(root, naming.tap_name(red), mac="02:00:00:00:00:03", tun_flags="0x5802", ifalias=BAD_RECORD)
    with pytest.raises(DecodeFailure):  # the tap is always read, as the translation always looks at it
        read_pod_links(str(root), _query({"red": "kvnet"}))
    (root / naming.tap_name(red) / "ifalias").write_text("\n")
    read = read_pod_links(str(root), _query({"red": "kvnet"}))
    assert set(read) == {red, naming.tap_name(red), naming.bridge_name(red)}
    assert read[naming.bridge_name(red)].record == BindingRecord("0a:58:0a:01:00:05", 1450)


def test_a_missing_folder_has_no_links(tmp_path: Path) -> None:
    assert read_pod_links(str(tmp_path / "nothing")) == {}
    assert read_pod_links(str(tmp_path / "nothing"), _query({"red": "kvnet"})) == {}


def test_each_call_reads_the_pod_afresh(tmp_path: Path) -> None:
    """Nothing is kept between calls: a changed pod gives a changed domain."""
    pod = _pod(tmp_path, ("red",))
    hooks = _hooks(pod)
    vmi = json.dumps(make_vmi({"red": "kvnet"})).encode()
    first = hooks.on_define_domain(KUBEVIRT_DOMAIN.encode(), vmi)
    record = bindrecord.encode(BindingRecord(original_mac="02:00:00:00:00:0a", mtu=9000))
    (pod.sys_class_net / hashed_pod_iface("red") / "ifalias").write_text(
        record + "\n"
    )  # the binding re-run with jumbo frames
    second = hooks.on_define_domain(KUBEVIRT_DOMAIN.encode(), vmi)
    assert b'<mtu size="1500" />' in first and b'<mtu size="9000" />' in second


@pytest.mark.parametrize("ordinal", [False, True])
def test_ordinal_check_reads_no_link(tmp_path: Path, ordinal: bool) -> None:
    root = tmp_path / "scn"
    root.mkdir()
    for name in ("eth0", "pod16477688c0e", "tap16477688c0e", "k6t-16477688c0e"):
        write_link(root, name, mac="02:00:00:00:00:01", ifalias=BAD_RECORD)  # any read would raise
    if ordinal:
        write_link(root, "net1", mac="02:00:00:00:00:02")
    # "green" is plumbed nowhere (pod<hash> and net2 are absent): only the naming scheme is read
    read = read_pod_links(str(root), _query({"blue": None, "green": "kvnet"}))
    assert read == ({"net1": PodLink("net1", "02:00:00:00:00:02", 1500)} if ordinal else {})
    assert naming.uses_ordinal_names(read) is ordinal


def test_ordinal_check_ignores_a_net_folder_that_is_not_a_link(tmp_path: Path) -> None:
    root = tmp_path / "scn"
    root.mkdir()
    write_link(root, "eth0", mac="02:00:00:00:00:01")
    (root / "net1").mkdir()  # vanished while listed
    read = read_pod_links(str(root), _query({"green": "kvnet"}))
    assert naming.uses_ordinal_names(read) is naming.uses_ordinal_names(read_pod_links(str(root))) is False


_PLUMBINGS = [
    ("red", lambda pod: BridgedTap(pod, BindingRecord("0a:58:0a:01:00:05", 1450))),
    ("blue", lambda pod: RedirectedTap(pod, BindingRecord("0a:58:0a:01:00:06", 1500))),
    ("pink", lambda pod: Macvtap(pod, "66:00:00:00:00:09", 1500)),
    ("green", None),  # not plumbed: no pod link, no tap
]


@given(
    st.lists(st.sampled_from(range(len(_PLUMBINGS))), unique=True, max_size=4),
    st.lists(st.sampled_from(range(len(_PLUMBINGS))), unique=True, max_size=4),
    st.booleans(),
)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_the_query_read_translates_as_every_link_does(
    tmp_path: Path, plumbed: list[int], bound: list[int], ordinal: bool
) -> None:
    """Whatever the pod and whichever interfaces are kvnet's, the translation over the links
    read up front gives what it gives over every link of the pod (the same plan, or the same error)."""
    root = Path(tempfile.mkdtemp(dir=tmp_path))
    write_link(root, "eth0", mac="0a:58:0a:f4:00:0c")
    networks = [name for name, _ in _PLUMBINGS]
    for i in plumbed:
        name, plumbing = _PLUMBINGS[i]
        pod = naming.ordinal_pod_iface(networks.index(name) + 1) if ordinal else hashed_pod_iface(name)
        if plumbing is not None:
            write_plumbing(root, plumbing(pod))
    if ordinal and not plumbed:
        write_link(root, "net9", mac="02:00:00:00:00:09")
    vmi = parse_vmi(make_vmi({name: ("kvnet" if i in bound else "other") for i, (name, _) in enumerate(_PLUMBINGS)}))

    def outcome(links: Any) -> Any:
        try:
            return pipeline.define_domain(KUBEVIRT_DOMAIN, vmi, PodFacts(links=links))
        except KvnetError as err:
            return type(err), err.msg

    assert outcome(read_pod_links(str(root), pod_link_query(vmi))) == outcome(read_pod_links(str(root)))


def test_malformed_record_of_an_attachment_is_still_failed_precondition(tmp_path: Path) -> None:
    pod = _pod(tmp_path, ("red",))
    pod_link = hashed_pod_iface("red")
    (pod.sys_class_net / pod_link / "ifalias").write_text(BAD_RECORD + "\n")
    with pytest.raises(PodFactsUnavailable) as exc:
        _hooks(pod).on_define_domain(KUBEVIRT_DOMAIN.encode(), json.dumps(make_vmi({"red": "kvnet"})).encode())
    assert exc.value.msg.startswith(
        f"interfaces red: cannot read the pod links in {pod.sys_class_net}: link {pod_link} in the pod netns: "
        "malformed kvnet binding record"
    )
    assert status_for(exc.value) is grpc.StatusCode.FAILED_PRECONDITION


def test_malformed_record_on_a_link_no_attachment_uses_is_not_read(tmp_path: Path) -> None:
    pod = _pod(tmp_path, ("red",))
    write_link(pod.sys_class_net, "podfffffffffff", mac="02:00:00:00:00:77", ifalias=BAD_RECORD)
    out = _hooks(pod).on_define_domain(KUBEVIRT_DOMAIN.encode(), json.dumps(make_vmi({"red": "kvnet"})).encode())
    assert out.count(b'<alias name="ua-red" />') == 1


def test_model_given_as_a_list_is_a_translation_error(tmp_path: Path) -> None:
    pod = _pod(tmp_path, ("red",))
    vmi = make_vmi({"red": "kvnet"})
    vmi["spec"]["domain"]["devices"]["interfaces"][1]["model"] = ["virtio"]
    with pytest.raises(TranslationError) as exc:
        _hooks(pod).on_define_domain(KUBEVIRT_DOMAIN.encode(), json.dumps(vmi).encode())
    assert exc.value.msg.startswith("interface 'red': model ['virtio'] is not a NIC model libvirt knows (")
    assert status_for(exc.value) is grpc.StatusCode.INVALID_ARGUMENT


# --- writing the devices without ET.tostring -----------------------------------------------


def _reference(elem: ET.Element, unit: str, indent: str) -> bytes:
    """What the splice wrote before: ElementTree's indent and serialisation, on a copy."""
    c = copy.deepcopy(elem)
    ET.indent(c, space=unit)
    return ET.tostring(c, encoding="unicode").replace("\n", "\n" + indent).encode()


_xml_text = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")) | st.sampled_from("\t\n\r &<>\"'"), max_size=12
)
_names = st.sampled_from(["interface", "target", "model", "mac", "address", "source", "alias", "x-y", "a.b"])


@st.composite
def _elements(draw: Any, depth: int = 0) -> ET.Element:
    elem = ET.Element(draw(_names), {k: draw(_xml_text) for k in draw(st.lists(_names, max_size=3, unique=True))})
    elem.text = draw(st.none() | st.sampled_from(["", "  ", "\n\t"]) | _xml_text)
    elem.tail = draw(st.none() | st.sampled_from(["", " ", "\n  "]) | _xml_text)
    if depth < 3:
        elem.extend(draw(st.lists(_elements(depth + 1), max_size=3)))
    return elem


@given(_elements(), st.sampled_from(["\t", "  ", ""]), st.sampled_from(["\t\t", "    ", ""]))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_device_text_is_what_elementtree_writes(elem: ET.Element, unit: str, indent: str) -> None:
    before = ET.tostring(elem)
    assert splice._device_text(elem, unit, indent) == _reference(elem, unit, indent)
    assert ET.tostring(elem) == before  # the caller's element is untouched


def test_device_text_leaves_namespaces_and_comments_to_elementtree() -> None:
    elem = ET.fromstring('<interface xmlns:q="urn:q"><q:x q:a="1"/></interface>')
    elem.append(ET.Comment(" note "))
    assert splice._device_text(elem, "\t", "\t\t") == _reference(elem, "\t", "\t\t")


# --- each input parsed once, the translation on plain values --------------------------------


class _Keeping(PipelineTranslator):
    """The real pipeline, keeping what it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.given: list[Any] = []

    def define_domain(self, domain: Any, vmi: Any, facts: PodFacts, *, binding_name: str) -> str:
        self.given.append((domain, vmi, facts))
        return super().define_domain(domain, vmi, facts, binding_name=binding_name)


def test_the_translation_gets_values_read_and_parsed_up_front(tmp_path: Path, monkeypatch: Any) -> None:
    from kvnet.domain.splice import DomainXml
    from kvnet.domain.vmi import Vmi

    pod = _pod(tmp_path)
    parses: list[tuple[bytes, bool]] = []
    real = splice._Parse.__init__

    def counting(self: Any, data: bytes, *, layout: bool = True) -> None:
        parses.append((data, layout))
        real(self, data, layout=layout)

    monkeypatch.setattr(splice._Parse, "__init__", counting)
    translator = _Keeping()
    hooks = KvnetHooks("kvnet", _hooks(pod).facts, translator)
    out = hooks.on_define_domain(KUBEVIRT_DOMAIN.encode(), json.dumps(make_vmi({"red": "kvnet"})).encode())
    # the domain virt-launcher sent, once; the domain kvnet built, only checked before it leaves
    assert parses == [(KUBEVIRT_DOMAIN.encode(), True), (out, False)]
    [(domain, vmi, facts)] = translator.given
    assert isinstance(domain, DomainXml) and isinstance(vmi, Vmi)
    red = hashed_pod_iface("red")
    assert type(facts.links) is dict and set(facts.links) == {red, naming.tap_name(red)}
    assert type(facts.network_info) is dict
