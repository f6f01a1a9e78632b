#!/usr/bin/env bash
# Device check (issue 15): what the pipeline does on one GPU, and what the paper profile would cost there.
#
#   1. smoke    the whole smoke pipeline (PointGoalArc) with --device cuda: does every stage run on the GPU?
#               Wall time, exit status, seconds per stage.
#   2. flops    one MBML distill update at paper sizes: achieved matmul FLOP/s against torch.mm measured in the
#               same run, in fp32, with TF32 allowed and under bf16 autocast (benchmarks/gpu_check.py flops).
#   3. slice    HalfCheetahVel's paper profile, stage by stage, at two cut-down budgets per stage: per-stage wall
#               time, throughput, GPU utilisation (nvidia-smi every second) and the projected wall time of each
#               stage and of one seed at the full paper budgets (benchmarks/gpu_check.py slice; method in its
#               docstring and in docs/gpu_check.md).
#
# Installs MuJoCo and Gymnasium from the wheels in .device_wheels/ when `import mujoco, gymnasium` fails (the GPU
# machine has torch, h5py, click, pyyaml, tqdm and numpy, and no network). Everything printed also goes to
# $OUT/gpu_check.txt when OUT is set, with the logs beside it. Settings (environment variables):
#   DEVICE=cuda        torch device (cpu for a dry run)
#   QUICK=1            smoke-profile networks and tiny budgets for the slice, fewer FLOP rounds (a CPU test)
#   BUDGET_SCALE=1     multiplies every slice budget
#   WORKERS=10         --workers of the slice (QUICK: 2); SMOKE_WORKERS=4 (QUICK: 2) for the smoke run
#   TIME_LIMIT=450     seconds for the whole script; slice stages that would not fit are skipped
#   PYTHON             interpreter (default: .venv/bin/python if present, else python3)
#
#   bash benchmarks/gpu_check.sh                   # on the GPU machine, see docs/gpu_check.md
#   DEVICE=cpu QUICK=1 bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."

DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-0}
BUDGET_SCALE=${BUDGET_SCALE:-1}
TIME_LIMIT=${TIME_LIMIT:-450}
if [ "$QUICK" = 1 ]; then WORKERS=${WORKERS:-2}; SMOKE_WORKERS=${SMOKE_WORKERS:-2}; else
  WORKERS=${WORKERS:-10}; SMOKE_WORKERS=${SMOKE_WORKERS:-4}; fi
if [ -z "${PYTHON:-}" ]; then PYTHON=python3; [ -x .venv/bin/python ] && PYTHON=.venv/bin/python; fi
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # mtrl runs from this tree either way
WORK=$(mktemp -d /tmp/gpu_check.XXXXXX)

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
left() { echo $(( TIME_LIMIT - SECONDS )); }

stage_times() {  # seconds per stage, summed over its jobs, from a run's mtrl.log
  awk '/: done in / { t = $NF; sub(/s$/, "", t); if (!($5 in sum)) order[n++] = $5; sum[$5] += t; jobs[$5]++ }
       END { for (i = 0; i < n; i++) printf "    %-15s %3d jobs %8.1f s\n", order[i], jobs[order[i]], sum[order[i]] }' "$1"
}

main() {
  local failed=0 t0 rc
  echo "== gpu_check: DEVICE=$DEVICE QUICK=$QUICK BUDGET_SCALE=$BUDGET_SCALE WORKERS=$WORKERS" \
       "TIME_LIMIT=${TIME_LIMIT}s, $(date -u '+%F %T') UTC, work dir $WORK"
  if ! "$PYTHON" -c "import mujoco, gymnasium" 2>/dev/null; then
    echo "installing mujoco and gymnasium from .device_wheels/ ..."
    "$PYTHON" -m pip install -q --no-index --find-links .device_wheels mujoco==4.0.0 gymnasium==1.4.0 \
      || { echo "FAILED: pip install from .device_wheels"; return 1; }
    "$PYTHON" -m pip install -q --no-deps --no-build-isolation -e . \
      || echo "(pip install -e . failed: mtrl still runs from this tree through PYTHONPATH)"
  fi
  "$PYTHON" -c "import sys, torch, mujoco, gymnasium
print(f'python {sys.version.split()[0]}, torch {torch.__version__} (CUDA {torch.version.cuda}), '
      f'mujoco {mujoco.__version__}, gymnasium {gymnasium.__version__}, {torch.get_num_threads()} CPU threads')
print('GPU:', torch.cuda.get_device_name() if torch.cuda.is_available() else 'none visible')" || return 1
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

  echo; echo "== 1. smoke pipeline: mtrl run --config configs/point_goal_arc.yaml --profile smoke" \
            "--device $DEVICE --workers $SMOKE_WORKERS"
  t0=$(now)
  timeout $(( $(left) - 200 > 60 ? $(left) - 200 : 60 )) "$PYTHON" -m mtrl run --config configs/point_goal_arc.yaml \
    --profile smoke --device "$DEVICE" --workers "$SMOKE_WORKERS" --run-dir "$WORK/smoke" > "$WORK/smoke.log" 2>&1
  rc=$?
  echo "  exit status $rc, wall $(since "$t0") s; per stage (sum over jobs):"
  [ -f "$WORK/smoke/logs/mtrl.log" ] && stage_times "$WORK/smoke/logs/mtrl.log"
  if [ $rc != 0 ]; then failed=1; echo "  FAILED; last lines of its output:"; tail -n 20 "$WORK/smoke.log" | sed 's/^/    /'; fi

  echo; echo "== 2. distill update FLOP/s (benchmarks/gpu_check.py flops)"
  if [ "$QUICK" = 1 ]; then set -- --tasks 2 --rounds 2 --updates 1; else set --; fi
  timeout $(( $(left) - 120 > 30 ? $(left) - 120 : 30 )) "$PYTHON" benchmarks/gpu_check.py flops --device "$DEVICE" "$@"
  rc=$?; [ $rc != 0 ] && { failed=1; echo "  FAILED (exit $rc)"; }

  echo; echo "== 3. HalfCheetahVel paper-profile slice (benchmarks/gpu_check.py slice)"
  "$PYTHON" benchmarks/gpu_check.py slice --device "$DEVICE" --workers "$WORKERS" --run-dir "$WORK/hcv" \
    --scale "$BUDGET_SCALE" --deadline "$(( $(left) - 10 ))" $([ "$QUICK" = 1 ] && echo --quick) || failed=1

  if [ -n "${OUT:-}" ]; then
    cp "$WORK/smoke.log" "$OUT/smoke_output.log" 2>/dev/null
    cp "$WORK/hcv/commands.log" "$OUT/slice_output.log" 2>/dev/null
    cp "$WORK/hcv/logs/mtrl.log" "$OUT/slice_mtrl.log" 2>/dev/null
    cp "$WORK/hcv/gpu_util.csv" "$OUT/gpu_util.csv" 2>/dev/null
  fi
  echo; echo "== gpu_check done in ${SECONDS} s: $([ $failed = 0 ] && echo ok || echo 'SOME PART FAILED (above)')"
  return $failed
}

if [ -n "${OUT:-}" ]; then main 2>&1 | tee "$OUT/gpu_check.txt"; else main; fi
