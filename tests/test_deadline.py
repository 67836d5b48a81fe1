"""The time budget (training/deadline.py): estimates, the start check, the callback that stops a fold at an
epoch end, `train`'s exit status 75, and train_folds.sh going on after it; a fold stopped unfinished resumes
from the epoch it stopped after."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lresizervit.training.deadline import Deadline, TimeBudgetExceeded, duration, past_epochs, stop_callback
from tests.conftest import ROOT, copy_experiment


class Clock:
    def __init__(self, t: float = 0.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_the_deadline_and_its_tuning_come_from_the_environment():
    assert Deadline.from_env({}) is None
    d = Deadline.from_env({"LRESIZERVIT_DEADLINE": "1800000000", "LRESIZERVIT_DEADLINE_MARGIN": "1.5",
                           "LRESIZERVIT_DEADLINE_RESERVE_S": "10", "LRESIZERVIT_DEADLINE_MIN_START_S": "0"})
    assert (d.at, d.margin, d.reserve_s, d.min_start_s, d.simulate_epoch_s) == (1.8e9, 1.5, 10.0, 0.0, 0.0)
    for name, value in (("LRESIZERVIT_DEADLINE", "tomorrow"), ("LRESIZERVIT_DEADLINE_MARGIN", "-1")):
        with pytest.raises(ValueError, match=name):
            Deadline.from_env({"LRESIZERVIT_DEADLINE": "1800000000", name: value})
    assert [duration(s) for s in (42.4, 185, 3725)] == ["42s", "3m05s", "1h02m"]


def write_history(fold: Path, rows: list[tuple[float, float]]) -> None:
    fold.mkdir(parents=True)
    lines = ["epoch,loss,epoch_seconds,train_seconds"]
    lines += [f"{i + 1},0.5,{epoch_s},{train_s}" for i, (epoch_s, train_s) in enumerate(rows)]
    (fold / "history.csv").write_text("\n".join(lines) + "\n")


def test_a_fold_starts_only_with_time_for_its_next_step(tmp_path):
    write_history(tmp_path / "fold_0", [(100.0, 80.0), (90.0, 75.0)])
    assert past_epochs(tmp_path) == (100.0, 20.0)
    clock = Clock(1000.0)
    d = Deadline(at=1250.0, margin=1.15, reserve_s=60.0, min_start_s=0.0, clock=clock)
    d.check_start(tmp_path, 1, 4, 2, 0)  # its first epoch ~115 s + 60 s: 175 s of the 250 s left
    clock.t = 1100.0
    with pytest.raises(TimeBudgetExceeded) as err:
        d.check_start(tmp_path, 1, 4, 2, 0)
    assert str(err.value).startswith("fold 1: not started: 2m30s left before the time budget ends at ")
    assert "less than its next epoch needs (~2m55s); running it again with more time trains it" in str(err.value)
    # Every epoch done, only the OOF left: 2 views of a 20 s validation pass, x 1.15, + 60 s.
    d.check_start(tmp_path, 1, 4, 2, 4)
    clock.t = 1150.0
    with pytest.raises(TimeBudgetExceeded, match=r"its OOF prediction needs \(~1m46s\).*resumes it after epoch 4"):
        d.check_start(tmp_path, 1, 4, 2, 4)
    # No epoch timed anywhere yet: only the minimum.
    fresh = Deadline(at=1250.0, min_start_s=300.0, clock=clock)
    with pytest.raises(TimeBudgetExceeded, match="the minimum to start a fold"):
        fresh.check_start(tmp_path / "other", 0, 4, 2, 0)


class FakeModel:
    stop_training = False


def run_epochs(cb, clock: Clock, epochs: int, epoch_s: float = 100.0, train_s: float = 80.0) -> int:
    """Drive the callback like `fit` for up to `epochs` epochs; returns how many ran."""
    for epoch in range(epochs):
        cb.on_epoch_begin(epoch)
        clock.t += train_s
        cb.on_test_begin()
        clock.t += epoch_s - train_s
        cb.on_epoch_end(epoch)
        if cb.model.stop_training:
            return epoch + 1
    return epochs


def make_cb(at: float, clock: Clock, epochs: int, model: FakeModel | None = None):
    cb = stop_callback(Deadline(at=at, margin=1.15, reserve_s=60.0, min_start_s=0.0, clock=clock), 3, epochs, 2)
    cb.set_model(model or FakeModel())
    return cb


def test_the_callback_stops_at_the_epoch_end_after_which_the_next_would_not_fit():
    # Each epoch 100 s (20 s of validation): the next one needs 115 s + the OOF 2 x 20 x 1.15 + 60 = 221 s.
    clock = Clock()
    cb = make_cb(400.0, clock, 4)
    assert run_epochs(cb, clock, 4) == 2  # after epoch 1: 300 s left (go on); after epoch 2: 200 s (stop)
    assert cb.stopped.startswith("fold 3: stopped after epoch 2 of 4 to end before the time budget (3m20s left")
    assert "the next epoch ~1m55s plus its OOF ~1m46s); its backup resumes it" in cb.stopped

    clock = Clock()  # the last epoch: only the OOF must fit
    cb = make_cb(150.0, clock, 1)
    assert run_epochs(cb, clock, 1) == 1 and "stopped after epoch 1 of 1" in cb.stopped
    assert "its OOF prediction ~1m46s" in cb.stopped

    clock, model = Clock(), FakeModel()  # patience ended the fold: the OOF fits, the next epoch would not
    cb = make_cb(250.0, clock, 4, model)
    model.stop_training = True
    run_epochs(cb, clock, 1)
    assert cb.stopped is None

    clock = Clock()  # with time, never
    cb = make_cb(10_000.0, clock, 4)
    assert run_epochs(cb, clock, 4) == 4 and cb.stopped is None


def tiny_config(tiny_experiment: Path, tmp_path: Path, name: str, epochs: int) -> Path:
    config = copy_experiment(tiny_experiment, tmp_path / "tree")
    tree = yaml.safe_load(config.read_text())
    tree["name"] = name
    tree["train"]["epochs"] = epochs
    path = tmp_path / "tree" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


@pytest.mark.slow
def test_a_stopped_fold_is_left_unfinished_and_resumes_from_its_last_epoch(tiny_experiment, tmp_path, monkeypatch):
    from lresizervit.config import load_config
    from lresizervit.run import fold_dir
    from lresizervit.training.backup import backup_epoch
    from lresizervit.training.trainer import train_fold

    monkeypatch.delenv("LRESIZERVIT_DEADLINE", raising=False)
    cfg = load_config(tiny_config(tiny_experiment, tmp_path, "budget", 4))
    # Every epoch counts as 1000 s more than it took: epoch 2 ends ~2000 s in, and the next would not fit.
    deadline = Deadline(at=time.time() + 2500, margin=1.0, reserve_s=0.0, min_start_s=0.0, simulate_epoch_s=1000)
    with pytest.raises(TimeBudgetExceeded, match="fold 0: stopped after epoch 2 of 4 to end before the time budget"):
        train_fold(cfg, 0, deadline=deadline)
    out = fold_dir(cfg.run_dir, 0)
    assert not (out / "metrics.json").exists() and not (out / "oof.csv").exists()
    assert backup_epoch(out / "backup") == 2 and len((out / "history.csv").read_text().splitlines()) == 3
    assert (out / "model.weights.h5").is_file()  # the best epoch so far

    metrics = train_fold(cfg, 0)  # no deadline: the fold resumes after epoch 2 and completes
    assert (metrics["resumed_after_epoch"], metrics["epochs"]) == (2, 4)
    history = (out / "history.csv").read_text().splitlines()
    assert [int(line.split(",")[0]) for line in history[1:]] == [1, 2, 3, 4]
    assert not (out / "backup").exists()


def shell(args, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT / "src"), "CUDA_VISIBLE_DEVICES": "",
            **env}
    return subprocess.run([str(a) for a in args], cwd=ROOT, env=full, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_train_exits_75_and_train_folds_sh_goes_on_to_exit_75(tiny_experiment, tmp_path):
    config = tiny_config(tiny_experiment, tmp_path, "late", 2)
    run_dir = tmp_path / "tree" / "models" / "late"
    soon = {"LRESIZERVIT_DEADLINE": f"{time.time() + 30:.0f}"}  # under the 300 s a fold needs to start
    proc = shell([sys.executable, "-m", "lresizervit", "train", config, "--fold", "0"], soon)
    assert proc.returncode == 75, proc.stdout + proc.stderr
    assert proc.stdout.startswith("fold 0: not started: ") and "Traceback" not in proc.stderr
    assert not run_dir.exists()  # nothing written, not even the config

    for parallel in ([], ["--parallel", "2"]):
        codes = tmp_path / f"codes{len(parallel)}.txt"
        proc = shell(["bash", ROOT / "train_folds.sh", config, *parallel], {**soon, "LRESIZERVIT_FOLD_STATUS": codes})
        assert proc.returncode == 75, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "train_folds.sh: folds 0 1 stopped to end before the time budget" in proc.stderr
        assert "late: no fold trained yet; no report written" in proc.stdout  # cv and report still ran
        assert sorted(codes.read_text().splitlines()) == ["0 75", "1 75"]

    # Complete folds are skipped whatever the time left; a bad deadline is one error line.
    done = tmp_path / "tree" / "tiny.yaml"  # the session's tiny experiment, copied: both folds complete
    proc = shell([sys.executable, "-m", "lresizervit", "train", done, "--fold", "1"], soon)
    assert proc.returncode == 0 and "already trained" in proc.stdout, proc.stderr
    proc = shell([sys.executable, "-m", "lresizervit", "train", config, "--fold", "0"],
                 {"LRESIZERVIT_DEADLINE": "soon"})
    assert proc.returncode == 2 and "error: LRESIZERVIT_DEADLINE='soon': not a time in unix seconds" in proc.stderr
    assert json.loads((tmp_path / "tree/models/tiny/fold_1/metrics.json").read_text())["epochs"] == 1
