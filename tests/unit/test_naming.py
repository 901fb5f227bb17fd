import pytest

from kvnet.core import naming


@pytest.mark.parametrize(
    ("network", "pod_iface", "tap", "bridge", "nic"),
    [
        ("blue", "pod16477688c0e", "tap16477688c0e", "k6t-16477688c0e", "16477688c0e-nic"),
        ("red", "podb1f51a511f1", "tapb1f51a511f1", "k6t-b1f51a511f1", "b1f51a511f1-nic"),
    ],
)
def test_hashed_names(network: str, pod_iface: str, tap: str, bridge: str, nic: str) -> None:
    assert naming.hashed_pod_iface(network) == pod_iface
    assert naming.tap_name(pod_iface) == tap
    assert naming.bridge_name(pod_iface) == bridge
    assert naming.renamed_nic(pod_iface) == nic
    for name in (pod_iface, tap, bridge, nic):
        assert naming.ifname_problem(name) is None


@pytest.mark.parametrize(
    ("pod_iface", "tap", "bridge"),
    [("eth0", "tap0", "k6t-eth0"), ("net1", "tap1", "k6t-net1"), ("net12", "tap12", "k6t-net12")],
)
def test_ordinal_and_primary_names(pod_iface: str, tap: str, bridge: str) -> None:
    assert naming.tap_name(pod_iface) == tap
    assert naming.bridge_name(pod_iface) == bridge


@pytest.mark.parametrize(
    ("names", "ordinal"),
    [(["eth0", "net1"], True), (["eth0", "pod16477688c0e"], False), (["network1"], False), ([], False)],
)
def test_ordinal_detection(names: list[str], ordinal: bool) -> None:
    assert naming.uses_ordinal_names(names) is ordinal


@pytest.mark.parametrize(
    ("requested", "position", "is_main", "expected"),
    [(None, 0, True, "eth0"), (None, 2, False, "net2"), ("foo", 1, False, "foo"), ("", 3, False, "net3")],
)
def test_multus_ifname(requested: str | None, position: int, is_main: bool, expected: str) -> None:
    assert naming.multus_ifname(requested, position, is_main) == expected


def test_aliases() -> None:
    assert naming.interface_alias("blue") == "ua-blue"
    assert naming.sriov_alias("blue") == "ua-sriov-blue"


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("eth0", None),
        ("a" * 15, None),
        ("a" * 16, "longer than 15"),
        ("é" * 8, "longer than 15"),
        ("", "empty"),
        (".", ". or .."),
        ("..", ". or .."),
        ("a/b", "contains"),
        ("a:b", "contains"),
        ("a b", "contains"),
    ],
)
def test_ifname_rules(name: str, problem: str | None) -> None:
    got = naming.ifname_problem(name)
    assert (got is None) if problem is None else (problem in (got or ""))


@pytest.mark.parametrize(
    ("name", "ok"),
    [("abc", True), ("a.b-c_d", True), ("ok\n", False), ("-a", False), ("../x", False), ("a/b", False), ("", False)],
)
def test_cni_name(name: str, ok: bool) -> None:
    assert naming.cni_name_ok(name) is ok


@pytest.mark.parametrize(
    ("alias", "sriov", "iface"),
    [
        ("ua-blue", False, "blue"),
        ("ua-sriov-blue", True, "blue"),
        ("ua-sriov-blue", False, "sriov-blue"),  # an interface alias may itself start with sriov-
        ("ua-blue", True, None),
        ("ua-", False, None),
        ("ua-sriov-", True, None),
        ("blue", False, None),
        ("", False, None),
        (None, False, None),
    ],
)
def test_alias_interface(alias: str | None, sriov: bool, iface: str | None) -> None:
    assert naming.alias_interface(alias, sriov=sriov) == iface
    if iface is not None:
        assert (naming.sriov_alias if sriov else naming.interface_alias)(iface) == alias


@pytest.mark.parametrize(
    ("name", "fault"),
    [
        ("eth0", None),
        ("", naming.IfnameFault.EMPTY),
        (None, naming.IfnameFault.EMPTY),
        ("a" * 16, naming.IfnameFault.TOO_LONG),
        ("é" * 8, naming.IfnameFault.TOO_LONG),  # bytes, as the kernel counts
        ("..", naming.IfnameFault.DOT),
        ("a\tb", naming.IfnameFault.BAD_CHAR),
    ],
)
def test_ifname_fault(name: object, fault: naming.IfnameFault | None) -> None:
    """The one rule every boundary (CNI env, annotations, binding, render) words its own way."""
    assert naming.ifname_fault(name) is fault


# --- MACs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("original", "swapped"),
    [
        ("0a:58:0a:4d:00:02", naming.swapped_mac("0A:58:0A:4D:00:02")),
        ("02:00:00:00:00:01", naming.swapped_mac("02:00:00:00:00:01")),
    ],
)
def test_swapped_mac_is_local_unicast_and_case_blind(original: str, swapped: str) -> None:
    assert naming.swapped_mac(original) == swapped != original
    assert int(swapped[:2], 16) & 0x03 == 0x02


def test_swapped_mac_pinned() -> None:
    """The value a running pod carries: a change here would make CHECK fail on pods bound before it."""
    assert naming.swapped_mac("0a:58:0a:4d:00:02") == "22:e8:dd:de:c5:44"


@pytest.mark.parametrize(
    ("seed", "mac"),
    [
        ("ns/vm/blue", naming.stand_in_mac("ns/vm/blue")),
        ("tap16477688c0e", naming.stand_in_mac("tap16477688c0e")),
    ],
)
def test_stand_in_mac_is_stable_local_unicast(seed: str, mac: str) -> None:
    assert mac.startswith("02:") and len(mac) == 17
    assert naming.stand_in_mac(seed) == mac
    assert naming.stand_in_mac(seed + "x") != mac


def test_stand_in_mac_pinned() -> None:
    """kvnet render's placeholder MAC reaches the XML: pinned."""
    assert naming.stand_in_mac("demo/vm-kvnet/blue") == "02:88:95:4b:49:d8"


@pytest.mark.parametrize(
    ("ports", "mac"),
    [
        (["02:10:00:00:00:01", "d2:bd:33:a6:79:9a"], "02:10:00:00:00:01"),
        (["FE:00:00:00:00:01", "0A:58:0A:01:00:05"], "0a:58:0a:01:00:05"),
        (["06:00:00:00:00:02"], "06:00:00:00:00:02"),
    ],
)
def test_bridge_takes_the_lowest_port_mac(ports: list[str], mac: str) -> None:
    assert naming.bridge_mac(ports) == mac
