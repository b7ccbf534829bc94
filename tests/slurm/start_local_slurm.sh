#!/usr/bin/env bash
# Start a single-node SLURM cluster on this machine, everything under DIR (as root; Debian packages
# slurmctld slurmd slurm-client munge). Its own munged (private key and socket), slurmctld and slurmd, on free
# ports, with the node's CPUs and memory from the machine.
#   tests/slurm/start_local_slurm.sh DIR      # then: export SLURM_CONF=DIR/slurm.conf; sbatch ...
#   tests/slurm/stop_local_slurm.sh DIR       # cancels the jobs, stops the three daemons by the PIDs in DIR/pids
# Prints the PIDs (also in DIR/pids, one "name pid" a line) once the node accepts jobs; exit 1 if it does not.
set -euo pipefail
DIR=$(realpath -m "${1:?usage: start_local_slurm.sh DIR}")
for tool in munged slurmctld slurmd sinfo; do
  command -v "$tool" >/dev/null || { echo "start_local_slurm: $tool is not installed" >&2; exit 1; }
done
mkdir -p "$DIR"/{munge,state,spool,log}
chmod 700 "$DIR/munge"
mkdir -p /run/munge  # munged checks its default run directory even with a private socket

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
NODE=$(hostname -s)
CPUS=$(nproc)
MEM=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) * 9 / 10 ))
cat > "$DIR/slurm.conf" <<EOF
ClusterName=local
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge/munge.sock
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
JobRequeue=1
ReturnToService=2
KillWait=5
MinJobAge=3600
MailProg=/bin/true
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=local Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF=$DIR/slurm.conf

dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$DIR/munge/munge.key"
: > "$DIR/pids"
munged --foreground --force --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.sock" \
  --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed" \
  </dev/null >>"$DIR/log/munged.out" 2>&1 &
echo "munged $!" >> "$DIR/pids"
for _ in $(seq 50); do [[ -S $DIR/munge/munge.sock ]] && break; sleep 0.1; done
slurmctld -D -c -f "$SLURM_CONF" </dev/null >>"$DIR/log/slurmctld.out" 2>&1 &
echo "slurmctld $!" >> "$DIR/pids"
slurmd -D -f "$SLURM_CONF" -N "$NODE" </dev/null >>"$DIR/log/slurmd.out" 2>&1 &
echo "slurmd $!" >> "$DIR/pids"

for _ in $(seq 60); do
  if [[ $(sinfo -h -n "$NODE" -o %t 2>/dev/null) =~ ^(idle|mix|alloc) ]]; then
    cat "$DIR/pids"
    exit 0
  fi
  sleep 0.5
done
echo "start_local_slurm: the node did not become idle in 30 s; logs in $DIR/log" >&2
tail -n 5 "$DIR"/log/*.log "$DIR"/log/*.out >&2 || true
exit 1
