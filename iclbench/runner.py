"""Scoring a model on tasks: batched prediction, output checks, metrics and results."""

from __future__ import annotations

import glob
import json
import logging
import platform
import re
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Collection, Iterable, Iterator, Protocol

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from tqdm import tqdm

import iclbench
from iclbench import alignment, distributed, metrics, results, samples as samples_file
from iclbench.api import Answer, Batch, Prediction, Request, TaskFailure, check_prediction
from iclbench.cache import eval_set, export_in_use, held_for, pool_set
from iclbench.plugins import PluginError, folder_sha256, regular_file_sha256
from iclbench.provenance import cpu_model, provenance
from iclbench.tasks import FINGERPRINTS, SUITE_VERSION, TASKS, EvalSet, Task, TaskSpec
from iclbench.tasks.pool import TaskPool

log = logging.getLogger(__name__)


class ScoredModel(Protocol):
    """What the runner drives: a model in a worker process (`iclbench.worker.IsolatedModel`, what
    `iclbench run` and `validate --rerun` use) or in this process (`iclbench.plugins.LoadedModel`)."""

    source: str
    args: dict[str, Any]
    """Keyword arguments the model's class was created with (JSON scalars)."""

    @property
    def name(self) -> str: ...

    @property
    def qualname(self) -> str: ...

    @property
    def threads(self) -> int:
        """The CPU threads the model computes with."""

    @property
    def sandboxed(self) -> bool:
        """Whether the model runs in the sandbox (`iclbench.sandbox`)."""

    @property
    def path(self) -> Path | None: ...

    @property
    def checkpoint(self) -> str | None: ...

    @property
    def task_pool(self) -> TaskPool | None:
        """The model's declared pool of training tasks (`iclbench.api.Model.task_pool`), checked, once set up."""

    def setup(self, device: torch.device) -> None:
        """The model's `setup`; `TaskFailure` saying what went wrong."""

    def begin_task(self) -> None:
        """Start a task's clock (and a worker that is gone)."""

    def supported_lengths(self, spec: TaskSpec) -> list[int] | None:
        """Prompt lengths scored on `spec`; None: the task is unsupported."""

    @property
    def predicts_lengths(self) -> bool:
        """Whether the runner asks for every length in one call (`iclbench.api.Model.predict_lengths`) rather than
        for one length at a time (`predict`)."""

    def answers(self, requests: Iterable[Request]) -> Iterator[Answer]:
        """The answer to each request in turn, on the CPU: for a CPU batch, the prediction (`predict`) or, where the
        request names lengths, the predictions at each of them for the batch at the longest (`predict_lengths`);
        `TaskFailure` saying what went wrong (and its `length`, where it concerns one). A model in a worker computes
        the next request's answer while the runner scores this one."""

    def close(self) -> None:
        """Release the model (stop its worker)."""


References = dict[str, ScoredModel]
"""Reference algorithms for `iclbench run --align`, by name, already set up on the run's device."""
Samples = dict[str, dict[str, torch.Tensor]]
"""Per-prompt outputs by task (`iclbench.samples`)."""
Report = Callable[[str, dict[str, Any], bool], None]
"""Called with each selected task's name and entry once it is done, and whether it was kept from the file."""


@dataclass(frozen=True)
class RunConfig:
    """How a run is done; everything here is recorded in the results."""

    device: str = "auto"
    dtype: str = "float32"
    batch_size: int = 512
    prompts: int | None = None

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def torch_dtype(self) -> torch.dtype:
        return {"float32": torch.float32, "float64": torch.float64}[self.dtype]


def resolve_device(name: str) -> torch.device:
    """The device `--device` names, checked to exist."""
    try:
        device = RunConfig(device=name).torch_device()
    except RuntimeError as exc:
        raise ValueError(f"--device {name}: {exc}") from None
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if count == 0:
            raise ValueError(f"--device {name}: CUDA is not available on this machine")
        if (device.index or 0) >= count:
            raise ValueError(f"--device {name}: this machine has {count} CUDA device(s)")
    elif device.type != "cpu":
        raise ValueError(f"--device {name}: expected auto, cpu, cuda or cuda:N")
    return device


class Outputs:
    """A model's outputs for every prompt at one length, gathered chunk by chunk (`add`): `y` and `w` whole,
    `steps` as their per-step errors against `target` (`metrics.StepErrors`, in memory that does not grow
    with prompts x steps; None without a target) and, with `keep_steps`, whole too."""

    def __init__(self, n: int, total: int, target: torch.Tensor | None, keep_steps: bool) -> None:
        self.n, self.total, self.target, self.keep_steps = n, total, target, keep_steps
        self.y: torch.Tensor | None = None
        self.w: torch.Tensor | None = None
        self.steps: torch.Tensor | None = None
        self.errors: metrics.StepErrors | None = None
        self._k: int | None = None
        self._bad: dict[str, int] = {}

    def add(self, sl: slice, pred: Prediction) -> None:
        """Take the checked prediction of the prompts `sl` (the next ones); `TaskFailure` when its fields differ from earlier chunks'."""
        if self.y is None:
            self.y = pred.y.new_empty((self.total, *pred.y.shape[1:]))
            self.w = None if pred.w is None else pred.w.new_empty((self.total, *pred.w.shape[1:]))
            if pred.steps is not None:
                self._k = pred.steps.shape[1]
                self.errors = None if self.target is None else metrics.StepErrors(self.target)
                self.steps = pred.steps.new_empty((self.total, *pred.steps.shape[1:])) if self.keep_steps else None
        elif (pred.steps is None) != (self._k is None) or (pred.w is None) != (self.w is None):
            raise TaskFailure("Prediction.steps and Prediction.w must be returned for every batch or none")
        elif pred.steps is not None and pred.steps.shape[1] != self._k:
            raise TaskFailure(f"Prediction.steps has {pred.steps.shape[1]} steps, earlier batches had {self._k}")
        for what, t in (("prediction", pred.y), ("Prediction.w", pred.w)):
            if t is not None and what not in self._bad and (bad := metrics.first_non_finite(t)) is not None:
                self._bad[what] = sl.start + bad
        self.y[sl] = pred.y
        if self.w is not None:
            self.w[sl] = pred.w
        if self.errors is not None:  # the steps' errors; their one other read (aminmax) finds a NaN or an infinity
            if (bad := self.errors.add(pred.steps).first_bad) is not None:
                self._bad.setdefault("Prediction.steps", bad)
        elif pred.steps is not None and (bad := metrics.first_non_finite(pred.steps)) is not None:
            self._bad.setdefault("Prediction.steps", sl.start + bad)
        if self.steps is not None:
            self.steps[sl] = pred.steps

    def finish(self) -> Outputs:
        """These outputs, once every prompt is in; `TaskFailure` at the first NaN or Inf (predictions, steps, then w)."""
        for what in ("prediction", "Prediction.steps", "Prediction.w"):
            if what in self._bad:
                raise TaskFailure(f"{what} contains NaN or Inf (n={self.n}, first at prompt {self._bad[what]})")
        return self

    def largest(self) -> float:
        """The largest magnitude among the outputs."""
        found = [float(t.abs().max()) for t in (self.y, self.w) if t is not None and t.numel()]
        return max(found + ([] if self.errors is None else [self.errors.largest]))


def predict_all(
    model: ScoredModel,
    spec: TaskSpec,
    data: EvalSet,
    lengths: list[int],
    cfg: RunConfig,
    bar: tqdm,
    targets: dict[int, torch.Tensor] | None = None,
    keep_steps: Collection[int] = (),
) -> Iterator[tuple[int, Outputs]]:
    """The outputs for every prompt of `data` (CPU tensors in the run's dtype) at each of `lengths` (ascending),
    chunked by `cfg.batch_size`, yielded by length as each is complete; the steps' errors against `targets`
    (by length), the whole steps only at the lengths of `keep_steps`.

    A model that predicts every length in one call (`ScoredModel.predicts_lengths`) is asked once per chunk
    at the longest length, and every length is complete at the end; any other, once per length and chunk,
    length after length. Each prediction is checked as that of a `predict` call at its length. The requests
    go to `ScoredModel.answers` a round at a time, so that a model in a worker computes while this scores: the
    chunks of one length (or of every length at once), whose prompts differ, so that a request it is sent
    ahead of its answers never holds a longer prefix of prompts it has yet to answer.
    """
    total = data.n_prompts
    chunks = [slice(start, min(start + cfg.batch_size, total)) for start in range(0, total, cfg.batch_size)]
    outs = {n: Outputs(n, total, None if targets is None else targets[n], n in keep_steps) for n in lengths}
    asked = lengths if model.predicts_lengths else None

    def gather(n: int) -> None:
        """Ask for every chunk at length `n` (with `asked`, at every length) and add the checked answers."""
        requests = [(Batch(spec, data.x[sl, :n], data.y[sl, :n], data.x_query[sl]), asked) for sl in chunks]
        answers = model.answers(requests)
        try:
            for sl, (batch, _) in zip(chunks, requests):
                try:
                    answer = next(answers)
                except TaskFailure as exc:
                    at = n if asked is None else ", ".join(map(str, asked)) if exc.length is None else exc.length
                    raise TaskFailure(f"{exc} (n={at}, prompts {sl.start}-{sl.stop - 1})") from None
                preds = {n: answer} if asked is None else answer
                for m in asked or [n]:
                    try:
                        outs[m].add(sl, check_prediction(preds[m], batch.prefix(m)))
                    except TaskFailure as exc:
                        raise TaskFailure(f"{exc} (n={m}, prompts {sl.start}-{sl.stop - 1})") from None
                bar.update(len(preds))
        finally:
            answers.close()

    if asked:
        gather(max(lengths))
        for n in lengths:
            yield n, outs[n].finish()
        return
    for n in lengths:
        gather(n)
        yield n, outs[n].finish()


def run_task(
    model: ScoredModel,
    task: Task,
    cfg: RunConfig,
    progress: bool = True,
    references: References | None = None,
    samples: dict[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Score the model on one task; a failure is recorded in the returned entry, never raised.

    With `references` (set-up baselines by name), the entry's `alignment` compares the model's
    per-layer predictions at the nominal length with each reference's steps (`iclbench.alignment`).
    With `samples`, every scored length's per-prompt outputs are added to it (`iclbench.samples`).
    A task of the model's declared pool (`ScoredModel.task_pool`) is also scored on in-pool prompts (`in_pool`,
    and their samples under `<task>/in_pool`).
    """
    spec = task.spec
    entry: dict[str, Any] = {"status": "ok", "spec": spec.to_dict(), "sandboxed": model.sandboxed}
    start = time.perf_counter()
    try:
        _score_task(model, task, cfg, progress, entry, references or {}, samples)
    except TaskFailure as exc:
        entry.update(status="failed", error=f"{spec.name}: {exc}")
    except Exception as exc:  # a solver, the device: still only this task fails
        entry.update(status="failed", error=f"{spec.name}: {type(exc).__name__}: {exc}")
    if entry["status"] != "unsupported":
        entry["seconds"] = round(time.perf_counter() - start, 4)
    return entry


def _score_task(
    model: ScoredModel,
    task: Task,
    cfg: RunConfig,
    progress: bool,
    entry: dict[str, Any],
    references: References,
    samples: dict[str, torch.Tensor] | None,
) -> None:
    spec = task.spec
    model.begin_task()
    scored = model.supported_lengths(spec)
    if scored is None:
        entry["status"] = "unsupported"
        return
    dtype = cfg.torch_dtype()
    data, fingerprint = eval_set(task)
    entry["fingerprint"] = fingerprint
    entry["fingerprint_ok"] = fingerprint == FINGERPRINTS.get(spec.name)
    if cfg.prompts is not None and cfg.prompts < data.n_prompts:
        data = data.head(cfg.prompts)
    entry["n_prompts"] = data.n_prompts
    inputs = EvalSet(data.x.to(dtype), data.y.to(dtype), data.x_query.to(dtype), {}, {}, {})
    entry["unsupported_lengths"] = [n for n in spec.lengths if n not in scored]
    chunks = -(-data.n_prompts // cfg.batch_size) * len(scored)
    entry["lengths"] = lengths = {}
    keep_steps = {spec.nominal} if references else set()  # alignment needs the whole steps, at the nominal length
    with tqdm(total=chunks, desc=spec.name, leave=False, disable=not progress or None) as bar:
        for n, out in predict_all(model, spec, inputs, scored, cfg, bar, data.targets, keep_steps):
            scores = metrics.score(spec, data, n, out.y, out.errors, out.w)
            if (where := results.non_finite(scores)) is not None:
                raise TaskFailure(
                    f"n={n}: {where} is not a finite number: the predictions are too large to score "
                    f"(largest magnitude {out.largest():.3g})"
                )
            lengths[str(n)] = scores
            if samples is not None:
                samples.update(samples_file.task_tensors(spec.name, n, out.y, data.targets[n]))
            if out.steps is not None:
                entry["alignment"] = alignment.with_references(references, spec, data, inputs, n, out.steps, cfg)
    pool = model.task_pool
    if pool is not None and spec.name in pool.tasks:
        entry["in_pool"] = _score_in_pool(model, task, pool, scored, cfg, progress, samples)


def _score_in_pool(model: ScoredModel, task: Task, pool: TaskPool, scored: list[int], cfg: RunConfig,
                   progress: bool, samples: dict[str, torch.Tensor] | None) -> dict[str, Any]:
    """The relative error at each length of `scored` on in-pool prompts (`iclbench.cache.pool_set` of the pool's
    size and seed: the public ones, or fresh ones within `fresh_sets`; as many prompts as the evaluation set, or
    `cfg.prompts`); with `samples`, their per-prompt outputs are added to it under `<task>/in_pool`."""
    spec, dtype = task.spec, cfg.torch_dtype()
    data = pool_set(task, pool.size, pool.seed)
    if cfg.prompts is not None and cfg.prompts < data.n_prompts:
        data = data.head(cfg.prompts)
    inputs = EvalSet(data.x.to(dtype), data.y.to(dtype), data.x_query.to(dtype), {}, {}, {})
    lengths: dict[str, Any] = {}
    chunks = -(-data.n_prompts // cfg.batch_size) * len(scored)
    with tqdm(total=chunks, desc=f"{spec.name} in pool", leave=False, disable=not progress or None) as bar:
        for n, out in predict_all(model, spec, inputs, scored, cfg, bar):
            scores = {"rel_err": metrics.relative_error(out.y, data.targets[n])}
            if (where := results.non_finite(scores)) is not None:
                raise TaskFailure(f"in-pool prompts, n={n}: {where} is not a finite number: the predictions are too "
                                  f"large to score (largest magnitude {out.largest():.3g})")
            lengths[str(n)] = scores
            if samples is not None:
                samples.update(samples_file.task_tensors(f"{spec.name}/in_pool", n, out.y, data.targets[n]))
    return {"size": pool.size, "seed": pool.seed, "n_prompts": data.n_prompts, "lengths": lengths}


def model_info(model: ScoredModel, out: Path | None = None) -> dict[str, Any]:
    """The model's identity as recorded in results: name, source, constructor arguments and file hashes.

    `files_sha256` holds the SHA-256 of every file beside the model (`iclbench.plugins.folder_sha256`,
    `out`, the results file, and its samples file excluded): what `--resume` compares to know that
    nothing changed.
    """
    path = model.path
    outputs = () if out is None else (out, samples_file.path_for(out))
    return {
        "name": model.name,
        "source": model.source,
        "class": model.qualname,
        "args": model.args,
        "file_sha256": regular_file_sha256(path),
        "checkpoint_sha256": regular_file_sha256(model.checkpoint),
        "task_pool": None if model.task_pool is None else model.task_pool.to_dict(),
        "files_sha256": folder_sha256(path.parent, outputs) if path is not None else {},
    }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_results(model: ScoredModel, cfg: RunConfig, out: Path | None = None) -> dict[str, Any]:
    """A results document with no task scored yet."""
    device = cfg.torch_device()
    return {
        "schema_version": results.SCHEMA_VERSION,
        "iclbench_version": iclbench.__version__,
        "suite_version": SUITE_VERSION,
        "model": model_info(model, out),
        "run": {
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
            "dtype": cfg.dtype,
            "batch_size": cfg.batch_size,
            "threads": model.threads,
            "prompts": cfg.prompts,
            "limited": cfg.prompts is not None,
            "torch_version": torch.__version__,
            "python_version": sys.version.split()[0],
            "platform": platform.platform(),
            "provenance": provenance(),
            "data_export": None if (export := export_in_use()) is None else str(export),
            "data_mismatch": [],
            "started": _now(),
            "finished": None,
        },
        "tasks": {},
    }


def _finished(name: str, entry: dict[str, Any]) -> bool:
    """Whether a task's entry may be kept by `--resume`: finished, and scored on the data this run would use."""
    if entry.get("status") == "unsupported":
        return True
    return entry.get("status") == "ok" and entry.get("fingerprint") == eval_set(TASKS[name])[1]


def partial_path(out: Path, rank: int) -> Path:
    """Where rank `rank` > 0 of a sharded run keeps its finished tasks (a results document) until rank 0
    gathers them: the hidden `.<results file>.rank<rank>.partial` beside `out`."""
    return out.with_name(f".{out.name}.rank{rank}.partial")


def _partials(out: Path) -> list[Path]:
    """The partial files beside `out` that a sharded run wrote or journaled (`iclbench.results.journal_path`)."""
    stem = f".{glob.escape(out.name)}.rank*.partial"
    found = [*out.parent.glob(stem), *out.parent.glob(results.journal_path(Path(stem)).name)]
    ranks = {int(m[1]) for p in found if (m := re.search(r"\.rank(\d+)\.partial(\.journal)?$", p.name))}
    return [partial_path(out, r) for r in sorted(ranks)]


def _previous(out: Path | None, model: ScoredModel, resume: bool) -> tuple[dict[str, Any] | None, list[Path]]:
    """The results already at `out` (with the journal a run that stopped left beside it folded in,
    `iclbench.results.read_journaled`), with the tasks of the partial files a sharded run that stopped left
    beside it (`partial_path`, their journals folded in too), when they are of this model (`ResultsError`
    otherwise); and those partial files.

    A partial file made with other model files or settings than the results file is left alone, with a warning.
    """
    if out is None:
        return None, []
    previous = results.read_journaled(out)
    merged = []
    for part in _partials(out):
        try:
            doc = results.read_journaled(part)
        except results.ResultsError as exc:
            log.warning("%s; it is left alone", exc)
            continue
        if doc is None:
            continue
        if previous is None:
            previous = doc
        elif differences := results.changes(previous, doc):
            log.warning("%s was made with other model files or settings than %s (%s); it is left alone",
                        part, out, "; ".join(differences))
            continue
        else:
            previous["tasks"].update(doc["tasks"])
        merged.append(part)
    if previous is None:
        return None, []
    if previous["model"]["name"] != model.name:
        raise results.ResultsError(
            f"{out} holds the results of model {previous['model']['name']!r}, not {model.name!r} "
            "(both names give this file name): use another --out"
        )
    if (args := previous["model"].get("args", results.ABSENT["args"])) != model.args:
        raise results.ResultsError(
            f"{out} holds the results of {model.name} with model arguments {args}, not {model.args} "
            "(both give this file name): use another --out"
        )
    if resume and previous["suite_version"] != SUITE_VERSION:
        raise results.ResultsError(
            f"{out} was made on suite {previous['suite_version']!r}; this is suite {SUITE_VERSION!r}: "
            "re-run without --resume, or into another --out"
        )
    return previous, merged


def run(
    model: ScoredModel,
    tasks: list[Task],
    cfg: RunConfig,
    out: Path | None = None,
    resume: bool = False,
    progress: bool = True,
    references: References | None = None,
    samples: Samples | None = None,
    report: Report | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Score `model` on `tasks`, writing the results file at `out` once, at the end.

    Each task's entry is made durable as it finishes, before it is reported, by a line appended to the
    journal beside `out` (`iclbench.results.Journal`), not by rewriting the file. A run stopped while
    scoring (Ctrl-C, an exception) writes `out` before it stops; one killed leaves its journal, which the
    next run into `out` writes into `out` before it scores anything (`iclbench.results.read_journaled`).

    A failure in `setup` or in one task is recorded and the other tasks still run.
    An existing file at `out` is never silently lost (`iclbench.results.merge`): its tasks
    outside `tasks` are kept when it was made with the same model files and settings, and the
    run is refused (`ResultsError`) when they were not, when it would replace the file by a smaller
    run (fewer prompts, another dtype or device), both unless `overwrite`, when it holds another
    model's results, or when another run is writing it (`iclbench.results.locked`). With `resume`, tasks of
    `tasks` already finished in that file with the same model files, settings, versions and data
    are kept rather than re-run; a file of another suite version is then refused.
    `run.data_mismatch` lists the tasks whose data do not match the registry's fingerprint.
    `references`: set-up models to align with (see `run_task`).
    `samples`: a dict that receives the per-prompt outputs of every task scored (and, with `out`,
    of the tasks kept whose samples the file or journal beside it holds); with `out`, each task's are
    made durable like its entry, in the samples journal (`iclbench.samples.Journal`), and the samples
    file beside `out` is written when the results file is. `report`: called as each selected task is done.

    Sharded, in a process group of several ranks (`iclbench.distributed`; every rank calls `run`
    alike, `model` being its own worker): rank 0 reads `out` and decides what to score; the tasks to
    score are split across the ranks (`iclbench.distributed.assign`); rank 0 journals its tasks beside
    `out`, every other rank beside its `partial_path` (which it writes when stopped while scoring), and a
    later run into `out` keeps those like the file's own tasks; at the end rank 0 gathers every rank's
    entries (and samples), writes `out`, removes the partial files and sends the document to every rank,
    which returns it.
    Each task is scored whole by one rank, so the numbers are those of a single-process run.
    """
    rank, world = distributed.rank(), distributed.world_size()
    lead, sharded = rank == 0, world > 1
    with ExitStack() as held:
        failure = None
        previous, merged, kept, differences = None, [], {}, []
        selected = [task.spec.name for task in tasks]
        try:  # sharded: every rank learns why rank 0 cannot start (a locked or foreign file)
            held.enter_context(results.locked(out if lead else None))
            if lead:
                previous, merged = _previous(out, model, resume)
            setup_error = None
            try:
                model.setup(distributed.local_device(cfg.torch_device()))
            except TaskFailure as exc:
                setup_error = str(exc)
            try:
                doc = new_results(model, cfg, out)
            except PluginError as exc:
                raise results.ResultsError(str(exc)) from None
            if previous is not None:
                differences = results.changes(previous, doc)
                kept = results.merge(previous, doc, selected, str(out), overwrite)
        except results.ResultsError as exc:
            if not sharded:
                raise
            failure = str(exc)
        if resume and differences:
            log.warning("--resume: re-running every task of %s, made with other model files or settings: %s",
                        out, "; ".join(differences))
        order: dict[str, int] = {}
        for name in [*TASKS, *kept]:
            order.setdefault(name, len(order))
        by_name = {task.spec.name: task for task in tasks}
        names = sorted(set(selected) | set(kept), key=order.__getitem__)
        keep = {n for n in names if n in kept and (n not in by_name or (resume and _finished(n, kept[n])))}
        todo = [n for n in names if n not in keep]
        entries = dict(kept)
        if lead and samples is not None and out is not None and kept:  # before the partial files' samples go
            for path in [out, *merged]:
                samples.update(samples_file.kept(samples_file.path_for(path), kept))
        journaled = lead and previous is not None and results.journal_path(out).exists()
        if lead and (merged or journaled) and failure is None:  # their tasks are in `out` before the journals and partial files go
            doc["tasks"] = _ordered(entries, order)
            _write(out, doc)
            results.journal_path(out).unlink(missing_ok=True)
            if samples is not None:
                samples_file.write(samples_file.path_for(out), doc, {t: samples[t] for t in doc["tasks"] if t in samples})
                results.journal_path(samples_file.path_for(out)).unlink(missing_ok=True)
            _remove(merged)
        if sharded:
            plan = json.dumps({"error": failure} if failure is not None else {"todo": todo}).encode()
            plan = json.loads(distributed.broadcast_bytes(plan if lead else None))
            if "error" in plan or failure is not None:
                raise results.ResultsError(plan.get("error", failure))
            todo = plan["todo"]
            share = distributed.assign([distributed.cost(by_name[n], cfg.prompts) for n in todo], world)[rank]
            mine = [todo[i] for i in share]
        else:
            mine = todo
        write_to = out if lead else None if out is None else partial_path(out, rank)
        samples_out = None if samples is None or write_to is None else samples_file.path_for(write_to)
        journal = None if write_to is None else results.Journal(write_to)
        samples_journal = None if samples_out is None else samples_file.Journal(samples_out)
        try:
            for name in names:
                if name in keep:
                    if report is not None and name in by_name:
                        report(name, kept[name], True)
                    continue
                if name not in mine:
                    continue
                if samples is not None:
                    samples.pop(name, None)
                task_samples: dict[str, torch.Tensor] | None = None if samples is None else {}
                if setup_error is not None:
                    entries[name] = {"status": "failed", "spec": by_name[name].spec.to_dict(),
                                     "sandboxed": model.sandboxed, "error": f"{name}: {setup_error}"}
                else:
                    with held_for(name):
                        entries[name] = run_task(model, by_name[name], cfg, progress, references, task_samples)
                if task_samples and entries[name]["status"] == "ok":
                    samples[name] = task_samples
                shown = _ordered(entries, order) if lead else {n: entries[n] for n in mine if n in entries}
                doc["tasks"] = shown
                if samples_journal is not None and name in samples:
                    samples_journal.append(doc, name, samples[name])
                if journal is not None:
                    journal.append(doc, name)
                if report is not None:
                    report(name, entries[name], False)
        except BaseException:
            if journal is not None and journal.started:  # stopped: the files hold what the journals do
                _write(write_to, doc)
                journal.remove()
                if samples_journal is not None:
                    samples_file.write(samples_out, doc, {t: samples[t] for t in doc["tasks"] if t in samples})
                    samples_journal.remove()
            raise
        if sharded:
            entries.update(_gather(mine, entries, samples))
        doc["tasks"] = _ordered(entries, order)
        doc["run"]["finished"] = _now()
        if lead and out is not None:
            _write(out, doc)
            if samples is not None:
                samples_file.write(samples_file.path_for(out), doc, {t: samples[t] for t in doc["tasks"] if t in samples})
            _remove([partial_path(out, r) for r in range(1, world)])
        for done in (journal, samples_journal):
            if done is not None and lead:
                done.remove()
            elif done is not None:
                done.close()  # rank 0 removes it with the partial file once `out` holds its tasks (`_remove`)
        if sharded:
            doc = json.loads(distributed.broadcast_bytes(json.dumps(doc).encode() if lead else None))
    return doc


def _ordered(entries: dict[str, dict[str, Any]], order: dict[str, int]) -> dict[str, dict[str, Any]]:
    return {name: entries[name] for name in sorted(entries, key=order.__getitem__)}


def _remove(partials: list[Path]) -> None:
    """Remove partial files (and their journals and samples files) once `out` holds their tasks."""
    for path in partials:
        for file in (path, samples_file.path_for(path)):
            file.unlink(missing_ok=True)
            results.journal_path(file).unlink(missing_ok=True)


def _gather(mine: list[str], entries: dict[str, dict[str, Any]], samples: Samples | None) -> dict[str, dict[str, Any]]:
    """Every rank's scored entries (as JSON) and, when collected, samples (as safetensors), on every rank."""
    scored: dict[str, dict[str, Any]] = {}
    for part in distributed.all_gather_bytes(json.dumps({n: entries[n] for n in mine}).encode()):
        scored.update(json.loads(part))
    if samples is not None:
        flat = {k: t.contiguous() for n in mine for k, t in samples.get(n, {}).items()}
        for blob in distributed.all_gather_bytes(save_tensors(flat) if flat else b""):
            for key, t in (load_tensors(blob) if blob else {}).items():
                samples.setdefault(key.rsplit("/", 2)[0], {})[key] = t
    return scored


def _write(out: Path, doc: dict[str, Any]) -> None:
    doc["run"]["data_mismatch"] = [name for name, e in doc["tasks"].items() if e.get("fingerprint_ok") is False]
    results.write(out, doc)
