"""What running a model in a worker process costs: full-suite runs in this process and isolated, interleaved.

    python benchmarks/isolation.py [--models ridge gd examples/template_model.py] [--repeats 1] [--prompts N]

For each model and repeat, scores the suite in this process (`iclbench.plugins.LoadedModel`, no
isolation) and in a worker (`iclbench.worker.IsolatedModel`, what `iclbench run` does), alternating
which goes first, on the CPU, with the evaluation sets generated beforehand; prints each wall time
and the ratio isolated / in-process, the reference being measured in the same sitting.
"""

from __future__ import annotations

import argparse
import statistics
import time

from iclbench import tasks
from iclbench.cache import eval_set
from iclbench.plugins import load_model
from iclbench.runner import RunConfig, ScoredModel, run
from iclbench.worker import IsolatedModel


def timed(isolated: bool, source: str, cfg: RunConfig) -> float:
    """Wall seconds of a full-suite run of `source`, from loading the model to the last task."""
    start = time.perf_counter()
    model: ScoredModel = IsolatedModel(source) if isolated else load_model(source)
    try:
        doc = run(model, list(tasks.TASKS.values()), cfg, progress=False)
    finally:
        model.close()
    failed = [name for name, entry in doc["tasks"].items() if entry["status"] == "failed"]
    if failed:
        raise SystemExit(f"{source}: tasks failed: {failed}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["ridge", "gd", "examples/template_model.py"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--prompts", type=int, help="score only the first N prompts (default: all)")
    args = parser.parse_args()
    for task in tasks.TASKS.values():
        eval_set(task)
    cfg = RunConfig("cpu", prompts=args.prompts)
    print(f"{'model':<28} {'in-process (s)':>15} {'isolated (s)':>13} {'ratio':>7}")
    for source in args.models:
        times: dict[bool, list[float]] = {False: [], True: []}
        for r in range(args.repeats):
            for isolated in (False, True) if r % 2 == 0 else (True, False):
                times[isolated].append(timed(isolated, source, cfg))
        a, b = statistics.median(times[False]), statistics.median(times[True])
        print(f"{source:<28} {a:>15.2f} {b:>13.2f} {b / a:>7.3f}", flush=True)


if __name__ == "__main__":
    main()
