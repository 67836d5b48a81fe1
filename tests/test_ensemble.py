"""The blend (OOF-fitted weights), the SVR head on embeddings, and `predict` over several experiments.

The fast tests check the weight fitting on constructed OOF data; the slow ones train a tiny real experiment
(2 folds, 1 epoch, 32 px) with the project's trainer and predict with it as a user would.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lresizervit.cli import main
from lresizervit.inference import ensemble
from lresizervit.inference.ensemble import (
    Member,
    blend,
    fit_blend_weights,
    nested_blend_rmse,
    out_of_fold_blend,
)
from lresizervit.inference.svr import load_svr_head
from tests.conftest import copy_experiment
from tests.facts import FOLD, ID, TARGET, TASK

ROOT = Path(__file__).resolve().parents[1]


def test_blend_weights_recover_a_known_mixture():
    rng = np.random.default_rng(0)
    a, b, junk = rng.uniform(1, 100, (3, 2000))
    target = 0.7 * a + 0.3 * b
    w = fit_blend_weights(np.column_stack([a, b, junk]), target)
    np.testing.assert_allclose(w, [0.7, 0.3, 0.0], atol=1e-4)
    assert nested_blend_rmse(np.column_stack([a, b, junk]), target, np.arange(2000) % 5, TASK) < 1e-2


def test_blend_weights_are_non_negative_and_sum_to_one():
    rng = np.random.default_rng(1)
    target = rng.uniform(1, 100, 500)
    noise = rng.normal(0, 5, 500)
    # p2 carries twice p1's error: the unconstrained optimum is 2·p1 - 1·p2 (exact); non-negative it is p1.
    preds = np.column_stack([target + noise, target + 2 * noise, rng.uniform(1, 100, 500)])
    w = fit_blend_weights(preds, target)
    assert (w >= 0).all() and w.sum() == pytest.approx(1.0)
    assert w[1] == pytest.approx(0.0, abs=1e-6) and w[0] > 0.9  # (a little of the unrelated p3 shrinks p1)
    # No other admissible weights do better.
    best = ensemble.rmse(target, preds @ w)
    for other in rng.dirichlet(np.ones(3), 200):
        assert ensemble.rmse(target, preds @ other) >= best - 1e-9
    assert fit_blend_weights(preds[:, :1], target).tolist() == [1.0]
    with pytest.raises(ValueError, match="predictions of shape"):
        fit_blend_weights(preds[:10], target)


def test_out_of_fold_blend_never_uses_the_held_out_folds_targets():
    rng = np.random.default_rng(2)
    target = rng.uniform(1, 100, 300)
    preds = np.column_stack([target + rng.normal(0, s, 300) for s in (8, 10, 12)])
    folds = np.arange(300) % 3
    before = out_of_fold_blend(preds, target, folds, TASK)
    changed = target.copy()
    changed[folds == 0] = 50.0  # fold 0's labels: they may move folds 1 and 2's weights, never fold 0's
    after = out_of_fold_blend(preds, changed, folds, TASK)
    np.testing.assert_array_equal(after[folds == 0], before[folds == 0])
    assert not np.allclose(after[folds == 1], before[folds == 1])
    assert nested_blend_rmse(preds, target, folds, TASK) == pytest.approx(ensemble.rmse(target, before))


def _oof(ids, target, pred, folds):
    return pd.DataFrame({ID: ids, FOLD: folds, TARGET: target, "pred": pred})


def test_blend_aligns_members_by_id_and_refuses_other_rows():
    ids = [f"id{i}" for i in range(6)]
    target = np.array([10, 20, 30, 40, 50, 60.0])
    a = Member("a", "a", "network", "hflip", TASK, _oof(ids, target, target, [0, 1] * 3))
    # The same predictions in another row order: aligned by Id, so b is as perfect as a.
    order = [5, 3, 1, 0, 2, 4]
    folds = [0, 1, 0, 1, 0, 1]
    b = Member("b", "b", "network", "hflip", TASK, _oof([ids[i] for i in order], target[order], target[order],
                                                  [folds[i] for i in order]))
    out = blend([a, b])
    assert out["cv_rmse"] == pytest.approx(0.0, abs=1e-6) and out["weights"].sum() == pytest.approx(1.0)
    c = Member("c", "c", "network", "hflip", TASK, _oof(ids[:5], target[:5], target[:5], [0, 1, 0, 1, 0]))
    with pytest.raises(ValueError, match="experiments a and c have OOF predictions for different training rows"):
        blend([a, c])
    d = Member("d", "d", "network", "hflip", TASK, _oof(ids, target + 1, target, [0, 1] * 3))
    with pytest.raises(ValueError, match="d: its OOF targets differ"):
        blend([a, d])
    e = Member("e", "e", "network", "hflip", TASK, None)
    with pytest.raises(ValueError, match="e: no oof.csv"):
        blend([a, e])


# ------------------------------------------------------------------------------- a tiny real experiment

@pytest.fixture(scope="module")
def tiny_run(tiny_experiment, tmp_path_factory):
    """Our own copy of the session's tiny trained experiment (predict writes caches into it)."""
    tmp = tmp_path_factory.mktemp("ensemble") / "tree"
    return tmp, copy_experiment(tiny_experiment, tmp)


@pytest.mark.slow
def test_svr_head_is_fitted_on_each_folds_training_part_only(tiny_run, monkeypatch, capsys):
    tmp, cfg_path = tiny_run
    run = tmp / "models" / "tiny"
    fitted = []
    original = ensemble._fit_head

    def spy(cfg, model, paths, meta, target, fold, fingerprint):
        fitted.append((f"fold_{fold}", {Path(p).stem for p in paths}, len(target)))
        return original(cfg, model, paths, meta, target, fold, fingerprint)

    monkeypatch.setattr(ensemble, "_fit_head", spy)
    out = tmp / "submissions" / "svr.csv"
    assert main(["predict", str(cfg_path), "--svr", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| tiny+svr | svr | hflip |" in printed and "blend CV RMSE" in printed
    oof = pd.read_csv(run / "oof.csv", dtype={ID: str})
    assert [f[0] for f in fitted] == ["fold_0", "fold_1"]
    for k, (_, seen, n) in enumerate(fitted):
        assert seen == set(oof.loc[oof[FOLD] != k, ID]) and not seen & set(oof.loc[oof[FOLD] == k, ID])
        saved = load_svr_head(run / f"fold_{k}" / "svr_c4.npz").info
        assert saved["n_train"] == n == (oof[FOLD] != k).sum() and saved["backend"] == "sklearn"

    summary = json.loads(out.with_suffix(".json").read_text())
    assert [m["name"] for m in summary["members"]] == ["tiny", "tiny+svr"]
    assert sum(m["weight"] for m in summary["members"]) == pytest.approx(1.0)
    # The network's OOF re-predicted with the training's TTA equals the one the trainer wrote.
    assert summary["members"][0]["cv_rmse"] == pytest.approx(json.loads((run / "cv.json").read_text())["cv_rmse"])
    sub = pd.read_csv(out, dtype={ID: str})
    assert sub[ID].tolist() == pd.read_csv(tmp / "data" / "test.csv", dtype={ID: str})[ID].tolist()

    # A second run reuses the cached OOF and the saved SVRs: nothing is fitted again, same submission.
    fitted.clear()
    out2 = tmp / "submissions" / "svr2.csv"
    assert main(["predict", str(cfg_path), "--svr", "--out", str(out2)]) == 0
    assert fitted == [] and out2.read_bytes() == out.read_bytes()

    # Another C has its own heads and cache; coming back to C=4 reuses the first ones.
    other_c = tmp / "submissions" / "svr_c2.csv"
    assert main(["predict", str(cfg_path), "--svr", "--set", "predict.svr_c=2", "--out", str(other_c)]) == 0
    assert len(fitted) == 2 and (run / "fold_0" / "svr_c2.npz").is_file()
    fitted.clear()
    assert main(["predict", str(cfg_path), "--svr", "--out", str(out2)]) == 0
    assert fitted == [] and out2.read_bytes() == out.read_bytes()
    # A truncated head and an unreadable cache key are refitted and recomputed, never an error.
    (run / "fold_0" / "svr_c4.npz").write_bytes(b"")
    (run / "oof_hflip_svr_c4.json").write_text("{")
    assert main(["predict", str(cfg_path), "--svr", "--out", str(out2)]) == 0
    assert len(fitted) == 2 and out2.read_bytes() == out.read_bytes()
    # The summary goes beside the submission as <out>.json: a submission named .json would be overwritten.
    assert main(["predict", str(cfg_path), "--out", str(tmp / "submissions" / "sub.json")]) == 2
    assert "a submission file must end in .csv" in capsys.readouterr().err


@pytest.mark.slow
def test_blend_of_two_experiments_ignores_the_test_set(tiny_run, capsys):
    tmp, cfg_path = tiny_run
    run = tmp / "models" / "tiny"
    other = tmp / "models" / "tiny_flipless"
    if not other.exists():
        shutil.copytree(run, other, ignore=shutil.ignore_patterns("oof_*", "svr_*.npz"))
        # The copy predicts without TTA (its saved predict section): a member different from the first.
        saved = other / "config.yaml"
        saved.write_text(saved.read_text().replace("tta: hflip", "tta: none"))
    # Folders as a user passes attached datasets, each predicted as its own config.yaml says.
    out = tmp / "submissions" / "blend.csv"
    args = ["predict", str(run), str(other), "--data-dir", str(tmp / "data"), "--out", str(out)]
    assert main(args) == 0
    summary = json.loads(out.with_suffix(".json").read_text())
    assert [(m["experiment"], m["tta"]) for m in summary["members"]] == [("tiny", "hflip"), ("tiny_flipless", "none")]
    assert summary["members"][0]["cv_rmse"] != summary["members"][1]["cv_rmse"]
    assert summary["blend_cv_rmse_weights_out_of_fold"] is not None
    assert "blend CV RMSE" in capsys.readouterr().out

    # Other test images change the test predictions, never the weights (fitted on the OOF alone).
    weights = [m["weight"] for m in summary["members"]]
    moved = tmp / "data_moved"
    if not moved.exists():
        shutil.copytree(tmp / "data", moved)
        test = pd.read_csv(moved / "test.csv", dtype={ID: str})
        for i in test[ID]:  # every test photo replaced by a flipped, darker copy
            from PIL import Image

            path = moved / "test" / f"{i}.jpg"
            with Image.open(path) as img:
                img.transpose(Image.Transpose.FLIP_TOP_BOTTOM).point(lambda v: v // 2).save(path, quality=90)
    out2 = tmp / "submissions" / "blend_moved.csv"
    assert main(["predict", str(run), str(other), "--data-dir", str(moved), "--out", str(out2)]) == 0
    summary2 = json.loads(out2.with_suffix(".json").read_text())
    assert [m["weight"] for m in summary2["members"]] == weights
    assert not np.allclose(pd.read_csv(out)[TARGET], pd.read_csv(out2)[TARGET])


@pytest.mark.slow
def test_other_tta_re_predicts_the_oof_and_bad_input_is_refused(tiny_run, capsys):
    tmp, cfg_path = tiny_run
    run = tmp / "models" / "tiny"
    out = tmp / "submissions" / "zoom.csv"
    assert main(["predict", str(cfg_path), "--tta", "flip_zoom", "--out", str(out)]) == 0
    assert (run / "oof_flip_zoom.csv").is_file()
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["tta_views"] == 4 and summary["members"][0]["tta"] == "flip_zoom"
    capsys.readouterr()

    assert main(["predict", str(cfg_path), "--tta", "vflip", "--out", str(out)]) == 2
    assert "predict.tta must be one of none, hflip, flip_zoom, got 'vflip'" in capsys.readouterr().err
    assert main(["predict", str(tmp / "nowhere"), "--out", str(out)]) == 2
    assert "nowhere: neither a config file nor an experiment folder" in capsys.readouterr().err
    assert main(["predict", str(run), str(run), "--out", str(out)]) == 2
    assert "named twice" in capsys.readouterr().err
    assert main(["predict", str(cfg_path), "--set", "predict.svr_c=0", "--out", str(out)]) == 2
    assert "predict.svr_c" in capsys.readouterr().err
