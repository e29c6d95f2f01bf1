"""The docs read as documentation: no sentence dates itself or refers to an issue, the main command's run time is
stated once and the same everywhere, the glossary is linked, and every figure is shown somewhere.

Checked: README.md and every Markdown page under docs/, generated reports included. Not checked: the bench
records (docs/bench/*.json) and the results rows (docs/results/*/results.jsonl), whose fields hold the UTC time
and the git commit of each measurement or run by design: that is their provenance, not prose.
"""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

DATED = {
    "an issue number": r"\bissues? ?#?\d",
    "the issue": r"\bthe issue(?:'s)?\b",
    "a revision": r"\b(?:this|the previous|an? earlier|the last) (?:revision|session|run of the machine)\b",
    "a branch at a commit": r"\bmain at [0-9a-f]{7}",
    "a commit hash": r"\bcommits? [0-9a-f]{7,40}\b",
    "today": r"\btoday\b",
    "a date": r"\b20\d\d-\d\d-\d\d\b",
    "a day of the machine": r"\b(?:faster|slower|busier|slow|fast) days?\b",
}

RUN_TIME = "13-16 min of training on 2 cores"


def _hits(text: str) -> list[str]:
    return [f"{what}: {m.group(0)!r}" for what, rx in DATED.items() for m in re.finditer(rx, text, re.I)]


def test_the_patterns_catch_what_they_name():
    bad = ("As issue 13 says, this revision (main at 5bdfa50, commit 1c808e5) ran on 2026-12-07, a faster day; "
           "today it is slower than in the previous session. The issue's estimate.")
    assert {h.split(":")[0] for h in _hits(bad)} == set(DATED)
    assert not _hits("The 2,000 held-out images; 13-16 min; model 207; a fresh run; the issues of a tracker.")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_sentence_dates_itself(page):
    assert _hits(page.read_text()) == []


def test_one_run_time_for_the_main_command():
    help_text = subprocess.run([sys.executable, "-m", "groupnorm", "reproduce", "--help"], capture_output=True,
                               text=True, check=True).stdout
    for where, text in (("README.md", (ROOT / "README.md").read_text()),
                        ("scripts/reproduce.sh", (ROOT / "scripts" / "reproduce.sh").read_text()),
                        ("docs/results/README.md", (ROOT / "docs" / "results" / "README.md").read_text()),
                        ("groupnorm reproduce --help", help_text)):
        assert RUN_TIME in " ".join(text.replace("#", " ").split()), where
    # and no other statement of it survives
    for page in PAGES + [ROOT / "scripts" / "reproduce.sh"]:
        assert not re.search(r"<= ?15 min|15-minute budget", page.read_text()), page


def test_the_glossary_is_linked_from_the_readme_and_the_usage_page():
    assert "(docs/glossary.md)" in (ROOT / "README.md").read_text()
    assert "(glossary.md)" in (ROOT / "docs" / "usage.md").read_text()


def test_every_figure_is_shown_on_some_page():
    linked = "\n".join(p.read_text() for p in PAGES)
    for fig in (ROOT / "docs" / "figures").glob("*"):
        assert f"figures/{fig.name}" in linked, fig
