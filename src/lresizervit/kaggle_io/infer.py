"""`kaggle infer`: the code competition's submission made by an internet-off notebook on Kaggle's GPU, from
this machine. Each experiment is packaged (`kaggle package`) and published as its private dataset, an
inference kernel is pushed with them and the competition attached (internet off, as the competition
requires), waited for, its submission.csv downloaded and checked against test.csv, and, with `--submit`,
that kernel version submitted."""

from __future__ import annotations

import time
from pathlib import Path

from lresizervit.kaggle_io.client import KaggleError, client_error, connect, kaggle_username
from lresizervit.kaggle_io.kernels import (
    KernelSpec,
    download_output,
    publish_dataset,
    push_kernel,
    slugify,
    wait_for_kernel,
)
from lresizervit.run import SAMPLES_FILE

INFER_SCRIPT = "lresizervit_infer.py"
SUBMISSION = "submission.csv"
# Left out of an experiment's dataset: `kaggle train`'s own files, TensorBoard logs, resumable backups, the
# report and what only it reads.
IGNORED = ["kaggle/", "logs/", "*/logs/", "backup/", "*/backup/", "report/", SAMPLES_FILE]

# The kernel's one file: runs the inference.py packaged with the first experiment found, under either of
# Kaggle's mount layouts (/kaggle/input/datasets/<owner>/<slug>/... or /kaggle/input/<slug>/...).
STUB = '''"""lresizervit: the submission of the attached experiments (written by `python -m lresizervit kaggle infer`)."""
import os
import runpy
import sys

ROOT = os.environ.get("LRESIZERVIT_INPUT_ROOT", "/kaggle/input")
found = sorted(os.path.join(d, "inference.py") for d, _, files in os.walk(ROOT, followlinks=True)
               if "inference.py" in files and "lresizervit_bootstrap.py" in files)
if not found:
    sys.exit(f"error: no packaged experiment (inference.py + lresizervit_bootstrap.py) under {ROOT}: attach "
             "the datasets made by `python -m lresizervit kaggle package`")
sys.argv = [found[0], "--input-root", ROOT, *sys.argv[1:]]
runpy.run_path(found[0], run_name="__main__")
'''


def plan_inference(experiments: list[str], user: str | None = None, wheel_dirs: tuple = ()) -> tuple[list, KernelSpec]:
    """Package every experiment; the inference kernel that attaches them. Returns ([(cfg, ref)], spec)."""
    from lresizervit.kaggle_io.package import default_slug, package_experiment
    from lresizervit.run import DATASET_METADATA, experiment_config

    if not experiments:
        raise KaggleError("kaggle infer: name at least one experiment (models/<exp> or its config YAML)")
    user = user or kaggle_username() or "your-kaggle-name"
    packaged = []
    for spec in experiments:
        cfg = experiment_config(spec)
        # An id set by an earlier `kaggle package` is kept; else the user's (a placeholder in a dry run).
        dataset = None if (cfg.run_dir / DATASET_METADATA).is_file() else f"{user}/{default_slug(cfg.name)}"
        info = package_experiment(spec, dataset=dataset, wheel_dirs=wheel_dirs)
        packaged.append((cfg, info["id"]))
    competitions = {cfg.task.competition for cfg, _ in packaged}
    if len(competitions) != 1 or "" in competitions:
        raise KaggleError(f"kaggle infer: the experiments' task.competition must be one competition, got "
                          f"{sorted(competitions)}")
    first = packaged[0][0]
    name = slugify("-".join(cfg.name for cfg, _ in packaged), 30)
    title = f"lresizervit {name} infer"
    spec = KernelSpec(f"{user}/{slugify(title)}", title, first.run_dir / "kaggle" / "infer", INFER_SCRIPT,
                      "gpu", internet=False, datasets=tuple(ref for _, ref in packaged),
                      competitions=(competitions.pop(),))
    return packaged, spec


def run_infer(experiments: list[str], submit: bool = False, message: str | None = None, dry_run: bool = False,
              wheel_dirs: tuple = (), sleep=time.sleep, poll_s: float = 60.0) -> dict:
    from lresizervit.inference.submission import validate_file

    if submit and not (message or "").strip():
        raise KaggleError("kaggle infer --submit needs a message: -m MSG")
    api = None if dry_run else connect()
    packaged, spec = plan_inference(experiments, None if dry_run else kaggle_username(), wheel_dirs)
    spec.write(STUB)
    if dry_run:
        for cfg, ref in packaged:
            print(f"would push dataset {ref}: {cfg.run_dir} (without {', '.join(IGNORED)})")
        print(f"would push kernel {spec.ref}: GPU T4 x2, internet off, competition {spec.competitions[0]}, datasets "
              f"{', '.join(spec.datasets)}; {spec.folder}")
        return {"kernel": spec, "datasets": [ref for _, ref in packaged]}
    for cfg, ref in packaged:
        print(f"dataset {ref}: {publish_dataset(api, cfg.run_dir, ref, 'lresizervit', sleep, poll_s, ignore=IGNORED)}",
              flush=True)
    version, url = push_kernel(api, spec)
    print(f"pushed {spec.ref} version {version}: {url}", flush=True)
    wait_for_kernel(api, spec.ref, version, spec.folder / "logs", sleep=sleep, poll_s=poll_s)
    out = spec.folder / "output"
    download_output(api, spec.ref, out)
    submission = out / SUBMISSION
    if not submission.is_file():
        raise KaggleError(f"the kernel {spec.ref} v{version} wrote no {SUBMISSION} (its output: {out})")
    cfg = packaged[0][0]
    test_csv = Path(cfg.data.dir) / "test.csv"
    if not test_csv.is_file():
        raise KaggleError(f"{test_csv}: missing, so {submission} cannot be checked before it is submitted "
                          f"(python -m lresizervit kaggle download)")
    rows = validate_file(submission, test_csv, cfg.task)
    print(f"{submission}: valid ({rows} rows of {test_csv})", flush=True)
    result = {"kernel": spec.ref, "version": version, "submission": submission}
    if submit:
        competition = spec.competitions[0]
        try:
            answer = api.competition_submit_code(SUBMISSION, message, competition, kernel=spec.ref,
                                                 kernel_version=version, quiet=True)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            raise client_error(exc, f"submitting {spec.ref} v{version} to {competition}", competition) from None
        result["answer"] = getattr(answer, "message", "") or "submitted"
        print(f"submitted {spec.ref} version {version} to {competition}: {result['answer']}", flush=True)
    return result
