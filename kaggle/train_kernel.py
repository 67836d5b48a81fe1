"""Training inside a Kaggle kernel: the attached inputs in, the experiment's trained folds in /kaggle/working out.

`python -m lresizervit kaggle train` renders this file with its job (the `JOB = ...` line below) and pushes it
as the kernel's only code file, with these attached:
  - the code dataset it published (marked by `lresizervit-code.json`): the lresizervit wheel, keras-hub's
    wheel for a keras_hub: backbone, `lresizervit_bootstrap.py`, `train_folds.sh`, the experiment's
    `config.yaml` and, when the experiment has one here, its folds file (and its `.json` sidecar);
  - the competition (a folder holding train.csv and test.csv);
  - the Kaggle Model of the job's `model_handle`, a keras-hub preset (a folder holding config.json): made
    kagglehub's cached copy of that handle (`weights cache`), so the config's preset name loads it offline,
    and linked at /kaggle/working/lresizervit/preset for a config that names that folder;
  - optionally a checkpoint dataset (marked by `lresizervit-checkpoint.json`): `models/<exp>/` with the
    folds an earlier session completed or stopped (their backup/), restored before training.
Inputs are found by those marker files under both mount layouts: /kaggle/input/{competitions,datasets/<owner>,
models/<owner>}/... and the older flat /kaggle/input/<slug>/... A missing one ends the run with one
`error:` line naming what to attach, exit status 2.

It installs the wheel offline (`pip install --no-index --no-deps`; skipped where lresizervit is importable
already) and closes the gaps between the image and the wheel's declared requirements with the shipped wheels,
never replacing the image's TensorFlow, Keras or JAX (the bootstrap); with the internet on, what is still
missing comes from the package index. Then it runs `train_folds.sh` on the job's folds with
LRESIZERVIT_DEADLINE set, so each fold stops at an epoch end rather than run past the time budget
(training/deadline.py), and writes `lresizervit-run.json`: per fold complete / interrupted / failed, the
runtime, the times, the job. It exits 0 once training has run, whatever the folds did, so that Kaggle keeps
/kaggle/working: the status file says what happened.

Standard library only until the wheel is installed. LRESIZERVIT_INPUT_ROOT and LRESIZERVIT_WORKING move the
two roots (/kaggle/input, /kaggle/working), which is how the tests run it.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

# JSON's literals as Python names: the job line is the job's JSON and a Python literal at once.
null, true, false = None, True, False
JOB = {}

JOB_FIELDS = {"experiment": str, "folds": list, "accelerator": str, "parallel": int, "time_budget_s": (int, float),
              "competition": str, "model_handle": (str, type(None)), "code_marker": str, "checkpoint_marker": str}
ACCELERATORS = ("gpu", "tpu", "cpu")
# What /kaggle/working holds at the end (kaggle_io/kernel.py names the same).
RUN_STATUS_FILE = "lresizervit-run.json"
MODELS_DIR, FOLDS_DIR = "models", "folds"
# /kaggle/working/lresizervit: the preset's link and this script's own files; removed at the end.
SCRATCH_DIR, PRESET_DIR = "lresizervit", "preset"
EXIT_TEMPFAIL = 75  # `train` / train_folds.sh: stopped for the time budget, resumable (training/deadline.py)
MAX_DEPTH = 7  # /kaggle/input/models/<owner>/<model>/<framework>/<variation>/<version> is 6 deep
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


class KernelError(Exception):
    """Ends the run with these `error:` lines and exit status 2."""


def check_job(job: dict) -> list[str]:
    """What is wrong with a job (kaggle_io/kernel.py checks the same before rendering)."""
    if not job:
        return ["the job is empty: this is the template; render it with lresizervit.kaggle_io.kernel."
                "render_train_script (python -m lresizervit kaggle train does)"]
    problems = [f"job key {k!r} is missing" for k in JOB_FIELDS if k not in job]
    problems += [f"job key {k!r} is not one of {', '.join(JOB_FIELDS)}" for k in job if k not in JOB_FIELDS]
    problems += [f"job key {k!r} is {job[k]!r}, of the wrong type" for k, t in JOB_FIELDS.items()
                 if k in job and (not isinstance(job[k], t) or isinstance(job[k], bool))]
    if problems:
        return problems
    folds = job["folds"]
    if not folds or any(not isinstance(k, int) or isinstance(k, bool) or k < 0 for k in folds) \
            or len(set(folds)) != len(folds):
        problems.append(f"job key 'folds' is {folds!r}: distinct fold numbers (>= 0), at least one")
    if job["accelerator"] not in ACCELERATORS:
        problems.append(f"job key 'accelerator' is {job['accelerator']!r}, not one of {', '.join(ACCELERATORS)}")
    if job["parallel"] < 1 or (job["accelerator"] == "tpu" and job["parallel"] != 1):
        problems.append(f"job key 'parallel' is {job['parallel']!r}: 1 or more (1 on a TPU, whose 8 cores "
                        f"train one fold together)")
    if job["time_budget_s"] <= 0:
        problems.append(f"job key 'time_budget_s' is {job['time_budget_s']!r}: seconds, more than 0")
    handle = job["model_handle"]
    if handle is not None and (handle.count("/") != 4 or not all(handle.split("/"))):
        problems.append(f"job key 'model_handle' is {handle!r}, not owner/model/framework/variation/version")
    return problems


def tail_s(budget_s: float) -> float:
    """What the time budget keeps back after training (cv, report, this file's own end): 3 %, 20 s to 5 min."""
    return min(300.0, max(20.0, 0.03 * budget_s))


def runtime_dict(lines: list[str]) -> dict:
    """bootstrap.runtime_lines() as {name: version (or the line's rest)}."""
    return {line.split(" ", 1)[0].rstrip(":"): line.split(" ", 1)[1] for line in lines}


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


# ------------------------------------------------------------------------------------------------ inputs

def scan(root: Path, job: dict) -> dict[str, list[Path]]:
    """Folders under root: "code" and "checkpoint" (their marker file), "data" (train.csv + test.csv),
    "preset" (config.json). A competition's photo folders and the marked datasets are not descended into."""
    found: dict[str, list[Path]] = {"code": [], "checkpoint": [], "data": [], "preset": []}
    base = len(root.parts)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        here, names = Path(dirpath), set(filenames)
        stop = True
        if job["code_marker"] in names:
            found["code"].append(here)
        elif job["checkpoint_marker"] in names:
            found["checkpoint"].append(here)
        elif {"train.csv", "test.csv"} <= names:
            found["data"].append(here)
        elif "config.json" in names:
            found["preset"].append(here)
        else:
            stop = len(here.parts) - base >= MAX_DEPTH
        dirnames[:] = [] if stop else sorted(d for d in dirnames if not d.startswith("."))
    return found


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise KernelError(f"{path}: unreadable ({exc}); publish that dataset again") from None
    if not isinstance(data, dict):
        raise KernelError(f"{path}: not a JSON object; publish that dataset again")
    return data


def pick_code(found: list[Path], root: Path, job: dict) -> Path:
    marker, exp = job["code_marker"], job["experiment"]
    if not found:
        raise KernelError(f"no code dataset ({marker}) under {root}: attach the code dataset that `python -m "
                          f"lresizervit kaggle train` published for the experiment {exp}")
    mine = [(read_json(d / marker).get("created", ""), d) for d in found if read_json(d / marker).get("experiment") == exp]
    if not mine:
        others = ", ".join(f"{d} ({read_json(d / marker).get('experiment')})" for d in found)
        raise KernelError(f"the code datasets under {root} are for other experiments ({others}), not {exp}: "
                          f"attach the one published for {exp}")
    return max(mine)[1]  # several versions attached: the newest


def pick_data(found: list[Path], root: Path, slug: str) -> Path:
    if len(found) == 1:
        return found[0]
    named = [d for d in found if d.name == slug]
    if len(named) == 1:
        return named[0]
    raise KernelError(f"no competition data (a folder holding train.csv and test.csv) under {root}: attach the "
                      f"competition {slug}" if not found else
                      f"cannot tell which folder holds the competition {slug}'s data: {', '.join(map(str, found))}")


def pick_preset(found: list[Path], root: Path, handle: str) -> Path:
    owner, model, framework, variation, version = handle.split("/")
    fits = [d for d in found if d.parts[-2:] == (variation, version)]
    # New layout: models/<owner>/<model>/<framework>/<variation>/<version>; old: <model>/<framework>/...
    fits.sort(key=lambda d: (d.parts[-4:-2] != (model, framework), owner not in d.parts, str(d)))
    if not fits:
        raise KernelError(f"the Kaggle Model {handle} is not attached (no folder holding config.json ending in "
                          f"{variation}/{version} under {root}): add it to the kernel's model sources")
    return fits[0]


# ---------------------------------------------------------------------------------------------- install

def load_bootstrap(code: Path):
    path = code / "lresizervit_bootstrap.py"
    if not path.is_file():
        raise KernelError(f"{path} is missing: the code dataset is incomplete; publish it again")
    spec = importlib.util.spec_from_file_location("lresizervit_bootstrap", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def install(boot, code: Path, keras_hub: bool) -> list[str]:
    """lresizervit from the code dataset's wheel (unless importable), then the shipped wheels that close the
    image's gaps; with the internet on, what is still missing from the package index (`env --install`)."""
    lines = []
    if importlib.util.find_spec("lresizervit") is None:
        wheels = sorted(code.glob("lresizervit-*.whl"))
        if not wheels:
            raise KernelError(f"{code}: no lresizervit-*.whl in the code dataset; publish it again")
        wheel = boot.Wheel.parse(wheels[-1])
        boot.install([wheel])
        reqs = boot.wheel_requirements(wheel.path)
        lines.append(f"installed {wheel.path.name}")
    else:
        reqs = boot.installed_requirements()
        lines.append("lresizervit is importable already; its wheel is not installed")
    reqs = boot.needed(reqs, keras_hub=keras_hub, training=True)
    shipped = [w for w in boot.find_wheels(code) if w.name != "lresizervit"]
    try:
        got = boot.close_gaps(reqs, shipped, f"in the code dataset {code}")
    except SystemExit as exc:
        errors = str(exc.code).splitlines()
        from lresizervit.net import unreachable

        why = unreachable(os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple")
        if why:
            raise KernelError(*errors, f"and the package index is out of reach ({why})") from None
        cmd = [sys.executable, "-m", "lresizervit", "env", str(code / "config.yaml"), "--install"]
        print(" ".join(cmd), flush=True)
        if subprocess.run(cmd).returncode != 0 or boot.gaps(reqs, []):
            raise KernelError(*errors) from None
        got = ["what was missing, from the package index"]
    lines.append(f"installed {', '.join(got)}" if got else "the image meets lresizervit's requirements")
    importlib.invalidate_caches()
    return lines


# ---------------------------------------------------------------------------------------- working folder

def link(src: Path, dest: Path) -> None:
    """dest -> src as a symlink, or a copy where symlinks fail."""
    if dest.is_symlink() or dest.is_file():
        dest.unlink()
    elif dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.symlink(src, dest, target_is_directory=True)
    except OSError:
        shutil.copytree(src, dest)


def unzip_folders(folder: Path) -> None:
    """A dataset uploaded with `--dir-mode zip` may hold its folders as <name>.zip: make them folders again."""
    for path in sorted(folder.rglob("*.zip")):
        target = path.with_suffix("")
        if not target.exists():
            with zipfile.ZipFile(path) as zf:
                zf.extractall(target)
        path.unlink()


def fold_rank(fold: Path) -> tuple[int, int]:
    """How far a fold folder got: (complete, backup epoch); a checkpoint's best copy of a fold is restored."""
    try:
        epoch = int(json.loads((fold / "backup" / "training_metadata.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        epoch = 0
    return int((fold / "metrics.json").is_file()), epoch


def restore(checkpoints: list[Path], job: dict, scratch: Path, run_dir: Path) -> list[str]:
    """The job's folds from the checkpoint datasets into run_dir (the furthest copy of each), with the
    experiment's config.yaml; the trainer then skips complete folds and resumes the others."""
    exp, lines, best = job["experiment"], [], {}
    for i, ckpt in enumerate(checkpoints):
        named = read_json(ckpt / job["checkpoint_marker"]).get("experiment")
        if named not in (None, exp):
            raise KernelError(f"{ckpt}: a checkpoint of the experiment {named}, not {exp}: attach {exp}'s")
        stage = scratch / f"checkpoint_{i}"
        shutil.copytree(ckpt, stage, ignore=shutil.ignore_patterns(job["checkpoint_marker"]))
        unzip_folders(stage)
        for fold in (stage / MODELS_DIR / exp).glob("fold_*"):
            k = int(fold.name.split("_")[1]) if fold.name.split("_")[1].isdigit() else -1
            if k in job["folds"] and (k not in best or fold_rank(fold) > fold_rank(best[k])):
                best[k] = fold
        if (stage / MODELS_DIR / exp / "config.yaml").is_file() and not (run_dir / "config.yaml").is_file():
            run_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy2(stage / MODELS_DIR / exp / "config.yaml", run_dir / "config.yaml")
    for k, fold in sorted(best.items()):
        dest = run_dir / fold.name
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(fold, dest)  # the same file system: a rename, not a second copy
        done, epoch = fold_rank(dest)
        lines.append(f"fold {k}: " + ("complete; skipped" if done else f"resumes after epoch {epoch}"))
    for stage in scratch.glob("checkpoint_*"):
        shutil.rmtree(stage)
    return lines


def tidy(working: Path, run_dir: Path, folds_csv: Path) -> None:
    """Leave only what the output needs: one checkpoint per backup (Keras keeps the previous one as *.bkp;
    the latest is kept when whole), no temp files, no TensorBoard logs, no decode cache, no scratch."""
    for backup in run_dir.glob("fold_*/backup"):
        latest, meta = backup / "latest.weights.h5", backup / "training_metadata.json"
        try:
            whole = latest.read_bytes()[:8] == HDF5_MAGIC and "epoch" in json.loads(meta.read_text())
        except (OSError, ValueError):
            whole = False
        for name in ("latest.weights.h5", "training_metadata.json"):
            old = backup / f"{name}.bkp"
            if old.exists() and whole:
                old.unlink()
            elif old.exists():  # killed while the latest was written: the previous epoch is the checkpoint
                os.replace(old, backup / name)
    for path in run_dir.glob("fold_*/.*.tmp*"):
        path.unlink()
    for path in run_dir.glob("fold_*/logs"):
        shutil.rmtree(path)
    folds_csv.with_suffix(".images.json").unlink(missing_ok=True)
    scratch = working / SCRATCH_DIR
    if scratch.is_symlink():
        scratch.unlink()
    elif scratch.exists():
        shutil.rmtree(scratch)


# ------------------------------------------------------------------------------------------------ status

def fold_states(run_dir: Path, job: dict, codes: dict[int, int], train_exit: int | None, killed: bool) -> dict:
    states = {}
    for k in job["folds"]:
        fold, code = run_dir / f"fold_{k}", codes.get(k)
        done, epoch = fold_rank(fold)
        entry = {"status": "failed", "exit_code": code, "epochs": epoch, "note": None}
        if done:
            metrics = json.loads((fold / "metrics.json").read_text())
            entry.update(status="complete", epochs=metrics.get("epochs"), val_rmse=metrics.get("val_rmse"))
        elif code == EXIT_TEMPFAIL or (killed and code in (None, 143, 137, -15, -9)):
            entry["status"] = "interrupted"
            entry["note"] = "stopped at the hard limit" if killed and code != EXIT_TEMPFAIL else "stopped for the time budget"
        elif code is None and train_exit in (0, EXIT_TEMPFAIL):
            entry.update(status="interrupted", note="not run")
        elif code is None:
            entry.update(exit_code=train_exit, note=f"not trained: train_folds.sh exited {train_exit} first")
        states[str(k)] = entry
    return states


def write_status(working: Path, status: dict) -> None:
    working.mkdir(parents=True, exist_ok=True)
    tmp = working / f".{RUN_STATUS_FILE}.tmp"
    tmp.write_text(json.dumps(status, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, working / RUN_STATUS_FILE)


def run_training(cmd: list[str], env: dict, cwd: Path, hard_stop: float) -> tuple[int, bool]:
    """train_folds.sh in a session of its own; past `hard_stop` (a fold whose epoch outran its estimate)
    its whole process group gets SIGTERM, then SIGKILL: the folds keep their last completed epoch."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, start_new_session=True)
    try:
        return proc.wait(timeout=max(1.0, hard_stop - time.time())), False
    except subprocess.TimeoutExpired:
        print("time budget: stopping train_folds.sh at the hard limit", flush=True)
        for sig, grace in ((signal.SIGTERM, 60), (signal.SIGKILL, 30)):
            try:
                os.killpg(proc.pid, sig)
                return proc.wait(timeout=grace), True
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue
        return proc.wait(), True


def main() -> int:
    started = time.time()
    root = Path(os.environ.get("LRESIZERVIT_INPUT_ROOT", "/kaggle/input"))
    working = Path(os.environ.get("LRESIZERVIT_WORKING", "/kaggle/working"))
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no PyPI check from albumentations
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # lresizervit-run.json; "runtime" is what trained (the image's versions, "image", plus what was installed).
    status = {"job": JOB, "status": "error", "error": None, "folds": {}, "train_folds_exit": None,
              "runtime": {}, "image": {}, "code": {}, "inputs": {}, "keras_backend": None,
              "started": iso(started), "ended": None, "deadline": None, "seconds": None}
    try:
        return train(JOB, root, working, started, status)
    except KernelError as exc:
        lines = [line if line.startswith("error: ") else f"error: {line}" for line in exc.args]
        print("\n".join(lines), file=sys.stderr, flush=True)
        status["error"] = "\n".join(lines)
        return 2
    except Exception as exc:  # a bug: its traceback follows in the log; the status file names it
        status["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        scratch = working / SCRATCH_DIR  # also after an error: no link to the input, no staged checkpoint
        if scratch.is_symlink():
            scratch.unlink()
        elif scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
        status.update(ended=iso(time.time()), seconds=round(time.time() - started, 1))
        write_status(working, status)


def train(job: dict, root: Path, working: Path, started: float, status: dict) -> int:
    problems = check_job(job)
    if problems:
        raise KernelError(*problems)
    print(f"job: {json.dumps(job)}", flush=True)
    if not root.is_dir():
        raise KernelError(f"input root {root} does not exist")
    found = scan(root, job)
    code = pick_code(found["code"], root, job)
    boot = load_bootstrap(code)
    runtime = boot.runtime_lines()
    print("runtime:\n  " + "\n  ".join(runtime), flush=True)
    status["image"] = status["runtime"] = runtime_dict(runtime)
    status["code"] = read_json(code / job["code_marker"])
    data = pick_data(found["data"], root, job["competition"])
    preset = pick_preset(found["preset"], root, job["model_handle"]) if job["model_handle"] else None
    status["inputs"] = {"code": str(code), "competition": str(data), "preset": preset and str(preset),
                        "checkpoints": [str(c) for c in found["checkpoint"]]}
    print("inputs:\n  " + "\n  ".join(f"{k}: {v}" for k, v in status["inputs"].items()), flush=True)
    gpus = [a for a in boot.accelerators() if a.startswith("GPU")]
    if job["accelerator"] == "gpu" and not gpus:
        raise KernelError("the job is for a GPU, and this session has none (nvidia-smi lists no GPU): push the "
                          "kernel with a GPU accelerator")
    if job["accelerator"] == "tpu" and not any(a.startswith("TPU") for a in boot.accelerators()):
        print("warning: the job is for a TPU and none was detected (no /dev/accel*, no TPU_ACCELERATOR_TYPE); "
              "JAX decides which devices it trains on", flush=True)

    print("\n".join(install(boot, code, boot.uses_keras_hub(code) or preset is not None)), flush=True)
    status["runtime"] = runtime_dict(boot.runtime_lines())  # what trains: the image and what was installed
    from lresizervit.config import load_config

    cfg = load_config(code / "config.yaml")
    if cfg.name != job["experiment"]:
        raise KernelError(f"{code / 'config.yaml'} is the config of the experiment {cfg.name}, the job's is "
                          f"{job['experiment']}: publish the code dataset again")
    scratch, run_dir = working / SCRATCH_DIR, working / MODELS_DIR / cfg.name
    scratch.mkdir(parents=True, exist_ok=True)
    sets = [f"data.dir={data}", f"output_dir={working / MODELS_DIR}", "train.tensorboard=false"]
    if preset is not None:
        # A config naming the preset (keras_hub:<name> or keras_hub:kaggle://<handle>) keeps its name, which
        # then resolves offline to the attached folder through kagglehub's cache: the kernel trains under the
        # experiment's very config, so its folds join folds trained elsewhere. A config naming the link
        # instead gets one path whatever the mount layout.
        link(preset, scratch / PRESET_DIR)
        if cfg.model.backbone.name != f"keras_hub:{scratch / PRESET_DIR}":
            cache = [sys.executable, "-m", "lresizervit", "weights", "cache", job["model_handle"], str(preset)]
            proc = subprocess.run(cache, capture_output=True, text=True)
            if proc.returncode != 0:
                raise KernelError(*(proc.stderr.strip().splitlines()[-1:] or [f"`{' '.join(cache)}` failed"]))
            print(proc.stdout.strip(), flush=True)
    elif cfg.model.backbone.name.rstrip("/").endswith(f"/{SCRATCH_DIR}/{PRESET_DIR}"):
        raise KernelError(f"{code / 'config.yaml'}'s backbone is {cfg.model.backbone.name}, the Kaggle Model a "
                          f"kernel links there, and the job names no model_handle: push it with the model attached")
    folds_csv = working / FOLDS_DIR / Path(cfg.data.folds_csv).name
    sets.append(f"data.folds_csv={folds_csv}")
    shipped = code / folds_csv.name
    if shipped.is_file():  # folds are data: the kernel trains on the folds the experiment has here
        folds_csv.parent.mkdir(parents=True, exist_ok=True)
        for src in (shipped, shipped.with_suffix(".json")):
            if src.is_file():
                shutil.copy2(src, folds_csv.with_suffix(src.suffix))
    for line in restore(found["checkpoint"], job, scratch, run_dir):
        print(f"checkpoint: {line}", flush=True)

    backend = cfg.train.backend if cfg.train.backend != "auto" else ("jax" if job["accelerator"] == "tpu"
                                                                      else "tensorflow")
    budget = float(job["time_budget_s"])
    deadline = started + budget - tail_s(budget)
    status["deadline"], status["keras_backend"] = iso(deadline), backend
    codes_file = scratch / "fold-status.txt"
    env = {**os.environ, "PYTHON": sys.executable, "KERAS_BACKEND": backend, "PYTHONUNBUFFERED": "1",
           "LRESIZERVIT_DEADLINE": f"{deadline:.0f}", "LRESIZERVIT_FOLD_STATUS": str(codes_file)}
    cmd = ["bash", str(code / "train_folds.sh"), str(code / "config.yaml"), *map(str, job["folds"])]
    # GPU T4 x2: two folds at once, one per GPU (train_folds.sh --parallel 2), rather than one fold mirrored
    # over both. Estimates, not measured (no T4 here): a Swin-B step is ~100 GFLOP per 512 px image (measured
    # here on the CPU, docs/BENCHMARKS_pretrained.md), ~30-45 img/s on a T4 in float16, so 0.35-0.55 s per
    # batch of 16. Mirrored, every step all-reduces 88M float32 gradients (352 MB) over PCIe without NVLink
    # or, on cloud VMs, often without peer-to-peer (4-10 GB/s): 35-90 ms a step, after the backward pass. At
    # the recipe's global batch of 16 (8 per GPU, so no batch or learning-rate change) that is 13-50 % of
    # a 0.18-0.28 s step: 1.35-1.8x one GPU; two independent folds are 2x, need no collective, keep each fold
    # the exact single-GPU recipe (batch, learning rate, steps per epoch, BatchNorm statistics) and fail or
    # stop on their own. The cost is the last odd fold, alone on one GPU: 5 folds take 3 fold-times in
    # pairs against 5 / (1.35-1.8) = 2.8-3.7 mirrored, about even; 4 or 10 folds, pairs win (2 vs 2.2-3,
    # 5 vs 5.6-7.4). `kaggle train --kernels` can give a kernel an even number of folds.
    cmd += ["--parallel", str(job["parallel"])] if job["parallel"] > 1 else []
    cmd += [arg for s in sets for arg in ("--set", s)]
    print(f"KERAS_BACKEND={backend} LRESIZERVIT_DEADLINE={deadline:.0f} ({iso(deadline)}) {' '.join(cmd)}", flush=True)
    exit_code, killed = run_training(cmd, env, working, started + budget - min(60.0, tail_s(budget) / 2))
    codes = {}
    if codes_file.is_file():
        for line in codes_file.read_text().splitlines():
            fold, code_ = line.split()
            codes[int(fold)] = int(code_)  # the last attempt of a fold counts
    status["train_folds_exit"] = exit_code
    status["folds"] = fold_states(run_dir, job, codes, exit_code, killed)
    states = [f["status"] for f in status["folds"].values()]
    status["status"] = next((s for s in ("failed", "interrupted") if s in states), "complete")
    tidy(working, run_dir, folds_csv)
    summary = ", ".join(f"fold {k} {f['status']}" + (f" (exit {f['exit_code']})" if f["status"] == "failed" else "")
                        for k, f in status["folds"].items())
    print(f"result: {status['status']}: {summary}; {working / RUN_STATUS_FILE}", flush=True)
    # 0 whatever the folds did: a run that fails may not have its /kaggle/working saved as the version's
    # output, and the complete folds and backups in it are hours of accelerator time; the status says the rest.
    return 0


if __name__ == "__main__":
    sys.exit(main())
