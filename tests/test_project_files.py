"""The files every package has: a licence matching pyproject's, a valid citation file, a changelog with the
versioning policy, and default outputs ignored by git."""

from __future__ import annotations

import datetime
import re
import subprocess
import tomllib
from pathlib import Path

import yaml

import iclbench
from iclbench.tasks import FAMILIES

ROOT = Path(__file__).resolve().parents[1]


def test_the_licence_is_the_one_pyproject_declares() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]
    text = (ROOT / "LICENSE").read_text()
    assert declared == "MIT" and text.startswith("MIT License\n")
    assert "Permission is hereby granted, free of charge" in text and 'THE SOFTWARE IS PROVIDED "AS IS"' in text


def test_the_citation_file_names_this_version() -> None:
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "MIT"
    assert cff["version"] == iclbench.__version__
    assert cff["message"] and cff["title"].startswith("iclbench") and all(a.get("name") for a in cff["authors"])


def test_the_citation_file_is_complete_and_agrees_with_pyproject_and_the_readme() -> None:
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    repository = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
    assert cff["repository-code"] == cff["url"] == repository and repository in (ROOT / "README.md").read_text()
    assert datetime.date.fromisoformat(str(cff["date-released"])) <= datetime.date.today()
    missing = [f for f in FAMILIES if not re.search(rf"\b{f}\b", cff["abstract"], re.IGNORECASE)]
    assert not missing, f"the abstract does not name the families {missing}"


def test_the_changelog_states_the_policy_and_the_versions() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    assert "## Versioning policy" in text and "**The suite version**" in text and "**The package version**" in text
    assert f"## {iclbench.__version__} (suite {iclbench.SUITE_VERSION})" in text


def test_default_outputs_are_ignored_by_git() -> None:
    paths = ["results/ridge.json", "runs/lsa1/state.safetensors", "out/ridge.samples.safetensors"]
    proc = subprocess.run(["git", "check-ignore", *paths], cwd=ROOT, capture_output=True, text=True)
    assert proc.stdout.split() == paths
