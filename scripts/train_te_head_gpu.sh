#!/bin/bash
# Train the TE head on one GPU: three recipe variants side by side; the shipped model is the variant
# with the best validation score (see inference/models/tellm-te.json for which one). The dataset is built beforehand on any machine with tecore:
#     tellm train --prepare-only --out runs/A          # -> runs/A/dataset.npz
# On the device machine, where tellm is not installed, put tellm/__init__.py and inference/ under
# pkg/tellm/ and set PYTHONPATH=pkg (only torch, numpy and pyyaml are needed there).
set -u
RECIPE=${RECIPE:-inference/recipes/tellm-te.yaml}
DATASET=${DATASET:-runs/A/dataset.npz}
OUTDIR=${OUTDIR:-runs}
T=${TLIMIT:-480}
# INIT=checkpoint.pt fine-tunes every variant from that checkpoint (tellm train --init) instead of training
# from scratch: the shipped head is the v2 run fine-tuned this way (inference/models/tellm-te.json).
INIT_ARGS=(); [[ -n "${INIT:-}" ]] && INIT_ARGS=(--init "$INIT")
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
mkdir -p "$OUTDIR"
run() { v=$1; shift; python3 -m tellm.inference.train --recipe "$RECIPE" --dataset "$DATASET" --out "$OUTDIR/$v" \
  --no-progress --set train.time_limit_seconds="$T" "${INIT_ARGS[@]}" "$@" > "$OUTDIR/$v.log" 2>&1; echo "variant $v exit $?"; }
run A &
run B --set model.hidden=96 --set train.lr=0.0015 &
run C --set train.policy_prob=0.35 --set train.round_loss_decay=0.5 &
wait
for v in A B C; do echo "== $v"; grep -E "^step|validation" "$OUTDIR/$v.log" | tail -2; done
