"""The submission pull-request check, replayed on a temporary git repository.

Each case is a head commit on top of a base commit that has one submission, the leaderboard,
baseline results and the validator's code; the check must accept only a pull request that
changes one `submissions/<id>/` folder, and say in one line per reason why it refuses.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from iclbench.submissions import pr_check

BASE_TREE = {
    "submissions/README.md": "How to submit.\n",
    "submissions/existing/model.py": "class M: ...\n",
    "submissions/existing/submission.yaml": "name: existing\n",
    "submissions/existing/results.json": "{}\n",
    "submissions/existing/weights.safetensors": "w",
    "leaderboard/index.html": "<html></html>\n",
    "leaderboard/baselines/ridge.json": '{"db": -100}\n',
    "iclbench/baselines/gd_steps.json": "{}\n",
    "iclbench/rerun.py": "TOL_DB = 0.1\n",
}
NEW = {
    "submissions/new-model/model.py": "class N: ...\n",
    "submissions/new-model/submission.yaml": "name: new-model\n",
    "submissions/new-model/results.json": "{}\n",
}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def write(repo: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def commit(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository whose `main` is the base commit, checked out on a new branch `pr`."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "t@example.org")
    git(root, "config", "user.name", "t")
    write(root, BASE_TREE)
    commit(root, "base")
    git(root, "checkout", "-q", "-b", "pr")
    return root


def check(repo: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, list[str]]:
    """(exit status, stdout, stderr lines) of the check of `pr` against `main`."""
    code = pr_check.main(["--repo", str(repo), "--base", "main", "--head", "pr", *extra])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err.splitlines()


def refused(repo: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """The error lines of a pull request that must be refused (exit status 1, nothing on stdout)."""
    code, out, err = check(repo, capsys)
    assert (code, out) == (1, "")
    assert err[-1].startswith("not a submission pull request")
    return err[:-1]


def test_new_submission_passes_and_is_printed(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(repo, NEW)
    commit(repo, "add new-model")
    assert check(repo, capsys) == (0, "submissions/new-model\n", [])


def test_extract_writes_the_committed_files(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(repo, NEW)
    commit(repo, "add new-model")
    (repo / "submissions/new-model/model.py").write_text("uncommitted edit\n")  # the judge reads git, not the tree
    code, out, _ = check(repo, capsys, "--extract", str(tmp_path / "out"))
    assert (code, out) == (0, f"{tmp_path / 'out' / 'new-model'}\n")
    got = {p.name: p.read_text() for p in (tmp_path / "out" / "new-model").iterdir()}
    assert got == {Path(k).name: v for k, v in NEW.items()}
    code, _, err = check(repo, capsys, "--extract", str(tmp_path / "out"))
    assert code == 2 and err == [f"pr_check: {tmp_path / 'out'}: --extract needs a new or empty folder"]


@pytest.mark.parametrize("folder", ["new-model", "existing"])
def test_a_verification_report_comes_from_ci_only(repo: Path, capsys: pytest.CaptureFixture[str], folder: str) -> None:
    write(repo, {**NEW, f"submissions/{folder}/verification.json": '{"verdict": "pass"}\n'})
    commit(repo, "verified, says the pull request")
    assert refused(repo, capsys) == [
        f"error: submissions/{folder}/verification.json: verification.json is written by CI's verification, "
        "never by a pull request"
    ]


def test_update_of_own_folder_passes_with_a_note(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(repo, {"submissions/existing/results.json": '{"new": 1}\n'})
    (repo / "submissions/existing/weights.safetensors").unlink()  # moved to the Hub, say
    commit(repo, "update existing")
    code, out, err = check(repo, capsys)
    assert (code, out) == (0, "submissions/existing\n")
    assert len(err) == 1 and err[0].startswith("note: submissions/existing: updates an existing submission")


def test_head_behind_base_is_judged_from_the_merge_base(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(repo, NEW)
    commit(repo, "add new-model")
    git(repo, "checkout", "-q", "main")
    write(repo, {"iclbench/rerun.py": "TOL_DB = 0.05\n", "submissions/later/model.py": "x\n"})
    commit(repo, "main moves on")
    assert check(repo, capsys) == (0, "submissions/new-model\n", [])


def test_symlinked_folder(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    os.symlink("../leaderboard", repo / "submissions" / "forged")
    commit(repo, "symlink")
    assert refused(repo, capsys) == ["error: submissions/forged: a symbolic link (not accepted)"]


def test_symlinked_file_inside_the_folder(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(repo, NEW)
    (repo / "submissions/new-model/results.json").unlink()
    os.symlink("../existing/results.json", repo / "submissions/new-model/results.json")
    commit(repo, "symlinked results")
    assert refused(repo, capsys) == ["error: submissions/new-model/results.json: a symbolic link (not accepted)"]


def test_submodule_inside_the_folder(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(repo, NEW)
    git(repo, "add", "-A")
    gitlink = f"160000,{git(repo, 'rev-parse', 'main')},submissions/new-model/dep"
    git(repo, "update-index", "--add", "--cacheinfo", gitlink)
    git(repo, "commit", "-q", "-m", "submodule")
    assert refused(repo, capsys) == ["error: submissions/new-model/dep: a submodule (not accepted)"]


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("iclbench/rerun.py", "changes"),  # the PR raises the tolerance
        ("leaderboard/index.html", "changes"),  # a hand-edited page
        ("leaderboard/baselines/ridge.json", "changes"),  # a baseline's results made worse
        ("iclbench/baselines/gd_steps.json", "changes"),
        ("submissions/README.md", "changes"),
        (".github/workflows/submissions.yml", "adds"),
    ],
)
def test_new_submission_plus_a_path_outside(
    repo: Path, capsys: pytest.CaptureFixture[str], path: str, status: str
) -> None:
    write(repo, NEW | {path: "edited\n"})
    commit(repo, f"add new-model and edit {path}")
    assert refused(repo, capsys) == [f"error: {path}: {status} a path outside submissions/<id>/"]


def test_deletes_another_submission(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    git(repo, "rm", "-q", "-r", "submissions/existing")
    commit(repo, "delete existing")
    assert refused(repo, capsys) == ["error: submissions/existing: removes the submission"]


def test_new_submission_plus_deleting_another(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(repo, NEW)
    git(repo, "rm", "-q", "-r", "submissions/existing")
    commit(repo, "replace existing")
    assert refused(repo, capsys) == [
        "error: changes 2 submission folders (existing, new-model): submit one per pull request"
    ]


def test_two_new_submission_folders(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(repo, NEW | {"submissions/other-model/model.py": "x\n"})
    commit(repo, "two folders")
    assert refused(repo, capsys) == [
        "error: changes 2 submission folders (new-model, other-model): submit one per pull request"
    ]


@pytest.mark.parametrize("sub_id", ["New-Model", "m\u043edel", "ridge\u200b", "-ab", "ab"])
def test_id_that_is_not_the_slug(repo: Path, capsys: pytest.CaptureFixture[str], sub_id: str) -> None:
    write(repo, {f"submissions/{sub_id}/model.py": "x\n"})
    commit(repo, "bad id")
    (line,) = refused(repo, capsys)
    assert line.startswith(f"error: submissions/{pr_check.shown(sub_id)}: not a submission id")
    assert line.isascii()


LOOKALIKE = "the same after Unicode NFKD"


@pytest.mark.parametrize(
    ("sub_id", "name", "expected"),
    [
        ("0lder", "fresh-name", ["id '0lder' looks like the id of submissions/older in the base"]),
        ("fresh-id", "Existing", []),  # not an id: validation refuses the name; the id is compared
        ("fresh-id", "ex-is-ting", ["model name 'ex-is-ting' looks like the id of submissions/existing in the base"]),
        ("fresh-id", "named-0ld", ["model name 'named-0ld' looks like the model name 'named-old' of "
                                   "submissions/older in the base"]),
        ("g-d", "fresh-name", ["id 'g-d' looks like the name of the baseline 'gd'"]),
        ("fresh-id", "ridge", ["model name 'ridge' is already the name of the baseline 'ridge'"]),
        ("fresh-id", "fresh-name", []),
    ],
)
def test_id_and_name_that_look_like_the_bases(
    repo: Path, capsys: pytest.CaptureFixture[str], sub_id: str, name: str, expected: list[str]
) -> None:
    """The new folder's id and model name against the base's ids, names and baselines, up to look-alikes."""
    git(repo, "checkout", "-q", "main")
    write(repo, {"submissions/older/submission.yaml": "name: named-old\n", "submissions/older/model.py": "x\n"})
    commit(repo, "another submission on main")
    git(repo, "checkout", "-q", "-B", "pr")
    write(repo, {f"submissions/{sub_id}/model.py": "x\n", f"submissions/{sub_id}/submission.yaml": f"name: {name}\n"})
    commit(repo, "a new submission")
    if not expected:
        assert check(repo, capsys) == (0, f"submissions/{sub_id}\n", [])
        return
    lines = refused(repo, capsys)
    assert [line.split(" (", 1)[0] if LOOKALIKE in line else line for line in lines] == [
        f"error: submissions/{sub_id}: {e}" for e in expected
    ]
    assert all(LOOKALIKE in line for line in lines if "looks like" in line)


def test_an_update_may_keep_its_own_id_and_name(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(repo, {"submissions/existing/model.py": "class M2: ...\n"})
    commit(repo, "update existing")
    code, out, _ = check(repo, capsys)
    assert (code, out) == (0, "submissions/existing\n")


@pytest.mark.parametrize(
    "name",
    [
        "x\nleaderboard/index.html",  # a newline that a line-based listing would split into two paths
        "model\t.py",
        ".gitattributes",
        "-rf.py",
        "weights \u2013 copy.safetensors",
    ],
)
def test_odd_file_name_in_the_folder(repo: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    write(repo, NEW | {f"submissions/new-model/{name}": "x\n"})
    commit(repo, "odd name")
    (line,) = refused(repo, capsys)
    assert line.startswith(f"error: {pr_check.shown('submissions/new-model/' + name)}: names inside a submission are")
    assert line.isascii() and "\n" not in line and "\t" not in line


def test_odd_path_outside_is_listed_escaped(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(repo, NEW | {"submissions\nnew-model/model.py": "x\n"})
    commit(repo, "newline in a top folder")
    path = ascii("submissions\nnew-model/model.py")
    assert refused(repo, capsys) == [f"error: {path}: adds a path outside submissions/<id>/"]


def test_no_submission_change(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    commit(repo, "empty")
    assert refused(repo, capsys) == ["error: changes no file under submissions/<id>/"]


def test_oversized_folder(repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pr_check, "MAX_FOLDER_BYTES", 20)
    write(repo, NEW)
    commit(repo, "add new-model")
    size = sum(len(v) for v in NEW.values())
    assert refused(repo, capsys) == [f"error: submissions/new-model: {size} bytes in all, over the 20-byte limit"]


def test_unknown_commit_and_not_a_repository(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert pr_check.main(["--repo", str(repo), "--base", "nope", "--head", "pr"]) == 2
    assert capsys.readouterr().err == f"pr_check: nope: not a commit of the repository in {repo}\n"
    (tmp_path / "plain").mkdir()
    assert pr_check.main(["--repo", str(tmp_path / "plain"), "--base", "main", "--head", "pr"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pr_check: git rev-parse failed: fatal: not a git repository") and err.count("\n") == 1


def test_module_entry_point_in_isolated_mode(repo: Path) -> None:
    """The workflow's invocation, `python -I -m iclbench.submissions.pr_check`, never imports the checkout's iclbench."""
    write(repo, NEW)
    commit(repo, "add new-model")
    write(repo, {"iclbench/__init__.py": "raise SystemExit('the checkout was imported')\n"})
    proc = subprocess.run(
        [sys.executable, "-I", "-m", "iclbench.submissions.pr_check", "--base", "main", "--head", "pr"],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "submissions/new-model\n", "")
