"""A fold's model files (models/fold_model.py): weights + model.json rebuilt by this package's code, what
they hold, every way they can be wrong, the archives of the format before, and converting those."""

from __future__ import annotations

import json
import shutil
import types
import zipfile

import h5py
import keras
import numpy as np
import pytest

from lresizervit.cli import main
from lresizervit.config import load_config
from lresizervit.models.fold_model import (
    UnreadableArchiveError,
    _save_weights,
    load_fold_model,
    save_fold_model,
    stored_variables,
)
from lresizervit.models.regressor import build_regressor
from lresizervit.run import FoldFileError
from tests.conftest import copy_experiment
from tests.tiny import BACKBONE


def _datasets(path) -> list[str]:
    names = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return names


def _batch(size: int, n: int = 3, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 256, (n, size, size, 3), dtype="uint8"),
            "metadata": rng.integers(0, 2, (n, 12)).astype("float32")}


@pytest.fixture
def experiment(tiny_experiment, tmp_path):
    cfg_path = copy_experiment(tiny_experiment, tmp_path / "exp")
    return load_config(cfg_path), tmp_path / "exp" / "models" / "tiny"


def test_a_trained_fold_holds_weights_and_data_only(experiment):
    cfg, run = experiment
    fold = run / "fold_0"
    assert not (fold / "model.keras").exists()
    spec = json.loads((fold / "model.json").read_text())
    assert spec["format"] == 1 and spec["image_size"] == 32 and spec["metadata_columns"] == 12
    assert spec["backbone_architecture"] is None and spec["metadata_stats"] is None
    assert spec["written_by"]["keras"] == keras.__version__
    assert spec["weights_bytes"] == (fold / "model.weights.h5").stat().st_size
    model = load_fold_model(fold / "model.weights.h5")
    names = _datasets(fold / "model.weights.h5")
    # Every variable, nothing of the optimizer (prediction never reads it: 2-3x the weights with AdamW).
    assert len(names) == stored_variables(fold / "model.weights.h5") == len(model.weights)
    assert not [n for n in names if n.startswith("optimizer")]
    # The resizer's residual blocks under the names every supported Keras (and the archives of Keras 3.15)
    # give them: Keras 3.13 does not save a tuple of layers kept in a list.
    assert any(n.startswith("layers/learnable_resizer/blocks/container/conv2d/") for n in names)


def test_every_residual_block_is_saved_and_restored(tmp_path):
    from lresizervit.config import Config

    cfg = Config()
    cfg.data.image_size = 32
    cfg.model.backbone.name = BACKBONE
    cfg.model.resizer.target_size, cfg.model.resizer.filters, cfg.model.resizer.num_res_blocks = 16, 4, 2
    keras.utils.set_random_seed(4)
    model = build_regressor(cfg.model, 32, cfg.task)
    path = save_fold_model(model, tmp_path)
    names = _datasets(path)
    assert any("blocks/container_1/conv2d_1/" in n for n in names)
    again = load_fold_model(path, cfg)
    for a, b in zip(model.weights, again.weights, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), err_msg=a.path)


class _Hidden(keras.layers.Layer):
    """Holds a sublayer where no Keras looks when saving (as Keras 3.13 did not look in a list of tuples):
    its variables count among the model's weights but would never reach the file."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        sub = keras.layers.Dense(3)
        self._tracker.add_to_store("layers", sub)
        object.__setattr__(self, "_holder", types.SimpleNamespace(sub=sub))

    def build(self, shape):
        self._holder.sub.build(shape)
        self.built = True

    def call(self, x):
        return self._holder.sub(x)


def test_a_variable_keras_would_leave_out_fails_the_save(tmp_path):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, _Hidden()(inputs))
    with pytest.raises(RuntimeError, match=r"saved 0 of the model's 2 variables"):
        _save_weights(model, tmp_path / "m.weights.h5")


@pytest.mark.parametrize(("edit", "message"), [
    (lambda s: "{not json", r"model.json: not readable JSON"),
    (lambda s: json.dumps({**json.loads(s), "format": 2}), r"format 2, which this lresizervit does not read"),
    (lambda s: json.dumps({k: v for k, v in json.loads(s).items() if k != "image_size"}),
     r"field 'image_size' is 'missing', expected a positive integer"),
    (lambda s: json.dumps({**json.loads(s), "metadata_stats": [[0.0], [1.0]]}),
     r"field 'metadata_stats' is \[\[0.0\], \[1.0\]\], expected null or \[means, variances\]"),
    (lambda s: json.dumps({**json.loads(s), "image_size": 64}),
     r"describes a model of 64 px images .* data.image_size 32 .*another experiment"),
])
def test_a_bad_model_json_is_named_with_the_field_and_the_retrain_command(experiment, edit, message):
    cfg, run = experiment
    spec = run / "fold_1" / "model.json"
    spec.write_text(edit(spec.read_text()))
    with pytest.raises(FoldFileError, match=message) as err:
        load_fold_model(run / "fold_1" / "model.weights.h5")
    assert str(spec) in str(err.value) and f"bash train_folds.sh {run / 'config.yaml'} 1 --force" in str(err.value)


def test_weights_changed_in_place_are_caught(experiment):
    """HDF5 keeps no checksum: bytes overwritten in the middle would load as other weights without a word."""
    cfg, run = experiment
    path = run / "fold_0" / "model.weights.h5"
    data = bytearray(path.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = bytes(64)
    path.write_bytes(bytes(data))
    with pytest.raises(FoldFileError, match=r"model.weights.h5: its bytes differ from those its model.json records"):
        load_fold_model(path)


def test_a_saved_architecture_names_only_keras_hub_families(experiment, tmp_path):
    """model.json is data: a class it names is looked up among the supported families only, so a file from
    someone else's dataset cannot make the loader build anything else."""
    cfg, run = experiment
    spec_path = run / "fold_0" / "model.json"
    spec = json.loads(spec_path.read_text())
    spec["backbone_architecture"] = {"class_name": "Lambda", "config": {"function": "os.system"},
                                     "scale": [1, 1, 1], "offset": [0, 0, 0], "pooling": None}
    spec_path.write_text(json.dumps(spec))
    cfg.model.backbone.name = "keras_hub:/nowhere"
    with pytest.raises(ValueError, match=r"a saved architecture names the keras-hub class 'Lambda', not one of"):
        load_fold_model(run / "fold_0" / "model.weights.h5", cfg)


def _archive(cfg, run):
    """Rewrite the experiment's folds as the format before (one `model.keras` archive each)."""
    for k in (0, 1):
        fold = run / f"fold_{k}"
        load_fold_model(fold / "model.weights.h5", cfg).save(fold / "model.keras")
        (fold / "model.weights.h5").unlink()
        (fold / "model.json").unlink()


def _outputs(model) -> np.ndarray:
    """The model called eagerly on a fixed batch (the `predict` commands run the traced path)."""
    return keras.ops.convert_to_numpy(model(_batch(32), training=False))


def test_an_archive_of_the_format_before_predicts_and_converts(experiment, tmp_path, capsys):
    cfg, run = experiment
    expected = {k: _outputs(load_fold_model(run / f"fold_{k}" / "model.weights.h5")) for k in (0, 1)}
    _archive(cfg, run)
    assert main(["predict", str(run), "--out", str(tmp_path / "before.csv")]) == 0
    archive_bytes = (run / "fold_0" / "model.keras").stat().st_size

    capsys.readouterr()
    assert main(["convert", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"fold 0: model.keras ({archive_bytes:,} bytes) -> model.weights.h5" in out, out
    for k in (0, 1):
        fold = run / f"fold_{k}"
        assert not (fold / "model.keras").exists() and (fold / "model.json").is_file()
        np.testing.assert_allclose(_outputs(load_fold_model(fold / "model.weights.h5")), expected[k], rtol=1e-6,
                                   atol=1e-5)
    assert main(["predict", str(run), "--out", str(tmp_path / "after.csv")]) == 0
    assert (tmp_path / "before.csv").read_text() == (tmp_path / "after.csv").read_text()
    assert main(["convert", str(run)]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_an_archive_this_keras_cannot_read_names_both_versions_and_the_fix(experiment, tmp_path, capsys):
    """What Kaggle's Keras 3.13 says of a 3.15 archive, made here: an archive from a 'newer' Keras whose
    initializer takes an argument this one does not know."""
    cfg, run = experiment
    _archive(cfg, run)
    path = run / "fold_0" / "model.keras"
    with zipfile.ZipFile(path) as zf:
        files = {name: zf.read(name) for name in zf.namelist()}
    added = []

    def newer(node):  # every GlorotUniform gets an argument no Keras has
        if isinstance(node, dict):
            if node.get("class_name") == "GlorotUniform":
                node["config"]["fan_axes"] = None
                added.append(node)
            for value in node.values():
                newer(value)
        elif isinstance(node, list):
            for value in node:
                newer(value)

    config = json.loads(files["config.json"])
    newer(config)
    assert added
    files["config.json"] = json.dumps(config).encode()
    files["metadata.json"] = json.dumps({**json.loads(files["metadata.json"]), "keras_version": "9.1.0"}).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    with pytest.raises(UnreadableArchiveError):
        load_fold_model(path)
    capsys.readouterr()
    assert main(["predict", str(run), "--out", str(tmp_path / "sub.csv")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, errors
    assert f"{path}: written by Keras 9.1.0, which this Keras {keras.__version__} cannot read" in errors[0]
    assert f"python -m lresizervit convert {run}" in errors[0] and "fan_axes" in errors[0]
    assert not (tmp_path / "sub.csv").exists()


def test_a_fold_moved_without_its_model_json_is_refused_before_loading(experiment, tmp_path, capsys):
    cfg, run = experiment
    shutil.move(run / "fold_1" / "model.json", tmp_path / "model.json")
    assert main(["predict", str(run), "--out", str(tmp_path / "sub.csv")]) == 2
    err = capsys.readouterr().err
    assert f"{run / 'fold_1' / 'model.json'}: missing" in err and "1 --force" in err
