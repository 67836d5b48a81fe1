"""The benchmark's own measurements: FLOP counting, the matmul yardstick, the worker process, the step and
predict benches."""

import json

import keras
import numpy as np
import pytest

from lresizervit.bench.flops import graph_flops, model_flops
from lresizervit.bench.machine import measure_matmul_flops
from lresizervit.bench.predict import bench_predict
from lresizervit.bench.runner import run_in_process
from lresizervit.bench.step import parse_variants, step_comparisons, variant_name
from lresizervit.cli import main
from lresizervit.config import load_config
from tests.tiny import BACKBONE, SET_ARGS


def tiny_known_model() -> keras.Model:
    """Conv 3x3 (3->4) on 8x8, the 64 pixels as tokens through 2-head attention (key_dim 3), Dense(5)."""
    x_in = keras.Input((8, 8, 3), batch_size=2)
    h = keras.layers.Conv2D(4, 3, padding="same")(x_in)
    h = keras.layers.Reshape((64, 4))(h)
    h = keras.layers.MultiHeadAttention(num_heads=2, key_dim=3)(h, h)
    return keras.Model(x_in, keras.layers.Dense(5)(h))


def test_flop_count_of_a_tiny_model_matches_a_hand_count():
    b, t, c, heads, key = 2, 64, 4, 2, 3
    conv = 2 * (b * t * c) * (3 * 3 * 3)
    qkv = 3 * 2 * (b * t * heads * key) * c
    scores = weighted = 2 * b * heads * t * t * key
    out_proj = 2 * (b * t * c) * (heads * key)
    dense = 2 * (b * t * 5) * c
    hand = conv + qkv + scores + weighted + out_proj + dense  # 253,952
    counted = model_flops(tiny_known_model(), np.zeros((2, 8, 8, 3), "float32"))
    assert counted["forward_flops"] == hand == 253_952
    assert counted["train_step_flops"] == 3 * hand
    assert counted["forward_flops_by_op"]["Einsum"] == scores + weighted
    assert counted["forward_flops_by_op"]["Conv2D"] == conv


def test_flop_count_agrees_with_tf_profiler_on_the_ops_it_counts():
    """TF's profiler counts MatMul/BatchMatMul/Conv2D the same way, but gives Einsum 0 FLOPs."""
    import tensorflow as tf
    from tensorflow.python.profiler import model_analyzer, option_builder

    model = tiny_known_model()
    graph = tf.function(lambda x: model(x)).get_concrete_function(tf.TensorSpec((2, 8, 8, 3))).graph
    ours = graph_flops(graph)["by_op"]
    for op_type in ("Conv2D", "BatchMatMulV2", "MatMul", "Einsum"):
        opts = option_builder.ProfileOptionBuilder(
            option_builder.ProfileOptionBuilder.float_operation()).with_empty_output().build()
        opts["account_type_regexes"] = [op_type]
        theirs = model_analyzer.profile(graph, options=opts).total_float_ops
        if op_type == "Einsum":
            assert theirs == 0 and ours[op_type] > 0
        else:
            assert theirs == ours.get(op_type, 0)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_matmul_flops_is_positive_and_in_the_asked_dtype(dtype):
    m = measure_matmul_flops(dtype, n=256, repeats=3)
    assert m["dtype"] == dtype and m["n"] == 256 and len(m["seconds_runs"]) == 3
    assert m["flops_per_second"] > 1e6  # even a slow CPU does more than a MFLOP/s



def test_worker_process_returns_its_result_or_names_its_failure():
    """Builtins as workers: a real spawned process, none of this package's imports to pay for."""
    import os
    import time

    assert run_in_process(len, ("abc",), "len") == 3
    with pytest.raises(RuntimeError, match=r"^parse failed: ValueError: invalid literal for int\(\)"):
        run_in_process(int, ("x",), "parse")
    with pytest.raises(RuntimeError, match=r"^quit gave no result \(exit code 3\); out of memory\?"):
        run_in_process(os._exit, (3,), "quit")  # dies without a word, as under the OOM killer
    with pytest.raises(RuntimeError, match=r"^nap gave no result in 2 s; stopped it"):
        run_in_process(time.sleep, (60,), "nap", timeout_s=2)

def test_parse_variants():
    assert parse_variants("learned@512, none,bilinear@1024", 96) == [("learned", 512), ("none", 96),
                                                                    ("bilinear", 1024)]
    with pytest.raises(ValueError, match="'nearest' is not a model.resizer.mode"):
        parse_variants("nearest@96", 96)
    with pytest.raises(ValueError, match="integer"):
        parse_variants("learned@big", 96)


@pytest.mark.slow
def test_bench_step_on_both_backends_side_by_side(tmp_path, capsys):
    """--backends: the same variant in a TensorFlow and a JAX process, each its own; FLOPs (counted on TF's
    graph) shared, the cross-backend ratio computed from the two medians; the TensorFlow row holds every
    figure of a step bench (time, memory, FLOPs, the matmul yardstick) and the tables name it."""
    out, md = tmp_path / "step.json", tmp_path / "step.md"
    assert main(["bench", "configs/demo.yaml", "--what", "step", "--variants", "conv_after_resize@32", "--batch", "2",
                 "--steps", "2", "--matmul-size", "256", "--backends", "tensorflow,jax", "--json", str(out),
                 "--md", str(md), *SET_ARGS]) == 0
    result = json.loads(out.read_text())
    assert result["backends"] == ["tensorflow", "jax"]
    name = "conv_after_resize 32->16"
    tf_row, jax_row = result["variants"][f"{name} [tensorflow]"], result["variants"][f"{name} [jax]"]
    assert tf_row["backend"] == "tensorflow" and jax_row["backend"] == "jax"
    assert jax_row["train_step_flops"] == tf_row["train_step_flops"] > 0 and jax_row["step_seconds"] > 0
    ratio = result["comparisons"][f"{name}: TensorFlow step time / JAX step time"]
    assert ratio == pytest.approx(tf_row["step_seconds"] / jax_row["step_seconds"])
    assert tf_row["precision"] == "float32"
    assert tf_row["step_seconds"] > 0 and len(tf_row["step_seconds_runs"]) == 2
    assert tf_row["peak_rss_mib"] >= tf_row["static_rss_mib"] > 0
    assert tf_row["train_step_flops"] == 3 * tf_row["forward_flops"] > 0
    assert tf_row["matmul"]["float32"]["flops_per_second"] > 0 and 0 < tf_row["fraction_of_matmul"]
    assert f"| {name} [tensorflow] |" in md.read_text() and f"| {name} [jax] |" in capsys.readouterr().out


@pytest.mark.parametrize("flags, message", [
    (["--what", "step", "--backends", "torch"], "--backends: 'torch' is not a Keras backend"),
    (["--what", "loader", "--backends", "jax"], "--backends applies to --what step and efficiency, not loader"),
])
def test_bench_backends_flag_is_checked_before_anything_runs(flags, message, capsys):
    assert main(["bench", "configs/demo.yaml", *flags]) == 2
    assert message in capsys.readouterr().err


def test_bench_replicas_is_refused_under_jax(monkeypatch, capsys):
    # It times tf.distribute replicas; under KERAS_BACKEND=jax the flag check says where the JAX check is.
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert main(["bench", "configs/demo.yaml", "--what", "replicas"]) == 2
    assert "bench --what replicas times tf.distribute replicas" in capsys.readouterr().err


def test_bench_predict_on_a_tiny_two_fold_experiment(tmp_path):
    from lresizervit.config import load_config, save_config
    from lresizervit.data.synth import SynthParams, generate
    from lresizervit.models.fold_model import save_fold_model
    from lresizervit.models.regressor import build_regressor

    generate(tmp_path / "data", 6, 5, SynthParams(seed=2, min_side=32, max_side=40, max_long_side=48), workers=1)
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(f"name: x\noutput_dir: {tmp_path / 'models'}\ndata:\n  dir: {tmp_path / 'data'}\n"
                        "  image_size: 32\nmodel:\n  resizer:\n    target_size: 16\n    filters: 4\n  backbone:\n"
                        f"    name: {BACKBONE}\npredict:\n  batch_size: 2\n")
    cfg = load_config(cfg_path)
    save_config(cfg, cfg.run_dir / "config.yaml")
    for k in range(2):  # real (untrained) models: their cost, not their accuracy, is measured
        (cfg.run_dir / f"fold_{k}").mkdir(parents=True)
        save_fold_model(build_regressor(cfg.model, 32, cfg.task), cfg.run_dir / f"fold_{k}")
        (cfg.run_dir / f"fold_{k}" / "metrics.json").write_text('{"n_folds": 2}')
    result = bench_predict(cfg, repeats=1, ttas=("hflip",))
    rows = result["variants"]
    assert list(rows) == ["1 fold(s) x hflip", "2 fold(s) x hflip", "2 fold(s) x hflip, decoding the JPEGs"]
    assert [r["folds"] * r["views"] for r in rows.values()] == [2, 4, 4]
    assert all(r["images_per_second"] > 0 for r in rows.values()) and result["images"] == 5


def test_step_comparisons_at_a_larger_config_size_name_each_ratio_once():
    cfg = load_config("configs/demo.yaml", ["data.image_size=768", "model.resizer.target_size=384"])
    rows = {variant_name(mode, 768, 384, "float32"): {"precision": "float32", "step_seconds": seconds}
            for mode, seconds in (("learned", 3.0), ("bilinear", 2.0))}
    assert step_comparisons(rows, cfg) == {"learned / bilinear 768->384: step time": 1.5}
