"""The committed gRPC modules of the sidecar are exactly what the .proto files generate,
and the wire names are KubeVirt's (package, service, method paths, field numbers)."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import re
from pathlib import Path
from typing import Any

import pytest

from kvnet.lab import protogen

API = protogen.APIS["hooks"]
PROTO_DIR = API.folder


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
    made = protogen.generate(API, tmp_path)
    assert sorted(p.name for p in made) == sorted(
        f"{stem}{suffix}"
        for stem in ("info", "v1alpha1", "v1alpha2", "v1alpha3")
        for suffix in ("_pb2.py", "_pb2_grpc.py")
    )
    same_tools = _generated_by((PROTO_DIR / "info_pb2_grpc.py").read_text()) == importlib.metadata.version(
        "grpcio-tools"
    )
    for path in made:
        committed = (PROTO_DIR / path.name).read_text()
        fresh = path.read_text()
        if path.name.endswith("_pb2.py"):
            assert _descriptor_bytes(committed) == _descriptor_bytes(fresh), (
                f"{path.name} is stale: run python -m kvnet.lab.protogen"
            )
        if same_tools:
            assert committed == fresh, f"{path.name} is stale: run python -m kvnet.lab.protogen"


def test_imports_are_package_relative() -> None:
    for path in PROTO_DIR.glob("*_pb2_grpc.py"):
        for line in path.read_text().splitlines():
            if line.startswith(("import ", "from ")) and "_pb2" in line:
                assert line.startswith("from kvnet.sidecar.proto import "), f"{path.name}: {line}"


# The wire facts of docs/design.md §5, field by field as the .proto text writes them
# ("[repeated] <type> <name> = <number>"), checked against the generated descriptors.
_V = ("v1alpha1", "v1alpha2", "v1alpha3")
_V2 = ("v1alpha2", "v1alpha3")
FIELDS = [
    ("info_pb2", "InfoParams", []),
    (
        "info_pb2",
        "InfoResult",
        ["string name = 1", "repeated HookPoint hookPoints = 3", "repeated string versions = 4"],
    ),
    ("info_pb2", "HookPoint", ["string name = 1", "int32 priority = 2"]),
    *[(f"{v}_pb2", "OnDefineDomainParams", ["bytes domainXML = 1", "bytes vmi = 2"]) for v in _V],
    *[(f"{v}_pb2", "OnDefineDomainResult", ["bytes domainXML = 1"]) for v in _V],
    *[
        (
            f"{v}_pb2",
            "PreCloudInitIsoParams",
            ["bytes cloudInitNoCloudSource = 1", "bytes vmi = 2", "bytes cloudInitData = 3"],
        )
        for v in _V2
    ],
    *[
        (f"{v}_pb2", "PreCloudInitIsoResult", ["bytes cloudInitNoCloudSource = 1", "bytes cloudInitData = 3"])
        for v in _V2
    ],
    ("v1alpha3_pb2", "ShutdownParams", []),
    ("v1alpha3_pb2", "ShutdownResult", []),
]

_SCALARS = {"TYPE_STRING": "string", "TYPE_BYTES": "bytes", "TYPE_INT32": "int32"}


def _field_text(field: Any, package: str) -> str:
    """A descriptor field as the .proto writes it; a message type by its name in ``package``."""
    if field.message_type is not None:
        assert field.message_type.full_name.startswith(f"{package}."), field.message_type.full_name
        kind = field.message_type.full_name.removeprefix(f"{package}.")
    else:
        names = [n for n in _SCALARS if getattr(field, n) == field.type]
        assert names, f"{field.full_name}: unexpected wire type {field.type}"
        kind = _SCALARS[names[0]]
    return f"{'repeated ' if field.is_repeated else ''}{kind} {field.name} = {field.number}"


@pytest.mark.parametrize(("module", "message", "fields"), FIELDS, ids=lambda x: x if isinstance(x, str) else "")
def test_wire_fields(module: str, message: str, fields: list[str]) -> None:
    mod = importlib.import_module(f"kvnet.sidecar.proto.{module}")
    desc = getattr(mod, message).DESCRIPTOR
    package = "kubevirt.hooks." + module.removesuffix("_pb2")
    assert desc.full_name == f"{package}.{message}"
    assert [_field_text(f, package) for f in desc.fields] == fields
    assert all(not f.is_required and f.containing_oneof is None for f in desc.fields)


SERVICES = [
    ("info_pb2", "Info", ["Info(InfoParams) returns (InfoResult)"]),
    ("v1alpha1_pb2", "Callbacks", ["OnDefineDomain(OnDefineDomainParams) returns (OnDefineDomainResult)"]),
    (
        "v1alpha2_pb2",
        "Callbacks",
        [
            "OnDefineDomain(OnDefineDomainParams) returns (OnDefineDomainResult)",
            "PreCloudInitIso(PreCloudInitIsoParams) returns (PreCloudInitIsoResult)",
        ],
    ),
    (
        "v1alpha3_pb2",
        "Callbacks",
        [
            "OnDefineDomain(OnDefineDomainParams) returns (OnDefineDomainResult)",
            "PreCloudInitIso(PreCloudInitIsoParams) returns (PreCloudInitIsoResult)",
            "Shutdown(ShutdownParams) returns (ShutdownResult)",
        ],
    ),
]


@pytest.mark.parametrize(("module", "name", "methods"), SERVICES, ids=lambda x: x if isinstance(x, str) else "")
def test_services(module: str, name: str, methods: list[str]) -> None:
    mod = importlib.import_module(f"kvnet.sidecar.proto.{module}")
    [service] = mod.DESCRIPTOR.services_by_name.values()
    package = "kubevirt.hooks." + module.removesuffix("_pb2")
    assert service.full_name == f"{package}.{name}"

    def local(full_name: str) -> str:
        assert full_name.startswith(f"{package}."), full_name  # input and output types of the same package
        return full_name.removeprefix(f"{package}.")

    assert [
        f"{m.name}({local(m.input_type.full_name)}) returns ({local(m.output_type.full_name)})" for m in service.methods
    ] == methods
    assert all(not m.client_streaming and not m.server_streaming for m in service.methods)
