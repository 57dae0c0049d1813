"""Loading a model plugin from a file, a dotted module or a baseline's name."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import torch

from iclbench.api import Batch, Model, Prediction, TaskFailure, check_prediction

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
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def qualname(self) -> str:
        cls = type(self.model)
        return f"{cls.__module__}:{cls.__qualname__}"

    @property
    def checkpoint(self) -> str | None:
        return self.model.checkpoint

    def setup(self, device: torch.device) -> None:
        """The model's `setup(device)`; `TaskFailure` with what it raised."""
        self.device = device
        try:
            self.model.setup(device)
        except Exception as exc:
            raise TaskFailure(f"setup raised {type(exc).__name__}: {exc}") from exc

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

    def close(self) -> None:
        """Nothing to release."""


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def regular_file_sha256(path: str | Path | None) -> str | None:
    """`sha256_file(path)` when `path` is a regular file (never a device or a pipe), else None."""
    if path is None:
        return None
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
    except OSError:
        return None
    return sha256_file(path)


def _skipped(name: str, is_dir: bool) -> bool:
    if name.startswith(".") or name == "__pycache__" or name.endswith((".lock", ".tmp")):
        return True
    return name == "results" if is_dir else name == "results.json"


def folder_sha256(folder: Path, exclude: Path | None = None) -> dict[str, str]:
    """SHA-256 of every file a model may depend on: every regular file under its folder, by relative path.

    Skipped: hidden files and folders, `__pycache__`, folders named `results`, files named
    `results.json`, lock and temporary files, and `exclude` (the results file being written).
    More than `MAX_MODEL_FILES` files raise `PluginError`.
    """
    out: dict[str, str] = {}
    skip = None if exclude is None else exclude.resolve()
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not _skipped(d, True))
        for name in sorted(files):
            path = Path(root) / name
            if _skipped(name, False) or path.resolve() == skip or (digest := regular_file_sha256(path)) is None:
                continue
            if len(out) == MAX_MODEL_FILES:
                raise PluginError(
                    f"{folder} holds more than {MAX_MODEL_FILES} files; every file beside a model is hashed to know "
                    "when results must be re-run: keep the model in a folder of its own"
                )
            out[path.relative_to(folder).as_posix()] = digest
    return out


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


def load_model(spec: str) -> LoadedModel:
    """Instantiate the model `spec` names: `path.py[:Class]`, a baseline name, or `module[:Class]`."""
    from iclbench.baselines import REGISTRY

    target, _, class_name = spec.partition(":")
    if target.endswith(".py") or "/" in target:
        path = Path(target)
        module = _import_file(path)
    elif target in REGISTRY and not class_name:
        module_name, _, class_name = REGISTRY[target].partition(":")
        module = _import_module(f"iclbench.baselines.{module_name}")
        path = Path(module.__file__)
    else:
        module = _import_module(target)
        path = Path(module.__file__) if getattr(module, "__file__", None) else None
    cls = _model_class(module, class_name or None, target)
    try:
        model = cls()
    except Exception as exc:
        raise PluginError(f"creating {cls.__name__} from {target} failed: {type(exc).__name__}: {exc}") from exc
    if not model.name:
        model.name = cls.__name__
    return LoadedModel(model, spec, path)
