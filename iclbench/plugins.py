"""Loading a model plugin from a file, a dotted module or a baseline's name."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from iclbench.api import Model


class PluginError(Exception):
    """A model that cannot be loaded: the message says what is wrong and where."""


@dataclass(frozen=True)
class LoadedModel:
    """An instantiated model, the `--model` string it came from, and its source file."""

    model: Model
    source: str
    path: Path | None

    @property
    def qualname(self) -> str:
        cls = type(self.model)
        return f"{cls.__module__}:{cls.__qualname__}"


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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
