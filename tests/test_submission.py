import numpy as np
import pandas as pd
import pytest

from lresizervit.inference.submission import SubmissionError, validate_file, write_submission
from tests.facts import META_COLUMNS, TASK

IDS = [f"{i:032x}" for i in range(1, 6)]


@pytest.fixture
def test_csv(tmp_path):
    df = pd.DataFrame(0, index=range(len(IDS)), columns=list(META_COLUMNS))
    df.insert(0, "Id", IDS)
    path = tmp_path / "test.csv"
    df.to_csv(path, index=False)
    return path


def test_write_clips_and_round_trips(tmp_path, test_csv):
    out = write_submission(IDS, [-5, 0.5, 50.25, 100, 250], IDS, tmp_path / "sub" / "s.csv", TASK)
    sub = pd.read_csv(out, dtype={"Id": str})
    assert list(sub.columns) == ["Id", "Pawpularity"]
    assert sub["Id"].tolist() == IDS
    np.testing.assert_allclose(sub["Pawpularity"], [1, 1, 50.25, 100, 100])
    assert validate_file(out, test_csv, TASK) == len(IDS)
    assert [p.name for p in out.parent.iterdir()] == ["s.csv"]  # no temp file left behind


def test_failed_check_keeps_the_earlier_file(tmp_path):
    out = tmp_path / "s.csv"
    write_submission(IDS, [10.0] * 5, IDS, out, TASK)
    before = out.read_bytes()
    with pytest.raises(SubmissionError, match=r"row 3, column Pawpularity: nan"):
        write_submission(IDS, [10, 10, np.nan, 10, 10], IDS, out, TASK)
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["s.csv"]


@pytest.mark.parametrize(
    "body,message",
    [
        ("Id,Pawpularity\n" + "".join(f"{i},10\n" for i in IDS[:4]), "has 4 rows but the test set has 5"),
        ("Id,Pawpularity\n" + "".join(f"{i},10\n" for i in [*IDS[:4], IDS[0]]), "row 5: Id .* repeats row 1"),
        ("Id,Pawpularity\n" + "".join(f"{i},10\n" for i in [*IDS[:4], "f" * 32]), "row 5: Id f+ is not in the test set"),
        ("Id,Pawpularity\n" + "".join(f"{i},10\n" for i in reversed(IDS)), "row 1: Ids are not in test.csv's order"),
        ("Id,Pawpularity\n" + "".join(f"{i},{v}\n" for i, v in zip(IDS, [1, 2, 0.5, 4, 5], strict=True)), r"row 3, column Pawpularity: 0.5 is outside"),
        ("Id,Pawpularity\n" + "".join(f"{i},{v}\n" for i, v in zip(IDS, [1, 2, 3, "inf", 5], strict=True)), "row 4, column Pawpularity"),
        ("Id,Pawpularity\n" + "".join(f"{i},{v}\n" for i, v in zip(IDS, [1, 2, 3, 4, "abc"], strict=True)), "row 5, column Pawpularity: 'abc'"),
        ("Id,target\n" + "".join(f"{i},10\n" for i in IDS), "header must be Id,Pawpularity"),
    ],
)
def test_validator_rejects_bad_files_naming_the_row(tmp_path, test_csv, body, message):
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(SubmissionError, match=message) as e:
        validate_file(path, test_csv, TASK)
    assert "bad.csv" in str(e.value)


def test_validator_missing_and_unreadable(tmp_path, test_csv):
    with pytest.raises(SubmissionError, match="file not found"):
        validate_file(tmp_path / "nope.csv", test_csv, TASK)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(SubmissionError, match="empty.csv: not a readable CSV"):
        validate_file(tmp_path / "empty.csv", test_csv, TASK)
