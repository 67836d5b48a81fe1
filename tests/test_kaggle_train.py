"""`kaggle train` from this machine, against a fake of the Kaggle service (tests/kaggle_fake.py) driven by
the real kaggle client, with the pushed kernels run here as Kaggle would run them: each pushed script in a
/kaggle-shaped sandbox that holds what the fake received (the competition, the code dataset, the checkpoint
dataset), its /kaggle/working served back as the kernel's output. Covers: what is published and pushed
(exact metadata), folds split over kernels, a fold stopped by the time budget (what the kernel says, its
status file and its output), --collect merging, --resume from a checkpoint dataset, the CV once every fold
is home; and the one-line errors."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lresizervit.inference.submission import validate_file
from tests.conftest import ROOT
from tests.facts import TASK
from tests.kaggle_fake import competition_service, subprocess_env
from tests.test_train_kernel import assert_small_output, script_module

COMPETITION = "petfinder-pawpularity-score"
CODE = "alice/lresizervit-ktrain-code"
CKPT = "alice/lresizervit-ktrain-ckpt"
KERNELS = ("alice/lresizervit-ktrain-train-1", "alice/lresizervit-ktrain-train-2")
# Session 1's fold 0 "takes" 1000 s more an epoch (training/deadline.py's test knob) against a 44-minute
# budget: it stops after epoch 2 of 4 whatever this machine's speed, if the kernel's setup takes < ~9 min.
SIMULATE = {"LRESIZERVIT_SIMULATE_EPOCH_S": "1000", "LRESIZERVIT_DEADLINE_MARGIN": "1",
            "LRESIZERVIT_DEADLINE_RESERVE_S": "0", "LRESIZERVIT_DEADLINE_MIN_START_S": "0"}


@pytest.fixture
def fake():
    with competition_service(COMPETITION, max_requests=400, seconds=1500) as fake:
        yield fake


@pytest.fixture
def experiment(tiny_experiment, tmp_path) -> Path:
    """The tiny experiment's config and data under a new name, 4 epochs, nothing trained yet; its folds file
    (written here) is what the kernels must split the rows by."""
    tree = yaml.safe_load((tiny_experiment / "tiny.yaml").read_text())
    tree.update(name="ktrain", output_dir=str(tmp_path / "models"))
    tree["data"].update(folds_csv=str(tmp_path / "folds" / "ktrain_folds.csv"))
    tree["train"].update(epochs=4)
    (tmp_path / "folds").mkdir()
    shutil.copy2(tiny_experiment / "folds.csv", tmp_path / "folds" / "ktrain_folds.csv")
    config = tmp_path / "ktrain.yaml"
    config.write_text(yaml.safe_dump(tree))
    return config


def lresizervit(fake, tmp_path, *args, timeout=900) -> subprocess.CompletedProcess:
    env = subprocess_env(fake, tmp_path / "client", NO_ALBUMENTATIONS_UPDATE="1", TF_CPP_MIN_LOG_LEVEL="2",
                         PIP_INDEX_URL="http://127.0.0.1:9/simple", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, "-m", "lresizervit", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=timeout)


def run_on_kaggle(fake, tmp_path, ref: str, data: Path, env: dict | None = None) -> tuple[dict, str, Path]:
    """What Kaggle does with the kernel's latest push: its script run with its attached datasets and the
    competition mounted under /kaggle/input; its /kaggle/working becomes the kernel's output. Returns the
    run's status file, its stdout and its working folder."""
    push = fake.kernels[ref].pushes[-1]
    box = tmp_path / "kaggle" / f"{ref.split('/')[1]}_v{len(fake.kernels[ref].pushes)}"
    inp, working = box / "input", box / "working"
    shutil.copytree(data, inp / "competitions" / COMPETITION)
    for dataset in push.get("datasetDataSources", []):
        folder = inp / "datasets" / dataset
        folder.mkdir(parents=True)
        for name, blob in fake.datasets[dataset].versions[-1].files.items():
            (folder / name).write_bytes(blob)
    (box / "script.py").write_text(push["text"])
    working.mkdir(parents=True)
    # The machine shape asked for, as the kernel sees it: two T4s listed (the training itself stays on the CPU).
    (box / "bin").mkdir()
    (box / "bin" / "nvidia-smi").write_text("#!/bin/sh\necho 'GPU 0: Tesla T4 (UUID: GPU-0)'\n"
                                            "echo 'GPU 1: Tesla T4 (UUID: GPU-1)'\n")
    (box / "bin" / "nvidia-smi").chmod(0o755)
    full = {k: v for k, v in os.environ.items() if not k.startswith(("KERAS_BACKEND", "LRESIZERVIT_", "KAGGLE"))}
    full.update(LRESIZERVIT_INPUT_ROOT=str(inp), LRESIZERVIT_WORKING=str(working), CUDA_VISIBLE_DEVICES="",
                PYTHONPATH=str(ROOT / "src"), PATH=f"{box / 'bin'}:{os.environ['PATH']}", **(env or {}))
    proc = subprocess.run([sys.executable, str(box / "script.py")], cwd=working, env=full, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = {p.relative_to(working).as_posix(): p.read_bytes() for p in working.rglob("*") if p.is_file()}
    fake.set_output(ref, files, log=proc.stdout)
    return json.loads(files["lresizervit-run.json"]), proc.stdout, working


def job_of(push: dict) -> dict:
    return json.loads(re.search(r"^JOB = (.*)$", push["text"], re.MULTILINE).group(1))


@pytest.mark.slow
def test_two_kernels_a_time_budget_collect_and_resume_make_one_experiment(fake, experiment, tiny_experiment,
                                                                          tmp_path):
    data = tiny_experiment / "data"
    # 1. Push: the code dataset, then one kernel per half of the folds, stopping 40 minutes in.
    proc = lresizervit(fake, tmp_path, "kaggle", "train", experiment, "--kernels", "2", "--time-budget", "0.735",
                       "--poll-seconds", "0")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "GPU T4 x2 quota: 28.0 h left of 30 h this week" in proc.stdout
    code = fake.datasets[CODE].versions[-1].files
    assert {"lresizervit-0.1.0-py3-none-any.whl", "lresizervit_bootstrap.py", "train_folds.sh", "config.yaml",
            "ktrain_folds.csv", "lresizervit-code.json"} <= set(code)
    assert not [n for n in code if n.startswith("keras_hub")]  # a native backbone: no keras-hub in the kernel
    from lresizervit.config import config_from_dict, load_config

    shipped = config_from_dict(yaml.safe_load(code["config.yaml"]), "config.yaml")
    # The experiment's own model and data; the T4's precision.
    assert shipped.model == load_config(experiment).model and shipped.train.precision == "mixed_float16"
    pushes = fake.bodies("SaveKernel")
    assert [p["slug"] for p in pushes] == list(KERNELS)
    for push, folds in zip(pushes, ([0], [1]), strict=True):
        assert push["machineShape"] == "NvidiaTeslaT4" and push["enableGpu"] is True and push["enableTpu"] is False
        assert push["enableInternet"] is True and "dockerImage" not in push and "modelDataSources" not in push
        assert push["datasetDataSources"] == [CODE] and push["competitionDataSources"] == [COMPETITION]
        job = job_of(push)
        assert job["folds"] == folds and job["time_budget_s"] == 2646 and job["accelerator"] == "gpu"
    methods = fake.methods()
    assert methods.index("kernels.KernelsApiService/GetAcceleratorQuotaStatistics") < methods.index(
        "kernels.KernelsApiService/SaveKernel")
    pushed = json.loads((tmp_path / "models" / "ktrain" / "kaggle" / "pushed.json").read_text())
    assert [k["ref"] for k in pushed["kernels"]] == list(KERNELS)

    # 2. Kaggle runs them: fold 0 is stopped by the time budget after epoch 2 of 4, its backup kept (one
    # checkpoint), the kernel exits 0 and says so; fold 1 completes. With the deadline ~2567 s after the start,
    # epoch 1 ends at ~1000 s with ~1000 s needed for the next (continue), epoch 2 at ~2000 s (stop).
    assert 2550 < 2646 - script_module().tail_s(2646) < 2600
    status, out, working = run_on_kaggle(fake, tmp_path, KERNELS[0], data, SIMULATE)
    assert "fold 0: stopped after epoch 2 of 4 to end before the time budget" in out, out[-4000:]
    assert "its backup resumes it" in out and "result: interrupted: fold 0 interrupted" in out
    assert status["status"] == "interrupted" and status["train_folds_exit"] == 75
    assert status["folds"]["0"] == {"status": "interrupted", "exit_code": 75, "epochs": 2,
                                    "note": "stopped for the time budget"}
    files = assert_small_output(working, "ktrain", "ktrain_folds")
    fold = working / "models/ktrain/fold_0"
    assert sorted(p.name for p in (fold / "backup").iterdir()) == ["latest.weights.h5", "training_metadata.json"]
    assert not (fold / "metrics.json").exists() and not (fold / "oof.csv").exists()
    assert "models/ktrain/cv.json" not in files
    status, _, working = run_on_kaggle(fake, tmp_path, KERNELS[1], data)
    assert status["status"] == "complete" and status["folds"]["1"]["status"] == "complete"
    assert status["folds"]["1"]["epochs"] == 4
    assert_small_output(working, "ktrain", "ktrain_folds")

    # 3. --collect: fold 1 joins the experiment; fold 0 waits for --resume; no CV yet.
    proc = lresizervit(fake, tmp_path, "kaggle", "train", experiment, "--collect", "--poll-seconds", "0")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = tmp_path / "models" / "ktrain"
    assert (run / "fold_1" / "metrics.json").is_file() and not (run / "fold_0").exists()
    assert "folds [0] stopped before the time budget" in proc.stdout and not (run / "cv.json").exists()
    assert re.search(rf"{KERNELS[0]} v1: running, \d+ min", proc.stdout)

    # 4. --resume: the interrupted fold's backup published as the checkpoint dataset and attached.
    proc = lresizervit(fake, tmp_path, "kaggle", "train", experiment, "--resume", "--poll-seconds", "0")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ckpt = fake.datasets[CKPT].versions[-1].files
    assert "lresizervit-checkpoint.json" in ckpt and json.loads(ckpt["lresizervit-checkpoint.json"])["folds"] == [0]
    push = fake.kernels[KERNELS[0].removesuffix("-1")].pushes[-1]
    assert push["datasetDataSources"] == [CODE, CKPT] and job_of(push)["folds"] == [0]

    # 5. The next session resumes fold 0 at epoch 3; --wait-like collect brings it home and the CV is written.
    status, out, working = run_on_kaggle(fake, tmp_path, KERNELS[0].removesuffix("-1"), data)
    assert "checkpoint: fold 0: resumes after epoch 2" in out and "resuming after epoch 2" in out, out[-4000:]
    assert status["status"] == "complete", status
    assert_small_output(working, "ktrain", "ktrain_folds")
    proc = lresizervit(fake, tmp_path, "kaggle", "train", experiment, "--collect", "--poll-seconds", "0")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    history = (run / "fold_0" / "history.csv").read_text().splitlines()
    assert [int(line.split(",")[0]) for line in history[1:]] == [1, 2, 3, 4]  # nothing lost, nothing redone
    metrics = json.loads((run / "fold_0" / "metrics.json").read_text())
    assert metrics["resumed_after_epoch"] == 2 and metrics["epochs"] == 4
    cv = json.loads((run / "cv.json").read_text())
    assert cv["n_folds"] == 2 and "CV RMSE (concatenated OOF" in proc.stdout
    # The experiment predicts here like one trained here.
    proc = lresizervit(fake, tmp_path, "predict", experiment, "--out", tmp_path / "sub.csv")
    assert proc.returncode == 0 and (tmp_path / "sub.csv").is_file(), proc.stderr[-3000:]
    assert validate_file(tmp_path / "sub.csv", data / "test.csv", TASK) == 5


@pytest.mark.slow
def test_dry_run_needs_no_network_and_writes_what_it_would_push(experiment, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE")}
    env.update(NO_ALBUMENTATIONS_UPDATE="1", HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9",
               KAGGLE_CONFIG_DIR=str(tmp_path / "nothing"), PIP_INDEX_URL="http://127.0.0.1:9/simple")
    proc = subprocess.run([sys.executable, "-m", "lresizervit", "kaggle", "train", str(experiment), "--accelerator",
                           "tpu", "--dry-run"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    root = tmp_path / "models" / "ktrain" / "kaggle"
    meta = json.loads((root / "kernel_1" / "kernel-metadata.json").read_text())
    assert meta["machine_shape"] == "TpuV5E8" and meta["enable_tpu"] is True and meta["enable_gpu"] is False
    assert meta["enable_internet"] is True and "docker_image" not in meta
    assert meta["dataset_sources"] == ["your-kaggle-name/lresizervit-ktrain-code"]
    assert job_of({"text": (root / "kernel_1" / "train_kernel.py").read_text()})["folds"] == [0, 1]
    assert yaml.safe_load((root / "code" / "config.yaml").read_text())["train"]["backend"] == "jax"
    assert "would push kernel your-kaggle-name/lresizervit-ktrain-train: folds 0 1 on TPU v5e-8" in proc.stdout
    assert "train.precision=mixed_bfloat16" in proc.stdout
    assert not (tmp_path / "models" / "ktrain" / "config.yaml").exists()  # nothing trained, nothing claimed


def _one_error(proc) -> str:
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stdout[-2000:] + proc.stderr[-3000:]
    return errors[0]


@pytest.mark.slow
def test_what_cannot_work_on_kaggle_is_one_error_line(fake, experiment, tmp_path):
    # A local preset folder: refused before anything is sent.
    local = tmp_path / "local.yaml"
    tree = yaml.safe_load(experiment.read_text())
    tree["model"]["backbone"]["name"] = f"keras_hub:{tmp_path / 'weights'}"
    local.write_text(yaml.safe_dump(tree))
    line = _one_error(lresizervit(fake, tmp_path, "kaggle", "train", local))
    assert "is a local preset folder, which a Kaggle kernel cannot see: name the preset instead" in line
    assert not fake.calls

    # No GPU quota left this week.
    fake.quota["gpuQuota"] = {"timeUsed": "108000s", "totalTimeAllowed": "108000s"}
    line = _one_error(lresizervit(fake, tmp_path, "kaggle", "train", experiment))
    assert "no GPU T4 x2 quota left this week" in line and not fake.bodies("SaveKernel")

    # The competition's rules not accepted: the service drops the source, the push is refused here.
    fake.quota["gpuQuota"] = {"timeUsed": "0s", "totalTimeAllowed": "108000s"}
    fake.competitions.pop(COMPETITION)
    line = _one_error(lresizervit(fake, tmp_path, "kaggle", "train", experiment))
    assert f"Kaggle dropped these inputs it cannot find or you cannot read: competition {COMPETITION}" in line
    assert "a competition needs its rules accepted" in line


@pytest.mark.slow
def test_a_kernel_that_ended_in_error_shows_its_logs_last_lines(fake, experiment, tmp_path):
    ref = KERNELS[0].removesuffix("-1")
    fake.add_kernel(ref, versions=0)
    fake.set_output(ref, {}, log="fold 0/1: 12 train\nResourceExhaustedError: OOM when allocating\n")
    fake.run_statuses = ["RUNNING", ("ERROR", "Kernel ran out of memory")]
    line = _one_error(lresizervit(fake, tmp_path, "kaggle", "train", experiment, "--wait", "--poll-seconds", "0"))
    assert f"the kernel {ref} v1 ended: error (Kernel ran out of memory); its log ends:" in line
    assert "ResourceExhaustedError: OOM when allocating" in line
    assert not (tmp_path / "models" / "ktrain" / "fold_0").exists()


def test_folds_trained_under_another_config_or_other_folds_are_refused(tiny_experiment, tmp_path):
    """A downloaded kernel output joins the experiment only if it trained the same model on the same folds."""
    from lresizervit.config import load_config
    from lresizervit.kaggle_io.client import KaggleError
    from lresizervit.kaggle_io.merge import merge_output
    from tests.conftest import copy_experiment

    config = copy_experiment(tiny_experiment, tmp_path / "tree")
    cfg = load_config(config)
    out = tmp_path / "output" / "lresizervit-tiny-train"
    shutil.copytree(cfg.run_dir, out / "models" / "tiny")
    shutil.rmtree(cfg.run_dir)
    kernel_config = out / "models" / "tiny" / "config.yaml"
    tree = yaml.safe_load(kernel_config.read_text())
    # Where things lived and the hardware's precision may differ: merged.
    tree["data"]["dir"], tree["train"]["precision"] = "/kaggle/input/competitions/x", "mixed_float16"
    kernel_config.write_text(yaml.safe_dump(tree))
    assert merge_output(cfg, out) == {"complete": [0, 1], "interrupted": []}
    assert (cfg.run_dir / "fold_1" / "model.weights.h5").is_file()
    # Another model: refused, naming the key.
    tree["model"]["head_units"] = 99
    kernel_config.write_text(yaml.safe_dump(tree))
    with pytest.raises(KaggleError, match=r"another config .* model.head_units: 8 \(here\) != 99 \(kernel\)"):
        merge_output(cfg, out)
    # The same model on other folds: refused.
    tree["model"]["head_units"] = 8
    kernel_config.write_text(yaml.safe_dump(tree))
    import pandas as pd

    folds = pd.read_csv(cfg.data.folds_csv, dtype={"Id": str})
    folds["kfold"] = 1 - folds["kfold"]
    (out / "folds").mkdir()
    folds.to_csv(out / "folds" / Path(cfg.data.folds_csv).name, index=False)
    with pytest.raises(KaggleError, match="split the rows into folds differently"):
        merge_output(cfg, out)
