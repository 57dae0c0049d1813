"""The repository's own results agree with the suite: every committed results file is of the current
suite version and data, the committed leaderboard is built from them, and so are the findings' numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iclbench import results
from iclbench.leaderboard import build as leaderboard, findings
from iclbench.submissions import schema as submission
from iclbench.tasks import SUITE_VERSION

ROOT = Path(__file__).resolve().parents[1]
SUBMISSIONS, BASELINES = ROOT / "submissions", ROOT / "leaderboard" / "baselines"


@pytest.mark.parametrize("path", sorted([*SUBMISSIONS.glob("*/results.json"), *BASELINES.glob("*.json")]), ids=str)
def test_committed_results_are_of_this_suite(path: Path) -> None:
    doc = results.read(path)
    assert doc["suite_version"] == SUITE_VERSION
    assert submission.check_results(doc, str(path)) == []


@pytest.mark.parametrize("folder", sorted(p.parent for p in SUBMISSIONS.glob("*/submission.yaml")), ids=str)
def test_committed_submissions_validate(folder: Path) -> None:
    assert submission.validate(folder) == []


def test_committed_leaderboard_is_built_from_them() -> None:
    assert leaderboard.check(SUBMISSIONS, BASELINES, ROOT / "leaderboard") == []


def test_findings_numbers_are_built_from_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # numbers.json names its inputs as given on the command line
    findings.build(SUBMISSIONS.relative_to(ROOT), BASELINES.relative_to(ROOT), tmp_path)
    committed = json.loads((ROOT / "docs" / "findings" / "numbers.json").read_text())
    assert json.loads((tmp_path / "numbers.json").read_text()) == committed
