"""Evaluation sets, generated once and cached in memory and on disk, verified on load."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from iclbench.tasks import FINGERPRINTS, SUITE_VERSION, EvalSet, Task

log = logging.getLogger(__name__)

_memory: dict[str, tuple[EvalSet, str]] = {}


def cache_dir() -> Path | None:
    """`$ICLBENCH_CACHE`, else `~/.cache/iclbench`; None when `$ICLBENCH_CACHE` is "off"."""
    env = os.environ.get("ICLBENCH_CACHE")
    if env == "off":
        return None
    return Path(env) if env else Path.home() / ".cache" / "iclbench"


def _path(task: Task, fingerprint: str) -> Path | None:
    root = cache_dir()
    if root is None:
        return None
    return root / SUITE_VERSION / f"{task.spec.name.replace('/', '--')}-{fingerprint[:16]}.safetensors"


def eval_set(task: Task) -> tuple[EvalSet, str]:
    """The task's evaluation set and its fingerprint.

    Looks in memory, then in the cache folder under the registry's expected
    fingerprint (a file whose content no longer matches is regenerated), then
    generates; a set matching the expected fingerprint is written to the cache.
    A set that does not match is still returned: the caller records the mismatch.
    """
    name = task.spec.name
    if name in _memory:
        return _memory[name]
    expected = FINGERPRINTS.get(name)
    path = _path(task, expected) if expected else None
    if path is not None and path.exists():
        try:
            data = EvalSet.from_tensors(load_file(path))
            if data.fingerprint() == expected:
                _memory[name] = (data, expected)
                return _memory[name]
        except (SafetensorError, KeyError, OSError) as exc:
            log.warning("ignoring unreadable cache file %s: %s", path, exc)
        log.warning("cache file %s does not match its fingerprint; regenerating", path)
    data = task.generate()
    fingerprint = data.fingerprint()
    if fingerprint == expected and path is not None:
        _write(path, data)
    _memory[name] = (data, fingerprint)
    return _memory[name]


def _write(path: Path, data: EvalSet) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        save_file(data.tensors(), tmp)
        os.replace(tmp, path)
    except OSError as exc:  # a read-only or full disk only costs the cache
        log.warning("could not write cache file %s: %s", path, exc)


def clear_memory() -> None:
    """Forget the evaluation sets held in memory (the disk cache stays)."""
    _memory.clear()
