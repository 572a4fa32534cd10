#!/usr/bin/env bash
# What the test suite needs beyond npm packages, found or installed (Debian): Chromium for the browser test of the
# HTML report; PyTorch, NumPy and a threaded OpenBLAS for the torch engine's tests. Without root or apt, it says
# what is missing; the tests that need it then fail with the same message rather than pass without running.
set -u
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
py=${MLACTL_PYTHON:-}
if [ -z "$py" ]; then
  for candidate in python3 /usr/bin/python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import torch, numpy' >/dev/null 2>&1; then py=$candidate; break; fi
  done
fi
if [ -z "$py" ]; then need+=(python3-torch python3-numpy libopenblas0-pthread); fi
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "test-deps: installing ${need[*]} (Debian packages)" >&2
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq "${need[@]}"; } >/dev/null || { echo "test-deps: apt-get install ${need[*]} failed" >&2; exit 1; }
else
  echo "test-deps: missing ${need[*]}; install them (Debian: apt-get install ${need[*]}) or the tests that need them fail" >&2
fi
exit 0
