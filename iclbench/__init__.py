"""iclbench: a fixed-seed benchmark of in-context learning as learned optimization.

`iclbench.evaluate(model, tasks=...)` scores a model from Python as `iclbench run` does and returns
`iclbench.Results`; both are imported on first use, so that `import iclbench` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from iclbench.api import Batch, Model, Prediction
from iclbench.tasks import SUITE_VERSION, Task, TaskSpec

if TYPE_CHECKING:
    from iclbench.evaluation import Results, evaluate

__version__ = "0.3.0"

_LAZY = ("Results", "evaluate")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from iclbench import evaluation

        return getattr(evaluation, name)
    raise AttributeError(f"module 'iclbench' has no attribute {name!r}")


__all__ = ["Batch", "Model", "Prediction", "Results", "SUITE_VERSION", "Task", "TaskSpec", "__version__", "evaluate"]
