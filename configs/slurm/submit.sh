#!/usr/bin/env bash
# sbatch, after creating the directories of the job's --output/--error files: SLURM does not create them, and a job
# whose output directory is missing fails before it starts (runs/slurm/ for train.sbatch and sweep.sbatch).
#   configs/slurm/submit.sh [sbatch options] SCRIPT [script arguments]
# The paths are those given here, else those of the script's #SBATCH lines; relative ones start at --chdir if given.
set -euo pipefail
args=("$@")
paths=()
chdir=.
script=""
for ((i = 0; i < ${#args[@]}; i++)); do
  arg=${args[i]}
  case $arg in
    --output=* | --error=*) paths+=("${arg#*=}") ;;
    -o | -e | --output | --error) i=$((i + 1)); paths+=("${args[i]:-}") ;;
    --chdir=*) chdir=${arg#*=} ;;
    -D | --chdir) i=$((i + 1)); chdir=${args[i]:-.} ;;
    -*) ;;
    *) if [[ -f $arg ]]; then script=$arg; break; fi ;;
  esac
done
if [[ ${#paths[@]} -eq 0 && -n $script ]]; then  # the #SBATCH lines before the first command
  while read -r path; do paths+=("$path"); done < <(awk '
    /^#SBATCH/ { for (i = 2; i <= NF; i++) if ($i ~ /^--(output|error)=/) { sub(/^[^=]*=/, "", $i); print $i }
                 else if ($i ~ /^-[oe]$/ && i < NF) print $(i + 1); next }
    /^#/ || /^[[:space:]]*$/ { next }
    { exit }' "$script")
fi
for path in "${paths[@]}"; do
  [[ $path == /* ]] || path=$chdir/$path
  mkdir -p "$(dirname "$path")"
done
exec sbatch "$@"
