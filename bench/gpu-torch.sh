#!/usr/bin/env bash
# The torch engine's GPU training throughput for bench/NOTES.md, side by side in one call: the plain PyTorch peer
# (bench/peer/train_peer.py) and `mlactl train --engine torch`, same card, same shapes, one arm per variant.
#
#   scripts/gpu-pack.sh
#   mlactl data prepare --source brown --tokenizer gpt2 --out .gpu-data/brown-gpt2 --config configs/models/paper-400m.yaml
#   (carry .gpu and .gpu-data to the GPU machine; there, from the project root:)
#   OUT=/some/folder MODEL=paper-400m bash bench/gpu-torch.sh        # or MODEL=gpu-small
#
# mlactl's tokens/s is read from each run's metrics.jsonl: tokens over the engine's elapsed time from step SKIP
# (compilation done) to the step before the last (the last one also runs the max-logit pass and validation).
# Each step of the script has its own time limit, so one slow arm cannot eat the others; the table comes last.
set -uo pipefail
OUT=${OUT:?set OUT to a folder for the results}
MODEL=${MODEL:-paper-400m}
STEPS=${STEPS:-80}
SKIP=${SKIP:-20}
LIMIT=${LIMIT:-140}
DATA=${DATA:-.gpu-data/brown-gpt2}
mlactl=(bash .gpu/mlactl.sh)
source "$(dirname "$0")/steps.sh"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' | tee -a "$OUT/gpu.txt"

case $MODEL in
  # The issue's shapes: paper-400m 16 x 2048 in one micro-batch; gpu-small 8 x 512 x 4 micro-batches.
  paper-400m) batch=16 accum=1 seq=2048 eval_tokens=32768 peer=(--batch 16) ;;
  gpu-small) batch=8 accum=4 seq=512 eval_tokens=65536 peer=(--batch 32) ;;
  *) echo "MODEL must be paper-400m or gpu-small" >&2; exit 2 ;;
esac
batch=${BATCH:-$batch} accum=${ACCUM:-$accum} # e.g. BATCH=32 ACCUM=1: the peer's one micro-batch of the same step size
[[ ${PEER:-1} == 1 ]] && step "peer-$MODEL" "$LIMIT" python3 bench/peer/train_peer.py --preset "$MODEL" "${peer[@]}" --steps 40
# EXTRA: more `--set key=value` overrides for every arm (e.g. EXTRA="train.optimizer=adamw" SUFFIX=-adamw).
extra=(); for kv in ${EXTRA:-}; do extra+=(--set "$kv"); done

for variant in ${VARIANTS:-baseline qk-norm qk-clip}; do
  name=mlactl-$MODEL-$variant${SUFFIX:-}
  # Validation and max-logit traces only at the start and the end; no checkpoints but step 0 and the last.
  step "$name" "$LIMIT" "${mlactl[@]}" train -c "configs/models/$MODEL.yaml" --engine torch --run-dir "/tmp/$name" --force \
    --set data.source="$DATA" --set model.variant="$variant" --set train.batch_size=$batch --set train.grad_accum=$accum \
    --set train.tokens=$((batch * accum * seq * STEPS)) --set train.warmup_tokens=$((batch * accum * seq * (STEPS / 8 + 1))) \
    --set train.eval_every_tokens=0 --set train.eval_tokens=$eval_tokens --set train.ckpt_every_tokens=0 \
    --set train.maxlogit_every_steps=1000 --set train.log_every_steps=20 "${extra[@]}"
  mkdir -p "$OUT/$name" && cp /tmp/$name/{metrics.jsonl,manifest.json,summary.json} "$OUT/$name/" 2>/dev/null
  rm -rf "/tmp/$name"
done

echo "== table: $MODEL, tokens/s ($(head -n 1 "$OUT/gpu.txt"))"
python3 bench/torch_table.py --skip "$SKIP" "$OUT"/peer-*.log "$OUT"/mlactl-$MODEL-*/ | tee "$OUT/table-$MODEL.md"
cat "$OUT/steps.txt"
