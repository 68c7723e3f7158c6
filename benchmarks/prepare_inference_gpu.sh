#!/usr/bin/env bash
# Run HERE, from the repository root, before benchmarking on the GPU device machine (Python 3.12, no
# network; its image already has numpy, scipy, networkx, pyyaml, rich, matplotlib, prometheus-client).
# Builds one payload, split into pieces of at most 56 MiB (for hosts reached through size-limited transfers):
#   .carry/gpu/p0 .. p4   a tar of: onnxruntime-gpu 1.31.1 (CUDA 13), the tellm wheel (generated
#                         gRPC stubs inside), grpcio/protobuf/highspy wheels the image lacks, the four
#                         topologies and their cached k=4 paths (tecore's cache file names).
# The tellm wheel is built from a clean copy of HEAD (nothing is written into the checkout); set
# TELLM_GPU_PATCH=file.diff to apply a patch to that copy first. Then see benchmarks/README.md (GPU sections).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
DATA="${TELLM_DATA_DIR:-../shared/data}"
CACHE="${TELLM_CACHE_DIR:-$HOME/.cache/tellm}/paths"
OUTD=.carry/gpu
STAGE=$(mktemp -d); SRC=$(mktemp -d)
trap 'rm -rf "$STAGE" "$SRC"' EXIT
mkdir -p "$STAGE/wheels" "$STAGE/data/topologyzoo" "$STAGE/data/sndlib/networks" "$STAGE/cache/paths"
git archive HEAD | tar -x -C "$SRC"
if [[ -n "${TELLM_GPU_PATCH:-}" ]]; then PATCHF=$(realpath "$TELLM_GPU_PATCH"); (cd "$SRC" && git apply "$PATCHF"); fi
(cd "$SRC" && "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$STAGE/wheels" .)
DL=(--no-deps --only-binary=:all: --implementation cp --python-version 3.12 --platform manylinux_2_28_x86_64
    --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
# Same versions as the CPU machine: the stubs check grpcio/protobuf against the versions that generated them.
v() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
"$PY" -m pip download -q "${DL[@]}" -d "$STAGE/wheels" "grpcio==$(v grpcio)" "grpcio-health-checking==$(v grpcio-health-checking)" \
  "grpcio-reflection==$(v grpcio-reflection)" "protobuf==$(v protobuf)" "highspy==$(v highspy)"
"$PY" -m pip download -q "${DL[@]}" -d "$STAGE" "onnxruntime-gpu==${ORT_GPU_VERSION:-1.31.1}"
cp "$DATA"/topologyzoo/{Abilene,Cogentco,Kdl}.graphml "$STAGE/data/topologyzoo/"
cp "$DATA"/sndlib/networks/geant.xml "$STAGE/data/sndlib/networks/"
for t in Abilene geant Cogentco Kdl; do
  # The cache file the benchmarks will look for: name and content hash of the topology as loaded.
  f="$CACHE/$(TELLM_DATA_DIR="$DATA" "$PY" -c "import sys; from tecore import load_topology; t = load_topology(sys.argv[1]); print(f'{t.name}-{t.content_hash}-shortest-weight-k4.npz')" "$t")"
  [[ -f "$f" ]] || { echo "no cached paths $f (run: tellm paths -t $t)" >&2; exit 1; }
  cp "$f" "$STAGE/cache/paths/"
done
rm -rf "$OUTD"; mkdir -p "$OUTD"
(cd "$STAGE" && tar -cf - .) | split -b 56m -d -a 1 - "$OUTD/piece"
for f in "$OUTD"/piece*; do k=${f##*piece}; mkdir -p "$OUTD/p$k"; mv "$f" "$OUTD/p$k/"; done
ls "$OUTD"; du -sh "$OUTD"
