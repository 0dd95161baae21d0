#!/usr/bin/env bash
# facecls GPU check: one script for a lent H100/H200, under 8 minutes, one table at the end.
#
# It runs, in this order (each step under its own time limit):
#   1. the tests marked as needing CUDA           pytest -m cuda               (<= 90 s)
#   2. training throughput, ResNet-18 at 224 px   benchmarks/throughput.py --device cuda
#      --size 224 --batch 256: (a) ceiling, (b) facecls, (c) ImageFolder loop; b/a, b/c  (<= 120 s)
#   3. LFW-8 time to accuracy at 112 px           benchmarks/time_to_accuracy.py: ResNet-18 from
#      scratch, MobileNetV2 ImageNet, FaceNet probe, FaceNet fine-tuning                 (<= 260 s)
# then prints one table with the goals (b/a >= 0.85, b/c >= 6, LFW-8 0.86 / 0.92 within 60 s).
#
# The device machine has no ../shared: give the folder benchmarks/pack_device_data.py wrote
# (LFW-8 at 112 px, its split rows, float16 FaceNet and MobileNetV2 weights; git-ignored):
#
#   python benchmarks/pack_device_data.py                # here, once: writes device_data/
#   bash benchmarks/gpu_check.sh device_data              # there (or FACECLS_DEVICE_DATA=...)
#   bash benchmarks/gpu_check.sh --dry-run device_data    # anywhere: print the plan only
#
# Note: the packed images are 112 px, so the 224 px throughput run decodes upsampled images
# (the same pixels count as the real 224 px run; the decode cost is not what is measured).
set -uo pipefail

DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; shift; fi
DATA="${1:-${FACECLS_DEVICE_DATA:-device_data}}"
OUT="${GPU_CHECK_OUT:-runs/gpu-check}"
PY="${PYTHON:-python}"
cd "$(dirname "$0")/.."
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
export FACECLS_CACHE="$OUT/cache"

STEP1=(timeout 90 "$PY" -m pytest -q -m cuda -rs -p no:cacheprovider tests)
STEP2=(timeout 120 "$PY" benchmarks/throughput.py --device cuda --size 224 --batch 256
       --models resnet18 --data "$DATA/lfw8" --min-images 8)
STEP3=(timeout 260 "$PY" benchmarks/time_to_accuracy.py --data "$DATA" --device cuda --size 112
       --out "$OUT/runs" --json "$OUT/time_to_accuracy.json")

echo "facecls GPU check: data $DATA, results in $OUT"
echo "  1. ${STEP1[*]}"
echo "  2. ${STEP2[*]}"
echo "  3. ${STEP3[*]}"
missing=0
for f in lfw8 lfw-benchmark-splits.csv facenet.safetensors mobilenet_v2.safetensors; do
    if [[ ! -e "$DATA/$f" ]]; then echo "  missing: $DATA/$f (run benchmarks/pack_device_data.py)"; missing=1; fi
done
if [[ $DRY == 1 ]]; then
    "$PY" benchmarks/time_to_accuracy.py --data "$DATA" --size 112 --dry-run
    echo "dry run: nothing was run"
    exit 0
fi
if [[ $missing == 1 ]]; then exit 2; fi

mkdir -p "$OUT"
started=$(date +%s)
"${STEP1[@]}" 2>&1 | tee "$OUT/cuda_tests.txt"
"${STEP2[@]}" 2>&1 | tee "$OUT/throughput.txt"
"${STEP3[@]}" 2>&1 | tee "$OUT/time_to_accuracy.txt"
elapsed=$(( $(date +%s) - started ))

"$PY" benchmarks/gpu_check_table.py "$OUT" "$elapsed"
