#!/usr/bin/env bash
# Wall time and peak memory of generating a 20,000 x 20,000 px synthetic survey mosaic at 1 cm GSD.
# Usage: experiments/datasets/mosaic_20k.sh [workers]   (writes experiments/datasets/results.md)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=experiments/datasets/data
mkdir -p "$out"
log=$(mktemp)
/usr/bin/time -v .venv/bin/ordnance synth mosaic "$out/survey_20k.tif" --width 20000 --seed 2026 --workers "${1:-2}" \
  2>"$log" | tail -1 > experiments/datasets/results.json
peak_kb=$(grep "Maximum resident set size" "$log" | awk '{print $NF}')
wall=$(grep "Elapsed (wall clock)" "$log" | awk '{print $NF}')
size=$(du -m "$out/survey_20k.tif" | cut -f1)
items=$(.venv/bin/python -c "import pyogrio; print(pyogrio.read_info('$out/survey_20k_truth.gpkg')['features'])")
{
  echo "20,000 x 20,000 px at 1 cm GSD, ${1:-2} worker process(es), $(nproc) cores, $(date +%F)."
  echo
  echo "| wall time | peak RSS of the largest process (MB) | GeoTIFF size (MB) | truth items |"
  echo "| --- | --- | --- | --- |"
  echo "| $wall | $((peak_kb / 1024)) | $size | $items |"
} > experiments/datasets/results.md
cat experiments/datasets/results.md
