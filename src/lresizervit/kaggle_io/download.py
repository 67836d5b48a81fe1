"""`kaggle download`: a competition's files, fetched by the client and unzipped into place atomically."""

from __future__ import annotations

import contextlib
import os
import shutil
import zipfile
from pathlib import Path

from lresizervit.kaggle_io.client import KaggleError, client_error, connect


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


def download_competition(competition: str, dest: str | os.PathLike = "input", force: bool = False) -> Path:
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
        raise client_error(exc, f"downloading {competition}", competition) from None
    archives = sorted(partial.glob("*.zip"))
    if not archives:
        found = ", ".join(p.name for p in partial.iterdir()) or "nothing"
        raise KaggleError(f"{partial}: the download left no zip file ({found})")
    names = install_archive(archives[0], final)
    shutil.rmtree(partial, ignore_errors=True)
    shown = ", ".join(names[:8]) + (f", ... ({len(names)} entries)" if len(names) > 8 else "")
    print(f"wrote {final}: {shown}")
    return final
