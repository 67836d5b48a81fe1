"""Pretrained keras-hub backbones through the commands a user runs: weights fetch / check and an offline preset
name. The recipe's train_folds.sh on a preset folder and prediction after the folder is gone are
test_transfer's end-to-end run (its pretrained arm)."""

from __future__ import annotations

import sys
import time

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
