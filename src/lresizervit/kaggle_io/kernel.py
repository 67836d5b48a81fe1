"""What a Kaggle training kernel receives: the private "code dataset" it attaches, and its one code file
(`kaggle/train_kernel.py` with the job written into it). `kaggle train` (kaggle_io/train.py) calls these;
the kernel's side of the contract is `kaggle/train_kernel.py`.

The code dataset (`write_code_dataset`), a flat folder:
    lresizervit-<version>-py3-none-any.whl   this code, installed offline with --no-deps
    keras_hub-<version>-py3-none-any.whl     for a keras_hub: backbone: the keras-hub installed here
    lresizervit_bootstrap.py                 kaggle_io/bootstrap.py: the runtime, the gaps, offline installs
    train_folds.sh                           the fold loop the kernel runs
    config.yaml                              the experiment's resolved config
    <folds file>.csv [+ .json]               the folds file, when the experiment has one here (folds are
                                             data: the kernels split the rows as this machine did)
    lresizervit-code.json                    the marker the kernel finds it by: {"experiment", "lresizervit",
                                             "keras_hub", "files", "created"}

The job (`render_train_script`), written as JSON on the script's `JOB = {}` line:
    experiment       the config's name
    folds            the folds this kernel trains
    accelerator      "gpu" | "tpu" | "cpu"
    parallel         folds at once (GPU T4 x2: 2, one per GPU; TPU: 1, the 8 cores train one fold)
    time_budget_s    seconds from the script's start by which it has ended
    competition      the competition's slug
    model_handle     owner/model/framework/variation/version of the attached keras-hub preset, or null
    code_marker      "lresizervit-code.json"
    checkpoint_marker  "lresizervit-checkpoint.json"

The kernel's /kaggle/working at the end:
    models/<exp>/           config.yaml; per fold model.weights.h5, model.json, history.csv, oof.csv,
                            metrics.json (complete; fold 0 also resizer_samples.npz, the report's resizer
                            figure), or backup/ with one checkpoint (interrupted); once every
                            fold of the folds file is complete here, cv.json, oof.csv and report/; with
                            --parallel, logs/fold_<k>.log
    folds/<folds file>.csv  and its .json sidecar
    lresizervit-run.json    per fold "complete" | "interrupted" | "failed", its exit code and epochs; the
                            runtime, the inputs, start / end / deadline times, the job
A checkpoint dataset (the lead's `--resume`) is that layout's models/<exp>/ plus `lresizervit-checkpoint.json`
({"experiment": ..., ...}) at its root.

Standard library only at import (the CLI parser imports kaggle_io); build_wheel and the config are imported
where they are used.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import time
from pathlib import Path

CODE_MARKER = "lresizervit-code.json"
CHECKPOINT_MARKER = "lresizervit-checkpoint.json"
RUN_STATUS_FILE = "lresizervit-run.json"
CODE_CONFIG = "config.yaml"
TRAIN_FOLDS = "train_folds.sh"
TEMPLATE = "train_kernel.py"  # in kaggle/, beside inference.py
KERNEL_WORKING = "/kaggle/working"
# Where the kernel links the attached Kaggle Model (any mount layout). A config naming the preset
# (keras_hub:<name>, keras_hub:kaggle://<handle>) needs no change: the kernel makes the attached folder
# kagglehub's cached copy of model_handle (`weights cache`), and trains under the experiment's own config; a
# config may also name keras_hub:KERNEL_PRESET_DIR (one path whatever the mount layout), at the price of a
# backbone name that differs from the local experiment's.
KERNEL_PRESET_DIR = f"{KERNEL_WORKING}/lresizervit/preset"
# The kernel's output layout, under /kaggle/working.
OUTPUT_MODELS = "models"
OUTPUT_FOLDS = "folds"
FOLD_STATUSES = ("complete", "interrupted", "failed")
JOB_LINE = "JOB = {}"
JOB_KEYS = ("experiment", "folds", "accelerator", "parallel", "time_budget_s", "competition", "model_handle",
            "code_marker", "checkpoint_marker")
# What the shipped config sets per accelerator (kernel_config). TPU v5e-8: Kaggle's TPU image has no TPU
# TensorFlow, so Keras on JAX, bfloat16 (the TPU's native type), DataParallel over the 8 cores (`auto`).
# GPU T4 x2: TensorFlow, float16 with loss scaling (a T4 has fp16 tensor cores, no bfloat16), one fold per GPU.
ACCELERATOR_SETTINGS = {
    "tpu": {"backend": "jax", "precision": "mixed_bfloat16", "strategy": "auto"},
    "gpu": {"backend": "tensorflow", "precision": "mixed_float16", "strategy": "auto"},
    "cpu": {},
}
PARALLEL = {"gpu": 2, "tpu": 1, "cpu": 1}


def template_path() -> Path:
    from lresizervit.kaggle_io.package import source_root

    return source_root() / "kaggle" / TEMPLATE


def _template_module():
    """kaggle/train_kernel.py as a module (it is standard library only and runs nothing on import): its
    check_job is the one the kernel applies, so a job rendered here is a job it accepts."""
    spec = importlib.util.spec_from_file_location("lresizervit_train_kernel", template_path())
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_job(job: dict) -> None:
    """A ValueError naming every bad key of `job` (the kernel's own checks)."""
    problems = _template_module().check_job(job)
    if problems:
        raise ValueError("; ".join(problems))


def render_train_script(job: dict) -> str:
    """The kernel's code file: the template with its `JOB = {}` line replaced by the job's JSON."""
    check_job(job)
    text = template_path().read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    at = [i for i, line in enumerate(lines) if line.rstrip("\n") == JOB_LINE]
    if len(at) != 1:
        raise ValueError(f"{template_path()}: expected one line `{JOB_LINE}`, found {len(at)}")
    lines[at[0]] = f"JOB = {json.dumps({k: job[k] for k in JOB_KEYS})}\n"
    return "".join(lines)


def read_job(script: str) -> dict:
    """The job of a rendered script (e.g. a kernel pulled back from Kaggle)."""
    for line in script.splitlines():
        if line.startswith("JOB = "):
            return json.loads(line[len("JOB = "):])
    raise ValueError("no `JOB = ...` line: not a training kernel of lresizervit")


def kernel_config(cfg, accelerator: str, preset_dir: bool = False):
    """`cfg` as a kernel on `accelerator` trains it: the backend, precision and strategy of that hardware
    (harmless keys: the folds still form one experiment with folds trained elsewhere); with `preset_dir`, the
    backbone at KERNEL_PRESET_DIR (not needed: a preset name resolves to the attached model)."""
    import copy

    if accelerator not in ACCELERATOR_SETTINGS:
        raise ValueError(f"accelerator {accelerator!r}: one of {', '.join(ACCELERATOR_SETTINGS)}")
    out = copy.deepcopy(cfg)
    for key, value in ACCELERATOR_SETTINGS[accelerator].items():
        setattr(out.train, key, value)
    if preset_dir:
        out.model.backbone.name = f"keras_hub:{KERNEL_PRESET_DIR}"
    return out


def _installed(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def write_code_dataset(cfg, folder: str | os.PathLike, folds_csv: str | os.PathLike | None = None,
                       wheel_dirs: tuple[str | os.PathLike, ...] = ()) -> dict:
    """Write the code dataset of `cfg` into `folder`, whole or not at all (a temp folder renamed into place;
    what was there is replaced); returns its manifest (also written as CODE_MARKER)."""
    import lresizervit
    from lresizervit.config import save_config
    from lresizervit.io_utils import atomic_write_folder, atomic_write_json
    from lresizervit.kaggle_io.package import BOOTSTRAP_MODULE, build_wheel, shipped_wheel, source_root

    keras_hub = cfg.model.backbone.name.startswith("keras_hub:")
    hub_version = _installed("keras-hub") if keras_hub else None
    if keras_hub and hub_version is None:
        raise ValueError(f"model.backbone.name {cfg.model.backbone.name!r} needs keras-hub, which is not installed "
                         f"here: the kernel installs the keras-hub this machine has (pip install keras-hub)")
    hub_wheel = shipped_wheel("keras-hub", hub_version, wheel_dirs) if keras_hub else None
    folds = Path(folds_csv) if folds_csv is not None else None
    if folds is not None and not folds.is_file():
        raise FileNotFoundError(f"{folds}: the folds file to ship does not exist")
    if folds is not None and folds.suffix != ".csv":
        raise ValueError(f"{folds}: a folds file is a .csv")
    manifest: dict = {}

    def fill(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        build_wheel(tmp)
        if hub_wheel is not None:
            shutil.copy2(hub_wheel, tmp / hub_wheel.name)
        shutil.copy2(Path(__file__).with_name("bootstrap.py"), tmp / BOOTSTRAP_MODULE)
        shutil.copy2(source_root() / TRAIN_FOLDS, tmp / TRAIN_FOLDS)
        save_config(cfg, tmp / CODE_CONFIG)
        if folds is not None:
            shutil.copy2(folds, tmp / folds.name)
            sidecar = folds.with_suffix(".json")  # K, seed, train.csv's hash: `folds --if-missing` checks it
            if sidecar.is_file():
                shutil.copy2(sidecar, tmp / sidecar.name)
        manifest.update(experiment=cfg.name, lresizervit=lresizervit.__version__, keras_hub=hub_version,
                        files=sorted([*(p.name for p in tmp.iterdir()), CODE_MARKER]),
                        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        atomic_write_json(tmp / CODE_MARKER, manifest)

    atomic_write_folder(folder, fill)
    return manifest
