"""The Kaggle round trip with the real `kaggle` client: download the competition data, package an
experiment as a Kaggle dataset (fold models + a wheel of this package, for an internet-off notebook),
submit a checked submission.

The client is fenced, because it was not written to be called from another program: `import kaggle`
prints an auth help text and runs `authenticate()`, which may call the network; `authenticate()` ends
with `exit(1)` when it finds no credentials; its HTTP calls have no timeout. So the credentials are
looked for locally first, the network is probed with a timeout, the client is imported lazily with its
stdout captured, and every failure becomes one `KaggleError` (a ValueError: the CLI prints one
`error: ...` line and exits 2). The API key is read by the client only: nothing here prints, logs or
copies it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

# Imported by the CLI parser: only the standard library at module level (io_utils brings pandas).

COMPETITION = "petfinder-pawpularity-score"
DEFAULT_TEST_CSV = f"input/{COMPETITION}/test.csv"
# Seconds to wait for a TCP connection to the Kaggle API (or the proxy) before saying there is no network.
NETWORK_TIMEOUT_S = 5.0
DEFAULT_LICENSE = "CC0-1.0"  # what `kaggle datasets init` writes
API_TOKEN_URL = "https://www.kaggle.com/settings/api"
WHEEL_GLOB = "lresizervit-*.whl"
# The offline entry point, copied into every packaged experiment so a notebook needs one line.
INFERENCE_SCRIPT = "inference.py"


class KaggleError(ValueError):
    """The Kaggle round trip cannot go on; the message says what is missing (credentials, network, file)."""


# --- credentials, network, the client --------------------------------------------------------------


def config_dir() -> Path:
    """The folder the client reads kaggle.json from (mirrors `KaggleApi.config_dir` in kaggle 2.x,
    computed here so that finding it imports nothing that could call the network)."""
    env = os.environ.get("KAGGLE_CONFIG_DIR")
    if env:
        return Path(env)
    home = Path(os.path.expanduser("~"))
    legacy = home / ".kaggle"
    if sys.platform.startswith("linux") and not legacy.exists():
        return Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config") / "kaggle"
    return legacy


def _config_file() -> Path:
    return config_dir() / "kaggle.json"


def _read_json_dict(path: Path) -> dict:
    """A JSON object file's values ({} when unreadable). For kaggle.json: presence checks and the user
    name only, never shown."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def kaggle_username() -> str | None:
    """KAGGLE_USERNAME, else the `username` of kaggle.json (the key in that file is not read)."""
    user = os.environ.get("KAGGLE_USERNAME")
    if user:
        return user
    name = _read_json_dict(_config_file()).get("username")
    return str(name) if name else None


def credentials_source() -> str | None:
    """Where the client will find credentials, in its own order (access token, legacy key, OAuth login),
    or None; reads files and the environment only."""
    try:
        from kagglesdk.kaggle_creds import KaggleCredentials
        from kagglesdk.kaggle_env import get_access_token_from_env
    except ImportError as exc:
        raise KaggleError(f"the kaggle client is not installed ({exc}); pip install kaggle") from None

    token, source = get_access_token_from_env()
    if token:
        return "KAGGLE_API_TOKEN" if source == "KAGGLE_API_TOKEN" else f"access token ({source})"
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "KAGGLE_USERNAME/KAGGLE_KEY"
    config = _config_file()
    values = _read_json_dict(config)
    user = os.environ.get("KAGGLE_USERNAME") or values.get("username")
    key = os.environ.get("KAGGLE_KEY") or values.get("key")
    if user and key:
        return str(config)
    oauth = Path(os.path.expanduser(KaggleCredentials.DEFAULT_CREDENTIALS_FILE))
    if oauth.is_file():
        return f"{oauth} (kaggle auth login)"
    return None


def missing_credentials_message() -> str:
    return (f"no Kaggle credentials: create an API token at {API_TOKEN_URL} and save it as {_config_file()} "
            f'({{"username": ..., "key": ...}}, chmod 600) or set KAGGLE_USERNAME and KAGGLE_KEY; a new-style '
            f"token goes in KAGGLE_API_TOKEN or ~/.kaggle/access_token (or run `kaggle auth login`)")


def _endpoint() -> tuple[str, int, str]:
    """(host, port, url) of the API the client will call (KAGGLE_API_ENVIRONMENT picks it)."""
    try:
        from kagglesdk.kaggle_env import get_endpoint, get_env

        url = get_endpoint(get_env())
    except Exception as exc:  # an unknown KAGGLE_API_ENVIRONMENT
        raise KaggleError(f"the kaggle client cannot tell which server to call: {exc}") from None
    parts = urllib.parse.urlsplit(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80), url


def check_network(timeout: float = NETWORK_TIMEOUT_S) -> None:
    """Open (and close) a TCP connection to the Kaggle API, or to the proxy requests would use for it.

    The client sets no timeout, so on a network that drops packets it would hang; this fails in
    `timeout` seconds instead, with the reason.
    """
    host, port, url = _endpoint()
    proxy = urllib.request.getproxies().get(urllib.parse.urlsplit(url).scheme)
    target = f"{host}:{port}"
    if proxy and not urllib.request.proxy_bypass(host):
        p = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = p.hostname or "", p.port or 80
        target += f" through the proxy {host}:{port}"  # host:port only: a proxy URL may hold a password
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        reason = f"no answer within {timeout:g} s" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise KaggleError(f"no network: cannot reach {target} ({reason})") from None


def _import_api_class():
    """KaggleApi, imported with its import-time help text captured."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            from kaggle.api.kaggle_api_extended import KaggleApi
    except ImportError as exc:
        raise KaggleError(f"the kaggle client is not installed ({exc}); pip install kaggle") from None
    except OSError as exc:  # it creates its config folder when imported
        raise KaggleError(f"the kaggle client cannot set up its config folder: {exc}") from None
    return KaggleApi


def connect():
    """An authenticated KaggleApi, after checking credentials exist and the network answers."""
    source = credentials_source()
    if source is None:
        raise KaggleError(missing_credentials_message())
    config = _config_file()
    if source == str(config) and os.name != "nt" and config.stat().st_mode & 0o044:
        print(f"warning: {config} is readable by other users; chmod 600 it", file=sys.stderr)
    check_network()
    api = _import_api_class()()
    try:
        # Captured: on failure it prints a generic help text, ours says what was looked for.
        with contextlib.redirect_stdout(io.StringIO()):
            api.authenticate()
    except SystemExit:
        raise KaggleError(f"the kaggle client did not accept the credentials from {source}; "
                          + missing_credentials_message()) from None
    except Exception as exc:
        raise _client_error(exc, "authenticating", None) from None
    return api


def _client_error(exc: BaseException, what: str, competition: str | None) -> KaggleError:
    """One line for a failure inside the client (it raises requests' exceptions, ValueError, SystemExit)."""
    import requests

    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return KaggleError(f"no network: {what} failed: {type(exc).__name__}: {_first_line(exc)}")
    if isinstance(exc, requests.HTTPError):
        status = exc.response.status_code if exc.response is not None else None
        hint = {
            401: "the credentials were refused: check the key or token (and KAGGLE_USERNAME) is current",
            403: (f"forbidden: accept the rules of the competition with this account first "
                  f"(https://www.kaggle.com/competitions/{competition}/rules)" if competition
                  else "forbidden for this account"),
            404: f"not found: check the competition name {competition!r}" if competition else "not found",
            429: "rate limited by Kaggle: wait and try again",
        }.get(status, "Kaggle answered with an error")
        return KaggleError(f"{what} failed (HTTP {status}): {hint}; Kaggle said: {_first_line(exc)}")
    return KaggleError(f"{what} failed inside the kaggle client: {type(exc).__name__}: {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --- download --------------------------------------------------------------------------------------


def install_archive(archive: Path, final: Path) -> list[str]:
    """Unzip `archive` into a temp folder beside `final`, then rename it into place (replacing an
    existing `final` only once the new one is complete); returns the top-level names."""
    from lresizervit.io_utils import temp_path

    tmp = temp_path(final)
    try:
        with zipfile.ZipFile(archive) as zf:
            # extractall drops '..' and absolute prefixes (nothing lands outside tmp) and checks each CRC.
            zf.extractall(tmp)
    except zipfile.BadZipFile as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise KaggleError(f"{archive}: not a zip file ({exc}); delete it and download again") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = temp_path(final) if final.exists() else None
    if old is not None:
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return sorted(p.name for p in final.iterdir())


def download_competition(competition: str = COMPETITION, dest: str | os.PathLike = "input",
                         force: bool = False) -> Path:
    """Competition files into `<dest>/<competition>/`, unzipped. An interrupted download resumes from
    `<dest>/.<competition>.download/` (the client resumes partial files); that folder goes once unzipped."""
    final = Path(dest) / competition
    if final.exists() and not force:
        print(f"{final}: exists; kept (use --force to download it again)")
        return final
    api = connect()
    partial = Path(dest) / f".{competition}.download"
    partial.mkdir(parents=True, exist_ok=True)
    try:
        api.competition_download_files(competition, path=str(partial), force=False, quiet=False, unzip=False)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # SystemExit included: the client must not end our process
        with contextlib.suppress(OSError):
            partial.rmdir()  # only when empty: a partial file stays, the next run resumes it
        raise _client_error(exc, f"downloading {competition}", competition) from None
    archives = sorted(partial.glob("*.zip"))
    if not archives:
        found = ", ".join(p.name for p in partial.iterdir()) or "nothing"
        raise KaggleError(f"{partial}: the download left no zip file ({found})")
    names = install_archive(archives[0], final)
    shutil.rmtree(partial, ignore_errors=True)
    shown = ", ".join(names[:8]) + (f", ... ({len(names)} entries)" if len(names) > 8 else "")
    print(f"wrote {final}: {shown}")
    return final


# --- package ---------------------------------------------------------------------------------------


def resolve_experiment(exp: str | os.PathLike) -> Path:
    """`models/<exp>/` from an experiment folder (holding config.yaml) or a config YAML."""
    path = Path(exp)
    if path.is_dir():
        if not (path / "config.yaml").is_file():
            raise FileNotFoundError(f"{path}: not an experiment folder (no config.yaml); train it first")
        return path
    if path.is_file():
        from lresizervit.config import load_config

        run_dir = load_config(path).run_dir
        if not (run_dir / "config.yaml").is_file():
            raise FileNotFoundError(f"{run_dir}: no trained experiment for {path} (run bash train_folds.sh {path})")
        return run_dir
    raise FileNotFoundError(f"{path}: no such experiment folder or config file")


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
    api = _import_api_class()()
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


def package_experiment(exp: str | os.PathLike, dataset: str | None = None, title: str | None = None,
                       license_name: str = DEFAULT_LICENSE, predict_settings: dict | None = None) -> dict:
    """Make `models/<exp>/` uploadable as is: check every fold is trained, build the wheel beside the
    weights, copy the offline entry point, write and validate `dataset-metadata.json`.

    `predict_settings` (e.g. `{"tta": "flip_zoom", "svr": True}`) are written into the experiment's
    `config.yaml` `predict` section, which is what `predict <folder>`, and so the notebook, uses.
    """
    from lresizervit.config import save_config
    from lresizervit.inference.ensemble import svr_file
    from lresizervit.inference.predict import fold_models
    from lresizervit.io_utils import atomic_write_bytes, atomic_write_json
    from lresizervit.training.trainer import load_run_config

    if dataset is not None and dataset.count("/") > 1:
        # The client would take a third part as a version and silently drop it.
        raise KaggleError(f"--dataset {dataset!r}: a dataset id is USER/SLUG (or SLUG), one '/' at most")
    run_dir = resolve_experiment(exp)
    models = fold_models(run_dir)  # an error naming the missing folds: a partial upload scores differently
    cfg = load_run_config(run_dir, tuple(f"predict.{k}={v}" for k, v in (predict_settings or {}).items()))
    meta_path = run_dir / "dataset-metadata.json"
    previous = _read_json_dict(meta_path) if meta_path.is_file() else {}

    if dataset and "/" in dataset:
        ref = dataset
    elif dataset is None and previous.get("id"):
        ref = previous["id"]  # an id set (or edited) earlier is kept when repackaging
    else:
        user = kaggle_username() or (previous.get("id", "").split("/")[0] or None)
        if not user:
            raise KaggleError(f"no Kaggle user name for the dataset id: pass --dataset USER/SLUG, set "
                              f"KAGGLE_USERNAME, or put a \"username\" in {_config_file()}")
        ref = f"{user}/{dataset or default_slug(cfg.name)}"
    title = title or previous.get("title") or f"LResizerViT {cfg.name}"[:50]
    cv_path = run_dir / "cv.json"
    cv = json.loads(cv_path.read_text()) if cv_path.is_file() else {}
    score = f" CV RMSE {cv['cv_rmse']:.3f} over {cv['n_folds']} folds." if "cv_rmse" in cv else ""
    description = (
        f"Fold models of the LResizerViT experiment `{cfg.name}` ({len(models)} folds, resizer "
        f"{cfg.model.resizer.mode} {cfg.data.image_size} -> {cfg.model.resizer.target_size} px, backbone "
        f"{cfg.model.backbone.name}).{score}\n\n"
        f"Holds `config.yaml`, `fold_*/model.keras` and a `lresizervit-*.whl` (this code, installed offline). "
        f"In an internet-off notebook with this dataset and the competition data attached, "
        f"`!python /kaggle/input/<this dataset>/{INFERENCE_SCRIPT}` writes /kaggle/working/submission.csv."
    )
    meta = {**previous, "title": title, "id": ref, "licenses": [{"name": license_name}],
            "description": description}
    with tempfile.TemporaryDirectory() as tmp:  # a bad id or title fails before the wheel is built
        atomic_write_json(Path(tmp) / "dataset-metadata.json", meta)
        validate_metadata(tmp, shown=run_dir)

    wheel = build_wheel(run_dir)
    if predict_settings:
        save_config(cfg, run_dir / "config.yaml")  # predict.* only: training keys are unchanged
    script = source_root() / "kaggle" / INFERENCE_SCRIPT
    if script.is_file():
        atomic_write_bytes(run_dir / INFERENCE_SCRIPT, script.read_bytes())
    atomic_write_json(meta_path, meta)
    validate_metadata(run_dir)
    size = sum(p.stat().st_size for p in run_dir.rglob("*") if p.is_file())
    heads = all((m.parent / svr_file(cfg.predict.svr_c)).is_file() for m in models)
    return {"run_dir": run_dir, "id": ref, "title": title, "wheel": wheel, "folds": len(models),
            "bytes": size, "predict": cfg.predict, "svr_heads_saved": heads}


# --- submit ----------------------------------------------------------------------------------------


def submit(file: str | os.PathLike, message: str, competition: str = COMPETITION,
           test_csv: str | os.PathLike = DEFAULT_TEST_CSV, kernel: str | None = None,
           kernel_version: int | None = None) -> str:
    """Check the submission against test.csv, then submit it (as a file, or as the output of a kernel
    for a code competition); returns Kaggle's answer."""
    from lresizervit.inference.submission import validate_file

    if not message.strip():
        raise KaggleError("the submission message (-m) is empty")
    if not Path(test_csv).is_file():
        raise FileNotFoundError(f"{test_csv}: test.csv not found, so {file} cannot be checked before it is "
                                f"submitted (pass --test-csv, or download the data: python -m lresizervit "
                                f"kaggle download)")
    n = validate_file(file, test_csv)
    print(f"{file}: valid ({n} rows)")
    api = connect()
    try:
        # Not captured: the client prints the upload's progress and, on failure, its reason.
        if kernel:
            response = api.competition_submit_code(Path(file).name, message, competition, kernel=kernel,
                                                   kernel_version=kernel_version, quiet=True)
        else:
            response = api.competition_submit(str(file), message, competition, quiet=False)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        raise _client_error(exc, f"submitting to {competition}", competition) from None
    answer = getattr(response, "message", "") or ""
    if answer == getattr(api, "COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE", None):
        raise KaggleError(f"submitting to {competition} failed: {answer}")
    return answer or "submitted"


# --- CLI -------------------------------------------------------------------------------------------


def cmd_download(args) -> None:
    download_competition(args.competition, args.dest, force=args.force)


def cmd_package(args) -> None:
    given = {"tta": args.tta, "svr": args.svr, "svr_c": args.svr_c}
    info = package_experiment(args.exp, dataset=args.dataset, title=args.title, license_name=args.license,
                              predict_settings={k: v for k, v in given.items() if v is not None})
    run_dir, pred = info["run_dir"], info["predict"]
    print(f"wrote {run_dir / 'dataset-metadata.json'} (id {info['id']}, title {info['title']!r}) and "
          f"{info['wheel'].name}; {info['folds']} folds, {info['bytes'] / 2**20:.1f} MiB in all")
    print(f"the notebook will predict with tta={pred.tta}, svr={pred.svr}" + (f" (C={pred.svr_c:g})" if pred.svr
          else "") + f": the predict section of {run_dir / 'config.yaml'} (change it with --tta / --svr)")
    if pred.svr and not info["svr_heads_saved"]:
        print(f"note: no saved SVR heads for C={pred.svr_c:g}: the notebook will fit them from the training "
              f"images; run `python predict.py {run_dir} --svr` here first to ship them")
    print(f"upload:  kaggle datasets create -p {run_dir} --dir-mode zip     "
          f"(a new version: kaggle datasets version -p {run_dir} --dir-mode zip -m MSG)")


def cmd_submit(args) -> None:
    answer = submit(args.file, args.message, args.competition, args.test_csv, kernel=args.kernel,
                    kernel_version=args.kernel_version)
    print(f"{args.file} -> {args.competition}: {answer}")


def add_subparsers(sub) -> None:
    """`python -m lresizervit kaggle {download,package,submit}`."""
    kp = sub.add_parser("kaggle", help="download the data, package an experiment as a dataset, submit")
    ksub = kp.add_subparsers(dest="kaggle_command", required=True)

    sp = ksub.add_parser("download", help="competition files into DEST/<competition>/, unzipped")
    sp.add_argument("--competition", default=COMPETITION)
    sp.add_argument("--dest", default="input", help="parent folder (default: input)")
    sp.add_argument("--force", action="store_true", help="download again and replace an existing folder")
    sp.set_defaults(func=cmd_download)

    sp = ksub.add_parser("package", help="write dataset-metadata.json and a wheel into models/<exp>/")
    sp.add_argument("exp", metavar="EXP_DIR_OR_CONFIG", help="models/<exp>/ or the experiment's config YAML")
    sp.add_argument("--dataset", default=None,
                    help="USER/SLUG or SLUG (default: KAGGLE_USERNAME or kaggle.json's username / lresizervit-<exp>)")
    sp.add_argument("--title", default=None, help="dataset title, 6-50 characters (default: LResizerViT <exp>)")
    sp.add_argument("--license", default=DEFAULT_LICENSE, help=f"dataset license name (default {DEFAULT_LICENSE})")
    sp.add_argument("--tta", default=None, help="predict.tta the notebook uses: none, hflip, flip_zoom")
    sp.add_argument("--svr", action=argparse.BooleanOptionalAction, default=None,
                    help="whether the notebook adds the SVR heads (predict.svr)")
    sp.add_argument("--svr-c", type=float, default=None, help="predict.svr_c the notebook uses")
    sp.set_defaults(func=cmd_package)

    sp = ksub.add_parser("submit", help="check a submission against test.csv, then submit it")
    sp.add_argument("file")
    sp.add_argument("-m", "--message", required=True)
    sp.add_argument("--competition", default=COMPETITION)
    sp.add_argument("--test-csv", default=DEFAULT_TEST_CSV, help=f"checked against (default {DEFAULT_TEST_CSV})")
    sp.add_argument("--kernel", default=None, metavar="OWNER/NOTEBOOK",
                    help="code competition: submit this notebook's output file named like FILE")
    sp.add_argument("--kernel-version", type=int, default=None)
    sp.set_defaults(func=cmd_submit)


