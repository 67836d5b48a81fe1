"""The real `kaggle` client (2.2.5) against tests/kaggle_fake.py: what it sends for each operation this
project needs (push a kernel, poll it, fetch its output, create/version a dataset, submit to a code
competition, read the quota) and what it returns or raises when the service says no. Nothing here mocks
the client or reaches kaggle.com; docs/kaggle_api_notes.md is the prose version of these facts."""

import json
import subprocess
import sys
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest
import requests

from tests.kaggle_fake import DEFAULT_KEY, deadline, in_process_api, serve, subprocess_env

COMP = "petfinder-pawpularity-score"
TRAIN = "alice/lresizervit-train"
MODELS = "alice/lresizervit-models"
VIT = "keras/vit/keras/vit_base_patch16_224_imagenet/2"
SAVE = "kernels.KernelsApiService/SaveKernel"
STATUS = "kernels.KernelsApiService/GetKernelSessionStatus"
OUTPUT = "kernels.KernelsApiService/ListKernelSessionOutput"
DS_STATUS = "datasets.DatasetApiService/GetDatasetStatus"
BLOB = "blobs.BlobApiService/StartBlobUpload"


@pytest.fixture
def fake():
    with serve() as f, deadline(60):
        yield f
    assert f.refused == 0, "a test went past the fake's request budget"
    assert not [c for c in f.calls if c.method.startswith("CONNECT")], "the client tried HTTPS (kaggle.com)"


@pytest.fixture
def api(fake, tmp_path, monkeypatch):
    return in_process_api(fake, tmp_path / "client", monkeypatch)


def kaggle_cli(fake, root: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """`kaggle ARGS` in a subprocess pointed at the fake (the CLI prints most errors and exits 1)."""
    return subprocess.run([sys.executable, "-m", "kaggle", *args], env=subprocess_env(fake, root, **env),
                          cwd=root, capture_output=True, text=True, timeout=60)


def kernel_folder(root: Path, **meta) -> Path:
    folder = root / "kernel"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run.py").write_text("print('training')\n")
    meta = {"id": TRAIN, "title": "LResizerViT train", "code_file": "run.py", "language": "python",
            "kernel_type": "script", **meta}
    (folder / "kernel-metadata.json").write_text(json.dumps(meta))
    return folder


# --- kernels push --------------------------------------------------------------------------------------

def test_push_sends_the_metadata_as_request_fields(fake, api, tmp_path):
    fake.add_dataset("alice/lresizervit-code")
    fake.add_competition(COMP)
    fake.add_model(VIT)
    folder = kernel_folder(tmp_path, is_private=True, enable_gpu=True, enable_tpu=False,
                           enable_internet=False, machine_shape="NvidiaTeslaT4",
                           dataset_sources=["alice/lresizervit-code"], competition_sources=[COMP],
                           kernel_sources=[], model_sources=[VIT], keywords=["gpu"])
    response = api.kernels_push(str(folder), timeout="3600")

    assert fake.methods() == [SAVE]
    assert fake.bodies(SAVE)[0] == {
        "slug": TRAIN, "newTitle": "LResizerViT train", "text": "print('training')\n", "language": "python",
        "kernelType": "script", "isPrivate": True, "enableGpu": True, "enableTpu": False,
        "enableInternet": False, "machineShape": "NvidiaTeslaT4",
        "datasetDataSources": ["alice/lresizervit-code"], "competitionDataSources": [COMP],
        "modelDataSources": [VIT], "categoryIds": ["gpu"], "sessionTimeoutSeconds": 3600,
    }  # no kernelDataSources (an empty list is not sent), no dockerImage, no id
    assert response.version_number == 1 and not response.error  # the getter gives "" for none
    assert response.url == f"https://www.kaggle.com/code/{TRAIN}"
    assert not (response.invalid_dataset_sources or response.invalid_competition_sources
                or response.invalid_kernel_sources or response.invalid_model_sources)
    assert api.kernels_push(str(folder)).version_number == 2


def test_push_defaults_when_metadata_keys_are_missing(fake, api, tmp_path):
    api.kernels_push(str(kernel_folder(tmp_path)))
    assert fake.bodies(SAVE)[0] == {
        "slug": TRAIN, "newTitle": "LResizerViT train", "text": "print('training')\n", "language": "python",
        "kernelType": "script", "isPrivate": True, "enableGpu": False, "enableTpu": False,
        "enableInternet": True,  # internet ON unless the metadata says false
    }  # no machineShape: the service picks; no sources; no dockerImage


def test_push_accelerator_argument_and_docker_image_pass_through_unchecked(fake, api, tmp_path):
    folder = kernel_folder(tmp_path, enable_tpu="true", machine_shape="NvidiaTeslaT4",
                           docker_image="gcr.io/kaggle-images/python:v150")
    api.kernels_push(str(folder), acc="TpuV5E8")
    body = fake.bodies(SAVE)[0]
    # `acc` (kaggle kernels push --accelerator) replaces machine_shape; enable_tpu as the string "true" is
    # read as a bool; docker_image goes as it is (the notes say it can send a TPU request to a CPU image).
    assert body["machineShape"] == "TpuV5E8" and body["enableTpu"] is True and body["enableGpu"] is False
    assert body["dockerImage"] == "gcr.io/kaggle-images/python:v150"


def test_push_metadata_errors_are_caught_before_any_request(fake, api, tmp_path):
    for meta, message in [({"title": "abc"}, "Title must be at least five characters"),
                          ({"language": "julia"}, "A valid language must be specified"),
                          ({"dataset_sources": ["no-owner"]}, "Dataset must be specified"),
                          ({"model_sources": ["keras/vit/keras/v"]}, "Model instance version must be"),
                          ({"enable_gpu": "yes"}, "Invalid boolean value: yes")]:
        with pytest.raises(ValueError, match=message):
            api.kernels_push(str(kernel_folder(tmp_path, **meta)))
    assert fake.calls == []


def test_push_reports_invalid_sources_in_the_answer_and_still_saves(fake, api, tmp_path):
    fake.add_competition(COMP)
    folder = kernel_folder(tmp_path, dataset_sources=["alice/not-there"], competition_sources=[COMP, "gone"],
                           kernel_sources=["alice/no-kernel"], model_sources=[VIT])
    response = api.kernels_push(str(folder))
    assert not response.error and response.version_number == 1  # no exception: check the lists
    assert response.invalid_dataset_sources == ["alice/not-there"]
    assert response.invalid_competition_sources == ["gone"]
    assert response.invalid_kernel_sources == ["alice/no-kernel"]
    assert response.invalid_model_sources == [VIT]


def test_push_cli_prints_three_of_the_four_invalid_lists_and_exits_0(fake, tmp_path):
    folder = kernel_folder(tmp_path, dataset_sources=["alice/not-there"], competition_sources=["gone"],
                           kernel_sources=["alice/no-kernel"], model_sources=[VIT])
    proc = kaggle_cli(fake, tmp_path, "kernels", "push", "-p", str(folder), "--accelerator", "NvidiaTeslaT4")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "not valid dataset sources and could not be added to the kernel: ['alice/not-there']" in out
    assert "not valid competition sources and could not be added to the kernel: ['gone']" in out
    assert "not valid kernel sources and could not be added to the kernel: ['alice/no-kernel']" in out
    assert VIT not in out  # invalid model sources are not printed at all
    url = f"https://www.kaggle.com/code/{TRAIN}"
    assert f"Kernel version 1 successfully pushed.  Please check progress at {url}" in out
    assert fake.bodies(SAVE)[0]["machineShape"] == "NvidiaTeslaT4"


def test_push_error_in_the_answer(fake, api, tmp_path):
    fake.push_error = "Notebook is too large"
    response = api.kernels_push(str(kernel_folder(tmp_path)))
    assert response.error == "Notebook is too large" and response.version_number == 0  # 0: none
    proc = kaggle_cli(fake, tmp_path, "kernels", "push", "-p", str(tmp_path / "kernel"))
    assert proc.returncode == 0 and "Kernel push error: Notebook is too large" in proc.stdout
    assert TRAIN not in fake.kernels


# --- kernels status / output / pull / list ----------------------------------------------------------

def test_status_follows_the_run(fake, api):
    from kagglesdk.kernels.types.kernels_enums import KernelWorkerStatus

    fake.add_kernel(TRAIN)
    seen = [api.kernels_status(TRAIN).status for _ in range(4)]
    assert seen == [KernelWorkerStatus.QUEUED, KernelWorkerStatus.RUNNING, KernelWorkerStatus.COMPLETE,
                    KernelWorkerStatus.COMPLETE]
    assert fake.bodies(STATUS)[0] == {"userName": "alice", "kernelSlug": "lresizervit-train"}
    api.kernels_status(TRAIN + "/3")
    assert fake.bodies(STATUS)[-1]["versionLabel"] == "v3"  # a version number is sent as "v<N>"


def test_status_error_with_failure_message(fake, api, tmp_path):
    from kagglesdk.kernels.types.kernels_enums import KernelWorkerStatus

    fake.add_kernel(TRAIN)
    fake.kernels[TRAIN].statuses = ["RUNNING", ("ERROR", "ResourceExhaustedError: OOM on GPU 0")]
    assert api.kernels_status(TRAIN).status == KernelWorkerStatus.RUNNING
    response = api.kernels_status(TRAIN)
    assert response.status == KernelWorkerStatus.ERROR  # an answer, not an exception
    assert response.failure_message == "ResourceExhaustedError: OOM on GPU 0"
    proc = kaggle_cli(fake, tmp_path, "kernels", "status", TRAIN)
    assert proc.returncode == 0
    assert proc.stdout.splitlines() == [f'{TRAIN} has status "KernelWorkerStatus.ERROR"',
                                        'Failure message: "ResourceExhaustedError: OOM on GPU 0"']


def test_output_lists_pages_and_downloads_real_bytes(fake, api, tmp_path):
    fake.add_kernel(TRAIN)
    files = {"submission.csv": b"Id,Pawpularity\nabc,38.5\n", "models/tiny/cv.json": b'{"rmse": 18.1}',
             "models/tiny/fold_0/model.weights.h5": bytes(range(256))}
    fake.set_output(TRAIN, files, log='[{"stream_name":"stdout","time":1.0,"data":"epoch 1\\n"}]')
    dest = tmp_path / "out"
    paths, token = api.kernels_output(TRAIN, str(dest), page_size=2)

    assert not token  # "" when there is no further page
    assert sorted(paths) == sorted([str(dest / n) for n in files] + [str(dest / "lresizervit-train.log")])
    for name, data in files.items():
        assert (dest / name).read_bytes() == data  # nested names become folders under dest
    assert (dest / "lresizervit-train.log").read_text().startswith('[{"stream_name"')
    assert fake.bodies(OUTPUT) == [
        {"userName": "alice", "kernelSlug": "lresizervit-train", "pageSize": 2, "pageToken": ""},
        {"userName": "alice", "kernelSlug": "lresizervit-train", "pageSize": 2, "pageToken": "2"},
    ]
    assert sum(m.startswith("GET /_fake/output/") for m in fake.methods()) == 3  # file URLs, no credentials
    assert all(c.user is None for c in fake.calls if c.method.startswith("GET"))


def test_output_file_pattern_and_unsafe_names(fake, api, tmp_path):
    fake.add_kernel(TRAIN)
    fake.set_output(TRAIN, {"submission.csv": b"x", "big.bin": b"y"})
    paths, _ = api.kernels_output(TRAIN, str(tmp_path / "o"), file_pattern=r"\.csv$")
    assert paths == [str(tmp_path / "o" / "submission.csv")] and not (tmp_path / "o" / "big.bin").exists()
    fake.set_output(TRAIN, {"../escape.txt": b"z"})
    with pytest.raises(ValueError, match="resolves outside destination"):
        api.kernels_output(TRAIN, str(tmp_path / "o2"))


def test_pull_and_list(fake, api, tmp_path):
    fake.add_dataset("alice/lresizervit-code")
    api.kernels_push(str(kernel_folder(tmp_path, enable_gpu=True, machine_shape="NvidiaTeslaT4",
                                       dataset_sources=["alice/lresizervit-code"])))
    folder = api.kernels_pull(TRAIN, str(tmp_path / "pulled"), metadata=True)
    assert (Path(folder) / "lresizervit-train.py").read_text() == "print('training')\n"
    meta = json.loads((Path(folder) / "kernel-metadata.json").read_text())
    assert meta["id"] == TRAIN and meta["machine_shape"] == "NvidiaTeslaT4" and meta["enable_gpu"] is True
    assert meta["dataset_sources"] == ["alice/lresizervit-code"] and meta["docker_image"] == ""
    assert [k.ref for k in api.kernels_list(mine=True, search="lresizervit")] == [TRAIN]
    assert fake.bodies("ListKernels")[0]["group"] == "PROFILE"


# --- datasets --------------------------------------------------------------------------------------

def dataset_folder(root: Path, ref: str = MODELS) -> Path:
    folder = root / "dataset"
    (folder / "fold_0").mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text("name: tiny\n")
    (folder / "fold_0" / "model.weights.h5").write_bytes(b"\x89HDF" + bytes(100))
    meta = {"id": ref, "title": "LResizerViT models", "licenses": [{"name": "CC0-1.0"}]}
    (folder / "dataset-metadata.json").write_text(json.dumps(meta))
    return folder


def test_create_dataset_uploads_each_file_then_creates(fake, api, tmp_path):
    folder = dataset_folder(tmp_path)
    response = api.dataset_create_new(str(folder), quiet=True, dir_mode="zip")
    assert response.status == "ok" and not response.error

    methods = fake.methods()
    assert methods[0] == DS_STATUS  # the slug must be free: the client wants a 404 here
    assert fake.calls[0].status == 404
    assert methods[1:] == [BLOB, "PUT /_fake/upload/blob-1", BLOB, "PUT /_fake/upload/blob-2",
                           "datasets.DatasetApiService/CreateDataset"]
    blobs = {b["name"]: b for b in fake.bodies(BLOB)}
    assert set(blobs) == {"config.yaml", "fold_0.zip"}  # a folder goes as one zip with dir_mode="zip"
    assert blobs["config.yaml"]["type"] == "DATASET" and blobs["config.yaml"]["contentLength"] == 11
    create = fake.bodies("CreateDataset")[0]
    assert create == {"ownerSlug": "alice", "slug": "lresizervit-models", "title": "LResizerViT models",
                      "licenseName": "CC0-1.0", "isPrivate": True,
                      "files": [{"token": t} for t in ("blob-1", "blob-2")]}

    assert fake.uploaded()["config.yaml"] == b"name: tiny\n"  # the bytes PUT to the upload URL
    stored = fake.datasets[MODELS].versions[0].files  # what the dataset's version holds
    assert stored["config.yaml"] == b"name: tiny\n"
    zip_path = tmp_path / "got.zip"
    zip_path.write_bytes(stored["fold_0.zip"])
    with zipfile.ZipFile(zip_path) as z:
        assert z.read("model.weights.h5") == b"\x89HDF" + bytes(100)


def test_create_dataset_skips_folders_by_default_and_refuses_a_taken_slug(fake, api, tmp_path):
    folder = dataset_folder(tmp_path)
    api.dataset_create_new(str(folder), quiet=True)
    assert [b["name"] for b in fake.bodies(BLOB)] == ["config.yaml"]  # fold_0/ silently left out
    n = len(fake.calls)
    again = api.dataset_create_new(str(folder), quiet=True)
    assert again.status == "error" and "already in use" in again.error
    assert fake.methods()[n:] == [DS_STATUS]  # nothing uploaded the second time


def test_dataset_version_and_status_polling(fake, api, tmp_path):
    fake.add_dataset(MODELS, {"config.yaml": b"old"})
    fake.new_dataset_statuses = ["NOT_YET_PERSISTED", "BLOBS_RECEIVED", "BLOBS_RECEIVED", "READY"]
    folder = dataset_folder(tmp_path)
    response = api.dataset_create_version(str(folder), "fold models v2", quiet=True, dir_mode="zip",
                                          delete_old_versions=True)
    assert response.status == "ok"
    body = fake.bodies("CreateDatasetVersion")[0]
    assert body["ownerSlug"] == "alice" and body["datasetSlug"] == "lresizervit-models"
    assert body["body"]["versionNotes"] == "fold models v2" and body["body"]["deleteOldVersions"] is True
    assert len(body["body"]["files"]) == 2
    assert len(fake.datasets[MODELS].versions) == 2

    polled = []
    while (status := api.dataset_status(MODELS)) != "ready" and len(polled) < 10:
        polled.append(status)  # the enum's name, lower-cased; there is no "pending"
    assert polled == ["not_yet_persisted", "blobs_received", "blobs_received"]
    assert json.loads(api.dataset_status(MODELS, format="json")) == {"status": "ready",
                                                                      "current_version_number": 2}
    with pytest.raises(requests.HTTPError, match="not found") as err:
        api.dataset_status("alice/no-such-dataset")
    assert err.value.response.status_code == 404


def test_dataset_version_of_a_missing_dataset_uploads_first_then_fails(fake, api, tmp_path):
    with pytest.raises(requests.HTTPError) as err:
        api.dataset_create_version(str(dataset_folder(tmp_path)), "v2", quiet=True)
    assert err.value.response.status_code == 404
    assert fake.methods()[-1] == "datasets.DatasetApiService/CreateDatasetVersion"
    assert fake.methods().count(BLOB) == 1  # the upload happened before the service said no


# --- competitions --------------------------------------------------------------------------------------

def test_code_submission_and_listing(fake, api):
    fake.add_competition(COMP)
    fake.add_kernel(TRAIN, versions=2)
    response = api.competition_submit_code("submission.csv", "folds x hflip", COMP, TRAIN, 2)
    assert response.ref > 0 and response.message
    assert fake.bodies("CreateCodeSubmission")[0] == {
        "competitionName": COMP, "kernelOwner": "alice", "kernelSlug": "lresizervit-train",
        "kernelVersion": 2, "fileName": "submission.csv", "submissionDescription": "folds x hflip"}
    subs = api.competition_submissions(COMP)
    assert [(s.ref, s.file_name, s.description, s.status.name) for s in subs] == [
        (response.ref, "submission.csv", "folds x hflip", "PENDING")]
    with pytest.raises(ValueError, match="<owner>/<notebook>"):
        api.competition_submit_code("submission.csv", "m", COMP, "lresizervit-train", 1)


def test_code_submission_cli(fake, tmp_path):
    fake.add_competition(COMP)
    fake.add_kernel(TRAIN)
    proc = kaggle_cli(fake, tmp_path, "competitions", "submit", COMP, "-k", TRAIN, "-v", "1",
                      "-f", "submission.csv", "-m", "first try")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert fake.methods() == ["competitions.CompetitionApiService/CreateCodeSubmission",
                              "competitions.CompetitionApiService/GetSubmissionLimits"]
    ref = fake.competitions[COMP].submissions[0].ref
    assert proc.stdout.splitlines() == [f"Submission ref: {ref}", "4 submissions remaining today.",
                                        "Your submission was successfully saved"]


def test_submission_refused_403_rules_not_accepted(fake, api, tmp_path):
    fake.add_competition(COMP, rules_accepted=False)
    fake.add_kernel(TRAIN)
    with pytest.raises(requests.HTTPError, match="accept this competition's rules") as err:
        api.competition_submit_code("submission.csv", "m", COMP, TRAIN, 1)
    assert err.value.response.status_code == 403
    proc = kaggle_cli(fake, tmp_path, "competitions", "submit", COMP, "-k", TRAIN, "-v", "1",
                      "-f", "submission.csv", "-m", "m")
    assert proc.returncode == 1
    assert "You must accept this competition's rules before you can submit." in proc.stderr
    assert "you may need to accept its rules first" in proc.stderr  # the client's own hint for a 403


def test_submission_of_a_missing_version_404(fake, tmp_path):
    fake.add_competition(COMP)
    fake.add_kernel(TRAIN)
    proc = kaggle_cli(fake, tmp_path, "competitions", "submit", COMP, "-k", TRAIN, "-v", "7",
                      "-f", "submission.csv", "-m", "m")
    assert proc.returncode == 1
    assert "Could not find competition or notebook" in proc.stderr and "version 7 not found" in proc.stderr


# --- quota, credentials, bounds -----------------------------------------------------------------------

def test_quota(fake, api, tmp_path):
    quota = api.quota_view()
    assert quota.gpu_quota.total_time_allowed == timedelta(hours=30)
    assert quota.gpu_quota.time_used == timedelta(hours=2)
    assert quota.tpu_quota.total_time_allowed == timedelta(hours=20)
    assert fake.methods() == ["kernels.KernelsApiService/GetAcceleratorQuotaStatistics"]
    assert fake.bodies("GetAcceleratorQuotaStatistics") == [{}]
    proc = kaggle_cli(fake, tmp_path, "quota", "--csv")
    assert proc.returncode == 0
    assert proc.stdout.splitlines()[:3] == ["resource,used,remaining,total,refreshAt",
                                           "GPU,2.00h,28.00h,30.00h,2026-12-19T00:00:00+00:00",
                                           "TPU,0.00h,20.00h,20.00h,2026-12-19T00:00:00+00:00"]


def test_bad_credentials_401(fake, api, tmp_path):
    fake.key = "another-key"  # the service no longer accepts the client's key
    with pytest.raises(requests.HTTPError, match="Unauthenticated") as err:
        api.dataset_status(MODELS)
    assert err.value.response.status_code == 401
    # kernels status and output turn a 401 (and a 403) into a ValueError about the kernel slug
    with pytest.raises(ValueError, match="Permission 'kernels.get' was denied"):
        api.kernels_status(TRAIN)
    proc = kaggle_cli(fake, tmp_path, "datasets", "status", MODELS, KAGGLE_KEY=DEFAULT_KEY)
    assert proc.returncode == 1 and "Authentication required" in proc.stdout
    assert DEFAULT_KEY not in proc.stdout + proc.stderr
    assert all(c.status == 401 and c.user is None for c in fake.calls)


def test_access_token_is_introspected_then_sent_as_bearer(fake, tmp_path):
    fake.token = "KGAT_0123456789abcdef"
    proc = kaggle_cli(fake, tmp_path, "quota", KAGGLE_API_TOKEN=fake.token, KAGGLE_USERNAME="", KAGGLE_KEY="")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert fake.methods() == ["security.OAuthService/IntrospectToken",
                              "kernels.KernelsApiService/GetAcceleratorQuotaStatistics"]
    assert fake.bodies("IntrospectToken") == [{"token": fake.token}]
    assert fake.calls[1].user == "alice"


def test_requests_are_bounded_and_https_is_refused(tmp_path, monkeypatch):
    with serve(max_requests=2) as fake, deadline(30):
        api = in_process_api(fake, tmp_path, monkeypatch)
        fake.add_dataset(MODELS)
        api.dataset_status(MODELS)
        api.dataset_status(MODELS)
        with pytest.raises(requests.HTTPError, match="more than 2 requests"):
            api.dataset_status(MODELS)
        assert fake.refused == 1
        api.args = []  # the production endpoint, https://api.kaggle.com: the fake refuses the tunnel
        with pytest.raises(requests.exceptions.ProxyError):
            api.quota_view()
        assert fake.methods()[-1] == "CONNECT api.kaggle.com:443"


def test_unknown_methods_answer_501(fake, api, tmp_path):
    (tmp_path / "submission.csv").write_text("Id,Pawpularity\n")
    with pytest.raises(requests.HTTPError, match="not implemented by the fake") as err:
        # a file upload (StartSubmissionUpload): not how a code competition takes a submission
        api.competition_submit(str(tmp_path / "submission.csv"), "m", COMP)
    assert err.value.response.status_code == 501


def test_scripted_failures(fake, api):
    fake.add_dataset(MODELS)
    fake.fail_next("GetDatasetStatus", 500, "backend error")
    with pytest.raises(requests.HTTPError, match="backend error"):
        api.dataset_status(MODELS)
    assert api.dataset_status(MODELS) == "ready"
