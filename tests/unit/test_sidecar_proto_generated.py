"""The committed gRPC modules of the sidecar are exactly what the .proto files generate,
and the wire names are KubeVirt's (package, service, method paths, field numbers)."""

from __future__ import annotations

import ast
import importlib.metadata
import re
from pathlib import Path

import pytest

from kvnet.sidecar.proto import generate

PROTO_DIR = Path(generate.__file__).resolve().parent


def _descriptor_bytes(text: str) -> bytes:
    """The serialized FileDescriptorProto a _pb2 module registers: the wire-relevant part."""
    m = re.search(r"AddSerializedFile\((b'.*?')\)\n", text)
    assert m, "no serialized descriptor found"
    value = ast.literal_eval(m.group(1))
    assert isinstance(value, bytes)
    return value


def _generated_by(text: str) -> str | None:
    m = re.search(r"GRPC_GENERATED_VERSION = '([^']+)'", text)
    return m.group(1) if m else None


def test_generated_modules_match_the_protos(tmp_path: Path) -> None:
    """Same descriptors as the .proto files give; byte for byte when the same grpcio-tools runs."""
    pytest.importorskip("grpc_tools", reason="grpcio-tools (test extra) is needed to regenerate")
    made = generate.generate(tmp_path)
    assert sorted(p.name for p in made) == sorted(
        f"{stem}{suffix}" for stem in ("info", "v1alpha1", "v1alpha2", "v1alpha3") for suffix in ("_pb2.py", "_pb2_grpc.py"))
    same_tools = _generated_by((PROTO_DIR / "info_pb2_grpc.py").read_text()) == importlib.metadata.version("grpcio-tools")
    for path in made:
        committed = (PROTO_DIR / path.name).read_text()
        fresh = path.read_text()
        if path.name.endswith("_pb2.py"):
            assert _descriptor_bytes(committed) == _descriptor_bytes(fresh), f"{path.name} is stale: run python -m kvnet.sidecar.proto.generate"
        if same_tools:
            assert committed == fresh, f"{path.name} is stale: run python -m kvnet.sidecar.proto.generate"


def test_imports_are_package_relative() -> None:
    for path in PROTO_DIR.glob("*_pb2_grpc.py"):
        for line in path.read_text().splitlines():
            if line.startswith(("import ", "from ")) and "_pb2" in line:
                assert line.startswith("from kvnet.sidecar.proto import "), f"{path.name}: {line}"


FIELDS = [
    ("info_pb2", "InfoResult", {"name": 1, "hookPoints": 3, "versions": 4}),
    ("info_pb2", "HookPoint", {"name": 1, "priority": 2}),
    ("info_pb2", "InfoParams", {}),
    *[(f"{v}_pb2", "OnDefineDomainParams", {"domainXML": 1, "vmi": 2}) for v in ("v1alpha1", "v1alpha2", "v1alpha3")],
    *[(f"{v}_pb2", "OnDefineDomainResult", {"domainXML": 1}) for v in ("v1alpha1", "v1alpha2", "v1alpha3")],
    *[(f"{v}_pb2", "PreCloudInitIsoParams", {"cloudInitNoCloudSource": 1, "vmi": 2, "cloudInitData": 3}) for v in ("v1alpha2", "v1alpha3")],
    *[(f"{v}_pb2", "PreCloudInitIsoResult", {"cloudInitNoCloudSource": 1, "cloudInitData": 3}) for v in ("v1alpha2", "v1alpha3")],
    ("v1alpha3_pb2", "ShutdownParams", {}),
    ("v1alpha3_pb2", "ShutdownResult", {}),
]


@pytest.mark.parametrize(("module", "message", "fields"), FIELDS, ids=lambda x: x if isinstance(x, str) else "")
def test_wire_fields(module: str, message: str, fields: dict[str, int]) -> None:
    import importlib

    mod = importlib.import_module(f"kvnet.sidecar.proto.{module}")
    desc = getattr(mod, message).DESCRIPTOR
    assert {f.name: f.number for f in desc.fields} == fields
    package = "kubevirt.hooks." + module.removesuffix("_pb2")
    assert desc.full_name == f"{package}.{message}"


@pytest.mark.parametrize(("module", "methods"), [
    ("info_pb2", ["Info"]),
    ("v1alpha1_pb2", ["OnDefineDomain"]),
    ("v1alpha2_pb2", ["OnDefineDomain", "PreCloudInitIso"]),
    ("v1alpha3_pb2", ["OnDefineDomain", "PreCloudInitIso", "Shutdown"]),
])
def test_services(module: str, methods: list[str]) -> None:
    import importlib

    mod = importlib.import_module(f"kvnet.sidecar.proto.{module}")
    [service] = mod.DESCRIPTOR.services_by_name.values()
    package = "kubevirt.hooks." + module.removesuffix("_pb2")
    assert service.full_name == f"{package}.{'Info' if module == 'info_pb2' else 'Callbacks'}"
    assert [m.name for m in service.methods] == methods
