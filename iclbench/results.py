"""The results file: one JSON document per model, written atomically, by one run at a time."""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterator

SCHEMA_VERSION = 1
STATUSES = ("ok", "failed", "unsupported")
MAX_INT = 2**53
"""Largest integer accepted in a results file (exactly representable as a float)."""


class ResultsError(ValueError):
    """A results file that cannot be read or does not follow the schema."""


def slug(name: str) -> str:
    """A file-name-safe form of a model name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "model"


MAX_ARGS_IN_NAME = 80
"""Longest model-argument part of a results file name before it is shortened with a hash."""


def file_stem(name: str, args: dict[str, Any] | None = None) -> str:
    """The results file's name without `.json`: the model name's `slug`, and with model arguments
    `--` and the slug of `key=value,...` in the order given (`lsa--ckpt-runs-b.safetensors`);
    a longer argument part keeps its first characters and adds 8 hex digits of its SHA-256."""
    if not args:
        return slug(name)
    text = ",".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in args.items())
    part = slug(text)
    if len(part) > MAX_ARGS_IN_NAME:
        part = f"{part[: MAX_ARGS_IN_NAME - 9]}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"
    return f"{slug(name)}--{part}"


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
    "model": ("name", "class", "args", "file_sha256", "checkpoint_sha256", "files_sha256", "task_pool"),
    "run": ("device", "dtype", "prompts", "torch_version"),
}
"""What a results file's tasks depend on, besides `iclbench_version`, `suite_version` and each task's data."""
ABSENT: dict[str, Any] = {"args": {}, "task_pool": None}
"""What an identity field missing from a file means: files written before model arguments or task pools existed
had none."""


def changes(previous: dict[str, Any], fresh: dict[str, Any]) -> list[str]:
    """How the model files, versions and settings of `fresh` differ from those `previous` was made with."""
    out = [
        f"{key} {previous.get(key)!r} -> {fresh[key]!r}"
        for key in ("iclbench_version", "suite_version")
        if previous.get(key) != fresh[key]
    ]
    for part, keys in IDENTITY.items():
        for key in keys:
            old, new = previous[part].get(key, ABSENT.get(key)), fresh[part].get(key, ABSENT.get(key))
            if old == new:
                continue
            if key == "files_sha256" and isinstance(old, dict):
                changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
                out.append(f"files changed beside the model: {', '.join(changed[:5])}{' ...' if len(changed) > 5 else ''}")
            else:
                out.append(f"{part}.{key} {old!r} -> {new!r}")
    return out


def smaller(previous: dict[str, Any], fresh: dict[str, Any]) -> list[str]:
    """How the run of `fresh` gives less than, or other numbers than, the one `previous` was made with: fewer
    prompts, another dtype or another device."""
    old, new = previous["run"], fresh["run"]
    out = []
    if new["prompts"] is not None and (old.get("prompts") is None or new["prompts"] < old["prompts"]):
        out.append(f"--prompts {new['prompts']} where the file has {old.get('prompts') or 'every prompt'}")
    out += [f"{key} {new[key]} where the file has {old.get(key)}" for key in ("dtype", "device") if old.get(key) != new[key]]
    return out


def merge(
    previous: dict[str, Any], fresh: dict[str, Any], selected: list[str], where: str, overwrite: bool = False
) -> dict[str, Any]:
    """The tasks of `previous` (the file at `where`) a run of `selected` tasks into it, with the settings of
    `fresh`, keeps.

    All of them when it was made with the same model files, versions and settings (`changes` finds none);
    otherwise none, when the run re-runs every task the file holds and it is not `smaller`, or with
    `overwrite`; any other run is refused (`ResultsError`), since finished tasks, or a larger run, would be lost.
    """
    differences = changes(previous, fresh)
    if not differences:
        return dict(previous["tasks"])
    if overwrite:
        return {}
    outside = [name for name in previous["tasks"] if name not in selected]
    if outside:
        raise ResultsError(
            f"{where} holds tasks this run does not re-run ({', '.join(outside[:3])}{' ...' if len(outside) > 3 else ''}), "
            f"made with other model files or settings ({'; '.join(differences)}): run all its tasks, use another --out, "
            "or replace the file with --overwrite"
        )
    if less := smaller(previous, fresh):
        raise ResultsError(
            f"{where} would be replaced by a smaller run ({'; '.join(less)}): use another --out, "
            "or replace the file with --overwrite"
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


def journal_path(path: Path) -> Path:
    """Where a run into the results file `path` makes each finished task durable: the hidden `.<name>.journal` beside it."""
    return path.with_name(f".{path.name}.journal")


class AppendLog:
    """A file that a run appends records to, each flushed to disk before `append` returns (opened with `mode` on
    the first record: "w" truncates, "ab" keeps what is there); `remove` deletes it once its records are elsewhere."""

    mode = "w"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[Any] | None = None

    @property
    def started(self) -> bool:
        return self._fh is not None

    def _durable(self, data: str | bytes) -> None:
        if self._fh is None:
            self._fh = open(self.path, self.mode)
        self._fh.write(data)
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def remove(self) -> None:
        """Close and delete the file, once the records are where they belong."""
        self.close()
        self.path.unlink(missing_ok=True)


class Journal(AppendLog):
    """The journal of a results file (`journal_path`), that a run appends each finished task's entry to, one JSON
    line flushed to disk, after a first line holding the document the run started from; the run then writes the
    results file once, at its end (or when it is interrupted), and removes the journal. `read_journaled` folds
    a journal that a crash left behind."""

    def __init__(self, path: Path) -> None:
        super().__init__(journal_path(path))

    def append(self, doc: dict[str, Any], name: str) -> None:
        """Make the entry of task `name` in `doc` durable; the first call writes `doc` without it first."""
        records = [{"task": name, "entry": doc["tasks"][name]}]
        if not self.started:
            records.insert(0, {**doc, "tasks": {k: v for k, v in doc["tasks"].items() if k != name}})
        for record in records:
            if (where := non_finite(record)) is not None:
                raise ResultsError(f"non-finite number at {where}")
        self._durable("".join(json.dumps(r, allow_nan=False) + "\n" for r in records))


def read_journaled(path: Path) -> dict[str, Any] | None:
    """The results at `path` as the last run into it left them: with a journal beside it (a run that stopped before
    writing the file), the journal's document with every entry appended to it, which supersedes the file; else the
    file; None when there is neither. A torn last line (a crash while appending) is left out."""
    journal = journal_path(path)
    try:
        lines = journal.read_text().split("\n")[:-1] if journal.exists() else []  # after the last newline: torn
    except OSError as exc:
        raise ResultsError(f"{journal}: not a readable results journal: {exc}") from None
    if not lines:
        return read(path) if path.exists() else None
    try:
        doc = json.loads(lines[0])
        for line in lines[1:]:
            record = json.loads(line)
            doc["tasks"][record["task"]] = record["entry"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ResultsError(f"{journal}: not a readable results journal: {exc}") from None
    check(doc, str(journal))
    return doc


def read(path: str | Path) -> dict[str, Any]:
    """Read a results file and check its top-level structure."""
    path = Path(path)
    try:
        results = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ResultsError(f"{path}: not a readable JSON results file: {exc}") from exc
    check(results, str(path))
    return results


def shown(v: Any) -> str:
    """A value as a message shows it: its type and its (shortened) repr."""
    text = repr(v)
    return f"{type(v).__name__} {text[:60] + '...' if len(text) > 60 else text}"


def _is_number(v: Any) -> bool:
    """A finite JSON number: an int or float, not a bool, NaN, Infinity or an int beyond float range."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    return abs(v) <= MAX_INT if isinstance(v, int) else math.isfinite(v)


def _need(ok: bool, where: str, what: str, value: Any) -> None:
    if not ok:
        raise ResultsError(f"{where} must be {what}, got {shown(value)}")


def _interval(v: Any, where: str, lowest: float | None = None, highest: float | None = None) -> None:
    _need(isinstance(v, list) and len(v) == 2 and all(map(_is_number, v)), where, "a list of 2 finite numbers", v)
    _need(v[0] <= v[1], where, "an interval [low, high] with low <= high", v)
    _need(lowest is None or v[0] >= lowest, where, f"an interval within [{lowest}, {highest}]", v)
    _need(highest is None or v[1] <= highest, where, f"an interval within [{lowest}, {highest}]", v)


def _fields(obj: Any, where: str, names: tuple[str, ...]) -> None:
    _need(isinstance(obj, dict) and sorted(obj) == sorted(names), where, f"an object with fields {', '.join(names)}", obj)


def _ratio(m: Any, where: str) -> None:
    """A ratio metric (`rel_err`, `recovery`): value, db and their 90% intervals."""
    _fields(m, where, ("value", "db", "ci90", "ci90_db"))
    _need(_is_number(m["value"]) and m["value"] >= 0, f"{where}.value", "a finite number >= 0", m["value"])
    _need(_is_number(m["db"]), f"{where}.db", "a finite number", m["db"])
    _interval(m["ci90"], f"{where}.ci90", lowest=0)
    _interval(m["ci90_db"], f"{where}.ci90_db")


def _rate(m: Any, where: str) -> None:
    """A rate metric (`error_rate`): value and its 90% interval, within [0, 1]."""
    _fields(m, where, ("value", "ci90"))
    _need(_is_number(m["value"]) and 0 <= m["value"] <= 1, f"{where}.value", "a number in [0, 1]", m["value"])
    _interval(m["ci90"], f"{where}.ci90", lowest=0, highest=1)


def _curve(m: Any, where: str) -> None:
    """A per-step error curve in dB (`steps_rel_err_db`)."""
    _need(isinstance(m, list) and len(m) > 0, where, "a non-empty list of finite numbers", m)
    for k, v in enumerate(m):
        _need(_is_number(v), f"{where}[{k}]", "a finite number", v)


METRICS = {"rel_err": _ratio, "recovery": _ratio, "error_rate": _rate, "steps_rel_err_db": _curve}
"""Every metric a results file may hold per prompt length, with its check."""

_HEX64 = re.compile(r"[0-9a-f]{64}")


def _typed(obj: dict[str, Any], where: str, fields: dict[str, tuple[bool, Callable[[Any], bool], str]]) -> None:
    """Check the fields of `obj` named in `fields` (required?, predicate, what it must be); others are left alone."""
    for key, (required, ok, what) in fields.items():
        if key in obj:
            _need(ok(obj[key]), f"{where}.{key}", what, obj[key])
        elif required:
            raise ResultsError(f"{where}: field {key!r} is missing ({what})")


def _str(v: Any) -> bool:
    return isinstance(v, str)


def _count(least: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and least <= v <= MAX_INT


def _optional(ok: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or ok(v)


def _model_args(v: Any) -> bool:
    scalar = lambda a: a is None or isinstance(a, (str, bool, int, float))  # noqa: E731 - finiteness: checked for all
    return isinstance(v, dict) and all(k.isidentifier() and scalar(a) for k, a in v.items())


_SHA = (True, _optional(lambda v: isinstance(v, str) and _HEX64.fullmatch(v) is not None), "64 hex digits or null")
MODEL_FIELDS = {
    "name": (True, lambda v: isinstance(v, str) and v != "", "a non-empty string"),
    "source": (False, _str, "a string"),
    "class": (False, _str, "a string"),
    "args": (False, _model_args, "an object of keyword arguments (identifiers to strings, numbers, booleans or null)"),
    "file_sha256": _SHA,
    "checkpoint_sha256": _SHA,
    "task_pool": (False, lambda v: v is None or isinstance(v, dict), "an object (tasks, size, seed) or null"),
}
RUN_FIELDS = {
    "dtype": (True, lambda v: v in ("float32", "float64"), "'float32' or 'float64'"),
    "device": (True, _str, "a string"),
    "batch_size": (False, _count(1), "a positive integer"),
    "threads": (False, _count(1), "a positive integer: the model's CPU threads"),
    "prompts": (False, _optional(_count(1)), "a positive integer or null"),
    "limited": (False, lambda v: isinstance(v, bool), "true or false"),
    "data_mismatch": (False, lambda v: isinstance(v, list) and all(map(_str, v)), "a list of task names"),
    **{
        key: (False, _optional(_str), "a string or null")
        for key in ("device_name", "torch_version", "python_version", "platform", "started", "finished", "data_export")
    },
}
TASK_FIELDS = {
    "spec": (True, lambda v: isinstance(v, dict), "an object: the task's definition"),
    "error": (False, _str, "a string"),
    "fingerprint": (False, lambda v: isinstance(v, str) and _HEX64.fullmatch(v) is not None, "64 hex digits"),
    "fingerprint_ok": (False, lambda v: isinstance(v, bool), "true or false"),
    "n_prompts": (False, _count(1), "a positive integer"),
    "unsupported_lengths": (False, lambda v: isinstance(v, list) and all(map(_count(1), v)), "a list of lengths"),
    "seconds": (False, lambda v: _is_number(v) and v >= 0, "a finite number of seconds >= 0"),
    "alignment": (False, lambda v: isinstance(v, dict), "an object"),
    "sandboxed": (False, lambda v: isinstance(v, bool), "true or false: whether the model ran in the sandbox"),
    "in_pool": (False, lambda v: isinstance(v, dict), "an object: the scores on in-pool prompts"),
}
IN_POOL_FIELDS = {
    "size": (True, _count(1), "a positive integer: the pool's size"),
    "seed": (True, _count(0), "a non-negative integer: the pool's seed"),
    "n_prompts": (True, _count(1), "a positive integer"),
    "lengths": (True, lambda v: isinstance(v, dict), "an object of metrics per prompt length"),
}


def _field(at: str, key: str) -> str:
    """The path of `key` in the object at `at`: `at.key`, or `at['key']` for keys that are not identifiers."""
    if re.fullmatch(r"[A-Za-z_]\w*", key, flags=re.ASCII):
        return f"{at}.{key}" if at else key
    return f"{at}[{key!r}]"


def _every_number_finite(doc: Any, where: str) -> None:
    """Every number anywhere in `doc` (known fields or not) is finite and within float range (iterative walk)."""
    stack = [(doc, where)]
    while stack:
        obj, at = stack.pop()
        if isinstance(obj, dict):
            stack.extend((v, _field(at, k)) for k, v in obj.items())
        elif isinstance(obj, list):
            stack.extend((v, f"{at}[{i}]") for i, v in enumerate(obj))
        elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
            _need(_is_number(obj), at, "a finite number", obj)


def _task(entry: Any, where: str) -> None:
    status = entry.get("status") if isinstance(entry, dict) else None
    if status not in STATUSES:
        raise ResultsError(f"{where}.status is {status!r}, expected one of {STATUSES}")
    _typed(entry, where, TASK_FIELDS)
    if status == "failed":
        _typed(entry, where, {"error": (True, _str, "a string: why the task failed")})
    if status != "ok":
        return
    _lengths(entry.get("lengths"), f"{where}.lengths")
    if "in_pool" in entry:
        _typed(entry["in_pool"], f"{where}.in_pool", IN_POOL_FIELDS)
        _lengths(entry["in_pool"]["lengths"], f"{where}.in_pool.lengths", ("rel_err",))


def _in_pool(results: dict[str, Any]) -> None:
    """The declared pool is one a model can declare (`TaskPool.parse`), and in-pool scores are where it says: on
    exactly the tasks of the pool scored ok, of its size and seed, at the task's lengths, on its number of prompts."""
    from iclbench.tasks.pool import TaskPool  # the pool's check reads the suite's tasks

    try:
        pool = TaskPool.parse(results["model"].get("task_pool"), "model.task_pool")
    except ValueError as exc:
        raise ResultsError(str(exc)) from None
    for name, entry in results["tasks"].items():
        where, found = f"tasks[{name!r}].in_pool", entry.get("in_pool")
        declared = pool is not None and name in pool.tasks and entry["status"] == "ok"
        _need(declared == (found is not None), where,
              "there exactly on the tasks of the declared pool (model.task_pool) scored ok", found)
        if found is None:
            continue
        assert pool is not None
        _need((found["size"], found["seed"]) == (pool.size, pool.seed), where,
              f"of the declared pool's size {pool.size} and seed {pool.seed}", [found["size"], found["seed"]])
        _need(sorted(found["lengths"]) == sorted(entry["lengths"]), f"{where}.lengths",
              f"at the task's lengths {sorted(entry['lengths'])}", sorted(found["lengths"]))
        _need(found["n_prompts"] == entry.get("n_prompts"), f"{where}.n_prompts",
              f"the task's number of prompts, {entry.get('n_prompts')}", found["n_prompts"])


def _lengths(lengths: Any, where: str, known: tuple[str, ...] = tuple(METRICS)) -> None:
    """Metrics per prompt length, each one of `known` with its fields."""
    _need(isinstance(lengths, dict), where, "an object of metrics per prompt length", lengths)
    for n, metrics in lengths.items():
        at = f"{where}[{n!r}]"
        _need(re.fullmatch(r"[1-9][0-9]{0,5}", n) is not None, at, "keyed by a prompt length", n)
        _need(isinstance(metrics, dict) and "rel_err" in metrics, at, "an object of metrics with rel_err", metrics)
        for metric, value in metrics.items():
            if metric not in known:
                raise ResultsError(f"{at}: unknown metric {metric!r}; known metrics: {', '.join(known)}")
            METRICS[metric](value, f"{at}.{metric}")


def check(results: Any, where: str = "results") -> None:
    """Raise `ResultsError` naming the first field that breaks the schema.

    Every number anywhere must be finite; the model, run and task fields the harness,
    the re-run and the leaderboard read are typed, and every metric is one of `METRICS`
    with exactly its fields. Fields the schema does not name are left alone.
    """
    if not isinstance(results, dict):
        raise ResultsError(f"{where}: expected a JSON object")
    if results.get("schema_version") != SCHEMA_VERSION:
        raise ResultsError(f"{where}: schema_version is {results.get('schema_version')!r}, expected {SCHEMA_VERSION}")
    for key, kind in (("iclbench_version", str), ("suite_version", str), ("model", dict), ("run", dict), ("tasks", dict)):
        if not isinstance(results.get(key), kind):
            raise ResultsError(f"{where}: field {key!r} is missing or not a {kind.__name__}")
    try:
        _every_number_finite(results, "")
        _typed(results["model"], "model", MODEL_FIELDS)
        _typed(results["run"], "run", RUN_FIELDS)
        for name, entry in results["tasks"].items():
            _task(entry, f"tasks[{name!r}]")
        _in_pool(results)
    except ResultsError as exc:
        raise ResultsError(f"{where}: {exc}") from None
