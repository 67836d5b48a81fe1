"""The whole path a user runs, with the real commands: synth → folds → train_folds.sh → predict.py.
Tiny images, 2 folds, 1 epoch: it checks the plumbing and the artefacts, not the accuracy."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.test_cli import NO_TENSORFLOW
from tests.tiny import shrink_model

ROOT = Path(__file__).resolve().parents[1]


def run(args, cwd, check=True):
    env = {**os.environ, "PYTHON": sys.executable, "NO_ALBUMENTATIONS_UPDATE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def tiny_config(tmp_path: Path, name="tiny") -> Path:
    cfg = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    cfg["name"] = name
    cfg["output_dir"] = str(tmp_path / "models")
    cfg["data"].update(dir=str(tmp_path / "data"), folds_csv=str(tmp_path / "folds.csv"), n_folds=2,
                       image_size=32)
    shrink_model(cfg)
    cfg["train"].update(epochs=1, batch_size=8)
    cfg["predict"].update(out_dir=str(tmp_path / "submissions"), batch_size=8)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_synth_folds_train_predict(tmp_path):
    py = sys.executable
    run([py, "-m", "lresizervit", "synth", "--out", str(tmp_path / "data"), "--train", "36", "--test", "7",
         "--min-side", "48", "--max-side", "64", "--max-long-side", "96", "--seed", "1"], ROOT)
    cfg = tiny_config(tmp_path)
    out = run(["bash", "train_folds.sh", str(cfg)], ROOT).stdout
    assert "CV RMSE" in out

    run_dir = tmp_path / "models" / "tiny"
    folds = pd.read_csv(tmp_path / "folds.csv", dtype={"Id": str})
    assert sorted(folds["kfold"].unique()) == [0, 1]
    for k in (0, 1):
        fold = run_dir / f"fold_{k}"
        assert (fold / "model.weights.h5").stat().st_size > 0
        history = pd.read_csv(fold / "history.csv")
        assert len(history) == 1 and {"loss", "rmse", "val_rmse", "lr"} <= set(history.columns)
        oof = pd.read_csv(fold / "oof.csv", dtype={"Id": str})
        assert list(oof.columns) == ["Id", "kfold", "Pawpularity", "pred"]
        assert (oof["kfold"] == k).all() and oof["pred"].between(1, 100).all()
        assert set(oof["Id"]) == set(folds.loc[folds["kfold"] == k, "Id"])
        metrics = json.loads((fold / "metrics.json").read_text())
        assert metrics["n_folds"] == 2 and metrics["epochs"] == 1 and metrics["train_images_per_second"] > 0
        # the recorded RMSE is the one of the OOF file, in Pawpularity units
        assert metrics["val_rmse"] == pytest.approx(np.sqrt(np.mean((oof["Pawpularity"] - oof["pred"]) ** 2)))

    cv = json.loads((run_dir / "cv.json").read_text())
    all_oof = pd.read_csv(run_dir / "oof.csv", dtype={"Id": str})
    assert len(all_oof) == 36 and cv["n_oof"] == 36 and cv["n_folds"] == 2
    assert cv["cv_rmse"] == pytest.approx(np.sqrt(np.mean((all_oof["Pawpularity"] - all_oof["pred"]) ** 2)))
    assert cv["noise_floor_rmse"] > 0 and cv["constant_baseline_rmse"] > 0
    # The honest constant baseline: each fold predicts the mean of its own training part.
    const = folds["kfold"].map({k: folds.loc[folds["kfold"] != k, "Pawpularity"].mean() for k in (0, 1)})
    assert cv["constant_baseline_rmse"] == pytest.approx(np.sqrt(np.mean((folds["Pawpularity"] - const) ** 2)))
    report = run_dir / "report" / "report.md"
    assert report.is_file() and "learning_curves.png" in report.read_text()
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["name"] == "tiny" and saved["train"]["epochs"] == 1

    table = run([py, "predict.py", str(cfg)], ROOT).stdout
    sub_path = tmp_path / "submissions" / "tiny.csv"
    assert str(sub_path) in table and "hidden-test RMSE" in table
    sub = pd.read_csv(sub_path, dtype={"Id": str})
    test = pd.read_csv(tmp_path / "data" / "test.csv", dtype={"Id": str})
    assert sub["Id"].tolist() == test["Id"].tolist()
    assert sub["Pawpularity"].between(1, 100).all()
    assert run([py, "-m", "lresizervit", "validate", str(sub_path), "--test-csv",
                str(tmp_path / "data" / "test.csv")], ROOT).returncode == 0

    # Training one fold again under a changed config would mix two models in one CV: refused, by key.
    bad = run(["bash", "train_folds.sh", str(cfg), "1", "--set", "train.learning_rate=0.5"], ROOT, check=False)
    assert bad.returncode != 0 and "train.learning_rate" in bad.stderr

    # A fold missing its model: the predictor refuses instead of writing a submission from one fold.
    before = sub_path.read_bytes()
    (run_dir / "fold_1" / "model.weights.h5").unlink()
    bad = run([py, "-c", NO_TENSORFLOW, "predict", str(cfg)], ROOT, check=False)
    assert bad.returncode == 0 and "folds [1] of 2 are not trained" in bad.stderr
    # found before Keras starts
    assert bad.stdout.strip().splitlines()[-1] == "EXIT 2 TENSORFLOW False KERAS False"
    assert sub_path.read_bytes() == before


@pytest.mark.slow
def test_train_refuses_bad_data_before_training(tmp_path):
    py = sys.executable
    run([py, "-m", "lresizervit", "synth", "--out", str(tmp_path / "data"), "--train", "12", "--test", "2",
         "--min-side", "48", "--max-side", "64", "--max-long-side", "64"], ROOT)
    cfg = tiny_config(tmp_path)
    run([py, "-m", "lresizervit", "folds", str(cfg)], ROOT)
    victim = pd.read_csv(tmp_path / "folds.csv", dtype={"Id": str})["Id"].iloc[4]
    (tmp_path / "data" / "train" / f"{victim}.jpg").unlink()
    bad = run([py, "-m", "lresizervit", "train", str(cfg), "--fold", "0"], ROOT, check=False)
    assert bad.returncode == 2
    assert victim in bad.stderr and "row 5" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "models").exists()


@pytest.mark.slow
def test_train_from_tfrecords(tmp_path):
    """One set of records, written once, trains a fold through either augmentation path (albumentations, and
    the pure-TF one a TPU input host needs)."""
    py = sys.executable
    run([py, "-m", "lresizervit", "synth", "--out", str(tmp_path / "data"), "--train", "20", "--test", "3",
         "--min-side", "40", "--max-side", "48", "--max-long-side", "56", "--seed", "2"], ROOT)
    cfg = tiny_config(tmp_path)
    run([py, "-m", "lresizervit", "folds", str(cfg)], ROOT)
    records = ["--set", "data.tfrecords=true"]
    out = run([py, "-m", "lresizervit", "tfrecords", str(cfg), *records], ROOT).stdout
    assert "wrote" in out and "tfrecords_32" in out
    for pure_tf in ("false", "true"):
        sets = [*records, "--set", f"data.pure_tf_augment={pure_tf}"]
        out = run([py, "-c", NO_TENSORFLOW, "tfrecords", str(cfg), "--if-missing", *sets], ROOT).stdout
        # Records up to date are kept without starting TensorFlow, which only writing them needs.
        assert "up to date" in out and out.strip().splitlines()[-1] == "EXIT 0 TENSORFLOW False KERAS False"
    folds = pd.read_csv(tmp_path / "folds.csv", dtype={"Id": str})
    expected = folds[folds["kfold"] == 1]
    for pure_tf in ("false", "true"):
        name = f"pure_tf_{pure_tf}"
        run([py, "-m", "lresizervit", "train", str(cfg), "--fold", "1", *records, "--set", f"name={name}",
             "--set", f"data.pure_tf_augment={pure_tf}"], ROOT)
        oof = pd.read_csv(tmp_path / "models" / name / "fold_1" / "oof.csv", dtype={"Id": str})
        # Row for row the fold's Ids, in the folds file's order, with their own targets.
        assert oof["Id"].tolist() == expected["Id"].tolist(), pure_tf
        assert oof["Pawpularity"].tolist() == expected["Pawpularity"].tolist(), pure_tf
    # Records from another folds file are refused before training.
    run([py, "-m", "lresizervit", "folds", str(cfg), "--set", "data.fold_seed=9"], ROOT)
    bad = run([py, "-m", "lresizervit", "train", str(cfg), "--fold", "0", *records, "--set", "data.fold_seed=9",
               "--set", "name=other"], ROOT, check=False)
    assert bad.returncode == 2 and "tfrecords_32" in bad.stderr
