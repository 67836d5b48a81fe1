"""Keras 3 on JAX: the backend key, the user's commands on JAX, DataParallel over two host devices, and
models crossing backends both ways. Keras fixes its backend once per process and this one runs TensorFlow,
so everything on JAX runs in a subprocess, with its compile cache in a temp dir (never in ~/.cache)."""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from lresizervit.training.trainer import backup_epoch
from tests.facts import TASK
from tests.test_end_to_end import ROOT, tiny_config
from tests.test_resume import train_until_backed_up

NOISE = "^[IWE]0000|absl|WARNING: All log"


@pytest.fixture(scope="session")
def jax_cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("jax_compile_cache"))


def env_for(backend: str | None, cache: str, **extra) -> dict:
    env = {**os.environ, "PYTHON": sys.executable, "NO_ALBUMENTATIONS_UPDATE": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
           "JAX_COMPILATION_CACHE_DIR": cache, **extra}
    env.pop("KERAS_BACKEND", None)
    env.pop("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", None)  # the trainer's own setting, asserted below
    if backend:
        env["KERAS_BACKEND"] = backend
    return env


def run(args, env, check=True, timeout=600):
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-4000:]}")
    return proc


def make_data(tmp_path: Path, n_train: int, seed: int, train: dict | None = None) -> Path:
    """Synthetic photos, their folds and a tiny config (test_end_to_end's) with `train` overrides."""
    from lresizervit.config import load_config
    from lresizervit.data.folds import make_folds, write_folds
    from lresizervit.data.schema import read_table
    from lresizervit.data.synth import SynthParams, generate

    generate(tmp_path / "data", n_train, 5, SynthParams(seed=seed, min_side=40, max_side=48, max_long_side=56),
             workers=1)
    cfg_path = tiny_config(tmp_path)
    tree = yaml.safe_load(cfg_path.read_text())
    tree["train"].update(tensorboard=False, **(train or {}))
    cfg_path.write_text(yaml.safe_dump(tree))
    cfg = load_config(cfg_path)
    folds = make_folds(read_table(tmp_path / "data" / "train.csv", "train", TASK), 2, cfg.data.fold_seed, TASK)
    write_folds(folds, cfg.data.folds_csv, TASK)
    return cfg_path


# --------------------------------------------------------------------------------------- the backend key

def test_select_names_both_backends_when_they_disagree():
    import keras

    from lresizervit.backend import select

    assert keras.backend.backend() == "tensorflow"  # this test process
    assert select("auto") == "tensorflow" and select("tensorflow") == "tensorflow"
    with pytest.raises(ValueError, match=r"train.backend is 'jax' but Keras already runs on 'tensorflow'"):
        select("jax")
    with pytest.raises(ValueError, match="train.backend must be one of auto, tensorflow, jax"):
        select("theano")


def test_config_refuses_an_unknown_backend(tmp_path):
    from lresizervit.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"'train.backend' must be one of auto, tensorflow, jax, got 'torch'"):
        load_config(ROOT / "configs" / "demo.yaml", ("train.backend=torch",))


def test_cli_refuses_a_key_that_contradicts_keras_backend(jax_cache):
    # KERAS_BACKEND says one thing, the config another: one error line naming both, before anything runs.
    proc = run([sys.executable, "-m", "lresizervit", "train", "configs/demo.yaml", "--fold", "0",
                "--set", "train.backend=jax"], env_for("tensorflow", jax_cache), check=False)
    assert proc.returncode == 2, proc.stderr
    err = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "train.backend is 'jax'" in err[0] and "KERAS_BACKEND=tensorflow" in err[0]


def test_the_backend_is_known_before_keras_starts_and_what_only_tensorflow_runs_is_refused_on_it(monkeypatch):
    """What `train` checks before Keras starts (`planned`), and the check itself, which the trainer repeats on
    the backend Keras runs (train.backend: auto with ~/.keras/keras.json saying jax is known only then)."""
    import keras

    from lresizervit.backend import MULTI_WORKER_ON_JAX, check_support, planned
    from lresizervit.config import load_config
    from lresizervit.training import placement

    monkeypatch.delitem(sys.modules, "keras")  # as in a fresh `train` process (restored after the test)
    for requested, env, want in (("jax", None, "jax"), ("jax", "jax", "jax"), ("auto", "jax", "jax"),
                                 ("auto", None, None), ("tensorflow", None, "tensorflow"),
                                 ("jax", "tensorflow", None)):  # the last: select() refuses it, naming both
        if env is None:
            monkeypatch.delenv("KERAS_BACKEND", raising=False)
        else:
            monkeypatch.setenv("KERAS_BACKEND", env)
        assert planned(requested) == want, (requested, env)
    monkeypatch.setitem(sys.modules, "keras", keras)
    assert planned("jax") is None  # Keras runs already: select() compares

    cases = ((("model.backbone.name=savedmodel:/x",), "model.backbone.name 'savedmodel:/x' is a TF SavedModel"),
             (("model.resizer.mode=bilinear", "model.resizer.interpolation=area"),
              "model.resizer.interpolation 'area' has no resize"),
             (("train.strategy=multi_worker",), MULTI_WORKER_ON_JAX))
    for sets, message in cases:
        cfg = load_config(ROOT / "configs" / "demo.yaml", sets)
        for backend in (None, "tensorflow"):
            check_support(cfg, backend)  # not known yet, or TensorFlow: nothing refused
        with pytest.raises(ValueError, match=re.escape(message)):
            check_support(cfg, "jax")
        # The trainer's check, on the backend Keras reports.
        with monkeypatch.context() as m, pytest.raises(ValueError, match=re.escape(message)):
            m.setattr(placement.keras.backend, "backend", lambda: "jax")
            placement.check_backend_support(cfg)


# `train` as the CLI runs it, then whether Keras was imported.
WITH_KERAS = """
import sys
from lresizervit.cli import main
code = main(sys.argv[1:])
print("EXIT", code, "KERAS", "keras" in sys.modules)
"""


def test_tensorflow_only_parts_are_refused_on_jax_before_training(tmp_path, jax_cache):
    """Refused before Keras starts (~7 s on a CPU), whether KERAS_BACKEND or the config's key says jax."""
    cfg = make_data(tmp_path, 12, 2)
    cases = ((["model.backbone.name=savedmodel:/nowhere"], "model.backbone.name", "jax"),
             (["train.strategy=multi_worker"], "train.strategy", "jax"),
             (["model.resizer.mode=bilinear", "model.resizer.interpolation=area"], "model.resizer.interpolation",
              None),
             (["model.backbone.name=hub:https://tfhub.dev/x/1"], "model.backbone.name", None))
    for settings, key, keras_backend in cases:
        sets = [arg for setting in settings for arg in ("--set", setting)]
        if keras_backend is None:
            sets += ["--set", "train.backend=jax"]
        proc = run([sys.executable, "-c", WITH_KERAS, "train", str(cfg), "--fold", "0", *sets],
                   env_for(keras_backend, jax_cache), check=False)
        assert proc.stdout.strip().splitlines()[-1] == "EXIT 2 KERAS False", proc.stdout + proc.stderr[-3000:]
        err = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(err) == 1 and key in err[0] and "jax" in err[0].lower(), err
    assert not (tmp_path / "models").exists()  # nothing was trained or written


# ----------------------------------------------------------------------------------- padded validation

def test_padded_validation_scores_the_real_rows_only(tmp_path):
    """JAX pads validation batches with zero-weight rows; the loss and RMSE must be those of the real rows."""
    import tensorflow as tf

    from lresizervit.config import load_config
    from lresizervit.training.placement import pad_batches
    from lresizervit.training.trainer import compile_model

    cfg = load_config(tiny_config(tmp_path))
    model = compile_model(cfg, steps_per_epoch=1)
    rng = np.random.default_rng(0)
    n = 11
    x = {"image": rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
         "metadata": rng.integers(0, 2, (n, 12)).astype("float32")}
    y = rng.uniform(1, 100, n).astype("float32")
    plain = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    padded = pad_batches(plain, 4)
    sizes = [int(b[1].shape[0]) for b in padded]
    weights = np.concatenate([b[2].numpy() for b in padded])
    assert sizes == [4, 4, 4] and weights.sum() == n  # 11 rows + 1 zero-weight copy
    a = model.evaluate(plain, verbose=0, return_dict=True)
    b = model.evaluate(padded, verbose=0, return_dict=True)
    pred = model.predict(plain, verbose=0).reshape(-1)
    assert a["rmse"] == pytest.approx(float(np.sqrt(np.mean((pred - y) ** 2))), rel=1e-5)
    assert b["rmse"] == pytest.approx(a["rmse"], rel=1e-6)
    # The loss of each batch is over its real rows too, but Keras averages batches weighted by their padded
    # sizes (4, 4, 4 rather than 4, 4, 3): val_loss is off by at most one row's share; val_rmse is exact.
    assert b["loss"] == pytest.approx(a["loss"], rel=0.05)


# ------------------------------------------------------------------------ the user's commands on JAX

@pytest.mark.slow
def test_user_path_on_jax_resumes_after_a_kill_and_predicts_on_both_backends(tmp_path, jax_cache):
    """train.backend: jax (the key alone: no KERAS_BACKEND) through train → kill → train_folds.sh (the killed
    fold resumes) → predict.py --svr on JAX and on TensorFlow: the same submission."""
    py = sys.executable
    cfg = make_data(tmp_path, 24, 3, {"backend": "jax", "epochs": 6, "ema": True, "ema_momentum": 0.9})
    env = env_for(None, jax_cache)
    fold = tmp_path / "models" / "tiny" / "fold_0"
    proc = train_until_backed_up(cfg, fold, 2, env=env, timeout_s=400)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    killed_after = backup_epoch(fold / "backup")
    assert 2 <= killed_after < 6 and not (fold / "metrics.json").exists()

    out = run(["bash", "train_folds.sh", str(cfg)], env).stdout
    assert f"resuming after epoch {killed_after}" in out and "CV RMSE" in out
    assert "JAX on cpu:0" in out
    for k in (0, 1):
        metrics = json.loads((tmp_path / "models" / "tiny" / f"fold_{k}" / "metrics.json").read_text())
        assert metrics["backend"] == "jax" and metrics["devices"] == ["cpu:0"] and metrics["epochs"] == 6
    assert json.loads((fold / "metrics.json").read_text())["resumed_after_epoch"] == killed_after
    history = pd.read_csv(fold / "history.csv")
    assert history["epoch"].tolist() == list(range(1, 7))

    # The network + SVR blend, predicted on each backend: the fold models, their embeddings (the SVR heads
    # are fitted on them) and the blend weights agree.
    subs = tmp_path / "submissions"
    on = {}
    for backend in ("jax", "tensorflow"):
        out = run([py, "predict.py", str(cfg), "--svr", "--out", str(subs / f"{backend}.csv")],
                  env_for(backend, jax_cache)).stdout
        assert "tiny+svr" in out
        on[backend] = pd.read_csv(subs / f"{backend}.csv", dtype={"Id": str})
        on[f"{backend} weights"] = [m["weight"] for m in json.loads((subs / f"{backend}.json").read_text())["members"]]
    np.testing.assert_allclose(on["jax weights"], on["tensorflow weights"], atol=1e-2)
    assert on["jax"]["Id"].tolist() == on["tensorflow"]["Id"].tolist() and len(on["jax"]) == 5
    assert on["jax"]["Pawpularity"].between(1, 100).all()
    np.testing.assert_allclose(on["jax"]["Pawpularity"], on["tensorflow"]["Pawpularity"], rtol=0, atol=1e-2)


# --------------------------------------------------------------------------- data parallelism on JAX

TWO_DEVICES = """
import json, sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import yaml

from lresizervit.backend import predict_batch
from lresizervit.config import load_config
from lresizervit.models.fold_model import load_fold_model
from lresizervit.training.trainer import train_fold

assert keras.backend.backend() == "jax"

tmp, fold = Path(sys.argv[1]), int(sys.argv[2])
out = {}
# First (before any distribution is set): a fold model trained on TensorFlow, predicted here on JAX; 8 rows,
# the 5 real ones padded to one compiled shape, as predict_models does with a last batch.
x = dict(np.load(sys.argv[4]))
out["tf_fold_on_jax"] = np.asarray(predict_batch(load_fold_model(sys.argv[3]), x, 8)).reshape(-1).tolist()
base = yaml.safe_load((tmp / "tiny.yaml").read_text())
# The same global batch of 16: one device x 16 at learning rate L, two devices x 8 at L/2 (scaled by 2).
for name, strategy, batch, lr in (("one", "default", 16, 2e-3), ("two", "auto", 8, 1e-3)):
    tree = dict(base, name=name)
    tree["train"] = dict(base["train"], strategy=strategy, batch_size=batch, learning_rate=lr)
    (tmp / f"{name}.yaml").write_text(yaml.safe_dump(tree))
    metrics = train_fold(load_config(tmp / f"{name}.yaml"), fold)
    history = pd.read_csv(tmp / "models" / name / f"fold_{fold}" / "history.csv")
    out[name] = {"metrics": metrics, "history": history[["loss", "rmse", "val_rmse"]].to_numpy().tolist()}
import jax
out["cache"] = {"dir": jax.config.jax_compilation_cache_dir,
                "min_compile_secs": jax.config.jax_persistent_cache_min_compile_time_secs}
print("RESULT " + json.dumps(out))
"""


@pytest.mark.slow
def test_two_devices_reproduce_one_device_and_a_tensorflow_fold_predicts_the_same(tmp_path, jax_cache,
                                                                                  tiny_experiment):
    """XLA_FLAGS gives this CPU two JAX devices; DataParallel over them trains like one device on the same
    global batch: same losses, same val RMSE (the resizer's BatchNorm sees the global batch), the val rows
    padded to the devices scored on the real rows only. The same JAX process (one fewer start, ~15 s) first
    predicts a fold model trained on TensorFlow: what TensorFlow predicts."""
    from lresizervit.backend import predict_batch
    from lresizervit.data.folds import read_folds
    from lresizervit.models.fold_model import load_fold_model

    model_path = tiny_experiment / "models" / "tiny" / "fold_0" / "model.weights.h5"
    rng = np.random.default_rng(1)
    x = {"image": rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8),
         "metadata": rng.integers(0, 2, (5, 12)).astype("float32")}
    np.savez(tmp_path / "x.npz", **x)
    on_tf = np.asarray(predict_batch(load_fold_model(model_path), x)).reshape(-1)

    cfg = make_data(tmp_path, 65, 5, {"epochs": 2, "deterministic": True})
    folds, _ = read_folds(tmp_path / "folds.csv", TASK)
    # A fold with 32 training rows (two whole global batches, nothing dropped) and 33 validation rows (padded).
    fold = int((folds["kfold"].value_counts() == 33).idxmax())
    assert cfg == tmp_path / "tiny.yaml"
    env = env_for("jax", jax_cache, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    cached_before = len(list(Path(jax_cache).iterdir()))
    out = run([sys.executable, "-c", TWO_DEVICES, str(tmp_path), str(fold), str(model_path), str(tmp_path / "x.npz")],
              env).stdout
    result = json.loads(out.split("RESULT ", 1)[1])
    # The trainer keeps every compiled program on disk, not only those that took over a second to compile.
    assert result["cache"] == {"dir": jax_cache, "min_compile_secs": 0.0}
    assert len(list(Path(jax_cache).iterdir())) > cached_before  # the session shares the folder: this run added
    on_jax = np.asarray(result["tf_fold_on_jax"])
    assert on_jax.shape == (5,)
    np.testing.assert_allclose(on_jax, on_tf, rtol=0, atol=1e-3)  # Pawpularity units; float32 either way
    one, two = result["one"], result["two"]
    assert one["metrics"]["replicas"] == 1 and one["metrics"]["devices"] == ["cpu:0"]
    assert two["metrics"]["replicas"] == 2 and two["metrics"]["devices"] == ["cpu:0", "cpu:1"]
    assert one["metrics"]["global_batch"] == two["metrics"]["global_batch"] == 16
    # Measured: agreement to ~1e-5 relative (float32 sums in another order); 1e-4 leaves room. The OOF is
    # predicted after two epochs by the saved model: 1.05e-4 apart on 2026-12-06 (JAX 0.10.2, the code before
    # the code of stop 16 as well), so 5e-4 there.
    np.testing.assert_allclose(two["history"], one["history"], rtol=1e-4)
    assert two["metrics"]["val_rmse"] == pytest.approx(one["metrics"]["val_rmse"], rel=5e-4)
