"""The one generator of kvnet's committed protobuf modules, one entry per API.

``python -m kvnet.lab.protogen`` regenerates every ``*_pb2.py`` / ``*_pb2_grpc.py`` (and the
``.pyi`` stubs where an API keeps them) next to its ``.proto`` files. Each API is compiled
from a temporary tree laid out as its import path (``kvnet/meta/proto/``,
``kvnet/sidecar/proto/``), so the generated imports read ``from kvnet.<...>.proto import``
and work from the wheel. Needs ``grpcio-tools`` (a test extra).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class ProtoApi:
    """One API: its .proto files, the folder they live in and the package they import as."""

    name: str
    folder: Path  # in the repository
    package: str  # import path of that folder
    protos: tuple[str, ...]
    stubs: bool  # also write .pyi stubs

    @property
    def package_path(self) -> Path:
        return Path(*self.package.split("."))


APIS = {
    "podresources": ProtoApi(
        "podresources", REPO / "kvnet" / "meta" / "proto", "kvnet.meta.proto", ("podresources.proto",), stubs=True
    ),
    "hooks": ProtoApi(
        "hooks",
        REPO / "sidecar" / "proto",
        "kvnet.sidecar.proto",
        ("info.proto", "v1alpha1.proto", "v1alpha2.proto", "v1alpha3.proto"),
        stubs=False,
    ),
}


def generate(api: ProtoApi, out_dir: Path) -> list[Path]:
    """Compile every proto of ``api`` into ``out_dir``; return the generated module paths."""
    from grpc_tools import protoc  # test extra: only needed to regenerate

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        src = root / api.package_path
        src.mkdir(parents=True)
        for name in api.protos:
            shutil.copy(api.folder / name, src / name)
        args = ["protoc", f"-I{root}", f"--python_out={root}", f"--grpc_python_out={root}"]
        if api.stubs:
            args.append(f"--pyi_out={root}")
        args += [str(api.package_path / name) for name in api.protos]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {', '.join(api.protos)}")
        out_dir.mkdir(parents=True, exist_ok=True)
        made = []
        for path in sorted([*src.glob("*_pb2*.py"), *src.glob("*_pb2.pyi")]):
            target = out_dir / path.name
            shutil.copy(path, target)
            made.append(target)
        return made


def main() -> int:
    for api in APIS.values():
        for path in generate(api, api.folder):
            print(path.relative_to(REPO), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
