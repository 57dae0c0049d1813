"""Loading a model plugin from a file, a dotted module or a baseline's name."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import json
import math
import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping

import torch

from iclbench.api import (
    Answer, Batch, Model, Prediction, Request, TaskFailure, by_length, check_prediction, in_turn, predicts_lengths,
)
from iclbench.tasks.pool import TaskPool

if TYPE_CHECKING:
    from iclbench.tasks import TaskSpec

MAX_MODEL_FILES = 1000
"""Most files `folder_sha256` hashes beside a model before refusing."""


class PluginError(Exception):
    """A model that cannot be loaded: the message says what is wrong and where."""


@dataclass
class LoadedModel:
    """An instantiated model, the `--model` string it came from, and its source file.

    It is driven by the runner in this process (`iclbench.runner.ScoredModel`), for models
    of one's own code (tests, notebooks); `iclbench.worker.IsolatedModel` runs one in a
    worker process instead. Every batch reaches the model as a fresh copy on its device.
    """

    model: Model
    source: str
    path: Path | None
    args: dict[str, Any] = field(default_factory=dict)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    task_pool: TaskPool | None = None
    """The model's checked `task_pool`, once set up."""

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def qualname(self) -> str:
        cls = type(self.model)
        return f"{cls.__module__}:{cls.__qualname__}"

    @property
    def threads(self) -> int:
        return torch.get_num_threads()

    @property
    def sandboxed(self) -> bool:
        """Never: the model runs in this process."""
        return False

    @property
    def checkpoint(self) -> str | None:
        return self.model.checkpoint

    def setup(self, device: torch.device) -> None:
        """The model's `setup(device)`; `TaskFailure` with what it raised, or with what is wrong with its
        `task_pool`."""
        self.device = device
        try:
            self.model.setup(device)
        except Exception as exc:
            raise TaskFailure(f"setup raised {type(exc).__name__}: {exc}") from exc
        try:
            self.task_pool = TaskPool.parse(self.model.task_pool, f"{type(self.model).__name__}.task_pool")
        except ValueError as exc:
            raise TaskFailure(str(exc)) from None

    def begin_task(self) -> None:
        """Nothing to do in this process: no limits apply."""

    def supported_lengths(self, spec: TaskSpec) -> list[int] | None:
        """The prompt lengths of `spec` the model is scored at; None when it does not support the task."""
        try:
            if not self.model.supports(spec):
                return None
            return [n for n in spec.lengths if self.model.supports_length(spec, n)]
        except Exception as exc:
            raise TaskFailure(f"supports({spec.name}) raised {type(exc).__name__}: {exc}") from exc

    def predict(self, batch: Batch) -> Prediction:
        """The model's checked prediction for a copy of `batch` on its device, returned on the CPU."""
        copy = Batch(batch.task, *(t.to(self.device, copy=True) for t in (batch.x, batch.y, batch.x_query)))
        try:
            out = self.model.predict(copy)
        except Exception as exc:
            raise TaskFailure(f"predict raised {type(exc).__name__}: {exc}") from exc
        pred = check_prediction(out, copy)
        return Prediction(*(None if t is None else t.cpu() for t in (pred.y, pred.steps, pred.w)))

    @property
    def predicts_lengths(self) -> bool:
        """Whether the model predicts every prompt length in one call (`iclbench.api.Model.predict_lengths`)."""
        return predicts_lengths(self.model)

    def predict_lengths(self, batch: Batch, lengths: list[int]) -> dict[int, Prediction]:
        """The model's checked predictions at every length of `lengths` for a copy of `batch` on its device,
        returned on the CPU."""
        copy = Batch(batch.task, *(t.to(self.device, copy=True) for t in (batch.x, batch.y, batch.x_query)))
        try:
            out = by_length(self.model.predict_lengths(copy, lengths), lengths)
        except TaskFailure:
            raise
        except Exception as exc:
            raise TaskFailure(f"predict_lengths raised {type(exc).__name__}: {exc}") from exc
        preds = {}
        for n in lengths:
            try:
                pred = check_prediction(out[n], copy.prefix(n))
            except TaskFailure as exc:
                raise TaskFailure(str(exc), n) from None
            preds[n] = Prediction(*(None if t is None else t.cpu() for t in (pred.y, pred.steps, pred.w)))
        return preds

    def answers(self, requests: Iterable[Request]) -> Iterator[Answer]:
        """The answer to each request in turn (`predict` or `predict_lengths`), computed when it is asked for."""
        return in_turn(self, requests)

    def close(self) -> None:
        """Nothing to release."""


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _is_regular(path: str | Path) -> bool:
    """Whether `path` is a regular file (never a device or a pipe), after symbolic links."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def regular_file_sha256(path: str | Path | None) -> str | None:
    """`sha256_file(path)` when `path` is a regular file (never a device or a pipe), else None."""
    return None if path is None or not _is_regular(path) else sha256_file(path)


def _skipped(name: str, is_dir: bool) -> bool:
    if name.startswith(".") or name == "__pycache__" or name.endswith((".lock", ".tmp")):
        return True
    return name == "results" if is_dir else name == "results.json"


def model_files(folder: Path, exclude: Iterable[Path] = ()) -> list[Path]:
    """Every file a model in `folder` may depend on: every regular file under it, in a fixed order.

    Skipped: hidden files and folders, `__pycache__`, folders named `results`, files named
    `results.json`, lock and temporary files, and `exclude` (the run's own output files).
    More than `MAX_MODEL_FILES` files raise `PluginError`.
    """
    out: list[Path] = []
    skip = {p.resolve() for p in exclude}
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not _skipped(d, True))
        for name in sorted(files):
            path = Path(root) / name
            if _skipped(name, False) or path.resolve() in skip or not _is_regular(path):
                continue
            if len(out) == MAX_MODEL_FILES:
                raise PluginError(
                    f"{folder} holds more than {MAX_MODEL_FILES} files; every file beside a model is hashed to know "
                    "when results must be re-run: keep the model in a folder of its own"
                )
            out.append(path)
    return out


def folder_sha256(folder: Path, exclude: Iterable[Path] = ()) -> dict[str, str]:
    """SHA-256 of every file a model may depend on (`model_files`), by path relative to `folder`."""
    return {path.relative_to(folder).as_posix(): sha256_file(path) for path in model_files(folder, exclude)}


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise PluginError(f"model file not found: {path}")
    name = f"iclbench_plugin_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"cannot import {path}: not a Python source file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise PluginError(f"importing {path} failed: {type(exc).__name__}: {exc}") from exc
    return module


def _import_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and name.startswith(exc.name):
            raise PluginError(
                f"no model called {name!r}: not a file, not a baseline ({', '.join(baseline_names())}) "
                "and not an importable module"
            ) from exc
        raise PluginError(f"importing module {name} failed: {exc}") from exc
    except Exception as exc:
        raise PluginError(f"importing module {name} failed: {type(exc).__name__}: {exc}") from exc


def _model_class(module: ModuleType, class_name: str | None, where: str) -> type[Model]:
    if class_name is not None:
        cls = getattr(module, class_name, None)
        if not (inspect.isclass(cls) and issubclass(cls, Model)):
            raise PluginError(f"{where} has no iclbench.Model subclass called {class_name!r}")
        return cls
    found = [
        c
        for c in vars(module).values()
        if inspect.isclass(c) and issubclass(c, Model) and c.__module__ == module.__name__ and not inspect.isabstract(c)
    ]
    if not found:
        raise PluginError(f"{where} defines no iclbench.Model subclass")
    if len(found) > 1:
        names = ", ".join(sorted(c.__name__ for c in found))
        raise PluginError(f"{where} defines several models ({names}); choose one with {where}:ClassName")
    return found[0]


def baseline_names() -> list[str]:
    """Names accepted by `--model` for the bundled baselines."""
    from iclbench.baselines import REGISTRY

    return sorted(REGISTRY)


def _is_arg_value(v: Any) -> bool:
    if isinstance(v, float):
        return math.isfinite(v)
    return v is None or isinstance(v, (str, bool)) or (isinstance(v, int) and abs(v) <= 2**53)


def check_model_args(args: Mapping[str, Any]) -> dict[str, Any]:
    """`args` as a plain dict, or `ValueError` saying which key or value cannot be a model argument.

    Keys are Python identifiers (they become keyword arguments); values are JSON scalars:
    strings, finite numbers (integers up to 2^53), booleans and None.
    """
    out = {}
    for key, value in args.items():
        if not (isinstance(key, str) and key.isidentifier()):
            raise ValueError(f"model argument {key!r}: a name must be a Python identifier")
        if not _is_arg_value(value):
            raise ValueError(
                f"model argument {key}={value!r}: a value must be a string, a finite number, true, false or null"
            )
        out[key] = value
    return out


def _arg_value(text: str) -> Any:
    """A value of `--model-args` as JSON reads it when that is a string, number, true, false or null; else the text."""
    try:
        value = json.loads(text, parse_constant=lambda c: text)  # NaN and Infinity stay text
    except ValueError:
        return text
    return text if isinstance(value, (list, dict)) else value  # a number out of range is refused by the check


def parse_model_args(text: str) -> dict[str, Any]:
    """`--model-args key=value,...` as keyword arguments; `ValueError` saying what is wrong.

    Pairs are separated by commas (so a value cannot hold one); a value that JSON reads as a
    number, true, false, null or a "quoted string" is that, any other value is the text itself
    (`ckpt=runs/a.safetensors` is the string). A name given twice is refused.
    """
    out: dict[str, Any] = {}
    for pair in text.split(","):
        key, eq, value = pair.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ValueError(f"--model-args: {pair!r} is not key=value (pairs are separated by commas)")
        if key in out:
            raise ValueError(f"--model-args: {key} is given twice")
        out[key] = _arg_value(value.strip())
    return check_model_args(out)


GARG = "garg"
"""`--model garg:RUN_DIR`: a run folder of Garg et al.'s code (`iclbench.models.garg.GargRun`)."""


def model_file(spec: str) -> Path | None:
    """The file a `--model` string names (`path.py[:Class]`, or any with a `/`; a Garg run's `config.yaml`, beside
    the run's other files); None for a baseline or a module."""
    target, _, class_name = spec.partition(":")
    if target == GARG and class_name:
        from iclbench.models.garg import CONFIG

        return Path(class_name) / CONFIG
    return Path(target) if target.endswith(".py") or "/" in target else None


def load_model(spec: str, args: Mapping[str, Any] | None = None) -> LoadedModel:
    """Instantiate the model `spec` names: `path.py[:Class]`, a baseline name, `garg:RUN_DIR` or `module[:Class]`,
    passing `args` (`check_model_args`) to its constructor as keyword arguments."""
    from iclbench.baselines import REGISTRY

    try:
        kwargs = check_model_args(args or {})
    except ValueError as exc:
        raise PluginError(str(exc)) from None

    target, _, class_name = spec.partition(":")
    if target == GARG and class_name:
        from iclbench.models.garg import GargRun

        # the run's files are the model's: config.yaml is its file, everything beside it is hashed with it
        model = instantiate(GargRun, {**kwargs, "run": class_name}, spec)
        return loaded(model, spec, model_file(spec), kwargs)
    if (path := model_file(spec)) is not None:
        module = _import_file(path)
    elif target in REGISTRY and not class_name:
        module_name, _, class_name = REGISTRY[target].partition(":")
        module = _import_module(f"iclbench.baselines.{module_name}")
        path = Path(module.__file__)
    else:
        module = _import_module(target)
        path = Path(module.__file__) if getattr(module, "__file__", None) else None
    cls = _model_class(module, class_name or None, target)
    return loaded(instantiate(cls, kwargs, target), spec, path, kwargs)


def instantiate(cls: type[Model], args: dict[str, Any], where: str) -> Model:
    """`cls(**args)`; `PluginError` with what the constructor raised (an unknown argument, say)."""
    try:
        return cls(**args)
    except Exception as exc:
        raise PluginError(f"creating {cls.__name__} from {where} failed: {type(exc).__name__}: {exc}") from exc


def loaded(model: Model, source: str, path: Path | None, args: dict[str, Any] | None = None) -> LoadedModel:
    """`model` ready for the runner in this process; a model without a `name` is named after its class."""
    if not model.name:
        model.name = type(model).__name__
    return LoadedModel(model, source, path, dict(args or {}))
