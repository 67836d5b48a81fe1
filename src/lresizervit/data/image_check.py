"""Decode every image of a data set once, before any training: unreadable, truncated and empty files are all
reported together (file, row, Id), and each photo's perceptual fingerprint (data/duplicates.py) comes out of
the same pass.

Decoding is at reduced scale (libjpeg's 1/8 for photos >= 256 px: `decode.decode_image`), which still reads
every byte, on all cores. Results are cached by file size and mtime in a JSON file, so a rerun only decodes
what changed; the cache is never trusted for anything else (a stale or unreadable one is ignored and
rewritten).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from lresizervit.data.decode import ImageDecodeError, decode_image
from lresizervit.data.duplicates import RULE, THUMB_SIDE, fingerprint
from lresizervit.data.schema import SchemaError, missing_image_dir, read_table, where
from lresizervit.io_utils import atomic_write_text
from lresizervit.task import SPLITS, Task

__all__ = ["CACHE_FORMAT", "DataCheck", "ImageScan", "cache_path", "check_dataset", "scan_images", "scan_split"]

CACHE_FORMAT = "lresizervit-image-check"
# Below this many files to decode, worker processes cost more to start (~1 s each) than they save.
_MIN_FILES_FOR_WORKERS = 64


@dataclass
class ImageScan:
    """What one pass found, in the order of the paths given."""

    # None for a readable image, else why not (names the file).
    errors: list[str | None]
    # 64-bit perceptual hash and 64-byte signature of each readable image (0 / b"" for the others).
    hashes: list[int]
    signatures: list[bytes]
    # Files decoded in this pass (the others came from the cache or were missing / empty).
    decoded: int = 0
    seconds: float = 0.0
    # Which of the paths were decoded in this pass.
    decoded_mask: list[bool] = field(default_factory=list)


@dataclass
class DataCheck:
    train: pd.DataFrame
    test: pd.DataFrame
    # Per split; each split's `seconds` is 0: the splits are decoded in one pass, timed here.
    scans: dict[str, ImageScan]
    seconds: float

    @property
    def decoded(self) -> int:
        return sum(s.decoded for s in self.scans.values())


def cache_path(folds_csv: str | os.PathLike[str]) -> Path:
    """`<folds file's stem>.images.json` beside the folds file: data.dir may be read-only (Kaggle's
    /kaggle/input), while the folds folder is written once per data set anyway."""
    folds_csv = Path(folds_csv)
    return folds_csv.with_name(f"{folds_csv.stem}.images.json")


def scan_images(paths: Sequence[str | os.PathLike[str]], cache_file: str | os.PathLike[str] | None = None,
                workers: int | None = None, progress: bool = False, desc: str = "decoding") -> ImageScan:
    """Stat every path, decode those not in the cache with the same size and mtime, and update the cache.

    `workers` defaults to every core this process may use.
    """
    start = time.perf_counter()
    keys = [os.path.abspath(os.fspath(p)) for p in paths]
    cache = _read_cache(cache_file)
    entries: list[list | None] = [None] * len(keys)
    errors: list[str | None] = [None] * len(keys)
    todo: list[int] = []
    for i, key in enumerate(keys):
        try:
            st = os.stat(key)
        except OSError:
            errors[i] = f"image {key} not found"
            continue
        if not os.path.isfile(key):
            errors[i] = f"image {key} is not a regular file"
        elif st.st_size == 0:
            errors[i] = f"image {key} is empty (0 bytes)"
        else:
            hit = cache.get(key)
            if hit is not None and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
                entries[i] = hit
            else:
                todo.append(i)
    if todo:
        for i, entry in zip(todo, _decode_all([keys[i] for i in todo], workers, progress, desc), strict=True):
            entries[i] = entry
            cache[keys[i]] = entry
        if cache_file is not None:
            _write_cache(cache_file, cache)
    hashes, signatures = [], []
    for i, entry in enumerate(entries):
        if entry is not None and entry[2] is not None:
            errors[i] = entry[2]
        ok = entry is not None and entry[2] is None
        hashes.append(int(entry[3], 16) if ok else 0)
        signatures.append(bytes.fromhex(entry[4]) if ok else b"")
    mask = [False] * len(keys)
    for i in todo:
        mask[i] = True
    return ImageScan(errors, hashes, signatures, decoded=len(todo), seconds=time.perf_counter() - start,
                     decoded_mask=mask)


def scan_split(df: pd.DataFrame, data_dir: str | os.PathLike[str], split: str, task: Task,
               cache_file: str | os.PathLike[str] | None = None, workers: int | None = None,
               progress: bool = False) -> tuple[ImageScan, list[str]]:
    """Scan the image of every row of `df`; return the scan and one problem line per bad image
    ('row N (line N+1), Id 'x': ...'; the image directory once when it is missing)."""
    scans, problems, whole = _scan_frames({split: df}, data_dir, task, cache_file, workers, progress)
    return whole, problems[split]


def check_dataset(data_dir: str | os.PathLike[str], task: Task, cache_file: str | os.PathLike[str] | None = None,
                  workers: int | None = None, progress: bool = False) -> DataCheck:
    """Validate train.csv and test.csv (schema.read_table) and decode the image of every row.

    Raises :class:`SchemaError` listing EVERY missing, empty, unreadable or truncated image of both splits,
    each with its CSV, row and Id.
    """
    data_dir = Path(data_dir)
    frames = {split: read_table(data_dir / f"{split}.csv", split, task) for split in SPLITS}
    scans, found, whole = _scan_frames(frames, data_dir, task, cache_file, workers, progress)
    problems = [f"{split}.csv {p}" for split in SPLITS for p in found[split]]
    if problems:
        raise SchemaError.from_problems(data_dir, problems, max_listed=None,
                                        note="fix or remove these images (and their rows) before training")
    return DataCheck(frames["train"], frames["test"], scans, whole.seconds)


# --- internals -------------------------------------------------------------------------------------


def _scan_frames(frames: dict[str, pd.DataFrame], data_dir: str | os.PathLike[str], task: Task,
                 cache_file: str | os.PathLike[str] | None, workers: int | None,
                 progress: bool) -> tuple[dict[str, ImageScan], dict[str, list[str]], ImageScan]:
    """One pass (one pool of workers) over the images of every split's rows: each split's scan and
    problems, and the whole pass."""
    problems: dict[str, list[str]] = {}
    paths, spans = [], {}
    for split, df in frames.items():
        missing_dir = missing_image_dir(data_dir, split, task)
        problems[split] = [f"image directory {missing_dir} not found"] if missing_dir is not None else []
        ids = df[task.id_column].astype(str).tolist() if missing_dir is None else []
        spans[split] = (len(paths), ids)
        paths += [task.image_file(data_dir, split, i) for i in ids]
    scan = scan_images(paths, cache_file, workers, progress, desc=f"decoding {'+'.join(frames)} images")
    scans = {}
    for split, (start, ids) in spans.items():
        stop = start + len(ids)
        errors = scan.errors[start:stop]
        scans[split] = ImageScan(errors, scan.hashes[start:stop], scan.signatures[start:stop],
                                 decoded=sum(scan.decoded_mask[start:stop]), decoded_mask=scan.decoded_mask[start:stop])
        problems[split] += [f"{where(i)}, {task.id_column} {ids[i]!r}: {err}" for i, err in enumerate(errors) if err]
    return scans, problems, scan


def _inspect(path: str) -> list:
    """[size, mtime_ns, error or None, hash hex, signature hex] of one file: the cache's entry.

    Size and mtime are read before decoding, so a file replaced meanwhile is decoded again next time.
    """
    try:
        st = os.stat(path)
    except OSError:  # removed since the caller's stat: said as such, and never matched by a later stat
        return [-1, -1, f"image {path} not found", None, None]
    try:
        h, sig = fingerprint(decode_image(path, THUMB_SIDE))
    except ImageDecodeError as exc:
        return [st.st_size, st.st_mtime_ns, str(exc), None, None]
    return [st.st_size, st.st_mtime_ns, None, f"{h:016x}", sig.hex()]


def _decode_all(paths: list[str], workers: int | None, progress: bool, desc: str):
    from tqdm import tqdm

    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    # A handful of files takes well under a second: no bar to clutter the log.
    bar = tqdm(total=len(paths), desc=desc, unit="img", disable=not progress or len(paths) < _MIN_FILES_FOR_WORKERS,
               mininterval=1.0, smoothing=0.1)
    try:
        if workers <= 1 or len(paths) < _MIN_FILES_FOR_WORKERS:
            for p in paths:
                yield _inspect(p)
                bar.update()
            return
        # spawn, not fork: the caller may have started TensorFlow's threads, and forking those can deadlock.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for entry in pool.map(_inspect, paths, chunksize=max(1, min(64, len(paths) // (8 * workers)))):
                yield entry
                bar.update()
    finally:
        bar.close()


def _read_cache(cache_file: str | os.PathLike[str] | None) -> dict[str, list]:
    """The cache's entries, or {} when there is none or it is not ours, of another rule, or unreadable."""
    if cache_file is None:
        return {}
    try:
        data = json.loads(Path(cache_file).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT or data.get("rule") != RULE:
        return {}
    images = data.get("images")
    if not isinstance(images, dict):
        return {}
    return {k: v for k, v in images.items() if isinstance(v, list) and len(v) == 5}


def _write_cache(cache_file: str | os.PathLike[str], images: dict[str, list]) -> None:
    # Compact: ~200 bytes a photo, 2 MB for the real 9,912.
    data = {"format": CACHE_FORMAT, "rule": RULE, "images": images}
    atomic_write_text(cache_file, json.dumps(data, separators=(",", ":")) + "\n")

