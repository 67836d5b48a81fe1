"""`python -m lresizervit <command>`: one command per stage of config → folds → train → cv → predict.

Every command that takes a CONFIG also takes `--set section.key=value` overrides (repeatable).
A bad input ends with one line `error: ...` naming the file, row, column or key, and exit status 2; so does
a file that cannot be written (a full disk), naming it.

This module is the table of command groups and the error handling; each group's parsers live beside its
command functions in `lresizervit/commands/` (and `lresizervit/kaggle_io/commands.py`).
"""

from __future__ import annotations

import argparse
import errno
import sys

from lresizervit.commands import data, docs, evidence, prediction, runtime, training, weights
from lresizervit.commands.common import DEFAULT_CONFIG
from lresizervit.kaggle_io import commands as kaggle  # stdlib-only at import

__all__ = ["DEFAULT_CONFIG", "GROUPS", "build_parser", "main"]

# Each adds its commands' parsers to the subparsers, in this order (the order `--help` lists them).
GROUPS = (data.register, weights.register, training.register, prediction.register, evidence.register,
          kaggle.add_subparsers, runtime.register, docs.register)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lresizervit", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    for register in GROUPS:
        register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    from lresizervit.config import ConfigError
    from lresizervit.data.schema import SchemaError

    args = build_parser().parse_args(argv)
    expected = (ConfigError, SchemaError, FileNotFoundError, FileExistsError, ValueError)
    try:
        # A command returns None (success) or its own exit status (`docs --check`: 1 for stale pages).
        status = args.func(args)
    except expected as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # A full disk or a read-only folder: the file it names is the artefact (io_utils names it, not its
        # temp file); everything written before it is whole, so the same command is the fix.
        where = f"{exc.filename}: " if exc.filename else ""
        hint = ("; free some space and run the same command again (files written before are whole, and a fold "
                "resumes from its last completed epoch)") if exc.errno == errno.ENOSPC else ""
        print(f"error: {where}{exc.strerror or exc}{hint}", file=sys.stderr)
        return 2
    except Exception as exc:
        # An unreadable image surfaces inside tf.data as a TF error wrapping our ImageDecodeError:
        # report its one line (it names the file), not TF's traceback.
        line = next((ln.strip() for ln in str(exc).splitlines() if "cannot decode image" in ln), None)
        if line is None:
            raise
        print(f"error: {line.split('ImageDecodeError: ')[-1]}", file=sys.stderr)
        return 2
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
