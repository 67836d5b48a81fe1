"""A fold killed mid-training resumes from its last completed epoch; a complete fold is skipped."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from lresizervit.training.trainer import backup_epoch
from tests.facts import TASK
from tests.test_end_to_end import ROOT, run, tiny_config

pytestmark = pytest.mark.slow


def tiny_experiment(tmp_path: Path, n_train: int, seed: int, train: dict, resizer_mode: str = "learned") -> Path:
    """A synthetic data set, its folds and a tiny config with `train` overrides; returns the config path.

    Made in this process (test_end_to_end runs the `synth` and `folds` commands): two fewer TF imports.
    """
    from lresizervit.config import load_config
    from lresizervit.data.folds import make_folds, write_folds
    from lresizervit.data.schema import read_table
    from lresizervit.data.synth import SynthParams, generate

    generate(tmp_path / "data", n_train, 2, SynthParams(seed=seed, min_side=40, max_side=48, max_long_side=56),
             workers=1)
    cfg_path = tiny_config(tmp_path)
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["train"].update(train)
    cfg["model"]["resizer"]["mode"] = resizer_mode
    cfg_path.write_text(yaml.safe_dump(cfg))
    loaded = load_config(cfg_path)
    folds = make_folds(read_table(tmp_path / "data" / "train.csv", "train", TASK), loaded.data.n_folds,
                       loaded.data.fold_seed, TASK)
    write_folds(folds, loaded.data.folds_csv, TASK)
    return cfg_path


def test_sigterm_then_a_kill_then_resume_then_skip(tmp_path):
    """A Kaggle notebook's time limit arrives as SIGTERM: the process must end within seconds (no cleanup that
    outlasts the grace period) and nothing it wrote may pass for more than it is; the rerun loses at most one
    epoch. That rerun killed (SIGKILL) resumes from its last backed-up epoch; a complete fold is skipped."""
    epochs = 12
    py = sys.executable
    # Stopped after 2 backed-up epochs, then killed 3 later (polled every 50 ms): 12 leave both room.
    cfg_path = tiny_experiment(tmp_path, 24, 3, {"epochs": epochs})
    fold = tmp_path / "models" / "tiny" / "fold_0"
    history = fold / "history.csv"

    proc = train_until_backed_up(cfg_path, fold, 2)
    proc.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    proc.wait(timeout=60)
    assert time.monotonic() - t0 < 10 and proc.returncode == -signal.SIGTERM
    trained = len(pd.read_csv(history))  # epochs that finished before the signal
    assert not (fold / "metrics.json").exists()

    proc = train_until_backed_up(cfg_path, fold, trained + 3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    out = proc.stdout.read()
    resumed = int(out.split("resuming after epoch ")[1].split()[0])
    assert trained - 1 <= resumed <= trained  # at most one finished epoch is trained again
    done_before = backup_epochs(fold)
    assert trained + 3 <= done_before < epochs
    assert not (fold / "metrics.json").exists()  # the killed fold is not complete

    out = run([py, "-m", "lresizervit", "train", str(cfg_path), "--fold", "0"], ROOT).stdout
    assert f"resuming after epoch {done_before}" in out
    # The resumed run trained only the remaining epochs.
    assert f"fold 0 epoch {done_before:3d}" not in out and f"fold 0 epoch {done_before + 1:3d}" in out
    hist = pd.read_csv(history)
    assert hist["epoch"].tolist() == list(range(1, epochs + 1))
    metrics = json.loads((fold / "metrics.json").read_text())
    assert metrics["resumed_after_epoch"] == done_before and metrics["epochs"] == epochs
    assert (fold / "model.weights.h5").is_file() and (fold / "oof.csv").is_file()
    assert not (fold / "backup").exists()  # removed once the fold is complete
    assert any((fold / "logs").rglob("events.out.tfevents.*"))
    assert not [p.name for p in fold.rglob(".*")]  # no temp file of the stopped runs is left behind

    # Complete folds are skipped, untouched; --force retrains.
    stamp = (fold / "metrics.json").stat().st_mtime_ns
    out = run([py, "-m", "lresizervit", "train", str(cfg_path), "--fold", "0"], ROOT).stdout
    assert "already trained" in out and (fold / "metrics.json").stat().st_mtime_ns == stamp
    out = run([py, "-m", "lresizervit", "train", str(cfg_path), "--fold", "0", "--force",
               "--set", f"train.epochs={epochs}", "--set", "train.patience=2"], ROOT, check=False)
    # A changed config is refused even with --force: patience is part of what trained the experiment.
    assert out.returncode == 2 and "train.patience" in out.stderr


def backup_epochs(fold: Path) -> int:
    return backup_epoch(fold / "backup")


def train_until_backed_up(cfg_path: Path, fold: Path, epochs: int, env: dict | None = None,
                          timeout_s: float = 300) -> subprocess.Popen:
    """`lresizervit train CONFIG --fold K` in a subprocess (K from `fold`, its folder), returned still running
    once `epochs` epochs are backed up: the moment to kill it."""
    env = env or {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    k = fold.name.split("_")[-1]
    proc = subprocess.Popen([sys.executable, "-m", "lresizervit", "train", str(cfg_path), "--fold", k], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and backup_epochs(fold) < epochs and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, f"training ended before it could be stopped:\n{proc.stdout.read()}"
    return proc


def test_early_stopping_and_force(tmp_path, capsys):
    """In this process (`main`): what is checked is the trainer's, not the process's (the tests above)."""
    from lresizervit.cli import main

    # A learning rate of ~0 never improves after epoch 1 (no BatchNorm either: the bilinear resizer has
    # none, so nothing moves at all): patience 2 stops after epoch 3.
    cfg_path = tiny_experiment(tmp_path, 16, 4, {"epochs": 30, "patience": 2, "learning_rate": 1e-12,
                                                 "clip_norm": 1.0, "tensorboard": False}, resizer_mode="bilinear")
    assert main(["train", str(cfg_path), "--fold", "1"]) == 0
    assert "stopping early" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "models/tiny/fold_1/metrics.json").read_text())
    assert metrics["epochs"] == 3 and metrics["epochs_planned"] == 30 and metrics["best_epoch"] == 1
    assert not (tmp_path / "models/tiny/fold_1/logs").exists()
    first = (tmp_path / "models/tiny/fold_1/metrics.json").stat().st_mtime_ns
    assert main(["train", str(cfg_path), "--fold", "1", "--force"]) == 0
    assert "already trained" not in capsys.readouterr().out
    assert (tmp_path / "models/tiny/fold_1/metrics.json").stat().st_mtime_ns != first
