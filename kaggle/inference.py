"""Internet-off inference for a Kaggle notebook: the attached datasets in, /kaggle/working/submission.csv out.

In a notebook (Internet off) with the competition data and one or more datasets made by
`python -m lresizervit kaggle package` attached, one cell:

    !python /kaggle/input/<dataset>/inference.py

It prints the runtime (Python, TensorFlow, Keras, keras-hub, JAX, the GPUs / TPU it sees), then finds, under
the input root (any depth, so both /kaggle/input/<slug>/ and newer nested mounts work):
  - the newest `lresizervit-*.whl` and installs it with `pip install --no-index --no-deps` unless
    `lresizervit` is importable already (the notebook image brings TensorFlow, Keras and the rest); then
    checks the image against that wheel's declared requirements (keras-hub only for a keras_hub: backbone)
    and installs a shipped wheel (e.g. keras-hub's, which `kaggle package` puts beside such an experiment)
    only where the image's version is outside them. TensorFlow, Keras and JAX are never replaced. What still
    does not fit ends the run with one `error:` line per package: found, needed, and the wheel to attach;
  - every experiment folder (one holding `config.yaml` and `fold_*`), mirrored into the working folder
    with its files linked, so caches written while predicting land there (the input is read-only) and
    folds uploaded as `fold_k.zip` are unzipped there;
  - the competition folder (the one holding `test.csv`, preferring petfinder-pawpularity-score);
then runs `lresizervit predict EXP... --data-dir DATA --out OUT`: folds x TTA of each experiment, blended
with weights fitted on their out-of-fold predictions when there are several, checked against test.csv.

Only the standard library (and `lresizervit_bootstrap.py`, shipped beside this file) is used until the wheel
is installed. Flags (or environment variables) move every path, which is how the tests run it against a tree
shaped like /kaggle/input.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import re
import shutil
import sys
import zipfile
from pathlib import Path

COMPETITION = "petfinder-pawpularity-score"
MAX_DEPTH = 6  # /kaggle/input/datasets/<owner>/<slug>/<folder>/... is deep enough


def _bootstrap():
    """lresizervit_bootstrap.py from beside this file (as packaged), else the repository's copy."""
    import importlib.util

    here = Path(__file__).resolve().parent
    for path in (here / "lresizervit_bootstrap.py", here.parent / "src" / "lresizervit" / "kaggle_io" / "bootstrap.py"):
        if path.is_file():
            spec = importlib.util.spec_from_file_location("lresizervit_bootstrap", path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
            spec.loader.exec_module(module)
            return module
    raise SystemExit(f"error: lresizervit_bootstrap.py is missing beside {Path(__file__).name}; package the "
                     f"experiment again with `python -m lresizervit kaggle package`")


def _version_key(wheel: Path) -> tuple:
    # lresizervit-0.1.0-py3-none-any.whl -> (0, 1, 0); non-numeric parts sort first.
    version = wheel.name.split("-")[1] if wheel.name.count("-") >= 2 else ""
    return tuple(int(p) if p.isdigit() else -1 for p in re.split(r"[.+]", version))


def scan(root: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """(lresizervit wheels, experiment folders, data folders) under root; never descends into the last two."""
    wheels, experiments, data_dirs = [], [], []
    root_depth = len(root.parts)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        here = Path(dirpath)
        wheels += [here / f for f in filenames if f.startswith("lresizervit-") and f.endswith(".whl")]
        folds = [n for n in (*dirnames, *filenames) if re.fullmatch(r"fold_\d+(\.zip)?", n)]
        if "config.yaml" in filenames and folds:
            experiments.append(here)
            dirnames[:] = []
        elif "test.csv" in filenames:
            data_dirs.append(here)
            dirnames[:] = []  # train/ and test/ hold thousands of photos
        elif len(here.parts) - root_depth >= MAX_DEPTH:
            dirnames[:] = []
        else:
            dirnames.sort()
    return sorted(wheels, key=_version_key), sorted(experiments), sorted(data_dirs)


def ensure_installed(boot, root: Path, wheels: list[Path], experiments: list[Path]) -> str:
    """Import lresizervit, installing the newest wheel first if it is not importable, and close the gaps
    between the image and the wheel's requirements with the wheels shipped under `root`."""
    lines = []
    if importlib.util.find_spec("lresizervit") is None:
        if not wheels:
            raise SystemExit("error: lresizervit is not installed and no lresizervit-*.whl was found in the "
                             "attached datasets (package the experiment with `python -m lresizervit kaggle package`)")
        wheel = wheels[-1]
        boot.install([boot.Wheel(wheel, "lresizervit", wheel.name.split("-")[1])])
        reqs = boot.wheel_requirements(wheel)
        lines.append(f"installed {wheel}")
    else:
        reqs = boot.installed_requirements()
        lines.append("lresizervit already importable; not installed")
    reqs = boot.needed(reqs, keras_hub=any(boot.uses_keras_hub(e) for e in experiments), training=False)
    shipped = [w for w in boot.find_wheels(root) if w.name != "lresizervit"]
    installed = boot.close_gaps(reqs, shipped, f"under {root}")
    lines.append(f"installed {', '.join(installed)} (the image's were outside lresizervit's range)" if installed
                 else "the image meets lresizervit's requirements")
    importlib.import_module("lresizervit")
    return "\n".join(lines)


def materialise(exp: Path, work_dir: Path, used: set[str]) -> Path:
    """A writable mirror of an experiment in work_dir: real folders, files linked (not copied), zipped
    folds unzipped. Prediction may cache OOF re-predictions or SVR heads in the experiment; the input
    stays untouched (it is read-only on Kaggle) and nothing large is copied."""
    name = exp.name
    while name in used:  # two datasets may hold folders of the same name
        name += "_"
    used.add(name)
    target = work_dir / "experiments" / name
    if target.exists():
        shutil.rmtree(target)
    for dirpath, _dirnames, filenames in os.walk(exp):
        here = Path(dirpath)
        rel = here.relative_to(exp)
        (target / rel).mkdir(parents=True, exist_ok=True)
        for f in filenames:
            if f.endswith(".whl") or f == "lresizervit_bootstrap.py":
                continue
            if rel == Path(".") and re.fullmatch(r"fold_\d+\.zip", f) and not (exp / f[:-4]).is_dir():
                with zipfile.ZipFile(here / f) as zf:  # `--dir-mode zip` uploaded the fold as an archive
                    zf.extractall(target / f[:-4])
                continue
            os.symlink((here / f).resolve(), target / rel / f)
    return target


def pick_data_dir(data_dirs: list[Path], given: str | None) -> Path:
    if given:
        return Path(given)
    if len(data_dirs) == 1:
        return data_dirs[0]
    named = [d for d in data_dirs if d.name == COMPETITION]
    if len(named) == 1:
        return named[0]
    found = ", ".join(map(str, data_dirs)) or "none"
    raise SystemExit(f"error: cannot tell which folder holds the competition data (folders with test.csv: "
                     f"{found}); pass --data-dir")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input-root", default=os.environ.get("LRESIZERVIT_INPUT_ROOT", "/kaggle/input"))
    p.add_argument("--out", default=os.environ.get("LRESIZERVIT_OUT", "/kaggle/working/submission.csv"))
    p.add_argument("--work-dir", default=os.environ.get("LRESIZERVIT_WORK_DIR", "/kaggle/working/lresizervit"),
                   help="where the experiments are mirrored (zipped folds unzipped, caches written)")
    p.add_argument("--data-dir", default=os.environ.get("LRESIZERVIT_DATA_DIR"),
                   help="the competition folder (default: the one under the input root holding test.csv)")
    p.add_argument("--experiments", nargs="+", default=None,
                   help="experiment folders to use (default: every one found under the input root)")
    p.add_argument("predict_args", nargs=argparse.REMAINDER,
                   help="passed on to `lresizervit predict` after `--`, e.g. -- --tta none")
    args = p.parse_args(argv)
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no PyPI check: the notebook is offline
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    root = Path(args.input_root)
    if not root.is_dir():
        raise SystemExit(f"error: input root {root} does not exist")
    boot = _bootstrap()
    print("runtime:\n  " + "\n  ".join(boot.runtime_lines()), flush=True)
    wheels, experiments, data_dirs = scan(root)
    if args.experiments:
        experiments = [Path(e) for e in args.experiments]
    print(ensure_installed(boot, root, wheels, experiments), flush=True)
    if not experiments:
        raise SystemExit(f"error: no experiment folder (config.yaml + fold_*) under {root}; attach the "
                         f"dataset made by `python -m lresizervit kaggle package`")
    data_dir = pick_data_dir(data_dirs, args.data_dir)
    used: set[str] = set()
    exps = [str(materialise(e, Path(args.work_dir), used)) for e in experiments]
    print(f"experiments: {', '.join(exps)}\ncompetition data: {data_dir}", flush=True)

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    from lresizervit.cli import main as lresizervit_main

    extra = [a for a in args.predict_args if a != "--"]
    return lresizervit_main(["predict", *exps, "--data-dir", str(data_dir), "--out", args.out, *extra])


if __name__ == "__main__":
    sys.exit(main())
