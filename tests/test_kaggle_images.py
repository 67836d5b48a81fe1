"""Kaggle's GPU and TPU images as test environments (README: Runs on).

`make test-images` rebuilds them as virtualenvs from PyPI (tests/images/kaggle-{gpu,tpu}.txt) and runs this
file, which drives each image's own Python in subprocesses, the way a notebook runs:

(a) two experiments trained here (a native tiny ViT, and a tiny keras-hub Swin, the default recipe's family)
    are packaged by `kaggle package` into a folder shaped like /kaggle/input; the offline `inference.py` run
    by the image's Python writes the submission this environment writes, within 1e-3;
(b) 2 folds of a tiny config train in the image the README's way (`pip install --no-deps` the wheel, `env
    --install` for what the image lacks, `train_folds.sh`: TensorFlow in kaggle-gpu, Keras on JAX with
    bfloat16 in kaggle-tpu), and that experiment predicts the same here, within 1e-3;
(c) the image's TensorFlow, Keras and JAX are the same after all of it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import ROOT, copy_experiment
from tests.facts import ID, TARGET

pytestmark = [pytest.mark.images, pytest.mark.slow]

IMAGES_DIR = Path(os.environ.get("LRESIZERVIT_IMAGES", ROOT / ".venv-images")).resolve()
WHEELS = IMAGES_DIR / "wheels"
# One xdist group per image (`make test-images` runs two workers): tests of one image share its virtualenv
# and put it back as it comes, so they must not run at the same time; the two images can.
IMAGES = [pytest.param(image, marks=pytest.mark.xdist_group(image)) for image in ("kaggle-gpu", "kaggle-tpu")]
# What the image brings and lresizervit must never replace.
PINNED = ("tensorflow", "tensorflow-cpu", "keras", "jax", "jaxlib")
# The keras-hub each image has before anything is installed (None: none at all).
IMAGE_KERAS_HUB = {"kaggle-gpu": "0.26.0", "kaggle-tpu": None}
TOLERANCE = 1e-3


@contextlib.contextmanager
def using(image: str):
    """The tests of one image share its virtualenv and put it back as it comes, so they run one at a time,
    whichever pytest-xdist worker has them (a lock file beside the virtualenvs; the images run in parallel)."""
    import fcntl

    IMAGES_DIR.mkdir(parents=True, exist_ok=True)
    with open(IMAGES_DIR / f".{image}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@pytest.fixture(autouse=True)
def _one_test_per_image(request):
    image = getattr(request.node, "callspec", None) and request.node.callspec.params.get("image")
    if image is None and "image_lacks" in request.node.name:
        image = "kaggle-gpu"
    if image is None:
        yield
        return
    with using(image):
        yield


def image_python(image: str) -> Path:
    python = IMAGES_DIR / image / "bin" / "python"
    if not python.is_file():
        pytest.fail(f"{python}: missing; build the images first: make images (make test-images does)")
    return python


def run(args, env: dict | None = None, cwd: Path | None = None, timeout: int = 900) -> str:
    full_env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
                "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": "", **(env or {})}
    full_env.pop("VIRTUAL_ENV", None)
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=full_env, cwd=cwd,
                          timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(map(str, args))} exited {proc.returncode}:\n{out[-6000:]}"
    return out


def versions(python: Path) -> dict:
    code = ("import json; from importlib import metadata as m\n"
            "def v(d):\n try: return m.version(d)\n except m.PackageNotFoundError: return None\n"
            f"print(json.dumps({{d: v(d) for d in {(*PINNED, 'keras-hub', 'lresizervit')!r}}}))")
    return json.loads(run([python, "-c", code]).strip().splitlines()[-1])


def reset(image: str, python: Path) -> dict:
    """The image as it comes: no lresizervit, its own keras-hub (or none). Returns its versions."""
    run([python, "-m", "pip", "uninstall", "-y", "-q", "lresizervit", "keras-hub"])
    if IMAGE_KERAS_HUB[image]:
        run([python, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
             WHEELS / f"keras_hub-{IMAGE_KERAS_HUB[image]}-py3-none-any.whl"])
    got = versions(python)
    assert got["lresizervit"] is None and got["keras-hub"] == IMAGE_KERAS_HUB[image]
    return got


def read_submission(path: Path) -> pd.Series:
    sub = pd.read_csv(path, dtype={ID: str})
    return sub.set_index(ID)[TARGET]


def assert_same_submission(got: Path, expected: Path) -> None:
    a, b = read_submission(got), read_submission(expected)
    assert list(a.index) == list(b.index)
    gap = float(np.max(np.abs(a.to_numpy() - b.to_numpy())))
    assert gap <= TOLERANCE, f"{got} differs from {expected} by up to {gap:g}"


def main_predict(exp: Path, data: Path, out: Path) -> Path:
    from lresizervit.cli import main

    assert main(["predict", str(exp), "--data-dir", str(data), "--out", str(out)]) == 0
    return out


def tiny_swin_config(tiny_root: Path, root: Path, preset: str, name: str) -> Path:
    """The tiny experiment's config with the tiny Swin preset behind the resizer (64 -> 32 px)."""
    tree = yaml.safe_load((tiny_root / "tiny.yaml").read_text())
    tree.update(name=name, output_dir=str(root / "models"))
    tree["data"].update(image_size=64, folds_csv=str(root / f"{name}_folds.csv"))
    tree["model"]["resizer"].update(target_size=32)
    tree["model"]["backbone"].update(name=f"keras_hub:{preset}")
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


@pytest.fixture(scope="module")
def kaggle_input(tiny_experiment, tmp_path_factory) -> dict:
    """/kaggle/input as a notebook sees it: the competition and two packaged experiments trained here, plus
    what this environment predicts from each."""
    from lresizervit.config import load_config
    from lresizervit.kaggle_io.package import package_experiment
    from lresizervit.training.trainer import train_fold
    from tests.test_keras_hub_backbone import write_tiny_preset

    if not (WHEELS / "keras_hub-0.29.1-py3-none-any.whl").is_file():
        pytest.fail(f"{WHEELS}: no keras-hub wheels; build them first: make images")
    root = tmp_path_factory.mktemp("kaggle_images")
    copy_experiment(tiny_experiment, root / "work")
    work = root / "work"
    swin_yaml = tiny_swin_config(work, work, write_tiny_preset("swin", work / "swin_preset"), "swin")
    from lresizervit.data.folds import read_folds, write_folds
    from tests.facts import TASK

    folds, _ = read_folds(work / "folds.csv", TASK)
    write_folds(folds, load_config(swin_yaml).data.folds_csv, TASK)
    for k in range(2):
        train_fold(load_config(swin_yaml), k)

    inp = root / "input"
    data = inp / "competitions" / "petfinder-pawpularity-score"
    shutil.copytree(work / "data", data)
    experiments = {}
    for name, exp in (("native", work / "models" / "tiny"), ("swin", work / "models" / "swin")):
        mount = inp / "datasets" / "me" / f"lresizervit-{name}" / exp.name
        shutil.copytree(exp, mount)
        package_experiment(mount, dataset=f"me/lresizervit-{name}", wheel_dirs=(WHEELS,))
        experiments[name] = {"mount": mount, "expected": main_predict(mount, data, root / f"main_{name}.csv")}
    assert (experiments["swin"]["mount"] / "keras_hub-0.29.1-py3-none-any.whl").is_file()
    assert not list(experiments["native"]["mount"].glob("keras_hub-*.whl"))
    return {"root": inp, "data": data, "experiments": experiments, "work": work, "swin_yaml": swin_yaml}


@pytest.mark.parametrize("image", IMAGES)
def test_inference_in_the_image_writes_this_environments_submission(image, kaggle_input, tmp_path):
    python = image_python(image)
    before = reset(image, python)
    for name in ("native", "swin"):
        exp = kaggle_input["experiments"][name]
        out = tmp_path / f"{name}.csv"
        log = run([python, exp["mount"] / "inference.py", "--input-root", kaggle_input["root"], "--experiments",
                   exp["mount"], "--out", out, "--work-dir", tmp_path / f"work_{name}"])
        assert "runtime:" in log and f"keras {before['keras']}" in log, log[-3000:]
        assert_same_submission(out, exp["expected"])
        now = versions(python)
        if name == "native":  # keras-hub is not needed: the image's stays
            assert now["keras-hub"] == IMAGE_KERAS_HUB[image]
            assert "the image meets lresizervit's requirements" in log
        else:  # the image's is outside the range (0.26.0 has no Swin) or absent: the shipped one is installed
            assert now["keras-hub"] == "0.29.1"
            assert "installed keras_hub-0.29.1-py3-none-any.whl" in log
    after = versions(python)
    assert {d: after[d] for d in PINNED} == {d: before[d] for d in PINNED}


@pytest.mark.xdist_group("kaggle-gpu")
def test_inference_names_what_the_image_lacks(kaggle_input, tmp_path):
    """Without the shipped keras-hub wheel, the GPU image's keras-hub 0.26.0 cannot build Swin: one error line
    naming the package, the version found, the version needed and what to attach."""
    python = image_python("kaggle-gpu")
    reset("kaggle-gpu", python)
    mount = tmp_path / "input" / "swin"
    shutil.copytree(kaggle_input["experiments"]["swin"]["mount"], mount)
    (mount / "keras_hub-0.29.1-py3-none-any.whl").unlink()
    proc = subprocess.run([str(python), str(mount / "inference.py"), "--input-root", str(tmp_path / "input"),
                           "--data-dir", str(kaggle_input["data"]), "--out", str(tmp_path / "sub.csv"),
                           "--work-dir", str(tmp_path / "work")],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""}, timeout=600)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: keras-hub 0.26.0 is installed; lresizervit needs keras-hub<0.30,>=0.29.1; no wheel of it in that "
        f"range was found under {tmp_path / 'input'}: attach a dataset holding one, e.g. made with `pip download "
        f"--no-deps 'keras-hub<0.30,>=0.29.1'` where there is internet (`python -m lresizervit kaggle package` "
        f"puts keras-hub's beside the experiment)"], proc.stderr[-3000:]
    assert not (tmp_path / "sub.csv").exists()


def _train_in_image(image: str, python: Path, config: Path, env: dict, wheel: Path, sets: tuple = ()) -> str:
    """docs/kaggle.md's recipe ("Installing inside a Kaggle image by hand") in a Kaggle image: the wheel
    without its dependencies, then what the image lacks (also without dependencies; offline here, so
    --wheels), then every fold, with the TPU's settings on the command line as the recipe gives them."""
    log = run([python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", wheel], env=env)
    log += run([python, "-m", "lresizervit", "env", config, "--install", "--wheels", WHEELS], env=env)
    log += run(["bash", ROOT / "train_folds.sh", config, *sets], env={**env, "PYTHON": str(python)}, cwd=ROOT)
    return log


@pytest.mark.parametrize("image", IMAGES)
def test_folds_trained_in_the_image_predict_the_same_here(image, kaggle_input, tmp_path):
    from lresizervit.config import load_config

    python = image_python(image)
    before = reset(image, python)
    wheel = next(kaggle_input["experiments"]["native"]["mount"].glob("lresizervit-*.whl"))
    if image == "kaggle-gpu":  # the default recipe's family, on TensorFlow 2.20 / Keras 3.13
        tree = yaml.safe_load(kaggle_input["swin_yaml"].read_text())
        env, sets = {"KERAS_BACKEND": "tensorflow"}, ()
    else:  # Kaggle's TPU recipe: Keras on JAX, bfloat16
        tree = yaml.safe_load((kaggle_input["work"] / "tiny.yaml").read_text())
        env = {"KERAS_BACKEND": "jax"}
        sets = ("--set", "train.backend=jax", "--set", "train.precision=mixed_bfloat16")
    tree.update(name=f"in_{image.replace('-', '_')}", output_dir=str(tmp_path / "models"))
    tree["data"].update(folds_csv=str(tmp_path / "folds.csv"))
    config = tmp_path / "in_image.yaml"
    config.write_text(yaml.safe_dump(tree))

    log = _train_in_image(image, python, config, env, wheel, sets)
    assert "CV RMSE" in log, log[-3000:]
    run_dir = load_config(config).run_dir
    spec = json.loads((run_dir / "fold_1" / "model.json").read_text())
    assert spec["written_by"]["keras"] == before["keras"] and spec["written_by"]["backend"] == env["KERAS_BACKEND"]
    assert spec["precision"] == ("mixed_bfloat16" if image == "kaggle-tpu" else "float32")
    in_image = tmp_path / "image.csv"
    run([python, "-m", "lresizervit", "predict", run_dir, "--data-dir", kaggle_input["data"], "--out", in_image],
        env=env)
    assert_same_submission(main_predict(run_dir, kaggle_input["data"], tmp_path / "here.csv"), in_image)
    after = versions(python)
    assert {d: after[d] for d in PINNED} == {d: before[d] for d in PINNED}
    assert after["keras-hub"] == ("0.29.1" if image == "kaggle-gpu" else None)


@pytest.mark.xdist_group("kaggle-tpu")
def test_this_environment_is_not_an_image():
    """The comparisons above mean something only if the main environment differs from the images."""
    import keras
    import tensorflow as tf

    assert (tf.__version__, keras.__version__) != ("2.20.0", "3.13.2")


@pytest.mark.parametrize("image", IMAGES[:1])
def test_a_pip_install_with_dependencies_replaces_nothing_in_an_image_that_meets_the_range(image, kaggle_input):
    """pyproject.toml's range is chosen so that `pip install lresizervit` (dependencies resolved, not
    --no-deps) in Kaggle's GPU image, once its keras-hub is in range, installs lresizervit alone. Offline
    (--no-index): pip must find every dependency satisfied by what the image has."""
    python = image_python(image)
    before = reset(image, python)
    run([python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", WHEELS / "keras_hub-0.29.1-py3-none-any.whl"])
    wheel = next(kaggle_input["experiments"]["native"]["mount"].glob("lresizervit-*.whl"))
    log = run([python, "-m", "pip", "install", "--no-index", "--find-links", WHEELS, wheel])
    assert "Successfully installed lresizervit-0.1.0" in log, log[-3000:]
    after = versions(python)
    assert {d: after[d] for d in PINNED} == {d: before[d] for d in PINNED}
    assert (after["keras-hub"], after["lresizervit"]) == ("0.29.1", "0.1.0")
