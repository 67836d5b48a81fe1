"""What `kaggle train` and `kaggle infer` ask of the Kaggle service, through the kaggle client's Python API,
each answer checked where the client's CLI would print and carry on (docs/kaggle_api_notes.md):

- a dataset created or versioned, then waited for until it is `ready` (a push that attaches a dataset still
  processing runs without it);
- a kernel pushed, then its answer's `error` and every `invalid_*_sources` list checked (the service drops
  a source it cannot find and says so only there; the CLI never prints the model list);
- the accelerator quota;
- a kernel waited for with a progress line, and its output downloaded.

Every failure is one `KaggleError` naming what to do. `sleep` and `now` are parameters so the tests run
against a fake of the service without waiting.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lresizervit.kaggle_io.client import KaggleError, client_error

# kernel-metadata.json's machine_shape for each accelerator (kaggle 2.x; P100 and TPU v3-8 are retired).
MACHINE_SHAPES = {"gpu": "NvidiaTeslaT4", "tpu": "TpuV5E8"}
DATASET_READY = "ready"
DATASET_FAILED = ("failed", "deleted")
KERNEL_DONE = ("complete", "error", "cancel_requested", "cancel_acknowledged")


def slugify(text: str, limit: int = 50) -> str:
    """Kaggle's slug of a title: lower case, runs of other characters to one '-'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].rstrip("-")


def _call(what: str, fn, *args, competition: str | None = None, **kwargs):
    try:
        return fn(*args, **kwargs)
    except KeyboardInterrupt:
        raise
    except KaggleError:
        raise
    except BaseException as exc:
        raise client_error(exc, what, competition) from None


# ------------------------------------------------------------------------------------------------ datasets

def dataset_exists(api, ref: str) -> bool:
    import requests

    try:
        api.dataset_status(ref)
    except requests.HTTPError as exc:
        if exc.response is not None and exc.response.status_code == 404:
            return False
        raise client_error(exc, f"looking up the dataset {ref}", None) from None
    except BaseException as exc:
        raise client_error(exc, f"looking up the dataset {ref}", None) from None
    return True


def publish_dataset(api, folder: Path, ref: str, notes: str, sleep: Callable[[float], None] = time.sleep,
                    poll_s: float = 10.0, timeout_s: float = 1800.0, ignore: list[str] | None = None) -> str:
    """Create the private dataset `ref` from `folder` (its dataset-metadata.json names it), or a new version
    of it, sub-folders uploaded as zips (the client skips them otherwise) and `ignore` (the client's glob
    patterns) left out; then wait until the service says it is ready. Returns "created" or "versioned"."""
    if dataset_exists(api, ref):
        answer = _call(f"versioning the dataset {ref}", api.dataset_create_version, str(folder), notes,
                       quiet=True, dir_mode="zip", ignore_patterns=ignore)
        done = "versioned"
    else:
        answer = _call(f"creating the dataset {ref}", api.dataset_create_new, str(folder), public=False,
                       quiet=True, dir_mode="zip", ignore_patterns=ignore)
        done = "created"
    error = getattr(answer, "error", "") or ""
    status = (getattr(answer, "status", "") or "").lower()
    if error or (status and status != "ok"):
        raise KaggleError(f"{done[:-1]}ing the dataset {ref} failed: {error or status}")
    wait_for_dataset(api, ref, sleep, poll_s, timeout_s)
    return done


def wait_for_dataset(api, ref: str, sleep: Callable[[float], None] = time.sleep, poll_s: float = 10.0,
                     timeout_s: float = 1800.0) -> None:
    """Until `ref`'s newest version is ready: a kernel pushed before that would not see it."""
    waited = 0.0
    while True:
        status = str(_call(f"reading the status of the dataset {ref}", api.dataset_status, ref)).lower()
        if status == DATASET_READY:
            return
        if status in DATASET_FAILED:
            raise KaggleError(f"the dataset {ref} is {status} on Kaggle: its files were not accepted; see "
                              f"https://www.kaggle.com/datasets/{ref}")
        if waited >= timeout_s:
            raise KaggleError(f"the dataset {ref} is still {status!r} after {waited:.0f} s; try again later")
        print(f"dataset {ref}: {status}, waiting", flush=True)
        sleep(poll_s)
        waited += poll_s


def write_dataset_metadata(folder: Path, ref: str, title: str, description: str) -> None:
    from lresizervit.io_utils import atomic_write_json
    from lresizervit.kaggle_io.package import DEFAULT_LICENSE, validate_metadata

    atomic_write_json(folder / "dataset-metadata.json", {"id": ref, "title": title[:50], "description": description,
                                                         "licenses": [{"name": DEFAULT_LICENSE}]})
    validate_metadata(folder)


# ------------------------------------------------------------------------------------------------- kernels

@dataclass(frozen=True)
class KernelSpec:
    """One kernel to push: its folder (script + kernel-metadata.json) and what it runs on."""

    ref: str
    title: str
    folder: Path
    code_file: str
    accelerator: str | None  # "gpu", "tpu" or None (CPU)
    internet: bool
    datasets: tuple[str, ...] = ()
    competitions: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    kernels: tuple[str, ...] = ()

    def metadata(self) -> dict:
        """kernel-metadata.json: every field written, `enable_internet` always (the client sends true when
        it is missing), never a `docker_image` (one silently moves a TPU request onto the CPU image)."""
        meta = {"id": self.ref, "title": self.title, "code_file": self.code_file, "language": "python",
                "kernel_type": "script", "is_private": True, "enable_gpu": self.accelerator == "gpu",
                "enable_tpu": self.accelerator == "tpu", "enable_internet": self.internet,
                "dataset_sources": list(self.datasets), "competition_sources": list(self.competitions),
                "kernel_sources": list(self.kernels), "model_sources": list(self.models)}
        if self.accelerator:
            meta["machine_shape"] = MACHINE_SHAPES[self.accelerator]
        return meta

    def write(self, script: str) -> Path:
        from lresizervit.io_utils import atomic_write_json, atomic_write_text

        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.folder / self.code_file, script)
        atomic_write_json(self.folder / "kernel-metadata.json", self.metadata())
        return self.folder


INVALID = (("invalid_dataset_sources", "dataset"), ("invalid_competition_sources", "competition"),
           ("invalid_kernel_sources", "notebook"), ("invalid_model_sources", "Kaggle Model"))


def push_kernel(api, spec: KernelSpec) -> tuple[int, str]:
    """Push `spec.folder`; returns (version, URL). An error in the answer, or any source the service
    dropped, is a KaggleError: a kernel that runs without its inputs would fail hours later."""
    answer = _call(f"pushing the kernel {spec.ref}", api.kernels_push, str(spec.folder))
    error = getattr(answer, "error", "") or ""
    if error:
        raise KaggleError(f"pushing the kernel {spec.ref} failed: Kaggle said: {error}")
    dropped = [f"{kind} {source}" for field, kind in INVALID for source in getattr(answer, field, None) or []]
    if dropped:
        raise KaggleError(f"the kernel {spec.ref} was pushed, but Kaggle dropped these inputs it cannot find or "
                          f"you cannot read: {', '.join(dropped)} (a competition needs its rules accepted, a "
                          f"dataset must exist and be ready, a Kaggle Model handle must be owner/model/framework/"
                          f"variation/version); the kernel would run without them: fix them and push again")
    return int(getattr(answer, "version_number", 0) or 0), str(getattr(answer, "url", "") or "")


def _hours(value) -> float:
    """A quota duration (kagglesdk gives a timedelta, or the wire's "<seconds>s") in hours."""
    if hasattr(value, "total_seconds"):
        return value.total_seconds() / 3600
    text = str(value or "0s").rstrip("s")
    try:
        return float(text) / 3600
    except ValueError:
        return 0.0


def quota_left(api, accelerator: str) -> tuple[float, float]:
    """(hours left, hours a week) of the accelerator's quota."""
    answer = _call("reading the accelerator quota", api.quota_view)
    quota = getattr(answer, f"{accelerator}_quota", None)
    total = _hours(getattr(quota, "total_time_allowed", 0))
    return max(0.0, total - _hours(getattr(quota, "time_used", 0))), total


def _status_name(answer) -> tuple[str, str]:
    status = getattr(answer, "status", "")
    name = getattr(status, "name", str(status)).lower()
    return name.replace("kernelworkerstatus.", ""), str(getattr(answer, "failure_message", "") or "")


def log_tail(api, ref: str, folder: Path, lines: int = 1) -> list[str]:
    """The last lines of the kernel's log, as the service has it now (its output files are not fetched)."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        _call(f"reading the log of {ref}", api.kernels_output, ref, str(folder), file_pattern=r"^$", force=True)
    except KaggleError:
        return []
    log = folder / f"{ref.split('/')[-1]}.log"
    if not log.is_file():
        return []
    text = log.read_text(errors="replace")
    try:  # Kaggle's log is a JSON list of {stream_name, time, data}; older ones plain text
        entries = json.loads(text)
        text = "".join(e.get("data", "") for e in entries if isinstance(e, dict))
    except ValueError:
        pass
    return [line for line in text.splitlines() if line.strip()][-lines:]


def wait_for_kernel(api, ref: str, version: int | None, scratch: Path, sleep=time.sleep, now=time.monotonic,
                    poll_s: float = 60.0, timeout_s: float = 13 * 3600.0) -> None:
    """Poll until the kernel's run ends, one progress line per poll (state, elapsed, the log's last line);
    an error, a cancel or a timeout is a KaggleError with the log's last lines."""
    target = f"{ref}/{version}" if version else ref
    start = now()
    while True:
        state, failure = _status_name(_call(f"reading the status of {target}", api.kernels_status, target))
        elapsed = now() - start
        tail = log_tail(api, ref, scratch)
        print(f"{ref} v{version or '?'}: {state}, {elapsed / 60:.0f} min" + (f"  | {tail[-1]}" if tail else ""),
              flush=True)
        if state == "complete":
            return
        if state in KERNEL_DONE:
            last = log_tail(api, ref, scratch, lines=8)
            raise KaggleError(f"the kernel {ref} v{version} ended: {state}"
                              + (f" ({failure})" if failure else "") + "; its log ends: "
                              + (" | ".join(last) if last else "(no log)")
                              + f"; see https://www.kaggle.com/code/{ref}")
        if elapsed >= timeout_s:
            raise KaggleError(f"the kernel {ref} v{version} is still {state} after {elapsed / 3600:.1f} h; "
                              f"collect it later with --collect")
        sleep(poll_s)


def download_output(api, ref: str, folder: Path) -> list[Path]:
    """The kernel's /kaggle/working as its last run left it, into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    paths, _ = _call(f"downloading the output of {ref}", api.kernels_output, ref, str(folder), force=True)
    return [Path(p) for p in paths]
