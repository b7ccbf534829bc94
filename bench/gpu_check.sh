#!/usr/bin/env bash
# One-shot GPU check for a bare GPU machine with no network (one H100, Python 3.12 with torch, lightning,
# transformers, torchmetrics, timm, numpy, pytest, pillow, matplotlib, pandas): installs the wheels carried in
# .whl/ (made by bench/fetch_gpu_wheels.sh; the device tool must carry the git-ignored .whl folder), then runs
# bench/gpu_check.py, which prints one line per check (PASS/FAIL/SKIP <check>: ...) and a SUMMARY line.
# Logs go to $OUT/gpu_check when $OUT is set, else to a temp dir. Everything ends within the budget
# (GPU_CHECK_BUDGET seconds, default 480, installation included); each step has its own time limit.
#
#   bench/gpu_check.sh              # on the GPU machine, from anywhere
#   bench/gpu_check.sh --dry-run    # here, on the CPU at tiny sizes (or GPU_CHECK_DRY_RUN=1), ~3 minutes
#   bench/gpu_check.sh --only verbalize-throughput,marvel-fit-ddp   # some checks (env and repo-clean always run)
#
# The wheels: .whl/*.whl (what the package and its tests import) go to /tmp/site, on PYTHONPATH for every
# check; .whl/wandb/*.whl (wandb and its dependency closure) go to /tmp/site-wandb, on the path of the W&B
# logger test only. A dry run installs the same wheels into throwaway folders for Python 3.12 (pip's
# --python-version/--platform), which checks the carried set, but runs the checks in this environment.
set -uo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
DRY=${GPU_CHECK_DRY_RUN:-0}
ONLY_ARGS=()
while [ $# -gt 0 ]; do
  case $1 in
    --dry-run) DRY=1 ;;
    --only) [ $# -ge 2 ] || { echo "usage: $0 [--dry-run] [--only CHECK,CHECK...]" >&2; exit 2; }
            ONLY_ARGS=(--only "$2"); shift ;;
    *) echo "usage: $0 [--dry-run] [--only CHECK,CHECK...]" >&2; exit 2 ;;
  esac
  shift
done
if [ "$DRY" = 1 ]; then BUDGET=${GPU_CHECK_BUDGET:-300}; else BUDGET=${GPU_CHECK_BUDGET:-480}; fi
# The device tool returns at most 8 files from $OUT: the logs are written elsewhere and packed into one archive.
LOGS=$(mktemp -d /tmp/gpu_check_logs.XXXXXX)
mkdir -p "$LOGS"
SITE=/tmp/site
WANDB_SITE=/tmp/site-wandb
MODE=$([ "$DRY" = 1 ] && echo ', DRY RUN')
echo "gpu_check.sh: $(date -u +%FT%TZ) on $(uname -n), budget ${BUDGET} s$MODE, logs in $LOGS"

install() {  # install NAME TARGET WHEEL...: pip-install the wheels offline into TARGET, print one line
  local name=$1 target=$2; shift 2
  local t0=$SECONDS size status last
  size=$(du -cb "$@" | tail -1 | awk '{printf "%.1f", $1 / 1048576}')
  timeout -k 10 120 python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    ${TARGET_FLAGS[@]+"${TARGET_FLAGS[@]}"} --target "$target" "$@" >"$LOGS/install-$name.log" 2>&1
  status=$?
  if [ $status -eq 0 ]; then
    echo "PASS install-$name: $# wheels ($size MiB) into $target in $((SECONDS - t0)) s"
    return 0
  fi
  last=$(grep -v '^WARNING' "$LOGS/install-$name.log" | tail -1)
  echo "FAIL install-$name: pip exit status $status ($last); log install-$name.log"
  INSTALL_FAILED=1
  return 1
}

INSTALL_FAILED=0
WANDB_ARGS=()
DRY_ARGS=()
TARGET_FLAGS=()
if [ "$DRY" = 1 ]; then  # install for Python 3.12 into throwaway folders: checks the wheels, changes nothing here
  DRY_ARGS=(--dry-run)
  TARGET_FLAGS=(--python-version 3.12 --implementation cp --only-binary=:all: --platform manylinux_2_28_x86_64
                --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
                --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
  SITE=$(mktemp -d /tmp/gpu_check_dry_site.XXXXXX)
  WANDB_SITE=$(mktemp -d /tmp/gpu_check_dry_site_wandb.XXXXXX)
  trap 'rm -rf "$SITE" "$WANDB_SITE"' EXIT
fi
shopt -s nullglob
core=(.whl/*.whl)
wandb=(.whl/wandb/*.whl)
shopt -u nullglob
if [ ${#core[@]} -eq 0 ]; then
  echo "FAIL install-core: no wheels in .whl/ (run bench/fetch_gpu_wheels.sh here and carry .whl)"
  INSTALL_FAILED=1
elif install core "$SITE" "${core[@]}" && [ "$DRY" != 1 ]; then
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
if [ ${#wandb[@]} -eq 0 ]; then
  echo "SKIP install-wandb: no wheels in .whl/wandb/ (the W&B logger test will be skipped)"
elif install wandb "$WANDB_SITE" "${wandb[@]}" && [ "$DRY" != 1 ]; then
  WANDB_ARGS=(--wandb-path "$WANDB_SITE")
fi
[ "$DRY" = 1 ] && echo "(dry run: the wheels were installed for Python 3.12 into throwaway folders and are not used;" \
  "the checks run in this machine's environment)"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

DEADLINE=$((START + BUDGET))
timeout -k 10 $((DEADLINE - $(date +%s))) python3 bench/gpu_check.py --deadline "$DEADLINE" --logs "$LOGS" \
  ${DRY_ARGS[@]+"${DRY_ARGS[@]}"} ${WANDB_ARGS[@]+"${WANDB_ARGS[@]}"} ${ONLY_ARGS[@]+"${ONLY_ARGS[@]}"}
rc=$?
if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
  echo "FAIL gpu_check: the whole run was stopped at its ${BUDGET} s budget (exit status $rc)"
fi
[ $rc -eq 0 ] && [ $INSTALL_FAILED = 1 ] && rc=1  # the SUMMARY line counts gpu_check.py's checks only
if [ -n "${OUT:-}" ]; then
  tar -czf "$OUT/gpu_check_logs.tar.gz" -C "$LOGS" . && echo "logs packed into \$OUT/gpu_check_logs.tar.gz"
fi
echo "gpu_check.sh: done in $(($(date +%s) - START)) s, exit status $rc"
exit $rc
