"""The results file: one JSON document per model, written atomically."""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
STATUSES = ("ok", "failed", "unsupported")


class ResultsError(ValueError):
    """A results file that cannot be read or does not follow the schema."""


def slug(name: str) -> str:
    """A file-name-safe form of a model name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "model"


def _finite(obj: Any, where: str = "") -> None:
    if isinstance(obj, float) and not math.isfinite(obj):
        raise ResultsError(f"non-finite number at {where or 'top level'}")
    if isinstance(obj, dict):
        for k, v in obj.items():
            _finite(v, f"{where}.{k}" if where else str(k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _finite(v, f"{where}[{i}]")


def write(path: str | Path, results: dict[str, Any]) -> None:
    """Write `results` to `path` atomically: readers see the old file or the new, never half."""
    path = Path(path)
    _finite(results)
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
