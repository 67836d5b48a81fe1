"""Every module under src/ stays at most MAX_LINES long: past that, a module holds more than one idea and
should be split (as cli.py became commands/ and ensemble.py gave blend.py)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 450


def test_no_module_under_src_is_longer_than_the_limit():
    sizes = {p.relative_to(ROOT).as_posix(): len(p.read_text(encoding="utf-8").splitlines())
             for p in sorted((ROOT / "src").rglob("*.py"))}
    assert len(sizes) > 50  # the tree was found
    offenders = [f"{path}: {n} lines" for path, n in sorted(sizes.items(), key=lambda kv: -kv[1]) if n > MAX_LINES]
    assert not offenders, f"modules over {MAX_LINES} lines (split them by idea):\n" + "\n".join(offenders)
