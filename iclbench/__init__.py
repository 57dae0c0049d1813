"""iclbench: a fixed-seed benchmark of in-context learning as learned optimization."""

from iclbench.api import Batch, Model, Prediction
from iclbench.tasks import SUITE_VERSION, Task, TaskSpec

__version__ = "0.1.0"

__all__ = ["Batch", "Model", "Prediction", "SUITE_VERSION", "Task", "TaskSpec", "__version__"]
