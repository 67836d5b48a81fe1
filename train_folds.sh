#!/usr/bin/env bash
# Train every fold of an experiment, one process per fold (frees accelerator memory between folds),
# then collect the out-of-fold predictions into models/<exp>/cv.json.
#   bash train_folds.sh [CONFIG] [FOLD ...] [--force] [--set KEY=VALUE ...] [--parallel N]
# The folds file is written first if it does not exist yet; the fold list comes from it.
# Complete folds are skipped (--force retrains them); a fold killed mid-training resumes where it stopped.
# --parallel N trains N folds at once, each process seeing one device of its own (CUDA_VISIBLE_DEVICES: the
# i-th entry of the list you set, else GPU i), e.g. --parallel 2 on Kaggle's GPU T4 x2. Each fold's output
# goes to models/<exp>/logs/fold_<k>.log and, prefixed with [fold k], to the terminal; a failed fold stops
# none of the others, is summed up at the end, and makes the exit status non-zero. On a machine without
# GPUs (or with CUDA_VISIBLE_DEVICES= set empty) the N processes share the CPU cores, which each would use
# alone anyway: it works, but expect no speed-up there.
# With LRESIZERVIT_DEADLINE (unix time; a Kaggle session's time budget) a fold that would not end before it
# stops at an epoch end, unfinished, and `train` exits 75 (EX_TEMPFAIL): that fold counts as interrupted,
# not failed; the other folds are still tried (each one that cannot fit is not started), cv and report run,
# and the script exits 75 unless a fold failed. Running it again, with time, resumes those folds.
# LRESIZERVIT_FOLD_STATUS=FILE appends one line "FOLD EXIT_STATUS" per fold process to FILE.
set -euo pipefail
PYTHON=${PYTHON:-python}
CONFIG=configs/default.yaml
if [[ $# -gt 0 && $1 != --* && ! $1 =~ ^[0-9]+$ ]]; then CONFIG=$1; shift; fi
FOLDS=()
SETS=()
FORCE=()
PARALLEL=1
while [[ $# -gt 0 ]]; do
  case $1 in
    --set) SETS+=(--set "$2"); shift 2 ;;
    --set=*) SETS+=(--set "${1#--set=}"); shift ;;
    --force) FORCE=(--force); shift ;;
    --parallel) PARALLEL=${2-}; shift $(($# > 1 ? 2 : 1)) ;;
    --parallel=*) PARALLEL=${1#--parallel=}; shift ;;
    *[!0-9]*|'') echo "train_folds.sh: '$1' is neither a fold number, --force, --parallel N nor --set KEY=VALUE" >&2; exit 2 ;;
    *) FOLDS+=("$1"); shift ;;
  esac
done
if [[ ! $PARALLEL =~ ^[1-9][0-9]*$ ]]; then
  echo "train_folds.sh: --parallel takes how many folds to train at once (1 or more), not '$PARALLEL'" >&2
  exit 2
fi

# One device per fold process: TensorFlow reserves all the memory of every GPU it sees (JAX 75 %), so two
# folds seeing the same GPU would run out of memory. DEVICES[i] is slot i's CUDA_VISIBLE_DEVICES.
DEVICES=()
if ((PARALLEL > 1)); then
  if [[ -z ${CUDA_VISIBLE_DEVICES+set} ]]; then
    # A slot past the last GPU would see none and silently train on the CPU, many times slower.
    n_gpus=0
    if command -v nvidia-smi > /dev/null; then n_gpus=$(nvidia-smi -L 2> /dev/null | grep -c '^GPU' || true); fi
    if ((n_gpus > 0 && PARALLEL > n_gpus)); then
      echo "train_folds.sh: --parallel $PARALLEL needs $PARALLEL GPUs, nvidia-smi lists $n_gpus; use --parallel $n_gpus" >&2
      exit 2
    fi
    for ((i = 0; i < PARALLEL; i++)); do DEVICES+=("$i"); done
  elif [[ -z $CUDA_VISIBLE_DEVICES ]]; then
    for ((i = 0; i < PARALLEL; i++)); do DEVICES+=(""); done  # GPUs hidden on purpose: all share the CPU
  else
    IFS=, read -r -a listed <<< "$CUDA_VISIBLE_DEVICES"
    if ((${#listed[@]} < PARALLEL)); then
      echo "train_folds.sh: --parallel $PARALLEL needs $PARALLEL devices, CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES lists ${#listed[@]}" >&2
      exit 2
    fi
    DEVICES=("${listed[@]:0:PARALLEL}")
  fi
fi

TEMPFAIL=75
INTERRUPTED=()
record_status() {  # FOLD STATUS
  if [[ -n ${LRESIZERVIT_FOLD_STATUS:-} ]]; then echo "$1 $2" >> "$LRESIZERVIT_FOLD_STATUS"; fi
}
interrupted_exit() {  # exit 75 naming the folds the time budget stopped, if any
  if ((${#INTERRUPTED[@]} > 0)); then
    echo "train_folds.sh: folds ${INTERRUPTED[*]} stopped to end before the time budget (LRESIZERVIT_DEADLINE);" \
      "run the same command again, with time, to resume them" >&2
    exit "$TEMPFAIL"
  fi
}

# Pretrained weights that are not there fail here, in seconds, before any folds or data are touched.
"$PYTHON" -m lresizervit weights check "$CONFIG" ${SETS[@]+"${SETS[@]}"}
# Every image decodes (truncated or empty files are named with their row and Id) and duplicate photos are
# found; results are cached beside the folds file, so a rerun only decodes what changed.
"$PYTHON" -m lresizervit check-data "$CONFIG" ${SETS[@]+"${SETS[@]}"}
"$PYTHON" -m lresizervit folds "$CONFIG" --if-missing ${SETS[@]+"${SETS[@]}"}
if ((PARALLEL == 1)); then
  if [[ ${#FOLDS[@]} -eq 0 ]]; then
    read -r -a FOLDS <<< "$("$PYTHON" -m lresizervit list-folds "$CONFIG" ${SETS[@]+"${SETS[@]}"})"
  fi
  for fold in "${FOLDS[@]}"; do
    status=0
    "$PYTHON" -m lresizervit train "$CONFIG" --fold "$fold" ${FORCE[@]+"${FORCE[@]}"} ${SETS[@]+"${SETS[@]}"} \
      || status=$?
    record_status "$fold" "$status"
    if ((status == TEMPFAIL)); then
      INTERRUPTED+=("$fold")
    elif ((status != 0)); then
      exit "$status"  # a failure stops the loop, as it always did: the next fold would likely fail the same way
    fi
  done
else
  # Two lines: the folds, then the experiment's folder; refuses a train.strategy whose fold process cannot
  # share the machine (multi_worker, tpu).
  PLAN=$("$PYTHON" -m lresizervit list-folds "$CONFIG" --parallel "$PARALLEL" ${SETS[@]+"${SETS[@]}"})
  if [[ ${#FOLDS[@]} -eq 0 ]]; then read -r -a FOLDS <<< "${PLAN%%$'\n'*}"; fi
  # Beside the folds, not in them: `train --force` deletes fold_<k>/ while its log is being written, and
  # fold_<k>/ holds only what the fold produced.
  LOG_DIR=${PLAN#*$'\n'}/logs
  mkdir -p "$LOG_DIR"
  CLAIMS=$(mktemp -d)  # one folder per fold a slot has taken, holding its exit status once it ends
  WORKERS=()

  prefix() {  # FOLD: each line read prefixed with [fold FOLD], so interleaved folds stay readable
    local line
    while IFS= read -r line || [[ -n $line ]]; do printf '[fold %s] %s\n' "$1" "$line"; done
  }

  slot() {  # SLOT DEVICE: train the folds no other slot has taken, one at a time, on DEVICE
    local fold log status
    set +e  # a fold's failure is recorded in its status file; it must not end the slot
    # Slot i tries the i-th fold first, so the first round is fold i on device i whichever slot starts first.
    for fold in "${FOLDS[@]:$1}" "${FOLDS[@]:0:$1}"; do
      mkdir "$CLAIMS/$fold" 2> /dev/null || continue  # mkdir is atomic: exactly one slot takes each fold
      log=$LOG_DIR/fold_$fold.log
      echo "--- $(date '+%F %T') train --fold $fold, slot $1, CUDA_VISIBLE_DEVICES='$2', log $log" \
        | tee -a "$log" | prefix "$fold"
      # tee and prefix ignore INT and TERM: when the pool is stopped they still pass on the fold's last
      # lines, and end when its process does.
      CUDA_VISIBLE_DEVICES=$2 PYTHONUNBUFFERED=1 "$PYTHON" -m lresizervit train "$CONFIG" --fold "$fold" \
        ${FORCE[@]+"${FORCE[@]}"} ${SETS[@]+"${SETS[@]}"} 2>&1 \
        | (trap '' INT TERM; tee -a "$log") | (trap '' INT TERM; prefix "$fold")
      status=${PIPESTATUS[0]}
      echo "$status" > "$CLAIMS/$fold/status"
      record_status "$fold" "$status"
    done
  }

  stop_pool() {  # STATUS: on Ctrl-C or SIGTERM (a notebook's time limit), stop every fold's process, not
    # only this shell
    trap - INT TERM
    echo "train_folds.sh: stopping the folds in training; rerun the same command to resume them" >&2
    local pid
    # TERM, also for Ctrl-C (which reaches only this shell's process group): it also ends each slot's shell,
    # which would otherwise go on to its next fold; a killed fold resumes from its last completed epoch.
    for pid in "${WORKERS[@]}"; do kill -TERM -- "-$pid" 2> /dev/null || true; done
    for pid in "${WORKERS[@]}"; do
      while kill -0 -- "-$pid" 2> /dev/null; do sleep 0.2; done
    done
    exit "$1"
  }

  summary() {  # on exit: the failed folds last, where they cannot scroll away
    local status=$? fold code
    trap - EXIT
    for fold in "${FOLDS[@]}"; do
      code=$(cat "$CLAIMS/$fold/status" 2> /dev/null || echo 0)
      ((code != 0)) || continue
      if ((code == TEMPFAIL)); then  # stopped for the time budget, resumable: not a failure
        INTERRUPTED+=("$fold")
        rm "$CLAIMS/$fold/status"
        continue
      fi
      echo "train_folds.sh: fold $fold failed (exit status $code), log $LOG_DIR/fold_$fold.log; its last lines:" >&2
      tail -n 5 "$LOG_DIR/fold_$fold.log" | sed 's/^/    /' >&2
      rm "$CLAIMS/$fold/status"  # a fold named twice on the command line is summed up once
      ((status != 0)) || status=$code
    done
    rm -rf "$CLAIMS"
    if ((status == 0)); then interrupted_exit; fi
    exit "$status"
  }

  trap summary EXIT
  trap 'stop_pool 130' INT
  trap 'stop_pool 143' TERM
  echo "train_folds.sh: folds ${FOLDS[*]}, $PARALLEL at a time; logs in $LOG_DIR/"
  # Each slot in a process group of its own (set -m), so stop_pool reaches its fold's process and pipes.
  set -m
  for ((i = 0; i < PARALLEL; i++)); do
    slot "$i" "${DEVICES[i]}" &
    WORKERS+=($!)
  done
  set +m
  wait "${WORKERS[@]}"
fi
# Prints the CV table once every fold is done; with some folds still missing it says which.
"$PYTHON" -m lresizervit cv "$CONFIG" --if-complete ${SETS[@]+"${SETS[@]}"}
# Figures and report.md in models/<exp>/report/, once cv.json exists.
"$PYTHON" -m lresizervit report "$CONFIG" --if-complete ${SETS[@]+"${SETS[@]}"}
interrupted_exit  # (with --parallel, the summary on exit says it)
