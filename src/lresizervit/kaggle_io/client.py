"""The kaggle client, fenced: where its credentials are, whether its server answers, the client itself
imported and authenticated with its output captured, and its failures turned into one `KaggleError`."""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from pathlib import Path

from lresizervit.net import unreachable

API_TOKEN_URL = "https://www.kaggle.com/settings/api"


class KaggleError(ValueError):
    """The Kaggle round trip cannot go on; the message says what is missing (credentials, network, file)."""


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


def config_file() -> Path:
    return config_dir() / "kaggle.json"


def read_json_dict(path: Path) -> dict:
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
    name = read_json_dict(config_file()).get("username")
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
    config = config_file()
    values = read_json_dict(config)
    user = os.environ.get("KAGGLE_USERNAME") or values.get("username")
    key = os.environ.get("KAGGLE_KEY") or values.get("key")
    if user and key:
        return str(config)
    oauth = Path(os.path.expanduser(KaggleCredentials.DEFAULT_CREDENTIALS_FILE))
    if oauth.is_file():
        return f"{oauth} (kaggle auth login)"
    return None


def missing_credentials_message() -> str:
    return (f"no Kaggle credentials: create an API token at {API_TOKEN_URL} and save it as {config_file()} "
            f'({{"username": ..., "key": ...}}, chmod 600) or set KAGGLE_USERNAME and KAGGLE_KEY; a new-style '
            f"token goes in KAGGLE_API_TOKEN or ~/.kaggle/access_token (or run `kaggle auth login`)")


def api_url() -> str:
    """The URL of the API the client will call (KAGGLE_API_ENVIRONMENT picks it)."""
    try:
        from kagglesdk.kaggle_env import get_endpoint, get_env

        return get_endpoint(get_env())
    except Exception as exc:  # an unknown KAGGLE_API_ENVIRONMENT
        raise KaggleError(f"the kaggle client cannot tell which server to call: {exc}") from None


def check_network() -> None:
    """The client sets no timeout, so on a network that drops packets it would hang; this fails within
    the probe's timeout instead, with the reason."""
    why = unreachable(api_url())
    if why is not None:
        raise KaggleError(f"no network: {why}")


def import_api_class():
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
    config = config_file()
    if source == str(config) and os.name != "nt" and config.stat().st_mode & 0o044:
        print(f"warning: {config} is readable by other users; chmod 600 it", file=sys.stderr)
    check_network()
    api = import_api_class()()
    try:
        # Captured: on failure it prints a generic help text, ours says what was looked for.
        with contextlib.redirect_stdout(io.StringIO()):
            api.authenticate()
    except SystemExit:
        raise KaggleError(f"the kaggle client did not accept the credentials from {source}; "
                          + missing_credentials_message()) from None
    except Exception as exc:
        raise client_error(exc, "authenticating", None) from None
    return api


def client_error(exc: BaseException, what: str, competition: str | None) -> KaggleError:
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
