"""Scoring a model on tasks: batched prediction, output checks, metrics and results."""

from __future__ import annotations

import platform
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

import iclbench
from iclbench import alignment, metrics, results
from iclbench.api import Batch, Prediction
from iclbench.cache import eval_set, export_in_use
from iclbench.plugins import LoadedModel, sha256_file
from iclbench.provenance import cpu_model, provenance
from iclbench.tasks import FINGERPRINTS, SUITE_VERSION, EvalSet, Task, TaskSpec


References = dict[str, LoadedModel]
"""Reference algorithms for `iclbench run --align`, by name, already set up on the run's device."""


class TaskFailure(Exception):
    """A task that could not be scored; the message names the task and what is wrong."""


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


def _check_tensor(t: Any, what: str, shape: tuple[int, ...], batch: Batch) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TaskFailure(f"{what} is a {type(t).__name__}, expected a torch.Tensor")
    if tuple(t.shape) != shape:
        raise TaskFailure(f"{what} has shape {tuple(t.shape)}, expected {shape}")
    if t.dtype != batch.x.dtype:
        raise TaskFailure(f"{what} has dtype {t.dtype}, expected {batch.x.dtype} (the batch's)")
    if t.device != batch.x.device:
        raise TaskFailure(f"{what} is on {t.device}, expected {batch.x.device} (the batch's)")
    return t


def check_prediction(out: Any, batch: Batch) -> Prediction:
    """The model's output as a `Prediction`, or `TaskFailure` saying what is wrong with it."""
    pred = out if isinstance(out, Prediction) else Prediction(out)
    b, q = batch.x_query.shape[:2]
    _check_tensor(pred.y, "prediction", (b, q), batch)
    if pred.steps is not None:
        if not isinstance(pred.steps, torch.Tensor) or pred.steps.dim() != 3:
            raise TaskFailure("Prediction.steps must be a (B, K, q) tensor")
        _check_tensor(pred.steps, "Prediction.steps", (b, pred.steps.shape[1], q), batch)
    if pred.w is not None:
        _check_tensor(pred.w, "Prediction.w", (b, batch.task.d), batch)
    return pred


def _first_bad(t: torch.Tensor) -> int | None:
    bad = ~torch.isfinite(t.reshape(t.shape[0], -1)).all(-1)
    return int(bad.nonzero()[0, 0]) if bool(bad.any()) else None


def predict_all(loaded: LoadedModel, spec: TaskSpec, data: EvalSet, n: int, cfg: RunConfig, bar: tqdm) -> Prediction:
    """Predictions for every prompt of length `n`, chunked by `cfg.batch_size`, on the device."""
    model = loaded.model
    total = data.n_prompts
    ys: torch.Tensor | None = None
    steps: torch.Tensor | None = None
    ws: torch.Tensor | None = None
    for start in range(0, total, cfg.batch_size):
        sl = slice(start, min(start + cfg.batch_size, total))
        where = f"n={n}, prompts {sl.start}-{sl.stop - 1}"
        batch = Batch(spec, data.x[sl, :n], data.y[sl, :n], data.x_query[sl])
        try:
            out = model.predict(batch)
        except Exception as exc:
            raise TaskFailure(f"predict raised {type(exc).__name__}: {exc} ({where})") from exc
        try:
            pred = check_prediction(out, batch)
            if ys is None:
                ys = pred.y.new_empty((total, *pred.y.shape[1:]))
                steps = None if pred.steps is None else pred.steps.new_empty((total, *pred.steps.shape[1:]))
                ws = None if pred.w is None else pred.w.new_empty((total, spec.d))
            elif (pred.steps is None) != (steps is None) or (pred.w is None) != (ws is None):
                raise TaskFailure("Prediction.steps and Prediction.w must be returned for every batch or none")
            elif steps is not None and pred.steps.shape[1] != steps.shape[1]:
                raise TaskFailure(f"Prediction.steps has {pred.steps.shape[1]} steps, earlier batches had {steps.shape[1]}")
        except TaskFailure as exc:
            raise TaskFailure(f"{exc} ({where})") from None
        ys[sl] = pred.y
        if steps is not None:
            steps[sl] = pred.steps
        if ws is not None:
            ws[sl] = pred.w
        bar.update(1)
    assert ys is not None
    for what, t in (("prediction", ys), ("Prediction.steps", steps), ("Prediction.w", ws)):
        if t is not None and (bad := _first_bad(t)) is not None:
            raise TaskFailure(f"{what} contains NaN or Inf (n={n}, first at prompt {bad})")
    return Prediction(ys.cpu(), None if steps is None else steps.cpu(), None if ws is None else ws.cpu())


def run_task(
    loaded: LoadedModel, task: Task, cfg: RunConfig, progress: bool = True, references: References | None = None
) -> dict[str, Any]:
    """Score the model on one task; a failure is recorded in the returned entry, never raised.

    With `references` (set-up baselines by name), the entry's `alignment` compares the model's
    per-layer predictions at the nominal length with each reference's steps (`iclbench.alignment`).
    """
    spec = task.spec
    entry: dict[str, Any] = {"status": "ok", "spec": spec.to_dict()}
    start = time.perf_counter()
    try:
        _score_task(loaded, task, cfg, progress, entry, references or {})
    except TaskFailure as exc:
        entry.update(status="failed", error=f"{spec.name}: {exc}")
    except Exception as exc:  # a model's supports(), a solver, the device: still only this task fails
        entry.update(status="failed", error=f"{spec.name}: {type(exc).__name__}: {exc}")
    if entry["status"] != "unsupported":
        entry["seconds"] = round(time.perf_counter() - start, 4)
    return entry


def _score_task(
    loaded: LoadedModel, task: Task, cfg: RunConfig, progress: bool, entry: dict[str, Any], references: References
) -> None:
    spec = task.spec
    if not loaded.model.supports(spec):
        entry["status"] = "unsupported"
        return
    device, dtype = cfg.torch_device(), cfg.torch_dtype()
    data, fingerprint = eval_set(task)
    entry["fingerprint"] = fingerprint
    entry["fingerprint_ok"] = fingerprint == FINGERPRINTS.get(spec.name)
    if cfg.prompts is not None and cfg.prompts < data.n_prompts:
        data = data.head(cfg.prompts)
    entry["n_prompts"] = data.n_prompts
    on_device = EvalSet(data.x.to(device, dtype), data.y.to(device, dtype), data.x_query.to(device, dtype), {}, {}, {})
    scored = [n for n in spec.lengths if loaded.model.supports_length(spec, n)]
    entry["unsupported_lengths"] = [n for n in spec.lengths if n not in scored]
    chunks = -(-data.n_prompts // cfg.batch_size) * len(scored)
    entry["lengths"] = lengths = {}
    with tqdm(total=chunks, desc=spec.name, leave=False, disable=not progress or None) as bar:
        for n in scored:
            pred = predict_all(loaded, spec, on_device, n, cfg, bar)
            lengths[str(n)] = metrics.score(spec, data, n, pred.y, pred.steps, pred.w)
            if references and n == spec.nominal and pred.steps is not None:
                entry["alignment"] = alignment.with_references(references, spec, data, on_device, n, pred.steps, cfg)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_info(loaded: LoadedModel) -> dict[str, Any]:
    """The model's identity as recorded in results: name, source and file hashes."""
    model = loaded.model
    return {
        "name": model.name,
        "source": loaded.source,
        "class": loaded.qualname,
        "file_sha256": sha256_file(loaded.path) if loaded.path else None,
        "checkpoint_sha256": sha256_file(model.checkpoint) if model.checkpoint else None,
    }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_results(loaded: LoadedModel, cfg: RunConfig) -> dict[str, Any]:
    """A results document with no task scored yet."""
    device = cfg.torch_device()
    return {
        "schema_version": results.SCHEMA_VERSION,
        "iclbench_version": iclbench.__version__,
        "suite_version": SUITE_VERSION,
        "model": model_info(loaded),
        "run": {
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
            "dtype": cfg.dtype,
            "batch_size": cfg.batch_size,
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


def reusable(previous: dict[str, Any], fresh: dict[str, Any]) -> dict[str, Any]:
    """Tasks of `previous` (of the same suite) that a resumed run may keep: same model files and settings."""
    same_model = all(previous["model"].get(k) == v for k, v in fresh["model"].items() if k != "source")
    same_run = all(previous["run"].get(k) == fresh["run"][k] for k in ("dtype", "prompts", "device"))
    if not (same_model and same_run):
        return {}
    return {
        name: entry
        for name, entry in previous["tasks"].items()
        if entry.get("status") in ("ok", "unsupported") and entry.get("fingerprint") in (None, FINGERPRINTS.get(name))
    }


def run(
    loaded: LoadedModel,
    tasks: list[Task],
    cfg: RunConfig,
    out: Path | None = None,
    resume: bool = False,
    progress: bool = True,
    references: References | None = None,
) -> dict[str, Any]:
    """Score `loaded` on `tasks`, writing the results file at `out` after every task.

    A failure in `setup` or in one task is recorded and the other tasks still run.
    With `resume`, finished tasks of an existing file at `out` for the same model and
    settings are kept rather than re-run; a file of another suite version raises `ResultsError`.
    `run.data_mismatch` lists the tasks whose data do not match the registry's fingerprint.
    `references`: set-up baselines to align with (see `run_task`).
    """
    previous = results.read(out) if resume and out is not None and out.exists() else None
    if previous is not None and previous["suite_version"] != SUITE_VERSION:
        raise results.ResultsError(
            f"{out} was made on suite {previous['suite_version']!r}; this is suite {SUITE_VERSION!r}: "
            "re-run without --resume, or into another --out"
        )
    setup_error = None
    try:
        loaded.model.setup(cfg.torch_device())
    except Exception as exc:
        setup_error = f"setup raised {type(exc).__name__}: {exc}"
    doc = new_results(loaded, cfg)
    kept = reusable(previous, doc) if previous is not None else {}
    for task in tasks:
        name = task.spec.name
        if name in kept:
            doc["tasks"][name] = kept[name]
        elif setup_error is not None:
            doc["tasks"][name] = {"status": "failed", "spec": task.spec.to_dict(), "error": f"{name}: {setup_error}"}
        else:
            doc["tasks"][name] = run_task(loaded, task, cfg, progress, references)
        if doc["tasks"][name].get("fingerprint_ok") is False:
            doc["run"]["data_mismatch"].append(name)
        if out is not None:
            results.write(out, doc)
    doc["run"]["finished"] = _now()
    if out is not None:
        results.write(out, doc)
    return doc
