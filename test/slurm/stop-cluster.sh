#!/usr/bin/env bash
# Stops the slurmctld and slurmd that test/slurm/start-cluster.sh started (by their pid files in its state folder).
# munged is left running: other programs on the machine may use it.
set -u
STATE=${MLACTL_SLURM_DIR:-/tmp/mlactl-slurm}
for daemon in slurmd slurmctld; do
  pidfile=$STATE/$daemon.pid
  pid=$(cat "$pidfile" 2>/dev/null)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill "$pid" && echo "stop-cluster: stopped $daemon ($pid)" >&2; fi
done
exit 0
