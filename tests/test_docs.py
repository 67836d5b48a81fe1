"""The documentation holds: the generated reference pages match the code, and every relative link and
#anchor in the markdown files points somewhere."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lresizervit.cli import build_parser, main
from lresizervit.config import Config
from lresizervit.reference import DEFAULT_OUT, config_sections, field_comments, pages, stale_pages

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------- generated pages

def test_reference_pages_match_the_code():
    stale = [str(p.relative_to(ROOT)) for p in stale_pages(ROOT / DEFAULT_OUT)]
    assert not stale, f"stale reference pages {stale}: run `python -m lresizervit docs` (or `make docs`)"


def test_docs_command_writes_the_pages_and_check_lists_stale_ones(tmp_path, capsys):
    out = tmp_path / "reference"
    assert main(["docs", "--check", "--out", str(out)]) == 1  # nothing there yet: both stale
    printed = capsys.readouterr().out
    assert f"stale: {out / 'config.md'}" in printed and f"stale: {out / 'cli.md'}" in printed

    assert main(["docs", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["cli.md", "config.md"]  # no temp file left
    assert (out / "cli.md").read_text() == pages()["cli.md"]
    assert main(["docs", "--check", "--out", str(out)]) == 0

    (out / "config.md").write_text((out / "config.md").read_text().replace("Seed of", "Sead of"))
    capsys.readouterr()
    assert main(["docs", "--check", "--out", str(out)]) == 1
    assert capsys.readouterr().out.splitlines()[0] == f"stale: {out / 'config.md'}"
    assert main(["docs", "--out", str(out)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"wrote {out / 'config.md'}", f"{out / 'cli.md'}: up to date"]


def test_generation_depends_on_the_code_only(tmp_path):
    # Another working directory and terminal width: the same bytes, and no path of this machine in them.
    code = "import json; from lresizervit.reference import pages; print(json.dumps(pages()))"
    env = {**os.environ, "COLUMNS": "37", "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120, check=True)
    import json

    assert json.loads(proc.stdout) == pages()
    for text in pages().values():
        assert str(ROOT) not in text and str(Path.home()) not in text


def _flat_keys(tree: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in tree.items():
        if isinstance(value, dict):
            out += _flat_keys(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}")
    return out


def test_every_config_key_has_a_documented_row():
    documented = {k.name: k for s in config_sections() for k in s.keys}
    assert sorted(documented) == sorted(_flat_keys(Config().to_dict()))
    assert all(k.doc for k in documented.values())
    page = pages()["config.md"]
    assert ("| `model.resizer.mode` | `str`: one of `learned`, `bilinear`, `none`, `conv_after_resize` | `learned` | "
            "\"learned\": the Talebi & Milanfar resizer;") in page
    assert "| `train.backbone_learning_rate` | `float \\| None` | `null` | Fine-tuning a pretrained backbone" in page
    assert "| `task.image_path` | `str` | `'{split}/{id}.jpg'` |" in page


@dataclasses.dataclass
class _Commented:
    # Two lines of comment
    # make one text.
    a: int = 1
    # A comment cut off by a blank line belongs to nothing.

    b: str = "x"  # an inline comment is not the documentation
    c: float = 0.5


def test_field_comments_are_the_full_line_comments_right_above_a_field():
    assert field_comments(_Commented) == {"a": "Two lines of comment make one text.", "b": "", "c": ""}


def test_every_command_and_argument_is_on_the_cli_page():
    import argparse

    page = pages()["cli.md"]

    def walk(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    title = " ".join([*path, name])
                    assert f"#{'#' * len(path)} `{title}`\n" in page
                    walk(child, [*path, name])
            elif action.option_strings and action.help != argparse.SUPPRESS and "-h" not in action.option_strings:
                assert f"| `{', '.join(action.option_strings)}" in page, (path, action.option_strings)

    walk(build_parser(), [])
    assert "| `--svr, --no-svr` | flag |  | add (or not) each experiment's SVR head" in page
    assert "| `--split SPLIT` | one of `train`, `test`, `both` | `both` |" in page
    assert "python -m lresizervit kaggle submit file -m MESSAGE [--config CONFIG] [--set KEY=VALUE ...]" in page


# ---------------------------------------------------------------------------------------- markdown links

def markdown_files(root: Path) -> list[Path]:
    """README.md, the other READMEs that ship with the code, and every page under docs/."""
    files = [root / "README.md", *sorted((root / "docs").rglob("*.md"))]
    return files + [p for p in (root / "kaggle" / "README.md", root / "input" / "README.md") if p.is_file()]


_FENCE = re.compile(r"^\s*(```|~~~)")
_ATX = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
_HTML_ANCHOR = re.compile(r"<a\s+[^>]*(?:name|id)=\"([^\"]+)\"", re.IGNORECASE)
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")


def _prose_lines(text: str):
    """(line number, line) outside fenced code blocks."""
    fenced = False
    for n, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield n, line


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading's text: the rendered text (markup dropped) lowercased, every character
    but letters, digits, spaces, '-' and '_' removed, each space turned into '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "")
    text = re.sub(r"(\*\*|__|\*|\b_|_\b|~~)", "", text)
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every #anchor a markdown page has: its headings (a repeated one gets -1, -2, ...) and HTML anchors."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    previous = ""
    for _, line in _prose_lines(text):
        heading = None
        m = _ATX.match(line)
        if m:
            heading = m.group(2)
        elif previous.strip() and not previous.lstrip().startswith(("|", "-", "*", ">")) \
                and re.fullmatch(r" {0,3}(=+|-+)\s*", line):
            heading = previous.strip()  # a setext heading: the line above, underlined
        if heading is not None:
            slug = github_slug(heading)
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            out.add(slug if n == 0 else f"{slug}-{n}")
        out.update(a for a in _HTML_ANCHOR.findall(line))
        previous = line
    return out


def links(text: str):
    """(line number, target) of every inline link, image and reference definition outside code."""
    for n, line in _prose_lines(text):
        prose = _CODE_SPAN.sub("", line)
        for target in _INLINE_LINK.findall(prose):
            yield n, target
        m = _REFERENCE_DEFINITION.match(prose)
        if m:
            yield n, m.group(1)


def broken_links(files: list[Path], root: Path) -> list[str]:
    """'file:line: target (why)' for every relative link whose file does not exist or whose #anchor is no
    heading of its page; links to the web are not followed."""
    problems = []
    cache: dict[Path, set[str]] = {}
    for md in files:
        text = md.read_text(encoding="utf-8")
        for n, target in links(text):
            if not target or re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("//"):
                continue  # http:, https:, mailto:, ...
            path_part, _, anchor = target.partition("#")
            dest = (md.parent / path_part).resolve() if path_part else md
            where = f"{md.relative_to(root)}:{n}: {target}"
            if not dest.exists():
                problems.append(f"{where} (no such file)")
            elif anchor and dest.suffix == ".md":
                if dest not in cache:
                    cache[dest] = anchors(dest.read_text(encoding="utf-8"))
                if anchor not in cache[dest]:
                    problems.append(f"{where} (no heading with that anchor in {dest.name})")
    return problems


@pytest.mark.parametrize(("heading", "slug"), [
    ("Your own data set: the task section", "your-own-data-set-the-task-section"),
    ("Pretrained backbones: keras-hub presets", "pretrained-backbones-keras-hub-presets"),
    ("`model.resizer`", "modelresizer"),
    ("6. Transfer: **pretrained** vs [scratch](x.md)", "6-transfer-pretrained-vs-scratch"),
    ("What `make demo` does and prints", "what-make-demo-does-and-prints"),
    ("Speed (CPU, 2 cores) — figures", "speed-cpu-2-cores--figures"),
    ("snake_case_name and CamelCase", "snake_case_name-and-camelcase"),
])
def test_github_slug(heading, slug):
    assert github_slug(heading) == slug


def test_the_link_checker_finds_missing_files_and_anchors(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Other page\n\n## Setup\n\n## Setup\n\nSub\n---\n")
    (tmp_path / "README.md").write_text(
        "# Top\n\n## Usage: the basics\n\n"
        "[ok](#usage-the-basics) [ok](docs/other.md#setup-1) [ok](docs/other.md#sub) [ok](docs/)\n"
        "[bad](#usage) [bad](docs/other.md#setup-2) [bad](docs/missing.md) ![bad](img/x.png)\n"
        "`[code](nowhere.md)` [web](https://example.com/#x)\n\n"
        "```\n[fenced](nowhere.md)\n```\n\n[ref]: docs/gone.md\n")
    found = broken_links(markdown_files(tmp_path), tmp_path)
    assert found == [
        "README.md:6: #usage (no heading with that anchor in README.md)",
        "README.md:6: docs/other.md#setup-2 (no heading with that anchor in other.md)",
        "README.md:6: docs/missing.md (no such file)",
        "README.md:6: img/x.png (no such file)",
        "README.md:13: docs/gone.md (no such file)",
    ]


def test_every_relative_link_and_anchor_in_the_docs_resolves():
    files = markdown_files(ROOT)
    assert ROOT / "docs" / "reference" / "cli.md" in files
    broken = broken_links(files, ROOT)
    assert not broken, "broken links:\n" + "\n".join(broken)
