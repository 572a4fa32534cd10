#!/usr/bin/env bash
# The torch engine's GPU measurements for bench/NOTES.md, in one run: the plain PyTorch peer (bench/peer/) and
# `mlactl train --engine torch` on the same card and shapes, side by side. Pack first (scripts/gpu-pack.sh), carry
# .gpu to the GPU machine, then from the project root there:  OUT=/some/folder bash bench/gpu-torch.sh
# Each step has its own time limit, so one slow step cannot eat the others; the table is printed last.
set -uo pipefail
OUT=${OUT:?set OUT to a folder for the results}
STEPS=${STEPS:-40}
mlactl=(bash .gpu/mlactl.sh)
step() { local name=$1 limit=$2; shift 2; echo "== $name"; timeout "$limit" "$@" > "$OUT/$name.log" 2>&1; echo "$name rc=$? ${SECONDS}s" | tee -a "$OUT/steps.txt"; tail -n 4 "$OUT/$name.log"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' | tee -a "$OUT/gpu.txt"

# mlactl: paper-400m at 16 x 2048 tokens a step (the peer's shape), one micro-batch, validation only at the end.
train() {
  local name=$1 variant=$2 limit=$3
  step "$name" "$limit" "${mlactl[@]}" train -c configs/models/paper-400m.yaml --engine torch --run-dir "/tmp/$name" --force \
    --set model.variant="$variant" --set train.batch_size=16 --set train.grad_accum=1 --set train.tokens=$((16 * 2048 * STEPS)) \
    --set train.warmup_tokens=327680 --set train.eval_every_tokens=0 --set train.eval_tokens=131072 --set train.ckpt_every_tokens=0 \
    --set train.log_every_steps=5 --set train.maxlogit_every_steps=10
  cp "/tmp/$name/metrics.csv" "$OUT/$name.metrics.csv" 2>/dev/null
}
step peer-400m-baseline ${PEER_LIMIT:-110} python3 bench/peer/train_peer.py --preset paper-400m --batch 16 --steps 30
train mlactl-400m-baseline baseline ${TRAIN_LIMIT:-130}
train mlactl-400m-qk-norm qk-norm ${TRAIN_LIMIT:-130}
train mlactl-400m-qk-clip qk-clip ${TRAIN_LIMIT:-130}

echo "== table (tokens/s: the peer's timed steps; mlactl's last logged window, after compilation)"
grep -h '"peer"' "$OUT"/peer-*.log
for f in "$OUT"/mlactl-*.metrics.csv; do
  [[ -f $f ]] || continue
  echo "$(basename "$f" .metrics.csv): $(tail -n 1 "$f" | awk -F, '{print "step " $1 ", tokens/s " $(NF-2)}')"
done
cat "$OUT/steps.txt"
