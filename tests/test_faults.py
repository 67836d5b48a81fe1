"""Faults injected while the project writes and reads its files: a full disk, damaged fold files, old pickles.

A full disk is injected two ways. In this process, `full_disk` makes the real file written by
`lresizervit.io_utils` fail with ENOSPC after part of its bytes, as a full disk does. In a subprocess
(`test_disk_filling_up_during_training...`), a real size-limited tmpfs (a user namespace: no root needed) fills
up while the real trainer runs; skipped where user namespaces are not allowed.
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from lresizervit import io_utils
from lresizervit.cli import main
from lresizervit.inference import ensemble
from tests.conftest import copy_experiment
from tests.facts import ID

ROOT = Path(__file__).resolve().parents[1]


class _FullDiskFile(io.FileIO):
    """A real file on which every write stores part of its bytes and then fails as a full disk does."""

    def write(self, b) -> int:
        data = bytes(b)
        super().write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture
def full_disk(monkeypatch):
    """`full_disk(name)`: from now on, files written through io_utils whose name contains `name` hit a full disk;
    `full_disk(None)`: space is back."""

    def arm(name: str | None) -> None:
        if name is None:
            monkeypatch.delattr(io_utils, "open", raising=False)
            return
        real_open = open

        def fake_open(file, mode="r", *args, **kwargs):
            if name in Path(file).name and any(m in mode for m in "wxa"):
                return _FullDiskFile(file, mode.replace("b", ""))
            return real_open(file, mode, *args, **kwargs)

        monkeypatch.setattr(io_utils, "open", fake_open, raising=False)

    return arm


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def _no_temp_files(folder: Path) -> None:
    assert not [p.name for p in folder.rglob(".*.tmp*")]


# ------------------------------------------------------------------------------------------------ full disk

def test_full_disk_while_writing_the_folds_file(tmp_path, full_disk, capsys):
    from lresizervit.data.synth import SynthParams, generate

    generate(tmp_path / "data", 10, 1, SynthParams(seed=0, min_side=24, max_side=28, max_long_side=32), workers=1)
    cfg = tmp_path / "c.yaml"
    folds = tmp_path / "folds.csv"
    cfg.write_text(f"name: x\ndata:\n  dir: {tmp_path / 'data'}\n  folds_csv: {folds}\n  n_folds: 2\n")
    assert main(["folds", str(cfg)]) == 0
    before = folds.read_bytes()
    capsys.readouterr()
    full_disk("folds.csv")
    assert main(["folds", str(cfg), "--set", "data.fold_seed=7"]) == 2
    line = _one_error_line(capsys)
    assert str(folds) in line and "No space left on device" in line and "run the same command again" in line
    assert folds.read_bytes() == before  # the earlier file is whole
    _no_temp_files(tmp_path)


# h5py's words when Keras' save_weights failed at close on a disk that filled after the trainer's space check
# (test_disk_filling_up_during_training... on 2026-12-07: the trainer was stopped between check and write).
_H5PY_CLOSE_ERROR = ("Disable slist on flush dest failure failed (file write failed: time = Mon Dec  7 04:53:52 "
                     "2026\n, filename = '{tmp}', file descriptor = 3, errno = 28, error message = 'No space left "
                     "on device', buf = 0x564be6c64bf8, total write size = 1448, bytes this sub-write = 1448, "
                     "offset = 129000)")


def test_a_write_h5py_reports_as_runtime_error_is_an_os_error_naming_the_file(tmp_path):
    target = tmp_path / "fold_0" / "model.weights.h5"
    target.parent.mkdir()
    target.write_bytes(b"the previous best model")

    def h5py_at_close(tmp: Path) -> None:
        tmp.write_bytes(b"\x89HDF\r\n" + bytes(1000))  # part of a file, as h5py leaves it
        raise RuntimeError(_H5PY_CLOSE_ERROR.format(tmp=tmp))

    with pytest.raises(OSError) as caught:
        io_utils.atomic_write_with(target, h5py_at_close, suffix=".weights.h5")
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(target)
    assert caught.value.strerror == "No space left on device"
    assert target.read_bytes() == b"the previous best model"
    _no_temp_files(tmp_path)

    def a_bug(tmp: Path) -> None:
        raise RuntimeError("Keras saved 3 of the model's 5 variables")

    with pytest.raises(RuntimeError, match="3 of the model's 5"):  # not an OS error: left as it is
        io_utils.atomic_write_with(target, a_bug)
    _no_temp_files(tmp_path)

    # A folder written whole or not at all (a keras-hub preset, whose weights are HDF5 too): the same.
    preset = tmp_path / "preset"
    preset.mkdir()
    (preset / "config.json").write_text("{}")

    def preset_at_close(tmp: Path) -> None:
        tmp.mkdir()
        h5py_at_close(tmp / "model.weights.h5")

    with pytest.raises(OSError) as caught:
        io_utils.atomic_write_folder(preset, preset_at_close)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(preset)
    assert [p.name for p in preset.iterdir()] == ["config.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fold_0", "preset"]  # no temporary folder left


@pytest.fixture(scope="module")
def run_copy(tiny_experiment, tmp_path_factory):
    """Our own copy of the session's tiny trained experiment (2 folds, 1 epoch): these tests damage it."""
    tmp = tmp_path_factory.mktemp("faults") / "tree"
    return tmp, copy_experiment(tiny_experiment, tmp)


@pytest.mark.slow
def test_full_disk_while_writing_the_submission(run_copy, full_disk, capsys):
    tmp, cfg = run_copy
    out = tmp / "submissions" / "full.csv"
    assert main(["predict", str(cfg), "--out", str(out)]) == 0
    before, summary = out.read_bytes(), out.with_suffix(".json").read_bytes()
    capsys.readouterr()
    full_disk("full.csv")
    assert main(["predict", str(cfg), "--out", str(out)]) == 2
    line = _one_error_line(capsys)
    assert str(out) in line and "No space left on device" in line
    assert out.read_bytes() == before and out.with_suffix(".json").read_bytes() == summary
    _no_temp_files(tmp / "submissions")


# ------------------------------------------------------------------------------- damaged files of a fold

def _damage(path: Path, how: str) -> bytes:
    original = path.read_bytes()
    if how == "truncate":
        path.write_bytes(original[: len(original) // 2])
    else:  # bytes overwritten in the middle, the size unchanged
        mid = len(original) // 2
        path.write_bytes(original[:mid] + b"\x00" * 4096 + original[mid + 4096:])
    return original


@pytest.mark.slow
@pytest.mark.parametrize(("name", "fold", "how"), [
    ("model.weights.h5", 1, "truncate"), ("model.weights.h5", 1, "corrupt"), ("model.json", 0, "truncate"),
    ("metrics.json", 0, "truncate"),
    ("oof.csv", 1, "truncate"), ("oof.csv", 0, "corrupt"),
])
def test_a_damaged_fold_file_is_named_with_its_fold_and_the_retrain_command(run_copy, capsys, name, fold, how):
    tmp, cfg = run_copy
    run = tmp / "models" / "tiny"
    path = run / f"fold_{fold}" / name
    if name == "oof.csv" and how == "corrupt":
        original = path.read_bytes()
        path.write_text(path.read_text().replace(",", ";", 3))
    else:
        original = _damage(path, how)
    out = tmp / "submissions" / f"damaged_{fold}_{name}_{how}.csv"
    try:
        commands = [["predict", str(cfg), "--out", str(out)]]
        if not name.startswith("model."):  # cv reads the folds' metrics and OOF, never their models
            commands.append(["cv", str(cfg)])
        if name == "metrics.json":  # `train` would otherwise skip the fold as complete
            commands.append(["train", str(cfg), "--fold", str(fold)])
        for command in commands:
            capsys.readouterr()
            assert main(command) == 2
            line = _one_error_line(capsys)
            assert str(path) in line and f"fold {fold}" in line, line
            assert f"bash train_folds.sh {run / 'config.yaml'} {fold} --force" in line, line
        assert not out.exists() and not out.with_suffix(".json").exists()  # nothing partial was blended
    finally:
        path.write_bytes(original)


@pytest.mark.slow
def test_a_truncated_experiment_oof_is_named_and_never_blended(run_copy, capsys):
    tmp, cfg = run_copy
    # A whole second experiment first: the damaged one must stop the blend even after another was predicted.
    second = tmp / "second.yaml"
    second.write_text(cfg.read_text().replace("name: tiny", "name: tiny2"))
    shutil.copytree(tmp / "models" / "tiny", tmp / "models" / "tiny2")
    (tmp / "models" / "tiny2" / "config.yaml").write_text(
        (tmp / "models" / "tiny2" / "config.yaml").read_text().replace("name: tiny", "name: tiny2"))
    path = tmp / "models" / "tiny" / "oof.csv"
    original = path.read_bytes()
    path.write_bytes(b"\n".join(original.split(b"\n")[:5]) + b"\n")
    out = tmp / "submissions" / "blend.csv"
    try:
        assert main(["predict", str(second), str(cfg), "--out", str(out)]) == 2
        line = _one_error_line(capsys)
        assert str(path) in line and "python -m lresizervit cv" in line
        assert not out.exists()
    finally:
        path.write_bytes(original)
        shutil.rmtree(tmp / "models" / "tiny2")


# ---------------------------------------------------- a fold stopped by a full disk after its last epoch

@pytest.mark.slow
def test_retrain_command_repairs_a_fold_and_a_full_disk_at_its_oof_loses_no_epoch(tiny_experiment, tmp_path,
                                                                                 full_disk, capsys):
    tmp = tmp_path / "tree"
    cfg = copy_experiment(tiny_experiment, tmp)
    run = tmp / "models" / "tiny"
    fold = run / "fold_1"
    original = _damage(fold / "model.weights.h5", "truncate")
    out = tmp / "submissions" / "repaired.csv"
    assert main(["predict", str(cfg), "--out", str(out)]) == 2
    assert "fold 1" in _one_error_line(capsys)
    history = (run / "fold_0" / "history.csv").read_bytes()

    # The printed command retrains the fold (train_folds.sh runs `train CONFIG --fold 1 --force` then `cv`).
    full_disk("oof.csv")
    assert main(["train", str(run / "config.yaml"), "--fold", "1", "--force"]) == 2
    line = _one_error_line(capsys)
    assert str(fold / "oof.csv") in line and "No space left on device" in line
    assert not (fold / "metrics.json").exists() and not (fold / "oof.csv").exists()
    assert (fold / "backup").is_dir() and (fold / "model.weights.h5").read_bytes() != original[: len(original) // 2]
    assert (run / "fold_0" / "history.csv").read_bytes() == history  # the other fold is untouched
    _no_temp_files(run)

    # Space is back: the fold's epoch is not trained again, only its OOF predicted and its files written.
    full_disk(None)
    assert main(["train", str(run / "config.yaml"), "--fold", "1"]) == 0
    printed = capsys.readouterr().out
    assert "were trained before; predicting its OOF" in printed and "fold 1 epoch" not in printed
    metrics = json.loads((fold / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and metrics["resumed_after_epoch"] == 1
    assert not (fold / "backup").exists()
    assert json.loads((run / "cv.json").read_text())["n_oof"] == 24
    assert main(["predict", str(cfg), "--out", str(out)]) == 0


# ------------------------------------------------------------------------------------ old pickled caches

class _WritesAFile:
    """Unpickling this writes `path`: the proof that a pickle was loaded."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (Path.write_text, (Path(self.path), "code ran"))


@pytest.mark.slow
def test_old_pickled_svr_heads_are_refitted_never_loaded(run_copy, monkeypatch, capsys):
    import pickle

    tmp, cfg = run_copy
    run = tmp / "models" / "tiny"
    marker = tmp / "code_ran.txt"
    for k in range(2):
        for name in ("svr_c4.pkl", "svr_c4.joblib", "svr.pkl", "svr_c4.npz"):
            (run / f"fold_{k}" / name).write_bytes(pickle.dumps(_WritesAFile(marker)))
    fitted = []
    original = ensemble._fit_head

    def spy(*args):
        fitted.append(args[5])
        return original(*args)

    monkeypatch.setattr(ensemble, "_fit_head", spy)
    for stale in run.glob("oof_*"):
        stale.unlink()
    assert main(["predict", str(cfg), "--svr", "--out", str(tmp / "submissions" / "svr.csv")]) == 0
    assert fitted == [0, 1] and not marker.exists()
    with open(run / "fold_0" / "svr_c4.npz", "rb") as fh:
        assert fh.read(4) == b"PK\x03\x04"  # the pickle's place now holds the refitted arrays
    sub = pd.read_csv(tmp / "submissions" / "svr.csv", dtype={ID: str})
    assert len(sub) == 5


# ------------------------------------------------------------------- a real disk filling up while training

def _user_namespaces() -> bool:
    try:
        return subprocess.run(["unshare", "-Urm", "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


_IN_NAMESPACE = r"""
set -u
models=$1; cfg=$2; report=$3
mount -t tmpfs -o size=32m tmpfs "$models"
fold="$models/tiny/fold_0"
train() { "$PY" -m lresizervit train "$cfg" --fold 0; }
rows() { if [ -f "$fold/history.csv" ]; then echo $(( $(wc -l < "$fold/history.csv") - 1 )); else echo 0; fi; }
backed_up() { grep -o '"epoch": [0-9]*' "$fold/backup/training_metadata.json" 2>/dev/null | grep -o '[0-9]*$' || echo 0; }
train > "$report/out1" 2> "$report/err1" & pid=$!
# Stop the trainer between two epochs' writes (its last epoch backed up, no file being written), then fill
# the disk but for half a checkpoint: the fault arrives at the next epoch's model or checkpoint, whichever
# comes first, on a disk that is really full.
while kill -0 $pid 2>/dev/null; do
  b=$(backed_up)
  if [ "$b" -ge 2 ]; then
    kill -STOP $pid
    if [ "$(rows)" -eq "$b" ] && ! ls -A "$fold" | grep -q '^\.' && [ "$(backed_up)" -eq "$b" ]; then break; fi
    kill -CONT $pid
  fi
  sleep 0.02
done
free=$(df -B1 --output=avail "$models" | tail -1)
half=$(( $(stat -c %s "$fold/backup/latest.weights.h5") / 2 ))
head -c $(( free - half )) /dev/zero > "$models/ballast"
echo "$b" > "$report/stopped_after"
start=$(date +%s)
kill -CONT $pid
wait $pid; echo $? > "$report/rc1"; echo $(( $(date +%s) - start )) > "$report/seconds1"
cp -r "$models/tiny" "$report/after_fault"
rm "$models/ballast"
train > "$report/out2" 2> "$report/err2"; echo $? > "$report/rc2"
cp -r "$models/tiny" "$report/after_rerun"
"""


@pytest.mark.slow
@pytest.mark.skipif(not _user_namespaces(), reason="needs user namespaces (unshare -Urm) for a size-limited tmpfs")
def test_disk_filling_up_during_training_is_one_error_and_a_rerun_completes_the_fold(tmp_path):
    from tests.test_resume import tiny_experiment

    cfg = tiny_experiment(tmp_path, 24, 3, {"epochs": 8, "tensorboard": False})
    models, report = tmp_path / "models", tmp_path / "report"
    models.mkdir()
    report.mkdir()
    script = tmp_path / "in_namespace.sh"
    script.write_text(_IN_NAMESPACE)
    env = {**os.environ, "PY": sys.executable, "NO_ALBUMENTATIONS_UPDATE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    t0 = time.monotonic()
    subprocess.run(["unshare", "-Urm", "bash", str(script), str(models), str(cfg), str(report)], cwd=ROOT, env=env,
                   check=True, timeout=900)
    assert time.monotonic() - t0 < 900
    err = (report / "err1").read_text()
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert (report / "rc1").read_text().strip() == "2", err[-3000:]
    assert len(errors) == 1 and "No space left on device" in errors[0] and "Traceback" not in err, err[-3000:]
    assert str(models / "tiny" / "fold_0") in errors[0]
    after = report / "after_fault" / "fold_0"
    history = pd.read_csv(after / "history.csv")  # whole, as is every file written before the fault
    assert len(history) >= int((report / "stopped_after").read_text()) >= 2
    assert not (after / "metrics.json").exists()
    assert not [p.name for p in after.rglob(".*")]  # no temp file left behind
    assert (report / "rc2").read_text().strip() == "0", (report / "err2").read_text()[-3000:]
    out2 = (report / "out2").read_text()
    assert "resuming after epoch" in out2
    resumed = int(out2.split("resuming after epoch ")[1].split()[0])
    assert resumed >= len(history) - 1  # at most one epoch is trained again
    metrics = json.loads((report / "after_rerun" / "fold_0" / "metrics.json").read_text())
    assert metrics["epochs"] == 8 and metrics["resumed_after_epoch"] == resumed
    assert pd.read_csv(report / "after_rerun" / "fold_0" / "history.csv")["epoch"].tolist() == list(range(1, 9))
