#!/usr/bin/env bash
# What bench/NOTES.md's GPU tables come from. Pack first (scripts/gpu-pack.sh), carry .gpu to the GPU machine, then
# from the project root there:  OUT=/some/folder bash bench/gpu-run.sh
# Each step has its own time limit so one slow step cannot eat the others; the summary table is printed last.
set -uo pipefail
OUT=${OUT:?set OUT to a folder for the results}
mlactl=(bash .gpu/mlactl.sh)
STEP_TAIL=25
source "$(dirname "$0")/steps.sh"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt" 2>&1; cat "$OUT/gpu.txt"

# 1. decode latency, default DeepSeek-like dims, one sequence, 1k..256k, all three caches
[[ ${SKIP_B1:-} ]] || step decode-b1 ${DECODE_LIMIT:-240} "${mlactl[@]}" bench decode --backend webgpu --contexts 1k,4k,16k,64k,256k --repeats 30 --warmup 5 -o "$OUT/decode-b1"
# 2. the same with 8 sequences decoded together (latent caches only). The float64 host reference that checks each
#    context grows with batch x context (37 s at 16k x 8), so 256k x 8 is left out by default.
step decode-b8 ${DECODE_LIMIT:-240} "${mlactl[@]}" bench decode --backend webgpu --contexts ${B8_CONTEXTS:-4k,16k,64k} --batch 8 --caches latent,latent+invrms --repeats 30 --warmup 5 -o "$OUT/decode-b8"
# 3. training throughput of gpu-small, baseline and qk-norm, 12 steps of 16k tokens each
for v in baseline qk-norm; do
  step "train-$v" ${TRAIN_LIMIT:-150} "${mlactl[@]}" train -c configs/models/gpu-small.yaml --backend webgpu --run-dir "/tmp/gpu-train-$v" --force \
    --set model.variant=$v --set train.tokens=196608 --set train.warmup_tokens=16384 --set train.eval_every_tokens=196608 \
    --set train.eval_tokens=16384 --set train.ckpt_every_tokens=0
  # metrics only: the checkpoints (300 MB each) stay on the machine
  mkdir -p "$OUT/train-$v"; cp /tmp/gpu-train-$v/{metrics.csv,summary.json,config.resolved.yaml} "$OUT/train-$v/" 2>/dev/null
done
echo "== summary"; cat "$OUT/steps.txt"
grep -h "latent+invrms / latent" "$OUT"/decode-b*.log
for v in baseline qk-norm; do echo "train-$v: $(grep -ho '[0-9.]* tok/s' "$OUT/train-$v.log" | tail -n 3 | tr '\n' ' ')"; done
