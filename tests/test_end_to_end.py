"""The user's commands around training: bad data refused before training, and training from TFRecords.
Tiny images, 2 folds, 1 epoch: they check the plumbing and the artefacts, not the accuracy. (The whole path,
train_folds.sh → predict.py → validate, is the reference run of test_parallel_folds.py's parallel one.)"""

import os
import subprocess
import sys
from pathlib import Path

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
def test_train_from_tfrecords(tmp_path, capsys):
    """One set of records, written once, trains a fold through either augmentation path (albumentations, and
    the pure-TF one a TPU input host needs). The commands run in this process (`main`): a `train` process
    is another test's subject (test_parallel_folds.py), and each would import TensorFlow again (~7 s)."""
    from lresizervit.cli import main

    py = sys.executable
    run([py, "-m", "lresizervit", "synth", "--out", str(tmp_path / "data"), "--train", "20", "--test", "3",
         "--min-side", "40", "--max-side", "48", "--max-long-side", "56", "--seed", "2"], ROOT)
    cfg = str(tiny_config(tmp_path))
    assert main(["folds", cfg]) == 0
    records = ["--set", "data.tfrecords=true"]
    capsys.readouterr()
    assert main(["tfrecords", cfg, *records]) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "tfrecords_32" in out
    for pure_tf in ("false", "true"):
        sets = [*records, "--set", f"data.pure_tf_augment={pure_tf}"]
        out = run([py, "-c", NO_TENSORFLOW, "tfrecords", cfg, "--if-missing", *sets], ROOT).stdout
        # Records up to date are kept without starting TensorFlow, which only writing them needs.
        assert "up to date" in out and out.strip().splitlines()[-1] == "EXIT 0 TENSORFLOW False KERAS False"
    folds = pd.read_csv(tmp_path / "folds.csv", dtype={"Id": str})
    expected = folds[folds["kfold"] == 1]
    for pure_tf in ("false", "true"):
        name = f"pure_tf_{pure_tf}"
        assert main(["train", cfg, "--fold", "1", *records, "--set", f"name={name}",
                     "--set", f"data.pure_tf_augment={pure_tf}"]) == 0
        oof = pd.read_csv(tmp_path / "models" / name / "fold_1" / "oof.csv", dtype={"Id": str})
        # Row for row the fold's Ids, in the folds file's order, with their own targets.
        assert oof["Id"].tolist() == expected["Id"].tolist(), pure_tf
        assert oof["Pawpularity"].tolist() == expected["Pawpularity"].tolist(), pure_tf
    # Records from another folds file are refused before training.
    assert main(["folds", cfg, "--set", "data.fold_seed=9"]) == 0
    capsys.readouterr()
    assert main(["train", cfg, "--fold", "0", *records, "--set", "data.fold_seed=9", "--set", "name=other"]) == 2
    assert "tfrecords_32" in capsys.readouterr().err
