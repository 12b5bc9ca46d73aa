#!/usr/bin/env bash
# Recipe variants of configs/synthetic_resnet18.yaml trained side by side on one GPU, with the CPU recipe's exact
# schedule and precision (bf16), so that their learning curves predict what each reaches in the 60-minute CPU
# budget (the base recipe reached 0.839 here and 0.835 on the CPU).
#   bash experiments/recipes/gpu_sweep.sh VARIANTS OUT_DIR [extra LightningCLI args for every run]
# VARIANTS: a file of lines "name LightningCLI-arguments" (experiments/recipes/sweep-*.txt); all run at once.
# Needs the train extra importable (ordnance.* on PYTHONPATH) and data/synthetic-1cm (generated when missing).
set -u
variants=${1:?variants file}; out=${2:?output folder}; shift 2
extra=("$@")
mkdir -p "$out"
py=${PYTHON:-python3}
export OMP_NUM_THREADS=2 PYTHONUNBUFFERED=1
# The recipe's own data module generates the tiles once, before the runs start side by side.
$py - <<'PY'
import yaml
from ordnance.datasets.datamodule import DetectionDataModule, SyntheticData
data = yaml.safe_load(open("configs/synthetic_resnet18.yaml"))["data"]
data["synthetic"] = SyntheticData(**data["synthetic"])
DetectionDataModule(**data).prepare_data()
PY
run() {
  local name=$1; shift
  local start=$SECONDS
  timeout "${SWEEP_TIMEOUT:-330}" $py -m ordnance.training.cli fit --config configs/synthetic_resnet18.yaml "$@" \
    --trainer.logger=lightning.pytorch.loggers.CSVLogger --trainer.logger.save_dir="$out/$name" \
    --trainer.enable_progress_bar=false "${extra[@]}" </dev/null >"$out/$name.log" 2>&1
  echo "$name rc=$? wall=$((SECONDS - start))s" >>"$out/walls.txt"
}
while read -r name args; do
  [[ -z $name || $name == \#* ]] && continue
  # shellcheck disable=SC2086
  run "$name" $args &
done <"$variants"
wait
cat "$out/walls.txt"
$py - "$out" <<'PY'
import csv, sys
from pathlib import Path
for path in sorted(Path(sys.argv[1]).glob("*/lightning_logs/*/metrics.csv")):
    rows = [r for r in csv.DictReader(open(path)) if r.get("val/recall")]
    print(path.parts[-4])
    for r in rows:
        print(f"  epoch {r['epoch']:>3} step {r['step']:>5} recall@p0.5 {float(r['val/recall']):.3f} "
              f"hazard_ap {float(r['val/hazard_ap']):.3f} max_recall {float(r['val/hazard_recall_max']):.3f} "
              f"map50 {float(r['val/map50']):.3f}")
PY
