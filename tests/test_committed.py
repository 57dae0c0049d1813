"""The repository's own sources of truth agree with the suite: every committed submission is valid and of the
current suite version and data, the site builds from them, nothing generated is committed, and the findings'
numbers that come from the submissions are rebuilt from them. (The findings' baseline numbers are checked by
the pages workflow, after it scores the baselines: `python -m iclbench.leaderboard.findings --check`.)"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest

from iclbench import results
from iclbench.leaderboard import build as leaderboard, findings
from iclbench.plugins import baseline_names
from iclbench.submissions import schema as submission
from iclbench.tasks import SUITE_VERSION

ROOT = Path(__file__).resolve().parents[1]
SUBMISSIONS = ROOT / "submissions"
GENERATED = ("leaderboard/index.html", "results/baselines/gd.json", ".iclbench-submit-x/model.py")
"""Where `iclbench leaderboard`, `--run-baselines` and `iclbench submit` write what is never committed."""


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout


@pytest.mark.parametrize("path", sorted(SUBMISSIONS.glob("*/results.json")), ids=str)
def test_committed_results_are_of_this_suite(path: Path) -> None:
    doc = results.read(path)
    assert doc["suite_version"] == SUITE_VERSION
    assert submission.check_results(doc, str(path)) == []


@pytest.mark.parametrize("folder", sorted(p.parent for p in SUBMISSIONS.glob("*/submission.yaml")), ids=str)
def test_committed_submissions_validate(folder: Path) -> None:
    assert submission.validate(folder) == []


def test_the_site_builds_from_them(tmp_path: Path) -> None:
    assert leaderboard.check(SUBMISSIONS, tmp_path / "no-baselines") == []


def test_generated_files_are_not_committed() -> None:
    assert git("ls-files", "leaderboard", "results") == ""
    for path in GENERATED:
        assert git("check-ignore", path).strip() == path  # fails (exit 1) when git would track it
    assert leaderboard.SITE.as_posix() == "leaderboard" and leaderboard.BASELINES.as_posix() == "results/baselines"


def leaves(doc: Any, where: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(path, value) of every value of a numbers.json that is not a mapping (lists whole)."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from leaves(v, (*where, str(k)))
    else:
        yield where, doc


def from_baselines(path: tuple[str, ...]) -> bool:
    """Whether a numbers.json field is about a baseline: a part names one (`gd`, `ista (8 iterations)`) or is
    a baseline's quantity (`gd_first`, `newton_steps_to_match`)."""
    names = set(baseline_names())
    return any(part in names or part.split("_")[0] in names or part.split(" ")[0] in names for part in path)


def test_findings_numbers_from_submissions_are_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rebuilt without baselines, every number equals the committed one, except those about baselines: null or
    absent (a length table of a baseline is empty)."""
    monkeypatch.chdir(ROOT)  # numbers.json names its inputs as given on the command line
    built = dict(leaves(findings.build(SUBMISSIONS.relative_to(ROOT), Path("results/none"), tmp_path)))
    committed = dict(leaves(json.loads((ROOT / "docs" / "findings" / "numbers.json").read_text())))
    assert built.keys() <= committed.keys()
    about_baselines = {p for p, v in committed.items() if built.get(p) is None and v is not None}
    assert about_baselines and all(from_baselines(p) for p in about_baselines), sorted(about_baselines)
    assert {p[0] for p in about_baselines} == {"q1", "q2", "q3", "q4", "q7"}  # q5 holds alignments of submissions alone
    inputs = {("inputs", "baselines"), ("inputs", "models")}
    assert {p: v for p, v in built.items() if p not in about_baselines | inputs} == {  # exact: the same files
        p: v for p, v in committed.items() if p not in about_baselines | inputs
    }
    submissions = {json.loads((f / "results.json").read_text())["model"]["name"] for f in SUBMISSIONS.iterdir() if f.is_dir()}
    assert set(built["inputs", "models"]) == submissions <= set(committed["inputs", "models"])
