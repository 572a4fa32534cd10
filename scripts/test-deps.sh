#!/usr/bin/env bash
# What the test suite needs beyond npm packages, found or installed (Debian): Chromium for the browser test of the
# HTML report; PyTorch, NumPy and a threaded OpenBLAS for the torch engine's tests; Slurm and munge for the sweep
# tests, which then get a one-node cluster on this machine (test/slurm/start-cluster.sh; idempotent). Without root
# or apt, it says what is missing; the tests that need it then fail with the same message rather than pass without
# running (the Slurm tests are skipped, saying why, only when this is not root and Slurm is not installed).
set -u
here=$(cd "$(dirname "$0")" && pwd)
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
py=${MLACTL_PYTHON:-}
if [ -z "$py" ]; then
  for candidate in python3 /usr/bin/python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import torch, numpy' >/dev/null 2>&1; then py=$candidate; break; fi
  done
fi
if [ -z "$py" ]; then need+=(python3-torch python3-numpy libopenblas0-pthread); fi
{ command -v slurmctld && command -v slurmd && command -v sbatch; } >/dev/null 2>&1 || need+=(slurm-wlm)
command -v munged >/dev/null 2>&1 || need+=(munge)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test-deps: installing ${need[*]} (Debian packages)" >&2
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq "${need[@]}"; } >/dev/null || { echo "test-deps: apt-get install ${need[*]} failed" >&2; exit 1; }
  else
    echo "test-deps: missing ${need[*]}; install them (Debian: apt-get install ${need[*]}) or the tests that need them fail" >&2
  fi
fi
# The Slurm cluster of the sweep tests (a no-op when it is already up). Only root can start its daemons; the test
# itself starts it too, and fails with the same reason when it cannot.
if [ "$(id -u)" = 0 ]; then
  bash "$here/../test/slurm/start-cluster.sh" >/dev/null || echo "test-deps: the Slurm test cluster did not start (test/sweep/slurm.test.ts will fail saying why)" >&2
fi
exit 0
