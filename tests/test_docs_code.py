"""Every Python block of the docs runs as written.

Each page's ```python blocks run in order in one fresh interpreter (later blocks use the names of earlier ones),
in a temporary directory. A block that cannot run in the test suite says so, with its reason, in an HTML comment
on the line before its fence, ``<!-- not run in the tests: REASON -->``; it is still compiled, so its syntax is
checked. README.md's blocks run in tests/test_readme.py; this file checks that each of them lies in a section
that test runs.
"""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SKIP = re.compile(r"<!-- not run in the tests: (?P<reason>[^>]*\S)\s*-->\s*\n```python\n")
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
SLOW = {"surgery.md": "exports and runs an ONNX model"}


def blocks(text: str) -> list[tuple[str, str | None]]:
    """(code, skip reason or None) of each ```python block, in order."""
    out = []
    for m in BLOCK.finditer(text):
        before = text[:m.start() + len("```python\n")]
        skip = SKIP.search(before[-300:])
        out.append((m.group(1), skip.group("reason") if skip and before.endswith(skip.group(0)) else None))
    return out


PAGES = sorted(p for p in DOCS.rglob("*.md") if BLOCK.search(p.read_text()))


def test_the_block_finder_sees_skips_and_fences():
    text = ("x\n```python\na = 1\n```\n<!-- not run in the tests: needs a GPU -->\n```python\nb = a\n```\n"
            "```bash\nls\n```\n")
    assert blocks(text) == [("a = 1\n", None), ("b = a\n", "needs a GPU")]
    assert blocks("<!-- not run in the tests:  -->\n```python\nc = 2\n```\n") == [("c = 2\n", None)]


def test_the_pages_with_code_are_found():
    names = {p.relative_to(DOCS).as_posix() for p in PAGES}
    assert {"usage.md", "surgery.md", "results/README.md"} <= names


@pytest.mark.parametrize("page", [pytest.param(p, id=p.relative_to(DOCS).as_posix(), marks=(
    [pytest.mark.slow] if p.name in SLOW else [])) for p in PAGES])
def test_page_code_runs(page, tmp_path):
    found = blocks(page.read_text())
    for code, _ in found:
        compile(code, str(page), "exec")
    run = "\n".join(code for code, reason in found if reason is None)
    if not run:
        pytest.skip("every block of this page is marked not run: "
                    + "; ".join(reason for _, reason in found))
    r = subprocess.run([sys.executable, "-c", run + "\nprint('docs-block-ok')\n"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.rstrip().endswith("docs-block-ok")


def test_readme_blocks_are_in_the_sections_test_readme_runs():
    readme = (ROOT / "README.md").read_text()
    ran = [readme[readme.index("## API at a glance"):readme.index("## Performance")],
           readme[readme.index("## Model surgery"):]]
    for code, reason in blocks(readme):
        assert reason is None and any(code in section for section in ran), code[:200]
