"""Layer tests in the keras-hub style: shape, weight count, config round trip, save/load."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from lresizervit.config import Config, ModelConfig, save_config
from lresizervit.models.fold_model import (
    load_fold_model,
    load_legacy_model,
    needs_unsafe_loading,
    save_fold_model,
)
from lresizervit.models.regressor import (
    BranchDropout,
    RangeBCE,
    build_regressor,
    embedding_model,
    make_loss,
)
from lresizervit.models.resizer import FixedResize, LearnableResizer, expected_resizer_params
from lresizervit.models.vit import VIT_VARIANTS, build_vit
from lresizervit.run import MODEL_FILE
from tests.conftest import ROOT
from tests.facts import TASK
from tests.tiny import BACKBONE


def tiny_model_config(mode="learned", loss="bce", fusion="concat") -> ModelConfig:
    cfg = ModelConfig()
    cfg.backbone.name = BACKBONE
    cfg.resizer.mode = mode
    cfg.resizer.target_size = 16
    cfg.resizer.filters = 4
    cfg.fusion = fusion
    cfg.metadata_units = 8
    cfg.head_units = 8
    cfg.loss = loss
    return cfg


def experiment(model_cfg: ModelConfig, image_size: int = 32) -> Config:
    """A whole config around `model_cfg`: what a fold's model files are read back with."""
    cfg = Config()
    cfg.model, cfg.data.image_size = model_cfg, image_size
    return cfg


def batch(n=3, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "image": rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
        "metadata": rng.integers(0, 2, (n, 12)).astype("float32"),
    }


@pytest.mark.parametrize("blocks", [0, 1, 2])
def test_resizer_shape_and_weight_count(blocks):
    layer = LearnableResizer(24, filters=16, num_res_blocks=blocks)
    out = layer(np.zeros((2, 96, 80, 3), "float32"))
    assert tuple(out.shape) == (2, 24, 24, 3)
    assert layer.count_params() == expected_resizer_params(16, blocks)


def test_resizer_weight_count_pinned_for_paper_setting():
    # filters=16, one block: conv7x7 3->16 (2368) + conv1x1 (272) + BN (64) + block (2*(2320+64))
    # + conv3x3 (2320) + BN (64) + conv7x7 16->3 (2355) = 12211.
    layer = LearnableResizer(32, filters=16, num_res_blocks=1)
    layer.build((None, 128, 128, 3))
    assert layer.count_params() == 12211


def test_resizer_blocks_are_chained_not_fed_from_bottleneck():
    """With two blocks, zeroing block 0's output conv must change what block 1 sees (a chain)."""
    layer = LearnableResizer(8, filters=4, num_res_blocks=2)
    x = np.random.default_rng(0).normal(size=(1, 32, 32, 3)).astype("float32")
    layer(x)
    conv_b0 = layer.blocks.blocks()[0][2]
    conv_a1 = layer.blocks.blocks()[1][0]
    # Capture block 1's input by replacing its first conv with a recorder.
    seen = []
    original = conv_a1.call

    def record(inputs, *a, **k):
        seen.append(keras.ops.convert_to_numpy(inputs))
        return original(inputs, *a, **k)

    conv_a1.call = record
    layer(x, training=False)
    kernel, bias = conv_b0.get_weights()
    conv_b0.set_weights([kernel * 0 + 0.5, bias + 1.0])
    layer(x, training=False)
    assert not np.allclose(seen[0], seen[1])


def test_resizer_config_round_trip():
    layer = LearnableResizer((16, 24), filters=8, num_res_blocks=2, interpolation="bicubic", patch_size=8)
    again = LearnableResizer.from_config(layer.get_config())
    assert again.get_config() == layer.get_config()


def test_resizer_checks_arguments():
    with pytest.raises(ValueError, match="not divisible by patch size 16"):
        LearnableResizer(225, patch_size=16)
    with pytest.raises(ValueError, match="interpolation"):
        LearnableResizer(32, interpolation="lanczos7")
    with pytest.raises(ValueError, match="filters"):
        LearnableResizer(32, filters=0)


def test_fixed_resize_antialiases():
    # 2-px stripes average to grey under an antialiased 4x shrink; plain sampling would keep them.
    stripes = np.zeros((1, 64, 64, 3), "float32")
    stripes[:, :, ::2] = 1.0
    out = keras.ops.convert_to_numpy(FixedResize(16)(stripes))
    assert out.std() < 0.05 and abs(out.mean() - 0.5) < 0.05


@pytest.mark.parametrize("name", sorted(VIT_VARIANTS))
def test_vit_registry_hyper_parameters(name):
    spec = VIT_VARIANTS[name]
    assert spec.hidden_dim % spec.num_heads == 0


def test_vit_output_and_param_count():
    vit = build_vit("vit_tiny_demo", 16)
    out = vit(np.zeros((2, 16, 16, 3), "float32"))
    assert tuple(out.shape) == (2, 64)
    # patch 4x4x3 -> 64 (+bias), cls 64, pos (16+1)*64, 4 blocks, final LN.
    d, m = 64, 128
    block = 2 * 2 * d + 4 * (d * d + d) + (d * m + m) + (m * d + d)
    expected = 4 * 4 * 3 * d + d + d + 17 * d + 4 * block + 2 * d
    assert vit.count_params() == expected


def test_vit_rejects_indivisible_size():
    with pytest.raises(ValueError, match="not divisible by patch size"):
        build_vit("vit_tiny_demo", 18)


def test_unknown_backbone():
    cfg = tiny_model_config()
    cfg.backbone.name = "vit_h14"
    with pytest.raises(ValueError, match="vit_h14"):
        build_regressor(cfg, 32, TASK)


# All pairs: every (mode, loss), (mode, fusion) and (loss, fusion) combination appears in one of these six
# (the full product of twelve cost a minute of CI for no pair it does not already cover).
PAIRWISE = [("learned", "bce", "concat"), ("learned", "mse", "none"), ("bilinear", "bce", "none"),
            ("bilinear", "mse", "concat"), ("none", "bce", "concat"), ("none", "mse", "none")]


def test_pairwise_cases_cover_every_pair():
    import itertools

    values = (("learned", "bilinear", "none"), ("bce", "mse"), ("concat", "none"))
    for i, j in itertools.combinations(range(3), 2):
        assert {(c[i], c[j]) for c in PAIRWISE} == set(itertools.product(values[i], values[j]))


@pytest.mark.parametrize(("mode", "loss", "fusion"), PAIRWISE)
def test_every_mode_trains_a_step_and_round_trips(tmp_path, mode, loss, fusion):
    keras.utils.set_random_seed(0)
    cfg = tiny_model_config(mode, loss, fusion)
    cfg.metadata_dropout = 0.5
    model = build_regressor(cfg, 32, TASK)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss=make_loss(cfg, TASK),
                  metrics=[keras.metrics.RootMeanSquaredError(name="rmse")])
    x = batch(8)
    y = np.linspace(1, 100, 8).astype("float32")
    logs = model.fit(x, y, epochs=1, batch_size=4, verbose=0).history
    assert np.isfinite(logs["loss"][0])
    # RMSE is reported on the 1..100 scale: a fresh model is tens of points off, never below 1.
    assert logs["rmse"][0] > 1.0
    pred = model.predict(x, verbose=0)
    assert pred.shape == (8, 1) and np.all(np.isfinite(pred))
    if loss == "bce":
        assert np.all((pred > 0) & (pred < 100))
    # Called eagerly from here on: the traced predict above is the product's path; two more traced graphs
    # would only add time.
    emb = keras.ops.convert_to_numpy(embedding_model(model)(x, training=False))
    assert emb.shape == (8, VIT_VARIANTS[BACKBONE].hidden_dim + (8 if fusion == "concat" else 0))
    save_fold_model(model, tmp_path)
    reloaded = load_fold_model(tmp_path / MODEL_FILE, experiment(cfg))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(reloaded(x, training=False)), pred, rtol=1e-5, atol=1e-4)


def test_metadata_is_ignored_without_fusion_and_used_with_it():
    keras.utils.set_random_seed(0)
    x = batch(4)
    other = {**x, "metadata": 1.0 - x["metadata"]}
    for fusion, same in (("none", True), ("concat", False)):
        model = build_regressor(tiny_model_config(fusion=fusion), 32, TASK)
        a, b = model.predict(x, verbose=0), model.predict(other, verbose=0)
        assert np.allclose(a, b) == same


def test_branch_dropout_zeroes_whole_samples_only_in_training():
    layer = BranchDropout(0.5, seed=1)
    x = np.ones((400, 12), "float32")
    out = keras.ops.convert_to_numpy(layer(x, training=True))
    rows = out.sum(axis=1)
    assert set(np.unique(rows)) == {0.0, 12.0} and 120 < (rows == 0).sum() < 280
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x, training=False)), x)


def test_label_smoothing_changes_the_bce_target():
    y, p = np.array([[100.0]], "float32"), np.array([[99.0]], "float32")
    plain = float(RangeBCE(1, 100, 0.0)(y, p))
    smooth = float(RangeBCE(1, 100, 0.2)(y, p))
    assert smooth > plain  # the smoothed target is 0.9, farther from 0.99 than 1.0 is
    assert RangeBCE.from_config(RangeBCE(1, 100, 0.2).get_config()).label_smoothing == 0.2


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_keeps_head_and_loss_float32(policy):
    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy(policy)
    try:
        cfg = tiny_model_config()
        model = build_regressor(cfg, 32, TASK)
        assert model.get_layer("resizer").compute_dtype == policy.split("_")[1]
        assert model.get_layer("head_out").compute_dtype == "float32"
        model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss=make_loss(cfg, TASK))
        x = batch(8)
        y = np.linspace(1, 100, 8).astype("float32")
        logs = model.fit(x, y, epochs=2, batch_size=4, verbose=0).history
        assert np.all(np.isfinite(logs["loss"]))
        pred = model.predict(x, verbose=0)
        assert pred.dtype == np.float32 and np.all((pred > 0) & (pred < 100))
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_resizer_zero_init_starts_as_the_plain_resize_and_clip_bounds_it():
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    plain = keras.ops.convert_to_numpy(FixedResize(8)(x))
    layer = LearnableResizer(8, filters=4, zero_init_output=True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), plain, atol=1e-6)
    wild = LearnableResizer(8, filters=4, clip_output=True)
    wild(x)
    kernel, bias = wild.conv_out.get_weights()
    wild.conv_out.set_weights([kernel * 50, bias + 3])
    out = keras.ops.convert_to_numpy(wild(x))
    assert out.min() >= -1.0 and out.max() <= 1.0


def test_vit_interpolates_position_embeddings_for_other_sizes():
    vit = build_vit("vit_tiny_demo", 32, position_grid_size=16)  # embeddings made for 16 px, run at 32
    assert vit.get_layer("patch_embedding").position_embedding.shape == (1, 17, 64)
    out = vit(np.zeros((2, 32, 32, 3), "float32"))
    assert tuple(out.shape) == (2, 64)


def test_regressor_rejects_target_not_divisible_by_patch():
    cfg = tiny_model_config()
    cfg.resizer.target_size = 18
    with pytest.raises(ValueError, match="model.resizer.target_size 18 is not divisible by the patch size 4"):
        build_regressor(cfg, 32, TASK)
    cfg.resizer.mode = "none"
    with pytest.raises(ValueError, match="data.image_size 30 is not divisible by the patch size 4"):
        build_regressor(cfg, 30, TASK)


@pytest.mark.slow  # a fresh process imports TensorFlow (~7 s): not in make test-fast
def test_save_and_reload_in_a_new_process(tmp_path):
    """A fold's model files reload with nothing but this package and the experiment's config.yaml beside
    them, in a fresh interpreter, with the same predictions."""
    keras.utils.set_random_seed(1)
    cfg = experiment(tiny_model_config())
    save_config(cfg, tmp_path / "config.yaml")
    model = build_regressor(cfg.model, 32, TASK)
    path = save_fold_model(model, tmp_path / "fold_0")
    x = batch(4, seed=3)
    np.savez(tmp_path / "x.npz", **x)
    expected = model.predict(x, verbose=0)
    code = (
        "import sys, numpy as np\n"
        "from lresizervit.models.fold_model import load_fold_model\n"
        f"m = load_fold_model(r'{path}')\n"
        f"x = dict(np.load(r'{tmp_path / 'x.npz'}'))\n"
        f"np.save(r'{tmp_path / 'pred.npy'}', m.predict(x, verbose=0))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    got = np.load(tmp_path / "pred.npy")
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
    # And in this process too, through the same entry point the predictor uses.
    np.testing.assert_allclose(load_fold_model(path).predict(x, verbose=0), expected, rtol=1e-5, atol=1e-4)


def test_a_model_file_holding_code_is_refused_and_the_code_never_runs(tmp_path):
    marker = tmp_path / "ran.txt"
    x = keras.Input((2,))
    # Runs only when the layer is called, i.e. when Keras rebuilds the model while loading it.
    y = keras.layers.Lambda(lambda t, where=str(marker): (open(where, "w").write("x"), t)[1])(x)
    marker_path = tmp_path / "evil.keras"
    keras.Model(x, y).save(marker_path)
    marker.unlink(missing_ok=True)
    with pytest.raises(ValueError, match=r"evil.keras: refused: the model holds code \(e.g. a Lambda layer\)"):
        load_fold_model(marker_path)
    assert not marker.exists()


@pytest.mark.slow  # a fresh process imports TensorFlow (~7 s): not in make test-fast
def test_predict_refuses_an_experiment_whose_model_holds_code(tiny_experiment, tmp_path):
    """The user's path: someone else's models/<exp>/ with a fold model holding a Lambda that writes a file.
    `predict.py` stops with one error line naming the file, and the Lambda never ran."""
    from tests.conftest import copy_experiment

    cfg = copy_experiment(tiny_experiment, tmp_path / "exp")
    marker = tmp_path / "ran.txt"
    x = keras.Input((2,))
    y = keras.layers.Lambda(lambda t, where=str(marker): (open(where, "w").write("x"), t)[1])(x)
    fold = tmp_path / "exp" / "models" / "tiny" / "fold_0"
    # A fold in the format before model.weights.h5 + model.json (which hold no code at all): an archive.
    for name in ("model.weights.h5", "model.json"):
        (fold / name).unlink()
    keras.Model(x, y).save(fold / "model.keras")
    marker.unlink(missing_ok=True)
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "predict.py", str(cfg), "--out", str(tmp_path / "sub.csv")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "fold_0/model.keras: refused: the model holds code" in errors[0], errors
    assert not marker.exists() and not (tmp_path / "sub.csv").exists()


def test_native_archives_of_the_format_before_reload_in_safe_mode(tmp_path):
    path = tmp_path / "m.keras"
    build_regressor(tiny_model_config(), 32, TASK).save(path)
    assert not needs_unsafe_loading(path)
    assert load_legacy_model(path).name == "lresizervit"
    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="broken.keras: not a readable .keras model file"):
        load_fold_model(tmp_path / "broken.keras")
