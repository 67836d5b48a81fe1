"""The fine-tuning recipe: a learning rate for the backbone and one for the new layers, layer-wise decay,
frozen epochs that survive a resume."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import yaml

from lresizervit.config import ConfigError, load_config
from lresizervit.training.optimizer import GroupedAdamW, backbone_multipliers, block_depths
from tests.tiny import SETS


def _two_dense():
    keras.utils.set_random_seed(0)
    x = keras.Input((4,))
    h = keras.layers.Dense(4, name="backbone_dense")(x)
    y = keras.layers.Dense(1, name="head")(h)
    return keras.Model(x, y)


def _weights(model, name):
    return keras.ops.convert_to_numpy(model.get_layer(name).kernel).copy()


def test_each_variable_steps_by_its_own_learning_rate_and_frozen_ones_wait():
    model = _two_dense()
    kernel = model.get_layer("backbone_dense").kernel.path
    opt = GroupedAdamW(learning_rate=1e-2, weight_decay=0.0, multipliers={kernel: 0.1}, frozen=[kernel],
                       unfreeze_step=2)
    model.compile(opt, "mse")
    x, y = np.random.default_rng(0).normal(size=(16, 4)).astype("float32"), np.ones((16, 1), "float32")
    b0, h0 = _weights(model, "backbone_dense"), _weights(model, "head")
    for _ in range(2):
        model.train_on_batch(x, y)
    b2, h2 = _weights(model, "backbone_dense"), _weights(model, "head")
    np.testing.assert_array_equal(b2, b0)  # frozen for the first two steps
    assert np.abs(h2 - h0).max() > 1e-3  # while the head learns
    model.train_on_batch(x, y)
    step = np.abs(_weights(model, "backbone_dense") - b2)
    # Adam's first effective step is about lr * sign(gradient): 0.1 x 1e-2 for the backbone's kernel.
    assert 5e-4 < step.max() <= 1.05e-3
    assert GroupedAdamW.from_config(opt.get_config()).multipliers == {kernel: 0.1}


def test_weight_decay_follows_the_multiplier():
    model = _two_dense()
    kernel = model.get_layer("backbone_dense").kernel.path
    opt = GroupedAdamW(learning_rate=0.1, weight_decay=0.5, multipliers={kernel: 0.0}, decay_excluded=("bias",))
    model.compile(opt, "mse")
    before_b, before_h = _weights(model, "backbone_dense"), _weights(model, "head")
    model.train_on_batch(np.zeros((2, 4), "float32"), np.zeros((2, 1), "float32"))  # zero gradients
    np.testing.assert_array_equal(_weights(model, "backbone_dense"), before_b)  # lr 0: no decay either
    np.testing.assert_allclose(_weights(model, "head"), before_h * (1 - 0.5 * 0.1), rtol=1e-6)


def test_layer_wise_depths_of_real_backbone_paths():
    vit = ["vit_patching_and_embedding/patch_embedding/kernel", "vit_encoder/transformer_block_1/mlp/dense_1/kernel",
           "vit_encoder/transformer_block_1/mlp/dense_2/kernel", "vit_encoder/transformer_block_2/ln_1/gamma",
           "vit_encoder/ln/gamma"]
    assert [block_depths(vit)[p] for p in vit] == [0, 1, 1, 2, 3]
    swin = ["patch_embedding/conv_projection/kernel", "stage_0/blocks_1/mlp/fc1/kernel",
            "stage_1/blocks_0/attn/attention_qkv/kernel", "norm/gamma"]
    assert [block_depths(swin)[p] for p in swin] == [0, 1, 2, 3]
    native = ["patch_embedding/kernel", "block_0/attn/query/kernel", "block_1/mlp_in/kernel", "final_norm/gamma",
              "class_token"]
    assert [block_depths(native)[p] for p in native] == [0, 1, 2, 3, 0]
    m = backbone_multipliers(native, 0.01, 0.5)
    assert m["final_norm/gamma"] == pytest.approx(0.01) and m["block_1/mlp_in/kernel"] == pytest.approx(0.005)
    assert m["patch_embedding/kernel"] == pytest.approx(0.01 * 0.5 ** 3)


@pytest.mark.parametrize(("train", "words"), [
    ({"backbone_learning_rate": -1e-5}, "train.backbone_learning_rate' must be > 0"),
    ({"layer_decay": 0.0}, "train.layer_decay' must be in (0, 1]"),
    ({"layer_decay": 1.5}, "train.layer_decay' must be in (0, 1]"),
    ({"freeze_backbone_epochs": 10, "epochs": 10}, "train.freeze_backbone_epochs' must be in 0..train.epochs - 1"),
])
def test_bad_recipe_keys_are_refused(tmp_path, train, words):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"train": train}))
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        load_config(path)


class _Recorder(keras.callbacks.Callback):
    """The backbone's and the head's weights after every epoch; stops the process-like run after `kill_after`."""

    def __init__(self, kill_after: int | None = None):
        super().__init__()
        self.kill_after, self.backbone, self.head = kill_after, [], []

    def on_epoch_end(self, epoch, logs=None):
        from lresizervit.models.regressor import backbone_variables

        self.backbone.append(np.concatenate([keras.ops.convert_to_numpy(v).ravel()
                                             for v in backbone_variables(self.model)]))
        self.head.append(keras.ops.convert_to_numpy(self.model.get_layer("head_out").kernel).copy())
        if self.kill_after is not None and epoch + 1 == self.kill_after:
            raise KeyboardInterrupt("killed")


@pytest.mark.slow
def test_frozen_epochs_survive_a_kill_and_resume(tmp_path):
    from lresizervit.config import load_config
    from lresizervit.training.trainer import train_fold
    from tests.test_resume import tiny_experiment

    cfg_path = tiny_experiment(tmp_path, 16, 5, {"epochs": 4, "freeze_backbone_epochs": 2, "learning_rate": 1e-3,
                                                 "backbone_learning_rate": 1e-3, "layer_decay": 0.8,
                                                 "tensorboard": False})
    cfg = load_config(cfg_path)
    first = _Recorder(kill_after=1)
    with pytest.raises(KeyboardInterrupt):
        train_fold(cfg, 0, extra_callbacks=[first])
    second = _Recorder()
    metrics = train_fold(cfg, 0, extra_callbacks=[second])
    assert metrics["resumed_after_epoch"] == 1 and len(second.backbone) == 3  # epochs 2, 3, 4
    # Epoch 2 is still frozen after the resume: the backbone is where epoch 1 left it; the head moved.
    np.testing.assert_array_equal(second.backbone[0], first.backbone[0])
    assert np.abs(second.head[0] - first.head[0]).max() > 0
    # Epoch 3 unfreezes it.
    assert np.abs(second.backbone[1] - second.backbone[0]).max() > 0


@pytest.mark.parametrize("recipe", [[], ["train.ema=true"], ["train.freeze_backbone_epochs=1",
                                                              "train.backbone_learning_rate=0.0001"]])
def test_the_train_step_is_traced_once(recipe):
    """compile_model builds the optimizer's slots up front: created inside the first step, they make
    tf.function trace the whole train step a second time (5-6 s per fold process for the demo model)."""
    import tensorflow as tf

    from lresizervit.training.trainer import compile_model

    cfg = load_config("configs/demo.yaml", [*SETS, *recipe])
    model = compile_model(cfg, steps_per_epoch=2)
    traces = []
    step = model.train_step
    model.train_step = lambda data: (traces.append(1), step(data))[1]  # runs once per trace, not per step
    rng = np.random.default_rng(0)
    x = {"image": rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8),
         "metadata": rng.integers(0, 2, (4, 12)).astype("float32")}
    y = rng.uniform(1, 100, 4).astype("float32")
    model.fit(tf.data.Dataset.from_tensors((x, y)).repeat(2), epochs=1, verbose=0, shuffle=False)
    assert len(traces) == 1
