"""The Multus annotations: every form, every key, every error message Multus prints."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvnet.core import gojson
from kvnet.core.errors import InvalidAnnotation
from kvnet.core.model import DeviceInfo, NetworkSelection, NetworkStatus
from kvnet.meta import selections
from kvnet.meta import status as network_status

P = "parsePodNetworkAnnotation: "
OBJ = P + "parsePodNetworkObjectName: "
JS = P + "failed to parse pod Network Attachment Selection Annotation JSON format: "
DNS_MSG = (
    OBJ + "Failed to parse: one or more items did not match comma-delimited format (must consist of lower case "
    "alphanumeric characters). Must start and end with an alphanumeric character), mismatch @ '{}'"
)
IFNAME_MSG = (
    OBJ + "Failed to parse interface name: must be less than 15 chars and not contain '/' or spaces. "
    "interface name '{}'"
)


def sel(name: str, namespace: str = "pods", **kw: Any) -> NetworkSelection:
    return NetworkSelection(name=name, namespace=namespace, **kw)


# --- short form ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("blue", (sel("blue"),)),
        ("other/blue", (sel("blue", "other"),)),
        ("blue@eth5", (sel("blue", interface="eth5"),)),
        ("other/blue@eth5", (sel("blue", "other", interface="eth5"),)),
        ("a@foo,b", (sel("a", interface="foo"), sel("b"))),
        ("  a ,  other / b @ x1 ", (sel("a"), sel("b", "other", interface="x1"))),
        ("a,a", (sel("a"), sel("a"))),
        ("net-1.x" if False else "net-1", (sel("net-1"),)),
        ("b@abcdefghijklmno", (sel("b", interface="abcdefghijklmno"),)),  # exactly 15
        ("0a/9z", (sel("9z", "0a"),)),
    ],
)
def test_short_form(value: str, expected: tuple[NetworkSelection, ...]) -> None:
    assert selections.parse_networks(value, "pods") == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", P + 'pod annotation does not have "network" as key'),
        ("a/b/c", OBJ + "Invalid network object (failed at '/')"),
        ("a@b@c", OBJ + "Invalid network object (failed at '@')"),
        ("Blue", DNS_MSG.format("Blue")),
        ("ns_1/blue", DNS_MSG.format("ns_1")),
        ("-blue", DNS_MSG.format("-blue")),
        ("blue-", DNS_MSG.format("blue-")),
        ("blue.x", DNS_MSG.format("blue.x")),
        ("b@abcdefghijklmnop", IFNAME_MSG.format("abcdefghijklmnop")),
        ("b@" + "é" * 8, IFNAME_MSG.format("é" * 8)),  # 16 bytes: Go counts bytes
        ("b@a\tb", IFNAME_MSG.format("a\tb")),
        ("b@a:b", OBJ + "Failed to parse interface name: interface name 'a:b' contains / or : or whitespace"),
        ("b@..", OBJ + "Failed to parse interface name: interface name '..' is . or .."),
        ("a,,b", OBJ + "Failed to parse: empty network name in ''"),
        ("a,", OBJ + "Failed to parse: empty network name in ''"),
        ("ns/", OBJ + "Failed to parse: empty network name in 'ns/'"),
        ("  ", OBJ + "Failed to parse: empty network name in ''"),
    ],
)
def test_short_form_errors(value: str, message: str) -> None:
    with pytest.raises(InvalidAnnotation) as info:
        selections.parse_networks(value, "pods")
    assert info.value.msg == message
    assert info.value.cni_code == 7
    assert info.value.to_cni("1.0.0") == {"cniVersion": "1.0.0", "code": 7, "msg": message}


# --- JSON form -------------------------------------------------------------------------

FULL = {
    "name": "sriov-net",
    "namespace": "infra",
    "ips": ["10.1.0.5/24", "fd00::5"],
    "mac": "02:00:00:00:00:05",
    "infiniband-guid": "c2:11:22:33:44:55:66:77",
    "interface": "data0",
    "portMappings": [
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 53, "containerPort": 53, "hostIP": "10.0.0.1"},
    ],
    "bandwidth": {"ingressRate": 1000, "ingressBurst": 2000, "egressRate": 3000, "egressBurst": 4000},
    "deviceID": "0000:03:00.2",
    "cni-args": {"logicNetworkName": "blue", "n": 1},
    "default-route": ["10.1.0.1"],
}


def test_json_every_key() -> None:
    got = selections.parse_networks(json.dumps([FULL]), "pods")
    assert got == (
        NetworkSelection(
            name="sriov-net",
            namespace="infra",
            interface="data0",
            ips=("10.1.0.5/24", "fd00::5"),
            mac="02:00:00:00:00:05",
            infiniband_guid="c2:11:22:33:44:55:66:77",
            port_mappings=(
                {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
                {"hostPort": 53, "containerPort": 53, "hostIP": "10.0.0.1"},
            ),
            bandwidth={"ingressRate": 1000, "ingressBurst": 2000, "egressRate": 3000, "egressBurst": 4000},
            device_id="0000:03:00.2",
            cni_args={"logicNetworkName": "blue", "n": 1},
            default_route=("10.1.0.1",),
        ),
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('[{"name":"a"}]', (sel("a"),)),
        ('  [ {"name" : "a" , "namespace": "x"} , {"name":"b"} ]  ', (sel("a", "x"), sel("b"))),
        ("[]", ()),
        ("null", (sel("null"),)),  # no [ { or ": the short form, as in Multus
        ('[{"NAME":"a","Interface":"e1"}]', (sel("a", interface="e1"),)),  # Go matches keys ignoring case
        ('[{"name":"a","unknown":{"x":1}}]', (sel("a"),)),
        ('[{"name":"a","interfaceRequest":"old0"}]', (sel("a", interface="old0"),)),
        ('[{"name":"a","mac":"02-00-00-00-00-01"}]', (sel("a", mac="02-00-00-00-00-01"),)),
        ('[{"name":"a","ips":["10.0.0.1"]}]', (sel("a", ips=("10.0.0.1",)),)),
        ('[{"name":"a","default-route":["fd00::0001"]}]', (sel("a", default_route=("fd00::1",)),)),
        (
            '[{"name":"a","bandwidth":{"ingressRate":5}}]',
            (sel("a", bandwidth={"ingressRate": 5, "ingressBurst": 0, "egressRate": 0, "egressBurst": 0}),),
        ),
        (
            '[{"name":"a","bandwidth":{"egressRate":9223372036854775807}}]',
            (sel("a", bandwidth={"ingressRate": 0, "ingressBurst": 0, "egressRate": 2**63 - 1, "egressBurst": 0}),),
        ),
        ('[{"name":"a","cni-args":null}]', (sel("a"),)),
        ('[{"name":"net.example.com"}]', (sel("net.example.com"),)),
    ],
)
def test_json_form(value: str, expected: tuple[NetworkSelection, ...]) -> None:
    assert selections.parse_networks(value, "pods") == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[{", JS + "unexpected end of JSON input"),
        ('[{"name":"a"},]', JS + "invalid character ']' at offset 15: Expecting value"),
        ('{"name":"a"}', JS + "json: cannot unmarshal object into Go value of type []*types.NetworkSelectionElement"),
        ('"a"', JS + "json: cannot unmarshal string into Go value of type []*types.NetworkSelectionElement"),
        ('["a"]', JS + "json: cannot unmarshal string into Go value of type types.NetworkSelectionElement"),
        ("[null]", JS + "element 0 is null"),
        (
            '[{"name":1}]',
            JS + "json: cannot unmarshal number into Go struct field NetworkSelectionElement.name of type string",
        ),
        (
            '[{"name":"a","ips":"10.0.0.1"}]',
            JS + "json: cannot unmarshal string into Go struct field NetworkSelectionElement.ips of type []string",
        ),
        (
            '[{"name":"a","ips":[1]}]',
            JS + "json: cannot unmarshal number into Go struct field NetworkSelectionElement.ips of type string",
        ),
        (
            '[{"name":"a","interface":true}]',
            JS + "json: cannot unmarshal bool into Go struct field NetworkSelectionElement.interface of type string",
        ),
        (
            '[{"name":"a","portMappings":{}}]',
            JS
            + "json: cannot unmarshal object into Go struct field NetworkSelectionElement.portMappings of type []*types.PortMapEntry",
        ),
        (
            '[{"name":"a","portMappings":[{"hostPort":"80"}]}]',
            JS
            + "json: cannot unmarshal string into Go struct field NetworkSelectionElement.portMappings.hostPort of type int",
        ),
        (
            '[{"name":"a","bandwidth":{"egressRate":1.5}}]',
            JS
            + "json: cannot unmarshal number 1.5 into Go struct field NetworkSelectionElement.bandwidth.egressRate of type int",
        ),
        (
            '[{"name":"a","portMappings":[{"hostPort":1.0}]}]',
            JS
            + "json: cannot unmarshal number 1.0 into Go struct field NetworkSelectionElement.portMappings.hostPort of type int",
        ),
        (
            '[{"name":"a","bandwidth":{"ingressRate":1e3}}]',
            JS
            + "json: cannot unmarshal number 1e3 into Go struct field NetworkSelectionElement.bandwidth.ingressRate of type int",
        ),
        (
            '[{"name":"a","bandwidth":{"ingressRate":9223372036854775808}}]',
            JS
            + "json: cannot unmarshal number 9223372036854775808 into Go struct field NetworkSelectionElement.bandwidth.ingressRate of type int",
        ),
        (
            '[{"name":"a","cni-args":[1]}]',
            JS
            + "json: cannot unmarshal array into Go struct field NetworkSelectionElement.cni-args of type map[string]interface {}",
        ),
        ('[{"name":"a","default-route":["10.0.0.300"]}]', JS + "invalid IP address: 10.0.0.300"),
        (
            '[{"name":"a","default-route":"10.0.0.1"}]',
            JS
            + "json: cannot unmarshal string into Go struct field NetworkSelectionElement.default-route of type []net.IP",
        ),
        ('[{"name":"a","mac":"02:00:00:00:00"}]', P + "failed to mac: address 02:00:00:00:00: invalid MAC address"),
        (
            '[{"name":"a","mac":"zz:00:00:00:00:01"}]',
            P + "failed to mac: address zz:00:00:00:00:01: invalid MAC address",
        ),
        (
            '[{"name":"a","infiniband-guid":"nope"}]',
            P + "failed to validate infiniband GUID: address nope: invalid MAC address",
        ),
        (
            '[{"name":"a","ips":["10.0.0.1/33"]}]',
            'failed to parse CIDR "10.0.0.1/33": invalid CIDR address: 10.0.0.1/33',
        ),
        (
            '[{"name":"a","ips":["10.0.0.1/255.255.255.0"]}]',
            'failed to parse CIDR "10.0.0.1/255.255.255.0": invalid CIDR address: 10.0.0.1/255.255.255.0',
        ),
        ('[{"name":"a","ips":["10.0.0.01"]}]', 'failed to parse IP address "10.0.0.01"'),
        ('[{"name":"a","ips":["fe80::1%eth0"]}]', 'failed to parse IP address "fe80::1%eth0"'),
        ('[{"namespace":"x"}]', P + "element 0 has no network name"),
        (
            '[{"name":"a"},{"name":"../../etc"}]',
            P
            + "element 1: network name '../../etc' is not a valid object name (lower case alphanumeric characters, '-' or '.', starting and ending with an alphanumeric character)",
        ),
        (
            '[{"name":"a","namespace":"A"}]',
            P
            + "element 0: namespace 'A' is not a valid namespace name (lower case alphanumeric characters or '-', starting and ending with an alphanumeric character)",
        ),
        (
            '[{"name":"a","interface":"abcdefghijklmnop"}]',
            P + "element 0: interface name 'abcdefghijklmnop' is longer than 15 characters",
        ),
        ('[{"name":"a","interface":"a/b"}]', P + "element 0: interface name 'a/b' contains / or : or whitespace"),
    ],
)
def test_json_form_errors(value: str, message: str) -> None:
    with pytest.raises(InvalidAnnotation) as info:
        selections.parse_networks(value, "pods")
    assert info.value.msg == message
    assert info.value.cni_code == 7


def test_json_detection_by_quote_only() -> None:
    # a double quote alone switches to JSON, as in Multus (strings.ContainsAny "[{\"")
    with pytest.raises(InvalidAnnotation, match="JSON format"):
        selections.parse_networks('"blue"x', "pods")


# --- default-network ---------------------------------------------------------------------


def test_default_network() -> None:
    assert selections.parse_default_network("calico", "kube-system") == sel("calico", "kube-system")
    assert selections.parse_default_network('[{"name":"c","namespace":"n"}]', "kube-system") == sel("c", "n")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("a,b", "tryLoadK8sPodDefaultNetwork: more than one default network is specified: a,b"),
        ("[]", "tryLoadK8sPodDefaultNetwork: no default network is specified: []"),
        ("A", "tryLoadK8sPodDefaultNetwork: failed to parse CRD object: " + DNS_MSG.format("A")),
    ],
)
def test_default_network_errors(value: str, message: str) -> None:
    with pytest.raises(InvalidAnnotation) as info:
        selections.parse_default_network(value, "kube-system")
    assert info.value.msg == message


# --- round trips (hypothesis) ------------------------------------------------------------

label = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?\Z")
ifname = st.from_regex(r"\A[a-zA-Z0-9_-]{1,15}\Z")
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(gojson.go_ip_string)  # Go prints IPv4-mapped addresses as IPv4
mac = st.binary(min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02x}" for x in b))
guid = st.binary(min_size=8, max_size=8).map(lambda b: ":".join(f"{x:02x}" for x in b))
small_int = st.integers(min_value=0, max_value=2**31)
port = st.fixed_dictionaries(
    {"hostPort": small_int, "containerPort": small_int},
    optional={"protocol": st.sampled_from(["tcp", "udp", "sctp"]), "hostIP": ipv4},
)
bandwidth = st.fixed_dictionaries({k: small_int for k in ("ingressRate", "ingressBurst", "egressRate", "egressBurst")})
json_scalar = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=8)
cni_args = st.dictionaries(st.text(min_size=1, max_size=8), json_scalar | st.lists(json_scalar, max_size=3), max_size=3)

short_selection = st.builds(NetworkSelection, name=label, namespace=label, interface=st.none() | ifname)
full_selection = st.builds(
    NetworkSelection,
    name=label,
    namespace=label,
    interface=st.none() | ifname,
    ips=st.lists(ipv4 | ipv6 | st.tuples(ipv4, st.integers(0, 32)).map(lambda t: f"{t[0]}/{t[1]}"), max_size=3).map(
        tuple
    ),
    mac=st.none() | mac,
    infiniband_guid=st.none() | guid,
    port_mappings=st.lists(port, max_size=2).map(tuple),
    bandwidth=st.none() | bandwidth,
    device_id=st.none() | st.from_regex(r"\A0000:0[0-9]:00\.[0-7]\Z"),
    cni_args=st.none() | cni_args,
    default_route=st.lists(ipv4 | ipv6, max_size=2).map(tuple),
)


@settings(max_examples=100, deadline=None)
@given(st.lists(full_selection, min_size=1, max_size=4))
def test_json_round_trip(picked: list[NetworkSelection]) -> None:
    text = selections.format_networks_json(picked)
    assert selections.parse_networks(text, "elsewhere") == tuple(picked)


@settings(max_examples=100, deadline=None)
@given(st.lists(short_selection, min_size=1, max_size=5), st.sampled_from([",", ", ", " , "]))
def test_short_round_trip(picked: list[NetworkSelection], sep: str) -> None:
    text = selections.format_networks_short(picked).replace(",", sep)
    assert selections.parse_networks(text, "elsewhere") == tuple(picked)


@settings(max_examples=100, deadline=None)
@given(st.lists(short_selection, min_size=1, max_size=5))
def test_short_and_json_agree(picked: list[NetworkSelection]) -> None:
    assert selections.parse_networks(selections.format_networks_short(picked), "x") == selections.parse_networks(
        selections.format_networks_json(picked), "x"
    )


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=40))
def test_parser_never_crashes(value: str) -> None:
    try:
        selections.parse_networks(value, "pods")
    except InvalidAnnotation as err:
        assert err.cni_code == 7 and err.msg


def test_short_form_needs_json_for_other_keys() -> None:
    with pytest.raises(InvalidAnnotation, match="need the JSON form"):
        selections.format_networks_short([sel("a", mac="02:00:00:00:00:01")])


# --- network-status ------------------------------------------------------------------------

BRIDGE_RESULT = {
    "cniVersion": "1.0.0",
    "interfaces": [
        {"name": "br1", "mac": "aa:aa:aa:aa:aa:01"},
        {"name": "veth1234", "mac": "aa:aa:aa:aa:aa:02"},
        {"name": "net1", "mac": "02:11:22:33:44:55", "sandbox": "/var/run/netns/pod"},
    ],
    "ips": [{"address": "10.10.0.5/24", "gateway": "10.10.0.1", "interface": 2}],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.10.0.1"}, {"dst": "10.20.0.0/16", "gw": "10.10.0.2"}],
    "dns": {},
}

BRIDGE_STATUS_TEXT = """[{
    "name": "pods/bridge-net",
    "interface": "net1",
    "ips": [
        "10.10.0.5"
    ],
    "mac": "02:11:22:33:44:55",
    "dns": {},
    "gateway": [
        "10.10.0.1"
    ]
}]"""


def test_status_from_bridge_result_matches_multus_bytes() -> None:
    statuses = network_status.status_from_result("pods/bridge-net", BRIDGE_RESULT, default=False)
    assert statuses == (
        NetworkStatus(
            name="pods/bridge-net",
            interface="net1",
            ips=("10.10.0.5",),
            mac="02:11:22:33:44:55",
            gateway=("10.10.0.1",),
        ),
    )
    assert network_status.format_network_status(statuses) == BRIDGE_STATUS_TEXT


def test_status_single_interface_takes_every_ip_and_mtu() -> None:
    result = {
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "eth0", "mac": "02:00:00:00:00:01", "mtu": 1400, "sandbox": "/proc/1/ns/net"}],
        "ips": [{"address": "10.0.0.2/24", "gateway": "10.0.0.1"}, {"address": "fd00::0002/64", "interface": 0}],
        "routes": [{"dst": "::/0", "gw": "fd00::1"}],
        "dns": {"nameservers": ["10.0.0.10"], "search": ["svc.local"], "domain": "", "options": []},
    }
    (status,) = network_status.status_from_result("cluster", result, default=True)
    assert status == NetworkStatus(
        name="cluster",
        interface="eth0",
        ips=("10.0.0.2", "fd00::2"),
        mac="02:00:00:00:00:01",
        mtu=1400,
        default=True,
        dns={"nameservers": ["10.0.0.10"], "search": ["svc.local"]},
        gateway=("fd00::1",),
    )
    assert list(json.loads(network_status.format_network_status([status]))[0]) == [
        "name",
        "interface",
        "ips",
        "mac",
        "mtu",
        "default",
        "dns",
        "gateway",
    ]


def test_status_several_sandbox_interfaces() -> None:
    result = {
        "cniVersion": "1.0.0",
        "interfaces": [
            {"name": "host0", "mac": "aa:00:00:00:00:00"},
            {"name": "a", "mac": "02:00:00:00:00:0a", "sandbox": "/ns"},
            {"name": "b", "mac": "02:00:00:00:00:0b", "sandbox": "/ns"},
        ],
        "ips": [
            {"address": "10.0.0.1/24", "interface": 1},
            {"address": "10.0.1.1/24", "interface": 2, "gateway": "10.0.1.254"},
            {"address": "10.0.2.1/24"},
            {"address": "10.0.3.1/24", "interface": 0},
        ],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.1.254"}],
    }
    got = network_status.status_from_result("ns/multi", result, default=True)
    assert [(s.interface, s.ips, s.default, s.gateway) for s in got] == [
        ("a", ("10.0.0.1",), False, ("10.0.1.254",)),
        ("b", ("10.0.1.1", "10.0.2.1"), True, ("10.0.1.254",)),
    ]


def test_status_without_interfaces() -> None:
    # the binding CNI reports nothing: no entry, as with Multus
    assert network_status.status_from_result("ns/binding", {"cniVersion": "1.0.0"}, default=False) == ()
    # IPs without interfaces (a 0.2.0 result, or any result without interfaces): no entry
    # either, as Multus's CreateNetworkStatuses (its IPs are lost)
    old = {"cniVersion": "0.2.0", "ip4": {"ip": "10.1.1.2/24", "gateway": "10.1.1.1", "routes": [{"dst": "0.0.0.0/0"}]}}
    assert network_status.status_from_result("ns/old", old, default=False) == ()
    ips_only = {"cniVersion": "1.0.0", "ips": [{"address": "10.1.1.2/24"}], "dns": {}}
    assert network_status.status_from_result("ns/ips", ips_only, default=True) == ()


def test_status_gateway_of_a_default_route_without_one() -> None:
    """A default route with no gw (host-local's routes: [{dst: 0.0.0.0/0}]) is written as
    Go prints a nil net.IP, as Multus's CreateNetworkStatus does."""
    result = {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "net1", "mac": "02:00:00:00:00:01", "sandbox": "/ns"}],
        "ips": [{"address": "10.1.0.2/24", "gateway": "10.1.0.1", "interface": 0}],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.9.0.0/16", "gw": "10.1.0.9"}],
    }
    (status,) = network_status.status_from_result("ns/blue", result, default=False)
    assert status.gateway == ("<nil>",)
    assert '"gateway": [\n        "\\u003cnil\\u003e"\n    ]' in network_status.format_network_status([status])


def test_status_with_device_info() -> None:
    info = DeviceInfo(
        type="pci",
        version="1.1.0",
        raw={
            "type": "pci",
            "version": "1.1.0",
            "pci": {"pci-address": "0000:03:00.2", "pf-pci-address": "0000:03:00.0"},
        },
    )
    result = {"cniVersion": "1.0.0", "interfaces": [{"name": "net1", "sandbox": "/ns"}]}
    statuses = network_status.status_from_result("ns/sriov", result, default=False, device_info=info)
    text = network_status.format_network_status(statuses)
    assert json.loads(text) == [
        {
            "name": "ns/sriov",
            "interface": "net1",
            "dns": {},
            "device-info": {
                "type": "pci",
                "version": "1.1.0",
                "pci": {"pci-address": "0000:03:00.2", "pf-pci-address": "0000:03:00.0"},
            },
        }
    ]
    (back,) = network_status.parse_network_status(text)
    assert back.device_info is not None and back.device_info.pci_address == "0000:03:00.2"


def test_format_escapes_like_go() -> None:
    text = network_status.format_network_status([NetworkStatus(name="a<b>&c", interface="é")])
    assert '"a\\u003cb\\u003e\\u0026c"' in text and '"é"' in text
    assert network_status.parse_network_status(text)[0].name == "a<b>&c"


def test_format_empty_list() -> None:
    assert network_status.format_network_status([]) == "[]"
    assert network_status.parse_network_status("[]") == ()
    assert network_status.parse_network_status("null") == ()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[", "unexpected end of JSON input"),
        ("{}", "json: cannot unmarshal object into Go value of type []v1.NetworkStatus"),
        (
            '[{"name":"a","default":"yes"}]',
            "json: cannot unmarshal string into Go struct field NetworkStatus.default of type bool",
        ),
        (
            '[{"name":"a","ips":"1.2.3.4"}]',
            "json: cannot unmarshal string into Go struct field NetworkStatus.ips of type []string",
        ),
        (
            '[{"name":"a","mtu":"1500"}]',
            "json: cannot unmarshal string into Go struct field NetworkStatus.mtu of type int",
        ),
    ],
)
def test_parse_status_errors(value: str, message: str) -> None:
    with pytest.raises(InvalidAnnotation) as info:
        network_status.parse_network_status(value)
    assert info.value.msg == f"failed to parse {network_status.NETWORK_STATUS} annotation: {message}"


dns = st.fixed_dictionaries(
    {},
    optional={
        "nameservers": st.lists(ipv4, min_size=1, max_size=2),
        "domain": st.text(min_size=1, max_size=10),
        "search": st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=2),
        "options": st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=2),
    },
)
device_info = st.builds(
    lambda addr: DeviceInfo(
        type="pci", version="1.1.0", raw={"type": "pci", "version": "1.1.0", "pci": {"pci-address": addr}}
    ),
    st.from_regex(r"\A0000:0[0-9]:00\.[0-7]\Z"),
)
status = st.builds(
    NetworkStatus,
    name=st.text(min_size=1, max_size=20),
    interface=st.none() | ifname,
    ips=st.lists(ipv4 | ipv6, max_size=3).map(tuple),
    mac=st.none() | mac,
    mtu=st.none() | st.integers(68, 65535),
    default=st.booleans(),
    dns=dns,
    device_info=st.none() | device_info,
    gateway=st.lists(ipv4 | ipv6, max_size=2).map(tuple),
)
KEY_ORDER = ["name", "interface", "ips", "mac", "mtu", "default", "dns", "device-info", "gateway"]


@settings(max_examples=100, deadline=None)
@given(st.lists(status, max_size=4))
def test_status_round_trip_and_key_order(statuses: list[NetworkStatus]) -> None:
    text = network_status.format_network_status(statuses)
    assert network_status.parse_network_status(text) == tuple(statuses)
    for element in json.loads(text):
        keys = list(element)
        assert "dns" in keys  # always present, {} when empty
        assert keys == [k for k in KEY_ORDER if k in keys]
        assert all(element[k] not in ("", [], 0, False, None) for k in keys if k != "dns")


# --- fuzz: any JSON gives a result or a kvnet error, never a crash -------------------------------

ELEMENT_KEYS = [
    "name",
    "namespace",
    "ips",
    "mac",
    "infiniband-guid",
    "interface",
    "portMappings",
    "bandwidth",
    "deviceID",
    "cni-args",
    "default-route",
    "Name",
    "hostPort",
    "ingressRate",
]
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 70000)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["a", "10.0.0.1", "10.0.0.1/24", "02:00:00:00:00:01", "", "eth0", "A"]),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(ELEMENT_KEYS), children, max_size=5)
    ),
    max_leaves=12,
)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(ELEMENT_KEYS), json_values, max_size=6), max_size=3) | json_values)
def test_any_json_annotation_is_parsed_or_refused(value: Any) -> None:
    try:
        selections.parse_networks(json.dumps(value), "pods")
    except InvalidAnnotation as err:
        assert err.msg


STATUS_KEYS = [
    "name",
    "interface",
    "ips",
    "mac",
    "mtu",
    "default",
    "dns",
    "device-info",
    "gateway",
    "nameservers",
    "pci",
]
RESULT_KEYS = [
    "cniVersion",
    "interfaces",
    "ips",
    "routes",
    "dns",
    "name",
    "mac",
    "sandbox",
    "mtu",
    "address",
    "gateway",
    "interface",
    "dst",
    "gw",
    "ip4",
    "ip6",
    "ip",
]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(STATUS_KEYS), json_values, max_size=6), max_size=3) | json_values)
def test_any_json_status_is_parsed_or_refused(value: Any) -> None:
    try:
        statuses = network_status.parse_network_status(json.dumps(value))
    except InvalidAnnotation as err:
        assert err.msg
    else:
        assert network_status.parse_network_status(network_status.format_network_status(statuses)) == statuses


result_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-2, 3)
    | st.sampled_from(["10.0.0.1/24", "0.0.0.0/0", "::/0", "fd00::1", "x", "/ns", ""]),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(RESULT_KEYS), children, max_size=6)
    ),
    max_leaves=20,
)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(RESULT_KEYS), result_values, max_size=6), st.booleans())
def test_status_from_any_result_never_crashes(result: dict[str, Any], default: bool) -> None:
    statuses = network_status.status_from_result("ns/x", result, default=default)
    assert network_status.parse_network_status(network_status.format_network_status(statuses)) == statuses


@pytest.mark.parametrize(
    ("constant", "go_error"),
    [
        ("NaN", "invalid character 'N' looking for beginning of value"),
        ("Infinity", "invalid character 'I' looking for beginning of value"),
        ("-Infinity", "invalid character 'I' in numeric literal"),
    ],
)
def test_json_constants_refused_like_go(constant: str, go_error: str) -> None:
    with pytest.raises(InvalidAnnotation) as info:
        selections.parse_networks(f'[{{"name":"a","bandwidth":{{"ingressRate":{constant}}}}}]', "pods")
    assert info.value.msg == JS + go_error


def test_several_entries_joined_like_multus() -> None:
    """Elements are indented by 4 and joined by a bare comma: ``},{`` (as clusters show it)."""
    statuses = [
        NetworkStatus(name="cluster", interface="eth0", ips=("10.128.1.80",), mac="0a:58:0a:80:01:50"),
        NetworkStatus(name="cluster", interface="udn1", ips=("10.66.0.21",), mac="0a:58:42:42:00:15", default=True),
        NetworkStatus(name="pods/blue", interface="net1", ips=("10.66.1.4",), mac="0a:58:42:42:01:04"),
    ]
    assert network_status.format_network_status(statuses) == (
        '[{\n    "name": "cluster",\n    "interface": "eth0",\n    "ips": [\n        "10.128.1.80"\n    ],\n'
        '    "mac": "0a:58:0a:80:01:50",\n    "dns": {}\n},{\n    "name": "cluster",\n    "interface": "udn1",\n'
        '    "ips": [\n        "10.66.0.21"\n    ],\n    "mac": "0a:58:42:42:00:15",\n    "default": true,\n'
        '    "dns": {}\n},{\n    "name": "pods/blue",\n    "interface": "net1",\n    "ips": [\n        "10.66.1.4"\n'
        '    ],\n    "mac": "0a:58:42:42:01:04",\n    "dns": {}\n}]'
    )
