"""kaggle_io/bootstrap.py: what a Kaggle image runs before lresizervit is installed. Requirements read from
real wheels, the gaps between them and what is installed, the error lines, and installing shipped wheels
(and the wheels their own requirements need) without dependencies, in a throwaway virtualenv."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from lresizervit.cli import main
from lresizervit.kaggle_io import bootstrap as boot
from tests.conftest import ROOT

BOOTSTRAP = ROOT / "src" / "lresizervit" / "kaggle_io" / "bootstrap.py"


def make_wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> Path:
    """A real, installable pure-Python wheel holding one module `<name>_mod`."""
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    files = {
        f"{dist}_mod.py": f"VERSION = {version!r}\n",
        f"{info}/METADATA": "Metadata-Version: 2.1\n" f"Name: {name}\nVersion: {version}\n"
                            + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }

    def record(data: str) -> str:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data.encode()).digest()).rstrip(b"=").decode()
        return f"sha256={digest},{len(data.encode())}"

    files[f"{info}/RECORD"] = "".join(f"{p},{record(d)}\n" for p, d in files.items()) + f"{info}/RECORD,,\n"
    path = folder / f"{dist}-{version}-py3-none-any.whl"
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for p, d in files.items():
            zf.writestr(p, d)
    return path


def test_a_wheels_requirements_leave_out_extras_and_other_platforms(tmp_path):
    wheel = make_wheel(tmp_path, "demo-a", "1.0", ("numpy>=1", "pytest; extra == 'dev'",
                                                   "pywin32; platform_system == 'Windows'"))
    assert [str(r) for r in boot.wheel_requirements(wheel)] == ["numpy>=1"]
    with pytest.raises(ValueError, match="not a wheel"):
        (tmp_path / "x.whl").write_bytes(b"")
        zipfile.ZipFile(tmp_path / "x.whl", "w").close()
        boot.wheel_requirements(tmp_path / "x.whl")


def test_gaps_name_what_is_found_needed_and_shipped(tmp_path):
    numpy = metadata.version("numpy")
    reqs = [boot.Requirement(r) for r in ("numpy>=1", "numpy<1", "demo-absent>=2", "keras<3")]
    shipped = boot.find_wheels(tmp_path / "input")
    assert shipped == []
    make_wheel(tmp_path / "input" / "datasets" / "me" / "wheels", "demo-absent", "2.1")
    make_wheel(tmp_path / "input" / "competition" / "train", "demo-absent", "9.0")  # photo folders are not searched
    shipped = boot.find_wheels(tmp_path / "input")
    assert [(w.name, w.version) for w in shipped] == [("demo-absent", "2.1")]
    found = boot.gaps(reqs, shipped)
    assert [(str(g.requirement), g.found, g.wheel and g.wheel.version) for g in found] == [
        ("numpy<1", ("numpy", numpy), None), ("demo-absent>=2", None, "2.1"),
        ("keras<3", ("keras", metadata.version("keras")), None)]
    lines = [boot.gap_error(g, "under /kaggle/input") for g in found]
    assert lines[0].startswith(f"error: numpy {numpy} is installed; lresizervit needs numpy<1; no wheel of it in "
                               "that range was found under /kaggle/input: attach a dataset holding one")
    assert lines[1].startswith("error: demo-absent is not installed; lresizervit needs demo-absent>=2")
    assert "keras is built for its accelerator and is never replaced" in lines[2]


def test_an_experiment_needs_keras_hub_only_for_a_keras_hub_backbone(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "config.yaml").write_text("model:\n  backbone:\n    name: keras_hub:/kaggle/input/swin\n")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "config.yaml").write_text("name: keras_hub_like_name\nmodel:\n  backbone:\n    name: vit_b16\n")
    assert boot.uses_keras_hub(tmp_path / "a") and not boot.uses_keras_hub(tmp_path / "b")
    reqs = [boot.Requirement(r) for r in ("keras-hub>=0.29.1", "tensorboard>=2", "numpy")]
    assert [r.name for r in boot.needed(reqs, keras_hub=False, training=False)] == ["numpy"]
    assert [r.name for r in boot.needed(reqs, keras_hub=True, training=True)] == ["keras-hub", "tensorboard", "numpy"]


def test_the_runtime_is_printed_without_importing_a_framework():
    code = ("import sys, importlib.util\n"
            f"spec = importlib.util.spec_from_file_location('b', {str(BOOTSTRAP)!r})\n"
            "b = importlib.util.module_from_spec(spec); sys.modules['b'] = b; spec.loader.exec_module(b)\n"
            "print('\\n'.join(b.runtime_lines()))\n"
            "assert not {'tensorflow', 'keras', 'jax', 'lresizervit'} & set(sys.modules), sorted(sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert f"keras {metadata.version('keras')}" in out and f"tensorflow {metadata.version('tensorflow')}" in out
    assert "accelerators: none (CPU)" in out


CLOSE = """
import sys, importlib.util
spec = importlib.util.spec_from_file_location("lresizervit_bootstrap", sys.argv[1])
b = importlib.util.module_from_spec(spec); sys.modules[spec.name] = b; spec.loader.exec_module(b)
from pathlib import Path
wheels = b.find_wheels(Path(sys.argv[2]))
print("INSTALLED", b.close_gaps([b.Requirement(r) for r in sys.argv[3:]], wheels, "under " + sys.argv[2]))
import demo_a_mod, demo_b_mod
print("IMPORTED", demo_a_mod.VERSION, demo_b_mod.VERSION)
"""


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A bare virtualenv (pip only): nothing of this environment is visible in it."""
    root = tmp_path_factory.mktemp("bootstrap_venv")
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True, timeout=300)
    return root / "venv" / "bin" / "python"


def _close(venv: Path, shipped: Path, *reqs: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(venv), "-c", CLOSE, str(BOOTSTRAP), str(shipped), *reqs], capture_output=True,
                          text=True, timeout=300, env=env)


def test_shipped_wheels_and_the_wheels_they_need_are_installed_offline(venv, tmp_path):
    shipped = tmp_path / "input"
    make_wheel(shipped / "one", "demo-a", "1.0", ("demo-b>=2",))
    make_wheel(shipped / "two", "demo-b", "1.0")  # too old for demo-a
    make_wheel(shipped / "two", "demo-b", "2.3")
    proc = _close(venv, shipped, "demo-a>=1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "INSTALLED ['demo_a-1.0-py3-none-any.whl', 'demo_b-2.3-py3-none-any.whl']" in proc.stdout
    assert "IMPORTED 1.0 2.3" in proc.stdout


def test_a_shipped_wheel_whose_requirement_the_image_lacks_is_one_error_line(venv, tmp_path):
    shipped = tmp_path / "input"
    make_wheel(shipped, "demo-c", "1.0", ("demo-missing>=1",))
    proc = _close(venv, shipped, "demo-c")
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: demo-missing is not installed; demo-c 1.0 needs demo-missing>=1; no wheel of it in that range "
        f"was found under {shipped}: attach a dataset holding one, e.g. made with `pip download --no-deps "
        f"'demo-missing>=1'` where there is internet (`python -m lresizervit kaggle package` puts keras-hub's "
        f"beside the experiment)")


def test_env_reports_the_runtime_against_the_declared_range(capsys):
    assert main(["env", "--predict-only"]) == 0
    out = capsys.readouterr().out
    assert f"keras {metadata.version('keras')}" in out and "the runtime meets lresizervit's requirements" in out
    assert f"  keras-hub<0.30,>=0.29.1: {metadata.version('keras-hub')} ok" in out
    assert "keras backend tensorflow: CPU:0" in out
