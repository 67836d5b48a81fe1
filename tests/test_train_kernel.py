"""The Kaggle training kernel (kaggle/train_kernel.py) run here, on the CPU, against /kaggle-shaped folders.

The input root and the working folder are temp folders (LRESIZERVIT_INPUT_ROOT, LRESIZERVIT_WORKING); the
code dataset is made by kaggle_io/kernel.py's write_code_dataset, the competition is synthetic, and the
script is rendered with its job and run with this Python, as a notebook runs it: the mount layouts, a Kaggle
Model preset, the TPU recipe on JAX, and a missing input. A time budget that stops a fold and the checkpoint
that resumes it are test_kaggle_train's round trip, where the kernels are pushed, run and collected as on Kaggle.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import yaml

from lresizervit.kaggle_io import kernel
from tests.conftest import ROOT
from tests.facts import TASK
from tests.tiny import shrink_model

SLUG = TASK.competition
OWNER = "someone"
HANDLE = f"{OWNER}/tinyvit/keras/tiny_vit_32/2"


def script_module():
    spec = importlib.util.spec_from_file_location("train_kernel_under_test", ROOT / "kaggle" / "train_kernel.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def job(**kw) -> dict:
    base = {"experiment": "kern", "folds": [0, 1], "accelerator": "cpu", "parallel": 1, "time_budget_s": 3600,
            "competition": SLUG, "model_handle": None, "code_marker": kernel.CODE_MARKER,
            "checkpoint_marker": kernel.CHECKPOINT_MARKER}
    return {**base, **kw}


def fake_keras_hub_wheel(folder: Path, version: str) -> Path:
    """A stand-in for keras-hub's wheel: the kernel ships it, and installs it only where the image's
    keras-hub is outside the range (here it is inside, so it is never installed)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"keras_hub-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"keras_hub-{version}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: keras-hub\n"
                                                               f"Version: {version}\n")
    return path


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> dict:
    """Synthetic competition data, a tiny experiment's config tree and a code dataset made for it."""
    from lresizervit.config import load_config
    from lresizervit.data.synth import SynthParams, generate

    root = tmp_path_factory.mktemp("train_kernel")
    generate(root / "data", 24, 5, SynthParams(seed=3, min_side=40, max_side=48, max_long_side=64), workers=1)
    tree = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    tree.update(name="kern", output_dir="models")
    tree["data"].update(dir=str(root / "data"), folds_csv="folds/train_folds.csv", n_folds=2, image_size=32,
                        cache=False)
    shrink_model(tree)
    tree["train"].update(epochs=1, batch_size=8, tensorboard=True)
    tree["predict"].update(batch_size=8, tta="hflip")
    code = root / "code"
    path = root / "kern.yaml"
    path.write_text(yaml.safe_dump(tree))
    manifest = kernel.write_code_dataset(load_config(path), code)
    return {"root": root, "tree": tree, "code": code, "manifest": manifest, "data": root / "data"}


def make_code(sandbox: dict, dest: Path, wheel_dirs: tuple = (), **changes) -> tuple[Path, dict]:
    """A code dataset for the sandbox's config with `changes` (section -> keys) applied, at `dest`; keras-hub's
    wheel from `wheel_dirs`, else a stand-in. Returns `dest` and the manifest written into it."""
    from lresizervit.config import load_config

    tree = json.loads(json.dumps(sandbox["tree"]))
    for section, values in changes.items():
        if isinstance(values, dict):
            tree[section].update(values)
        else:
            tree[section] = values
    path = dest.parent / f"{dest.name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(tree))
    wheel_dirs = wheel_dirs or (fake_keras_hub_wheel(dest.parent / "wheels", _hub()).parent,)
    return dest, kernel.write_code_dataset(load_config(path), dest, wheel_dirs=wheel_dirs)


def _hub() -> str:
    from importlib import metadata

    return metadata.version("keras-hub")


def mount(input_root: Path, layout: str, kind: str, src: Path, name: str) -> Path:
    """Copy `src` where Kaggle mounts a source of `kind` ("competition", "dataset", "model") named `name`."""
    if kind == "competition":
        dest = input_root / ("competitions" if layout == "new" else "") / name
    elif kind == "dataset":
        dest = input_root / (f"datasets/{OWNER}" if layout == "new" else "") / name
    else:
        owner, rest = name.split("/", 1)
        dest = input_root / (f"models/{owner}/{rest}" if layout == "new" else rest)
    shutil.copytree(src, dest)
    return dest


def kaggle_input(tmp: Path, sandbox: dict, layout: str = "new", code: Path | None = None) -> Path:
    inp = tmp / "input"
    mount(inp, layout, "competition", sandbox["data"], SLUG)
    mount(inp, layout, "dataset", code or sandbox["code"], "lresizervit-kern-code")
    # Another dataset holding a train.csv and test.csv: the kernel must prefer the folder named like the slug.
    other = tmp / "other"
    other.mkdir()
    for name in ("train.csv", "test.csv"):
        shutil.copy2(sandbox["data"] / name, other / name)
    mount(inp, layout, "dataset", other, "some-other-data")
    return inp


def run_kernel(tmp: Path, the_job: dict, inp: Path, working: Path, python: str | Path = sys.executable,
               env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    script = tmp / f"script_{time.monotonic_ns()}" / "train_kernel.py"
    script.parent.mkdir(parents=True)
    script.write_text(kernel.render_train_script(the_job))
    working.mkdir(parents=True, exist_ok=True)
    full = {k: v for k, v in os.environ.items() if not k.startswith(("KERAS_BACKEND", "LRESIZERVIT_"))}
    full.update(LRESIZERVIT_INPUT_ROOT=str(inp), LRESIZERVIT_WORKING=str(working), CUDA_VISIBLE_DEVICES="",
                PYTHONPATH=str(ROOT / "src"), **(env or {}))
    if python != sys.executable:
        full.pop("PYTHONPATH")  # a Python that must install lresizervit from the code dataset's wheel
    return subprocess.run([str(python), str(script)], cwd=working, env=full, capture_output=True, text=True,
                          timeout=timeout)


def output_files(working: Path) -> list[str]:
    return sorted(p.relative_to(working).as_posix() for p in working.rglob("*") if p.is_file() or p.is_symlink())


# What /kaggle/working may hold at the end (kernel.py's docstring; brief (g)), for experiments named `exp`.
def allowed(exp: str = r"kern\w*", folds: str = "train_folds") -> list[str]:
    return [r"lresizervit-run\.json", rf"folds/{folds}\.(csv|json)", rf"models/{exp}/config\.yaml",
            rf"models/{exp}/fold_\d+/(model\.weights\.h5|model\.json|history\.csv|oof\.csv|metrics\.json)",
            rf"models/{exp}/fold_0/resizer_samples\.npz",
            rf"models/{exp}/fold_\d+/backup/(latest\.weights\.h5|training_metadata\.json)",
            rf"models/{exp}/(cv\.json|oof\.csv|report/[\w.]+)", rf"models/{exp}/logs/fold_\d+\.log"]


def assert_small_output(working: Path, exp: str = r"kern\w*", folds: str = "train_folds") -> list[str]:
    files = output_files(working)
    extra = [f for f in files if not any(re.fullmatch(p, f) for p in allowed(exp, folds))]
    assert not extra, f"unexpected in the output: {extra}"
    assert not (working / "lresizervit").exists()  # the preset's link and the scratch files are gone
    return files


def status_of(working: Path) -> dict:
    return json.loads((working / kernel.RUN_STATUS_FILE).read_text())


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def predict_ok(run_dir: Path, data: Path, out: Path) -> None:
    from lresizervit.inference.submission import validate_file

    proc = subprocess.run([sys.executable, "-m", "lresizervit", "predict", str(run_dir), "--data-dir", str(data),
                           "--out", str(out)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert validate_file(out, data / "test.csv", TASK) == 5


# --------------------------------------------------------------------------------------------- contracts

def test_the_job_renders_into_the_script_and_reads_back():
    script = kernel.render_train_script(job(model_handle=HANDLE))
    assert kernel.read_job(script) == job(model_handle=HANDLE)
    assert script.count('JOB = {"experiment": "kern"') == 1 and "\nJOB = {}\n" not in script
    compile(script, "train_kernel.py", "exec")  # the JSON line is Python too
    with pytest.raises(ValueError) as err:
        kernel.render_train_script({**job(folds=[]), "parallel": 0, "extra": 1})
    assert "job key 'extra'" in str(err.value)
    with pytest.raises(ValueError) as err:
        kernel.render_train_script(job(folds=[1, 1], accelerator="tpu", parallel=2, model_handle="a/b"))
    message = str(err.value)
    assert "'folds'" in message and "'parallel'" in message and "'model_handle'" in message
    # The names the lead's client reads are the ones the script writes.
    mod = script_module()
    assert (mod.RUN_STATUS_FILE, mod.MODELS_DIR, mod.FOLDS_DIR) == (kernel.RUN_STATUS_FILE, kernel.OUTPUT_MODELS,
                                                                    kernel.OUTPUT_FOLDS)
    assert f"{kernel.KERNEL_WORKING}/{mod.SCRATCH_DIR}/{mod.PRESET_DIR}" == kernel.KERNEL_PRESET_DIR
    assert mod.EXIT_TEMPFAIL == 75 and mod.tail_s(12 * 3600) == 300 and mod.tail_s(100) == 20


def test_the_code_dataset_holds_what_the_kernel_needs(sandbox, tmp_path):
    code, manifest = sandbox["code"], sandbox["manifest"]
    files = sorted(p.name for p in code.iterdir())
    assert files == manifest["files"] == sorted(["config.yaml", "lresizervit-0.1.0-py3-none-any.whl",
                                                 "lresizervit-code.json", "lresizervit_bootstrap.py",
                                                 "train_folds.sh"])
    assert json.loads((code / kernel.CODE_MARKER).read_text()) == manifest
    assert manifest["experiment"] == "kern" and manifest["keras_hub"] is None and manifest["lresizervit"] == "0.1.0"
    assert (code / "lresizervit_bootstrap.py").read_bytes() == \
        (ROOT / "src/lresizervit/kaggle_io/bootstrap.py").read_bytes()
    assert (code / "train_folds.sh").read_bytes() == (ROOT / "train_folds.sh").read_bytes()
    assert yaml.safe_load((code / "config.yaml").read_text())["name"] == "kern"

    # A keras_hub: backbone ships keras-hub's wheel (the installed version); a folds file ships with its sidecar.
    folds = tmp_path / "f" / "my_folds.csv"
    folds.parent.mkdir()
    folds.write_text("Id,kfold\n")
    (folds.with_suffix(".json")).write_text("{}")
    from lresizervit.config import load_config

    cfg = load_config(None, ("name=hubby", "model.backbone.name=keras_hub:/somewhere"))
    wheel = fake_keras_hub_wheel(tmp_path / "wheels", _hub())
    got = kernel.write_code_dataset(cfg, tmp_path / "hub_code", folds_csv=folds, wheel_dirs=(wheel.parent,))
    assert got["keras_hub"] == _hub() and wheel.name in got["files"]
    assert {"my_folds.csv", "my_folds.json"} <= set(got["files"])
    # Whole or not at all: a failure while writing leaves the previous folder as it was and no temp folder.
    with pytest.raises(FileNotFoundError):
        kernel.write_code_dataset(cfg, tmp_path / "hub_code", folds_csv=tmp_path / "nope.csv",
                                  wheel_dirs=(wheel.parent,))
    assert sorted(p.name for p in (tmp_path / "hub_code").iterdir()) == got["files"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_kernel_config_sets_the_accelerators_recipe():
    from lresizervit.config import load_config

    cfg = load_config(None, ("model.backbone.name=keras_hub:swin_base_patch4_window7_224",))
    tpu = kernel.kernel_config(cfg, "tpu", preset_dir=True)
    assert (tpu.train.backend, tpu.train.precision, tpu.train.strategy) == ("jax", "mixed_bfloat16", "auto")
    assert tpu.model.backbone.name == f"keras_hub:{kernel.KERNEL_PRESET_DIR}"
    gpu = kernel.kernel_config(cfg, "gpu")
    assert (gpu.train.backend, gpu.train.precision) == ("tensorflow", "mixed_float16")
    assert gpu.model.backbone.name == cfg.model.backbone.name and cfg.train.backend == "auto"  # a copy


def test_past_the_hard_limit_the_training_process_group_is_stopped(tmp_path):
    """A fold whose epoch outran its estimate: train_folds.sh and its children get SIGTERM at the hard limit."""
    mod = script_module()
    pid_file = tmp_path / "child.pid"
    cmd = ["bash", "-c", f"sleep 300 & echo $! > {pid_file}; wait"]
    t0 = time.monotonic()
    code, killed = mod.run_training(cmd, dict(os.environ), tmp_path, time.time() + 2)
    assert killed and code in (-15, 143) and time.monotonic() - t0 < 30
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{child}").exists() and \
            "zombie" not in Path(f"/proc/{child}/status").read_text().lower():
        time.sleep(0.1)
    assert not Path(f"/proc/{child}").exists() or "zombie" in Path(f"/proc/{child}/status").read_text().lower()
    assert mod.run_training(["true"], dict(os.environ), tmp_path, time.time() + 60) == (0, False)


def test_fold_states_and_the_tidy_output(tmp_path):
    mod = script_module()
    run_dir = tmp_path / "working" / "models" / "kern"
    (run_dir / "fold_0").mkdir(parents=True)
    (run_dir / "fold_0" / "metrics.json").write_text(json.dumps({"epochs": 3, "val_rmse": 18.5}))
    for k, epoch, whole in ((1, 2, True), (2, 1, False)):
        backup = run_dir / f"fold_{k}" / "backup"
        backup.mkdir(parents=True)
        (backup / "latest.weights.h5").write_bytes(mod.HDF5_MAGIC + b"new" if whole else b"half-writ")
        (backup / "training_metadata.json").write_text(json.dumps({"epoch": epoch + 1 if not whole else epoch}))
        (backup / "latest.weights.h5.bkp").write_bytes(mod.HDF5_MAGIC + b"old")
        (backup / "training_metadata.json.bkp").write_text(json.dumps({"epoch": epoch}))
    (run_dir / "fold_1" / ".model.weights.h5.123.tmp").write_text("x")
    (run_dir / "fold_1" / "logs").mkdir()
    (tmp_path / "working" / "lresizervit" / "preset").mkdir(parents=True)
    folds_csv = tmp_path / "working" / "folds" / "train_folds.csv"
    folds_csv.parent.mkdir()
    folds_csv.write_text("Id,kfold\n")
    folds_csv.with_suffix(".images.json").write_text("{}")
    mod.tidy(tmp_path / "working", run_dir, folds_csv)
    assert output_files(tmp_path / "working") == [
        "folds/train_folds.csv", "models/kern/fold_0/metrics.json",
        "models/kern/fold_1/backup/latest.weights.h5", "models/kern/fold_1/backup/training_metadata.json",
        "models/kern/fold_2/backup/latest.weights.h5", "models/kern/fold_2/backup/training_metadata.json"]
    # A backup killed while its latest copy was written falls back to the previous one, whole.
    assert (run_dir / "fold_2/backup/latest.weights.h5").read_bytes() == mod.HDF5_MAGIC + b"old"
    assert json.loads((run_dir / "fold_2/backup/training_metadata.json").read_text()) == {"epoch": 1}

    the_job = job(folds=[0, 1, 2, 3])
    states = mod.fold_states(run_dir, the_job, {0: 0, 1: 75, 2: 1}, 75, False)
    assert states["0"] == {"status": "complete", "exit_code": 0, "epochs": 3, "note": None, "val_rmse": 18.5}
    assert states["1"] == {"status": "interrupted", "exit_code": 75, "epochs": 2, "note": "stopped for the time budget"}
    assert (states["2"]["status"], states["2"]["exit_code"], states["2"]["epochs"]) == ("failed", 1, 1)
    assert (states["3"]["status"], states["3"]["note"]) == ("interrupted", "not run")
    killed = mod.fold_states(run_dir, the_job, {0: 0}, -15, True)
    assert killed["1"]["status"] == "interrupted" and killed["1"]["note"] == "stopped at the hard limit"
    failed = mod.fold_states(run_dir, the_job, {}, 2, False)
    assert failed["1"] == {"status": "failed", "exit_code": 2, "epochs": 2,
                           "note": "not trained: train_folds.sh exited 2 first"}


# ------------------------------------------------------------------------------------------ missing inputs

@pytest.mark.parametrize("missing", ["code", "competition", "model"])
def test_a_missing_input_is_one_error_line_naming_what_to_attach(missing, sandbox, tmp_path):
    inp = tmp_path / "input"
    if missing != "competition":
        mount(inp, "new", "competition", sandbox["data"], SLUG)
    if missing != "code":
        mount(inp, "new", "dataset", sandbox["code"], "lresizervit-kern-code")
    inp.mkdir(exist_ok=True)
    working = tmp_path / "working"
    t0 = time.monotonic()
    proc = run_kernel(tmp_path, job(model_handle=HANDLE if missing == "model" else None), inp, working)
    assert time.monotonic() - t0 < 60  # nothing is installed or imported before the inputs are found
    assert proc.returncode == 2, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    expected = {"code": "attach the code dataset that `python -m lresizervit kaggle train` published for the "
                        "experiment kern",
                "competition": f"attach the competition {SLUG}",
                "model": f"the Kaggle Model {HANDLE} is not attached"}[missing]
    assert expected in errors[0]
    status = status_of(working)
    assert status["status"] == "error" and status["error"] == errors[0] and status["job"]["experiment"] == "kern"
    assert output_files(working) == [kernel.RUN_STATUS_FILE]


# ------------------------------------------------------------------------------------------------ training

def preset_code(sandbox: dict, tmp: Path, name: str, backbone: str, **changes) -> tuple[Path, Path, dict]:
    """A tiny keras-hub ViT preset (at tmp/preset) and a code dataset whose config names it as `backbone`, for
    64 px photos resized to the preset's 32: the preset, the code dataset and its manifest."""
    from tests.test_keras_hub_backbone import write_tiny_preset

    preset = Path(write_tiny_preset("vit", tmp / "preset", size=32))
    model = {**sandbox["tree"]["model"], "resizer": {**sandbox["tree"]["model"]["resizer"], "target_size": 32},
             "backbone": {**sandbox["tree"]["model"]["backbone"], "name": backbone}}
    return (preset, *make_code(sandbox, tmp / "code", name=name, data={"image_size": 64}, model=model, **changes))


def offline_env(tmp: Path) -> dict:
    """kagglehub's cache in tmp, and no network: a download attempt is refused at once."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    return {"KAGGLEHUB_CACHE": str(tmp / "kagglehub"), "HTTPS_PROXY": dead, "https_proxy": dead,
            "HTTP_PROXY": dead, "http_proxy": dead}


@pytest.mark.slow
def test_two_folds_train_at_once_as_on_two_gpus_with_a_kaggle_model_named_in_the_config(sandbox, tmp_path):
    """GPU T4 x2's job (two folds at once, train_folds.sh --parallel 2) under Kaggle's mount layout of today,
    in a Python without lresizervit, its backbone a keras-hub preset attached as a Kaggle Model (beside a decoy
    of another version) that the config names by its handle: the kernel installs the wheel, makes the
    attached folder what that name resolves to offline (kagglehub's cache), trains under the config as shipped
    and leaves no link in the output. The layout before, a preset the config names by the kernel's link, and
    lresizervit already importable: the TPU job's test; one fold at a time: the time-budget test's."""
    parallel, name = 2, f"keras_hub:kaggle://{HANDLE}"
    preset, code, manifest = preset_code(sandbox, tmp_path, "kernhub", name)
    inp = kaggle_input(tmp_path, sandbox, "new", code)
    mount(inp, "new", "model", preset, HANDLE)
    mount(inp, "new", "model", preset, HANDLE[:-1] + "1")  # another version of the same model: not this one
    before = snapshot(inp)
    working = tmp_path / "working"
    the_job = job(experiment="kernhub", parallel=parallel, model_handle=HANDLE)
    proc = run_kernel(tmp_path, the_job, inp, working, python=python_without_lresizervit(tmp_path),
                      env=offline_env(tmp_path))
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    comp, mounted = inp / "competitions" / SLUG, inp / "models" / HANDLE
    assert f"competition: {comp}" in proc.stdout and f"preset: {mounted}" in proc.stdout
    assert "installed lresizervit-0.1.0-py3-none-any.whl" in proc.stdout and "now loads it offline" in proc.stdout
    assert [p.resolve() for p in (tmp_path / "kagglehub").rglob("2") if p.is_symlink()] == [mounted.resolve()]
    assert f"runtime:\n  python {sys.version.split()[0]}" in proc.stdout and "accelerators: none (CPU)" in log
    assert "result: complete: fold 0 complete, fold 1 complete" in proc.stdout
    status = status_of(working)
    assert status["status"] == "complete" and status["train_folds_exit"] == 0 and status["error"] is None
    assert status["job"] == the_job and status["keras_backend"] == "tensorflow"
    for k in ("0", "1"):
        fold = status["folds"][k]
        assert (fold["status"], fold["exit_code"], fold["epochs"]) == ("complete", 0, 1), fold
        assert fold["val_rmse"] > 0
    assert status["runtime"]["python"].startswith(sys.version.split()[0]) and "tensorflow" in status["runtime"]
    assert status["code"] == manifest
    assert status["inputs"]["competition"] == str(comp) and status["inputs"]["preset"] == str(mounted)
    assert status["started"] <= status["ended"] and status["seconds"] > 0
    files = assert_small_output(working)
    assert "models/kernhub/cv.json" in files and "folds/train_folds.csv" in files
    assert "models/kernhub/fold_0/model.weights.h5" in files and not any("preset" in f for f in files)
    for k in (0, 1):  # trained at once, each fold's output in its own log
        fold_log = (working / "models" / "kernhub" / "logs" / f"fold_{k}.log").read_text()
        assert f"fold {k}: val RMSE" in fold_log and f"fold {1 - k}: val RMSE" not in fold_log
    assert not any("/backup/" in f for f in files)
    saved = yaml.safe_load((working / "models/kernhub/config.yaml").read_text())
    assert saved["data"]["dir"] == str(comp) and saved["train"]["tensorboard"] is False  # no TensorBoard logs
    assert saved["model"]["backbone"]["name"] == name  # the experiment's config, as shipped
    spec = json.loads((working / "models/kernhub/fold_0/model.json").read_text())
    assert spec["written_by"]["keras_hub"] == _hub()
    assert snapshot(inp) == before  # /kaggle/input is read-only on Kaggle
    predict_ok(working / "models" / "kernhub", sandbox["data"], tmp_path / "sub.csv")


def python_without_lresizervit(tmp: Path) -> Path:
    """A Python that has TensorFlow & co. but not lresizervit, as a Kaggle image: a venv reading this
    environment's site-packages through a .pth line (which does not run that folder's own .pth files, so
    no editable install of lresizervit)."""
    site_dir = Path(importlib.util.find_spec("tensorflow").origin).parents[1]
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    purelib = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "deps.pth").write_text(f"{site_dir}\n")
    found = subprocess.run([py, "-c", "import importlib.util as u; print(u.find_spec('lresizervit'))"],
                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""})
    assert found.stdout.strip() == "None", found.stdout
    return py


@pytest.mark.slow
def test_the_tpu_job_trains_on_jax_in_bfloat16_over_all_devices_from_a_linked_kaggle_model(sandbox, tmp_path):
    """The TPU recipe (Keras on JAX, mixed_bfloat16, DataParallel over every device; two CPU devices stand in
    for the 8 TPU cores) under the mount layout before (/kaggle/input/<slug>, /kaggle/input/<model>/...), with
    lresizervit already importable, its backbone a Kaggle Model's keras-hub preset (beside a decoy of another
    version) that the config names by the folder the kernel links it to. (The native backbone on JAX in
    mixed_bfloat16 over 2 devices: the kernel in Kaggle's TPU image, `make test-images`.)"""
    working = tmp_path / "working"
    name = f"keras_hub:{working}/lresizervit/preset"
    preset, code, _ = preset_code(sandbox, tmp_path, "kerntpu", name,
                               train={"backend": "jax", "precision": "mixed_bfloat16", "strategy": "auto",
                                      "batch_size": 4})
    inp = kaggle_input(tmp_path, sandbox, "old", code)
    mount(inp, "old", "model", preset, HANDLE)
    mount(inp, "old", "model", preset, HANDLE[:-1] + "1")  # another version of the same model: not this one
    before = snapshot(inp)
    proc = run_kernel(tmp_path, job(experiment="kerntpu", folds=[0], accelerator="tpu", model_handle=HANDLE), inp,
                      working, env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2", **offline_env(tmp_path)})
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    assert "warning: the job is for a TPU and none was detected" in proc.stdout
    assert "lresizervit is importable already" in proc.stdout
    # The mount layout before, found and left as it was; the link, not kagglehub's cache.
    comp, mounted = inp / SLUG, inp / HANDLE.split("/", 1)[1]
    assert f"competition: {comp}" in proc.stdout and status_of(working)["inputs"]["competition"] == str(comp)
    assert f"preset: {mounted}" in proc.stdout and status_of(working)["inputs"]["preset"] == str(mounted)
    assert "now loads it offline" not in proc.stdout and not (tmp_path / "kagglehub").exists()
    saved = yaml.safe_load((working / "models/kerntpu/config.yaml").read_text())
    assert saved["data"]["dir"] == str(comp) and saved["model"]["backbone"]["name"] == name
    assert snapshot(inp) == before
    assert "KERAS_BACKEND=jax" in proc.stdout
    metrics = json.loads((working / "models/kerntpu/fold_0/metrics.json").read_text())
    assert metrics["backend"] == "jax" and len(metrics["devices"]) == 2 and metrics["global_batch"] == 8
    assert saved["train"]["precision"] == "mixed_bfloat16"
    assert status_of(working)["keras_backend"] == "jax" and status_of(working)["status"] == "complete"
    files = assert_small_output(working)
    assert "models/kerntpu/fold_0/model.weights.h5" in files and not any("preset" in f for f in files)
    spec = json.loads((working / "models/kerntpu/fold_0/model.json").read_text())
    assert spec["written_by"]["keras_hub"] == _hub() and spec["written_by"]["backend"] == "jax"


@pytest.mark.images
@pytest.mark.slow
@pytest.mark.parametrize("image", [pytest.param(i, marks=pytest.mark.xdist_group(i)) for i in ("kaggle-gpu", "kaggle-tpu")])
def test_the_kernel_trains_in_kaggles_images(image, sandbox, tmp_path):
    """In Kaggle's images (`make images`): the GPU image's recipe family, a keras-hub Swin preset attached as
    a Kaggle Model, on its TensorFlow 2.20 / Keras 3.13 (its keras-hub 0.26 replaced by the shipped 0.29.1);
    the TPU image's recipe, Keras on its JAX 0.7.2 in bfloat16 over 2 devices. The kernel installs lresizervit
    from the code dataset, the images' TensorFlow, Keras and JAX stay, and the folds predict here."""
    from tests.test_kaggle_images import using

    with using(image):  # one test at a time in an image's virtualenv
        _train_in(image, sandbox, tmp_path)


def _train_in(image, sandbox, tmp_path):
    from tests.test_kaggle_images import PINNED, WHEELS, image_python, reset, versions
    from tests.test_keras_hub_backbone import write_tiny_preset

    python = image_python(image)
    before = reset(image, python)
    working = tmp_path / "working"
    env = {}
    if image == "kaggle-gpu":
        preset = Path(write_tiny_preset("swin", tmp_path / "preset"))
        model = {**sandbox["tree"]["model"], "resizer": {**sandbox["tree"]["model"]["resizer"], "target_size": 32},
                 "backbone": {**sandbox["tree"]["model"]["backbone"],
                              "name": f"keras_hub:kaggle://{HANDLE}"}}  # resolved through kagglehub's cache
        code, _ = make_code(sandbox, tmp_path / "code", (WHEELS,), name="kernimg", data={"image_size": 64},
                            model=model, train={"backend": "tensorflow"})
        the_job = job(experiment="kernimg", folds=[0, 1], model_handle=HANDLE)
        env["KAGGLEHUB_CACHE"] = str(tmp_path / "kagglehub")
    else:
        code, _ = make_code(sandbox, tmp_path / "code", (WHEELS,), name="kernimg",
                            train={"backend": "jax", "precision": "mixed_bfloat16", "batch_size": 4})
        the_job = job(experiment="kernimg", folds=[0, 1], accelerator="tpu")
        env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    inp = kaggle_input(tmp_path, sandbox, "new", code)
    if image == "kaggle-gpu":
        mount(inp, "new", "model", preset, HANDLE)
    proc = run_kernel(tmp_path, the_job, inp, working, python=python, env=env, timeout=1500)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    assert "installed lresizervit-0.1.0-py3-none-any.whl" in proc.stdout and f"keras {before['keras']}" in log
    status = status_of(working)
    assert status["status"] == "complete", status
    if image == "kaggle-gpu":
        assert f"installed keras_hub-{_hub()}-py3-none-any.whl" in proc.stdout
        assert (status["image"]["keras-hub"], status["runtime"]["keras-hub"]) == ("0.26.0", _hub())
    assert_small_output(working)
    spec = json.loads((working / "models/kernimg/fold_1/model.json").read_text())
    assert spec["written_by"]["keras"] == before["keras"]
    assert spec["written_by"]["backend"] == ("jax" if image == "kaggle-tpu" else "tensorflow")
    after = versions(python)
    assert {d: after[d] for d in PINNED} == {d: before[d] for d in PINNED}
    predict_ok(working / "models" / "kernimg", sandbox["data"], tmp_path / "sub.csv")
