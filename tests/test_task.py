"""The `task` section: the data set's facts are configurable, bad ones fail with the key named, the
Pawpularity defaults behave as before, and a data set of another task trains and predicts end to end."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import yaml

from lresizervit.config import ConfigError, load_config
from lresizervit.data.schema import SchemaError, check_images, read_table, validate_dataset
from lresizervit.data.synth import SynthParams, generate
from lresizervit.inference.submission import SubmissionError, check_submission, write_submission
from lresizervit.models.regressor import build_regressor, metadata_stats
from lresizervit.task import PAWPULARITY, Task
from tests.conftest import copy_experiment
from tests.facts import TASK
from tests.test_end_to_end import run
from tests.test_models import tiny_model_config
from tests.tiny import shrink_model

ROOT = Path(__file__).resolve().parents[1]
OTHER = Task(competition="my-image-regression", id_column="image_id", target_column="score",
             target_range=[0.0, 10.0], integer_target=False, metadata_columns=["Group", "size_estimate"],
             metadata_binary=False, image_path="images/{split}/{id}.jpg")
SMALL = SynthParams(seed=5, min_side=40, max_side=48, max_long_side=64)


def _yaml(tmp_path: Path, tree: dict) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def test_the_default_task_is_pawpularity():
    cfg = load_config(None)
    assert cfg.task == PAWPULARITY == TASK
    assert cfg.task.columns("train")[0] == "Id" and cfg.task.columns("train")[-1] == "Pawpularity"
    assert len(cfg.task.metadata_columns) == 12 and cfg.task.target_range == [1.0, 100.0]
    assert cfg.task.image_file("d", "test", "ab") == Path("d/test/ab.jpg")


def test_task_section_round_trips_through_yaml(tmp_path):
    tree = {"task": dataclasses.asdict(OTHER), "model": {"fusion": "concat"}}
    assert load_config(_yaml(tmp_path, tree)).task == OTHER


@pytest.mark.parametrize(("task", "words"), [
    ({"target_range": [10, 1]}, "task.target_range' must be [lo, hi] with finite lo < hi"),
    ({"target_range": [1, 2, 3]}, "task.target_range' must be [lo, hi]"),
    ({"target_range": "1..100"}, "task.target_range' must be a list"),
    ({"target_range": [1, "x"]}, "task.target_range[1]' must be float"),
    ({"metadata_columns": ["Eyes", "Eyes"]}, "task.metadata_columns' repeats"),
    ({"metadata_columns": ["Id"]}, "task.metadata_columns' repeats or reuses the id/target column"),
    ({"metadata_columns": ["kfold"]}, "'kfold' is the folds file's own column"),
    ({"image_path": "{split}/img.jpg"}, "task.image_path' must use {id}"),
    ({"image_path": "{split}/{name}.jpg"}, "task.image_path' must use {id}"),
    ({"id_column": " "}, "task.id_column' must not be empty"),
    ({"colour": "red"}, "unknown key 'task.colour'"),
])
def test_bad_task_keys_name_the_key_and_the_file(tmp_path, task, words):
    path = _yaml(tmp_path, {"task": task})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value) and words in str(info.value)


def test_image_only_task_needs_fusion_none(tmp_path):
    with pytest.raises(ConfigError, match="model.fusion' is 'concat' but 'task.metadata_columns' is empty"):
        load_config(_yaml(tmp_path, {"task": {"metadata_columns": []}}))
    assert load_config(_yaml(tmp_path, {"task": {"metadata_columns": []}, "model": {"fusion": "none"}}))


def test_a_task_that_forgets_metadata_binary_gets_one_error_line_naming_the_key(tmp_path, capsys):
    from lresizervit.cli import main

    generate(tmp_path / "data", 12, 3, SMALL, workers=1, task=OTHER)
    task = {k: v for k, v in dataclasses.asdict(OTHER).items() if k != "metadata_binary"}
    data = {"dir": str(tmp_path / "data"), "folds_csv": str(tmp_path / "folds.csv")}
    assert main(["check-data", str(_yaml(tmp_path, {"task": task, "data": data}))]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "train.csv: column 'size_estimate' holds 12" in err
    assert "set `task.metadata_binary: false` in the config's task section" in err
    # What the message says to do.
    fixed = _yaml(tmp_path, {"task": {**task, "metadata_binary": False}, "data": data})
    assert main(["check-data", str(fixed)]) == 0


def test_a_data_set_that_does_not_match_the_task_names_file_row_and_column(tmp_path):
    generate(tmp_path, 12, 3, SMALL, workers=1, task=OTHER)
    train, test = validate_dataset(tmp_path, OTHER)
    assert list(train.columns) == ["image_id", "Group", "size_estimate", "score"]
    assert train["score"].dtype == np.float64 and train["score"].between(0, 10).all()
    assert (tmp_path / "images" / "test" / f"{test['image_id'][0]}.jpg").is_file()
    # The same folder does not match Pawpularity's task: its columns are named.
    with pytest.raises(SchemaError, match="missing columns 'Id'"):
        validate_dataset(tmp_path, PAWPULARITY)

    raw = pd.read_csv(tmp_path / "train.csv", dtype=str)
    bad = raw.copy()
    bad.loc[2, "score"] = "10.5"
    bad.loc[4, "size_estimate"] = "big"
    bad.to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(SchemaError) as info:
        read_table(tmp_path / "train.csv", "train", OTHER)
    msg = str(info.value)
    assert "train.csv" in msg and "row 3 (line 4), column 'score': value '10.5' is not a number in 0..10" in msg
    assert "row 5 (line 6), column 'size_estimate': value 'big' is not a finite number" in msg
    raw.drop(columns="size_estimate").to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(SchemaError, match="missing column 'size_estimate'"):
        read_table(tmp_path / "train.csv", "train", OTHER)

    first = test["image_id"][0]
    (tmp_path / "images" / "test" / f"{first}.jpg").unlink()
    with pytest.raises(SchemaError, match=rf"row 1 \(line 2\), image_id '{first}': image .*images/test/{first}.jpg "
                                          "not found"):
        check_images(test, tmp_path, "test", tmp_path / "test.csv", OTHER)


def test_submission_header_and_clipping_follow_the_task(tmp_path):
    out = write_submission(["a", "b"], [-3.0, 12.5], ["a", "b"], tmp_path / "s.csv", OTHER)
    sub = pd.read_csv(out, dtype={"image_id": str})
    assert list(sub.columns) == ["image_id", "score"] and sub["score"].tolist() == [0.0, 10.0]
    with pytest.raises(SubmissionError, match="header must be Id,Pawpularity, got image_id,score"):
        check_submission(sub, ["a", "b"], PAWPULARITY)
    with pytest.raises(SubmissionError, match=r"row 2, column score: 10.5 is outside \[0, 10\]"):
        check_submission(sub.assign(score=[1.0, 10.5]), ["a", "b"], OTHER)


def test_non_binary_metadata_is_standardised_inside_the_model():
    df = pd.DataFrame({"Group": [0, 1, 1, 0], "size_estimate": [10.0, 20.0, 30.0, 40.0], "score": [1.0] * 4})
    mean, var = metadata_stats(df, OTHER)
    assert mean == [0.0, 25.0] and var == pytest.approx([1.0, 125.0])
    # Pawpularity's 0/1 columns need nothing: the model has no standardisation layer, as before.
    binary = pd.DataFrame(np.eye(12, dtype=int), columns=TASK.metadata_columns)
    assert metadata_stats(binary, TASK) is None
    assert "metadata_standardise" not in [la.name for la in build_regressor(tiny_model_config(), 32, TASK).layers]

    model = build_regressor(tiny_model_config(), 32, OTHER, metadata_stats=(mean, var))
    layer = model.get_layer("metadata_standardise")
    out = keras.ops.convert_to_numpy(layer(np.array([[1.0, 25.0 + np.sqrt(125.0)]], "float32")))
    np.testing.assert_allclose(out, [[1.0, 1.0]], rtol=1e-5)


def test_target_range_scales_the_head_and_the_loss():
    model = build_regressor(tiny_model_config(), 32, OTHER)
    x = {"image": np.zeros((3, 32, 32, 3), np.uint8), "metadata": np.zeros((3, 2), np.float32)}
    pred = model.predict_on_batch(x)
    # A sigmoid head scaled to [0, 10]: every output lies in the task's range.
    assert pred.shape == (3, 1) and ((pred >= 0) & (pred <= 10)).all()
    from lresizervit.models.regressor import RangeBCE

    loss = RangeBCE(0.0, 10.0)
    # 5 of [0, 10] is 0.5 on the 0..1 scale: the BCE of 0.5 against 0.5 is log 2.
    assert float(loss(np.array([[5.0]]), np.array([[5.0]]))) == pytest.approx(np.log(2), rel=1e-4)


def test_an_experiment_saved_before_the_task_section_means_pawpularity(tiny_experiment, tmp_path, capsys):
    from lresizervit.cli import main

    cfg_path = copy_experiment(tiny_experiment, tmp_path / "old")
    run_cfg = tmp_path / "old" / "models" / "tiny" / "config.yaml"
    tree = yaml.safe_load(run_cfg.read_text())
    del tree["task"]  # as written by the code before this section existed
    run_cfg.write_text(yaml.safe_dump(tree))
    out = tmp_path / "old" / "sub.csv"
    assert main(["predict", str(cfg_path), "--out", str(out)]) == 0
    sub = pd.read_csv(out, dtype={"Id": str})
    assert list(sub.columns) == ["Id", "Pawpularity"] and sub["Pawpularity"].between(1, 100).all()
    # ... and training another fold under today's config (with the task section) is no difference.
    assert main(["train", str(cfg_path), "--fold", "0"]) == 0
    assert "already trained" in capsys.readouterr().out


@pytest.mark.slow
def test_another_task_trains_and_predicts_a_valid_submission(tmp_path, capsys):
    """Other column names, a real-valued target in [0, 10], non-binary metadata and another image layout,
    through the commands a user runs: synth and check-data as processes, then folds, train (each fold), cv
    and predict in this process (`main`, what train_folds.sh and predict.py call): the processes themselves are
    test_parallel_folds.py's subject, and each would import TensorFlow again (~7 s)."""
    from lresizervit.cli import main

    tree = yaml.safe_load((ROOT / "configs" / "task_example.yaml").read_text())
    tree["output_dir"] = str(tmp_path / "models")
    tree["data"].update(dir=str(tmp_path / "data"), folds_csv=str(tmp_path / "folds.csv"), n_folds=2,
                        image_size=32, cache=False)
    shrink_model(tree)
    tree["train"].update(epochs=1, batch_size=8, tensorboard=False)
    tree["predict"].update(out_dir=str(tmp_path / "submissions"), batch_size=8)
    cfg = tmp_path / "task.yaml"
    cfg.write_text(yaml.safe_dump(tree))
    py = sys.executable
    run([py, "-m", "lresizervit", "synth", "--out", str(tmp_path / "data"), "--train", "30", "--test", "6",
         "--min-side", "40", "--max-side", "48", "--max-long-side", "64", "--config", str(cfg)], ROOT)
    assert run([py, "-m", "lresizervit", "check-data", str(cfg)], ROOT).stdout.startswith(str(tmp_path / "data"))
    assert main(["folds", str(cfg)]) == 0
    for k in (0, 1):
        assert main(["train", str(cfg), "--fold", str(k)]) == 0
    assert main(["cv", str(cfg)]) == 0
    assert "CV RMSE" in capsys.readouterr().out
    run_dir = tmp_path / "models" / "task_example"
    assert main(["report", str(cfg)]) == 0  # train_folds.sh's last step: a real-valued target's bins and plots
    assert (run_dir / "report" / "report.md").is_file()
    oof = pd.read_csv(run_dir / "oof.csv", dtype={"image_id": str})
    assert list(oof.columns) == ["image_id", "kfold", "score", "pred"] and oof["pred"].between(0, 10).all()

    from lresizervit.models.fold_model import load_fold_model

    model = load_fold_model(run_dir / "fold_0" / "model.weights.h5")
    # The fold's own training statistics of the non-binary column travel inside the model.
    train = pd.read_csv(tmp_path / "folds.csv", dtype={"image_id": str}).query("kfold != 0")
    mean = keras.ops.convert_to_numpy(model.get_layer("metadata_standardise").mean).reshape(-1)
    np.testing.assert_allclose(mean, [0.0, train["size_estimate"].mean()], rtol=1e-5)

    assert main(["predict", str(cfg)]) == 0
    sub = pd.read_csv(tmp_path / "submissions" / "task_example.csv", dtype={"image_id": str})
    test = pd.read_csv(tmp_path / "data" / "test.csv", dtype={"image_id": str})
    assert list(sub.columns) == ["image_id", "score"] and sub["image_id"].tolist() == test["image_id"].tolist()
    assert sub["score"].between(0, 10).all() and sub["score"].nunique() > 1
    run([py, "-m", "lresizervit", "validate", str(tmp_path / "submissions" / "task_example.csv"), "--config",
         str(cfg)], ROOT)
