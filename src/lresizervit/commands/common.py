"""What several command groups share: the default config, `CONFIG [--set KEY=VALUE]` arguments, and
printing a benchmark's table."""

from __future__ import annotations

from pathlib import Path

DEFAULT_CONFIG = "configs/default.yaml"


def config(args):
    """The config of `args.config` (default: configs/default.yaml where it exists, else the defaults) with
    the `--set` overrides applied."""
    from lresizervit.config import load_config

    path = args.config
    if path is None and Path(DEFAULT_CONFIG).is_file():
        path = DEFAULT_CONFIG
    return load_config(path, tuple(args.set or ()))


def with_config(sp):
    """Add the optional CONFIG positional and `--set` to a command's parser."""
    sp.add_argument("config", nargs="?", help=f"experiment YAML (default: {DEFAULT_CONFIG})")
    sp.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    return sp


def count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def emit(args, result: dict, table: str) -> None:
    """Print a benchmark's table; also write it (--md) and the raw figures (--json), atomically."""
    from lresizervit.io_utils import atomic_write_json, atomic_write_text

    if args.json:
        atomic_write_json(args.json, result)
    if args.md:
        atomic_write_text(args.md, table + "\n")
    print(table)
