#!/usr/bin/env bash
# Train every fold of an experiment, one process per fold (frees accelerator memory between folds),
# then collect the out-of-fold predictions into models/<exp>/cv.json.
#   bash train_folds.sh [CONFIG] [FOLD ...] [--force] [--set KEY=VALUE ...]
# The folds file is written first if it does not exist yet; the fold list comes from it.
# Complete folds are skipped (--force retrains them); a fold killed mid-training resumes where it stopped.
set -euo pipefail
PYTHON=${PYTHON:-python}
CONFIG=configs/default.yaml
if [[ $# -gt 0 && $1 != --* && ! $1 =~ ^[0-9]+$ ]]; then CONFIG=$1; shift; fi
FOLDS=()
SETS=()
FORCE=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --set) SETS+=(--set "$2"); shift 2 ;;
    --set=*) SETS+=(--set "${1#--set=}"); shift ;;
    --force) FORCE=(--force); shift ;;
    *[!0-9]*|'') echo "train_folds.sh: '$1' is neither a fold number, --force nor --set KEY=VALUE" >&2; exit 2 ;;
    *) FOLDS+=("$1"); shift ;;
  esac
done
# Pretrained weights that are not there fail here, in seconds, before any folds or data are touched.
"$PYTHON" -m lresizervit weights check "$CONFIG" ${SETS[@]+"${SETS[@]}"}
# Every image decodes (truncated or empty files are named with their row and Id) and duplicate photos are
# found; results are cached beside the folds file, so a rerun only decodes what changed.
"$PYTHON" -m lresizervit check-data "$CONFIG" ${SETS[@]+"${SETS[@]}"}
"$PYTHON" -m lresizervit folds "$CONFIG" --if-missing ${SETS[@]+"${SETS[@]}"}
if [[ ${#FOLDS[@]} -eq 0 ]]; then
  read -r -a FOLDS <<< "$("$PYTHON" -m lresizervit list-folds "$CONFIG" ${SETS[@]+"${SETS[@]}"})"
fi
for fold in "${FOLDS[@]}"; do
  "$PYTHON" -m lresizervit train "$CONFIG" --fold "$fold" ${FORCE[@]+"${FORCE[@]}"} ${SETS[@]+"${SETS[@]}"}
done
# Prints the CV table once every fold is done; with some folds still missing it says which.
"$PYTHON" -m lresizervit cv "$CONFIG" --if-complete ${SETS[@]+"${SETS[@]}"}
# Figures and report.md in models/<exp>/report/, once cv.json exists.
"$PYTHON" -m lresizervit report "$CONFIG" --if-complete ${SETS[@]+"${SETS[@]}"}
