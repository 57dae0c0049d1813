"""Running a model apart from judging it: the inputs a model sees, the predictions it returns, and their replay.

The judge never shares a process, a machine or a job with the judged: a trusted step writes *inputs*, an
untrusted one runs the model on them (in its sandboxed worker) and writes *predictions*, and a trusted step
scores the predictions against targets only it holds (`iclbench.submissions.score`), without importing or
running the model's code.

- **Inputs** (`write_inputs`, `iclbench inputs DIR`): the layout of an export (`iclbench.cache.write_sets`): one
  safetensors file per task holding `x`, `y` and `x_query` of `EvalSet.tensors()` and nothing else (no target,
  no hidden or public value), and `manifest.json` of format `INPUTS_FORMAT` with `prompts` (the number of
  prompts per task, null for every one) and, per task, the file, its SHA-256 and the inputs' fingerprint
  (`EvalSet.fingerprint` of those three tensors). The sets are the suite's, or fresh ones drawn with a
  verification seed, which the inputs never name. For each pool of training tasks asked for (`TaskPool`, the pools
  that submissions declare: `iclbench inputs --pool-of`), the inputs also hold those of the in-pool prompts of its
  tasks (`Task.pool_set`: public ones, or fresh ones of the verification seed), as `<task>/in_pool/<size>/<seed>`.
- **Predictions** (`predict`, `iclbench predict`): one safetensors file holding, for every task and prompt length
  scored, the tensors `<task>/<n>/y`, and `<task>/<n>/steps` and `<task>/<n>/w` when the model returns them, in
  the run's dtype, for every prompt of the inputs; its metadata `HEADER_KEY` holds a JSON header: `format`
  (`FORMAT`), the versions, `model` (name, source, class, args, file_sha256, checkpoint_sha256 and task_pool, as
  the runner records them, `iclbench.runner.model_info`), `run` (dtype, batch_size, prompts, threads, and
  sandboxed: whether the model ran in the sandbox), `setup_error` and, per task, `status` ("ok", "unsupported" or
  "failed"), `inputs` (the fingerprint of the inputs answered), `lengths` (those scored) and `error` (a failed
  task's). A task of the pool the model declares (`iclbench.api.Model.task_pool`) is also answered on the in-pool
  prompts of that pool the inputs hold (a task fails when they hold none), as `<task>/in_pool/<n>/...` tensors and
  the entry's `in_pool` (size, seed, the fingerprint of those inputs, lengths). The file is at most `MAX_BYTES`.
- **Replay** (`read`, `ReplayedModel`): the scorer reads a predictions file as a submitter controls it, checking
  every field, name, dtype and shape before it loads a tensor (`PredictionsError`, one line), and
  `ReplayedModel` answers the runner's requests from it: `iclbench.runner.run` then scores it with the code and
  the numbers of a direct run. The model is asked for every length with `predict` alone, one call per length
  and chunk, as `validate --rerun` asks it, the in-pool prompts after the evaluation set's; a failed task is
  replayed with its error, not the partial fields a direct run records before failing.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from safetensors.torch import load_file
from tqdm import tqdm

import iclbench
from iclbench import checkpoint
from iclbench.api import Answer, Batch, Prediction, Request, TaskFailure, in_turn
from iclbench.cache import ExportError, eval_set, fresh_sets, held_for, pool_set, read_manifest, read_set, write_sets
from iclbench.models.weights import atomic_save
from iclbench.runner import RunConfig, ScoredModel, model_info, predict_all
from iclbench.tasks import FINGERPRINTS, SUITE_VERSION, TASKS, EvalSet, Task, TaskSpec
from iclbench.tasks.pool import TaskPool
from iclbench.untrusted import UntrustedError, parse_json

INPUTS_FORMAT = "iclbench-inputs"
FORMAT = "iclbench-predictions"
HEADER_KEY = "iclbench"
INPUT_NAMES = ("x", "y", "x_query")
KINDS = ("y", "steps", "w")
MAX_BYTES = 1 << 30
"""Largest predictions file: every task's y with up to ~200 steps per prediction (a task's y is 64 KiB at most)."""
MAX_STEPS = 4096
"""Most steps (`Prediction.steps`) a prediction may hold."""
MAX_TEXT = 2000
"""Longest string of a predictions header (an error message, the model's source)."""
IDENTITY = ("name", "source", "class", "args", "file_sha256", "checkpoint_sha256", "task_pool")
"""The fields of the model's identity a predictions header records (`iclbench.runner.model_info`)."""


class PredictionsError(ValueError):
    """Inputs or predictions that cannot be written or used: the message says what is wrong, on one line."""


def inputs_of(data: EvalSet) -> EvalSet:
    """What a model sees of an evaluation set: its context and queries, nothing else."""
    return EvalSet(data.x, data.y, data.x_query, {}, {}, {})


def prompts_scored(spec: TaskSpec, prompts: int | None) -> int:
    """The number of prompts of `spec` scored when the first `prompts` are (None: all)."""
    return spec.n_prompts if prompts is None else min(prompts, spec.n_prompts)


def in_pool_key(task: str, pool: TaskPool) -> str:
    """The name of `task`'s in-pool inputs of the pool `pool` in an inputs folder: `<task>/in_pool/<size>/<seed>`."""
    return f"{task}/in_pool/{pool.size}/{pool.seed}"


def write_inputs(directory: Path, tasks: list[Task], seed: int | None = None, prompts: int | None = None,
                 pools: Iterable[TaskPool] = ()) -> None:
    """Write the inputs of the tasks' evaluation sets (the suite's, or fresh ones of verification seed `seed`), their
    first `prompts` prompts (all when None), into `directory`, and for each pool of `pools` the inputs of the in-pool
    prompts of those of its tasks that are among `tasks` (public ones, or fresh ones of `seed`: `in_pool_key`);
    `PredictionsError` when a suite's set does not match its fingerprint on this machine, or the folder cannot be
    written."""
    sets = {}
    cut = lambda data: inputs_of(data.head(prompts) if prompts is not None else data)  # noqa: E731
    with nullcontext() if seed is None else fresh_sets(seed):
        for task in tasks:
            with held_for(task.spec.name):  # a suite's set is forgotten once its inputs are taken
                data, fingerprint = eval_set(task)
            if seed is None and fingerprint != FINGERPRINTS.get(task.spec.name):
                raise PredictionsError(
                    f"the evaluation set of {task.spec.name} does not match the suite's fingerprint on this machine"
                )
            sets[task.spec.name] = cut(data)
        for pool in pools:
            for task in tasks:
                key = in_pool_key(task.spec.name, pool)
                if task.spec.name in pool.tasks and key not in sets:  # pools may share a task, size and seed
                    sets[key] = cut(pool_set(task, pool.size, pool.seed))
    if prompts is not None and all(prompts >= t.spec.n_prompts for t in tasks):
        prompts = None
    try:
        write_sets(directory, INPUTS_FORMAT, sets, prompts=prompts)
    except ExportError as exc:
        raise PredictionsError(str(exc)) from None


@dataclass(frozen=True)
class Inputs:
    """A folder of inputs (`write_inputs`), its manifest checked."""

    directory: Path
    manifest: dict[str, Any]

    @classmethod
    def read(cls, directory: Path) -> Inputs:
        try:
            manifest = read_manifest(directory, INPUTS_FORMAT, "iclbench inputs")
        except ExportError as exc:
            raise PredictionsError(str(exc)) from None
        prompts = manifest.get("prompts")
        unknown = [name for name in manifest["tasks"] if name not in TASKS and not _in_pool_name(name, manifest)]
        if unknown or not (prompts is None or (type(prompts) is int and prompts >= 1)):
            raise PredictionsError(
                f"{directory}: tasks {unknown} unknown to suite {SUITE_VERSION}" if unknown
                else f"{directory}: prompts is {prompts!r}, not a positive integer or null"
            )
        return cls(directory, manifest)

    @property
    def prompts(self) -> int | None:
        return self.manifest["prompts"]

    def tasks(self) -> list[Task]:
        """The tasks the inputs hold, in suite order."""
        return [task for name, task in TASKS.items() if name in self.manifest["tasks"]]

    def load(self, task: Task, pool: TaskPool | None = None) -> EvalSet:
        """The task's inputs (with `pool`, those of its in-pool prompts), checked: its SHA-256, its three tensors,
        float32, of the task's shapes."""
        name = task.spec.name if pool is None else in_pool_key(task.spec.name, pool)
        try:
            data = read_set(self.directory, self.manifest, name)
        except ExportError as exc:
            raise PredictionsError(str(exc)) from None
        spec, p = task.spec, prompts_scored(task.spec, self.prompts)
        label = spec.label_shape
        expected = {"x": (p, spec.max_length, spec.d), "y": (p, spec.max_length, *label),
                    "x_query": (p, spec.n_queries, spec.d)}
        got = {k: (tuple(t.shape), t.dtype) for k, t in data.tensors().items()}
        if got != {k: (shape, torch.float32) for k, shape in expected.items()}:
            shapes = {k: (shape, str(dtype)) for k, (shape, dtype) in got.items()}
            raise PredictionsError(f"{self.directory}: {spec.name}: tensors {shapes}, expected float32 {expected}")
        return data


def _in_pool_name(name: str, manifest: dict[str, Any]) -> bool:
    """Whether `name` names in-pool inputs (`in_pool_key`) of a task of the manifest and of a pool of it."""
    task, _, rest = name.partition("/in_pool/")
    size, _, seed = rest.partition("/")
    try:
        pool = TaskPool.parse({"tasks": [task], "size": int(size), "seed": int(seed)})
    except ValueError:
        return False
    return task in manifest["tasks"] and in_pool_key(task, pool) == name


def _text(value: Any) -> str:
    """`value` as a string of at most `MAX_TEXT` characters."""
    text = str(value)
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 3] + "..."


def predict(
    model: ScoredModel, inputs: Inputs, cfg: RunConfig, progress: bool = False
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The model's predictions on `inputs` (on `cfg`'s device, in its dtype and batch size): the header and the
    tensors of a predictions file (see the module). A task that fails (the model raised, ran past its limits,
    returned a bad prediction, or its predictions would take the file past `MAX_BYTES`) is recorded as failed."""
    header: dict[str, Any] = {
        "format": FORMAT,
        "suite_version": SUITE_VERSION,
        "iclbench_version": iclbench.__version__,
        "torch_version": torch.__version__,
        "model": {},
        "run": {"dtype": cfg.dtype, "batch_size": cfg.batch_size, "prompts": inputs.prompts, "threads": model.threads,
                "sandboxed": model.sandboxed},
        "setup_error": None,
        "tasks": {},
    }
    tensors: dict[str, torch.Tensor] = {}
    try:
        model.setup(cfg.torch_device())
    except TaskFailure as exc:
        header["setup_error"] = _text(exc)
    info = model_info(model)
    header["model"] = {k: info[k] for k in IDENTITY}
    if header["setup_error"] is not None:
        return header, tensors
    size = 0
    for task in inputs.tasks():
        spec, entry = task.spec, {"inputs": inputs.manifest["tasks"][task.spec.name]["fingerprint"]}
        header["tasks"][spec.name] = entry
        found: dict[str, torch.Tensor] = {}
        try:
            model.begin_task()
            lengths = model.supported_lengths(spec)
            if lengths is None:
                entry["status"] = "unsupported"
                continue
            found.update(_answered(model, spec, inputs.load(task), lengths, cfg, spec.name, progress))
            pool = model.task_pool
            if pool is not None and spec.name in pool.tasks:
                if in_pool_key(spec.name, pool) not in inputs.manifest["tasks"]:
                    raise TaskFailure(
                        f"the model declares a pool of {pool.size} tasks of seed {pool.seed}, and the inputs hold no "
                        "in-pool prompts of it (iclbench inputs --pool-of FOLDER writes them)")
                pooled = inputs.load(task, pool)
                found.update(_answered(model, spec, pooled, lengths, cfg, f"{spec.name}/in_pool", progress))
                entry["in_pool"] = {"size": pool.size, "seed": pool.seed, "inputs": pooled.fingerprint()}
            grown = size + sum(t.nbytes for t in found.values())
            if grown > MAX_BYTES:
                raise TaskFailure(f"its predictions would take the predictions file to {grown} bytes, over the "
                                  f"{MAX_BYTES}-byte limit (Prediction.steps: return fewer steps)")
        except TaskFailure as exc:
            entry.update(status="failed", error=_text(exc))
            continue
        except PredictionsError:
            raise
        except Exception as exc:  # a solver, the device: only this task fails, as in a run
            entry.update(status="failed", error=_text(f"{type(exc).__name__}: {exc}"))
            continue
        entry.update(status="ok", lengths=lengths)
        if "in_pool" in entry:
            entry["in_pool"]["lengths"] = lengths
        tensors.update(found)
        size = grown
    return header, tensors


def _answered(model: ScoredModel, spec: TaskSpec, data: EvalSet, lengths: list[int], cfg: RunConfig, key: str,
              progress: bool) -> dict[str, torch.Tensor]:
    """The model's outputs on `data` at each of `lengths`, in the run's dtype, as tensors `<key>/<n>/<kind>`."""
    data = EvalSet(*(t.to(cfg.torch_dtype()) for t in (data.x, data.y, data.x_query)), {}, {}, {})
    found: dict[str, torch.Tensor] = {}
    chunks = -(-data.n_prompts // cfg.batch_size) * len(lengths)
    with tqdm(total=chunks, desc=key, leave=False, disable=not progress or None) as bar:
        for n, out in predict_all(model, spec, data, lengths, cfg, bar, keep_steps=lengths):
            found.update({f"{key}/{n}/{k}": t for k, t in zip(KINDS, (out.y, out.steps, out.w)) if t is not None})
    return found


def write(path: Path, header: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """Write a predictions file atomically, readable by all (an artifact to upload)."""
    atomic_save(tensors, path, {HEADER_KEY: json.dumps(header, allow_nan=False)})
    path.chmod(0o644)


@dataclass(frozen=True)
class Predictions:
    """A predictions file that passed `read`'s checks: its header and, by task and length, its tensors."""

    path: Path
    header: dict[str, Any]
    tensors: dict[str, torch.Tensor]

    @property
    def identity(self) -> dict[str, Any]:
        return self.header["model"]

    @property
    def dtype(self) -> str:
        return self.header["run"]["dtype"]

    @property
    def prompts(self) -> int | None:
        return self.header["run"]["prompts"]


def _sha(v: Any) -> bool:
    return v is None or (isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v))


def _short(v: Any) -> bool:
    return isinstance(v, str) and len(v) <= MAX_TEXT


def _count(v: Any, least: int) -> bool:
    return type(v) is int and least <= v < 2**53


def _check_header(header: Any) -> str | None:
    """What is wrong with a predictions header, or None (every field the replay reads, typed and bounded)."""
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        return f"not an {FORMAT} file"
    if header.get("suite_version") != SUITE_VERSION:
        return f"made on suite {str(header.get('suite_version'))[:40]!r}; this is suite {SUITE_VERSION!r}"
    model, run, tasks = header.get("model"), header.get("run"), header.get("tasks")
    if not (isinstance(model, dict) and set(model) == set(IDENTITY) and model["args"] == {}
            and all(_short(model[k]) for k in ("name", "source", "class"))
            and _sha(model["file_sha256"]) and _sha(model["checkpoint_sha256"])):
        return (f"model must hold exactly {', '.join(IDENTITY)}: strings, no args, SHA-256 hex digests or null, and "
                "the declared task pool or null")
    try:
        pool = TaskPool.parse(model["task_pool"], "model.task_pool")
    except ValueError as exc:
        return str(exc)
    if not (isinstance(run, dict) and run.get("dtype") in ("float32", "float64") and _count(run.get("batch_size"), 1)
            and _count(run.get("threads"), 1) and (run.get("prompts") is None or _count(run.get("prompts"), 1))
            and isinstance(run.get("sandboxed"), bool)):
        return ("run must hold dtype (float32 or float64), batch_size, threads and prompts (positive integers or "
                "null) and sandboxed (true or false)")
    if not (header.get("setup_error") is None or _short(header.get("setup_error"))):
        return f"setup_error must be null or a string of at most {MAX_TEXT} characters"
    if not isinstance(tasks, dict):
        return "tasks must be a mapping"
    for name, entry in tasks.items():
        spec = TASKS[name].spec if name in TASKS else None
        status = entry.get("status") if isinstance(entry, dict) else None
        lengths = entry.get("lengths") if isinstance(entry, dict) else None
        if spec is None or status not in ("ok", "unsupported", "failed") or entry.get("inputs") is None \
                or not _sha(entry["inputs"]):
            return (f"tasks[{str(name)[:80]!r}] must be a task of suite {SUITE_VERSION} with a status and the inputs' "
                    "fingerprint")
        if status == "ok" and not (isinstance(lengths, list) and all(type(n) is int for n in lengths)
                                   and lengths == [n for n in spec.lengths if n in lengths]):
            return f"tasks[{name!r}].lengths must be prompt lengths of {name}, ascending, once each"
        if status == "failed" and not _short(entry.get("error")):
            return f"tasks[{name!r}].error must be a string of at most {MAX_TEXT} characters"
        declared = status == "ok" and pool is not None and name in pool.tasks
        in_pool = entry.get("in_pool")
        if declared and not (isinstance(in_pool, dict) and set(in_pool) == {"size", "seed", "inputs", "lengths"}
                             and (in_pool["size"], in_pool["seed"]) == (pool.size, pool.seed)
                             and isinstance(in_pool["inputs"], str) and _sha(in_pool["inputs"])
                             and in_pool["lengths"] == lengths):
            return (f"tasks[{name!r}].in_pool must hold the declared pool's size and seed, the fingerprint of its "
                    "in-pool inputs and the task's lengths")
        if not declared and in_pool is not None:
            return f"tasks[{name!r}].in_pool is there, but the model declares no pool of this task scored"
    return None


def _expected_shape(spec: TaskSpec, p: int, kind: str, shape: list[int]) -> tuple[int, ...] | None:
    """The shape a `kind` tensor of `p` prompts must have on `spec` (the steps' count taken from `shape`), or None
    when the steps' count is out of bounds."""
    label = spec.label_shape
    if kind == "y":
        return (p, spec.n_queries, *label)
    if kind == "w":
        return (p, *label, spec.d)
    steps = shape[1] if len(shape) > 1 else 0
    return (p, steps, spec.n_queries, *label) if 1 <= steps <= MAX_STEPS else None


def read(path: Path) -> Predictions:
    """A predictions file, read as a submitter controls it: its size, safetensors header, JSON header (every field),
    tensor names, dtypes and shapes checked before any tensor is loaded; `PredictionsError` with one line."""
    try:
        raw = checkpoint.check_safetensors(path, MAX_BYTES)
    except (checkpoint.CheckpointError, OSError) as exc:
        raise PredictionsError(f"{path}: {exc}" if isinstance(exc, OSError) else str(exc)) from None
    try:
        header = parse_json(raw.get("__metadata__", {}).get(HEADER_KEY, "null").encode())
    except UntrustedError as exc:
        raise PredictionsError(f"{path}: header: {exc}") from None
    if (problem := _check_header(header)) is not None:
        raise PredictionsError(f"{path}: {problem}")
    dtype = {"float32": "F32", "float64": "F64"}[header["run"]["dtype"]]
    allowed = {
        f"{key}/{n}/{kind}": (TASKS[name].spec, kind)
        for name, entry in header["tasks"].items()
        if entry["status"] == "ok"
        for key in (name, f"{name}/in_pool") if key == name or "in_pool" in entry
        for n in entry["lengths"]
        for kind in KINDS
    }
    names = {k for k in raw if k != "__metadata__"}
    missing = sorted(k.rsplit("/", 1)[0] for k in allowed if k.endswith("/y") and k not in names)
    if unknown := sorted(names - set(allowed)):
        raise PredictionsError(f"{path}: tensor {unknown[0][:120]!r} is not a prediction of a task and length scored")
    if missing:
        raise PredictionsError(f"{path}: no prediction y for {missing[0]}, which the header says was scored")
    prompts = header["run"]["prompts"]
    for name in sorted(names):
        spec, kind = allowed[name]
        info = raw[name]
        want = _expected_shape(spec, prompts_scored(spec, prompts), kind, info["shape"])
        if info["dtype"] != dtype or want is None or tuple(info["shape"]) != want:
            raise PredictionsError(
                f"{path}: tensor {name!r} is {info['dtype']} {info['shape']}, expected {dtype} "
                f"{list(want) if want else f'(P, K, q...) with 1 <= K <= {MAX_STEPS}'}"
            )
    return Predictions(path, header, load_file(path))


class ReplayedModel:
    """What the runner drives (`iclbench.runner.ScoredModel`) to score a predictions file: every answer is read from
    the file (`read`), nothing is run.

    `path` and `checkpoint` are the model file and checkpoint whose SHA-256 the results record (the judge's own
    copies, checked by the caller to be those the predictions name). A task's predictions are replayed only on
    the inputs they answer: the runner's set, cut to its first prompts, must have the recorded fingerprint, and so
    must the in-pool prompts of a task of the declared pool (`task_pool`), replayed once the set's are.
    """

    source: str
    args: dict[str, Any]

    def __init__(self, predictions: Predictions, path: Path | None, checkpoint_path: str | None) -> None:
        self.predictions = predictions
        self.source, self.args = predictions.identity["source"], {}
        self._path, self.checkpoint = path, checkpoint_path
        self._done: dict[str, int] = {}
        self._inputs: dict[str, EvalSet] = {}
        """The inputs each set of recorded answers was checked to answer, by tensor key prefix."""

    @property
    def name(self) -> str:
        return self.predictions.identity["name"]

    @property
    def qualname(self) -> str:
        return self.predictions.identity["class"]

    @property
    def threads(self) -> int:
        return self.predictions.header["run"]["threads"]

    @property
    def task_pool(self) -> TaskPool | None:
        """The pool of training tasks the model declared when it made the predictions (checked by `read`)."""
        return TaskPool.parse(self.predictions.identity["task_pool"])

    @property
    def sandboxed(self) -> bool:
        """Whether the model ran in the sandbox when it made the predictions, as `iclbench predict` recorded it."""
        return self.predictions.header["run"]["sandboxed"]

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def predicts_lengths(self) -> bool:
        return False

    def setup(self, device: torch.device) -> None:
        """The model's setup error, as it was recorded."""
        if (error := self.predictions.header["setup_error"]) is not None:
            raise TaskFailure(error)

    def begin_task(self) -> None:
        """Start a task: its predictions are read from the first prompt."""
        self._done.clear()

    def supported_lengths(self, spec: TaskSpec) -> list[int] | None:
        """The lengths recorded, once the runner's inputs are checked to be those the predictions answer."""
        entry = self.predictions.header["tasks"].get(spec.name)
        if entry is None:
            raise TaskFailure(f"{self.predictions.path} holds no predictions for this task")
        if entry["status"] == "failed":
            raise TaskFailure(entry["error"])
        if entry["status"] == "unsupported":  # as in a run, the set is not loaded
            return None
        prompts = prompts_scored(spec, self.predictions.prompts)
        data, _ = eval_set(TASKS[spec.name])
        self._answers(spec.name, entry["inputs"], inputs_of(data.head(prompts)), "")
        if "in_pool" in entry:
            pooled = pool_set(TASKS[spec.name], entry["in_pool"]["size"], entry["in_pool"]["seed"])
            in_pool = inputs_of(pooled.head(prompts))
            self._answers(f"{spec.name}/in_pool", entry["in_pool"]["inputs"], in_pool, "in-pool ")
        return entry["lengths"]

    def _answers(self, key: str, recorded: str, inputs: EvalSet, what: str) -> None:
        """Keep `inputs` as those the answers under `key` answer; a `TaskFailure` unless they have the recorded
        fingerprint."""
        if recorded != (fingerprint := inputs.fingerprint()):
            raise TaskFailure(
                f"{self.predictions.path} answers {what}inputs of fingerprint {recorded[:16]}..., not those scored "
                f"here ({fingerprint[:16]}...): predictions made on other inputs"
            )
        self._inputs[key] = inputs

    def predict(self, batch: Batch) -> Prediction:
        """The recorded predictions of the batch's prompts: the next ones at its length of the checked inputs (the
        evaluation set's or the in-pool prompts') whose next prompts the batch's are; a `TaskFailure` if none."""
        name, n, size = batch.task.name, batch.n, batch.x.shape[0]
        for prefix in (name, f"{name}/in_pool"):
            inputs, start = self._inputs.get(prefix), self._done.get(f"{prefix}/{n}", 0)
            if inputs is not None and torch.equal(batch.x, inputs.x[start:start + size, :n].to(batch.x.dtype)):
                self._done[f"{prefix}/{n}"] = start + size
                tensors, key = self.predictions.tensors, f"{prefix}/{n}"
                return Prediction(*(tensors[f"{key}/{k}"][start:start + size] if f"{key}/{k}" in tensors else None
                                    for k in KINDS))
        raise TaskFailure(f"{self.predictions.path} holds no answers to these prompts of {name} at n={n}: asked "
                          "about prompts other than those the predictions answer, in their order")

    def predict_lengths(self, batch: Batch, lengths: list[int]) -> dict[int, Prediction]:
        raise TaskFailure("a replay answers predict alone")

    def answers(self, requests: Iterable[Request]) -> Iterator[Answer]:
        """The recorded answer to each request in turn."""
        return in_turn(self, requests)

    def close(self) -> None:
        """Nothing to release."""
