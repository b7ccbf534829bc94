#!/usr/bin/env bash
# Stop the cluster of tests/slurm/start_local_slurm.sh DIR: cancel its jobs, then stop its daemons by the PIDs in
# DIR/pids (SIGTERM, SIGKILL after 10 s). Only processes whose command line names DIR are signalled.
set -uo pipefail
DIR=$(realpath -m "${1:?usage: stop_local_slurm.sh DIR}")
[[ -f $DIR/pids ]] || exit 0
export SLURM_CONF=$DIR/slurm.conf
if command -v scancel >/dev/null && [[ -n $(squeue -h -o %i 2>/dev/null) ]]; then
  scancel --full $(squeue -h -o %A 2>/dev/null) 2>/dev/null
  for _ in $(seq 40); do [[ -z $(squeue -h -o %i 2>/dev/null) ]] && break; sleep 0.5; done
fi

ours() { [[ -r /proc/$1/cmdline ]] && tr '\0' ' ' < "/proc/$1/cmdline" | grep -qF "$DIR"; }
tac "$DIR/pids" | while read -r name pid; do
  ours "$pid" || continue
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 100); do ours "$pid" || break; sleep 0.1; done
  if ours "$pid"; then
    echo "stop_local_slurm: $name ($pid) ignored SIGTERM, killing it" >&2
    kill -KILL "$pid" 2>/dev/null
  fi
done
exit 0
