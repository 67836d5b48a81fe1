"""`python -m lresizervit transfer`: the presets it writes (scratch, and the pretrained backbone exported from
a trained regressor) load through `keras_hub:` with exactly their weights; argument errors are named before
anything runs; and the whole command end to end, tiny."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import keras_hub
import numpy as np
import pandas as pd
import pytest
import yaml
from keras import ops

from lresizervit.cli import main
from lresizervit.comparison import detail_survival
from lresizervit.config import BackboneConfig, ModelConfig, ResizerConfig, load_config
from lresizervit.models.backbones import build_backbone
from lresizervit.models.regressor import build_regressor, make_loss
from lresizervit.models.resizer import FixedResize
from lresizervit.transfer import (
    ARCHITECTURE,
    ARMS,
    export_pretrained_preset,
    preset_weights,
    relative_change,
    run_transfer,
    weight_gap,
    write_scratch_preset,
)
from tests.facts import META_COLUMNS, TASK

ROOT = Path(__file__).resolve().parents[1]
SIZE, IMAGE = 8, 16


def _weights(layer) -> list[np.ndarray]:
    return [ops.convert_to_numpy(w).copy() for w in layer.weights]


def _trained_model(scratch: Path, path: Path) -> keras.Model:
    """The project's regressor around the scratch preset, trained one step and saved as a fold model: `path`
    is fold_0/model.weights.h5, with the experiment's config.yaml two levels up."""
    from lresizervit.config import Config, save_config
    from lresizervit.models.fold_model import save_fold_model

    cfg = ModelConfig(resizer=ResizerConfig(mode="bilinear", target_size=SIZE),
                      backbone=BackboneConfig(name=f"keras_hub:{scratch}"), metadata_units=4, head_units=8)
    experiment = Config(model=cfg)
    experiment.data.image_size = IMAGE
    save_config(experiment, path.parent.parent / "config.yaml")
    model = build_regressor(cfg, IMAGE, TASK)
    # One step, eagerly: tracing the 4-block ViT's train step would cost more than the step (~10 s a model).
    model.compile(keras.optimizers.AdamW(1e-2), loss=make_loss(cfg, TASK), run_eagerly=True)
    rng = np.random.default_rng(0)
    x = {"image": rng.integers(0, 256, (4, IMAGE, IMAGE, 3), dtype=np.uint8),
         "metadata": rng.integers(0, 2, (4, len(META_COLUMNS))).astype("float32")}
    model.train_on_batch(x, np.linspace(1, 100, 4).astype("float32"))
    assert save_fold_model(model, path.parent) == path
    return model


def test_scratch_preset_is_the_architecture_deterministic_and_kept(tmp_path):
    assert write_scratch_preset(tmp_path / "a", SIZE, seed=7)
    assert write_scratch_preset(tmp_path / "b", SIZE, seed=7)
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["class_name"] == "ViTBackbone"
    patch = ARCHITECTURE["patch_size"]
    assert config["config"]["patch_size"] in (patch, [patch, patch])  # keras-hub stores (height, width)
    assert {k: config["config"][k] for k in ARCHITECTURE if k != "patch_size"} == \
        {k: v for k, v in ARCHITECTURE.items() if k != "patch_size"}
    assert weight_gap(preset_weights(tmp_path / "a", SIZE), preset_weights(tmp_path / "b", SIZE)) == 0.0
    # The converter the backbone was made for: [0, 255] pixels -> [-1, 1].
    converter = keras_hub.layers.ImageConverter.from_preset(str(tmp_path / "a"))
    np.testing.assert_allclose(ops.convert_to_numpy(converter(np.array([[[[0, 255, 127.5]] * SIZE] * SIZE]))
                                                    )[0, 0, 0], [-1.0, 1.0, 0.0], atol=1e-6)
    assert not write_scratch_preset(tmp_path / "a", SIZE, seed=7)  # a rerun keeps it
    with pytest.raises(ValueError, match="made differently.*delete it"):
        write_scratch_preset(tmp_path / "a", SIZE, seed=8)


def test_pretrained_preset_loads_with_the_trained_backbones_weights(tmp_path):
    scratch, pretrained, model_path = tmp_path / "scratch", tmp_path / "pretrained", tmp_path / "exp" / "fold_0" / "model.weights.h5"
    write_scratch_preset(scratch, SIZE, seed=0)
    model = _trained_model(scratch, model_path)
    trained = _weights(model.get_layer("keras_hub_backbone"))
    start = preset_weights(scratch, SIZE)
    assert weight_gap(trained, start) > 0  # the step did train the backbone

    assert export_pretrained_preset(model_path, pretrained, SIZE)
    # Loaded the way the trainer loads a `keras_hub:` backbone: exactly the trained weights, not the scratch ones.
    loaded = build_backbone(f"keras_hub:{pretrained}", SIZE)
    assert weight_gap(_weights(loaded), trained) == 0.0
    assert relative_change(start, _weights(loaded)) > 0
    # Only the backbone went into the preset: keras-hub's own loader sees a plain ViT of the architecture.
    hub = keras_hub.models.Backbone.from_preset(str(pretrained))
    assert isinstance(hub, keras_hub.models.ViTBackbone) and hub.count_params() == loaded.count_params()
    # And it sees what the scratch preset's converter gives.
    images = np.random.default_rng(1).integers(0, 256, (2, SIZE, SIZE, 3)).astype("float32")
    np.testing.assert_allclose(ops.convert_to_numpy(keras_hub.layers.ImageConverter.from_preset(str(pretrained))(images)),
                               images / 127.5 - 1.0, atol=1e-6)

    assert not export_pretrained_preset(model_path, pretrained, SIZE)  # the same model: kept
    _trained_model(scratch, model_path)  # retrained: another file
    with pytest.raises(ValueError, match="pretrained preset there was made differently"):
        export_pretrained_preset(model_path, pretrained, SIZE)


def test_stripes_kept_through_a_resizer_layer_is_measured_in_pixel_units():
    """The table's "stripes kept" of a trained resizer: a plain resize layer (which takes [-1, 1]) keeps what
    the plain resize keeps; one that doubles its output keeps twice as much."""
    plain = detail_survival(96, 24, n=3)
    layer = FixedResize(24)
    assert detail_survival(96, 24, n=3, resizer=layer) == pytest.approx(plain, rel=1e-3)
    assert detail_survival(96, 24, n=3, resizer=lambda x: 2 * layer(x)) == pytest.approx(2 * plain, rel=1e-3)
    with pytest.raises(ValueError, match="gives 32x32 images, not 24x24"):
        detail_survival(96, 24, n=1, resizer=FixedResize(32))


@pytest.mark.parametrize(("kwargs", "sets", "message"), [
    ({"arms": ("pretrained_learned", "finetuned_bicubic")}, (), "--arms: unknown arm.*finetuned_bicubic"),
    ({"arms": ()}, (), "--arms: unknown arm"),
    ({"arms": ("scratch_learned", "scratch_learned")}, (), "named twice"),
    ({"seed": 5, "pretrain_seed": 5}, (), "--seed and --pretrain-seed are both 5"),
    ({"n_train": 8}, (), "--train 8: too few photos for data.n_folds 3"),
    ({"pretrain_train": 20}, (), "--pretrain-train 20: need at least 40"),
    ({"pretrain_epochs": 0}, (), "--pretrain-epochs must be >= 1"),
    ({}, ("model.resizer.target_size=26",), "model.resizer.target_size 26 is not divisible by .* patch size 4"),
])
def test_argument_errors_are_named_before_anything_runs(tmp_path, kwargs, sets, message):
    cfg = load_config(ROOT / "configs" / "transfer.yaml", sets)
    with pytest.raises(ValueError, match=message):
        run_transfer("configs/transfer.yaml", cfg, sets, repo=tmp_path, **kwargs)
    assert not any(tmp_path.iterdir())


def test_command_reports_a_bad_arm_as_one_error_line(capsys):
    assert main(["transfer", str(ROOT / "configs" / "transfer.yaml"), "--arms", "pretrained_learned,pretrained_nearest"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --arms: unknown arm(s) ['pretrained_nearest']") and len(err.splitlines()) == 1
    assert set(ARMS) == {"pretrained_learned", "pretrained_bilinear", "scratch_learned", "scratch_bilinear"}


# The end-to-end run's ViT: one block of width 16 instead of ARCHITECTURE's four of 64. The command writes it into
# the scratch preset, and every train_folds.sh process builds its backbone from the preset's own config.json,
# so the whole path is the same with less to trace (this test alone: 115 -> 78 s of CPU, 2026-12-07).
TINY_ARCHITECTURE = {"patch_size": 4, "num_layers": 1, "num_heads": 2, "hidden_dim": 16, "mlp_dim": 32}


@pytest.mark.slow
def test_transfer_end_to_end_tiny(tmp_path, monkeypatch, capfd):
    """Pretraining, export and one fine-tuned arm through train_folds.sh, into tmp_path; then the arm's
    experiment predicts with its preset folder gone. The command runs in this process (its folds, predict.py
    and train_folds.sh in their own), with the tiny ViT."""
    tree = yaml.safe_load((ROOT / "configs" / "transfer.yaml").read_text())
    tree.update(name="t", output_dir=str(tmp_path / "models"))
    tree["data"].update(dir=str(tmp_path / "data"), folds_csv=str(tmp_path / "folds.csv"), n_folds=2,
                        image_size=32)
    tree["model"]["resizer"].update(target_size=16, filters=4)
    tree["model"].update(metadata_units=4, head_units=8)
    tree["train"].update(epochs=2, batch_size=8)  # epoch 1 frozen, epoch 2 not
    config = tmp_path / "t.yaml"
    config.write_text(yaml.safe_dump(tree))
    monkeypatch.setenv("NO_ALBUMENTATIONS_UPDATE", "1")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    env = dict(os.environ)  # for predict.py and train_folds.sh below
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr("lresizervit.transfer.ARCHITECTURE", TINY_ARCHITECTURE)
    code = main(["transfer", str(config), "--arms", "pretrained_learned", "--train", "16", "--pretrain-train", "40",
                 "--pretrain-epochs", "1", "--json", str(tmp_path / "r.json"), "--md", str(tmp_path / "r.md")])
    out, err = capfd.readouterr()
    assert code == 0, out[-3000:] + err[-3000:]

    result = json.loads((tmp_path / "r.json").read_text())
    presets = tmp_path / "models" / "t_presets"
    assert (presets / "scratch" / "config.json").is_file() and (presets / "pretrained" / "config.json").is_file()
    assert result["architecture"] == TINY_ARCHITECTURE
    assert json.loads((presets / "pretrained" / "config.json").read_text())["config"]["num_layers"] == 1
    assert result["pretraining"]["preset_weight_gap"] == 0.0 and result["pretraining"]["change_from_scratch"] > 0
    arm = result["arms"]["pretrained_learned"]
    assert Path(arm["run_dir"]) == tmp_path / "models" / "t_pretrained_learned"
    saved = yaml.safe_load((Path(arm["run_dir"]) / "config.yaml").read_text())
    assert saved["model"]["backbone"]["name"] == f"keras_hub:{presets / 'pretrained'}"
    assert saved["model"]["resizer"]["mode"] == "learned" and saved["train"]["freeze_backbone_epochs"] == 1
    assert np.isfinite(arm["cv_rmse"]) and len(arm["fold_rmse"]) == 2 and arm["backbone_change"] > 0
    assert arm["stripes_kept"] > 0
    assert result["constant_baseline_rmse"] > 0 and result["calibration"]["after"]["matmul_gflops"] > 0
    table = (tmp_path / "r.md").read_text()
    assert "| pretrained + learned |" in table and "noise floor" in table

    # The fine-tuned folds (a keras-hub preset folder, its first epoch frozen, the backbone's own learning
    # rate) predict without the preset folder, as in a notebook that has only the packaged experiment
    # attached; training them again then fails first, naming the key.
    assert f"keras-hub preset at {presets / 'pretrained'}" in out
    shutil.rmtree(presets)
    arm_config = Path(arm["run_dir"]) / "config.yaml"
    predicted = subprocess.run([sys.executable, "predict.py", str(arm_config), "--out", str(tmp_path / "sub.csv")],
                               cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    sub = pd.read_csv(tmp_path / "sub.csv", dtype={"Id": str})
    assert sub["Id"].tolist() == pd.read_csv(tmp_path / "data" / "test.csv", dtype={"Id": str})["Id"].tolist()
    assert len(sub) == 50 and sub["Pawpularity"].between(1, 100).all()
    again = subprocess.run(["bash", "train_folds.sh", str(arm_config), "--force"], cwd=ROOT,
                           env={**env, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=600)
    assert again.returncode != 0 and "model.backbone.name 'keras_hub:" in again.stderr, again.stderr[-3000:]
