#!/usr/bin/env bash
# convexp's GPU check: one script for the day a GPU is lent (benchmarks/README.md, "GPU check").
#
#   bash benchmarks/gpu_check.sh            # on the GPU machine: about 6-8 minutes, never more
#   bash benchmarks/gpu_check.sh --dry-run  # every stage on the CPU, tiny sizes (1.5 min idle)
#
# Stages, in this order, each under its own time budget (`timeout`); a stage that fails, times
# out or finds no time left is recorded and the script goes on with the next one:
#   models   python -m convexp model=NAME, every conf/model/*.yaml, default recipe
#   compile  one job (GPU_CHECK_COMPILE_MODEL, default depthwise_dilated) with
#            trainer.compile=false, then trainer.compile=true; whole-job wall times
#   sweep    python -m convexp -m model=depthwise_dilated model.kernel_size=3,5,7
#            model.dilation=1,2,3 (9 jobs; 3 in a dry run); whole wall time
#   tta      python -m convexp.bench --time-to-accuracy --no-throughput (time to 99%)
#   bench    python -m convexp.bench throughput (GPU_CHECK_BENCH_ARGS)
# Every step starts with an empty torch.compile and Triton cache of its own, so its wall time
# includes a cold compile. Writes $OUT/gpu_check.md (the report) and $OUT/gpu_check.tar.gz (run
# directories without checkpoints, bench JSON, logs, results.json); with OUT unset, into
# outputs/gpu_check/<time>/. Scratch files go to GPU_CHECK_WORK (default: a new dir in $TMPDIR).
# On the device machine it first installs .gpu/wheels (hydra-core, omegaconf, antlr4) into a
# temporary --target when hydra is not importable, as /work/shared/gpu/README.md says.
#
# Options:
#   --dry-run              CPU (trainer.device=cpu, --device cpu), tiny sizes, 3-job sweep
#   --stages LIST          comma-separated subset of models,compile,sweep,tta,bench (default all)
#   --out DIR              where the report and archive go (default $OUT)
#   --budget STAGE=SECONDS a stage's time budget (repeatable)
#   --total SECONDS        the whole script's time limit (default 465 on GPU, 600 dry run)
# Environment: PYTHON (default python3), GPU_CHECK_WORK, GPU_CHECK_COMPILE_MODEL,
#   GPU_CHECK_STEP_CAP (one timeout in seconds for every step, instead of the per-step caps),
#   GPU_CHECK_BENCH_ARGS (default on GPU: --models book_cnn,depthwise_dilated
#   --loops textbook,convexp --repeats 1 --steps 500).
# Exit code: 0 when every selected stage passed (setup included), 1 otherwise, 2 on bad usage.

set -u -o pipefail

usage() { sed -n '2,/^$/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd) || exit 2
cd "$ROOT" || exit 2
PY=${PYTHON:-python3}
HELPER="$ROOT/benchmarks/gpu_report.py"
ALL_STAGES=(models compile sweep tta bench)

DRY=0
STAGES=$(IFS=,; echo "${ALL_STAGES[*]}")
OUT_DIR=${OUT:-}
TOTAL=""
declare -A BUDGET_ARG=()
while [ $# -gt 0 ]; do
  case $1 in
    --dry-run) DRY=1 ;;
    --stages) STAGES=${2:-}; shift ;;
    --stages=*) STAGES=${1#*=} ;;
    --out) OUT_DIR=${2:-}; shift ;;
    --out=*) OUT_DIR=${1#*=} ;;
    --total) TOTAL=${2:-}; shift ;;
    --total=*) TOTAL=${1#*=} ;;
    --budget) BUDGET_ARG[${2%%=*}]=${2#*=}; shift ;;
    --budget=*) v=${1#*=}; BUDGET_ARG[${v%%=*}]=${v#*=} ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

is_stage() { local s; for s in "${ALL_STAGES[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }
is_int() { [[ $1 =~ ^[0-9]+$ ]]; }
IFS=, read -r -a SELECTED <<<"$STAGES"
[ ${#SELECTED[@]} -gt 0 ] || { echo "gpu_check.sh: --stages is empty" >&2; exit 2; }
for s in "${SELECTED[@]}"; do
  is_stage "$s" || { echo "gpu_check.sh: unknown stage '$s' (${ALL_STAGES[*]})" >&2; exit 2; }
done
for s in "${!BUDGET_ARG[@]}"; do
  is_stage "$s" && is_int "${BUDGET_ARG[$s]}" \
    || { echo "gpu_check.sh: bad --budget $s=${BUDGET_ARG[$s]}" >&2; exit 2; }
done
[ -z "$TOTAL" ] || is_int "$TOTAL" || { echo "gpu_check.sh: bad --total '$TOTAL'" >&2; exit 2; }

# --- settings per mode -------------------------------------------------------------------------
COMPILE_MODEL=${GPU_CHECK_COMPILE_MODEL:-depthwise_dilated}
declare -A BUDGET
if [ "$DRY" = 1 ]; then
  # Generous budgets: this runs in CI on shared cores; about 1.5 minutes on an idle 2-core VM.
  MODE=dry-run DEV=cpu TOTAL=${TOTAL:-600}
  BUDGET=([models]=200 [compile]=240 [sweep]=120 [tta]=120 [bench]=120)
  JOB_CAP=60 EAGER_CAP=60 COMPILED_CAP=200 MIN_STEP=5
  SIZES=(data.train_size=512 data.val_size=256 data.test_size=256 trainer.max_epochs=1)
  SWEEP=(model.kernel_size=3 model.dilation=1,2,3) SWEEP_JOBS=3
  TTA_ARGS=(--tta-recipe "${SIZES[*]}" --tta-recipe "model=depthwise_dilated ${SIZES[*]}")
  read -r -a BENCH_ARGS <<<"${GPU_CHECK_BENCH_ARGS:---quick --models book_cnn --loops textbook,convexp}"
else
  MODE=gpu DEV=cuda TOTAL=${TOTAL:-465}
  # The stage budgets add up to more than the time limit: a stage that ends early leaves its
  # time to the next ones, and the last (bench) gets what is left, up to its budget.
  BUDGET=([models]=175 [compile]=100 [sweep]=150 [tta]=80 [bench]=120)
  JOB_CAP=70 EAGER_CAP=40 COMPILED_CAP=70 MIN_STEP=15
  SIZES=()
  SWEEP=(model.kernel_size=3,5,7 model.dilation=1,2,3) SWEEP_JOBS=9
  TTA_ARGS=()
  read -r -a BENCH_ARGS <<<"${GPU_CHECK_BENCH_ARGS:---models book_cnn,depthwise_dilated --loops textbook,convexp --repeats 1 --steps 500}"
fi
for s in "${!BUDGET_ARG[@]}"; do BUDGET[$s]=${BUDGET_ARG[$s]}; done
# GPU_CHECK_STEP_CAP: one timeout for every step instead of the per-step caps above (a test on
# a busy machine sets a cap no load reaches; the stage budgets still apply).
if [ -n "${GPU_CHECK_STEP_CAP:-}" ]; then
  is_int "$GPU_CHECK_STEP_CAP" || { echo "gpu_check.sh: bad GPU_CHECK_STEP_CAP" >&2; exit 2; }
  JOB_CAP=$GPU_CHECK_STEP_CAP EAGER_CAP=$GPU_CHECK_STEP_CAP COMPILED_CAP=$GPU_CHECK_STEP_CAP
fi
RESERVE=15     # seconds kept back for the final report and the archive
KILL_GRACE=5   # timeout -k: SIGKILL this long after SIGTERM

STAMP=$(date -u +%Y-%m-%d_%H-%M-%S)
OUT_DIR=${OUT_DIR:-$ROOT/outputs/gpu_check/$STAMP}
WORK=${GPU_CHECK_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")}
mkdir -p "$OUT_DIR" "$WORK/logs" "$WORK/cache" || exit 2
OUT_DIR=$(cd "$OUT_DIR" && pwd) WORK=$(cd "$WORK" && pwd)
REPORT="$OUT_DIR/gpu_check.md" ARCHIVE="$OUT_DIR/gpu_check.tar.gz"
: >"$WORK/steps.tsv"; : >"$WORK/stages.tsv"; : >"$WORK/gpu_check.log"

# --- timing and bookkeeping --------------------------------------------------------------------
now_us() { local t=${EPOCHREALTIME//[.,]/}; echo "$t"; }
T0=$(now_us)
elapsed() { echo $(( ($(now_us) - T0) / 1000000 )); }                  # whole seconds
seconds() { printf '%d.%03d' $(($1 / 1000000)) $(( ($1 % 1000000) / 1000 )); }
say() { printf '[gpu_check %4ss] %s\n' "$(elapsed)" "$*" | tee -a "$WORK/gpu_check.log"; }
min() { local m=$1 x; for x in "$@"; do [ "$x" -lt "$m" ] && m=$x; done; echo "$m"; }

STAGE="" STAGE_END=0 STAGE_T0=0
stage_begin() {  # stage_begin NAME
  STAGE=$1 STAGE_T0=$(now_us) STAGE_END=$(( $(elapsed) + ${BUDGET[$1]} ))
  say "stage $1: budget ${BUDGET[$1]} s"
}
stage_end() {
  printf '%s\t%s\t%s\n' "$STAGE" "${BUDGET[$STAGE]:-}" "$(seconds $(( $(now_us) - STAGE_T0 )))" \
    >>"$WORK/stages.tsv"
  render
}
# plan CAP: the timeout a step of the current stage gets: CAP, cut to what is left of the
# stage's budget and of the whole run's; 0 when that is under MIN_STEP.
plan() {
  local now t; now=$(elapsed)
  t=$(min "$1" $(( STAGE_END - now )) $(( TOTAL - RESERVE - KILL_GRACE - now )))
  [ "$t" -ge "$MIN_STEP" ] && echo "$t" || echo 0
}
# run_step NAME TIMEOUT DIR -- CMD...: run CMD under `timeout`, with an empty compile cache of
# its own, its output in logs/STAGE-NAME.log; one line in steps.tsv.
run_step() {
  local name=$1 t=$2 dir=$3; shift 4
  local log="logs/$STAGE-$name.log" cache="$WORK/cache/$STAGE-$name" rc status start wall
  local cmd="$*"; cmd=${cmd//"$WORK"/\$WORK}
  if [ "$t" -le 0 ]; then
    printf '%s\t%s\tskipped\t\t0\t0\t%s\t\t%s\n' "$STAGE" "$name" "$dir" "$cmd" >>"$WORK/steps.tsv"
    say "  $name: SKIPPED, no time left in the stage's or the run's budget"
    return 1
  fi
  start=$(now_us)
  TORCHINDUCTOR_CACHE_DIR="$cache" TRITON_CACHE_DIR="$cache/triton" \
    timeout -k "$KILL_GRACE" "$t" "$@" </dev/null >"$WORK/$log" 2>&1
  rc=$?
  wall=$(seconds $(( $(now_us) - start )))
  case $rc in 0) status=ok ;; 124|137) status=timeout ;; *) status=failed ;; esac
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$STAGE" "$name" "$status" "$rc" "$wall" "$t" \
    "$dir" "$log" "$cmd" >>"$WORK/steps.tsv"
  say "  $name: $status (exit $rc) in $wall s (timeout $t s)"
  return "$rc"
}
render() {  # the report so far, so that a run cut short still leaves one behind
  timeout 60 "$PY" "$HELPER" report "$WORK" "$REPORT" >/dev/null 2>>"$WORK/logs/report.log"
}

{
  echo "mode=$MODE"; echo "device=$DEV"; echo "stages=$(IFS=,; echo "${SELECTED[*]}")"
  echo "total_s=$TOTAL"; echo "started=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "budgets=$(for s in "${ALL_STAGES[@]}"; do printf '%s=%s ' "$s" "${BUDGET[$s]}"; done)"
  echo "sweep_jobs=$SWEEP_JOBS"; echo "sweep_overrides=${SWEEP[*]}"
  echo "compile_model=$COMPILE_MODEL"; echo "sizes=${SIZES[*]}"
  echo "tta_args=${TTA_ARGS[*]}"; echo "bench_args=${BENCH_ARGS[*]}"
  echo "commit=$(timeout 10 git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "dirty=$(timeout 10 git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo yes || echo no)"
} >"$WORK/meta.txt"
say "convexp GPU check ($MODE, device $DEV), stages ${SELECTED[*]}, time limit $TOTAL s"
say "report: $REPORT; scratch: $WORK"

# --- setup -------------------------------------------------------------------------------------
STAGE=setup STAGE_T0=$(now_us) STAGE_END=$TOTAL
export WANDB_MODE=disabled PYTHONUNBUFFERED=1 HYDRA_FULL_ERROR=1
if [ -d "$ROOT/.gpu/wheels" ] && ! "$PY" -c 'import hydra, omegaconf' >/dev/null 2>&1; then
  SITE=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check_site.XXXXXX")
  trap 'rm -rf "$SITE"' EXIT
  run_step wheels "$(plan 120)" "" -- "$PY" -m pip install -q --no-index --no-deps --no-compile \
    --target "$SITE" "$ROOT"/.gpu/wheels/*.whl
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"  # convexp from this checkout
run_step probe "$(plan 90)" "" -- "$PY" "$HELPER" probe "$WORK"
if command -v nvidia-smi >/dev/null; then
  run_step nvidia-smi "$(plan 30)" "" -- bash -c \
    'nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader \
       >"$1/nvidia-smi.csv" && nvidia-smi' _ "$WORK"
fi
stage_end

selected() { local s; for s in "${SELECTED[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }
convexp_args=(trainer.device="$DEV" logger=none "${SIZES[@]}")

# --- models: every model file, the default recipe ----------------------------------------------
if selected models; then
  stage_begin models
  models=()
  for m in book_cnn standard dilated depthwise_separable depthwise_dilated; do
    [ -f "conf/model/$m.yaml" ] && models+=("$m")
  done
  for f in conf/model/*.yaml; do
    m=$(basename "$f" .yaml)
    [[ " ${models[*]} " == *" $m "* ]] || models+=("$m")
  done
  for m in "${models[@]}"; do
    run_step "$m" "$(plan "$JOB_CAP")" "models/$m" -- "$PY" -m convexp model="$m" \
      "${convexp_args[@]}" hydra.run.dir="$WORK/models/$m"
  done
  stage_end
fi

# --- compile: one job eager, then compiled -----------------------------------------------------
if selected compile; then
  stage_begin compile
  run_step eager "$(plan "$EAGER_CAP")" compile/eager -- "$PY" -m convexp model="$COMPILE_MODEL" \
    "${convexp_args[@]}" trainer.compile=false hydra.run.dir="$WORK/compile/eager"
  run_step compiled "$(plan "$COMPILED_CAP")" compile/compiled -- "$PY" -m convexp \
    model="$COMPILE_MODEL" "${convexp_args[@]}" trainer.compile=true \
    hydra.run.dir="$WORK/compile/compiled"
  stage_end
fi

# --- sweep: kernel x dilation, one process, compile included -----------------------------------
if selected sweep; then
  stage_begin sweep
  run_step sweep "$(plan "${BUDGET[sweep]}")" sweep -- "$PY" -m convexp -m model=depthwise_dilated \
    "${SWEEP[@]}" "${convexp_args[@]}" hydra.sweep.dir="$WORK/sweep"
  stage_end
fi

# --- tta: convexp.bench, time to 99% test accuracy ---------------------------------------------
if selected tta; then
  stage_begin tta
  mkdir -p "$WORK/bench"
  t=$(plan "${BUDGET[tta]}")
  run_step tta "$t" bench/tta.json -- "$PY" -m convexp.bench --device "$DEV" --time-to-accuracy \
    --no-throughput "${TTA_ARGS[@]}" --timeout $(( t / 2 > 10 ? t / 2 : 10 )) \
    --out "$WORK/bench/tta.json"
  stage_end
fi

# --- bench: convexp.bench throughput -----------------------------------------------------------
if selected bench; then
  stage_begin bench
  mkdir -p "$WORK/bench"
  t=$(plan "${BUDGET[bench]}")
  run_step throughput "$t" bench/throughput.json -- "$PY" -m convexp.bench --device "$DEV" \
    "${BENCH_ARGS[@]}" --timeout $(( t / 2 > 10 ? t / 2 : 10 )) --out "$WORK/bench/throughput.json"
  stage_end
fi

# --- the report and the archive ----------------------------------------------------------------
say "writing $REPORT and $ARCHIVE"
echo "finished=$(date -u +%Y-%m-%dT%H:%M:%SZ)" >>"$WORK/meta.txt"
echo "wall_s=$(seconds $(( $(now_us) - T0 )))" >>"$WORK/meta.txt"
timeout 60 "$PY" "$HELPER" report "$WORK" "$REPORT" --final 2>>"$WORK/logs/report.log"
verdict=$?
if [ "$verdict" != 0 ] && [ "$verdict" != 10 ]; then
  { echo "# convexp GPU check: the report helper failed (exit $verdict)"; echo
    echo '```text'; cat "$WORK/meta.txt" "$WORK/stages.tsv" "$WORK/steps.tsv"
    tail -n 40 "$WORK/logs/report.log"; echo '```'; } >"$REPORT"
fi
cp "$REPORT" "$WORK/gpu_check.md" 2>/dev/null
timeout 60 "$PY" "$HELPER" archive "$WORK" "$ARCHIVE" 2>>"$WORK/logs/report.log" \
  || { say "archive FAILED:"; tail -n 5 "$WORK/logs/report.log"; verdict=1; }
echo
cat "$REPORT"
echo
say "done in $(seconds $(( $(now_us) - T0 ))) s: $([ "$verdict" = 0 ] && echo 'every stage passed' || echo 'some stage FAILED')"
say "wrote $REPORT and $ARCHIVE"
[ "$verdict" = 0 ]
