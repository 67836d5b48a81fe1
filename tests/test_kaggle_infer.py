"""`kaggle infer` against a fake of the Kaggle service (tests/kaggle_fake.py), driven by the real kaggle
client in a subprocess as a user runs it: what it publishes, the exact kernel it pushes, the submission it
checks and submits, and the one-line errors for the service's failure answers."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from tests.conftest import ROOT, copy_experiment
from tests.kaggle_fake import competition_service, subprocess_env

COMPETITION = "petfinder-pawpularity-score"
KERNEL = "alice/lresizervit-tiny-infer"
DATASET = "alice/lresizervit-tiny"


@pytest.fixture
def fake():
    with competition_service(COMPETITION, max_requests=80, seconds=240) as fake:
        yield fake


@pytest.fixture
def experiment(tiny_experiment, tmp_path):
    copy_experiment(tiny_experiment, tmp_path / "tree")
    run = tmp_path / "tree" / "models" / "tiny"
    (run / "kaggle" / "code").mkdir(parents=True)  # `kaggle train`'s own files: never uploaded with the experiment
    (run / "kaggle" / "code" / "big.whl").write_bytes(b"x" * 1000)
    return tmp_path / "tree", run


def infer(fake, tmp_path, *args) -> subprocess.CompletedProcess:
    env = subprocess_env(fake, tmp_path / "client", NO_ALBUMENTATIONS_UPDATE="1", TF_CPP_MIN_LOG_LEVEL="2",
                         PIP_INDEX_URL="http://127.0.0.1:9/simple")
    return subprocess.run([sys.executable, "-m", "lresizervit", "kaggle", "infer", *map(str, args),
                           "--poll-seconds", "0"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=200)


def valid_submission(tree) -> bytes:
    test = (tree / "data" / "test.csv").read_text().splitlines()[1:]
    return ("Id,Pawpularity\n" + "".join(f"{row.split(',')[0]},42.5\n" for row in test)).encode()


@pytest.mark.slow
def test_infer_publishes_pushes_internet_off_checks_and_submits(fake, experiment, tmp_path):
    tree, run = experiment
    fake.add_kernel(KERNEL, versions=0)
    fake.set_output(KERNEL, {"submission.csv": valid_submission(tree)}, log="writing submission.csv\n")
    fake.new_dataset_statuses = ["BLOBS_RECEIVED", "READY"]  # processed after one poll
    proc = infer(fake, tmp_path, run, "--submit", "-m", "swin, 2 folds")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]

    # The experiment as its own private dataset, its folders zipped, without kaggle train's files.
    dataset = fake.datasets[DATASET].versions[-1]
    assert {"lresizervit-0.1.0-py3-none-any.whl", "inference.py", "lresizervit_bootstrap.py", "config.yaml",
            "fold_0.zip", "fold_1.zip"} <= set(dataset.files)
    assert not [n for n in dataset.files if n.startswith("kaggle")]
    assert (run / "fold_0" / "resizer_samples.npz").is_file()  # the trainer wrote it; only `report` reads it
    with zipfile.ZipFile(io.BytesIO(dataset.files["fold_0.zip"])) as zf:
        assert {"model.weights.h5", "model.json", "metrics.json"} <= set(zf.namelist())
        assert "resizer_samples.npz" not in zf.namelist()
    assert "dataset alice/lresizervit-tiny: blobs_received, waiting" in proc.stdout

    # The kernel: GPU, internet off (a code competition's rule), the competition and the dataset attached.
    (push,) = fake.bodies("SaveKernel")
    assert push["slug"] == KERNEL and push["enableInternet"] is False and push["enableGpu"] is True
    assert push["machineShape"] == "NvidiaTeslaT4" and "dockerImage" not in push and push["enableTpu"] is False
    assert push["competitionDataSources"] == [COMPETITION] and push["datasetDataSources"] == [DATASET]
    assert "runpy.run_path" in push["text"] and push["kernelType"] == "script" and push["isPrivate"] is True
    # Nothing pushed before the dataset was ready.
    methods = fake.methods()
    ready = max(i for i, m in enumerate(methods) if m.endswith("GetDatasetStatus"))
    assert ready < methods.index("kernels.KernelsApiService/SaveKernel")

    (submission,) = fake.bodies("CreateCodeSubmission")
    assert submission == {"competitionName": COMPETITION, "kernelOwner": "alice",
                          "kernelSlug": "lresizervit-tiny-infer", "kernelVersion": 1, "fileName": "submission.csv",
                          "submissionDescription": "swin, 2 folds"}
    assert "submission.csv: valid (5 rows" in proc.stdout and f"submitted {KERNEL} version 1" in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize(("setup", "expected"), [
    (lambda fake: setattr(fake, "push_error", "Notebook is too large"),
     f"error: pushing the kernel {KERNEL} failed: Kaggle said: Notebook is too large"),
    (lambda fake: fake.competitions.pop(COMPETITION),
     f"Kaggle dropped these inputs it cannot find or you cannot read: competition {COMPETITION}"),
    (lambda fake: setattr(fake, "run_statuses", ["RUNNING", ("ERROR", "Your notebook tried to allocate more memory")]),
     "ended: error (Your notebook tried to allocate more memory); its log ends: Traceback | MemoryError"),
])
def test_infer_says_in_one_line_what_went_wrong(fake, experiment, tmp_path, setup, expected):
    tree, run = experiment
    fake.add_kernel(KERNEL, versions=0)
    fake.set_output(KERNEL, {}, log="Traceback\nMemoryError\n")
    setup(fake)
    proc = infer(fake, tmp_path, run)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and expected in errors[0], proc.stderr[-2000:]
    assert not fake.bodies("CreateCodeSubmission")


@pytest.mark.slow
def test_a_submission_that_does_not_fit_test_csv_is_not_submitted(fake, experiment, tmp_path):
    tree, run = experiment
    fake.add_kernel(KERNEL, versions=0)
    rows = valid_submission(tree).decode().splitlines()
    fake.set_output(KERNEL, {"submission.csv": ("\n".join(rows[:-1]) + "\n").encode()})
    proc = infer(fake, tmp_path, run, "--submit", "-m", "x")
    assert proc.returncode == 2 and "submission.csv" in proc.stderr and "error:" in proc.stderr
    assert not fake.bodies("CreateCodeSubmission")


def test_dry_run_needs_no_network_and_writes_the_kernel(experiment, tmp_path):
    tree, run = experiment
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE_")}
    env.update(NO_ALBUMENTATIONS_UPDATE="1", HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9",
               KAGGLE_CONFIG_DIR=str(tmp_path / "nothing"), PIP_INDEX_URL="http://127.0.0.1:9/simple")
    proc = subprocess.run([sys.executable, "-m", "lresizervit", "kaggle", "infer", str(run), "--dry-run"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    folder = run / "kaggle" / "infer"
    meta = (folder / "kernel-metadata.json").read_text()
    assert '"enable_internet": false' in meta and '"machine_shape": "NvidiaTeslaT4"' in meta
    assert "docker_image" not in meta and (folder / "lresizervit_infer.py").is_file()
    assert "would push kernel your-kaggle-name/lresizervit-tiny-infer" in proc.stdout
    shutil.rmtree(folder)
