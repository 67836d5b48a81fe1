"""`kaggle package`: make `models/<exp>/` uploadable as a Kaggle dataset as is: a wheel of this package
beside the fold models (built offline), the offline entry point, and a `dataset-metadata.json` checked
the way the client checks it before uploading."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from lresizervit.kaggle_io.client import (
    KaggleError,
    config_file,
    import_api_class,
    kaggle_username,
    read_json_dict,
)

DEFAULT_LICENSE = "CC0-1.0"  # what `kaggle datasets init` writes
WHEEL_GLOB = "lresizervit-*.whl"
# The offline entry point, copied into every packaged experiment so a notebook needs one line, and the
# standard-library module it imports from beside itself (kaggle_io/bootstrap.py: the image's versions).
INFERENCE_SCRIPT = "inference.py"
BOOTSTRAP_MODULE = "lresizervit_bootstrap.py"
# Where `kaggle package` keeps the wheels it ships (keras-hub's) between runs; `pip download` fills it.
WHEEL_CACHE_ENV = "LRESIZERVIT_WHEEL_CACHE"
PYPI = "https://pypi.org/simple"


def wheel_cache() -> Path:
    return Path(os.environ.get(WHEEL_CACHE_ENV) or Path.home() / ".cache" / "lresizervit" / "wheels")


def shipped_wheel(dist: str, version: str, wheel_dirs: tuple[str | os.PathLike, ...] = ()) -> Path:
    """The pure-Python wheel of `dist==version` that an experiment ships: from `wheel_dirs` (--wheels),
    else the wheel cache, else `pip download` into the cache where the index is reachable; offline without
    one, a KaggleError saying which wheel to put where."""
    from lresizervit.net import unreachable

    name = f"{dist.replace('-', '_')}-{version}-py3-none-any.whl"
    cache = wheel_cache()
    for folder in (*map(Path, wheel_dirs), cache):
        if (folder / name).is_file():
            return folder / name
    index = os.environ.get("PIP_INDEX_URL") or PYPI
    why = unreachable(index)
    if why is None:
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                   "--disable-pip-version-check", "-q", "-d", tmp, f"{dist}=={version}"]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            got = Path(tmp) / name
            if proc.returncode == 0 and got.is_file():
                os.replace(got, cache / name)
                return cache / name
            why = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-2:]) or f"no {name} came back"
    looked = ", ".join(str(d) for d in (*wheel_dirs, cache))
    raise KaggleError(f"the experiment needs {name} beside it (Kaggle's GPU image has an older {dist}), and it is "
                      f"not in {looked}, and {index} cannot give it ({why}): put that file in {cache} (e.g. "
                      f"`pip download --no-deps {dist}=={version} -d {cache}` on a machine with internet) or pass "
                      f"--wheels DIR")


def source_root() -> Path:
    """The checkout this package runs from (the wheel is built from it)."""
    import lresizervit

    root = Path(lresizervit.__file__).resolve().parents[2]
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file() or 'name = "lresizervit"' not in pyproject.read_text():
        raise KaggleError(f"cannot build the wheel: lresizervit runs from {Path(lresizervit.__file__).parent}, "
                          f"not from a source checkout (no pyproject.toml at {root}); run from the repository")
    return root


def build_wheel(out_dir: str | os.PathLike) -> Path:
    """A wheel of this package, built offline (no index, no build isolation: setuptools from this
    environment) from a copy of the sources, so a stale build/ folder cannot slip old files in and
    concurrent builds cannot collide. Returns the wheel, moved atomically into `out_dir`."""
    from lresizervit.io_utils import atomic_write_bytes

    root = source_root()
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="lresizervit-wheel-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for name in ("pyproject.toml", "README.md", "LICENSE", "setup.cfg"):
            if (root / name).is_file():
                shutil.copy2(root / name, src / name)
        shutil.copytree(root / "src", src / "src",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".*"))
        built = Path(tmp) / "wheel"
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
               "--disable-pip-version-check", "-q", "-w", str(built), str(src)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(built.glob(WHEEL_GLOB))
        if proc.returncode != 0 or len(wheels) != 1:
            tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
            raise KaggleError(f"building the wheel failed (pip exit {proc.returncode}): {tail}")
        wheel = wheels[0]
        with zipfile.ZipFile(wheel) as zf:
            if "lresizervit/cli.py" not in zf.namelist():
                raise KaggleError(f"{wheel.name}: the built wheel holds no lresizervit/cli.py")
        target = out_dir / wheel.name
        atomic_write_bytes(target, wheel.read_bytes())
    for old in out_dir.glob(WHEEL_GLOB):
        if old != target:
            old.unlink()
    return target


def default_slug(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", f"lresizervit-{name}".lower()).strip("-")
    return slug[:50].rstrip("-")


def validate_metadata(folder: str | os.PathLike, shown: str | os.PathLike | None = None) -> dict:
    """Read `dataset-metadata.json` with the kaggle client's own reader and make the checks its
    `dataset_create_new` makes before its first network call (kaggle 2.2.5); returns the metadata.
    `shown` is the folder named in errors (default `folder`)."""
    api = import_api_class()()
    try:
        meta_file = api.get_dataset_metadata_file(str(folder))
        with open(meta_file) as fh:
            meta = json.load(fh)
        ref = api.get_or_fail(meta, "id")
        title = api.get_or_fail(meta, "title")
        licenses = api.get_or_fail(meta, "licenses")
        api.validate_dataset_string(ref)
        owner, slug = ref.split("/")[:2]
        api._validate_slug_syntax(slug)  # the server's rule; the client checks it for models only
        if slug == "INSERT_SLUG_HERE" or title == "INSERT_TITLE_HERE":
            raise ValueError("default slug or title detected, please change values before uploading")
        if not isinstance(licenses, list) or len(licenses) != 1:
            raise ValueError("please specify exactly one license")
        api.get_or_fail(licenses[0], "name")
        if not 6 <= len(slug) <= 50:
            raise ValueError(f"the dataset slug {slug!r} must be between 6 and 50 characters")
        if not 6 <= len(title) <= 50:
            raise ValueError(f"the dataset title {title!r} must be between 6 and 50 characters")
        subtitle = meta.get("subtitle")
        if subtitle and not 20 <= len(subtitle) <= 80:
            raise ValueError("subtitle length must be between 20 and 80 characters")
        if meta.get("resources"):
            api.validate_resources(str(folder), meta["resources"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise KaggleError(f"{Path(shown or folder) / 'dataset-metadata.json'}: {exc}") from None
    return meta


def _trained_version(run_dir: Path, n_folds: int, key: str, dist: str) -> str:
    """The version of `dist` that trained the experiment (its folds' model.json), else the installed one."""
    from importlib import metadata

    from lresizervit.run import MODEL_SPEC_FILE, fold_file

    found = set()
    for k in range(n_folds):
        path = fold_file(run_dir, k, MODEL_SPEC_FILE)
        if path.is_file():
            found.add(read_json_dict(path).get("written_by", {}).get(key))
    found.discard(None)
    if len(found) > 1:
        raise KaggleError(f"{run_dir}: its folds were trained with {dist} {' and '.join(sorted(found))}; one "
                          f"notebook installs one: retrain the folds with one version")
    return found.pop() if found else metadata.version(dist)


def package_experiment(exp: str | os.PathLike, dataset: str | None = None, title: str | None = None,
                       license_name: str = DEFAULT_LICENSE, predict_settings: dict | None = None,
                       wheel_dirs: tuple[str | os.PathLike, ...] = ()) -> dict:
    """Make `models/<exp>/` uploadable as is: check every fold is trained, build the wheel beside the
    weights, copy the offline entry point, write and validate `dataset-metadata.json`.

    `predict_settings` (e.g. `{"tta": "flip_zoom", "svr": True}`) are written into the experiment's
    `config.yaml` `predict` section, which is what `predict <folder>`, and so the notebook, uses.
    A `keras_hub:` experiment also ships the keras-hub wheel it was trained with (`shipped_wheel`), which the
    notebook installs only where the image's keras-hub is outside lresizervit's range.
    """
    from lresizervit.config import save_config
    from lresizervit.io_utils import atomic_write_bytes, atomic_write_json
    from lresizervit.run import (
        CONFIG_FILE,
        DATASET_METADATA,
        experiment_config,
        fold_models,
        load_run_config,
        read_cv,
        svr_file,
    )

    if dataset is not None and dataset.count("/") > 1:
        # The client would take a third part as a version and silently drop it.
        raise KaggleError(f"--dataset {dataset!r}: a dataset id is USER/SLUG (or SLUG), one '/' at most")
    run_dir = experiment_config(exp).run_dir
    models = fold_models(run_dir)  # an error naming the missing folds: a partial upload scores differently
    cfg = load_run_config(run_dir, tuple(f"predict.{k}={v}" for k, v in (predict_settings or {}).items()))
    meta_path = run_dir / DATASET_METADATA
    previous = read_json_dict(meta_path) if meta_path.is_file() else {}

    if dataset and "/" in dataset:
        ref = dataset
    elif dataset is None and previous.get("id"):
        ref = previous["id"]  # an id set (or edited) earlier is kept when repackaging
    else:
        user = kaggle_username() or (previous.get("id", "").split("/")[0] or None)
        if not user:
            raise KaggleError(f"no Kaggle user name for the dataset id: pass --dataset USER/SLUG, set "
                              f"KAGGLE_USERNAME, or put a \"username\" in {config_file()}")
        ref = f"{user}/{dataset or default_slug(cfg.name)}"
    title = title or previous.get("title") or f"LResizerViT {cfg.name}"[:50]
    cv = read_cv(run_dir) or {}
    score = f" CV RMSE {cv['cv_rmse']:.3f} over {cv['n_folds']} folds." if "cv_rmse" in cv else ""
    description = (
        f"Fold models of the LResizerViT experiment `{cfg.name}` ({len(models)} folds, resizer "
        f"{cfg.model.resizer.mode} {cfg.data.image_size} -> {cfg.model.resizer.target_size} px, backbone "
        f"{cfg.model.backbone.name}).{score}\n\n"
        f"Holds `config.yaml`, `fold_*/model.weights.h5` + `model.json` and a `lresizervit-*.whl` (this code, "
        f"installed offline; for a keras-hub backbone also the keras-hub wheel it was trained with). "
        f"In an internet-off notebook with this dataset and the competition data attached, "
        f"`!python /kaggle/input/<this dataset>/{INFERENCE_SCRIPT}` writes /kaggle/working/submission.csv."
    )
    meta = {**previous, "title": title, "id": ref, "licenses": [{"name": license_name}],
            "description": description}
    with tempfile.TemporaryDirectory() as tmp:  # a bad id or title fails before the wheel is built
        atomic_write_json(Path(tmp) / "dataset-metadata.json", meta)
        validate_metadata(tmp, shown=run_dir)

    extra = []
    if cfg.model.backbone.name.startswith("keras_hub:"):
        extra.append(shipped_wheel("keras-hub", _trained_version(run_dir, len(models), "keras_hub", "keras-hub"),
                                   wheel_dirs))
    wheel = build_wheel(run_dir)
    for path in extra:
        stem = path.name.split("-")[0]
        if (run_dir / path.name).resolve() != path.resolve():
            atomic_write_bytes(run_dir / path.name, path.read_bytes())
        for old in run_dir.glob(f"{stem}-*.whl"):
            if old.name != path.name:
                old.unlink()
    bootstrap = Path(__file__).with_name("bootstrap.py")
    atomic_write_bytes(run_dir / BOOTSTRAP_MODULE, bootstrap.read_bytes())
    if predict_settings:
        save_config(cfg, run_dir / CONFIG_FILE)  # predict.* only: training keys are unchanged
    script = source_root() / "kaggle" / INFERENCE_SCRIPT
    if script.is_file():
        atomic_write_bytes(run_dir / INFERENCE_SCRIPT, script.read_bytes())
    atomic_write_json(meta_path, meta)
    validate_metadata(run_dir)
    size = sum(p.stat().st_size for p in run_dir.rglob("*") if p.is_file())
    heads = all(svr_file(run_dir, k, cfg.predict.svr_c).is_file() for k in range(len(models)))
    return {"run_dir": run_dir, "id": ref, "title": title, "wheel": wheel, "extra_wheels": [p.name for p in extra],
            "folds": len(models),
            "bytes": size, "predict": cfg.predict, "svr_heads_saved": heads}
