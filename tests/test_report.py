"""`write_report`: the figures and report.md of one experiment.

The fast tests fake a run's artefacts (no model, so the resizer figure is skipped); the slow one trains a
tiny real run (2 folds, 1 epoch, 32 px) so the artefacts are exactly what the trainer writes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lresizervit.config import Config, load_config
from lresizervit.data.folds import make_folds, write_folds
from lresizervit.io_utils import atomic_write_csv, atomic_write_json
from lresizervit.report import FIGURES, residual_bins, write_report
from lresizervit.resizer_samples import read_samples
from lresizervit.run import SAMPLES_FILE, fold_dir, write_cv
from tests.conftest import copy_experiment
from tests.facts import FOLD, ID, META_COLUMNS, TARGET, TASK
from tests.tiny import SETS

ROOT = Path(__file__).resolve().parents[1]
ALWAYS = ("learning_curves", "oof_scatter", "residual_by_bin")


def tiny_config(tmp: Path, *extra: str) -> Config:
    return load_config(ROOT / "configs" / "demo.yaml", [
        "name=tiny", f"output_dir={tmp / 'models'}", f"data.dir={tmp / 'data'}",
        f"data.folds_csv={tmp / 'folds.csv'}", "data.n_folds=2", *SETS, "train.epochs=1", "train.batch_size=8",
        *extra,
    ])


def check_png(path: Path) -> tuple[int, int]:
    assert path.is_file() and path.stat().st_size > 1000, path
    with Image.open(path) as img:
        assert img.format == "PNG"
        img.verify()
        width, height = img.size
    # ~8 in at 120 dpi, trimmed or padded a little by bbox_inches="tight".
    assert 700 <= width <= 1200 and 300 <= height <= 2000, (path, width, height)
    return width, height


def fake_run(tmp: Path, *extra: str, n: int = 40, epochs: int = 3, n_folds: int = 2) -> Config:
    """The artefacts of a finished run, written in the trainer's formats; cv.json by `write_cv`."""
    cfg = tiny_config(tmp, *extra)
    rng = np.random.default_rng(0)
    train = pd.DataFrame({ID: [f"id{i:03d}" for i in range(n)]})
    for col in META_COLUMNS:
        train[col] = rng.integers(0, 2, n)
    train[TARGET] = rng.integers(1, 101, n)
    folds = make_folds(train, n_folds, 0, TASK)
    write_folds(folds, cfg.data.folds_csv, TASK)
    for k in range(n_folds):
        out = fold_dir(cfg.run_dir, k)
        val = folds[folds[FOLD] == k]
        oof = val[[ID, FOLD, TARGET]].copy()
        oof["pred"] = 0.3 * oof[TARGET] + 0.7 * 38.0  # shrunk towards the mean, like the real thing
        atomic_write_csv(out / "oof.csv", oof)
        e = np.arange(1, epochs + 1)
        atomic_write_csv(out / "history.csv", pd.DataFrame({
            "epoch": e, "loss": 0.7 - 0.01 * e, "rmse": 25.0 - e, "val_loss": 0.69 - 0.01 * e,
            "val_rmse": 24.0 - e + (e == epochs) * 2.0, "lr": 1e-3 / e, "train_seconds": 1.0,
            "epoch_seconds": 1.2,
        }))
        atomic_write_json(out / "metrics.json", {
            "fold": k, "n_folds": n_folds, "val_rmse": float(np.sqrt(np.mean((oof["pred"] - oof[TARGET]) ** 2))),
            "best_epoch": epochs - 1, "epochs": epochs, "n_train": n - len(val), "n_val": len(val),
            "seconds": 3.0, "train_images_per_second": 10.0, "parameters": 1000,
        })
    assert write_cv(cfg) is not None
    return cfg


def test_bilinear_run_skips_the_resizer_figure(tmp_path):
    cfg = fake_run(tmp_path, "model.resizer.mode=bilinear")
    stale = cfg.run_dir / "report" / FIGURES["resizer"]
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left over from an older report")
    md_path = write_report(cfg)
    assert md_path == cfg.run_dir / "report" / "report.md"
    for key in ALWAYS:
        check_png(md_path.parent / FIGURES[key])
    assert not stale.exists()
    md = md_path.read_text()
    cv = json.loads((cfg.run_dir / "cv.json").read_text())
    assert f"{cv['cv_rmse']:.3f}" in md and "| fold | val RMSE |" in md
    assert all(f"({FIGURES[key]})" in md for key in ALWAYS)
    assert FIGURES["resizer"] not in md
    assert "Figure skipped: model.resizer.mode is 'bilinear'" in md


def test_learned_run_without_its_model_skips_with_a_note(tmp_path):
    cfg = fake_run(tmp_path)
    md = write_report(cfg).read_text()
    assert "Figure skipped" in md and str(fold_dir(cfg.run_dir, 0) / "model.weights.h5") in md


def test_missing_history_is_an_error_naming_the_file(tmp_path):
    cfg = fake_run(tmp_path, "model.resizer.mode=bilinear")
    missing = fold_dir(cfg.run_dir, 1) / "history.csv"
    missing.unlink()
    with pytest.raises(FileNotFoundError, match=str(missing)):
        write_report(cfg)
    assert not (cfg.run_dir / "report" / "report.md").exists()


def test_missing_cv_is_an_error_naming_the_file(tmp_path):
    cfg = fake_run(tmp_path, "model.resizer.mode=bilinear")
    (cfg.run_dir / "cv.json").unlink()
    with pytest.raises(FileNotFoundError, match="cv.json"):
        write_report(cfg)


def test_residual_bins():
    oof = pd.DataFrame({TARGET: [1, 10, 11, 55, 100], "pred": [21.0, 20.0, 21.0, 50.0, 60.0]})
    bins = residual_bins(oof, TASK)
    assert bins["bin"].tolist()[:2] == ["1–10", "11–20"] and bins["bin"].iloc[-1] == "91–100"
    assert bins["n"].tolist() == [2, 1, 0, 0, 0, 1, 0, 0, 0, 1]
    assert bins["mean_residual"].iloc[0] == pytest.approx(15.0)
    assert bins["rmse"].iloc[0] == pytest.approx(np.sqrt((20**2 + 10**2) / 2))
    assert bins["mean_residual"].iloc[9] == pytest.approx(-40.0)
    assert np.isnan(bins["mean_residual"].iloc[2])


def test_samples_whose_arrays_do_not_fit_together_are_an_error_naming_the_file(tmp_path):
    path = tmp_path / SAMPLES_FILE
    np.savez(path, image=np.zeros((2, 8, 8, 3), np.uint8), plain=np.zeros((3, 4, 4, 3), np.float16),
             learned=np.zeros((3, 4, 4, 3), np.float16), target=np.zeros(2), interpolation=np.array("bilinear"))
    with pytest.raises(ValueError, match=rf"{path}: its arrays do not fit together"):
        read_samples(path)


def test_the_trainer_warns_and_keeps_no_stale_samples_when_it_cannot_save_them(tmp_path, capsys):
    """The samples only feed the report: a failure to make them is a warning, never a failed fold, and a file
    from an earlier model is gone rather than shown under this one."""
    import keras

    from lresizervit.training.trainer import _save_report_samples

    cfg = tiny_config(tmp_path)
    out = fold_dir(cfg.run_dir, 0)
    out.mkdir(parents=True)
    no_resizer = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, name="head")])
    # A model without a learned resizer (a reason), and one that fails outright (an exception).
    for model, why in ((no_resizer, "the model has no layer named 'resizer'"), (None, "AttributeError: ")):
        (out / SAMPLES_FILE).write_bytes(b"an earlier model's samples")
        _save_report_samples(cfg, model, out)
        printed = capsys.readouterr().out
        assert printed.startswith("warning: fold 0: the report's resizer samples were not saved (") and why in printed
        assert not (out / SAMPLES_FILE).exists()


@pytest.mark.slow
def test_report_of_a_real_tiny_run(tiny_experiment, tmp_path):
    from lresizervit.run import load_run_config

    cfg = load_config(copy_experiment(tiny_experiment, tmp_path / "run"))
    assert load_run_config(cfg.run_dir).name == "tiny"  # the trainer's own artefacts, copied

    md_path = write_report(cfg)
    for key in FIGURES:
        check_png(md_path.parent / FIGURES[key])
    md = md_path.read_text()
    cv = json.loads((cfg.run_dir / "cv.json").read_text())
    assert f"{cv['cv_rmse']:.3f}" in md
    assert all(f"({name})" in md for name in FIGURES.values())
    assert "clipped to [-1, 1]" in md and "skipped" not in md
    # Drawn from what the trainer saved: the resizer's output on four fold-0 validation photos.
    samples = read_samples(fold_dir(cfg.run_dir, 0) / SAMPLES_FILE)
    assert samples["image"].shape == (4, 32, 32, 3) and samples["learned"].shape == (4, 16, 16, 3)
    assert samples["interpolation"] == "bilinear" and np.all(np.diff(samples["target"]) >= 0)
    caption = md.split("## What the resizer learned", 1)[1]

    # An experiment trained before the trainer saved them: the same figure, from the fold-0 model.
    (fold_dir(cfg.run_dir, 0) / SAMPLES_FILE).unlink()
    (md_path.parent / FIGURES["resizer"]).unlink()
    md = write_report(cfg).read_text()
    check_png(md_path.parent / FIGURES["resizer"])
    assert md.split("## What the resizer learned", 1)[1] == caption

    # A damaged samples file: an error naming it, and the report already on disk left as it was.
    (fold_dir(cfg.run_dir, 0) / SAMPLES_FILE).write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(ValueError, match=rf"{SAMPLES_FILE}: not a resizer samples file"):
        write_report(cfg)
    assert md_path.read_text() == md

    # The same run with one fold's history gone: an error that names the file, not a half report.
    broken = load_config(tmp_path / "run" / "tiny.yaml", [f"output_dir={tmp_path / 'broken'}"])
    shutil.copytree(cfg.run_dir, broken.run_dir, ignore=shutil.ignore_patterns("report"))
    (fold_dir(broken.run_dir, 0) / "history.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"fold_0/history\.csv"):
        write_report(broken)


def test_odd_fold_count_and_many_epochs(tmp_path):
    cfg = fake_run(tmp_path, "model.resizer.mode=none", n=300, epochs=20, n_folds=5)
    md_path = write_report(cfg)
    width, height = check_png(md_path.parent / FIGURES["learning_curves"])
    assert height > width  # 3 rows of 2 panels, the sixth hidden
    check_png(md_path.parent / FIGURES["oof_scatter"])
    assert "| 4 |" in md_path.read_text()


def test_a_cv_no_better_than_the_mean_is_called_what_it_is(tmp_path):
    from lresizervit.inference.predict import cv_verdict, format_table

    assert cv_verdict({"cv_rmse": 9.3, "constant_baseline_rmse": 18.5}) is None
    # The demo's tiny ViT from scratch on 240 photos: 19.36 against a constant 18.46.
    worse = cv_verdict({"cv_rmse": 19.36, "constant_baseline_rmse": 18.46})
    assert "worse than predicting each fold's training mean (CV / baseline = 1.05)" in worse
    assert "learned nothing usable" in worse and "configs/default.yaml" in worse
    assert "within 3 % of" in cv_verdict({"cv_rmse": 18.2, "constant_baseline_rmse": 18.46})

    cfg = fake_run(tmp_path, "model.resizer.mode=bilinear")
    cv = json.loads((cfg.run_dir / "cv.json").read_text())
    cv["cv_rmse"] = cv["constant_baseline_rmse"] * 1.05
    (cfg.run_dir / "cv.json").write_text(json.dumps(cv))
    assert "learned nothing usable" in format_table(cfg)
    assert "learned nothing usable" in write_report(cfg).read_text()
