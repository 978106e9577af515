#!/usr/bin/env bash
# A GPU server check in under 8 minutes (an NVIDIA GPU; figures printed, nothing asserted):
#   1. the quickstart (Dense 512 on MNIST 5k, XLA as Keras resolves it)
#   2. jena_gru (cuDNN GRU) and its mixed-precision twin (--set fit.precision=mixed_float16)
#   3. the Boston K-fold (4 folds, 80 epochs, batch 16), then the same with --workers 2
# Each run: wall time, its metrics, and what the job resolved (precision, loss scaling, XLA,
# steps per execution, strategy, GPUs) from its environment.json.
#
#   benchmarks/gpu_check.sh                      # from the checkout, dlrun on the PATH or in .venv
#   DLRUN=/path/to/dlrun GPU_CHECK_OUT=/tmp/gc benchmarks/gpu_check.sh
#
# jena_gru reads the Jena CSV from $JENA_CSV, data/jena_climate/ or ../shared/datasets/jena_climate/
# (2 epochs of 500 batches); without it, the NYC JFK hourly weather stand-in from
# ../shared/datasets/nyc_weather_2013 (10-day lookback, 24 h ahead; 3 epochs). Neither: skipped.
# GPU_CHECK_ALLOW_CPU=1 runs it without a GPU (shorter; to try the script itself).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [[ -z "${DLRUN:-}" ]]; then
  if [[ -x "$ROOT/.venv/bin/dlrun" ]]; then DLRUN="$ROOT/.venv/bin/dlrun"; else DLRUN="$(command -v dlrun || true)"; fi
fi
[[ -n "$DLRUN" ]] || { echo "gpu_check: no dlrun (install the project, or set DLRUN=/path/to/dlrun)" >&2; exit 2; }
PYTHON="$(dirname "$(readlink -f "$DLRUN")")/python"
[[ -x "$PYTHON" ]] || PYTHON="$(command -v python3)"

QUICK=0
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  if [[ "${GPU_CHECK_ALLOW_CPU:-0}" != 1 ]]; then
    echo "gpu_check: no NVIDIA GPU here (nvidia-smi missing or failing); GPU_CHECK_ALLOW_CPU=1 runs it anyway" >&2
    exit 2
  fi
  QUICK=1
  echo "gpu_check: no GPU — a short run on the CPU, to try the script"
else
  nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader | sed 's/^/gpu: /'
fi
# TensorFlow must see the GPUs nvidia-smi lists (the CUDA wheels of the gpu extra).
TF_GPUS=$("$PYTHON" -c 'import os; os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf; print(tf.__version__, len(tf.config.list_physical_devices("GPU")))' 2>/dev/null | tail -1)
echo "tensorflow ${TF_GPUS% *}: ${TF_GPUS##* } GPU(s) visible"
if [[ $QUICK == 0 && "${TF_GPUS##* }" == 0 ]]; then
  echo "gpu_check: nvidia-smi lists GPUs but TensorFlow sees none: pip install 'dlrun[gpu]' (CUDA and cuDNN wheels)" >&2
  exit 2
fi
OUT="${GPU_CHECK_OUT:-$(mktemp -d -t dlrun-gpu-check.XXXXXX)}"
mkdir -p "$OUT"
echo "dlrun: $DLRUN; output: $OUT"
START=$(date +%s)
SUMMARY="$OUT/figures.tsv"
printf 'run\twall_s\tstatus\tmetrics\tcompute\n' > "$SUMMARY"

# run NAME COMMAND...: time one dlrun command (--json), print and keep its figures.
run() {
  local name="$1"; shift
  local t0 t1 status=0
  t0=$(date +%s.%N)
  "$DLRUN" "$@" -o "$OUT/out" --json > "$OUT/$name.json" 2> "$OUT/$name.log" || status=$?
  t1=$(date +%s.%N)
  "$PYTHON" - "$name" "$t0" "$t1" "$status" "$OUT/$name.json" "$OUT/$name.log" >> "$SUMMARY" <<'EOF'
import json, sys
from pathlib import Path

name, t0, t1, status, out, log = sys.argv[1:]
wall = float(t1) - float(t0)
try:
    summary = json.loads(Path(out).read_text())
except ValueError:
    summary = {}
keys = ("test_loss", "test_accuracy", "test_mae", "val_mae_mean", "val_mae", "val_loss", "mean_val_mae",
        "val_mae_original_units", "test_mae_original_units")
metrics = {k: round(v, 4) for k, v in (summary.get("metrics") or {}).items() if k in keys or k.endswith("_mean")}
compute = {}
run_dir = Path(summary.get("run_dir", "/nonexistent"))
for env in [run_dir / "environment.json", *sorted(run_dir.glob("folds/*/environment.json"))[:1]]:
    if env.is_file():
        compute = json.loads(env.read_text()).get("compute") or compute
short = {k: compute[k] for k in ("precision", "loss_scaling", "jit_compile", "steps_per_execution", "strategy",
                                 "gpus") if k in compute}
state = summary.get("status") or f"exit {status}"
print(f"{name}\t{wall:.1f}\t{state}\t{json.dumps(metrics)}\t{json.dumps(short)}")
line = f"{name:<22} {wall:7.1f} s  {state:<9} {metrics}  {short}"
print(line, file=sys.stderr)
if status != "0":
    print("    " + "\n    ".join(Path(log).read_text().splitlines()[-5:]), file=sys.stderr)
EOF
}

# --- 1. quickstart
if [[ $QUICK == 1 ]]; then Q=(--set fit.epochs=1); else Q=(); fi
run quickstart train recipes/quickstart.yaml "${Q[@]}"

# --- 2. jena_gru and its mixed-precision twin (cuDNN GRU on the GPU)
JENA=""
for candidate in "${JENA_CSV:-}" data/jena_climate/jena_climate_2009_2016.csv \
                 ../shared/datasets/jena_climate/jena_climate_2009_2016.csv; do
  if [[ -n "$candidate" && -f "$candidate" ]]; then JENA="$(readlink -f "$candidate")"; break; fi
done
NYC=../shared/datasets/nyc_weather_2013/nycflights13_weather.csv.gz
if [[ -n "$JENA" ]]; then
  J=(--set "data.path=$JENA" --set fit.epochs=2)
  echo "jena_gru: the Jena CSV $JENA, 2 epochs"
elif [[ -f "$NYC" ]]; then
  "$PYTHON" - "$NYC" "$OUT/jfk.csv" <<'EOF'
import sys

import pandas as pd

columns = ["temp", "dewp", "humid", "wind_dir", "wind_speed", "precip", "pressure", "visib"]
table = pd.read_csv(sys.argv[1])
jfk = table[table.origin == "JFK"][["time_hour", *columns]].reset_index(drop=True)
jfk[columns] = jfk[columns].interpolate(limit_direction="both")
jfk.to_csv(sys.argv[2], index=False)
EOF
  J=(--set "data.path=$OUT/jfk.csv" --set "data.time_column=time_hour" --set data.target=temp
     --set data.lookback=240 --set data.step=1 --set data.delay=24
     --set "data.train={start: 0, end: 5000}" --set "data.validation={start: 5001, end: 7000}"
     --set "data.test={start: 7001}" --set fit.steps_per_epoch=36 --set fit.validation_steps=13
     --set fit.epochs=3)
  echo "jena_gru: no Jena CSV; the NYC JFK hourly stand-in ($NYC), 3 epochs"
else
  J=()
  echo "jena_gru: skipped (no Jena CSV, no ../shared/datasets/nyc_weather_2013)"
fi
if [[ ${#J[@]} -gt 0 ]]; then
  if [[ $QUICK == 1 ]]; then J+=(--set fit.epochs=1 --set fit.steps_per_epoch=5 --set fit.validation_steps=3); fi
  run jena_gru train recipes/jena_gru.yaml "${J[@]}"
  run jena_gru_mixed16 train recipes/jena_gru.yaml "${J[@]}" --set fit.precision=mixed_float16
fi

# --- 3. the Boston K-fold, then with two workers (each its own GPU where there are two)
B=(--set fit.epochs=80 --set fit.batch_size=16)
if [[ $QUICK == 1 ]]; then B=(--set fit.epochs=2 --set fit.batch_size=16); fi
run boston_kfold kfold recipes/boston_housing.yaml "${B[@]}"
GPUS=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
if [[ "${GPUS:-0}" -ge 2 || $QUICK == 1 ]]; then
  run boston_kfold_w2 kfold recipes/boston_housing.yaml "${B[@]}" --workers 2
else  # one GPU: two workers share it (memory growth on), or keep to the CPU
  run boston_kfold_w2 kfold recipes/boston_housing.yaml "${B[@]}" --workers 2 --gpus-per-job 0
fi

echo
echo "figures ($SUMMARY), $(( $(date +%s) - START )) s in all:"
column -t -s $'\t' "$SUMMARY" 2>/dev/null || cat "$SUMMARY"
if grep -qv -e $'\tFINISHED\t' -e '^run' "$SUMMARY"; then
  echo "gpu_check: a run did not finish (its log: $OUT/<run>.log)" >&2
  exit 1
fi
