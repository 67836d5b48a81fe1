"""`docs`: regenerate the reference pages (docs/reference/config.md, cli.md) from the code."""

from __future__ import annotations

from lresizervit.reference import DEFAULT_OUT  # standard library only at import


def cmd_docs(args) -> int | None:
    from lresizervit.reference import REGENERATE, stale_pages, write_pages

    if args.check:
        stale = stale_pages(args.out)
        for path in stale:
            print(f"stale: {path}")
        if stale:
            print(f"{len(stale)} reference page(s) differ from the code; regenerate with {REGENERATE}")
            return 1
        print(f"{args.out}: every reference page matches the code")
        return None
    for path, written in write_pages(args.out):
        print(f"wrote {path}" if written else f"{path}: up to date")
    return None


def register(sub) -> None:
    sp = sub.add_parser("docs", help="regenerate the reference pages (config keys, commands) from the code")
    sp.add_argument("--out", default=DEFAULT_OUT, help="folder of the pages, config.md and cli.md")
    sp.add_argument("--check", action="store_true",
                    help="write nothing; exit 1 listing the pages that differ from the code")
    sp.set_defaults(func=cmd_docs)
