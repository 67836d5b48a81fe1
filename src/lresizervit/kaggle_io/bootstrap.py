"""What a Kaggle image runs before lresizervit is installed: which libraries it has, which the experiment
needs, and installing only the shipped wheels that close the gap, never the image's TensorFlow, Keras or JAX.

Standard library only (plus the `packaging` every Kaggle image carries, or pip's own copy of it), and no
import of lresizervit: `kaggle package` and `kaggle train` copy this file beside the notebook's entry point
as `lresizervit_bootstrap.py`, which imports it from there. `python -m lresizervit env` uses it too.

The requirements are the lresizervit wheel's own `Requires-Dist` lines (pyproject.toml), so the range a
notebook checks is the range the code was released with. Two are conditional: keras-hub only for an
experiment with a `keras_hub:` backbone, tensorboard only for training.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

try:  # every Kaggle image has it (keras, keras-hub and TensorFlow depend on it)
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet
    from packaging.utils import canonicalize_name
    from packaging.version import InvalidVersion, Version
except ImportError:  # pragma: no cover - pip always carries a copy
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.specifiers import SpecifierSet
    from pip._vendor.packaging.utils import canonicalize_name
    from pip._vendor.packaging.version import InvalidVersion, Version

# Distributions that provide the same importable package: Kaggle's TPU image has tensorflow-cpu, which
# satisfies lresizervit's `tensorflow` requirement although pip does not know it.
ALIASES = {"tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow-tpu", "tf-nightly",
                          "tf-nightly-cpu")}
# What an image brings and a wheel of ours must never replace: they are built for its CUDA / TPU.
NEVER_REPLACED = ("tensorflow", "keras", "jax", "jaxlib")
# Printed first in every kernel's log, so a failure can be read against the runtime it happened in.
SHOWN = ("tensorflow", "keras", "keras-hub", "jax", "jaxlib", "libtpu", "numpy", "tensorflow-text", "kagglehub")


def installed_version(name: str) -> tuple[str, str] | None:
    """(distribution, version) installed for requirement name `name` (aliases included), or None."""
    for dist in ALIASES.get(canonicalize_name(name), (name,)):
        try:
            return dist, metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def accelerators() -> list[str]:
    """The GPUs and TPU chips this machine shows, without importing a framework (seconds, not minutes)."""
    found = []
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
            found += [line.strip() for line in out.splitlines() if line.startswith("GPU")]
        except (OSError, subprocess.SubprocessError):
            pass
    chips = sorted(p.name for p in Path("/dev").glob("accel*")) if Path("/dev").is_dir() else []
    if chips or os.environ.get("TPU_ACCELERATOR_TYPE"):
        found.append(f"TPU {os.environ.get('TPU_ACCELERATOR_TYPE', '')} ({len(chips)} chips at /dev/accel*)".replace(
            "  ", " "))
    return found


def runtime_lines() -> list[str]:
    """The runtime, one line each: Python, the libraries that matter, the accelerators."""
    lines = [f"python {sys.version.split()[0]} ({sys.executable})"]
    for name in SHOWN:
        got = installed_version(name)
        lines.append(f"{name} {got[1]}{'' if got[0] == name else f' ({got[0]})'}" if got else f"{name} -")
    lines.append("accelerators: " + (", ".join(accelerators()) or "none (CPU)"))
    return lines


# ------------------------------------------------------------------------------------------ requirements

def wheel_requirements(wheel: Path) -> list[Requirement]:
    """The unconditional requirements of a wheel (its METADATA's Requires-Dist without an `extra` marker)."""
    with zipfile.ZipFile(wheel) as zf:
        name = next((n for n in zf.namelist() if n.endswith(".dist-info/METADATA")), None)
        if name is None:
            raise ValueError(f"{wheel}: not a wheel (no .dist-info/METADATA)")
        text = zf.read(name).decode("utf-8")
    reqs = []
    for line in text.splitlines():
        if line.startswith("Requires-Dist:"):
            req = Requirement(line.split(":", 1)[1].strip())
            if req.marker is None or "extra" not in str(req.marker):
                if req.marker is None or req.marker.evaluate():
                    reqs.append(req)
    return reqs


def installed_requirements(dist: str = "lresizervit") -> list[Requirement]:
    """The unconditional requirements of an installed distribution."""
    reqs = []
    for line in metadata.requires(dist) or []:
        req = Requirement(line)
        if req.marker is None or ("extra" not in str(req.marker) and req.marker.evaluate()):
            reqs.append(req)
    return reqs


def needed(reqs: list[Requirement], keras_hub: bool, training: bool) -> list[Requirement]:
    """The requirements a run needs: keras-hub only with a keras_hub: backbone, tensorboard only to train."""
    skip = set()
    if not keras_hub:
        skip.add("keras-hub")
    if not training:
        skip.add("tensorboard")
    return [r for r in reqs if canonicalize_name(r.name) not in skip]


@dataclass(frozen=True)
class Wheel:
    path: Path
    name: str  # canonical
    version: str

    @classmethod
    def parse(cls, path: Path) -> Wheel | None:
        parts = path.name[:-len(".whl")].split("-") if path.name.endswith(".whl") else []
        return cls(path, canonicalize_name(parts[0]), parts[1]) if len(parts) >= 5 else None


def find_wheels(*folders: Path, max_depth: int = 6) -> list[Wheel]:
    """Every wheel under the folders (an attached dataset's mount is a few levels deep)."""
    found = []
    for folder in folders:
        if not folder.is_dir():
            continue
        base = len(folder.parts)
        for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
            here = Path(dirpath)
            found += [w for f in filenames if (w := Wheel.parse(here / f)) is not None]
            dirnames[:] = [] if len(here.parts) - base >= max_depth else sorted(
                d for d in dirnames if d not in ("train", "test"))  # a competition's photo folders
    return found


@dataclass(frozen=True)
class Gap:
    """One requirement the runtime does not meet: what is found (None: not installed), and the shipped
    wheel that meets it, if any."""

    requirement: Requirement
    found: tuple[str, str] | None
    wheel: Wheel | None
    by: str = "lresizervit"  # whose requirement it is

    def describe(self) -> str:
        name = self.requirement.name
        return f"{self.found[0]} {self.found[1]} is installed" if self.found else f"{name} is not installed"


def _satisfies(version: str, spec: SpecifierSet) -> bool:
    try:
        return spec.contains(Version(version), prereleases=True)
    except InvalidVersion:
        return False


def gaps(reqs: list[Requirement], wheels: list[Wheel], by: str = "lresizervit") -> list[Gap]:
    """The requirements not met by what is installed, each with the newest shipped wheel that meets it."""
    out = []
    for req in reqs:
        found = installed_version(req.name)
        if found and _satisfies(found[1], req.specifier):
            continue
        fits = [w for w in wheels if w.name == canonicalize_name(req.name) and _satisfies(w.version, req.specifier)]
        out.append(Gap(req, found, max(fits, key=lambda w: Version(w.version)) if fits else None, by))
    return out


def gap_error(gap: Gap, where: str) -> str:
    """One `error:` line: the package, the version found, the version needed, the wheel to attach."""
    name = canonicalize_name(gap.requirement.name)
    wanted = f"{gap.requirement.name}{gap.requirement.specifier}"
    if name in NEVER_REPLACED:
        fix = (f"this image's {gap.requirement.name} is built for its accelerator and is never replaced; use "
               f"an image (or an environment) whose {gap.requirement.name} is in that range")
    else:
        fix = (f"no wheel of it in that range was found {where}: attach a dataset holding one, e.g. made with "
               f"`pip download --no-deps '{wanted}'` where there is internet (`python -m lresizervit kaggle "
               f"package` puts keras-hub's beside the experiment)")
    return f"error: {gap.describe()}; {gap.by} needs {wanted}; {fix}"


def install(wheels: list[Wheel]) -> None:
    """pip install the wheels offline and without their dependencies: nothing else in the image moves."""
    if not wheels:
        return
    cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--disable-pip-version-check",
           "-q", *[str(w.path) for w in wheels]]
    if subprocess.run(cmd).returncode != 0:
        raise SystemExit(f"error: `{' '.join(cmd)}` failed (its output is above)")
    import importlib
    import site

    importlib.invalidate_caches()
    # pip may have fallen back to the user site, which is not on sys.path if it did not exist at start.
    user_site = site.getusersitepackages()
    if user_site not in sys.path and os.path.isdir(user_site):
        site.addsitedir(user_site)


# Requirements a shipped wheel declares but does not import for what lresizervit uses: keras-hub imports
# tensorflow-text only in its text tokenizers (Kaggle's TPU image has none, and it would pull a TensorFlow).
NOT_IMPORTED = {"keras-hub": ("tensorflow-text",)}


def close_gaps(reqs: list[Requirement], wheels: list[Wheel], where: str) -> list[str]:
    """Install the shipped wheels that meet the unmet requirements (never TensorFlow, Keras or JAX), and then
    those that the installed wheels' own requirements need; returns what was installed. Raises SystemExit
    with one `error:` line per requirement still unmet (a wheel installed without its dependencies must
    find them in the image)."""
    needs = [(req, "lresizervit") for req in reqs]
    installed: list[Wheel] = []
    while True:
        todo = [g for req, by in needs for g in gaps([req], wheels, by)]
        new = list(dict.fromkeys(g.wheel for g in todo if g.wheel is not None and g.wheel not in installed
                                 and canonicalize_name(g.requirement.name) not in NEVER_REPLACED))
        if not new:
            break
        install(new)
        installed += new
        for wheel in new:
            skip = NOT_IMPORTED.get(wheel.name, ())
            needs += [(req, f"{wheel.name} {wheel.version}") for req in wheel_requirements(wheel.path)
                      if canonicalize_name(req.name) not in skip]
    left = [g for req, by in needs for g in gaps([req], [], by)]
    if left:
        raise SystemExit("\n".join(gap_error(g, where) for g in left))
    return [w.path.name for w in installed]


# ------------------------------------------------------------------------------------------ experiments

_KERAS_HUB = re.compile(r"^\s*name:\s*['\"]?keras_hub:", re.MULTILINE)


def uses_keras_hub(experiment: Path) -> bool:
    """Whether an experiment folder's backbone is a keras-hub preset (read without YAML or lresizervit)."""
    config = experiment / "config.yaml"
    return config.is_file() and bool(_KERAS_HUB.search(config.read_text(encoding="utf-8")))
