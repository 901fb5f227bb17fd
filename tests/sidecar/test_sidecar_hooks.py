"""The hook layer without gRPC: input checks (table + hypothesis), the network-info poll
with a fake clock, and the legacy cloud-init answer.

No client: ``KvnetHooks`` is called directly, on KubeVirt's converter domain
(``KUBEVIRT_DOMAIN``) and on inputs KubeVirt would never send."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pod_inputs import KUBEVIRT_DOMAIN, PodFiles, make_vmi

from kvnet.core.errors import KvnetError, RenderError
from kvnet.core.model import PodFacts
from kvnet.domain.splice import DomainXml
from kvnet.domain.vmi import BONDS_ANNOTATION
from kvnet.lab.fakes import FakeClock
from kvnet.sidecar.hooks import (
    BadHookInput,
    KvnetHooks,
    PodFactsReader,
    PodFactsUnavailable,
    bound_interfaces,
    check_domain,
    legacy_no_cloud_source,
    no_cloud_source,
    parse_cloud_init_data,
    parse_vmi,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "spec",
                    "domain",
                    "devices",
                    "interfaces",
                    "name",
                    "binding",
                    "metadata",
                    "annotations",
                    "kvnet.io/bonds",
                    "namespace",
                    "x",
                ]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@given(json_values)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_parse_vmi_accepts_or_names_the_problem(value: Any) -> None:
    try:
        vmi = parse_vmi(json.dumps(value).encode())
    except BadHookInput as err:
        assert err.msg.startswith("VMI ")
    else:
        bound_interfaces(vmi, "kvnet")  # whatever parse_vmi accepts, the interface scan can read


@given(st.binary(max_size=64))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_garbage_bytes_are_bad_input(data: bytes) -> None:
    for call in (parse_vmi, check_domain, parse_cloud_init_data):
        try:
            call(data)
        except BadHookInput:
            pass


class _Recorder:
    """A translator that records what it was asked; it adds nothing."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def define_domain(self, domain: DomainXml, vmi: Any, facts: PodFacts, *, binding_name: str) -> str:
        self.calls.append(binding_name)
        return domain.text

    def cloud_init_network_data(
        self, vmi: Any, facts: PodFacts, *, user_network_data: str | None, binding_name: str
    ) -> str | None:
        self.calls.append(f"ci:{user_network_data}")
        return (user_network_data or "") + "# kvnet\n"


class _NoFacts:
    def __init__(self) -> None:
        self.reads = 0

    def read(self, interfaces: Any, query: Any = None) -> PodFacts:
        self.reads += 1
        return PodFacts()


@given(json_values)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_on_define_domain_only_raises_kvnet_errors(value: Any) -> None:
    facts = _NoFacts()
    hooks = KvnetHooks("kvnet", facts, _Recorder())
    try:
        out = hooks.on_define_domain(KUBEVIRT_DOMAIN.encode(), json.dumps(value).encode())
    except KvnetError:
        return
    if not bound_interfaces(parse_vmi(json.dumps(value)), "kvnet"):
        assert out == KUBEVIRT_DOMAIN.encode() and facts.reads == 0  # untouched, nothing read
    try:
        hooks.pre_cloud_init_iso(json.dumps(value).encode(), b'{"UserData": "x"}', b"")
    except KvnetError:
        pass


def test_bound_interfaces_by_binding_name() -> None:
    vmi = make_vmi({"red": "kvnet", "blue": "kvnet-b", "green": None, "pink": "kvnet"})
    assert bound_interfaces(vmi, "kvnet") == ["red", "pink"]
    assert bound_interfaces(vmi, "kvnet-b") == ["blue"]
    assert bound_interfaces(vmi, "passt") == []


def test_no_facts_read_without_kvnet_interfaces() -> None:
    facts, translator = _NoFacts(), _Recorder()
    hooks = KvnetHooks("kvnet", facts, translator)
    vmi = json.dumps(make_vmi({"red": None})).encode()
    assert hooks.on_define_domain(KUBEVIRT_DOMAIN.encode(), vmi) == KUBEVIRT_DOMAIN.encode()
    res = hooks.pre_cloud_init_iso(vmi, b'{"UserData": "u", "NetworkData": "n"}', b'{"userData": "u"}')
    assert (res.cloud_init_data, res.no_cloud_source) == (
        b'{"UserData": "u", "NetworkData": "n"}',
        b'{"userData": "u"}',
    )
    assert (facts.reads, translator.calls) == (0, [])


def test_bonds_annotation_alone_asks_for_network_data() -> None:
    facts, translator = _NoFacts(), _Recorder()
    hooks = KvnetHooks("kvnet", facts, translator)
    vmi = json.dumps(make_vmi({"sr1": None}, annotations={"kvnet.io/bonds": "[]x"})).encode()
    res = hooks.pre_cloud_init_iso(vmi, json.dumps({"UserData": "u", "NetworkData": "mine\n"}).encode(), b"")
    assert json.loads(res.cloud_init_data)["NetworkData"] == "mine\n# kvnet\n"
    assert translator.calls == ["ci:mine\n"]


class _BrokenFacts:
    def read(self, interfaces: Any, query: Any = None) -> PodFacts:
        raise ValueError("boom")


class _BrokenNetworkData(_Recorder):
    def cloud_init_network_data(
        self, vmi: Any, facts: PodFacts, *, user_network_data: str | None, binding_name: str
    ) -> str | None:
        raise KeyError("boom")


def test_unexpected_errors_name_the_interfaces() -> None:
    """Not a kvnet error, from the facts reader or the translator: a RenderError naming the interfaces."""
    vmi = json.dumps(make_vmi({"blue": "kvnet", "red": "kvnet", "green": None})).encode()
    with pytest.raises(RenderError) as exc:
        KvnetHooks("kvnet", _BrokenFacts(), _Recorder()).on_define_domain(KUBEVIRT_DOMAIN.encode(), vmi)
    assert exc.value.msg == "interfaces blue, red: unexpected ValueError: boom"
    with pytest.raises(RenderError) as exc:
        KvnetHooks("kvnet", _NoFacts(), _BrokenNetworkData()).pre_cloud_init_iso(vmi, b'{"UserData": "u"}', b"")
    assert exc.value.msg == "interfaces blue, red: unexpected KeyError: 'boom'"
    bonds_only = json.dumps(make_vmi({"sr1": None}, annotations={BONDS_ANNOTATION: "[]"})).encode()
    with pytest.raises(RenderError) as exc:
        KvnetHooks("kvnet", _BrokenFacts(), _Recorder()).pre_cloud_init_iso(bonds_only, b'{"UserData": "u"}', b"")
    assert exc.value.msg == "interfaces (bonds only): unexpected ValueError: boom"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"UserData": "u", "NetworkData": "n", "DataSource": "noCloud"}, {"userData": "u", "networkData": "n"}),
        ({"UserData": "u", "NetworkData": ""}, {"userData": "u"}),
        ({}, {}),
    ],
)
def test_no_cloud_source_sent_beside_cloud_init_data(data: dict[str, str], expected: dict[str, str]) -> None:
    """One mapping for the shim and the virt-launcher-like client (kvnet.lab.launcher)."""
    assert json.loads(no_cloud_source(data)) == expected


@pytest.mark.parametrize(
    ("legacy", "data", "expected"),
    [
        (b"", {"UserData": "u", "NetworkData": "n"}, {"userData": "u", "networkData": "n"}),
        (
            b'{"userData": "old", "networkDataBase64": "eA=="}',
            {"UserData": "u", "NetworkData": "n"},
            {"userData": "u", "networkData": "n"},
        ),
        (
            b'{"userDataBase64": "dQ=="}',
            {"UserData": "", "NetworkData": "n"},
            {"userDataBase64": "dQ==", "networkData": "n"},
        ),
        (b"not json", {"NetworkData": "n"}, {"networkData": "n"}),
    ],
)
def test_legacy_answer(legacy: bytes, data: dict[str, str], expected: dict[str, str]) -> None:
    assert json.loads(legacy_no_cloud_source(legacy, data)) == expected


# --------------------------------------------------------------------------------------
# the bounded poll, on a fake clock


def reader(pod: PodFiles, clock: FakeClock, timeout: float = 3.0) -> PodFactsReader:
    return PodFactsReader(
        str(pod.network_info),
        str(pod.sys_class_net),
        read_links=lambda root: {},
        parse_network_info=lambda text: {},
        timeout=timeout,
        interval=0.5,
        clock=clock,
        sleep=clock.sleep,
    )


def test_poll_waits_for_content(pod: PodFiles) -> None:
    clock = FakeClock(on_sleep=lambda n: n == 3 and pod.network_info.write_text('{"interfaces": []}'))
    reader(pod, clock).read(["red"])
    assert clock.sleeps == 3


def test_poll_gives_up_at_the_bound(pod: PodFiles) -> None:
    clock = FakeClock()
    with pytest.raises(PodFactsUnavailable) as exc:
        reader(pod, clock, timeout=3.0).read(["red", "blue"])
    assert clock.now == pytest.approx(3.0)
    assert exc.value.msg == (
        f"interfaces red, blue: network-info {pod.network_info} still empty after 3 s "
        "(is the binding registered with downwardAPI: device-info?)"
    )


def test_unreadable_network_info(pod: PodFiles) -> None:
    pod.network_info.unlink()
    pod.network_info.mkdir()  # a folder where the file should be
    with pytest.raises(PodFactsUnavailable) as exc:
        reader(pod, FakeClock()).read(["red"])
    assert exc.value.msg.startswith(f"interfaces red: cannot read network-info {pod.network_info}: ")


def test_unreadable_links(pod: PodFiles, tmp_path: Path) -> None:
    pod.network_info.write_text('{"interfaces": []}')

    def broken(root: str) -> Any:
        raise PermissionError(13, "Permission denied", root)

    r = PodFactsReader(str(pod.network_info), "/nowhere", read_links=broken, parse_network_info=lambda t: {})
    with pytest.raises(PodFactsUnavailable) as exc:
        r.read(["red"])
    assert (
        exc.value.msg
        == "interfaces red: cannot read the pod links in /nowhere: [Errno 13] Permission denied: '/nowhere'"
    )
