"""Two workers on 127.0.0.1 train one fold together with MultiWorkerMirroredStrategy, through the real
`python -m lresizervit train`, and end with identical weights.

Plain tf.distribute.MultiWorkerMirroredStrategy fails under Keras 3.15 (its `fit` reduces the nested first
batch and scalar metrics in ways that strategy does not support); `make_strategy("multi_worker")` returns
the subclass in lresizervit.training.strategy that accepts them. Real processes, real collectives over
gRPC, a tiny real model, `fit` with validation, the trainer's artefacts.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.test_resume import tiny_experiment

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:  # held together, so the n ports differ
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def train_two_workers(cfg_path: Path, *args: str) -> list[subprocess.CompletedProcess]:
    """Run `train` on two workers at once; a hung collective fails the test instead of hanging CI."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    procs = []
    for index in range(2):
        env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
               "CUDA_VISIBLE_DEVICES": "",
               "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        procs.append(subprocess.Popen([sys.executable, "-m", "lresizervit", "train", str(cfg_path), *args],
                                      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    done = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=150)
            done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return done


def test_two_workers_train_together(tmp_path):
    from lresizervit.models.fold_model import load_fold_model

    # 16 images, fold 0: 8 train = one global batch of 2 replicas × 4.
    cfg_path = tiny_experiment(tmp_path, 16, 5, {"epochs": 2, "batch_size": 4, "strategy": "multi_worker",
                                                 "tensorboard": False})
    chief, worker = train_two_workers(cfg_path, "--fold", "0", "--set", "predict.tta=none")
    for proc in (chief, worker):
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "_MultiWorkerMirroredStrategy with 2 replica(s), global batch 8" in proc.stdout
    # The chief writes the experiment; worker 1 writes its copy beside it, never the same files.
    fold = tmp_path / "models" / "tiny" / "fold_0"
    fold_w = tmp_path / "models" / ".worker_1" / "tiny" / "fold_0"
    for d in (fold, fold_w):
        assert {"model.weights.h5", "history.csv", "oof.csv", "metrics.json"} <= {p.name for p in d.iterdir()}
    a, b = load_fold_model(fold / "model.weights.h5").get_weights(), load_fold_model(fold_w / "model.weights.h5").get_weights()
    assert len(a) == len(b) > 0
    for wa, wb in zip(a, b, strict=True):
        np.testing.assert_array_equal(wa, wb)
    # Losses and validation RMSE are all-reduced: the same on both workers, finite, two epochs.
    ha, hb = pd.read_csv(fold / "history.csv"), pd.read_csv(fold_w / "history.csv")
    assert ha["epoch"].tolist() == [1, 2]
    pd.testing.assert_series_equal(ha["loss"], hb["loss"])
    pd.testing.assert_series_equal(ha["val_rmse"], hb["val_rmse"])
    assert np.isfinite(ha[["loss", "val_rmse"]].to_numpy()).all()
    assert json.loads((fold / "metrics.json").read_text())["replicas"] == 2

    # A worker that would skip or resume alone leaves the others in a collective: both refuse, clearly.
    (fold_w / "metrics.json").unlink()
    for proc in train_two_workers(cfg_path, "--fold", "0", "--set", "predict.tta=none"):
        assert proc.returncode == 2
        assert "error: the workers disagree" in proc.stderr and "fold_complete=1" in proc.stderr
