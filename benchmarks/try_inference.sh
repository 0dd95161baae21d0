#!/usr/bin/env bash
# The new user's walk through predict, strangers and enrollment on real LFW photos.
#
#   bash benchmarks/try_inference.sh RUN_FOLDER [WORK_DIR]
#
# RUN_FOLDER: a model trained on LFW-8's train split (README, "Use a trained model"). It takes
# photos from ../shared/datasets/lfw-deepfunneled.tgz into WORK_DIR (default: a new temporary
# folder) and, with the `facecls` on PATH:
#   1. predicts five LFW-8 test photos into predictions.csv;
#   2. predicts five photos of people LFW has one photo of (never trained on): they should come
#      back `unknown`;
#   3. enrolls three people outside LFW-8 from 3 photos each, then predicts their other photos
#      with the enrolled copy (and the five strangers again).
set -euo pipefail

run=${1:?usage: try_inference.sh RUN_FOLDER [WORK_DIR]}
work=${2:-$(mktemp -d)}
here=$(cd "$(dirname "$0")" && pwd)
shared=$("${PYTHON:-python3}" "$here/_paths.py")/datasets  # $FACECLS_SHARED, else ../shared
archive=$shared/lfw-deepfunneled.tgz
[ -f "$archive" ] || { echo "$archive: LFW archive not found (set FACECLS_SHARED)" >&2; exit 2; }

known=(Abdullah_Gul/Abdullah_Gul_0001 Donald_Rumsfeld/Donald_Rumsfeld_0090
       Hans_Blix/Hans_Blix_0030 Junichiro_Koizumi/Junichiro_Koizumi_0031
       Robert_Redford/Robert_Redford_0004)  # test split of lfw-benchmark-splits.csv
strangers=(Alexa_Loren Alexa_Vega Alexander_Lukashenko Alexander_Payne Alexandra_Jackson)
new_people=(Ahmed_Chalabi Al_Sharpton Alan_Greenspan)  # 5-7 photos each, not in LFW-8

members=()
for k in "${known[@]}"; do members+=("lfw-deepfunneled/$k.jpg"); done
for s in "${strangers[@]}"; do members+=("lfw-deepfunneled/$s/${s}_0001.jpg"); done
for p in "${new_people[@]}"; do members+=("lfw-deepfunneled/$p"); done
mkdir -p "$work/lfw" "$work/photos" "$work/strangers" "$work/new" "$work/probe"
tar -xzf "$archive" -C "$work/lfw" "${members[@]}"
for k in "${known[@]}"; do cp "$work/lfw/lfw-deepfunneled/$k.jpg" "$work/photos/"; done
for s in "${strangers[@]}"; do cp "$work/lfw/lfw-deepfunneled/$s/${s}_0001.jpg" "$work/strangers/"; done
for p in "${new_people[@]}"; do
    mkdir -p "$work/new/$p"
    mapfile -t files < <(ls "$work/lfw/lfw-deepfunneled/$p" | sort)
    for f in "${files[@]:0:3}"; do cp "$work/lfw/lfw-deepfunneled/$p/$f" "$work/new/$p/"; done
    for f in "${files[@]:3}"; do cp "$work/lfw/lfw-deepfunneled/$p/$f" "$work/probe/"; done
done

show() { cut -d, -f1,5-7 "$1" | sed "s|$work/||"; }
echo "== 1. five test photos of trained people"
facecls predict "$run" "$work/photos" --out "$work/predictions.csv" && show "$work/predictions.csv"
echo "== 2. five strangers"
facecls predict "$run" "$work/strangers" --out "$work/strangers.csv" && show "$work/strangers.csv"
echo "== 3. enroll three new people (3 photos each), then their other photos and the strangers"
facecls enroll "$run" --data "$work/new" --out "$work/enrolled"
facecls predict "$work/enrolled" "$work/probe" --out "$work/enrolled.csv" && show "$work/enrolled.csv"
facecls predict "$work/enrolled" "$work/strangers" --out "$work/enrolled-strangers.csv"
show "$work/enrolled-strangers.csv"
echo "work folder: $work"
