"""A checkpoint on the Hub, resolved offline by the real `hf_hub_download` from a cache laid out on disk."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures.submission_kit import make_submission, write_meta

from iclbench.plugins import sha256_file

REPO = "iclbench-tests/tiny-gd"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def hub_submission(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A submission whose checkpoint is declared on the Hub, and a Hub cache holding that file at COMMIT."""
    root = tmp_path_factory.mktemp("hub")
    folder = make_submission(root / "submissions" / "tiny-gd")
    weights = folder / "weights.safetensors"
    digest = sha256_file(weights)
    repo = root / "hf" / "hub" / f"models--{REPO.replace('/', '--')}"
    (repo / "blobs").mkdir(parents=True)
    shutil.move(weights, repo / "blobs" / digest)
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (snapshot / "weights.safetensors").symlink_to(Path("..", "..", "blobs", digest))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    write_meta(
        folder, checkpoint={"repo_id": REPO, "filename": "weights.safetensors", "revision": COMMIT, "sha256": digest}
    )
    return folder, root / "hf"


def validate_offline(folder: Path, hf_home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`iclbench validate` in a fresh process, offline, with the Hub cache under `hf_home`."""
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_CACHE": str(hf_home / "hub"), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "iclbench.cli", "validate", str(folder), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def test_hub_checkpoint_validates_and_reruns_offline(hub_submission: tuple[Path, Path]) -> None:
    folder, hf_home = hub_submission
    done = validate_offline(folder, hf_home, "--rerun", "--tasks", "kernel/linear")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "valid (re-run matches)" in done.stdout


def test_unpinned_or_uncached_revision_fails_clearly(hub_submission: tuple[Path, Path], tmp_path: Path) -> None:
    folder, hf_home = hub_submission
    other = Path(shutil.copytree(folder, tmp_path / "tiny-gd"))
    meta = write_meta(
        other, checkpoint={"repo_id": REPO, "filename": "weights.safetensors", "revision": "f" * 40, "sha256": "0" * 64}
    )
    done = validate_offline(other, hf_home)
    assert done.returncode == 1
    assert f"{REPO}/weights.safetensors@{meta['checkpoint']['revision']}: not in the Hub cache" in done.stdout


def test_hub_file_with_wrong_hash_fails(hub_submission: tuple[Path, Path], tmp_path: Path) -> None:
    folder, hf_home = hub_submission
    other = Path(shutil.copytree(folder, tmp_path / "tiny-gd"))
    write_meta(
        other, checkpoint={"repo_id": REPO, "filename": "weights.safetensors", "revision": COMMIT, "sha256": "ab" * 32}
    )
    done = validate_offline(other, hf_home)
    assert done.returncode == 1
    assert f"but submission.yaml declares {'ab' * 32}" in done.stdout
