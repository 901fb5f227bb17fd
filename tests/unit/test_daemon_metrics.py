"""The daemon's metrics port: address parsing, result codes, probes and the exposition."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from kvnet.core.errors import InvalidConfig
from kvnet.meta.daemon import result_code
from kvnet.meta.metrics import DaemonMetrics, MetricsServer, parse_address


@pytest.mark.parametrize(
    ("text", "address"),
    [(":9465", ("0.0.0.0", 9465)), ("127.0.0.1:9465", ("127.0.0.1", 9465)), ("[::1]:80", ("::1", 80))],
)
def test_parse_address(text: str, address: tuple[str, int]) -> None:
    assert parse_address(text) == address


@pytest.mark.parametrize("text", ["9465", "host:", ":0", ":65536", ":http", ""])
def test_parse_address_refuses(text: str) -> None:
    with pytest.raises(InvalidConfig, match="--metrics-address"):
        parse_address(text)


@pytest.mark.parametrize(
    ("status", "stdout", "code"),
    [
        (0, '{"cniVersion": "1.0.0"}', 0),
        (1, json.dumps({"code": 7, "msg": "bad"}), 7),
        (1, "not json", 999),
        (1, "[]", 999),
        (1, '{"code": "7"}', 999),
    ],
)
def test_result_code(status: int, stdout: str, code: int) -> None:
    assert result_code(status, stdout) == code


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_probes_and_exposition() -> None:
    ready = [False]
    metrics = DaemonMetrics()
    server = MetricsServer(("127.0.0.1", 0), metrics, lambda: ready[0])
    server.start()
    try:
        port = server.port
        assert get(port, "/healthz") == (200, "ok\n")
        assert get(port, "/readyz")[0] == 503
        ready[0] = True
        assert get(port, "/readyz") == (200, "ok\n")
        metrics.observe_call("ADD", 0, 0.12)
        metrics.observe_plugin("bridge", "ADD", 0.05, True)
        metrics.observe_api("get_nad", "error", True)
        metrics.observe_event("dropped")
        status, text = get(port, "/metrics")
        assert status == 200
        for line in (
            'kvnet_cni_calls_total{code="0",command="ADD"} 1.0',
            'kvnet_delegate_timeouts_total{type="bridge"} 1.0',
            'kvnet_api_requests_total{call="get_nad",result="error"} 1.0',
            'kvnet_api_retries_total{call="get_nad"} 1.0',
            'kvnet_events_total{result="dropped"} 1.0',
        ):
            assert line in text.splitlines(), line
        assert "process_resident_memory_bytes" in text
        assert get(port, "/other")[0] == 404
    finally:
        server.stop()
