"""The pieces of the resolution ablation: the `conv_after_resize` control and the synthetic data's
measure of how much fine detail a plain resize leaves."""

import json

import keras
import numpy as np

from lresizervit.comparison import detail_survival
from lresizervit.config import ModelConfig
from lresizervit.data.synth import SynthParams, generate
from lresizervit.models.fold_model import load_fold_model
from lresizervit.models.regressor import build_regressor, make_loss
from lresizervit.models.resizer import ConvAfterResize, LearnableResizer, resize_images
from tests.facts import TASK
from tests.tiny import BACKBONE


def tiny_config(mode: str) -> ModelConfig:
    cfg = ModelConfig()
    cfg.backbone.name = BACKBONE
    cfg.resizer.mode, cfg.resizer.target_size, cfg.resizer.filters = mode, 16, 4
    cfg.metadata_units = cfg.head_units = 8
    return cfg


def test_control_has_the_learned_resizers_parameters_and_never_sees_the_full_resolution():
    keras.utils.set_random_seed(0)  # the 45x margin below depends on the initial weights: fix them
    x = np.random.default_rng(0).uniform(-1, 1, (2, 64, 48, 3)).astype("float32")
    learned, control = LearnableResizer(16, filters=8, num_res_blocks=2), ConvAfterResize(16, filters=8,
                                                                                        num_res_blocks=2)
    assert tuple(control(x).shape) == tuple(learned(x).shape) == (2, 16, 16, 3)
    assert control.count_params() == learned.count_params()
    # Same weights: the control's output is a function of the plain resize alone...
    control.set_weights(learned.get_weights())
    small = resize_images(x, (16, 16), "bilinear")
    np.testing.assert_allclose(control(x), learned(small), rtol=1e-5, atol=1e-5)
    # ... so detail the resize averages away (a 1-px checkerboard: 0 after the resize but for the border
    # rows, where the kernel is cut) barely moves it, while the learned resizer's output changes 45x more.
    checker = (np.indices((64, 48)).sum(axis=0) % 2 * 2 - 1).astype("float32")[None, :, :, None] * 0.5
    moved_control = np.abs(np.asarray(control(x + checker)) - np.asarray(control(x))).max()
    moved_learned = np.abs(np.asarray(learned(x + checker)) - np.asarray(learned(x))).max()
    assert moved_control < 0.05 * moved_learned
    again = ConvAfterResize.from_config(control.get_config())
    assert isinstance(again, ConvAfterResize) and again.get_config() == control.get_config()


def test_control_mode_trains_a_step_and_round_trips(tmp_path):
    keras.utils.set_random_seed(0)
    models = {}
    for mode in ("learned", "conv_after_resize"):
        cfg = tiny_config(mode)
        models[mode] = build_regressor(cfg, 32, TASK)
    assert models["conv_after_resize"].count_params() == models["learned"].count_params()
    model, cfg = models["conv_after_resize"], tiny_config("conv_after_resize")
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss=make_loss(cfg, TASK))
    rng = np.random.default_rng(1)
    x = {"image": rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8),
         "metadata": rng.integers(0, 2, (4, 12)).astype("float32")}
    before = [w.copy() for w in model.get_layer("resizer").get_weights()]
    loss = model.train_on_batch(x, np.linspace(1, 100, 4).astype("float32"))
    assert np.isfinite(loss)
    after = model.get_layer("resizer").get_weights()
    assert any(not np.allclose(a, b) for a, b in zip(before, after, strict=True))  # its layers do train
    pred = model.predict(x, verbose=0)
    model.save(tmp_path / "m.keras")
    reloaded = load_fold_model(tmp_path / "m.keras")  # an archive: the layers' configs round trip
    assert isinstance(reloaded.get_layer("resizer"), ConvAfterResize)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), pred, rtol=1e-5, atol=1e-4)


def test_demo_setting_leaves_little_of_the_stripes_after_a_plain_resize():
    """The ablation's premise, measured through the real loader's decode and the model's own resize."""
    gone = detail_survival(96, 24, n=4)
    kept = detail_survival(96, 96, n=2)
    assert gone < 0.1 and kept > 0.99


def test_generator_reports_the_detail_blind_floor(tmp_path):
    info = generate(tmp_path / "d", 400, 1, SynthParams(seed=5, min_side=32, max_side=40, max_long_side=48),
                    workers=1)
    assert json.loads((tmp_path / "d" / "generator.json").read_text())["detail_blind_rmse"] == info["detail_blind_rmse"]
    # Blind to the stripes, a perfect model still misses their share (w_detail = 13 points per std).
    assert info["noise_floor_rmse"] < info["detail_blind_rmse"] < info["constant_baseline_rmse"]
    assert 12 < info["detail_blind_rmse"] < 16
