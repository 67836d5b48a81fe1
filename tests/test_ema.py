"""EMA of the weights (`train.ema`): validation and the saved best model use the optimizer's averages, not
the raw weights, and a fold stopped mid-training resumes with both exactly as they were backed up."""

import json
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import yaml

from tests.facts import TASK
from tests.tiny import shrink_model

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


class Recorder(keras.callbacks.Callback):
    """Copies of the raw weights and the EMA weights at each epoch end and when training begins."""

    def __init__(self):
        super().__init__()
        self.raw, self.ema, self.at_start = {}, {}, None

    def _snapshot(self):
        # The optimizer's averages, aligned with model.trainable_variables; Keras' own SwapEMAWeights reads
        # this same attribute (there is no public accessor).
        averages = self.model.optimizer._model_variables_moving_average
        return [v.numpy() for v in self.model.trainable_variables], [v.numpy() for v in averages]

    def on_train_begin(self, logs=None):
        # Runs after BackupAndRestore has loaded the backup; a fresh run builds the optimizer at step 1.
        if self.model.optimizer.built:
            self.at_start = self._snapshot()

    def on_epoch_end(self, epoch, logs=None):
        self.raw[epoch + 1], self.ema[epoch + 1] = self._snapshot()


class Interrupt(Exception):
    pass


class StopAfter(keras.callbacks.Callback):
    """Ends training with an exception after `epoch` epochs, once that epoch's backup is written."""

    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            raise Interrupt


def test_ema_weights_are_validated_saved_and_resumed(tmp_path):
    from lresizervit.config import load_config
    from lresizervit.data.folds import make_folds, write_folds
    from lresizervit.data.schema import read_table
    from lresizervit.data.synth import SynthParams, generate
    from lresizervit.models.fold_model import load_fold_model
    from lresizervit.training.trainer import backup_epoch, train_fold

    generate(tmp_path / "data", 16, 2, SynthParams(seed=6, min_side=40, max_side=48, max_long_side=56), workers=1)
    tree = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    tree.update(name="tiny", output_dir=str(tmp_path / "models"))
    tree["data"].update(dir=str(tmp_path / "data"), folds_csv=str(tmp_path / "folds.csv"), n_folds=2, image_size=32)
    shrink_model(tree)
    # Momentum 0.9 over 8 steps (2 an epoch): the averages lag the weights by more than the float32
    # rounding of a swap at every epoch, the last included (when the cosine schedule barely moves the
    # weights). No TTA, so the OOF RMSE is the one validation measured.
    tree["train"].update(epochs=4, batch_size=4, tensorboard=False, ema=True, ema_momentum=0.9,
                         learning_rate=0.003, warmup_fraction=0.0)
    tree["predict"].update(tta="none", batch_size=8)
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(tree))
    cfg = load_config(cfg_path)
    write_folds(make_folds(read_table(tmp_path / "data" / "train.csv", "train", TASK), 2, 0, TASK), cfg.data.folds_csv, TASK)
    fold = tmp_path / "models" / "tiny" / "fold_0"

    first = Recorder()
    with pytest.raises(Interrupt):
        train_fold(cfg, 0, extra_callbacks=[first, StopAfter(2)])
    assert backup_epoch(fold / "backup") == 2

    second = Recorder()
    metrics = train_fold(cfg, 0, extra_callbacks=[second])
    assert metrics["resumed_after_epoch"] == 2 and metrics["epochs"] == 4
    # The backup held the raw weights and the averages, not the swapped pair: both come back bit for bit.
    raw_at_start, ema_at_start = second.at_start
    for restored, saved in zip(raw_at_start, first.raw[2], strict=True):
        np.testing.assert_array_equal(restored, saved)
    for restored, saved in zip(ema_at_start, first.ema[2], strict=True):
        np.testing.assert_array_equal(restored, saved)

    raw, ema = {**first.raw, **second.raw}, {**first.ema, **second.ema}
    assert sorted(raw) == [1, 2, 3, 4]
    best = metrics["best_epoch"]
    model_weights = [np.asarray(v) for v in load_fold_model(fold / "model.weights.h5").trainable_variables]
    assert len(model_weights) == len(ema[best]) > 0
    # The saved model holds the averages of its best epoch (SwapEMAWeights swaps by adding and
    # subtracting, so equal up to float32 rounding) ...
    for saved, average in zip(model_weights, ema[best], strict=True):
        np.testing.assert_allclose(saved, average, rtol=1e-5, atol=1e-6)
    # ... which are not the raw weights (they differ by 100 times the tolerance above, or more).
    assert max(float(np.max(np.abs(a - r))) for a, r in zip(ema[best], raw[best], strict=True)) > 1e-4
    # Validation measured those same averaged weights: the saved model's OOF RMSE is the epoch's val_rmse.
    history = pd.read_csv(fold / "history.csv")
    assert history["epoch"].tolist() == [1, 2, 3, 4]
    val_rmse = history.loc[history["epoch"] == best, "val_rmse"].item()
    assert metrics["val_rmse"] == pytest.approx(val_rmse, rel=1e-4)
    assert json.loads((fold / "metrics.json").read_text())["best_epoch"] == best
