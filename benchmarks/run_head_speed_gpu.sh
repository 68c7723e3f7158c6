#!/usr/bin/env bash
# Run ON THE GPU DEVICE MACHINE (benchmarks/README.md, "Batches under CUDA graphs, a half-precision MLP and
# a kernel profile"). Old and new code are measured side by side in this one call:
# - model only, one process (SRC_DIR's bench_specialised.py): the specialised head as the service builds it
#   and with its MLP in float32 (--compare-mlp-dtype), runs alternating, both on 8 more TMs (--check-tms),
#   the generic graph, batches with and without the captured CUDA graphs, and a CUPTI kernel profile of each
#   head (torch.profiler; ORT's kernels included); then the same topologies with OLD_SRC's code;
# - served, old code (OLD_SRC: a CUDA graph for batches of one only) and new code (SRC_DIR: one CUDA graph
#   per batch size, a batch padded to the next captured size), same client and topologies.
# Payload as for run_layout_gpu.sh: /tmp/pl/ortpart* (onnxruntime-gpu, sm_90 kernels only, zstd tar) and the
# gRPC/protobuf wheels, copied there by an earlier call of the same machine session; SRC_DIR / OLD_SRC hold
# the packages (each contract/v1 with its generated stubs), DATA_DIR the topology files, CACHE_SEED cached
# paths. Writes JSON and logs into $OUT. Two device calls in one machine session, e.g. with .carry/gpuserve/a
# (ortpart00 + gRPC/protobuf wheels), .carry/gpuserve/b (ortpart01, highspy wheel, zstd, data, cache) and
# .carry/hx/{new,old} (this code's packages and the previous commit's, contract/v1 stubs included):
#   carry .carry/gpuserve/a:   mkdir -p /tmp/pl && cp .carry/gpuserve/a/* /tmp/pl/
#   carry .carry/gpuserve/b .carry/hx:   B=$PWD/.carry/gpuserve/b; cp $B/ortpart01 $B/*.whl /tmp/pl/ &&
#     PATH=$B/zstd:$PATH LD_LIBRARY_PATH=$B/zstd SRC_DIR=$PWD/.carry/hx/new OLD_SRC=$PWD/.carry/hx/old \
#     DATA_DIR=$B/data CACHE_SEED=$B/cache bash .carry/hx/new/benchmarks/run_head_speed_gpu.sh
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" /tmp/work; t0=$(date +%s)
source "$(dirname "$0")/gpu_payload.sh"
# MODEL_TOPOLOGIES / SERVE_TOPOLOGIES pick the rows (either may be empty: that part is skipped), TAG names the files.
MODEL_TOPOLOGIES=${MODEL_TOPOLOGIES-Abilene sndlib:geant zoo:GtsCe zoo:Cogentco zoo:Kdl}
SERVE_TOPOLOGIES=${SERVE_TOPOLOGIES-Abilene geant GtsCe Cogentco}
TAG=${TAG:-}
[[ -n "$MODEL_TOPOLOGIES" ]] && PYTHONPATH=/tmp/ortsite:/tmp/site:/tmp/pkg_new:"$SRC_DIR"/benchmarks timeout -k 5 ${MODEL_LIMIT:-260} python3 \
  "$SRC_DIR"/benchmarks/bench_specialised.py --provider cuda --runs 30 --batches 8 32 \
  --topologies $MODEL_TOPOLOGIES --synthetic-paths zoo:Kdl \
  --compare-mlp-dtype ${COMPARE_MLP_DTYPE:-float32} --check-tms 8 --profile 5 --out "$OUT/head_cuda$TAG.json" 2>&1 \
  | grep -v '^\s*$' | cut -c1-600 | tee "$OUT/head_cuda$TAG.log"
[[ -n "$MODEL_TOPOLOGIES" && -n "${OLD_SRC:-}" ]] && PYTHONPATH=/tmp/ortsite:/tmp/site:/tmp/pkg_old timeout -k 5 ${OLD_MODEL_LIMIT:-120} python3 \
  "$OLD_SRC"/benchmarks/bench_specialised.py --provider cuda --runs 30 --batches 8 32 \
  --topologies $MODEL_TOPOLOGIES --synthetic-paths zoo:Kdl \
  --out "$OUT/head_cuda_old$TAG.json" 2>&1 | grep -v '^\s*$' | cut -c1-300
for lab in new old; do
  [[ -z "$SERVE_TOPOLOGIES" || ( $lab == old && -z "${OLD_SRC:-}" ) ]] && continue
  src=$SRC_DIR; [[ $lab == old ]] && src=$OLD_SRC
  PYTHONPATH=/tmp/ortsite:/tmp/site:/tmp/pkg_$lab timeout -k 5 ${SERVE_LIMIT:-110} python3 "$src"/benchmarks/bench_inference.py \
    --provider cuda --model "$SRC_DIR"/inference/models/tellm-te.onnx --paths-strategy shortest \
    --topologies $SERVE_TOPOLOGIES --concurrency 1 8 32 --requests 300 --seconds 3 --timeout 60 \
    --max-parallel-runs 1 --out "$OUT/served_cuda_$lab$TAG.json" 2>&1 | grep -v '^\s*$' | cut -c1-300 | grep -v WARNING | head -40
done
echo "done in $(( $(date +%s) - t0 )) s"
