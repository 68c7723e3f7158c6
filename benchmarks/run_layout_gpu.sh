#!/usr/bin/env bash
# Run ON THE GPU DEVICE MACHINE (see benchmarks/README.md, "Per-topology specialised head: link-sorted vs
# hop-bucketed row gathers"). Old and new are measured side by side in this one call:
# - model only, one process (SRC_DIR's bench_specialised.py): the head in the new default layout for large
#   topologies (bucketed) and in the previous one (csr, --compare-layout), runs alternating, plus the generic graph;
# - served, old code (OLD_SRC: the previous packages, registration builds the head before it returns) and new
#   code (SRC_DIR: registration returns at once, the head is built in the background; the benchmark waits until
#   GetModelInfo says it serves), same client and topologies.
# Payload: /tmp/pl/ortpart* (onnxruntime-gpu, sm_90 kernels only, a zstd tar of its site directory) and the
# gRPC/protobuf/highspy wheels, copied there by an earlier call of the same machine session or this one.
# SRC_DIR / OLD_SRC hold the packages (benchmarks contract controller inference mininet_scenarios policy tecore
# tellm, each contract/v1 with its generated stubs), DATA_DIR the topology files, CACHE_SEED cached paths.
# Writes JSON and logs into $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" /tmp/work; t0=$(date +%s)
[[ -n "${CACHE_SEED:-}" && -d "$CACHE_SEED" ]] && mkdir -p /tmp/cache && cp -rn "$CACHE_SEED"/* /tmp/cache/
[[ -d /tmp/ortsite/onnxruntime ]] || { mkdir -p /tmp/ortsite && cat /tmp/pl/ortpart* | zstd -d | tar -x -C /tmp/ortsite; } || exit 3
[[ -d /tmp/site/grpc ]] || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site /tmp/pl/*.whl || exit 5
pkg() {  # pkg SRC DEST: the packages as one importable tree (tellm.<subpackage>)
  rm -rf "$2" && mkdir -p "$2" && cp -r "$1"/tecore "$1"/tellm "$2"/ &&
    for d in controller inference policy mininet_scenarios contract; do [[ -d "$1/$d" ]] && cp -r "$1/$d" "$2/tellm/$d"; done
}
pkg "$SRC_DIR" /tmp/pkg_new || exit 6
[[ -n "${OLD_SRC:-}" ]] && { pkg "$OLD_SRC" /tmp/pkg_old || exit 6; }
echo "install: $(( $(date +%s) - t0 )) s"
export PYTHONUNBUFFERED=1 TELLM_DATA_DIR=$DATA_DIR TELLM_CACHE_DIR=/tmp/cache
cd /tmp/work
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  PYTHONPATH=/tmp/ortsite:/tmp/site python3 -c "import onnxruntime as o; o.preload_dlls(); print('onnxruntime', o.__version__, o.get_available_providers())"
  uptime; } 2>&1 | tee "$OUT/env.txt"
PYTHONPATH=/tmp/ortsite:/tmp/site:/tmp/pkg_new timeout -k 5 ${MODEL_LIMIT:-300} python3 "$SRC_DIR"/benchmarks/bench_specialised.py \
  --provider cuda --runs 30 --batches 8 32 --topologies zoo:GtsCe zoo:Cogentco zoo:Kdl --synthetic-paths zoo:Kdl \
  --layout bucketed --compare-layout csr --out "$OUT/layout_cuda.json" 2>&1 | grep -v '^\s*$' | cut -c1-1200 | tee "$OUT/layout_cuda.log"
for lab in new old; do
  [[ $lab == old && -z "${OLD_SRC:-}" ]] && continue
  src=$SRC_DIR; [[ $lab == old ]] && src=$OLD_SRC
  PYTHONPATH=/tmp/ortsite:/tmp/site:/tmp/pkg_$lab timeout -k 5 ${SERVE_LIMIT:-120} python3 "$src"/benchmarks/bench_inference.py \
    --provider cuda --model "$SRC_DIR"/inference/models/tellm-te.onnx --paths-strategy shortest \
    --topologies Abilene geant GtsCe Cogentco --concurrency 1 8 32 --requests 300 --seconds 3 --timeout 60 \
    --max-parallel-runs 1 --out "$OUT/served_cuda_$lab.json" 2>&1 | grep -v '^\s*$' | cut -c1-300 | grep -v WARNING | head -40
done
echo "done in $(( $(date +%s) - t0 )) s"
