#!/usr/bin/env bash
# The GPU result ladders of issue #14 (docs/results/README.md) on one CUDA machine: configs/sweeps/gpu-small-ladder.yaml
# (3 variants x 3 learning rates, 30M tokens each) or configs/sweeps/paper-400m-variants.yaml, through `mlactl sweep`.
# Pack first (scripts/gpu-pack.sh) and carry the CLI and the corpus (see docs/results/README.md for the carry list);
# then from the project root there:
#
#   export DATA_TAR=.gpu-data/debian-corpus-gpu.tar.xz
#   OUT=/some/folder LRS="1e-3 3e-3" JOBS=3 bash bench/gpu-ladder.sh   # six gpu-small runs; LRS=1e-2 in a second call
#   OUT=/some/folder SWEEP=configs/sweeps/paper-400m-variants.yaml TOKENS=13107200 bash bench/gpu-ladder.sh
#
# Variables:
#   OUT       the result folder (required). It receives gpu.txt, sweep.yaml (the sweep as run), plan.txt, sweep.log,
#             <name>-<part>.tar.gz (the sweep folder without checkpoints) and table.md: six files, one folder deep.
#   SWEEP     the sweep file (default configs/sweeps/gpu-small-ladder.yaml)
#   DATA      the shard folder (default: the sweep's data.source); DATA_TAR: a .tar.xz/.tar.gz of it, unpacked here
#             into the project root first when DATA holds no manifest.json
#   LRS       a subset of the learning rates, e.g. "1e-3 3e-3" (default: the sweep's); names the part folder
#   TOKENS    train.tokens for every run (default: the sweep's)
#   SETS      further key.path=value overrides, space-separated (as `--set` would take them)
#   BASE      another base config (the CPU stand-in test uses configs/models/tiny.yaml)
#   PART      the part folder's name (default lr<LRS joined by _>, or "all")
#   JOBS      runs at a time on the one GPU (default 1: wall times then measure one run alone)
#   LIMIT     seconds before the sweep is stopped with SIGTERM (runs checkpoint and end `interrupted`; default
#             480: with the 60 s grace and the clean-up the script ends within ten minutes)
#   FRESH=1   start the part's sweep folder over even when it exists (default: resume it, or run it if absent)
#   KEEP_CKPT=1  keep the checkpoints of finished runs (default: deleted after the tarball, they are ~1-5 GB each)
#   MLACTL    the CLI (default "bash .gpu/mlactl.sh"; "node bin/run.js" in a checkout)
# The sweep runs under runs/<name>/<part>/, so `mlactl compare runs/<name>` reads every part. The table comes last.
set -uo pipefail
OUT=${OUT:?set OUT to a folder for the results}
SWEEP=${SWEEP:-configs/sweeps/gpu-small-ladder.yaml}
JOBS=${JOBS:-1}
LIMIT=${LIMIT:-480}
read -r -a mlactl <<< "${MLACTL:-bash .gpu/mlactl.sh}"
export MLACTL_PYTHON=${MLACTL_PYTHON:-python3}
die() { echo "gpu-ladder.sh: $*" >&2; exit 2; }

[[ -f $SWEEP ]] || die "SWEEP: sweep file not found: $SWEEP"
[[ $JOBS =~ ^[1-9][0-9]*$ ]] || die "JOBS: expected a positive integer, got '$JOBS'"
[[ $LIMIT =~ ^[1-9][0-9]*$ ]] || die "LIMIT: expected seconds, got '$LIMIT'"
[[ -z ${TOKENS:-} || ${TOKENS} =~ ^[0-9.]+(e[0-9]+)?$ ]] || die "TOKENS: expected a number, got '$TOKENS'"
[[ -z ${BASE:-} || -f $BASE ]] || die "BASE: config not found: $BASE"
command -v python3 >/dev/null || die "python3 not found (scripts/ladder.py needs it)"
name=$(sed -n 's/^name: *\([A-Za-z0-9._-]*\).*/\1/p' "$SWEEP" | head -n 1)
[[ -n $name ]] || die "$SWEEP: no name: line"
DATA=${DATA:-$(sed -n 's/^  data\.source: *\([^ #]*\).*/\1/p' "$SWEEP" | head -n 1)}
[[ -n $DATA ]] || die "DATA: not set and $SWEEP has no data.source line"
if [[ ! -f $DATA/manifest.json && -n ${DATA_TAR:-} ]]; then
  [[ -f $DATA_TAR ]] || die "DATA_TAR: file not found: $DATA_TAR"
  echo "== unpacking $DATA_TAR"
  tar -xf "$DATA_TAR" || die "DATA_TAR: $DATA_TAR did not unpack"
  "${mlactl[@]}" data verify "$DATA" || exit 2
fi
[[ -f $DATA/manifest.json ]] || die "DATA: $DATA/manifest.json not found (build it with scripts/build-corpus.sh, or set DATA_TAR)"
lrs=(${LRS:-})
for lr in "${lrs[@]}"; do [[ $lr =~ ^[0-9.]+(e-?[0-9]+)?$ ]] || die "LRS: expected numbers separated by spaces, got '$LRS'"; done
PART=${PART:-$([[ ${#lrs[@]} -gt 0 ]] && echo "lr$(IFS=_; echo "${lrs[*]}")" || echo all)}
[[ $PART =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || die "PART: letters, digits, . _ - only, got '$PART'"
mkdir -p "$OUT" || die "OUT: cannot create $OUT"

derive=(python3 scripts/ladder.py derive "$SWEEP" --out "$OUT/sweep.yaml" --data "$DATA")
[[ ${#lrs[@]} -gt 0 ]] && derive+=(--lrs "${lrs[@]}")
[[ -n ${BASE:-} ]] && derive+=(--base "$BASE")
[[ -n ${TOKENS:-} ]] && derive+=(--set "train.tokens=$TOKENS")
for kv in ${SETS:-}; do derive+=(--set "$kv"); done
"${derive[@]}" || exit 2
"${mlactl[@]}" sweep plan "$OUT/sweep.yaml" --jobs "$JOBS" > "$OUT/plan.txt" 2>&1 || { cat "$OUT/plan.txt" >&2; exit 2; }
tail -n 3 "$OUT/plan.txt"

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  "$MLACTL_PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1
  echo "cpus $(nproc), sweep $SWEEP part $PART jobs $JOBS"; } | tee "$OUT/gpu.txt"

dir=runs/$name/$PART
if [[ -f $dir/sweep.json && ${FRESH:-0} != 1 ]]; then
  echo "== resuming $dir ($(date +%T))"
  cmd=("${mlactl[@]}" sweep resume "$dir" --jobs "$JOBS")
else
  echo "== $dir ($(date +%T))"
  cmd=("${mlactl[@]}" sweep run "$OUT/sweep.yaml" --executor local --jobs "$JOBS" --sweep-dir "$dir" --force)
fi
start=$SECONDS
# SIGTERM at LIMIT: the sweep passes it to each running run, which finishes its step, checkpoints and ends
# interrupted. KILL 60 s later reaches only the sweep process; runs still going then (each `mlactl train` and its
# Python child are process groups of their own) are found by their run.lock and ended here, so nothing outlives
# the call.
timeout -k 60 "$LIMIT" "${cmd[@]}" > "$OUT/sweep.log" 2>&1
rc=$?
echo "sweep rc=$rc after $((SECONDS - start)) s" | tee -a "$OUT/gpu.txt"
if [[ $rc == 124 || $rc == 137 ]]; then
  left=()
  for lock in "$dir"/runs/*/run.lock; do
    pid=$(cat "$lock" 2>/dev/null)
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && left+=("$pid" $(pgrep -P "$pid"))
  done
  if [[ ${#left[@]} -gt 0 ]]; then
    echo "ending runs left running: ${left[*]}" | tee -a "$OUT/gpu.txt"
    kill -TERM "${left[@]}" 2>/dev/null
    sleep 15
    kill -KILL "${left[@]}" 2>/dev/null
  fi
fi
grep -E '^\[' "$OUT/sweep.log" | tail -n 12

if [[ -d $dir ]]; then
  tar -czf "$OUT/$name-$PART.tar.gz" --exclude=ckpt -C runs "$name/$PART" && ls -l "$OUT/$name-$PART.tar.gz"
  if [[ ${KEEP_CKPT:-0} != 1 ]]; then
    for run in "$dir"/runs/*/; do
      grep -qE '"status": *"(completed|diverged)"' "$run/summary.json" 2>/dev/null && rm -rf "$run/ckpt"
    done
  fi
fi
{ echo "## $name/$PART: $(head -n 1 "$OUT/gpu.txt"), jobs $JOBS, sweep rc $rc"; echo
  [[ -d $dir ]] && python3 scripts/ladder.py table "$dir" --markdown; } | tee "$OUT/table.md"
exit "$rc"
