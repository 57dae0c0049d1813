"""`iclbench.evaluate`: score a model from Python exactly as `iclbench run` does, and its `Results`."""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence, TextIO

import torch
from tabulate import tabulate
from threadpoolctl import threadpool_limits

from iclbench import distributed, results, samples as samples_file
from iclbench import tasks as task_registry
from iclbench.api import Model, TaskFailure
from iclbench.cache import export_in_use, use_export
from iclbench.plugins import LoadedModel, check_model_args, instantiate, load_model, loaded
from iclbench.runner import RunConfig, Samples, ScoredModel, resolve_device, run
from iclbench.sandbox import choose
from iclbench.worker import IsolatedModel, Limits

if TYPE_CHECKING:
    import pandas as pd

ModelArg = str | int | float | bool | None
"""A model argument's value: a JSON scalar."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during `evaluate`: `path` is the results file that keeps the tasks in `done` (None: nothing written)."""

    def __init__(self, path: Path | None, done: list[str], selected: list[str]) -> None:
        super().__init__(path, done)
        self.path, self.done, self.selected = path, done, selected

    def __str__(self) -> str:
        if self.path is None or not self.done:
            return "interrupted before any task finished; nothing was written"
        names = ", ".join(self.done[:3]) + (" ..." if len(self.done) > 3 else "")
        return f"interrupted; {self.path} keeps {len(self.done)} of the {len(self.selected)} tasks selected ({names})"


def _score(entry: dict[str, Any]) -> dict[str, Any] | None:
    """The `rel_err` at the task's nominal length of a results entry, or None."""
    if entry["status"] != "ok":
        return None
    m = entry.get("lengths", {}).get(str(entry["spec"]["nominal"]))
    return m["rel_err"] if m else None


def summary_table(doc: dict[str, Any]) -> str:
    """One row per task: nominal-length error in dB with its 90% interval, and the time taken; for a model with a
    declared task pool, the error on in-pool prompts too (the task's own error is then the out-of-pool one)."""
    rows = []
    pooled = any("in_pool" in entry for entry in doc["tasks"].values())
    for name, entry in doc["tasks"].items():
        nominal = entry["spec"]["nominal"]
        m = entry.get("lengths", {}).get(str(nominal)) if entry["status"] == "ok" else None
        err = m["rel_err"] if m else None
        rate = m.get("error_rate") if m else None
        in_pool = entry.get("in_pool", {}).get("lengths", {}).get(str(nominal)) if entry["status"] == "ok" else None
        rows.append(
            [
                name,
                entry["status"] if entry["status"] != "failed" else "FAILED",
                nominal,
                f"{err['db']:.1f}" if err else "",
                f"[{err['ci90_db'][0]:.1f}, {err['ci90_db'][1]:.1f}]" if err else "",
                *([f"{in_pool['rel_err']['db']:.1f}" if in_pool else ""] if pooled else []),
                f"{100 * rate['value']:.1f}%" if rate else "",
                f"{entry['seconds']:.2f}" if "seconds" in entry else "",
            ]
        )
    headers = ["task", "status", "n", "error (dB)", "90% CI (dB)", *(["in pool (dB)"] if pooled else []), "error rate",
               "time (s)"]
    return tabulate(rows, headers, disable_numparse=True)


@dataclass(frozen=True)
class Results:
    """What `evaluate` returns.

    `doc` is the results document, the content of the results file (docs/cli.md, "The
    results file"); `path` that file (None when `evaluate` had no `out`). With `log_samples`,
    `samples` holds the per-prompt outputs by task (tensors named `<task>/<n>/rel_err`,
    `target_sq` and `y`, as in `iclbench.samples`) and `samples_path` the file beside `path`.
    """

    doc: dict[str, Any]
    path: Path | None = None
    samples: Samples | None = None
    samples_path: Path | None = None

    @property
    def model(self) -> str:
        """The model's name."""
        return self.doc["model"]["name"]

    @property
    def tasks(self) -> list[str]:
        """Every task of the document, in suite order."""
        return list(self.doc["tasks"])

    @property
    def failed(self) -> dict[str, str]:
        """The error message of every failed task, by task."""
        return {name: e["error"] for name, e in self.doc["tasks"].items() if e["status"] == "failed"}

    def status(self, task: str) -> str:
        """"ok", "failed" or "unsupported"."""
        return self.doc["tasks"][task]["status"]

    def lengths(self, task: str) -> list[int]:
        """The prompt lengths scored on `task` (none unless its status is "ok")."""
        return [int(n) for n in self.doc["tasks"][task].get("lengths", {})]

    def metrics(self, task: str, n: int | None = None) -> dict[str, Any] | None:
        """Every metric of `task` at prompt length `n` (default: its nominal length), or None when not scored."""
        entry = self.doc["tasks"][task]
        return entry.get("lengths", {}).get(str(entry["spec"]["nominal"] if n is None else n))

    def db(self, task: str, n: int | None = None) -> float | None:
        """The relative error of `task` at length `n` (default: nominal) in dB, or None when not scored."""
        m = self.metrics(task, n)
        return None if m is None else m["rel_err"]["db"]

    def table(self) -> str:
        """The summary `iclbench run` prints: one row per task at its nominal length."""
        return summary_table(self.doc)

    def to_dataframe(self) -> pd.DataFrame:
        """One row per task and scored prompt length (one row, n = nominal, for a task not scored):

        model, task, family, n, nominal (bool), status, rel_err, rel_err_db, ci90_low_db,
        ci90_high_db, error_rate, recovery_db, final_step_db (the last step's error, for models
        that return steps), n_prompts, seconds; NaN where a value does not apply.
        """
        import pandas as pd

        rows = []
        for name, entry in self.doc["tasks"].items():
            spec = entry["spec"]
            base = {"model": self.model, "task": name, "family": spec["family"], "status": entry["status"],
                    "n_prompts": entry.get("n_prompts"), "seconds": entry.get("seconds")}
            lengths = entry.get("lengths") or {str(spec["nominal"]): None}
            for n, m in lengths.items():
                m = m or {}
                err, rate, rec = m.get("rel_err"), m.get("error_rate"), m.get("recovery")
                steps = m.get("steps_rel_err_db")
                rows.append({
                    **base, "n": int(n), "nominal": int(n) == spec["nominal"],
                    "rel_err": err["value"] if err else None, "rel_err_db": err["db"] if err else None,
                    "ci90_low_db": err["ci90_db"][0] if err else None, "ci90_high_db": err["ci90_db"][1] if err else None,
                    "error_rate": rate["value"] if rate else None, "recovery_db": rec["db"] if rec else None,
                    "final_step_db": steps[-1] if steps else None,
                })
        columns = ["model", "task", "family", "n", "nominal", "status", "rel_err", "rel_err_db", "ci90_low_db",
                   "ci90_high_db", "error_rate", "recovery_db", "final_step_db", "n_prompts", "seconds"]
        frame = pd.DataFrame(rows, columns=columns)
        numeric = ["rel_err", "rel_err_db", "ci90_low_db", "ci90_high_db", "error_rate", "recovery_db", "final_step_db",
                   "n_prompts", "seconds"]
        frame[numeric] = frame[numeric].astype("float64")
        return frame


class TaskLines:
    """One line per selected task as it is done, flushed at once: for logs, where a progress bar shows nothing.

    With `rank` (a sharded run), each line names the rank that scored the task, and has no count.
    """

    def __init__(self, total: int, where: Path | None, stream: TextIO, rank: int | None = None) -> None:
        self.total, self.where, self.stream, self.count, self.rank = total, where, stream, 0, rank

    def __call__(self, name: str, entry: dict[str, Any], kept: bool) -> None:
        self.count += 1
        err = _score(entry)
        nominal = entry["spec"]["nominal"]
        if entry["status"] == "failed":
            what = f"FAILED ({entry['error']})"
        elif entry["status"] == "unsupported":
            what = "unsupported"
        else:
            what = f"{err['db']:.2f} dB at n={nominal}" if err else f"n={nominal} unsupported"
        if kept:
            what += f", kept from {self.where}"
        elif "seconds" in entry:
            what += f", {entry['seconds']:.1f} s"
        where = f"[{self.count}/{self.total}]" if self.rank is None else f"[rank {self.rank}]"
        print(f"{where} {name}: {what}", file=self.stream, flush=True)


def task_lines(total: int, progress: bool, where: Path | None = None, rank: int | None = None) -> TaskLines | None:
    """With `progress`, one line per finished task on stderr where a progress bar shows nothing (not a terminal)."""
    return TaskLines(total, where, sys.stderr, rank) if progress and not sys.stderr.isatty() else None


@contextmanager
def thread_limit(threads: int) -> Iterator[None]:
    """This process's thread pools (torch's, and the BLAS and OpenMP pools NumPy uses) held at `threads` (0: as
    they are): the harness's data and metrics, like the model's worker (`Limits.threads`), then never wait on
    threads that other processes keep from running."""
    if not threads:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        torch.set_num_threads(before)


def _source_file(cls: type) -> Path | None:
    try:
        found = inspect.getsourcefile(cls)
    except (TypeError, OSError):
        return None
    return Path(found) if found else None


def _in_process(model: Model | type[Model] | str, args: dict[str, Any]) -> LoadedModel:
    if isinstance(model, str):
        return load_model(model, args)
    cls = model if isinstance(model, type) else type(model)
    source = f"{cls.__module__}:{cls.__qualname__}"
    if isinstance(model, type):
        return loaded(instantiate(model, args, source), source, _source_file(cls), args)
    if args:
        raise ValueError("model_args go to the model's constructor: pass the class, not an instance")
    return loaded(model, source, _source_file(cls))


def _start(
    model: Model | type[Model] | str, args: dict[str, Any], isolated: bool | None, limits: Limits, sandboxed: bool,
    device: torch.device,
) -> ScoredModel:
    if not isinstance(model, str) and not (isinstance(model, Model) or (isinstance(model, type) and issubclass(model, Model))):
        raise TypeError(f"model must be an iclbench.Model, a Model subclass or a --model string, not {type(model).__name__}")
    args = check_model_args(args)
    if isolated is None:
        isolated = isinstance(model, str)
    if not isolated:
        return _in_process(model, args)
    if not isinstance(model, str):
        raise ValueError("isolated=True runs a model given as a string ('path.py:Class', a module or a baseline's name) "
                         "in a worker process; an instance or a class runs in this process")
    return IsolatedModel(model, limits, args, sandbox=sandboxed, device=device)


def evaluate(
    model: Model | type[Model] | str,
    tasks: str | Sequence[str] | None = None,
    *,
    device: str = "auto",
    dtype: str = "float32",
    batch_size: int = 512,
    prompts: int | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    model_args: Mapping[str, ModelArg] | None = None,
    isolated: bool | None = None,
    limits: Limits = Limits(),
    align: Sequence[str] = (),
    data: str | Path | None = None,
    log_samples: bool = False,
    progress: bool = True,
    sandbox: bool | None = None,
    overwrite: bool = False,
) -> Results:
    """Score `model` on the suite, as `iclbench run` does (it calls this), and return its `Results`.

    `model`: an `iclbench.Model` instance or subclass, run in this process, or a `--model` string
    (`path.py[:Class]`, `module[:Class]` or a baseline's name), run in a worker process
    (`iclbench.worker`) unless `isolated=False`. Results identify a model by its class, files and
    `model_args`, not an instance's state: give two differently built instances different `out`. `model_args` are passed to the class's constructor
    as keyword arguments (JSON scalars; in the worker for a string). `tasks`: names, families or
    glob patterns, as a list or one comma-separated string (default: every task). `out`: the folder
    of the results file `<model name>[--<args>].json`, written after every task (None: nothing is
    written); `resume`, `device`, `dtype`, `batch_size`, `prompts`, `limits` (worker only),
    `align`, `data`, `log_samples` and `overwrite` are `iclbench run`'s options of those names. `progress`: a bar
    on a terminal, one line per task on stderr otherwise. `sandbox` (worker only): True runs the model (and the
    `align` references) in the sandbox (`iclbench.sandbox`), False without, None in it wherever it can be made,
    otherwise without, with a warning.

    Launched by torchrun (`torchrun --nproc-per-node N script.py`), it joins the process group
    (`iclbench.distributed`) and the tasks are split across the ranks, each scoring its own in its own
    worker; every rank must call it alike. Rank 0 writes the results file, the same as a single process
    writes, and every rank returns the whole document (`iclbench.runner.run`).

    Raises `PluginError` (a model that does not load), `UnknownTaskError`, `ValueError` (bad
    arguments, device or export; `ResultsError` for a results file that would lose work; `SandboxError` for
    `sandbox=True` where it cannot be made) and, on
    Ctrl-C, `Interrupted`, saying what the results file kept. A failing task does not raise: it is
    recorded, see `Results.failed`.
    """
    distributed.init()
    patterns = [p for t in ([tasks] if isinstance(tasks, str) else tasks or []) for p in t.split(",") if p.strip()]
    selected = task_registry.select([p.strip() for p in patterns])
    names = [t.spec.name for t in selected]
    args = dict(model_args or {})
    before = export_in_use()
    if data is not None:
        use_export(Path(data), selected)
    path: Path | None = None
    started: list[ScoredModel] = []
    try:
        run_device = distributed.local_device(resolve_device(device))
        workers = (isinstance(model, str) and isolated is not False) or bool(align)
        sandboxed = workers and choose(sandbox)  # decided once: one warning where it cannot be made
        scored = _start(model, args, isolated, limits, sandboxed, run_device)
        started.append(scored)
        references: dict[str, ScoredModel] = {}
        for name in align:
            references[name] = ref = IsolatedModel(name, limits, sandbox=sandboxed, device=run_device)
            started.append(ref)
            try:
                ref.setup(run_device)
            except TaskFailure as exc:
                raise ValueError(f"--align {name}: {exc}") from None
        cfg = RunConfig(device, dtype, batch_size, prompts)
        path = None if out is None else Path(out) / f"{results.file_stem(scored.name, scored.args)}.json"
        logged: Samples | None = {} if log_samples else None
        rank = distributed.rank() if distributed.world_size() > 1 else None  # sharded: lines name their rank
        report = task_lines(len(selected), progress, path, rank)
        with thread_limit(limits.threads):
            doc = run(scored, selected, cfg, path, resume=resume, progress=progress and not rank,
                      references=references, samples=logged, report=report, overwrite=overwrite)
    except KeyboardInterrupt:
        done = list(results.read(path)["tasks"]) if path is not None and path.exists() else []
        raise Interrupted(path, [n for n in names if n in done], names) from None
    finally:
        for m in started:
            m.close()
        if data is not None:
            use_export(before)
    samples_path = None if path is None or not log_samples else samples_file.path_for(path)
    return Results(doc, path, logged, samples_path)


__all__ = ["Interrupted", "Results", "evaluate"]
