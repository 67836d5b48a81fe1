"""The CLI's contract: bad input ends with one `error:` line naming the file/key, exit status 2."""

import subprocess
import sys

import pandas as pd
import pytest

from lresizervit.cli import main
from lresizervit.data.synth import SynthParams, generate
from tests.conftest import copy_experiment
from tests.tiny import BACKBONE, SET_ARGS


def test_config_error_is_one_line_naming_key_and_file(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  epochz: 3\n")
    assert main(["list-folds", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "train.epochz" in err and "c.yaml" in err and "Traceback" not in err


def test_bad_override(capsys):
    assert main(["list-folds", "configs/demo.yaml", "--set", "model.resizer.mode=nearest"]) == 2
    assert "model.resizer.mode" in capsys.readouterr().err


def test_missing_config_file(capsys):
    assert main(["folds", "nope.yaml"]) == 2
    assert "nope.yaml: config file not found" in capsys.readouterr().err


@pytest.fixture
def tiny_data(tmp_path):
    generate(tmp_path / "data", 12, 3, SynthParams(seed=2, min_side=32, max_side=40, max_long_side=48), workers=1)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data:\n  dir: {tmp_path / 'data'}\n  folds_csv: {tmp_path / 'folds.csv'}\n  n_folds: 3\n")
    return tmp_path, cfg


def test_folds_check_data_and_list(tiny_data, capsys):
    tmp_path, cfg = tiny_data
    assert main(["check-data", str(cfg)]) == 0
    assert main(["folds", str(cfg)]) == 0
    before = (tmp_path / "folds.csv").read_bytes()
    assert main(["folds", str(cfg), "--if-missing"]) == 0  # same settings: kept as it was
    assert (tmp_path / "folds.csv").read_bytes() == before
    # Other settings or another train.csv: refused, naming what changed, and the file is left alone.
    assert main(["folds", str(cfg), "--if-missing", "--set", "data.fold_seed=7"]) == 2
    assert "fold_seed: 42 in the file, 7 now" in capsys.readouterr().err
    with open(tmp_path / "data" / "train.csv", "a") as fh:
        fh.write("\n")
    assert main(["folds", str(cfg), "--if-missing"]) == 2
    assert "train_csv_sha1" in capsys.readouterr().err
    assert (tmp_path / "folds.csv").read_bytes() == before
    capsys.readouterr()
    assert main(["list-folds", str(cfg)]) == 0
    assert capsys.readouterr().out.split() == ["0", "1", "2"]


def test_check_data_names_row_and_column(tiny_data, capsys):
    tmp_path, cfg = tiny_data
    train = pd.read_csv(tmp_path / "data" / "train.csv", dtype={"Id": str})
    train.loc[3, "Eyes"] = 2
    train.to_csv(tmp_path / "data" / "train.csv", index=False)
    assert main(["check-data", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "train.csv" in err and "row 4" in err and "Eyes" in err


def test_synth_refuses_to_overwrite_a_different_data_set(tiny_data, capsys):
    tmp_path, _ = tiny_data
    out = str(tmp_path / "data")
    args = ["synth", "--out", out, "--train", "12", "--test", "3", "--seed", "2", "--min-side", "32",
            "--max-side", "40", "--max-long-side", "48"]
    assert main(args) == 0 and "already generated" in capsys.readouterr().out
    assert main([*args[:-1], "64"]) == 2
    assert "other settings" in capsys.readouterr().err


def test_validate_command(tiny_data, capsys):
    tmp_path, _ = tiny_data
    test = pd.read_csv(tmp_path / "data" / "test.csv", dtype={"Id": str})
    sub = tmp_path / "sub.csv"
    pd.DataFrame({"Id": test["Id"], "Pawpularity": 40.0}).to_csv(sub, index=False)
    assert main(["validate", str(sub), "--test-csv", str(tmp_path / "data" / "test.csv")]) == 0
    pd.DataFrame({"Id": test["Id"], "Pawpularity": [40.0, 101.0, 3.0]}).to_csv(sub, index=False)
    assert main(["validate", str(sub), "--test-csv", str(tmp_path / "data" / "test.csv")]) == 2
    assert "row 2, column Pawpularity: 101.0 is outside" in capsys.readouterr().err


def test_bench_loader_reports_every_pipeline(tiny_data, capsys):
    import json

    tmp_path, cfg = tiny_data
    out = tmp_path / "bench.json"
    assert main(["bench", str(cfg), "--images", "8", "--repeats", "1", "--json", str(out),
                 "--set", "data.image_size=32", "--set", "model.resizer.target_size=16",
                 "--set", "train.batch_size=4"]) == 0
    result = json.loads(out.read_text())
    assert result["images"] == 8 and result["image_size"] == 32
    assert len(result["pipelines"]) == 5
    for row in result["pipelines"].values():
        assert row["images_per_second"] > 0 and len(row["runs"]) == 1
    assert "| plain decode_jpeg + resize |" in capsys.readouterr().out


def test_undecodable_image_is_one_error_line_naming_the_file(tmp_path, capsys):
    """Prediction (which does not run check-data) still fails as one line on an image that will not decode."""
    generate(tmp_path / "data", 8, 2, SynthParams(seed=5, min_side=32, max_side=40, max_long_side=48), workers=1)
    test = pd.read_csv(tmp_path / "data" / "test.csv", dtype={"Id": str})
    bad = tmp_path / "data" / "test" / f"{test['Id'][1]}.jpg"
    bad.write_bytes(b"not a jpeg at all")
    models = tmp_path / "models" / "x"
    (models / "fold_0").mkdir(parents=True)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"name: x\noutput_dir: {tmp_path / 'models'}\ndata:\n  dir: {tmp_path / 'data'}\n"
                   f"  image_size: 32\nmodel:\n  resizer:\n    target_size: 16\n  backbone:\n    name: {BACKBONE}\n")
    # A one-fold "experiment" with a real (untrained) model, enough for the predictor to reach the images.
    from lresizervit.config import load_config, save_config
    from lresizervit.models.fold_model import save_fold_model
    from lresizervit.models.regressor import build_regressor

    c = load_config(cfg)
    save_config(c, models / "config.yaml")
    save_fold_model(build_regressor(c.model, 32, c.task), models / "fold_0")
    (models / "fold_0" / "metrics.json").write_text('{"n_folds": 1}')
    assert main(["predict", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot decode image") and str(bad) in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_bench_replicas_times_one_and_two_replicas(tmp_path, capsys):
    import json

    out = tmp_path / "replicas.json"
    assert main(["bench", "configs/demo.yaml", "--what", "replicas", "--batch", "4", "--steps", "2",
                 "--json", str(out), *SET_ARGS]) == 0
    result = json.loads(out.read_text())
    assert list(result["variants"]) == ["1 replica(s)", "2 replica(s)"]
    for row in result["variants"].values():
        assert row["step_seconds"] > 0 and len(row["step_seconds_runs"]) == 3
    assert "| 2 replica(s) |" in capsys.readouterr().out


@pytest.mark.parametrize(("args", "message"), [
    (["--rounds", "0"], "bench --rounds must be at least 1, got 0"),
    (["--repeats", "0"], "bench --repeats must be at least 1, got 0"),
    (["--precisions", "float99"], "'float99' is not a train.precision"),
    (["--variants", "learned@7"], "learned@7 is smaller than model.resizer.target_size (24)"),
    (["--variants", "wavelet@96"], "'wavelet' is not a model.resizer.mode"),
])
def test_bench_refuses_bad_flags_before_measuring(args, message, capsys):
    assert main(["bench", "configs/demo.yaml", "--what", "step", *args]) == 2
    assert message in capsys.readouterr().err


def test_building_the_parser_loads_no_framework():
    # Every command pays for what the parser imports: `kaggle download` must fail fast without TensorFlow.
    code = ("import sys; from lresizervit.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('keras', 'tensorflow', 'pandas', 'keras_hub') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def _with_copies(tmp_path):
    """12 photos + 3 copies under other Ids: exact (of row 1), re-encoded at quality 35 (of row 4), half size
    (of row 7); their targets differ from the originals'."""
    from tests.photos import encode, photo, resized, write, write_data_set

    data = tmp_path / "data"
    train, _ = write_data_set(data, n_train=12, n_test=2, side=120)
    copies = {"copy_exact": 1, "copy_q35": 4, "copy_half": 7}
    for new_id, row in copies.items():
        original = photo(row, 120 + row, 120)
        payload = {"copy_exact": (data / "train" / f"{train['Id'][row]}.jpg").read_bytes(),
                   "copy_q35": encode(original, quality=35),
                   "copy_half": encode(resized(original, 0.5), quality=90)}[new_id]
        write(data / "train" / f"{new_id}.jpg", payload)
        extra = train.iloc[[row]].copy()
        extra["Id"], extra["Pawpularity"] = new_id, int(train["Pawpularity"][row]) + 10
        train = pd.concat([train, extra], ignore_index=True)
    train.to_csv(data / "train.csv", index=False)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data:\n  dir: {data}\n  folds_csv: {tmp_path / 'folds' / 'f.csv'}\n  n_folds: 3\n")
    return train, cfg, copies


def test_duplicates_are_reported_and_kept_in_one_fold(tmp_path, capsys):
    train, cfg, copies = _with_copies(tmp_path)
    assert main(["check-data", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "every image decodes" in out
    assert "duplicate photos: 3 groups of 6 train rows, each kept in one fold" in out
    assert "differs by up to 10 inside a group" in out
    assert (tmp_path / "folds" / "f.images.json").is_file()

    assert main(["folds", str(cfg)]) == 0
    folds = pd.read_csv(tmp_path / "folds" / "f.csv", dtype={"Id": str})
    for new_id, row in copies.items():
        pair = folds.set_index("Id").loc[[train["Id"][row], new_id]]
        assert pair["kfold"].nunique() == 1 and pair["group"].nunique() == 1 and (pair["group"] >= 0).all()
    assert (folds["group"] >= 0).sum() == 6

    # Same data and seed: the same folds file, whether the hashes come from the cache or are computed anew.
    before = (tmp_path / "folds" / "f.csv").read_bytes()
    (tmp_path / "folds" / "f.images.json").unlink()
    (tmp_path / "folds" / "f.csv").unlink()
    assert main(["folds", str(cfg)]) == 0
    assert (tmp_path / "folds" / "f.csv").read_bytes() == before

    # Off: no hash pass, plain stratified folds, no group column.
    assert main(["folds", str(cfg), "--set", "data.group_duplicates=false", "--set",
                 f"data.folds_csv={tmp_path / 'plain.csv'}"]) == 0
    assert "group" not in pd.read_csv(tmp_path / "plain.csv").columns


def test_merge_duplicates_leaves_one_row_per_group_with_the_mean_target(tmp_path, capsys):
    train, cfg, copies = _with_copies(tmp_path)
    assert main(["folds", str(cfg), "--set", "data.merge_duplicates=true"]) == 0
    folds = pd.read_csv(tmp_path / "folds" / "f.csv", dtype={"Id": str}).set_index("Id")
    assert len(folds) == 12 and not set(copies) & set(folds.index)
    for row in copies.values():
        # The copy's target is the original's + 10: the mean is the original's + 5.
        assert folds.loc[train["Id"][row], "Pawpularity"] == train["Pawpularity"][row] + 5
    sidecar = __import__("json").loads((tmp_path / "folds" / "f.json").read_text())
    assert sidecar["merge_duplicates"] is True
    assert sorted(sorted(ids) for ids in sidecar["duplicates"]["ids"]) == sorted(
        sorted([train["Id"][row], new_id]) for new_id, row in copies.items())


def test_check_data_names_every_truncated_and_empty_image(tmp_path, capsys):
    from tests.photos import write_data_set

    data = tmp_path / "data"
    train, test = write_data_set(data)
    truncated = data / "train" / f"{train['Id'][3]}.jpg"
    truncated.write_bytes(truncated.read_bytes()[:-300])
    (data / "test" / f"{test['Id'][2]}.jpg").write_bytes(b"")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data:\n  dir: {data}\n  folds_csv: {tmp_path / 'f.csv'}\n")
    assert main(["check-data", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"\nerror: {data}: 2 problems:\n" in f"\n{err}"
    assert f"train.csv row 4 (line 5), Id '{train['Id'][3]}': cannot decode image '{truncated}'" in err
    assert "truncated" in err
    assert f"test.csv row 3 (line 4), Id '{test['Id'][2]}': image " in err and "empty (0 bytes)" in err


NO_TENSORFLOW = """
import sys
from lresizervit.cli import main
code = main(sys.argv[1:])
print("EXIT", code, "TENSORFLOW", "tensorflow" in sys.modules, "KERAS", "keras" in sys.modules)
"""


@pytest.mark.parametrize("command", [["weights", "check"], ["cv"], ["report"]])
def test_commands_that_only_read_files_do_not_import_tensorflow(tiny_experiment, tmp_path, command):
    """train_folds.sh runs `weights check`, `cv` and `report` on every call; importing TensorFlow costs ~7 s
    each on a 2-core CPU, for a native backbone's check, a table of the folds' OOF files or the report's
    figures (the resizer's is drawn from what the trainer saved). On a copy: `cv` and `report` write, and
    other workers copy the shared experiment."""
    config = copy_experiment(tiny_experiment, tmp_path / "exp")
    proc = subprocess.run([sys.executable, "-c", NO_TENSORFLOW, *command, str(config)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "EXIT 0 TENSORFLOW False KERAS False"
    if command == ["report"]:
        report = (tmp_path / "exp" / "models" / "tiny" / "report" / "report.md").read_text()
        assert "![learned resizer output](resizer.png)" in report and "skipped" not in report
    else:
        assert "CV RMSE" in proc.stdout if command == ["cv"] else f"native {BACKBONE}" in proc.stdout


def test_a_preset_folder_that_is_gone_is_named_without_importing_tensorflow(tiny_experiment, tmp_path):
    """`weights check` (train_folds.sh's first step) on a keras_hub: folder that is not there, e.g. a
    fine-tuned experiment whose preset was not attached: the key and the folder are named in a second, as a
    path is never a preset name (the transfer test's `train_folds.sh --force` goes through it too)."""
    gone = tmp_path / "presets" / "pretrained"
    proc = subprocess.run([sys.executable, "-c", NO_TENSORFLOW, "weights", "check", str(tiny_experiment / "tiny.yaml"),
                           "--set", f"model.backbone.name=keras_hub:{gone}"], capture_output=True, text=True,
                          timeout=120)
    assert proc.stdout.strip().splitlines()[-1] == "EXIT 2 TENSORFLOW False KERAS False", proc.stderr[-2000:]
    assert f"model.backbone.name 'keras_hub:{gone}': no folder '{gone}'" in proc.stderr


def test_train_skips_a_complete_fold_and_refuses_bad_input_before_keras_starts(tiny_experiment, tmp_path):
    """`train` reads the folds file, the experiment's config, the fold's metrics and every image before Keras
    starts (training/preflight.py): train_folds.sh run again passes over a complete fold in a second or two,
    and a bad input is refused as fast, nothing of the experiment touched."""
    config = copy_experiment(tiny_experiment, tmp_path / "exp")
    fold = tmp_path / "exp" / "models" / "tiny" / "fold_1"
    before = {p.name: p.read_bytes() for p in fold.iterdir() if p.is_file()}

    def train(*args: str) -> tuple[subprocess.CompletedProcess, str]:
        proc = subprocess.run([sys.executable, "-c", NO_TENSORFLOW, "train", str(config), *args],
                              capture_output=True, text=True, timeout=120)
        return proc, proc.stdout.strip().splitlines()[-1]

    proc, last = train("--fold", "1")
    assert last == "EXIT 0 TENSORFLOW False KERAS False", proc.stderr[-2000:]
    assert f"fold 1: already trained ({fold / 'metrics.json'}); skipped" in proc.stdout
    proc, last = train("--fold", "1", "--force", "--set", "train.learning_rate=0.5")
    assert last == "EXIT 2 TENSORFLOW False KERAS False" and "train.learning_rate" in proc.stderr
    proc, last = train("--fold", "2")
    assert last == "EXIT 2 TENSORFLOW False KERAS False" and "which has folds 0..1" in proc.stderr
    victim = pd.read_csv(tmp_path / "exp" / "folds.csv", dtype={"Id": str})["Id"].iloc[3]
    (tmp_path / "exp" / "data" / "train" / f"{victim}.jpg").unlink()
    proc, last = train("--fold", "1", "--force")  # a retrain, refused before the fold's files are removed
    assert last == "EXIT 2 TENSORFLOW False KERAS False", proc.stderr[-2000:]
    assert victim in proc.stderr and "row 4" in proc.stderr
    assert {p.name: p.read_bytes() for p in fold.iterdir() if p.is_file()} == before
