"""What running a model in a worker process costs, and the sandbox's share: full-suite runs in this process, in a
worker, and in a sandboxed worker, interleaved.

    python benchmarks/isolation.py [--models ridge gd examples/template_model.py] [--repeats 1] [--prompts N]
                                   [--threads 1]

For each model and repeat, scores the suite in this process (`iclbench.plugins.LoadedModel`, no isolation), in
a worker without the sandbox and in a sandboxed worker (`iclbench.worker.IsolatedModel`, what `iclbench run`
does), in an order that rotates from one repeat to the next, on the CPU, with `threads` threads in every
process and the evaluation sets generated beforehand. Prints, per model, the median wall time and CPU time
(this process's, and the worker's processes' read from /proc before it exits) of each way, the overhead of
the sandboxed worker over this process (ratio and difference) and the sandbox's own (sandboxed / plain
worker), each reference measured in the same sitting. Without a sandbox on this machine, the sandboxed
column is left out.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from iclbench import sandbox, tasks
from iclbench.cache import eval_set
from iclbench.evaluation import thread_limit
from iclbench.plugins import load_model
from iclbench.runner import RunConfig, ScoredModel, run
from iclbench.worker import IsolatedModel, Limits

WAYS = ("in-process", "worker", "sandboxed")
_TICK = os.sysconf("SC_CLK_TCK")


def _tree_cpu(root: int) -> float:
    """CPU seconds (user + system) of process `root` and every process below it, from /proc."""
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK)  # ppid, utime+stime
    below, total = {root}, 0.0
    while True:
        found = {pid for pid, (ppid, _) in stats.items() if ppid in below and pid not in below}
        if not found:
            break
        below |= found
    return sum(stats[pid][1] for pid in below if pid in stats)


def timed(way: str, source: str, cfg: RunConfig, limits: Limits) -> tuple[float, float]:
    """Wall and CPU seconds of a full-suite run of `source`, from loading the model to its end."""
    start, cpu = time.perf_counter(), time.process_time()
    model: ScoredModel = (load_model(source) if way == "in-process"
                          else IsolatedModel(source, limits, sandbox=way == "sandboxed"))
    try:
        doc = run(model, list(tasks.TASKS.values()), cfg, progress=False)
        worker = 0.0 if way == "in-process" else _tree_cpu(model.pid)
    finally:
        model.close()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu + worker
    failed = [name for name, entry in doc["tasks"].items() if entry["status"] == "failed"]
    if failed:
        raise SystemExit(f"{source}: tasks failed: {failed}")
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["ridge", "gd", "examples/template_model.py"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--prompts", type=int, help="score only the first N prompts (default: all)")
    parser.add_argument("--threads", type=int, default=Limits.threads, help="threads of every process (default 1)")
    args = parser.parse_args()
    for task in tasks.TASKS.values():
        eval_set(task)
    ways = WAYS if sandbox.unavailable() is None else WAYS[:2]
    if len(ways) < len(WAYS):
        print(f"no sandboxed column: {sandbox.unavailable()}")
    cfg, limits = RunConfig("cpu", prompts=args.prompts), Limits(threads=args.threads)
    for source in args.models:
        wall: dict[str, list[float]] = {w: [] for w in ways}
        cpu: dict[str, list[float]] = {w: [] for w in ways}
        with thread_limit(args.threads):
            for r in range(args.repeats):
                for way in ways[r % len(ways):] + ways[: r % len(ways)]:
                    w, c = timed(way, source, cfg, limits)
                    wall[way].append(w)
                    cpu[way].append(c)
        w, c = ({k: statistics.median(v) for k, v in d.items()} for d in (wall, cpu))
        for way in ways:
            print(f"{source:<28} {way:<11} wall {w[way]:8.2f} s   CPU {c[way]:8.2f} s")
        for way, ref in ((ways[-1], "in-process"), (ways[-1], "worker")):
            print(f"{source:<28} {way}/{ref}: wall {w[way] / w[ref]:.3f} ({w[way] - w[ref]:+.2f} s), "
                  f"CPU {c[way] / c[ref]:.3f} ({c[way] - c[ref]:+.2f} s)", flush=True)

if __name__ == "__main__":
    main()
