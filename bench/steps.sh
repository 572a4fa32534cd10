# Sourced by the bench/gpu-*.sh scripts. `step NAME LIMIT COMMAND...` runs COMMAND under a time limit of LIMIT seconds
# with its output in $OUT/NAME.log (so one slow step cannot eat the call's others), appends "NAME rc=N at Ts" to
# $OUT/steps.txt and shows the log's last $STEP_TAIL lines (default 3).
step() {
  local name=$1 limit=$2
  shift 2
  echo "== $name ($(date +%T))"
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  echo "$name rc=$? at ${SECONDS}s" | tee -a "$OUT/steps.txt"
  tail -n "${STEP_TAIL:-3}" "$OUT/$name.log"
}
