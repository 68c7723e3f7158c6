#!/usr/bin/env bash
# Run HERE, from the repository root, before benchmarking the inference service on the GPU device
# machine (which has Python 3.12 and no network). Builds two carry payloads (each < 64 MiB):
#   .carry/inference-gpu-wheels/  the tellm wheel (generated gRPC stubs inside) + Python 3.12 wheels
#   .carry/inference-gpu-data/    the reference model, the four topologies and their cached k=4 paths
# Then see benchmarks/README.md (GPU section) for the device calls.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
W=.carry/inference-gpu-wheels
D=.carry/inference-gpu-data
rm -rf "$W" "$D"
mkdir -p "$W" "$D/data/topologyzoo" "$D/data/sndlib/networks" "$D/cache/paths"
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$W" .
"$PY" -m pip download -q --only-binary=:all: --implementation cp --python-version 3.12 \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$W" grpcio grpcio-health-checking grpcio-reflection protobuf prometheus-client highspy scipy pyyaml
"$PY" -m tellm.inference.reference_model "$D/reference.onnx" >/dev/null
DATA="${TELLM_DATA_DIR:-../shared/data}"
cp "$DATA"/topologyzoo/{Abilene,Cogentco,Kdl}.graphml "$D/data/topologyzoo/"
cp "$DATA"/sndlib/networks/geant.xml "$D/data/sndlib/networks/"
CACHE="${TELLM_CACHE_DIR:-$HOME/.cache/tellm}/paths"
for t in Abilene geant Cogentco Kdl; do
  # The cache file the benchmark will look for: name and content hash of the topology as loaded.
  f="$CACHE/$(TELLM_DATA_DIR="$DATA" "$PY" -c "import sys; from tecore import load_topology; t = load_topology(sys.argv[1]); print(f'{t.name}-{t.content_hash}-shortest-weight-k4.npz')" "$t")"
  if [[ ! -f "$f" ]]; then
    echo "no cached paths $f (run: tellm paths -t $t); on the device pass --synthetic-paths $t" >&2
    continue
  fi
  cp "$f" "$D/cache/paths/"
done
du -sh "$W" "$D"
