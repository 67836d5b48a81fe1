"""The Kaggle round trip: the real `kaggle` client up to the network boundary, and the offline entry point.

No test here reaches Kaggle. The boundary is made hermetic with the proxy settings the client honours:
HTTPS_PROXY points at a closed port (nothing answers) or at a local socket that accepts and hangs up
(the probe passes, the client's own request then fails inside it). Credentials are fake and live in a
temp HOME / KAGGLE_CONFIG_DIR; the fake key must never appear in any output.
"""

import contextlib
import importlib.util
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pandas as pd
import pytest

import lresizervit
from lresizervit.cli import main
from lresizervit.inference.submission import validate_file
from lresizervit.kaggle_io.client import KaggleError
from lresizervit.kaggle_io.download import install_archive
from lresizervit.kaggle_io.package import default_slug, package_experiment, validate_metadata
from tests.conftest import copy_experiment
from tests.facts import META_COLUMNS, TASK

ROOT = Path(__file__).resolve().parents[1]
FAKE_KEY = "f4k3k3y0123456789abcdef0123456789"
IDS = ["0" * 31 + str(i) for i in range(1, 4)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def hang_up_proxy():
    """A local 'proxy' that accepts every connection and closes it at once."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.1)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield srv.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        srv.close()


def clean_env(tmp_path: Path, **extra: str) -> dict:
    """The test process's env without any Kaggle credentials or proxies, HOME in tmp."""
    drop = ("KAGGLE_", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "XDG_CONFIG_HOME")
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(drop)}
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env.update(HOME=str(home), NO_ALBUMENTATIONS_UPDATE="1", TF_CPP_MIN_LOG_LEVEL="2", **extra)
    return env


def cli(args, env, timeout=60):
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "lresizervit", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    return proc, time.perf_counter() - t0


def error_line(proc) -> str:
    """The one `error:` line, after checking there is nothing else wrong with the output."""
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def write_test_data(folder: Path) -> Path:
    """A test.csv of 3 rows and a valid submission for it."""
    folder.mkdir(parents=True, exist_ok=True)
    test = pd.DataFrame({"Id": IDS, **{c: [0, 1, 0] for c in META_COLUMNS}})
    test.to_csv(folder / "test.csv", index=False)
    pd.DataFrame({"Id": IDS, "Pawpularity": [30.5, 41.0, 77.25]}).to_csv(folder / "sub.csv", index=False)
    return folder


CREDENTIALS = {
    "env key": lambda tmp: {"KAGGLE_USERNAME": "alice", "KAGGLE_KEY": FAKE_KEY},
    "kaggle.json": lambda tmp: {"KAGGLE_CONFIG_DIR": str(kaggle_json(tmp))},
    "api token": lambda tmp: {"KAGGLE_API_TOKEN": FAKE_KEY},
}


def kaggle_json(tmp: Path) -> Path:
    folder = tmp / "kaggle_config"
    folder.mkdir(exist_ok=True)
    (folder / "kaggle.json").write_text(json.dumps({"username": "alice", "key": FAKE_KEY}))
    (folder / "kaggle.json").chmod(0o600)
    return folder


# --- download / submit: missing credentials, missing network ----------------------------------------


def test_without_credentials_download_and_submit_say_where_to_put_them(tmp_path):
    env = clean_env(tmp_path)
    data = write_test_data(tmp_path / "data")
    for args in (["kaggle", "download", "--dest", str(tmp_path / "in")],
                 ["kaggle", "submit", str(data / "sub.csv"), "-m", "x", "--test-csv", str(data / "test.csv")]):
        proc, seconds = cli(args, env)
        line = error_line(proc)
        assert line.startswith("error: no Kaggle credentials")
        assert "kaggle.json" in line and "KAGGLE_USERNAME" in line and "KAGGLE_KEY" in line
        assert "Authentication required" not in proc.stdout  # the client's own help text stays captured
        assert seconds < 10
    assert not (tmp_path / "in").exists()


@pytest.mark.parametrize("kind", sorted(CREDENTIALS))
def test_without_network_fail_fast_naming_it_and_never_show_the_key(tmp_path, kind):
    port = free_port()  # nothing listens there: like a machine with no route out
    env = clean_env(tmp_path, HTTPS_PROXY=f"http://user:proxypass@127.0.0.1:{port}", **CREDENTIALS[kind](tmp_path))
    data = write_test_data(tmp_path / "data")
    for args in (["kaggle", "download", "--dest", str(tmp_path / "in")],
                 ["kaggle", "submit", str(data / "sub.csv"), "-m", "x", "--test-csv", str(data / "test.csv")]):
        proc, seconds = cli(args, env)
        line = error_line(proc)
        assert line.startswith("error: no network: cannot reach api.kaggle.com:443")
        assert f"127.0.0.1:{port}" in line and "proxypass" not in line
        assert FAKE_KEY not in proc.stdout + proc.stderr
        assert seconds < 10
    assert not (tmp_path / "in").exists()


@pytest.mark.parametrize("kind", ["env key", "api token"])
def test_a_failure_inside_the_client_is_one_line_too(tmp_path, kind):
    """Past the probe, the client's own request fails (the proxy hangs up): still one line, no key."""
    data = write_test_data(tmp_path / "data")
    with hang_up_proxy() as port:
        env = clean_env(tmp_path, HTTPS_PROXY=f"http://127.0.0.1:{port}", **CREDENTIALS[kind](tmp_path))
        download, seconds = cli(["kaggle", "download", "--dest", str(tmp_path / "in")], env)
        submit, _ = cli(["kaggle", "submit", str(data / "sub.csv"), "-m", "x", "--test-csv",
                         str(data / "test.csv")], env)
    for proc in (download, submit):
        line = error_line(proc)
        # urllib3 calls it a ProxyError or a ConnectionError depending on when the socket closes
        assert line.startswith("error: no network: ") and "Error: " in line
        assert FAKE_KEY not in proc.stdout + proc.stderr
    # An access token is checked with Kaggle first; a legacy key is only sent with the request itself.
    step = "authenticating" if kind == "api token" else "downloading petfinder-pawpularity-score"
    assert f"{step} failed" in error_line(download)
    assert seconds < 10
    assert not (tmp_path / "in" / "petfinder-pawpularity-score").exists()
    assert not (tmp_path / "in" / ".petfinder-pawpularity-score.download").exists()  # nothing half-downloaded


def test_submit_checks_the_file_before_credentials(tmp_path):
    env = clean_env(tmp_path)
    data = write_test_data(tmp_path / "data")
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"Id": IDS, "Pawpularity": [30.5, 141.0, 77.25]}).to_csv(bad, index=False)
    proc = cli(["kaggle", "submit", str(bad), "-m", "x", "--test-csv", str(data / "test.csv")], env)[0]
    assert error_line(proc).startswith(f"error: {bad}: invalid submission")
    assert "row 2, column Pawpularity: 141.0 is outside [1, 100]" in proc.stderr  # the lines below it
    line = error_line(cli(["kaggle", "submit", str(data / "sub.csv"), "-m", "x", "--test-csv",
                           str(tmp_path / "nope" / "test.csv")], env)[0])
    assert "nope/test.csv: test.csv not found" in line and "--test-csv" in line


# --- download: the unzip into place ---------------------------------------------------------------


def test_install_archive_unzips_atomically(tmp_path):
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as zf:
        zf.writestr("test.csv", "Id\n")
        zf.writestr("test/a.jpg", b"\xff\xd8")
        zf.writestr("../escape.txt", "no")  # a hostile member name stays inside
    final = tmp_path / "input" / "comp"
    final.parent.mkdir()
    assert install_archive(good, final) == ["escape.txt", "test", "test.csv"]
    assert (final / "test" / "a.jpg").read_bytes() == b"\xff\xd8"
    assert not (tmp_path / "input" / "escape.txt").exists()

    bad = tmp_path / "bad.zip"
    bad.write_bytes(good.read_bytes()[:40])  # truncated: no central directory
    with pytest.raises(KaggleError, match="bad.zip: not a zip file"):
        install_archive(bad, final)
    assert (final / "test.csv").read_text() == "Id\n"  # the previous folder is untouched
    assert sorted(p.name for p in final.parent.iterdir()) == ["comp"]  # no temp folder left


# --- package ---------------------------------------------------------------------------------------


@pytest.fixture
def kaggle_home(tmp_path, monkeypatch):
    """Importing the client creates its config folder and, with a token set, authenticates: keep both
    away from the real HOME and the network."""
    for key in [k for k in os.environ if k.startswith("KAGGLE_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "kaggle_config"))


def test_metadata_is_checked_with_the_clients_reader(tmp_path, kaggle_home):
    meta = {"title": "LResizerViT demo", "id": "alice/lresizervit-demo", "licenses": [{"name": "CC0-1.0"}]}
    (tmp_path / "dataset-metadata.json").write_text(json.dumps(meta))
    assert validate_metadata(tmp_path)["id"] == "alice/lresizervit-demo"
    for change, message in [({"title": "short"}, "title 'short' must be between 6 and 50"),
                            ({"id": "alice/Bad_Slug"}, "Invalid slug: Bad_Slug"),
                            ({"id": "lresizervit-demo"}, "form of '{username}/{dataset-slug}'"),
                            ({"licenses": []}, "exactly one license")]:
        (tmp_path / "dataset-metadata.json").write_text(json.dumps({**meta, **change}))
        with pytest.raises(KaggleError, match=message) as info:
            validate_metadata(tmp_path)
        assert str(tmp_path / "dataset-metadata.json") in str(info.value)
    (tmp_path / "dataset-metadata.json").unlink()
    with pytest.raises(KaggleError, match="Metadata file not found"):
        validate_metadata(tmp_path)


def test_package_refuses_an_incomplete_experiment(tmp_path):
    from lresizervit.config import Config, save_config

    run_dir = tmp_path / "models" / "half"
    save_config(Config(name="half", output_dir=str(tmp_path / "models")), run_dir / "config.yaml")
    (run_dir / "fold_1").mkdir()
    (run_dir / "fold_1" / "metrics.json").write_text(json.dumps({"fold": 1, "n_folds": 3}))
    with pytest.raises(FileNotFoundError, match=r"folds \[0, 1, 2\] of 3 are not trained"):
        package_experiment(run_dir, dataset="alice/lresizervit-half")
    assert not (run_dir / "dataset-metadata.json").exists() and not list(run_dir.glob("*.whl"))
    with pytest.raises(FileNotFoundError, match="not an experiment folder"):
        package_experiment(tmp_path)
    with pytest.raises(KaggleError, match="'alice/slug/7': a dataset id is USER/SLUG"):
        package_experiment(run_dir, dataset="alice/slug/7")


def test_default_slug_is_a_valid_kaggle_slug():
    assert default_slug("vit_b16 learned@512") == "lresizervit-vit-b16-learned-512"
    assert len(default_slug("x" * 80)) == 50


# --- the offline entry point, fast refusals -----------------------------------------------------------


def test_inference_entry_point_says_what_is_missing(tmp_path):
    root = tmp_path / "input"
    write_test_data(root / "petfinder-pawpularity-score")
    cmd = [sys.executable, str(ROOT / "kaggle" / "inference.py"), "--input-root", str(root),
           "--out", str(tmp_path / "working" / "submission.csv")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "error: no experiment folder (config.yaml + fold_*)" in proc.stderr
    # An experiment, but two data folders, neither named like the competition: ambiguous.
    shutil.move(root / "petfinder-pawpularity-score", root / "copy")
    write_test_data(root / "other")
    (root / "exp" / "fold_0").mkdir(parents=True)
    (root / "exp" / "config.yaml").write_text("name: exp\n")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "cannot tell which folder holds the competition data" in proc.stderr
    assert str(root / "copy") in proc.stderr and str(root / "other") in proc.stderr
    assert not (tmp_path / "working" / "submission.csv").exists()


# --- a real tiny experiment: package it, then run the entry point against a /kaggle/input tree -------

CREATE_UP_TO_THE_NETWORK = """
import contextlib, io, sys
with contextlib.redirect_stdout(io.StringIO()):
    from kaggle.api.kaggle_api_extended import KaggleApi
import requests
api = KaggleApi()
api.authenticate()
for folder in sys.argv[1:]:
    try:
        api.dataset_create_new(folder, dir_mode="zip", quiet=True)
        print("CREATED?!")
    except requests.ConnectionError:
        print("REACHED_NETWORK")  # every check before the upload passed
    except ValueError as exc:
        print("REFUSED", exc)
"""


@pytest.fixture(scope="module")
def packaged(tiny_experiment, tmp_path_factory):
    """A copy of the session's real 2-fold tiny experiment, packaged with the CLI offline."""
    tmp = tmp_path_factory.mktemp("kaggle_exp") / "tree"
    copy_experiment(tiny_experiment, tmp)
    run_dir = tmp / "models" / "tiny"
    # Offline: an index or proxy that nothing answers, so any download attempt would fail the build.
    dead = f"http://127.0.0.1:{free_port()}"
    env = clean_env(tmp, KAGGLE_USERNAME="alice", PIP_INDEX_URL=f"{dead}/simple", HTTPS_PROXY=dead,
                    HTTP_PROXY=dead)
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
        for key in set(os.environ) - set(env):
            mp.delenv(key)
        for key, value in env.items():
            mp.setenv(key, value)
        # In this process (TensorFlow is loaded already); pip builds the wheel in a child that inherits env.
        # The notebook is to predict without TTA (the experiment trained with hflip): recorded in config.yaml.
        assert main(["kaggle", "package", str(tmp / "tiny.yaml"), "--tta", "none"]) == 0
    assert f"kaggle datasets create -p {run_dir} --dir-mode zip" in out.getvalue()
    assert "the notebook will predict with tta=none, svr=False" in out.getvalue()
    return tmp, run_dir, env


@pytest.mark.slow
def test_package_writes_metadata_the_client_accepts_and_a_wheel(packaged, tmp_path):
    tmp, run_dir, env = packaged
    meta = json.loads((run_dir / "dataset-metadata.json").read_text())
    assert meta["id"] == "alice/lresizervit-tiny" and meta["title"] == "LResizerViT tiny"
    assert meta["licenses"] == [{"name": "CC0-1.0"}] and "CV RMSE" in meta["description"]
    wheels = list(run_dir.glob("lresizervit-*.whl"))
    assert [w.name for w in wheels] == ["lresizervit-0.1.0-py3-none-any.whl"]
    with zipfile.ZipFile(wheels[0]) as zf:
        names = set(zf.namelist())
        assert {"lresizervit/cli.py", "lresizervit/kaggle_io/package.py", "lresizervit/net.py",
                "lresizervit/models/resizer.py"} <= names
        assert "Name: lresizervit" in zf.read("lresizervit-0.1.0.dist-info/METADATA").decode()
    assert (run_dir / "inference.py").read_bytes() == (ROOT / "kaggle" / "inference.py").read_bytes()
    bootstrap = ROOT / "src" / "lresizervit" / "kaggle_io" / "bootstrap.py"
    assert (run_dir / "lresizervit_bootstrap.py").read_bytes() == bootstrap.read_bytes()
    assert not list(run_dir.glob("keras_hub-*.whl"))  # a native backbone needs no keras-hub in the notebook

    # The client's own create command accepts the folder up to its first network call, and refuses a bad one.
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "dataset-metadata.json").write_text(json.dumps({**meta, "title": "short"}))
    client_env = {**env, "KAGGLE_KEY": FAKE_KEY}
    proc = subprocess.run([sys.executable, "-c", CREATE_UP_TO_THE_NETWORK, str(run_dir), str(bad)], env=client_env,
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout.splitlines() == ["REACHED_NETWORK",
                                        "REFUSED The dataset title must be between 6 and 50 characters"], proc.stderr


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


@pytest.mark.slow
def test_offline_entry_point_installs_the_wheel_and_writes_a_valid_submission(packaged, tmp_path):
    tmp, run_dir, env = packaged
    # /kaggle/input as a notebook sees it: the packaged dataset (one fold still zipped, as
    # `--dir-mode zip` uploads it) and the competition data.
    root = tmp_path / "kaggle" / "input"
    dataset = root / "lresizervit-tiny"
    shutil.copytree(run_dir, dataset)
    shutil.make_archive(str(dataset / "fold_1"), "zip", dataset / "fold_1")
    shutil.rmtree(dataset / "fold_1")
    comp = root / "petfinder-pawpularity-score"
    comp.mkdir()
    for name in ("train.csv", "test.csv", "sample_submission.csv", "train", "test"):
        (shutil.copytree if name in ("train", "test") else shutil.copy2)(tmp / "data" / name, comp / name)
    before = snapshot(root)

    # A Python that has TensorFlow & co. but not lresizervit: a venv reading this env's site-packages
    # through a .pth line (which does not run that folder's own .pth files, so no editable install).
    site_dir = Path(importlib.util.find_spec("tensorflow").origin).parents[1]
    editable = not str(Path(lresizervit.__file__).resolve()).startswith(str(site_dir.resolve()))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    purelib = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "deps.pth").write_text(f"{site_dir}\n")

    working = tmp_path / "kaggle" / "working"
    out = working / "submission.csv"
    # The TTA `package --tta none` recorded, not the one trained with: predict re-predicts the OOF and
    # caches it in the experiment's mirror.
    proc = subprocess.run([py, str(dataset / "inference.py"), "--input-root", str(root), "--out", str(out),
                           "--work-dir", str(working / "lresizervit")], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    if editable:
        assert f"installed {dataset / 'lresizervit-0.1.0-py3-none-any.whl'}" in proc.stdout
        assert list(Path(purelib).glob("lresizervit-0.1.0.dist-info"))
    assert f"competition data: {comp}" in proc.stdout
    assert f"runtime:\n  python {sys.version.split()[0]}" in proc.stdout and "accelerators: none (CPU)" in proc.stdout
    assert "the image meets lresizervit's requirements" in proc.stdout
    assert validate_file(out, comp / "test.csv", TASK) == 5
    mirror = working / "lresizervit" / "experiments" / "lresizervit-tiny"
    assert (mirror / "fold_0" / "model.weights.h5").is_symlink() and (mirror / "fold_1" / "model.weights.h5").is_file()
    assert [p.name for p in mirror.glob("oof_none.csv") if not p.is_symlink()]  # the cache landed in working
    assert snapshot(root) == before  # /kaggle/input is read-only on Kaggle: nothing may be written there


# --- the wheels an experiment ships (keras-hub's for a keras_hub: backbone) -----------------------------

def test_a_shipped_wheel_comes_from_wheels_then_the_cache_and_offline_says_where_to_put_it(tmp_path, monkeypatch):
    from lresizervit.kaggle_io.package import shipped_wheel

    name = "keras_hub-0.29.1-py3-none-any.whl"
    given, cache = tmp_path / "given", tmp_path / "cache"
    given.mkdir()
    monkeypatch.setenv("LRESIZERVIT_WHEEL_CACHE", str(cache))
    # Offline: an index nothing answers (a download would fail the test rather than reach PyPI).
    monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{free_port()}/simple")
    with pytest.raises(KaggleError) as err:
        shipped_wheel("keras-hub", "0.29.1", (given,))
    message = str(err.value)
    assert f"needs {name} beside it" in message and f"put that file in {cache}" in message
    assert f"pip download --no-deps keras-hub==0.29.1 -d {cache}" in message and str(given) in message
    cache.mkdir()
    (cache / name).write_bytes(b"cached")
    assert shipped_wheel("keras-hub", "0.29.1", (given,)) == cache / name
    (given / name).write_bytes(b"given")
    assert shipped_wheel("keras-hub", "0.29.1", (given,)) == given / name  # --wheels first
