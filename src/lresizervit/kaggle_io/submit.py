"""`kaggle submit`: a submission checked against test.csv, then sent by the client (as a file, or as the
output of a notebook for a code competition)."""

from __future__ import annotations

import os
from pathlib import Path

from lresizervit.kaggle_io.client import KaggleError, client_error, connect


def submit(file: str | os.PathLike, message: str, competition: str, test_csv: str | os.PathLike, task,
           kernel: str | None = None, kernel_version: int | None = None) -> str:
    """Check the submission against test.csv, then submit it (as a file, or as the output of a kernel
    for a code competition); returns Kaggle's answer."""
    from lresizervit.inference.submission import validate_file

    if not message.strip():
        raise KaggleError("the submission message (-m) is empty")
    if not Path(test_csv).is_file():
        raise FileNotFoundError(f"{test_csv}: test.csv not found, so {file} cannot be checked before it is "
                                f"submitted (pass --test-csv, or download the data: python -m lresizervit "
                                f"kaggle download)")
    n = validate_file(file, test_csv, task)
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
        raise client_error(exc, f"submitting to {competition}", competition) from None
    answer = getattr(response, "message", "") or ""
    if answer == getattr(api, "COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE", None):
        raise KaggleError(f"submitting to {competition} failed: {answer}")
    return answer or "submitted"
