import fcntl
import os
import shutil
from pathlib import Path

import pytest

from tests.facts import TASK
from tests.tiny import shrink_model

# Set before TensorFlow or albumentations are imported anywhere in the test session.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_experiment(tmp_path_factory) -> Path:
    """A real experiment trained once per test session by the project's own trainer: 24 synthetic photos,
    2 folds, 1 epoch at 32 → 16 px, hflip TTA; `<root>/tiny.yaml`, `<root>/models/tiny/`, `<root>/data/`.
    Tests that write into it use `copy_experiment`. Under pytest-xdist the workers share one: the first to
    need it trains it (under a lock, in the folder all workers' temp folders sit in), the others wait."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # <session temp>/popen-gw<N> -> <session temp>
    root = base / "tiny_experiment"
    with open(base / "tiny_experiment.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        done = base / "tiny_experiment.done"
        if not done.exists():
            shutil.rmtree(root, ignore_errors=True)  # a worker that died half-way
            _train_tiny_experiment(root)
            done.touch()
    return root


def _train_tiny_experiment(root: Path) -> None:
    import yaml

    from lresizervit.config import load_config
    from lresizervit.data.duplicates import duplicate_groups
    from lresizervit.data.folds import make_folds, write_folds
    from lresizervit.data.image_check import scan_split
    from lresizervit.data.schema import read_table
    from lresizervit.data.synth import SynthParams, generate
    from lresizervit.training.trainer import train_fold

    generate(root / "data", 24, 5, SynthParams(seed=3, min_side=40, max_side=48, max_long_side=64), workers=1)
    tree = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    tree.update(name="tiny", output_dir=str(root / "models"))
    tree["data"].update(dir=str(root / "data"), folds_csv=str(root / "folds.csv"), n_folds=2, image_size=32,
                        cache=False)
    shrink_model(tree)
    tree["train"].update(epochs=1, batch_size=8, tensorboard=False)
    tree["predict"].update(out_dir=str(root / "submissions"), batch_size=8, svr_c=4.0, tta="hflip")
    (root / "tiny.yaml").write_text(yaml.safe_dump(tree))
    cfg = load_config(root / "tiny.yaml")
    train = read_table(root / "data" / "train.csv", "train", TASK)
    # Through the duplicate search, as the folds command does: the folds file then has its group column, so
    # every reader of it (trainer, cv, report, ensemble, ...) runs on one.
    scan, _ = scan_split(train, root / "data", "train", TASK, workers=1)
    groups = duplicate_groups(scan.hashes, scan.signatures)
    write_folds(make_folds(train, 2, 0, TASK, groups=groups), cfg.data.folds_csv, TASK)
    for k in range(2):
        train_fold(cfg, k)


def copy_experiment(src: Path, dest: Path) -> Path:
    """Copy a `tiny_experiment` tree to `dest` with the paths in its YAML files moved along; returns the
    config path."""
    shutil.copytree(src, dest)
    for path in dest.rglob("*.yaml"):
        path.write_text(path.read_text().replace(str(src), str(dest)))
    return dest / "tiny.yaml"


def photo_like(rng, h: int, w: int):
    """A uint8 [h, w, 3] smooth gradient with a disc: photo-like, so JPEG re-encoding errors stay small."""
    import numpy as np

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    c0, c1 = rng.uniform(30, 220, 3), rng.uniform(30, 220, 3)
    t = (xx / max(w - 1, 1) + yy / max(h - 1, 1))[..., None] / 2
    img = c0 * (1 - t) + c1 * t
    disc = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (min(h, w) / 4) ** 2
    img[disc] = rng.uniform(0, 255, 3)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)
