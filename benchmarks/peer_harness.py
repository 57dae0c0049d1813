"""iclbench's baselines against the field's evaluation harness: the same predictions from the same data, timed.

    python benchmarks/peer_harness.py [--cases NAME,...] [--prompts 512] [--repeats 3] [--skip-end-to-end]

The peer is the per-prompt harness of the in-context-learning papers (Garg et al.'s style): a loop over
the prompts and, in each, over the prompt lengths scored (their prefixes), fitting NumPy's `lstsq`,
scikit-learn's `Ridge`, `Lasso` (default tolerance) and `LogisticRegression`, or running a NumPy
gradient-descent loop (every step's prediction kept, as iclbench's `gd` keeps them); and Garg et al.'s
batched `torch.linalg.lstsq`, one call per prefix for all prompts (float32, as they run it). Both sides
read one evaluation set exported by iclbench (`cache.write_export`, what `iclbench export` writes), the
first --prompts prompts of the case's task, and predict its query points at every scored length, with
the same penalties and step sizes.

Printed, per case, with the machine and its load:
- compute only, in this process, one thread (torch and the BLAS libraries limited to one): the peer's
  loops against the iclbench baseline's `predict` on 512-prompt batches at each length (the run's
  float32 inputs), interleaved, the median of --repeats CPU times each, and the ratio peer / iclbench;
- end to end: `iclbench run --model NAME --tasks TASK --data EXPORT --prompts N` (imports, the model's
  worker, scoring, the results file) against this script run as the peer (`--peer`: its imports, reading
  the exported file, the loops, the relative error), each a fresh process with one thread, interleaved,
  the median of --repeats wall times;
- the relative error (dB) of each side's predictions at the task's nominal length: the same numbers,
  up to the peer's solver tolerance and Garg's float32.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

Predictions = dict[int, np.ndarray]
"""Predictions (P, q) of the query points, by prompt length."""
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# ---------------------------------------------------------------- the peer: loops over prompts and prefixes


def lstsq_loop(x: np.ndarray, y: np.ndarray, xq: np.ndarray, lengths: list[int], **_: Any) -> Predictions:
    """NumPy's minimum-norm least squares per prompt and prefix."""
    return {n: np.stack([q @ np.linalg.lstsq(a[:n], b[:n], rcond=None)[0] for a, b, q in zip(x, y, xq)])
            for n in lengths}


def garg_lstsq(x: np.ndarray, y: np.ndarray, xq: np.ndarray, lengths: list[int], **_: Any) -> Predictions:
    """Garg et al.'s least squares: one batched `torch.linalg.lstsq` per prefix, in float32."""
    import torch

    xs, ys, qs = (torch.from_numpy(a) for a in (x, y, xq))
    out = {}
    for n in lengths:
        ws = torch.linalg.lstsq(xs[:, :n], ys[:, :n].unsqueeze(2)).solution
        out[n] = (qs @ ws).squeeze(-1).numpy()
    return out


def ridge_loop(x: np.ndarray, y: np.ndarray, xq: np.ndarray, lengths: list[int], lam: float, **_: Any) -> Predictions:
    """scikit-learn's Ridge per prompt and prefix: ||y - X w||^2 + lam ||w||^2."""
    from sklearn.linear_model import Ridge

    model = Ridge(alpha=lam, fit_intercept=False)
    return {n: np.stack([model.fit(a[:n], b[:n]).predict(q) for a, b, q in zip(x, y, xq)]) for n in lengths}


def lasso_loop(
    x: np.ndarray, y: np.ndarray, xq: np.ndarray, lengths: list[int], lam: dict[str, float], **_: Any
) -> Predictions:
    """scikit-learn's Lasso per prompt and prefix (default tolerance, as Garg et al. run it); it minimises
    (1/(2n))||y - X b||^2 + alpha ||b||_1, so alpha = lam / n."""
    from sklearn.linear_model import Lasso

    out = {}
    for n in lengths:
        model = Lasso(alpha=lam[str(n)] / n, fit_intercept=False, max_iter=100_000)
        out[n] = np.stack([model.fit(a[:n], b[:n]).predict(q) for a, b, q in zip(x, y, xq)])
    return out


def logistic_loop(x: np.ndarray, y: np.ndarray, xq: np.ndarray, lengths: list[int], mu: float, **_: Any) -> Predictions:
    """scikit-learn's LogisticRegression per prompt and prefix, C = 1 / (mu n): the logits of the optimum of the
    mu-regularised mean logistic loss. scikit-learn refuses a prompt of one class: that prompt (a few at n = 5)
    is fitted by SciPy's L-BFGS on the same loss."""
    from scipy.optimize import minimize
    from sklearn.linear_model import LogisticRegression

    def one_class(a: np.ndarray, b: np.ndarray, q: np.ndarray) -> np.ndarray:
        def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
            m = b * (a @ w)
            return np.logaddexp(0, -m).mean() + mu / 2 * w @ w, -a.T @ (b / (1 + np.exp(m))) / len(b) + mu * w

        return q @ minimize(loss, np.zeros(a.shape[1]), jac=True, method="L-BFGS-B").x

    out = {}
    for n in lengths:
        model = LogisticRegression(C=1 / (mu * n), fit_intercept=False)
        preds = []
        for a, b, q in zip(x[:, :n].astype(np.float64), y[:, :n].astype(np.float64), xq):
            preds.append(model.fit(a, b).decision_function(q) if len(set(b)) > 1 else one_class(a, b, q))
        out[n] = np.stack(preds)
    return out


def gd_loop(
    x: np.ndarray, y: np.ndarray, xq: np.ndarray, lengths: list[int], eta: dict[str, float], steps: int, **_: Any
) -> Predictions:
    """A NumPy gradient-descent loop per prompt and prefix on ||X w - y||^2 / (2n) from 0, every step's
    prediction kept (the last returned)."""
    out = {}
    for n in lengths:
        preds = []
        for a, b, q in zip(x[:, :n].astype(np.float64), y[:, :n].astype(np.float64), xq.astype(np.float64)):
            w, path = np.zeros(a.shape[1]), np.empty((steps, len(q)))
            for k in range(steps):
                w = w - eta[str(n)] * a.T @ (a @ w - b) / n
                path[k] = q @ w
            preds.append(path[-1])
        out[n] = np.stack(preds)
    return out


def averaging_loop(x: np.ndarray, y: np.ndarray, xq: np.ndarray, lengths: list[int], **_: Any) -> Predictions:
    """The averaging estimator w = X^T y / n per prompt and prefix."""
    return {n: np.stack([q @ (a[:n].T @ b[:n]) / n for a, b, q in zip(x, y, xq)]) for n in lengths}


PEERS: dict[str, Callable[..., Predictions]] = {
    "lstsq": lstsq_loop, "garg": garg_lstsq, "ridge": ridge_loop, "lasso": lasso_loop, "logistic": logistic_loop,
    "gd": gd_loop, "averaging": averaging_loop,
}


Data = tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, np.ndarray]]
"""x, y, x_query and the targets by prompt length."""


def read_export(folder: Path, task: str, prompts: int) -> Data:
    """x, y, x_query and the targets by length of the first `prompts` prompts of `task` in an iclbench export."""
    from safetensors.numpy import load_file

    entry = json.loads((folder / "manifest.json").read_text())["tasks"][task]
    data = load_file(folder / entry["file"])
    targets = {int(k.split("/", 1)[1]): v[:prompts] for k, v in data.items() if k.startswith("target/")}
    return data["x"][:prompts], data["y"][:prompts], data["x_query"][:prompts], targets


def rel_err_db(pred: np.ndarray, target: np.ndarray) -> float:
    """Sum of squared errors over sum of squared targets, in dB (floored at -300 dB, as iclbench reports it)."""
    return float(10 * np.log10(max(((pred - target) ** 2).sum() / (target**2).sum(), 1e-30)))


def peer_main(args: argparse.Namespace) -> int:
    """The peer's whole run: read the export, run the loops, print the relative error at each length."""
    x, y, xq, targets = read_export(args.data, args.task, args.prompts)
    preds = PEERS[args.peer](x, y, xq, sorted(targets), **json.loads(args.params))
    print(" ".join(f"n={n}: {rel_err_db(p, targets[n]):.2f} dB" for n, p in preds.items()))
    return 0


# ---------------------------------------------------------------- the comparison


class Case(NamedTuple):
    name: str
    task: str
    model: str
    """The iclbench baseline."""
    peer: str
    """The peer's loop (`PEERS`)."""
    what: str


CASES = [
    Case("gd", "linear/kappa1", "gd", "gd", "NumPy GD loop, 1,024 steps"),
    Case("lasso", "lasso/fixed", "lasso-exact", "lasso", "sklearn Lasso"),
    Case("ridge", "linear/noisy", "ridge", "ridge", "sklearn Ridge"),
    Case("logistic", "logistic/kappa1", "logistic-optimum", "logistic", "sklearn LogisticRegression"),
    Case("ols", "linear/kappa1", "ols", "lstsq", "NumPy lstsq"),
    Case("ols-garg", "linear/kappa1", "ols", "garg", "batched torch lstsq per prefix (Garg et al.)"),
    Case("averaging", "linear/kappa1", "averaging", "averaging", "NumPy mean"),
]


def peer_params(case: Case) -> dict[str, Any]:
    """The penalties and step sizes the iclbench baseline uses, for the peer (which does not import iclbench)."""
    from iclbench.baselines import gd
    from iclbench.baselines.proximal import tuned_lambdas
    from iclbench.baselines.ridge import bayes_lambda
    from iclbench.tasks import TASKS

    spec = TASKS[case.task].spec
    if case.peer == "gd":
        return {"eta": {str(n): eta for n, eta in gd.load_step_sizes()[case.task].items()}, "steps": gd.BUDGET}
    if case.peer == "lasso":
        return {"lam": {str(n): lam for n, lam in tuned_lambdas()[case.task].items()}}
    if case.peer == "ridge":
        return {"lam": bayes_lambda(spec)}
    if case.peer == "logistic":
        return {"mu": spec.params["mu"]}
    return {}


def iclbench_compute(case: Case, x: np.ndarray, y: np.ndarray, xq: np.ndarray, lengths: list[int]) -> Predictions:
    """The baseline's predictions at every length, on the run's 512-prompt float32 batches."""
    import torch

    from iclbench import Batch, Prediction
    from iclbench.plugins import load_model
    from iclbench.runner import RunConfig
    from iclbench.tasks import TASKS

    model, spec, size = load_model(case.model).model, TASKS[case.task].spec, RunConfig().batch_size
    xs, ys, qs = (torch.from_numpy(a) for a in (x, y, xq))
    out = {}
    for n in lengths:
        parts = []
        for s in range(0, len(xs), size):
            pred = model.predict(Batch(spec, xs[s : s + size, :n], ys[s : s + size, :n], qs[s : s + size]))
            parts.append(pred.y if isinstance(pred, Prediction) else pred)
        out[n] = torch.cat(parts).double().numpy()
    return out


def cpu_seconds(fn: Callable[[], Predictions]) -> tuple[float, Predictions]:
    start = time.process_time()
    out = fn()
    return time.process_time() - start, out


def wall_seconds(cmd: list[str]) -> float:
    """The wall time of a command run to completion with one thread (`ONE_THREAD`); exits on failure."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **ONE_THREAD})
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return time.perf_counter() - start


def commands(case: Case, export: Path, prompts: int, params: dict[str, Any], out: Path) -> tuple[list[str], list[str]]:
    """The peer's whole run (this script with --peer) and iclbench's (`iclbench run`), end to end."""
    peer = [sys.executable, __file__, "--peer", case.peer, "--task", case.task, "--data", str(export),
            "--prompts", str(prompts), "--params", json.dumps(params)]
    icl = [sys.executable, "-m", "iclbench", "run", "--model", case.model, "--tasks", case.task, "--data", str(export),
           "--prompts", str(prompts), "--quiet", "--out", str(out)]
    return peer, icl


def load_line(when: str) -> str:
    return f"load {when}: " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> int:
    names = [c.name for c in CASES]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=lambda s: [c for c in s.split(",") if c], default=names, metavar="NAME,...",
                        help=f"cases to run (default: every one: {', '.join(names)})")
    parser.add_argument("--prompts", type=int, default=512, help="the first N prompts of each task (default 512)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timings of each side; medians reported")
    parser.add_argument("--skip-end-to-end", action="store_true", help="compute only")
    parser.add_argument("--peer", choices=sorted(PEERS), help=argparse.SUPPRESS)  # the peer's own run (end to end)
    parser.add_argument("--task", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--params", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prompts < 1 or args.repeats < 1:
        parser.error("--prompts and --repeats must be positive")
    if args.peer:
        return peer_main(args)
    unknown = sorted(set(args.cases) - set(names))
    if unknown:
        parser.error(f"--cases: no case called {', '.join(unknown)} (cases: {', '.join(names)})")
    cases = [c for c in CASES if c.name in args.cases]

    import torch
    from tabulate import tabulate
    from threadpoolctl import threadpool_limits

    from iclbench.cache import write_export
    from iclbench.provenance import cpu_model
    from iclbench.tasks import TASKS

    torch.set_num_threads(1)
    threadpool_limits(1)
    print(f"{cpu_model()}, {os.cpu_count()} cores, {load_line('at the start')}; torch {torch.__version__}, one thread; "
          f"the first {args.prompts} prompts of each task, every scored length; medians of {args.repeats} interleaved "
          "runs", flush=True)
    times: dict[str, dict[str, list[float]]] = {c.name: {} for c in cases}
    errors: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        export = Path(tmp) / "export"
        write_export(export, [TASKS[t] for t in sorted({c.task for c in cases})])
        data = {c.task: read_export(export, c.task, args.prompts) for c in cases}
        params = {c.name: peer_params(c) for c in cases}
        for repeat in range(args.repeats):
            for case in cases:
                x, y, xq, targets = data[case.task]
                lengths, timed = sorted(targets), times[case.name]
                t_peer, peer = cpu_seconds(lambda: PEERS[case.peer](x, y, xq, lengths, **params[case.name]))
                t_icl, icl = cpu_seconds(lambda: iclbench_compute(case, x, y, xq, lengths))
                timed.setdefault("peer", []).append(t_peer)
                timed.setdefault("icl", []).append(t_icl)
                n = TASKS[case.task].spec.nominal
                errors[case.name] = (rel_err_db(peer[n], targets[n]), rel_err_db(icl[n], targets[n]))
                if not args.skip_end_to_end:
                    peer_cmd, icl_cmd = commands(case, export, args.prompts, params[case.name], Path(tmp) / str(repeat))
                    timed.setdefault("peer_e2e", []).append(wall_seconds(peer_cmd))
                    timed.setdefault("icl_e2e", []).append(wall_seconds(icl_cmd))
                print(f"  repeat {repeat + 1}: {case.name} done", file=sys.stderr, flush=True)

    rows = []
    for case in cases:
        t = {k: statistics.median(v) for k, v in times[case.name].items()}
        e2e = ["-"] * 3
        if "peer_e2e" in t:
            e2e = [f"{t['peer_e2e']:.2f}", f"{t['icl_e2e']:.2f}", f"{t['peer_e2e'] / t['icl_e2e']:.2f}x"]
        rows.append([case.name, case.task, case.what, case.model, f"{t['peer']:.3f}", f"{t['icl']:.3f}",
                     f"{t['peer'] / t['icl']:.1f}x", *e2e, "{:.2f} / {:.2f}".format(*errors[case.name])])
    print(tabulate(rows, headers=["case", "task", "peer", "iclbench", "peer CPU s", "iclbench CPU s", "ratio",
                                  "peer e2e s", "iclbench e2e s", "e2e ratio", "dB at nominal n: peer / iclbench"]))
    print(load_line("at the end"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
