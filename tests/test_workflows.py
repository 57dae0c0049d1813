"""The GitHub workflows: triggers, permissions, pinned actions and torch, and commands that exist.

The submission workflow must judge with the base commit's code: install the validator from a
checkout of the base commit, read the pull request only through `iclbench.submissions.pr_check`, and
compute the leaderboard itself.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from iclbench.leaderboard import findings
from iclbench.submissions import pr_check
from iclbench.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
NAMES = ("submissions", "pages", "tests")
README = (ROOT / "README.md").read_text()
CPU_INDEX = "--index-url https://download.pytorch.org/whl/cpu"


def load(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((WORKFLOWS / f"{name}.yml").read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as true
    return doc


def steps(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in doc["jobs"].values() for step in job["steps"]]


def commands(doc: dict[str, Any]) -> list[str]:
    """Every shell command of the workflow's `run:` steps, continuation lines joined."""
    text = "\n".join(step["run"] for step in steps(doc) if "run" in step)
    return [line.strip() for line in text.replace("\\\n", " ").splitlines() if line.strip()]


def test_every_workflow_is_listed() -> None:
    assert sorted(p.stem for p in WORKFLOWS.glob("*.yml")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_actions_are_pinned_by_commit(name: str) -> None:
    lines = [line for line in (WORKFLOWS / f"{name}.yml").read_text().splitlines() if "uses:" in line]
    assert lines
    for line in lines:
        assert re.fullmatch(r"\s*(- )?uses: [\w.-]+/[\w.-]+@[0-9a-f]{40} # v\d+(\.\d+)*", line), line


@pytest.mark.parametrize("name", NAMES)
def test_no_pull_request_target_and_no_credentials_kept(name: str) -> None:
    doc = load(name)
    assert "pull_request_target" not in doc["on"] and "workflow_run" not in doc["on"]
    assert doc["permissions"]["contents"] == "read"
    assert all("permissions" not in job for job in doc["jobs"].values())
    for step in steps(doc):
        if step.get("uses", "").startswith("actions/checkout@"):
            assert step["with"]["persist-credentials"] is False


@pytest.mark.parametrize("name", NAMES)
def test_torch_is_pinned_as_in_the_readme_from_the_cpu_index(name: str) -> None:
    (pin,) = set(re.findall(r"torch==[\w.+]+", README))
    installs = [c for c in commands(load(name)) if re.search(r"pip install .*\btorch\b", c)]
    assert installs
    assert all(c.endswith(f"pip install {pin} {CPU_INDEX}") for c in installs)


@pytest.mark.parametrize("name", NAMES)
def test_iclbench_commands_exist(name: str) -> None:
    """Every `iclbench ...` and `python -I -m iclbench.submissions.pr_check ...` line parses with today's command line."""
    found = 0
    for line in commands(load(name)):
        inner = re.fullmatch(r"\w+=\$\((.*)\)", line)  # folder=$(python ...)
        text = inner.group(1) if inner else line
        if not re.match(r"iclbench |python -I -m iclbench\.", text):
            continue
        words = shlex.split(text)
        if words[0] == "iclbench":
            build_parser().parse_args(words[1:])
            found += 1
        else:
            assert words[:4] == ["python", "-I", "-m", "iclbench.submissions.pr_check"], text
            pr_check.build_parser().parse_args(words[4:])
            found += 1
    assert found or name == "tests"


def test_submissions_judges_with_the_base_commit() -> None:
    doc = load("submissions")
    assert list(doc["on"]) == ["pull_request"]
    assert doc["permissions"] == {"contents": "read"}
    checkouts = {s["with"]["path"]: s["with"] for s in steps(doc) if s.get("uses", "").startswith("actions/checkout@")}
    assert checkouts["base"]["ref"] == "${{ github.event.pull_request.base.sha }}"
    assert "ref" not in checkouts["pr"]  # the merge commit of the pull request
    run = commands(doc)
    installs = [c for c in run if "pip install" in c and "torch" not in c]
    assert installs == ["python -m pip install ./base"]  # the judge; nothing from the pull request
    (scope,) = [c for c in run if "iclbench.submissions.pr_check" in c]
    assert "python -I -m iclbench.submissions.pr_check --repo pr --base \"$BASE_SHA\" --head \"$GITHUB_SHA\"" in scope
    assert "--extract" in scope
    assert 'iclbench validate "$FOLDER" --rerun --samples "$RUNNER_TEMP/board/samples"' in run
    (board,) = [c for c in run if c.startswith("iclbench leaderboard")]
    assert "--run-baselines" in board and "--check" not in board
    assert "--samples samples" in board  # relative to $RUNNER_TEMP/board, where the board is built
    assert not any(re.search(r"(^|[\s/])pr/", c) for c in run if c not in (scope,))  # pr/ is read by pr_check only


def test_pages_builds_everything() -> None:
    doc = load("pages")
    assert set(doc["on"]) == {"push", "workflow_dispatch"} and doc["on"]["push"] == {"branches": ["main"]}
    (board,) = [c for c in commands(doc) if c.startswith("iclbench leaderboard")]
    words = shlex.split(board)
    assert "--run-baselines" in words
    site = words[words.index("--out") + 1]
    (upload,) = [s for s in steps(doc) if s.get("uses", "").startswith("actions/upload-pages-artifact@")]
    assert upload["with"]["path"] == site.replace("$RUNNER_TEMP", "${{ runner.temp }}")
    baselines = words[words.index("--baselines") + 1]
    assert baselines.startswith("$RUNNER_TEMP/")  # scored here, never taken from the repository
    samples = words[words.index("--samples") + 1]  # CI's re-runs of every submission, never a submitter's file
    reruns = [shlex.split(c) for c in commands(doc) if c.startswith("iclbench validate")]
    assert reruns and all("--rerun" in w and w[w.index("--samples") + 1] == samples for w in reruns)


def test_pages_checks_the_findings_against_the_baselines_it_scored() -> None:
    run = commands(load("pages"))
    (board,) = [i for i, c in enumerate(run) if c.startswith("iclbench leaderboard")]
    (check,) = [i for i, c in enumerate(run) if c.startswith("python -m iclbench.leaderboard.findings")]
    assert check > board
    args = findings.build_parser().parse_args(shlex.split(run[check])[3:])
    assert args.check and not args.no_checkpoints
    words = shlex.split(run[board])
    assert args.baselines == Path(words[words.index("--baselines") + 1])
    assert args.submissions == Path("submissions") and args.out == Path("docs/findings")


def test_tests_runs_the_readme_command() -> None:
    doc = load("tests")
    assert set(doc["on"]) == {"push", "pull_request"}
    assert commands(doc)[-1] == ".ci/run"
    readme_command = re.search(r"## Development\n\n```bash\n(.+)\n```", README).group(1)
    assert (ROOT / ".ci" / "run").read_text().splitlines()[-1] == readme_command
