"""Where iclbench stands: every baseline's full-suite run, and the batched solvers against per-prompt loops.

    python benchmarks/baselines.py [--models NAME,...] [--prompts N] [--repeats 3] [--out DIR] [--skip-runs]

1. Each baseline (all of them, or those of --models) runs the suite as a user runs it,
   `iclbench run --model NAME --quiet --out DIR/NAME [--prompts N]`, in its own process. Printed:
   its wall time; its peak resident memory: of its largest process (the harness or the model's
   worker; the operating system's high-water mark) and of the two together (sampled from /proc
   every 20 ms, Linux only); the count of tasks by status. The results files stay in --out (a
   temporary folder by default).
2. The batched exact solvers against per-prompt reference loops, on the same prompts (the
   2,048 of a task at its nominal length, or the first --prompts), with the tolerance of the
   tests (`tests/test_benchmarks_baselines.py` checks them on 64 prompts in the default run):
     lasso-exact (`proximal.lasso_exact`)               vs sklearn Lasso per prompt              (lasso/fixed)
     logistic-optimum (`solvers.logistic_optimum`)     vs sklearn LogisticRegression per prompt (logistic/kappa1)
     ridge / ols (`ridge.solve`)                        vs numpy.linalg.lstsq per prompt          (linear/kappa1)
     relu-nn (`network.train`, its 100 Adam steps)      vs torch.nn + torch.optim.Adam per prompt (garg/relu2nn,
                                                          at most `NETWORK_PROMPTS` prompts: the loop takes 0.1 s each)
   Printed: the best-of-`repeats` wall time of both, their ratio, the largest difference of the
   answers (coefficient vectors) and its tolerance. The reference loops are those of the tests
   (`tests/fixtures/references.py`).

The exit status is 1 when a run fails or an answer is off by more than its tolerance.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from tabulate import tabulate

from iclbench import tasks
from iclbench.baselines import REGISTRY, network
from iclbench.baselines.proximal import lasso_exact, lasso_lambda
from iclbench.baselines.ridge import bayes_lambda, solve
from iclbench.cache import eval_set
from iclbench.solvers import logistic_optimum

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fixtures.references import lasso_loop, logistic_loop, lstsq_loop, network_loop  # noqa: E402

MIB = 2**20
NETWORK_PROMPTS = 256
PAGE = os.sysconf("SC_PAGE_SIZE")


class Run(NamedTuple):
    model: str
    seconds: float
    largest_mib: float
    together_mib: float | None
    statuses: Counter[str]
    error: str


def tree_rss(pid: int) -> int | None:
    """Resident bytes of process `pid` and all its descendants, from /proc (None without /proc)."""
    children: dict[int, list[int]] = {}
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return None
    rss: dict[int, int] = {}
    for entry in entries:
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state, ppid, ..., rss (24th field)
            children.setdefault(int(fields[1]), []).append(int(entry))
            rss[int(entry)] = int(fields[21]) * PAGE
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo += children.get(p, [])
    return total


def run_baseline(name: str, out: Path, prompts: int | None) -> Run:
    """`iclbench run --model NAME` over the suite in its own process: time, peak memory, task statuses."""
    folder = out / name
    cmd = [sys.executable, "-m", "iclbench.cli", "run", "--model", name, "--quiet", "--out", str(folder)]
    cmd += ["--prompts", str(prompts)] if prompts else []
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        together: int | None = 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            sample = tree_rss(proc.pid)
            together = None if sample is None or together is None else max(together, sample)
            time.sleep(0.02)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        message = err.read().decode(errors="replace").strip().splitlines()
    # ru_maxrss: the largest high-water mark of the process and of the children it waited for (KiB on Linux)
    largest = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024) / MIB
    statuses: Counter[str] = Counter()
    for path in folder.glob("*.json"):
        statuses.update(entry["status"] for entry in json.loads(path.read_text())["tasks"].values())
    error = "" if proc.returncode == 0 else f"exit status {proc.returncode}: {message[-1] if message else ''}"
    return Run(name, seconds, largest, None if not together else together / MIB, statuses, error)


def best_time(fn: Callable[[], np.ndarray], repeats: int) -> tuple[float, np.ndarray]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), np.asarray(out)


def prompts(name: str, count: int | None) -> tuple[tasks.TaskSpec, torch.Tensor, torch.Tensor]:
    task = tasks.get(name)
    data, _ = eval_set(task)
    n = task.spec.nominal
    return task.spec, data.x[:count, :n].double(), data.y[:count, :n].double()


def cases(count: int | None) -> list[tuple[str, str, float, Callable[[], object], Callable[[], object]]]:
    """(solver, reference, tolerance, batched, loop) for each batched exact solver, on `count` prompts (None: all)."""
    spec, x, y = prompts("lasso/fixed", count)
    lam = lasso_lambda(spec, spec.nominal)
    lspec, lx, ly = prompts("logistic/kappa1", count)
    mu = lspec.params["mu"]
    rspec, rx, ry = prompts("linear/kappa1", count)
    rlam = bayes_lambda(rspec)
    if rlam != 0:
        raise ValueError(f"{rspec.name}: expected a noiseless task (ridge = least squares), got lambda {rlam}")
    net = tasks.get("garg/relu2nn")
    data, _ = eval_set(net)
    few, n = slice(0, min(count or NETWORK_PROMPTS, NETWORK_PROMPTS)), net.spec.nominal
    nx, ny, nq = data.x[few, :n].double(), data.y[few, :n].double(), data.x_query[few].double()
    return [
        ("lasso-exact (lasso/fixed)", "sklearn Lasso", 1e-8,
         lambda: lasso_exact(x, y, lam).numpy(), lambda: lasso_loop(x.numpy(), y.numpy(), lam)),
        ("logistic-optimum (logistic/kappa1)", "sklearn LogisticRegression", 1e-5,
         lambda: logistic_optimum(lx, ly, mu).numpy(), lambda: logistic_loop(lx.numpy(), ly.numpy(), mu)),
        ("ridge, ols (linear/kappa1)", "numpy lstsq", 1e-9,
         lambda: solve(rx, ry, rlam).numpy(), lambda: lstsq_loop(rx.numpy(), ry.numpy())),
        (f"relu-nn (garg/relu2nn, {len(nx)} prompts)", "torch.nn + Adam", 1e-6,
         lambda: network.train(nx, ny, nq).numpy(), lambda: network_loop(nx, ny, nq, network.STEPS).numpy()),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=lambda s: [m for m in s.split(",") if m], default=list(REGISTRY),
                        metavar="NAME,...", help="baselines to run (default: every one)")
    parser.add_argument("--prompts", type=int, help="the first N prompts of each task (default: all)")
    parser.add_argument("--repeats", type=int, default=3, help="timings of each solver and loop; the best is reported")
    parser.add_argument("--out", type=Path, help="keep the runs' results files here (default: a temporary folder)")
    parser.add_argument("--skip-runs", action="store_true", help="only the solvers against the loops")
    args = parser.parse_args()
    unknown = [m for m in args.models if m not in REGISTRY]
    if unknown:
        parser.error(f"--models: no baseline called {', '.join(unknown)} (baselines: {', '.join(REGISTRY)})")
    if args.prompts is not None and args.prompts < 1 or args.repeats < 1:
        parser.error("--prompts and --repeats must be positive")
    warnings.filterwarnings("ignore", category=UserWarning)
    size = f"the first {args.prompts} prompts of each task" if args.prompts else "every prompt"
    ok = True

    if not args.skip_runs:
        with tempfile.TemporaryDirectory() as tmp:
            out = args.out or Path(tmp)
            print(f"Full-suite runs (`iclbench run --model NAME --quiet`, default settings), {size}:", flush=True)
            rows = []
            for name in args.models:
                r = run_baseline(name, out, args.prompts)
                ok &= not r.error
                together = "n/a" if r.together_mib is None else f"{r.together_mib:.0f}"
                tally = ", ".join(f"{n} {s}" for s, n in sorted(r.statuses.items())) or "-"
                rows.append([r.model, f"{r.seconds:.1f}", f"{r.largest_mib:.0f}", together, tally, r.error])
                print(f"  {name}: {r.seconds:.1f} s", flush=True)
            print(tabulate(rows, headers=["baseline", "wall s", "peak MiB, largest process",
                                          "peak MiB, harness + worker", "tasks", "error"]))
            print()

    print(f"Batched solvers against per-prompt loops, {size} at the nominal length; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; best of {args.repeats}:", flush=True)
    rows = []
    for solver, reference, tol, batched, loop in cases(args.prompts):
        t_batched, a = best_time(batched, args.repeats)
        t_loop, b = best_time(loop, args.repeats)
        diff = float(np.abs(a - b).max())
        ok &= diff <= tol
        rows.append([solver, reference, f"{t_batched * 1e3:.1f}", f"{t_loop * 1e3:.1f}", f"{t_loop / t_batched:.1f}x",
                     f"{diff:.2e}", f"{tol:g}", "ok" if diff <= tol else "ABOVE TOLERANCE"])
    print(tabulate(rows, headers=["solver", "reference loop", "batched ms", "loop ms", "ratio", "max |difference|",
                                  "tolerance", ""]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
