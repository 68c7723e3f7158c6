"""Build hook: generate the gRPC stubs in tellm/v1/ from proto/tellm/v1/*.proto with grpcio-tools.

Everything else about the package lives in pyproject.toml. The stubs are generated into the source
tree before build_py collects modules, which covers both kinds of install:
- ``pip install .`` (wheel): build_py then copies the fresh stubs into the wheel;
- ``pip install -e .`` (PEP 660 editable): setuptools' editable_wheel runs this build_py too, and
  the editable install imports tellm.v1 straight from the source tree, where the stubs now are.
Generated files are git-ignored and never committed; rerun ``pip install -e .`` after editing a
.proto file.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
PROTO_ROOT = ROOT / "proto"
OUT_ROOT = ROOT


def generate_protos() -> list[Path]:
    from importlib import resources

    from grpc_tools import protoc

    protos = sorted(PROTO_ROOT.glob("tellm/v1/*.proto"))
    if not protos:
        raise RuntimeError(f"no .proto files under {PROTO_ROOT / 'tellm/v1'}")
    well_known = str(resources.files("grpc_tools") / "_proto")
    args = ["grpc_tools.protoc", f"-I{PROTO_ROOT}", f"-I{well_known}", f"--python_out={OUT_ROOT}",
            f"--pyi_out={OUT_ROOT}", f"--grpc_python_out={OUT_ROOT}"]
    args += [str(p.relative_to(PROTO_ROOT)) for p in protos]
    if protoc.main(args) != 0:
        raise RuntimeError("grpc_tools.protoc failed on " + ", ".join(str(p) for p in protos))
    return protos


class BuildPyWithProtos(build_py):
    def run(self) -> None:
        generate_protos()
        super().run()


setup(cmdclass={"build_py": BuildPyWithProtos})
