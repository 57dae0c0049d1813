"""The results file: one JSON document per model, written atomically, by one run at a time."""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

SCHEMA_VERSION = 1
STATUSES = ("ok", "failed", "unsupported")


class ResultsError(ValueError):
    """A results file that cannot be read or does not follow the schema."""


def slug(name: str) -> str:
    """A file-name-safe form of a model name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "model"


def non_finite(obj: Any, where: str = "") -> str | None:
    """Where the first NaN or infinity in a JSON-like document is (`rel_err.db`), or None."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return where or "top level"
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        found = non_finite(v, f"{where}[{k}]" if isinstance(k, int) else f"{where}.{k}" if where else str(k))
        if found is not None:
            return found
    return None


IDENTITY = {
    "model": ("name", "class", "file_sha256", "checkpoint_sha256", "files_sha256"),
    "run": ("device", "dtype", "prompts", "torch_version"),
}
"""What a results file's tasks depend on, besides `iclbench_version`, `suite_version` and each task's data."""


def changes(previous: dict[str, Any], fresh: dict[str, Any]) -> list[str]:
    """How the model files, versions and settings of `fresh` differ from those `previous` was made with."""
    out = [
        f"{key} {previous.get(key)!r} -> {fresh[key]!r}"
        for key in ("iclbench_version", "suite_version")
        if previous.get(key) != fresh[key]
    ]
    for part, keys in IDENTITY.items():
        for key in keys:
            old, new = previous[part].get(key), fresh[part][key]
            if old == new:
                continue
            if key == "files_sha256" and isinstance(old, dict):
                changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
                out.append(f"files changed beside the model: {', '.join(changed[:5])}{' ...' if len(changed) > 5 else ''}")
            else:
                out.append(f"{part}.{key} {old!r} -> {new!r}")
    return out


def merge(previous: dict[str, Any], differences: list[str], selected: list[str], where: str) -> dict[str, Any]:
    """The tasks of `previous` (the file at `where`) a run of `selected` tasks into it keeps.

    All of them when it was made with the same model files, versions and settings (`differences`,
    from `changes`, is empty); none when they differ and the run re-runs every task the file holds;
    otherwise `ResultsError`, since finished tasks would be lost.
    """
    if not differences:
        return dict(previous["tasks"])
    outside = [name for name in previous["tasks"] if name not in selected]
    if outside:
        raise ResultsError(
            f"{where} holds tasks this run does not re-run ({', '.join(outside[:3])}{' ...' if len(outside) > 3 else ''}), "
            f"made with other model files or settings ({'; '.join(differences)}): run all its tasks, or use another --out"
        )
    return {}


@contextmanager
def locked(path: Path | None) -> Iterator[None]:
    """Hold `<path>.lock` (`fcntl.flock`, holding this process's id) while a run writes `path`.

    A second run into the same file gets `ResultsError` naming the first one's process; the lock
    dies with its process, and the lock file is removed when the run ends. None: nothing to lock.
    """
    if path is None:
        yield
        return
    lock = path.with_name(path.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ResultsError(
                f"{path} is being written by another run (process {holder}, lock {lock}): "
                "wait for it to finish, or use another --out"
            ) from None
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino  # not removed by its last holder meanwhile
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


def write(path: str | Path, results: dict[str, Any]) -> None:
    """Write `results` to `path` atomically: readers see the old file or the new, never half."""
    path = Path(path)
    if (where := non_finite(results)) is not None:
        raise ResultsError(f"non-finite number at {where}")
    text = json.dumps(results, indent=1, allow_nan=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates files readable by their owner only
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read(path: str | Path) -> dict[str, Any]:
    """Read a results file and check its top-level structure."""
    path = Path(path)
    try:
        results = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ResultsError(f"{path}: not a readable JSON results file: {exc}") from exc
    check(results, str(path))
    return results


def check(results: Any, where: str = "results") -> None:
    """Raise `ResultsError` naming the first field that breaks the schema."""
    if not isinstance(results, dict):
        raise ResultsError(f"{where}: expected a JSON object")
    if results.get("schema_version") != SCHEMA_VERSION:
        raise ResultsError(f"{where}: schema_version is {results.get('schema_version')!r}, expected {SCHEMA_VERSION}")
    for key, kind in (("iclbench_version", str), ("suite_version", str), ("model", dict), ("run", dict), ("tasks", dict)):
        if not isinstance(results.get(key), kind):
            raise ResultsError(f"{where}: field {key!r} is missing or not a {kind.__name__}")
    if not isinstance(results["model"].get("name"), str):
        raise ResultsError(f"{where}: field 'model.name' is missing or not a string")
    for name, task in results["tasks"].items():
        status = task.get("status") if isinstance(task, dict) else None
        if status not in STATUSES:
            raise ResultsError(f"{where}: tasks[{name!r}].status is {status!r}, expected one of {STATUSES}")
        if status == "ok" and not isinstance(task.get("lengths"), dict):
            raise ResultsError(f"{where}: tasks[{name!r}] is ok but has no 'lengths'")
