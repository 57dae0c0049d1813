"""Evaluation sets, generated once (or read from an export) and cached in memory and on disk, verified on load.

An export (`write_export`, `iclbench export DIR`) is a folder of one safetensors file per task,
with the tensor names of `EvalSet.tensors()`, and `manifest.json`:

    {"format": "iclbench-export", "suite_version": ..., "iclbench_version": ..., "provenance": {...},
     "tasks": {"linear/kappa1": {"file": "linear--kappa1.safetensors", "sha256": ..., "fingerprint": ...}, ...}}

`use_export` makes `eval_set` read the sets from such a folder instead of generating them; `write_sets`,
`read_manifest` and `read_set` write and read such a folder of other sets too (`iclbench.predictions`' inputs);
`fresh_sets` makes it, and `pool_set` (in-pool prompts), return fresh sets drawn with a verification seed
(`iclbench.submissions.verify`).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import iclbench
from iclbench.plugins import sha256_file
from iclbench.provenance import provenance
from iclbench.tasks import FINGERPRINTS, SUITE_VERSION, EvalSet, Task

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
EXPORT_FORMAT = "iclbench-export"
USE_AN_EXPORT = (
    "use --data DIR, an export made by `iclbench export DIR` on a machine where `iclbench list --verify` passes"
)
"""What to do on a machine whose generated data do not match the suite's fingerprints."""

_memory: dict[str, tuple[EvalSet, str]] = {}
_export: tuple[Path, dict[str, Any]] | None = None
"""The export folder `eval_set` reads from, and its manifest; None: sets are generated."""
_fresh: tuple[int, dict[str, tuple[EvalSet, str]]] | None = None
"""The verification seed `eval_set` draws fresh sets with, and those drawn so far; None: the suite's sets."""


class ExportError(ValueError):
    """An export that cannot be written or used; the message says what is wrong, on one line."""


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

    Within `fresh_sets(seed)`, a fresh set of that seed (generated once per block). Otherwise
    looks in memory; then, when an export is in use (`use_export`), reads the set from it,
    verified (`ExportError` when it cannot be). Otherwise looks in the cache folder under the
    registry's expected fingerprint (a file whose content no longer matches is regenerated),
    then generates; a set matching the expected fingerprint is written to the cache.
    A generated set that does not match is still returned: the caller records the mismatch.
    """
    name = task.spec.name
    if _fresh is not None:
        seed, drawn = _fresh
        if name not in drawn:
            data = task.generate(seed)
            drawn[name] = (data, data.fingerprint())
        return drawn[name]
    if name in _memory:
        return _memory[name]
    if _export is not None:
        _memory[name] = _read_export(task, *_export)
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


def pool_set(task: Task, size: int, seed: int) -> EvalSet:
    """The task's in-pool prompts of the pool of `size` tasks of seed `seed` (`Task.pool_set`): the public ones, or,
    within `fresh_sets(verify_seed)`, fresh ones of that verification seed (the pool's tasks; rows, inputs and noise
    drawn anew). Not cached: a run scores them once."""
    return task.pool_set(size, seed, None if _fresh is None else _fresh[0])


@contextmanager
def fresh_sets(seed: int) -> Iterator[None]:
    """Within the block, `eval_set` returns fresh sets drawn with verification seed `seed`
    (`Task.generate(seed)`): held in memory for the block only, never read from or written to the
    disk cache or an export, never compared with the suite's fingerprints (the caller records theirs).
    A block inside a block of the same seed uses the sets the outer block drew.
    """
    global _fresh
    outer = _fresh
    _fresh = outer if outer is not None and outer[0] == seed else (seed, {})
    try:
        yield
    finally:
        _fresh = outer


@contextmanager
def held_for(name: str) -> Iterator[None]:
    """Within the block, task `name`'s evaluation set is held in memory once loaded; at its end it is
    forgotten, unless it was held before the block (a run holds one task's set at a time)."""
    before = name in _memory
    try:
        yield
    finally:
        if not before:
            _memory.pop(name, None)


def clear_memory() -> None:
    """Forget the evaluation sets held in memory (the disk cache and the export in use stay)."""
    _memory.clear()


def _file_name(name: str) -> str:
    return f"{name.replace('/', '--')}.safetensors"


def write_sets(directory: Path, fmt: str, sets: dict[str, EvalSet], **fields: Any) -> None:
    """Write each set of `sets` (by task name) as a safetensors file of its `EvalSet.tensors()` into `directory`, and
    `manifest.json`: format `fmt`, the versions, `fields` and, per task, the file, its SHA-256 and the set's
    fingerprint. `ExportError` when a file cannot be written."""
    entries = {}
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in sets.items():
            path = directory / _file_name(name)
            save_file(data.tensors(), path)
            path.chmod(0o644)  # safetensors creates files readable by their owner only
            entries[name] = {"file": path.name, "sha256": sha256_file(path), "fingerprint": data.fingerprint()}
        manifest = {
            "format": fmt,
            "suite_version": SUITE_VERSION,
            "iclbench_version": iclbench.__version__,
            **fields,
            "tasks": entries,
        }
        (directory / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    except OSError as exc:
        raise ExportError(f"cannot write {directory}: {exc}") from None


def write_export(directory: Path, tasks: Iterable[Task]) -> None:
    """Write the tasks' evaluation sets and `manifest.json` into `directory`.

    Raises `ExportError`, writing nothing, when a set does not match the registry's fingerprint.
    """
    sets = {t.spec.name: eval_set(t) for t in tasks}
    bad = [name for name, (_, fingerprint) in sets.items() if fingerprint != FINGERPRINTS.get(name)]
    if bad:
        raise ExportError(
            f"the evaluation data of {', '.join(bad)} do not match the suite's fingerprints on this machine; "
            f"nothing exported: {USE_AN_EXPORT}"
        )
    write_sets(directory, EXPORT_FORMAT, {name: data for name, (data, _) in sets.items()}, provenance=provenance())


def read_manifest(directory: Path, fmt: str = EXPORT_FORMAT, made_by: str = "iclbench export") -> dict[str, Any]:
    """The manifest of a folder written by `write_sets` with format `fmt` (by the command `made_by`), of this suite;
    `ExportError` otherwise."""
    path = directory / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"{path}: not a readable {fmt.removeprefix('iclbench-')} manifest: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != fmt:
        raise ExportError(f"{path}: not an {fmt.replace('-', ' ')} manifest (made by `{made_by}`)")
    if not isinstance(manifest.get("tasks"), dict):
        raise ExportError(f"{path}: field 'tasks' is missing or not a mapping")
    if manifest.get("suite_version") != SUITE_VERSION:
        raise ExportError(
            f"{path}: made on suite {manifest.get('suite_version')!r}; this is suite {SUITE_VERSION!r}: "
            f"run `{made_by}` again"
        )
    return manifest


def read_set(directory: Path, manifest: dict[str, Any], name: str) -> EvalSet:
    """Task `name`'s set from a folder written by `write_sets`, checked against the manifest's SHA-256."""
    entry = manifest["tasks"].get(name)
    if not isinstance(entry, dict):
        raise ExportError(f"{directory / MANIFEST}: no evaluation set of task {name}")
    file = entry.get("file")
    if not isinstance(file, str) or Path(file).name != file:
        raise ExportError(f"{directory / MANIFEST}: tasks[{name!r}].file is {file!r}, not a file name in the folder")
    path = directory / file
    try:
        digest = sha256_file(path)
    except OSError as exc:
        raise ExportError(f"{path}: cannot read: {exc}") from None
    if digest != entry.get("sha256"):
        raise ExportError(
            f"{path}: SHA-256 {digest[:16]}... is not the manifest's {str(entry.get('sha256'))[:16]}...: "
            "the file was changed or damaged"
        )
    try:
        return EvalSet.from_tensors(load_file(path))
    except (SafetensorError, KeyError) as exc:
        raise ExportError(f"{path}: not an evaluation set: {exc}") from None


def _read_export(task: Task, directory: Path, manifest: dict[str, Any]) -> tuple[EvalSet, str]:
    """The task's set from the export, checked against the manifest's SHA-256 and both fingerprints."""
    name = task.spec.name
    data = read_set(directory, manifest, name)
    entry = manifest["tasks"][name]
    fingerprint, expected = data.fingerprint(), FINGERPRINTS.get(name)
    if fingerprint != entry.get("fingerprint") or fingerprint != expected:
        raise ExportError(
            f"{directory / entry['file']}: the data's fingerprint {fingerprint[:16]}... is not both the manifest's "
            f"{str(entry.get('fingerprint'))[:16]}... and the suite's {str(expected)[:16]}... for {name}"
        )
    return data, fingerprint


def use_export(directory: Path | None, tasks: Iterable[Task] = ()) -> None:
    """Read evaluation sets from the export in `directory` from now on (None: generate them again).

    The manifest and the sets of `tasks` are verified now, so that a bad export fails before
    anything runs: `ExportError` says what is wrong, and the export is then not used.
    """
    global _export
    _memory.clear()
    _export = None
    if directory is None:
        return
    _export = (directory, read_manifest(directory))
    try:
        for task in tasks:
            eval_set(task)
    except ExportError:
        use_export(None)
        raise


def export_in_use() -> Path | None:
    """The export folder evaluation sets are read from, or None when they are generated."""
    return None if _export is None else _export[0]
