"""A small fake of the Kaggle API that the real `kaggle` client (2.2.5, kagglesdk) talks to in tests.

How the client gets here: with KAGGLE_API_ENVIRONMENT=LOCALHOST the client sends every call as a JSON POST
to `http://localhost/api/v1/<Service>/<Method>` (port 80, fixed: kagglesdk has no setting for the port). The
client's HTTP library (requests) honours HTTP_PROXY, so the fake listens on an ephemeral port of 127.0.0.1
and is named as the proxy: requests then sends `POST http://localhost/api/v1/...` to it. No port 80, no
lock, no collision between parallel test processes. HTTPS_PROXY names the fake too and every CONNECT is
refused, so a client that was not switched to LOCALHOST fails at once instead of reaching kaggle.com.

The fake answers what the service answers, for the calls this project makes (docs/kaggle_api_notes.md):
datasets (create, version, status, with the blob upload the client does first), kernels (push, status,
output listing + file downloads, pull, list), competitions (code submission, submissions, limits), the
accelerator quota and access-token introspection. Upload and download URLs it hands out point back at
itself (`http://localhost/_fake/...`), where the real service hands out signed storage URLs. Anything else
gets HTTP 501 "not implemented by the fake", so a test never passes on an answer the fake made up.

A test configures it through plain attributes and methods (`add_competition`, `add_dataset`, `add_model`,
`set_output`, the status scripts, `fail_next`) and reads back `calls` (every request, in order, with its
JSON body) and the stored state (`uploads`, `datasets`, `kernels`, `competitions`).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

HOST = "localhost"  # the host the client calls with KAGGLE_API_ENVIRONMENT=LOCALHOST
API_PREFIX = "/api/v1/"
UPLOAD_PREFIX = "/_fake/upload/"
OUTPUT_PREFIX = "/_fake/output/"
DEFAULT_KEY = "f4k3k3y0123456789abcdef0123456789"


@dataclass
class Call:
    """One request as the fake received it. `method` is `Service/Method` for an API call (e.g.
    `kernels.KernelsApiService/SaveKernel`), else `PUT /_fake/upload/<token>`, `GET /_fake/output/...`,
    `CONNECT host:port`; `body` is the parsed JSON of an API call, the byte count of an upload."""

    method: str
    body: dict | int | None
    user: str | None  # whom the credentials named (None: none sent, or they were refused)
    status: int = 0  # the HTTP status the fake answered


@dataclass
class Upload:
    """A blob announced by StartBlobUpload; `data` is None until its bytes are PUT."""

    name: str
    length: int
    type: str
    data: bytes | None = None


@dataclass
class DatasetVersion:
    files: dict[str, bytes]
    body: dict  # the CreateDataset / CreateDatasetVersion request


@dataclass
class Dataset:
    ref: str
    title: str
    versions: list[DatasetVersion] = field(default_factory=list)
    # GetDatasetStatus answers these in turn, repeating the last (DatabundleVersionStatus names).
    statuses: list[str] = field(default_factory=lambda: ["READY"])


@dataclass
class Kernel:
    ref: str
    id: int
    pushes: list[dict] = field(default_factory=list)  # the SaveKernel bodies, one per version
    # GetKernelSessionStatus answers these in turn, repeating the last: a KernelWorkerStatus name, or
    # (name, failure message).
    statuses: list = field(default_factory=list)
    output: dict[str, bytes] = field(default_factory=dict)  # file name (may hold '/') -> bytes
    log: str | None = None


@dataclass
class Submission:
    ref: int
    kernel: str
    version: int | None
    file_name: str | None
    description: str | None
    status: str = "PENDING"
    public_score: str | None = None


@dataclass
class Competition:
    slug: str
    rules_accepted: bool = True
    daily_limit: int = 5
    submissions: list[Submission] = field(default_factory=list)


class FakeKaggle:
    """The service's state, its request log, and the HTTP server that serves them (see the module doc)."""

    def __init__(self, username: str = "alice", key: str = DEFAULT_KEY, token: str | None = None,
                 max_requests: int = 60):
        self.username = username
        self.key = key
        self.token = token  # an access token (KAGGLE_API_TOKEN) the fake accepts, besides username/key
        self.max_requests = max_requests  # beyond this every request is refused with HTTP 400
        self.calls: list[Call] = []
        self.refused = 0
        self.uploads: dict[str, Upload] = {}
        self.datasets: dict[str, Dataset] = {}
        self.kernels: dict[str, Kernel] = {}
        self.competitions: dict[str, Competition] = {}
        self.models: set[str] = set()  # owner/model/framework/variation/version that kernels may mount
        # What a new dataset / dataset version / kernel version reports to the status calls.
        self.new_dataset_statuses: list[str] = ["READY"]
        self.run_statuses: list = ["QUEUED", "RUNNING", "COMPLETE"]
        self.push_error: str | None = None  # when set, SaveKernel answers {"error": ...} and saves nothing
        self.quota = {
            "quotaRefreshTime": "2026-12-19T00:00:00.000Z",
            "gpuQuota": {"timeUsed": "7200s", "totalTimeAllowed": "108000s"},  # 2 h of 30 h
            "tpuQuota": {"timeUsed": "0s", "totalTimeAllowed": "72000s"},  # 0 h of 20 h
        }
        self._errors: dict[str, list[tuple[int, str]]] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- configuring ------------------------------------------------------------------------------

    def add_competition(self, slug: str, rules_accepted: bool = True) -> Competition:
        self.competitions[slug] = Competition(slug, rules_accepted)
        return self.competitions[slug]

    def add_dataset(self, ref: str, files: dict[str, bytes] | None = None, statuses=("READY",)) -> Dataset:
        ds = Dataset(ref, ref.split("/")[1], [DatasetVersion(dict(files or {}), {})], list(statuses))
        self.datasets[ref] = ds
        return ds

    def add_kernel(self, ref: str, versions: int = 1, **push) -> Kernel:
        """A kernel that exists already, with `versions` pushes of `push` (SaveKernel fields)."""
        body = {"slug": ref, "text": "print()", "language": "python", "kernelType": "script", **push}
        kernel = self.kernels[ref] = Kernel(ref, 1000 + len(self.kernels), [dict(body)] * versions)
        kernel.statuses = list(self.run_statuses)
        return kernel

    def add_model(self, ref: str) -> None:
        self.models.add(ref)

    def set_output(self, kernel: str, files: dict[str, bytes], log: str | None = None) -> None:
        """What the kernel's latest run wrote to /kaggle/working (and its log)."""
        k = self.kernels[kernel]
        k.output, k.log = dict(files), log

    def fail_next(self, method: str, status: int, message: str, times: int = 1) -> None:
        """Answer the next `times` calls of `method` (e.g. `DatasetApiService/GetDatasetStatus`, or any
        suffix of `Service/Method`) with HTTP `status` and the service's JSON error body."""
        self._errors.setdefault(method, []).extend([(status, message)] * times)

    # --- reading what happened -------------------------------------------------------------------

    def methods(self) -> list[str]:
        """Every request's method, in order."""
        return [c.method for c in self.calls]

    def bodies(self, method: str) -> list[dict]:
        """The JSON bodies of the calls whose method ends with `method` (e.g. `SaveKernel`)."""
        return [c.body for c in self.calls if c.method.endswith(method)]

    def uploaded(self) -> dict[str, bytes]:
        """The bytes of every finished upload, by the file name the client announced."""
        return {u.name: u.data for u in self.uploads.values() if u.data is not None}

    # --- serving ---------------------------------------------------------------------------------

    @property
    def proxy(self) -> str:
        assert self._server is not None, "the fake is not serving"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeKaggle:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
            self._server = None

    def handle(self, verb: str, url: str, headers, body: bytes) -> tuple[int, dict[str, str], bytes]:
        """One request → (status, headers, body). Runs in the server's threads, under one lock."""
        with self._lock:
            parts = urlsplit(url)
            if verb == "CONNECT":
                return self._record(Call(f"CONNECT {url}", None, None), 403, {"message": "no HTTPS here"})
            if parts.netloc and parts.netloc not in (HOST, f"{HOST}:80"):
                return self._record(Call(f"{verb} {url}", None, None), 502, {"message": "not localhost"})
            path = unquote(parts.path)
            if path.startswith(API_PREFIX) and verb == "POST":
                return self._api(path[len(API_PREFIX):], headers, body)
            if path.startswith(UPLOAD_PREFIX) and verb == "PUT":
                return self._upload(path, headers, body)
            if path.startswith(OUTPUT_PREFIX) and verb == "GET":
                return self._download(path)
            return self._record(Call(f"{verb} {path}", None, None), 404, {"message": "no such path"})

    def _record(self, call: Call, status: int, answer: dict | bytes, headers=None):
        call.status = status
        self.calls.append(call)
        if isinstance(answer, bytes):
            return status, dict(headers or {}), answer
        if status >= 400:  # the service's error body; the client raises HTTPError(message) on it
            answer = {"code": status, **answer}
        return status, {"Content-Type": "application/json"}, json.dumps(answer).encode()

    def _over_budget(self, call: Call):
        if len(self.calls) < self.max_requests:
            return None
        self.refused += 1
        return self._record(call, 400, {"message": f"kaggle fake: more than {self.max_requests} requests"})

    def _user(self, headers) -> str | None:
        auth = headers.get("Authorization", "")
        if auth.startswith("Basic "):
            user, _, key = base64.b64decode(auth[6:]).decode().partition(":")
            return user if (user, key) == (self.username, self.key) else None
        if auth.startswith("Bearer ") and self.token is not None and auth[7:] == self.token:
            return self.username
        return None

    def _api(self, method: str, headers, raw: bytes):
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {"_unparsed": raw.decode(errors="replace")}
        call = Call(method, body, self._user(headers))
        refused = self._over_budget(call)
        if refused:
            return refused
        if call.user is None and method != "security.OAuthService/IntrospectToken":
            return self._record(call, 401, {"message": "Unauthenticated"})
        for key in list(self._errors):
            if method.endswith(key) and self._errors[key]:
                status, message = self._errors[key].pop(0)
                return self._record(call, status, {"message": message})
        handler = _HANDLERS.get(method)
        if handler is None:
            return self._record(call, 501, {"message": f"{method} is not implemented by the fake"})
        status, answer = handler(self, body)
        return self._record(call, status, answer)

    def _upload(self, path: str, headers, data: bytes):
        token = path[len(UPLOAD_PREFIX):]
        call = Call(f"PUT {path}", len(data), None)
        refused = self._over_budget(call)
        if refused:
            return refused
        upload = self.uploads.get(token)
        if upload is None:
            return self._record(call, 404, {"message": "unknown upload"})
        if headers.get("Content-Range", "").startswith("bytes */"):  # "how much did you get?" (resume)
            return self._record(call, 200 if upload.data is not None else 404, b"")
        if len(data) != upload.length:
            return self._record(call, 400, {"message": f"got {len(data)} bytes, announced {upload.length}"})
        upload.data = data
        return self._record(call, 200, b"")

    def _download(self, path: str):
        call = Call(f"GET {path}", None, None)
        refused = self._over_budget(call)
        if refused:
            return refused
        owner, slug, name = path[len(OUTPUT_PREFIX):].split("/", 2)
        kernel = self.kernels.get(f"{owner}/{slug}")
        if kernel is None or name not in kernel.output:
            return self._record(call, 404, b"", {"Content-Type": "text/plain"})
        return self._record(call, 200, kernel.output[name], {"Content-Type": "application/octet-stream"})


# --- the service's methods: (fake, request body) -> (HTTP status, answer) -------------------------------

def _not_found(what: str):
    return 404, {"message": f"{what} not found"}


def _next(script: list):
    """The next scripted answer; the last one repeats."""
    return script.pop(0) if len(script) > 1 else script[0]


def _start_blob_upload(fake: FakeKaggle, body: dict):
    token = f"blob-{len(fake.uploads) + 1}"
    length = int(body.get("contentLength", 0))
    fake.uploads[token] = Upload(body.get("name", ""), length, body.get("type", ""))
    return 200, {"token": token, "createUrl": f"http://{HOST}{UPLOAD_PREFIX}{token}"}


def _files_of(fake: FakeKaggle, new_files: list[dict]) -> dict[str, bytes] | str:
    """The uploaded bytes that a create request names by token, or why it cannot have them."""
    files = {}
    for item in new_files:
        upload = fake.uploads.get(item.get("token", ""))
        if upload is None or upload.data is None:
            return f"file token {item.get('token')!r} was never uploaded"
        files[upload.name] = upload.data
    return files


def _dataset_url(ref: str) -> str:
    return f"https://www.kaggle.com/datasets/{ref}"


def _create_dataset(fake: FakeKaggle, body: dict):
    ref = f"{body.get('ownerSlug')}/{body.get('slug')}"
    if ref in fake.datasets:
        return 200, {"status": "error", "error": f"The requested slug {body.get('slug')!r} is already in use"}
    files = _files_of(fake, body.get("files", []))
    if isinstance(files, str):
        return 200, {"status": "error", "error": files}
    ds = Dataset(ref, body.get("title", ""), [DatasetVersion(files, body)], list(fake.new_dataset_statuses))
    fake.datasets[ref] = ds
    return 200, {"ref": ref, "url": _dataset_url(ref), "status": "ok"}


def _create_dataset_version(fake: FakeKaggle, body: dict):
    ref = f"{body.get('ownerSlug')}/{body.get('datasetSlug')}"
    ds = fake.datasets.get(ref)
    if ds is None:
        return _not_found(f"Dataset {ref}")
    files = _files_of(fake, body.get("body", {}).get("files", []))
    if isinstance(files, str):
        return 200, {"status": "error", "error": files}
    ds.versions.append(DatasetVersion(files, body))
    ds.statuses = list(fake.new_dataset_statuses)
    return 200, {"ref": ref, "url": _dataset_url(ref), "status": "ok"}


def _dataset_status(fake: FakeKaggle, body: dict):
    ds = fake.datasets.get(f"{body.get('ownerSlug')}/{body.get('datasetSlug')}")
    if ds is None:
        return _not_found("Dataset")
    return 200, {"status": _next(ds.statuses)}


def _get_dataset(fake: FakeKaggle, body: dict):
    ds = fake.datasets.get(f"{body.get('ownerSlug')}/{body.get('datasetSlug')}")
    if ds is None:
        return _not_found("Dataset")
    return 200, {"ref": ds.ref, "title": ds.title, "url": _dataset_url(ds.ref),
                 "currentVersionNumber": len(ds.versions)}


def _save_kernel(fake: FakeKaggle, body: dict):
    if fake.push_error is not None:
        return 200, {"error": fake.push_error}
    ref = body.get("slug") or ""
    if ref.count("/") != 1:
        return 200, {"error": f"invalid kernel slug {ref!r}"}
    # The service drops sources it cannot find and lists them in the answer; the push still succeeds.
    invalid = {
        "invalidDatasetSources": [s for s in body.get("datasetDataSources", []) if s not in fake.datasets],
        "invalidCompetitionSources": [s for s in body.get("competitionDataSources", [])
                                      if s not in fake.competitions],
        "invalidKernelSources": [s for s in body.get("kernelDataSources", []) if s not in fake.kernels],
        "invalidModelSources": [s for s in body.get("modelDataSources", []) if s not in fake.models],
    }
    kernel = fake.kernels.get(ref)
    if kernel is None:
        kernel = fake.kernels[ref] = Kernel(ref, 1000 + len(fake.kernels))
    kernel.pushes.append(body)
    kernel.statuses = list(fake.run_statuses)
    answer = {"ref": f"/code/{ref}", "url": f"https://www.kaggle.com/code/{ref}",
              "versionNumber": len(kernel.pushes), "kernelId": kernel.id}
    return 200, {**answer, **{k: v for k, v in invalid.items() if v}}


def _kernel(fake: FakeKaggle, body: dict) -> Kernel | None:
    return fake.kernels.get(f"{body.get('userName')}/{body.get('kernelSlug')}")


def _kernel_status(fake: FakeKaggle, body: dict):
    kernel = _kernel(fake, body)
    if kernel is None or not kernel.statuses:
        return _not_found("Kernel")
    status = _next(kernel.statuses)
    if isinstance(status, tuple):
        return 200, {"status": status[0], "failureMessage": status[1]}
    return 200, {"status": status}


def _kernel_output(fake: FakeKaggle, body: dict):
    kernel = _kernel(fake, body)
    if kernel is None:
        return _not_found("Kernel")
    names = sorted(kernel.output)
    start = int(body.get("pageToken") or 0)
    size = int(body.get("pageSize") or 20)
    page = names[start:start + size]
    files = [{"fileName": n, "url": f"http://{HOST}{OUTPUT_PREFIX}{kernel.ref}/{quote(n)}"} for n in page]
    answer: dict = {"files": files}
    if start + size < len(names):
        answer["nextPageToken"] = str(start + size)
    if kernel.log is not None:
        answer["log"] = kernel.log
    return 200, answer


def _kernel_metadata(kernel: Kernel) -> dict:
    push = kernel.pushes[-1]
    meta = {"id": kernel.id, "ref": kernel.ref, "slug": kernel.ref.split("/")[1],
            "author": kernel.ref.split("/")[0], "title": push.get("newTitle", ""),
            "currentVersionNumber": len(kernel.pushes)}
    for key in ("language", "kernelType", "isPrivate", "enableGpu", "enableTpu", "enableInternet",
                "datasetDataSources", "competitionDataSources", "kernelDataSources", "modelDataSources",
                "categoryIds", "dockerImage", "machineShape"):
        if key in push:
            meta[key] = push[key]
    return meta


def _get_kernel(fake: FakeKaggle, body: dict):
    kernel = _kernel(fake, body)
    if kernel is None:
        return _not_found("Kernel")
    push = kernel.pushes[-1]
    blob = {"source": push.get("text", ""), "language": push.get("language"),
            "kernelType": push.get("kernelType"), "slug": kernel.ref.split("/")[1]}
    return 200, {"metadata": _kernel_metadata(kernel), "blob": blob}


def _list_kernels(fake: FakeKaggle, body: dict):
    # `mine` is group PROFILE; the other filters (language, type, dataset, ...) are not modelled.
    user = fake.username if body.get("group") == "PROFILE" else body.get("user")
    search = body.get("search") or ""
    found = [_kernel_metadata(k) for ref, k in sorted(fake.kernels.items())
             if (not user or ref.split("/")[0] == user) and search in ref]
    return 200, {"kernels": found}


def _quota(fake: FakeKaggle, body: dict):
    return 200, fake.quota


def _competition(fake: FakeKaggle, name: str):
    comp = fake.competitions.get(name)
    if comp is None:
        return None, _not_found(f"Competition {name}")
    if not comp.rules_accepted:
        return None, (403, {"message": "You must accept this competition's rules before you can submit."})
    return comp, None


def _create_code_submission(fake: FakeKaggle, body: dict):
    comp, error = _competition(fake, body.get("competitionName", ""))
    if error:
        return error
    ref = f"{body.get('kernelOwner')}/{body.get('kernelSlug')}"
    kernel = fake.kernels.get(ref)
    version = body.get("kernelVersion")
    if kernel is None or (version is not None and not 1 <= version <= len(kernel.pushes)):
        return _not_found(f"Notebook {ref} version {version}")
    sub = Submission(100 + sum(len(c.submissions) for c in fake.competitions.values()), ref, version,
                     body.get("fileName"), body.get("submissionDescription"))
    comp.submissions.append(sub)
    return 200, {"message": "Your submission was successfully saved", "ref": sub.ref}


def _list_submissions(fake: FakeKaggle, body: dict):
    comp, error = _competition(fake, body.get("competitionName", ""))
    if error:
        return error
    subs = [{"ref": s.ref, "date": "2026-12-19T12:00:00.000Z", "description": s.description,
             "fileName": s.file_name, "status": s.status, "publicScore": s.public_score}
            for s in reversed(comp.submissions)]
    return 200, {"submissions": [{k: v for k, v in s.items() if v is not None} for s in subs]}


def _submission_limits(fake: FakeKaggle, body: dict):
    comp, error = _competition(fake, body.get("competitionName", ""))
    if error:
        return error
    used = len(comp.submissions)
    return 200, {"numToday": used, "numTotal": used, "numAllowedNow": max(0, comp.daily_limit - used)}


def _introspect_token(fake: FakeKaggle, body: dict):
    if fake.token is not None and body.get("token") == fake.token:
        return 200, {"active": True, "username": fake.username}
    return 200, {"active": False}


_HANDLERS = {
    "blobs.BlobApiService/StartBlobUpload": _start_blob_upload,
    "datasets.DatasetApiService/CreateDataset": _create_dataset,
    "datasets.DatasetApiService/CreateDatasetVersion": _create_dataset_version,
    "datasets.DatasetApiService/GetDatasetStatus": _dataset_status,
    "datasets.DatasetApiService/GetDataset": _get_dataset,
    "kernels.KernelsApiService/SaveKernel": _save_kernel,
    "kernels.KernelsApiService/GetKernelSessionStatus": _kernel_status,
    "kernels.KernelsApiService/ListKernelSessionOutput": _kernel_output,
    "kernels.KernelsApiService/GetKernel": _get_kernel,
    "kernels.KernelsApiService/ListKernels": _list_kernels,
    "kernels.KernelsApiService/GetAcceleratorQuotaStatistics": _quota,
    "competitions.CompetitionApiService/CreateCodeSubmission": _create_code_submission,
    "competitions.CompetitionApiService/ListSubmissions": _list_submissions,
    "competitions.CompetitionApiService/GetSubmissionLimits": _submission_limits,
    "security.OAuthService/IntrospectToken": _introspect_token,
}


# --- HTTP ----------------------------------------------------------------------------------------------

def _handler(fake: FakeKaggle) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = 10  # seconds a client may take to send its request

        def _serve(self) -> None:
            status, headers, body = fake.handle(self.command, self.path, self.headers, self._body())
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _body(self) -> bytes:
            # The client always sends a length (its uploads are files: requests takes their size).
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        do_GET = do_POST = do_PUT = do_CONNECT = _serve

        def log_message(self, format, *args) -> None:  # quiet: the test reads fake.calls instead
            pass

    return Handler


# --- for tests -------------------------------------------------------------------------------------

def client_env(fake: FakeKaggle, root: Path, credentials: bool = True) -> dict[str, str]:
    """The environment variables that point the real client at `fake`, with credentials (username/key)
    and every folder it reads or writes (HOME, KAGGLE_CONFIG_DIR, TMPDIR for its upload state) under
    `root`; no proxy bypass. For a subprocess: `{**os.environ minus KAGGLE_*/proxies, **client_env(...)}`."""
    home, config, tmp = root / "home", root / "kaggle_config", root / "tmp"
    for folder in (home, config, tmp):
        folder.mkdir(parents=True, exist_ok=True)
    env = {"KAGGLE_API_ENVIRONMENT": "LOCALHOST", "HTTP_PROXY": fake.proxy, "HTTPS_PROXY": fake.proxy,
           "http_proxy": fake.proxy, "https_proxy": fake.proxy, "HOME": str(home),
           "KAGGLE_CONFIG_DIR": str(config), "TMPDIR": str(tmp)}
    if credentials:
        env.update(KAGGLE_USERNAME=fake.username, KAGGLE_KEY=fake.key)
    return env


_DROP = ("KAGGLE_", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "XDG_CONFIG_HOME")


def subprocess_env(fake: FakeKaggle, root: Path, **extra: str) -> dict[str, str]:
    """os.environ without any Kaggle settings or proxies of its own, plus `client_env`."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(_DROP)}
    return {**env, **client_env(fake, root), **extra}


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise TimeoutError in the main thread after `seconds` (the client sets no timeout on its API
    calls, so a test bounds them itself). No-op outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise TimeoutError(f"the kaggle fake's test ran past {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def serve(**kwargs) -> Iterator[FakeKaggle]:
    """A started FakeKaggle (arguments as FakeKaggle's), stopped on exit."""
    fake = FakeKaggle(**kwargs).start()
    try:
        yield fake
    finally:
        fake.stop()


@contextlib.contextmanager
def competition_service(competition: str, max_requests: int, seconds: float) -> Iterator[FakeKaggle]:
    """A started fake with `competition` (rules accepted), every test's requests bounded in number and time;
    on exit, checks that none was refused and nothing tried to leave for kaggle.com."""
    with serve(max_requests=max_requests) as fake, deadline(seconds):
        fake.add_competition(competition)
        yield fake
        assert fake.refused == 0 and not [c for c in fake.calls if c.method.startswith("CONNECT")]


def in_process_api(fake: FakeKaggle, root: Path, monkeypatch):
    """An authenticated kaggle.api.KaggleApi in this process, talking to `fake` only.

    `KaggleApi` reads KAGGLE_API_ENVIRONMENT and KAGGLE_CONFIG_DIR once, when its module is first imported
    (kaggle_api_extended.py:1157-1177), and `import kaggle` authenticates from the environment of that
    moment; so the environment is set before the import, and the instance gets the local endpoint and the
    temp config folder itself, whatever an earlier import saw."""
    import tempfile

    env = client_env(fake, root)
    for key in list(os.environ):
        if key.upper().startswith(_DROP):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(tempfile, "tempdir", env["TMPDIR"])  # the client keeps upload state there
    with contextlib.redirect_stdout(io.StringIO()):
        from kaggle.api.kaggle_api_extended import KaggleApi

    api = KaggleApi()
    api.args = ["--local"]
    api.config_dir = env["KAGGLE_CONFIG_DIR"]
    api.config = os.path.join(api.config_dir, "kaggle.json")
    api.authenticate()
    with api.build_kaggle_client() as client:  # never PROD: check before any call is made
        assert client.http_client()._endpoint == f"http://{HOST}", client.http_client()._endpoint
    return api
