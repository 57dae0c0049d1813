"""Whether a pull request is a submission, judged from git alone: `python -m iclbench.submissions.pr_check`.

    python -m iclbench.submissions.pr_check --base BASE --head HEAD [--repo DIR] [--extract DIR]

A submission pull request adds or updates exactly one folder `submissions/<id>/` and changes
nothing else. The changes are those from the merge base of BASE and HEAD to HEAD, listed with
`git diff --raw -z --no-renames` (so every path, whatever its characters, is read exactly).
A pull request is refused as a submission when:

- it changes, adds or deletes any path outside one `submissions/<id>/` folder (code, tests,
  workflows, `leaderboard/`, baselines: their results and every leaderboard artifact are
  computed by CI, never taken from a pull request);
- it changes files in two or more submission folders, or removes a submission's folder;
- it adds or changes a folder's `verification.json` (written by CI's `iclbench verify` only);
- the id is not a submission id (`iclbench.submissions.schema.ID_RE`: 3-64 lowercase ASCII letters,
  digits and hyphens, no hyphen at either end);
- the folder at HEAD holds a symbolic link, a submodule, a name that is not ASCII letters, digits,
  '.', '_' and '-' starting with a letter, digit or '_', or more than the folder size limit;
- its id, or the model name in its `submission.yaml` at HEAD, looks like (`iclbench.submissions.schema.lookalike`)
  a baseline's name or the id or model name of another submission of BASE (the folder's own id and name, for an
  update, excepted).

An update of an existing submission (files modified, added or deleted inside its own folder,
which keeps at least one file) is a submission: it is accepted with a note on stderr, since
only a maintainer can confirm that the submission's authors made it.

Exit status and output:

- 0: a submission; stdout is the folder to validate, `submissions/<id>` (with `--extract DIR`,
  the folder's committed files are written to `DIR/<id>/` straight from git objects, and
  stdout is that path).
- 1: not a submission pull request (it needs a maintainer's review): one line per reason on
  stderr, paths written as Python string literals when they hold unusual characters.
- 2: a usage or git error (unknown commit, not a repository, `--extract` folder not empty):
  one line on stderr.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from iclbench.checkpoint import MAX_YAML_BYTES
from iclbench.submissions.schema import ID_RE, MAX_FOLDER_BYTES, Taken, baselines_taken, lookalike, taken_line
from iclbench.submissions.verify import REPORT
from iclbench.untrusted import UntrustedError, parse_yaml

REGULAR_MODES = ("100644", "100755")
SYMLINK_MODE = "120000"
SUBMODULE_MODE = "160000"
NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,254}")
"""A file or folder name inside a submission folder."""
SHOWN_RE = re.compile(r"[A-Za-z0-9._/ -]+")


class CheckError(Exception):
    """A usage or git error: the pull request could not be judged."""


@dataclass(frozen=True)
class Change:
    """One changed path between two commits (`git diff --raw`)."""

    status: str
    new_mode: str
    path: str


@dataclass(frozen=True)
class Entry:
    """One file of a tree (`git ls-tree -r -l`)."""

    mode: str
    sha: str
    size: int
    path: str


def shown(path: str) -> str:
    """`path` as is when it is plain, else as a Python string literal (one line, escaped)."""
    return path if SHOWN_RE.fullmatch(path) else ascii(path)


def git(repo: Path, *args: str) -> bytes:
    """Stdout of `git -C repo args`; `CheckError` with git's message when it fails."""
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True)
    if proc.returncode:
        reason = " ".join(proc.stderr.decode(errors="replace").split()) or f"exit status {proc.returncode}"
        raise CheckError(f"git {args[0]} failed: {reason}")
    return proc.stdout


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def commit_of(repo: Path, rev: str) -> str:
    """The full hash of commit `rev`."""
    try:
        return _decode(git(repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}")).strip()
    except CheckError:
        raise CheckError(f"{shown(rev)}: not a commit of the repository in {repo}") from None


def changes(repo: Path, base: str, head: str) -> list[Change]:
    """Every path changed from the merge base of `base` and `head` to `head`."""
    since = _decode(git(repo, "merge-base", base, head)).strip()
    fields = git(repo, "diff", "--raw", "-z", "--no-renames", "--no-abbrev", "--no-ext-diff", since, head).split(b"\0")
    out = []
    for meta, path in zip(fields[0:-1:2], fields[1::2]):
        _, new_mode, _, _, status = _decode(meta).split(" ")
        out.append(Change(status, new_mode, _decode(path)))
    return out


def tree(repo: Path, commit: str, folder: str) -> list[Entry]:
    """Every file under `folder` in `commit`, with its mode, blob hash and size."""
    out = []
    for record in git(repo, "ls-tree", "-r", "-l", "-z", "--full-tree", commit, "--", f"{folder}/").split(b"\0"):
        if record:
            meta, path = record.split(b"\t", 1)
            mode, _, sha, size = _decode(meta).split()
            out.append(Entry(mode, sha, int(size) if size.isdigit() else 0, _decode(path)))
    return out


def model_name(repo: Path, commit: str, folder: str) -> str | None:
    """The model name in `folder/submission.yaml` at `commit`, when it is a readable YAML mapping of at most
    `MAX_YAML_BYTES` whose name is an id (validation reports any other case)."""
    found = [e for e in tree(repo, commit, folder) if e.path == f"{folder}/submission.yaml"]
    if not found or found[0].mode not in REGULAR_MODES or found[0].size > MAX_YAML_BYTES:
        return None
    try:
        meta = parse_yaml(git(repo, "cat-file", "blob", found[0].sha))
    except UntrustedError:
        return None
    name = meta.get("name") if isinstance(meta, dict) else None
    return name if isinstance(name, str) and ID_RE.fullmatch(name) else None


def taken(repo: Path, base: str, own: str) -> Taken:
    """The ids and names taken in BASE: the baselines' names, and the ids and model names of BASE's submissions other
    than `own`."""
    out = baselines_taken()
    for record in git(repo, "ls-tree", "-z", "--full-tree", base, "--", "submissions/").split(b"\0"):
        if not record:
            continue
        meta, path = record.split(b"\t", 1)
        other = _decode(path).removeprefix("submissions/")
        if _decode(meta).split()[1] != "tree" or other == own:
            continue
        where = f"submissions/{shown(other)}"
        out.setdefault(lookalike(other), (other, f"the id of {where} in the base"))
        if (name := model_name(repo, base, f"submissions/{other}")) is not None:
            out.setdefault(lookalike(name), (name, f"the model name {name!r} of {where} in the base"))
    return out


def lookalikes(repo: Path, base: str, head: str, sub_id: str) -> list[str]:
    """One line for the id and one for the model name of `submissions/<sub_id>` at `head` that is, or looks like, an
    id or name taken in `base` (`taken`)."""
    folder = f"submissions/{sub_id}"
    used = taken(repo, base, sub_id)
    named = [("id", sub_id), ("model name", model_name(repo, head, folder))]
    lines = [taken_line(folder, what, value, used) for what, value in named if value is not None]
    return [line for line in lines if line is not None]


def _kind(mode: str) -> str | None:
    """What is wrong with a file of this mode in a submission, or None for a regular file."""
    if mode == SYMLINK_MODE:
        return "a symbolic link (not accepted)"
    if mode == SUBMODULE_MODE:
        return "a submodule (not accepted)"
    return None if mode in REGULAR_MODES else f"git mode {mode} (only regular files are accepted)"


def judge(repo: Path, base: str, head: str) -> tuple[str | None, list[str], list[str]]:
    """(the submission's id or None, reasons it is not a submission pull request, notes)."""
    git(repo, "rev-parse", "--git-dir")  # git's own message when `repo` is not a repository
    base, head = commit_of(repo, base), commit_of(repo, head)
    reasons, ids = [], set()
    for change in changes(repo, base, head):
        parts = change.path.split("/")
        kind = _kind(change.new_mode) if change.status != "D" else None
        if kind:
            reasons.append(f"{shown(change.path)}: {kind}")
        elif len(parts) < 3 or parts[0] != "submissions":
            what = {"A": "adds", "D": "deletes"}.get(change.status, "changes")
            reasons.append(f"{shown(change.path)}: {what} a path outside submissions/<id>/")
        elif parts[2:] == [REPORT]:
            reasons.append(f"{shown(change.path)}: {REPORT} is written by CI's verification, never by a pull request")
        else:
            ids.add(parts[1])
    for sub_id in sorted(ids):
        if not ID_RE.fullmatch(sub_id):
            reasons.append(
                f"submissions/{shown(sub_id)}: not a submission id (3-64 lowercase ASCII letters, digits "
                "and hyphens, starting and ending with a letter or digit)"
            )
    if len(ids) > 1:
        listed = ", ".join(map(shown, sorted(ids)))
        reasons.append(f"changes {len(ids)} submission folders ({listed}): submit one per pull request")
    if not ids and not reasons:
        reasons.append("changes no file under submissions/<id>/")
    if reasons:
        return None, reasons, []
    (sub_id,) = ids
    folder = f"submissions/{sub_id}"
    files = tree(repo, head, folder)
    if not files:
        return None, [f"{folder}: removes the submission"], []
    for entry in files:
        kind = _kind(entry.mode)
        bad_name = not all(NAME_RE.fullmatch(part) for part in entry.path.split("/")[2:])
        if kind:
            reasons.append(f"{shown(entry.path)}: {kind}")
        elif bad_name:
            reasons.append(
                f"{shown(entry.path)}: names inside a submission are ASCII letters, digits, '.', '_' and '-', "
                "starting with a letter, digit or '_'"
            )
    total = sum(e.size for e in files)
    if total > MAX_FOLDER_BYTES:
        reasons.append(f"{folder}: {total} bytes in all, over the {MAX_FOLDER_BYTES}-byte limit")
    reasons += lookalikes(repo, base, head, sub_id)
    if reasons:
        return None, reasons, []
    notes = (
        [f"{folder}: updates an existing submission: a maintainer confirms that its authors made the change"]
        if tree(repo, base, folder)
        else []
    )
    return sub_id, [], notes


def extract(repo: Path, head: str, sub_id: str, dest: Path) -> Path:
    """Write the files of `submissions/<sub_id>/` at `head` from git objects into `dest/<sub_id>/`."""
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise CheckError(f"{dest}: --extract needs a new or empty folder")
    folder = dest / sub_id
    for entry in tree(repo, commit_of(repo, head), f"submissions/{sub_id}"):
        target = folder.joinpath(*entry.path.split("/")[2:])
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(git(repo, "cat-file", "blob", entry.sha))
    return folder


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m iclbench.submissions.pr_check`."""
    parser = argparse.ArgumentParser(
        prog="python -m iclbench.submissions.pr_check",
        description="Check that a pull request changes exactly one submissions/<id>/ folder; print it.",
    )
    parser.add_argument("--base", required=True, help="the pull request's base commit")
    parser.add_argument("--head", required=True, help="the pull request's head (or merge) commit")
    parser.add_argument("--repo", type=Path, default=Path("."), help="the git checkout holding both commits")
    parser.add_argument("--extract", type=Path, metavar="DIR", help="write the submission's files to DIR/<id>/")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        sub_id, reasons, notes = judge(args.repo, args.base, args.head)
        if sub_id is not None and args.extract:
            print(extract(args.repo, args.head, sub_id, args.extract))
        elif sub_id is not None:
            print(f"submissions/{sub_id}")
    except CheckError as exc:
        print(f"pr_check: {exc}", file=sys.stderr)
        return 2
    for line in notes:
        print(f"note: {line}", file=sys.stderr)
    for line in reasons:
        print(f"error: {line}", file=sys.stderr)
    if reasons:
        print(
            f"not a submission pull request ({len(reasons)} reason(s)): a submission changes only its own "
            "submissions/<id>/ folder; anything else needs a maintainer's review",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
