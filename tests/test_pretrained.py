"""Pretrained keras-hub backbones through the commands a user runs: weights fetch / check, the recipe's
train_folds.sh, and prediction in a fresh process after the preset folder is gone (safe mode)."""

from __future__ import annotations

import shutil
import sys
import time

import pandas as pd
import pytest
import yaml

from tests.test_cli import NO_TENSORFLOW
from tests.test_end_to_end import ROOT, run, tiny_config
from tests.test_keras_hub_backbone import write_tiny_preset

PY = sys.executable


def test_weights_fetch_copies_a_preset_folder_whole_and_refuses_to_overwrite(tmp_path):
    """`weights fetch` of a folder and `weights check` of a config naming one (train_folds.sh's first command)
    find the preset without importing Keras or TensorFlow (~7 s on a CPU)."""
    src = write_tiny_preset("vit", tmp_path / "src")
    out = tmp_path / "weights" / "vit"
    fetched = run([PY, "-c", NO_TENSORFLOW, "weights", "fetch", src, "--out", str(out)], ROOT)
    assert "keras_hub:" in fetched.stdout and fetched.stdout.splitlines()[-1] == "EXIT 0 TENSORFLOW False KERAS False"
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in (tmp_path / "src").iterdir())
    again = run([PY, "-m", "lresizervit", "weights", "fetch", src, "--out", str(out)], ROOT, check=False)
    assert again.returncode == 2 and f"--out {out}: exists and is not empty" in again.stderr
    assert not list(out.parent.glob(".*tmp*"))  # no temporary folder left behind
    checked = run([PY, "-c", NO_TENSORFLOW, "weights", "check", str(tiny_config(tmp_path)), "--set",
                   f"model.backbone.name=keras_hub:{out}"], ROOT)
    assert f"keras-hub preset at {out}" in checked.stdout
    assert checked.stdout.splitlines()[-1] == "EXIT 0 TENSORFLOW False KERAS False"


def test_a_preset_name_offline_fails_fast_naming_the_key_and_what_to_attach(tmp_path):
    cfg = tiny_config(tmp_path)
    t0 = time.monotonic()
    proc = run([PY, "-m", "lresizervit", "weights", "check", str(cfg), "--set",
                "model.backbone.name=keras_hub:vit_base_patch16_224_imagenet"], ROOT, check=False)
    assert proc.returncode == 2 and time.monotonic() - t0 < 60
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: model.backbone.name 'keras_hub:vit_base_patch16_224_imagenet' needs the internet")
    assert "attach the Kaggle Model keras/vit/keras/vit_base_patch16_224_imagenet" in line
    assert "weights fetch vit_base_patch16_224_imagenet --out DIR" in line


@pytest.mark.slow
def test_fine_tuned_folds_predict_without_the_preset_folder(tmp_path):
    preset = write_tiny_preset("vit", tmp_path / "preset")  # a 32 px ViT, patch 8, 2 layers
    run([PY, "-m", "lresizervit", "synth", "--out", str(tmp_path / "data"), "--train", "24", "--test", "5",
         "--min-side", "48", "--max-side", "64", "--max-long-side", "96", "--seed", "2"], ROOT)
    cfg = tiny_config(tmp_path)
    tree = yaml.safe_load(cfg.read_text())
    tree["model"]["backbone"] = {"name": f"keras_hub:{preset}"}
    tree["model"]["resizer"].update(target_size=32, zero_init_output=True, clip_output=True)
    tree["train"].update(epochs=2, freeze_backbone_epochs=1, backbone_learning_rate=1e-4, layer_decay=0.8)
    cfg.write_text(yaml.safe_dump(tree))
    out = run(["bash", "train_folds.sh", str(cfg)], ROOT).stdout
    assert f"keras-hub preset at {preset}" in out and "CV RMSE" in out

    shutil.rmtree(preset)  # as in a notebook that has only the packaged experiment attached
    run([PY, "predict.py", str(cfg)], ROOT)
    sub = pd.read_csv(tmp_path / "submissions" / "tiny.csv", dtype={"Id": str})
    assert len(sub) == 5 and sub["Pawpularity"].between(1, 100).all()
    # Training more folds now fails before anything else, with the key named.
    again = run(["bash", "train_folds.sh", str(cfg), "--force"], ROOT, check=False)
    assert again.returncode != 0 and "model.backbone.name 'keras_hub:" in again.stderr
