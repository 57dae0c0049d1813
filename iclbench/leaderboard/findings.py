"""The figures and numbers of docs/findings.md, made from results files.

    python -m iclbench.leaderboard.findings --submissions submissions --baselines results/baselines --out docs/findings

reads every `<submissions>/*/results.json` and `<baselines>/*.json` (the output of
`iclbench run --model <baseline>`), keyed by model name, and writes to `--out` one PNG per
question and `numbers.json`, every number the page quotes. Models and baselines that are
missing are left out of the plots and reported as null. Questions 1 and 6 also load the
checkpoints of their models and compare them, on the evaluation sets, with one GD step whose step
size is fitted in closed form on the training stream (`one_step_gd`); `--no-checkpoints` skips it.
`heatmap` draws any results entry's `alignment` (from `iclbench run --align`).

The baselines' results are generated, never committed, so the committed numbers.json is checked
in two places: the tests rebuild it without baselines and compare every number that comes from
the submissions exactly, and the pages workflow, after scoring every baseline, runs `--check`:
rebuild into a temporary folder and compare every number with the committed one (`compare`),
floats within a re-run's tolerance, since the baselines were scored on another machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from iclbench import metrics, results
from iclbench.alignment import cosine_matrix
from iclbench.metrics import steps_to_reach
from iclbench.submissions.rerun import TOL_DB, db_close
from iclbench.tasks import EvalSet, Sample, Task, get

Docs = dict[str, dict[str, Any]]

Q1_MODEL, Q1_TASK = "lsa-1l-kappa1", "linear/kappa1"
Q2_MODELS, Q2_TASK = ("lsa-4l-kappa100", "lsa-norm-4l-kappa100"), "linear/kappa100"
Q3_MODELS = {
    "looped-lsa-norm-lasso": "lasso/fixed",
    "looped-lsa-norm-lasso-random": "lasso/random",
    "prox-8l-lasso-random": "lasso/random",
}
"""The lasso transformers and the task each was trained on; the first one's depth is the baselines' cut."""
Q3_BASELINES = ("ista", "fista", "lista", "lista-cp", "alista")
Q3_TASKS = ("lasso/fixed", "lasso/shift0.1", "lasso/shift0.5", "lasso/random")
Q4_MODELS = {
    "kernel/exp": ("kernel-exp-attn-linear", "kernel-exp-attn-softmax"),
    "kernel/relu": ("kernel-relu-attn-relu", "kernel-relu-attn-linear"),
}
"""The 4-layer kernel models by the task each was trained on."""
Q4_WIDE_MODELS = {
    "kernel/exp": ("kernel-exp-attn-softmax-4h", "kernel-exp-attn-relu-4h"),
    "kernel/relu": ("kernel-relu-attn-relu-4h", "kernel-relu-attn-softmax-4h"),
}
"""The 4-head kernel models, each attention non-linearity trained on each kernel (matched, then mismatched),
compared among themselves (trained longer and wider than `Q4_MODELS`)."""
Q4_BASELINES = ("gp-posterior", "gd", "newton")
Q6_MODELS = {
    "causal-lsa-1l-ar-uniform": "ar/uniform",
    "causal-lsa-2l-ar-uniform": "ar/uniform",
    "causal-lsa-1l-ar-gaussian": "ar/gaussian",
}
"""The causal LSAs trained autoregressively on the ar family and the task each was trained on."""
Q6_TASKS = ("ar/uniform", "ar/gaussian", "ar/noisy")
Q7_MODEL, Q7_TASK = "gpt2-tiny-linear-kappa1", "linear/kappa1"
Q7_BASELINES = ("ols", "ridge", "averaging", "zero")
Q7_TASKS = ("linear/kappa1", "linear/kappa10", "linear/kappa100", "linear/noisy")
Q9_MODEL, Q9_TASK, Q9_DIMS = "gpt2-tiny-noisy-d5", "linear/noisy", 5
"""Question 9's GPT-2, trained on linear/noisy's prompts at dimension 5 (`iclbench train --dims 5`)."""
Q9_PROMPTS, Q9_SEED = 2048, 9
"""Question 9's prompts: drawn at dimension `Q9_DIMS` on linear/noisy's training stream of seed 9 (the model
trained on seed 0's)."""
Q9_GAP_DB = 3.0
"""How close to least squares, in dB, question 9 asks the model to be from n = 2d on."""
FLOOR_DB = -60.0
"""Plotted errors below this (least squares' -149 dB where it is exact) are drawn at it."""
TRAINED_TASKS: dict[str, tuple[str, ...]] = {
    Q1_MODEL: (Q1_TASK,),
    **{m: (Q2_TASK,) for m in Q2_MODELS},
    **{m: (task,) for m, task in Q3_MODELS.items()},
    **{m: (task,) for groups in (Q4_MODELS, Q4_WIDE_MODELS) for task, group in groups.items() for m in group},
    "lsa-norm-4l-logistic": ("logistic/kappa1",),
    **{m: (task,) for m, task in Q6_MODELS.items()},
    Q7_MODEL: (Q7_TASK,),
}
"""The task each submission was trained on: the one its heatmap shows."""
CLIP_DB = 20.0
"""Plotted errors above this are drawn at it (with their value written), so that one blow-up keeps the scale."""
TUNING_SEED = 7
"""Training-stream seed of the prompts on which the one-step GD step size is fitted."""
TUNING_SEEDS = tuple(range(10))
"""Seeds of the fits whose spread question 6 reports beside `TUNING_SEED`'s (a fit on 4,096 prompts moves the
difference between a trained layer and the fitted step by several dB from one draw to another)."""
LONG_PROMPTS = 1000
"""Question 6's long prompts: one fitted GD step's error with this many pairs, where the evaluation sets stop at 50."""


def load(submissions: Path, baselines: Path) -> Docs:
    """Results documents by model name: submissions' results.json, then baseline results files."""
    paths = sorted(submissions.glob("*/results.json")) + sorted(baselines.glob("*.json"))
    docs: Docs = {}
    for path in paths:
        doc = results.read(path)
        docs.setdefault(doc["model"]["name"], doc)
    return docs


def entry(docs: Docs, model: str, task: str) -> dict[str, Any] | None:
    """The task entry of `model`, when the model was scored on it."""
    e = docs.get(model, {}).get("tasks", {}).get(task)
    return e if e and e.get("status") == "ok" else None


def length_metrics(docs: Docs, model: str, task: str, n: int | None = None) -> dict[str, Any] | None:
    """The metrics of `model` on `task` at length `n` (default: the nominal length)."""
    e = entry(docs, model, task)
    if e is None:
        return None
    return e["lengths"].get(str(e["spec"]["nominal"] if n is None else n))


def err_db(docs: Docs, model: str, task: str, n: int | None = None) -> float | None:
    m = length_metrics(docs, model, task, n)
    return None if m is None else round(m["rel_err"]["db"], 2)


def steps_db(docs: Docs, model: str, task: str, n: int | None = None) -> list[float] | None:
    m = length_metrics(docs, model, task, n)
    return None if m is None or "steps_rel_err_db" not in m else m["steps_rel_err_db"]


def at_step(curve: list[float] | None, k: int) -> float | None:
    """The error after step `k` (1-based) of a per-step curve, or None when it is shorter."""
    return round(curve[k - 1], 2) if curve is not None and len(curve) >= k else None


def _round(v: float) -> float:
    return round(float(v), 4)


@lru_cache(maxsize=1)
def tuning_sample(name: str, n: int, prompts: int, seed: int) -> Sample:
    """`prompts` prompts of length `n` of task `name`'s training stream of `seed`, on which a step size is fitted
    (the last one drawn is kept: the one-step and two-step fits of a draw share it)."""
    task = get(name)
    return task.sample(prompts, n, task.train_generator(seed))


def one_step_gd(
    task: Task, n: int, data: EvalSet, tuning_prompts: int = 4096, seed: int = TUNING_SEED
) -> tuple[float, torch.Tensor]:
    """One GD step from 0 on least squares with the best constant step size, and its (P, q) predictions on `data`.

    The prediction is eta * a with a = x_q^T X^T y / n; eta minimises the squared error to the
    target on `tuning_prompts` prompts of the training stream of `seed`, in closed form.
    For vector labels (P, n, m) the step is W = eta Y^T X / n, from 0 on sum_i ||y_i - W x_i||^2 / 2n, and the
    prediction W x_q, (P, q, m).
    """
    tune = tuning_sample(task.spec.name, n, tuning_prompts, seed)
    a = one_step_feature(tune.batch.x, tune.batch.y, tune.batch.x_query)
    eta = float((a * tune.target.double()).sum() / (a * a).sum())
    return eta, eta * one_step_feature(data.x[:, :n], data.y[:, :n], data.x_query)


def one_step_feature(x: torch.Tensor, y: torch.Tensor, xq: torch.Tensor) -> torch.Tensor:
    """x_q^T X^T y / n (P, q), or W x_q with W = Y^T X / n for vector labels (P, q, m), in float64: one GD step of
    size 1 from 0."""
    n = x.shape[1]
    if y.dim() == 3:
        return torch.einsum("bqd,bmd->bqm", xq.double(), torch.einsum("bnd,bnm->bmd", x.double(), y.double())) / n
    return torch.einsum("bqd,bd->bq", xq.double(), torch.einsum("bnd,bn->bd", x.double(), y.double())) / n


def two_gd_steps(
    task: Task, n: int, data: EvalSet, tuning_prompts: int = 4096, seed: int = TUNING_SEED
) -> tuple[float, torch.Tensor]:
    """Two GD steps from W = 0 on sum_i ||y_i - W x_i||^2 / 2n (vector labels) with the constant step size, of a
    log-spaced grid from 0.01 to 3, that is best on `tuning_prompts` prompts of the training stream of `seed`; its
    (P, q, m) predictions on `data`. With G = Y^T X / n and H = X^T X / n, the steps are W_1 = eta G and
    W_2 = W_1 - eta (W_1 H - G) = 2 eta G - eta^2 G H, so every step size's prediction is
    2 eta x_q G^T - eta^2 x_q (G H)^T from two (B, q, m) products, never a (B, m, d) matrix per step size."""
    def terms(x: torch.Tensor, y: torch.Tensor, xq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, y, xq = x.double(), y.double(), xq.double()
        g, h = torch.einsum("bnd,bnm->bmd", x, y) / n, x.mT @ x / n
        return torch.einsum("bqd,bmd->bqm", xq, g), torch.einsum("bqd,bmd->bqm", xq, g @ h)

    def predict(first: torch.Tensor, second: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
        e = eta[:, None, None, None]  # one row per step size
        return 2 * e * first - e * e * second

    grid = torch.logspace(-2, np.log10(3), 121, dtype=torch.float64)
    tune = tuning_sample(task.spec.name, n, tuning_prompts, seed)
    target, tuning = tune.target.double(), terms(tune.batch.x, tune.batch.y, tune.batch.x_query)
    sums = torch.cat([  # each step size's sum of squared errors, 8 step sizes at a time
        ((predict(*tuning, etas) - target) ** 2).flatten(1).sum(1) for etas in grid.split(8)
    ])
    eta = grid[sums.argmin()].reshape(1)
    return float(eta), predict(*terms(data.x[:, :n], data.y[:, :n], data.x_query), eta)[0]


def one_step_long(task: Task, prompts: int = 2048, chunk: int = 128) -> dict[str, Any]:
    """One fitted GD step with `LONG_PROMPTS` pairs: its step size, fitted on `prompts` training-stream prompts
    (`TUNING_SEED`), and its error (dB) on as many others (seed `TUNING_SEED` + 1), each drawn `chunk` prompts at a
    time (a draw of 1,024 sequences of 1,000 pairs at once takes 240 MB)."""

    def draw(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen, features, targets = task.train_generator(seed), [], []
        for _ in range(prompts // chunk):
            s = task.sample(chunk, LONG_PROMPTS, gen)
            features.append(one_step_feature(s.batch.x, s.batch.y, s.batch.x_query))
            targets.append(s.target.double())
        return torch.cat(features), torch.cat(targets)

    a, target = draw(TUNING_SEED)
    eta = float((a * target).sum() / (a * a).sum())
    a, target = draw(TUNING_SEED + 1)
    return {"n": LONG_PROMPTS, "eta": _round(eta), "gd_db": round(metrics.relative_error(eta * a, target)["db"], 2)}


def per_layer(net: torch.nn.Module, data: EvalSet, n: int, chunk: int = 512) -> torch.Tensor:
    """`net`'s per-layer predictions (P, K, q[, m]) on the prompts of `data` at length `n`, in float64, `chunk`
    prompts at a time (the attention scores of every prompt at once take up to 126 MB a layer)."""
    with torch.no_grad():
        return torch.cat([net(x.double(), y.double(), xq.double())[1] for x, y, xq in
                          zip(data.x[:, :n].split(chunk), data.y[:, :n].split(chunk), data.x_query.split(chunk))])


def one_step_comparison(net: torch.nn.Module, task: Task, data: EvalSet, n: int) -> dict[str, Any]:
    """A 1-layer model against one fitted GD step on `data` at length `n`: errors in dB and residual cosine, with
    the step fitted on `TUNING_SEED`'s draw, and the range of each over the fits on `TUNING_SEEDS`' draws."""
    steps = per_layer(net, data, n)
    y, target = steps[:, -1], data.targets[n].double()

    def fitted(seed: int) -> tuple[float, float, float]:
        eta, gd = one_step_gd(task, n, data, seed=seed)
        cosine = float(cosine_matrix(steps[:, :1], gd.unsqueeze(1), target)[0, 0])
        return eta, metrics.relative_error(gd, target)["db"], cosine

    rounding = {"eta": _round, "gd_db": lambda v: round(v, 2), "cosine": _round}
    found = dict(zip(rounding, fitted(TUNING_SEED)))
    refits = [dict(zip(rounding, fitted(seed))) for seed in TUNING_SEEDS]
    return {
        "n": n,
        **{key: rounding[key](value) for key, value in found.items()},
        "model_db": round(metrics.relative_error(y, target)["db"], 2),
        "refits": {key: [r(f(fit[key] for fit in refits)) for f in (min, max)] for key, r in rounding.items()},
    }


def mesa_comparison(
    net: torch.nn.Module, data: EvalSet, n: int, eta: float, gd: torch.Tensor, gd2: torch.Tensor,
    refits: Sequence[torch.Tensor] = (),
) -> dict[str, Any]:
    """A causal LSA's per-layer predictions on `data` at length `n` against those of one GD step of size `eta`,
    `gd` (P, q, m): the error of each layer (dB), the difference of the two predictions relative to the
    target's energy (dB; 0 would be as large as the target), the cosine of their residuals (1: the same
    errors up to scale), the step size of the GD step closest to the layer's prediction (least squares) and
    the difference from that step's prediction (dB, as above: no fit involved), and the cosine of its residual
    with that of two GD steps, `gd2`. With `refits`, the predictions of the step fitted on other draws
    (`TUNING_SEEDS`): the least and the largest difference from them (dB), per layer."""
    steps = per_layer(net, data, n)
    target = data.targets[n].double()
    energy = float((target**2).sum())
    layers = range(steps.shape[1])
    scale = [float((steps[:, k] * gd).sum() / (gd * gd).sum()) for k in layers]  # closest step: eta * scale

    def difference(k: int, other: torch.Tensor) -> float:
        return metrics.db(float(((steps[:, k] - other) ** 2).sum()) / energy)

    found = {
        "layers_db": [round(metrics.relative_error(steps[:, k], target)["db"], 2) for k in layers],
        "difference_db": [round(difference(k, gd), 2) for k in layers],
        "cosine": [_round(c) for c in cosine_matrix(steps, gd.unsqueeze(1), target)[:, 0]],
        "closest_eta": [_round(eta * scale[k]) for k in layers],
        "closest_difference_db": [round(difference(k, scale[k] * gd), 2) for k in layers],
        "cosine_two_steps": [_round(c) for c in cosine_matrix(steps, gd2.unsqueeze(1), target)[:, 0]],
    }
    if refits:
        found["difference_db_refits"] = [[round(f(difference(k, r) for r in refits), 2) for f in (min, max)]
                                         for k in layers]
    return found


def heatmap(ax: Any, align: dict[str, Any], ref: str, title: str, max_columns: int = 48) -> None:
    """The (layer x step) cosine matrix of one `alignment` entry; log-spaced steps when there are many."""
    cos = np.asarray(align["cosine"])
    s = cos.shape[1]
    cols = np.unique(np.geomspace(1, s, max_columns).round().astype(int)) - 1 if s > max_columns else np.arange(s)
    low = float(min(0.5, np.floor(cos.min() * 10) / 10))  # the colour scale spans [low, 1]
    im = ax.imshow(cos[:, cols], aspect="auto", vmin=low, vmax=1, cmap="viridis", interpolation="nearest")
    ticks = np.linspace(0, len(cols) - 1, min(8, len(cols))).round().astype(int)
    ax.set_xticks(ticks, [str(cols[t] + 1) for t in ticks])
    ax.set_yticks(range(cos.shape[0]), [str(k + 1) for k in range(cos.shape[0])])
    for layer, step in enumerate(align["closest_step"]):
        col = int(np.abs(cols - (step - 1)).argmin())
        ax.plot(col, layer, marker="o", color="red", markersize=4)
    ax.set_xlabel(f"{ref} step" + (" (log-spaced columns)" if s > max_columns else ""))
    ax.set_ylabel("layer")
    ax.set_title(title, fontsize=9)
    plt.colorbar(im, ax=ax, fraction=0.046, pad=0.02)


def _legend(ax: Any, size: int) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=size)


def _label(ax: Any, xlabel: str, title: str) -> None:
    """Axis labels (error in dB against `xlabel`), title and legend of a findings plot."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel("relative error (dB)")
    ax.set_title(title, fontsize=10)
    _legend(ax, 7)


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _lengths(docs: Docs, model: str, task: str) -> tuple[list[int], list[float]]:
    e = entry(docs, model, task)
    if e is None:
        return [], []
    ns = sorted(int(n) for n in e["lengths"])
    return ns, [e["lengths"][str(n)]["rel_err"]["db"] for n in ns]


def lengths_db(docs: Docs, model: str, task: str) -> dict[str, float]:
    """The error in dB at every scored length, by length."""
    return {str(n): round(v, 2) for n, v in zip(*_lengths(docs, model, task))}


def question1(docs: Docs, out: Path, submissions: Path | None) -> dict[str, Any]:
    """1-layer LSA on linear/kappa1 against one step of GD."""
    align = (entry(docs, Q1_MODEL, Q1_TASK) or {}).get("alignment", {}).get("gd")
    lengths = {}
    for n in get(Q1_TASK).spec.lengths:
        lengths[str(n)] = {
            "model_db": err_db(docs, Q1_MODEL, Q1_TASK, n),
            "gd_step1_db": at_step(steps_db(docs, "gd", Q1_TASK, n), 1),
            "ols_db": err_db(docs, "ols", Q1_TASK, n),
        }
    found: dict[str, Any] = {
        "lengths": lengths,
        "cosine_gd_step1": align["cosine"][0][0] if align else None,
        "closest_gd_step": align["closest_step"][0] if align else None,
        "fitted_one_step": None,
    }
    weights = submissions / Q1_MODEL / "weights.safetensors" if submissions else None
    if weights is not None and weights.exists():
        from iclbench.cache import eval_set
        from iclbench.models.weights import load_weights

        net, _ = load_weights(weights)
        task = get(Q1_TASK)
        found["fitted_one_step"] = one_step_comparison(net.double(), task, eval_set(task)[0], task.spec.nominal)
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for label, key in (("1-layer LSA", "model_db"), ("GD, step 1 (gd baseline's step size)", "gd_step1_db")):
        pts = [(int(n), v[key]) for n, v in lengths.items() if v[key] is not None]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=label)
    if found["fitted_one_step"]:
        fit = found["fitted_one_step"]
        ax.plot([fit["n"]], [fit["gd_db"]], marker="*", markersize=12, linestyle="", label="GD, 1 step, fitted step size")
    ax.set_xscale("log")
    ax.set_xticks([int(n) for n in lengths], list(lengths))
    ax.minorticks_off()
    _label(ax, "prompt length n", f"Q1: {Q1_TASK}")
    _save(fig, out / "q1_one_layer.png")
    return found


def question2(docs: Docs, out: Path) -> dict[str, Any]:
    """Error against depth (models) and steps (gd, newton) on linear/kappa100 at the nominal length."""
    gd, newton = steps_db(docs, "gd", Q2_TASK), steps_db(docs, "newton", Q2_TASK)
    found: dict[str, Any] = {"models": {}, "gd_first": gd[:8] if gd else None, "newton_first": newton[:8] if newton else None}
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for name, curve, style in (("gd", gd, "-"), ("newton", newton, "-")):
        if curve:
            ax.plot(range(1, len(curve) + 1), curve, style, label=name)
    for model in Q2_MODELS:
        curve = steps_db(docs, model, Q2_TASK)
        if curve is None:
            continue
        k = len(curve)
        found["models"][model] = {
            "per_layer_db": [round(v, 2) for v in curve],
            "gd_at_same_steps_db": at_step(gd, k),
            "newton_at_same_steps_db": at_step(newton, k),
            "gd_steps_to_match": steps_to_reach(gd, curve[-1]),
            "newton_steps_to_match": steps_to_reach(newton, curve[-1]),
            "lengths_db": lengths_db(docs, model, Q2_TASK),
        }
        ax.plot(range(1, k + 1), curve, marker="o", label=f"{model} (per layer)")
    ax.set_xscale("log")
    _label(ax, "layer / step", f"Q2: {Q2_TASK}, n = {get(Q2_TASK).spec.nominal}")
    _save(fig, out / "q2_depth.png")
    return found


def question3(docs: Docs, out: Path) -> dict[str, Any]:
    """Lasso transformers, LISTA variants and ISTA on the lasso tasks, at the nominal and other lengths, and the
    transformers' per-layer errors beside the baselines' after as many steps (layers)."""
    models = (*Q3_MODELS, *Q3_BASELINES)
    loops = len(steps_db(docs, next(iter(Q3_MODELS)), "lasso/fixed") or [])
    found: dict[str, Any] = {"nominal_db": {}, "lengths_db": {}, "loops": loops or None, "per_layer_db": {},
                             "at_depth_db": {}}
    for m in models:
        found["nominal_db"][m] = {t: err_db(docs, m, t) for t in Q3_TASKS}
        found["lengths_db"][m] = {t: lengths_db(docs, m, t) for t in Q3_TASKS}
    if loops:
        found["nominal_db"][f"ista ({loops} iterations)"] = {t: at_step(steps_db(docs, "ista", t), loops) for t in Q3_TASKS}
    for m in Q3_MODELS:
        found["per_layer_db"][m] = {t: [round(v, 2) for v in steps_db(docs, m, t) or []] for t in Q3_TASKS}
    if loops:
        found["at_depth_db"] = {b: {t: at_step(steps_db(docs, b, t), loops) for t in Q3_TASKS} for b in Q3_BASELINES}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    rows = [m for m, v in found["nominal_db"].items() if any(x is not None for x in v.values())]
    width = 0.8 / max(len(rows), 1)
    for i, m in enumerate(rows):
        vals = np.array([np.nan if v is None else v for v in (found["nominal_db"][m][t] for t in Q3_TASKS)])
        xs = np.arange(len(Q3_TASKS)) + i * width
        ax1.bar(xs, np.minimum(vals, CLIP_DB), width, label=m, color=f"C{i}")
        for x, v in zip(xs, vals):
            if v > CLIP_DB:
                ax1.annotate(f"{v:.0f}", (x, CLIP_DB), ha="center", va="bottom", fontsize=6)
    ax1.set_xticks(np.arange(len(Q3_TASKS)) + 0.4 - width / 2, [t.split("/")[1] for t in Q3_TASKS])
    ax1.set_ylabel("relative error (dB), nominal n")
    ax1.set_title(f"Q3: lasso matrices (bars cut at {CLIP_DB:g} dB)", fontsize=10)
    _legend(ax1, 7)
    for i, m in enumerate(models):
        for task, style in (("lasso/fixed", "-"), ("lasso/random", "--")):
            ns, vals = _lengths(docs, m, task)
            if ns:
                ax2.plot(ns, np.minimum(vals, CLIP_DB), style, marker="o", color=f"C{i}",
                         label=f"{m}, {task.split('/')[1]}")
    ax2.set_xlabel("prompt length n")
    ax2.set_ylabel(f"relative error (dB, cut at {CLIP_DB:g})")
    ax2.set_title("Q3: prompt lengths (solid: fixed, dashed: random)", fontsize=10)
    _legend(ax2, 6)
    _save(fig, out / "q3_lasso.png")
    return found


def question4(docs: Docs, out: Path) -> dict[str, Any]:
    """Matching against other attention non-linearities on the kernel tasks, within each group."""
    tasks = ("kernel/linear", "kernel/exp", "kernel/relu")
    models = [m for groups in (Q4_MODELS, Q4_WIDE_MODELS) for group in groups.values() for m in group]
    found: dict[str, Any] = {"nominal_db": {}, "per_layer_db": {}}
    for m in (*models, *Q4_BASELINES):
        found["nominal_db"][m] = {t: err_db(docs, m, t) for t in tasks}
    for key, groups in (("best_on_own_task", Q4_MODELS), ("best_on_own_task_wide", Q4_WIDE_MODELS)):
        found[key] = {}
        for task, group in groups.items():
            scored = {m: found["nominal_db"][m][task] for m in group if found["nominal_db"][m][task] is not None}
            found[key][task] = min(scored, key=scored.get) if scored else None
    for task in Q4_MODELS:
        found["per_layer_db"][task] = {m: steps_db(docs, m, task) for m in (*Q4_MODELS[task], *Q4_WIDE_MODELS[task])}
        found["per_layer_db"][task]["gd"] = (steps_db(docs, "gd", task) or [])[:16] or None
    fig, axes = plt.subplots(1, len(Q4_MODELS), figsize=(10, 3.6))
    for ax, task in zip(axes, Q4_MODELS):
        for m, curve in found["per_layer_db"][task].items():
            if curve:
                ax.plot(range(1, len(curve) + 1), curve, marker="o" if m != "gd" else None, label=m)
        gp = found["nominal_db"]["gp-posterior"][task]
        if gp is not None:
            ax.axhline(gp, color="gray", linestyle=":", label="gp-posterior")
        _label(ax, "layer / step", f"Q4: {task}, n = {get(task).spec.nominal}")
    _save(fig, out / "q4_kernel.png")
    return found


def question5(docs: Docs, out: Path, names: list[str]) -> dict[str, Any]:
    """Heatmaps of every alignment stored in the named models' results, at their training task."""
    panels = []
    for name in names:
        doc = docs.get(name)
        if doc is None:
            continue
        for task in sorted(t for t, e in doc["tasks"].items() if e.get("alignment")):
            for ref, align in entry(docs, name, task)["alignment"].items():
                if "cosine" in align:
                    panels.append((name, task, ref, align))
    found = {f"{n} | {t} | {r}": {"n": a["n"], "closest_step": a["closest_step"],
                                  "best_cosine": [round(max(row), 3) for row in a["cosine"]]}
             for n, t, r, a in panels}
    shown = [p for p in panels if p[1] in TRAINED_TASKS.get(p[0], (p[1],))]
    if shown:
        cols = 2
        rows = -(-len(shown) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(11, 2.4 * rows + 0.6), squeeze=False)
        for ax, (name, task, ref, align) in zip(axes.flat, shown):
            heatmap(ax, align, ref, f"{name} on {task} vs {ref}")
        for ax in list(axes.flat)[len(shown):]:
            ax.axis("off")
        _save(fig, out / "q5_alignment.png")
    return found


def question6(docs: Docs, out: Path, submissions: Path | None) -> dict[str, Any]:
    """Causal LSAs trained autoregressively on the ar family against one GD step on the OLS objective."""
    found: dict[str, Any] = {"models": {}, "references": None, "one_step": None, "long_prompts": None}
    for model, task in Q6_MODELS.items():  # errors on every ar task (trained on one), per layer on its own
        curve = steps_db(docs, model, task)
        found["models"][model] = {"task": task, "lengths_db": {t: lengths_db(docs, model, t) for t in Q6_TASKS},
                                  "per_layer_db": None if curve is None else [round(v, 2) for v in curve]}
    present = {m: t for m, t in Q6_MODELS.items() if submissions and (submissions / m / "weights.safetensors").exists()}
    if present:
        from iclbench.cache import eval_set
        from iclbench.models.weights import load_weights

        found["references"], found["one_step"], found["long_prompts"] = {}, {}, {}
        fits: dict[str, dict[int, tuple[EvalSet, float, torch.Tensor, torch.Tensor, list[torch.Tensor]]]] = {}
        for name in dict.fromkeys(present.values()):
            task = get(name)
            data, refs = eval_set(task)[0], {}
            fits[name] = {}
            for n in task.spec.lengths:
                eta, gd = one_step_gd(task, n, data)
                eta2, gd2 = two_gd_steps(task, n, data)
                x, y, xq, target = data.x[:, :n].double(), data.y[:, :n].double(), data.x_query.double(), data.targets[n]
                ols = xq @ torch.linalg.lstsq(x, y).solution  # least squares on the n pairs (minimum norm for n < d)
                refits, refits2 = [], []
                for seed in TUNING_SEEDS:  # both fits of a draw in turn: they share its prompts (`tuning_sample`)
                    refits.append(one_step_gd(task, n, data, seed=seed)[1])
                    refits2.append(metrics.relative_error(two_gd_steps(task, n, data, seed=seed)[1], target)["db"])
                refs[str(n)] = {"eta": _round(eta), "gd_db": round(metrics.relative_error(gd, target)["db"], 2),
                                "two_steps_eta": _round(eta2),
                                "two_steps_db": round(metrics.relative_error(gd2, target)["db"], 2),
                                "two_steps_db_refits": [round(f(refits2), 2) for f in (min, max)],
                                "ols_db": round(metrics.relative_error(ols, target)["db"], 2)}
                fits[name][n] = (data, eta, gd, gd2, refits)
            found["references"][name] = refs
            found["long_prompts"][name] = one_step_long(task)
        for model, name in present.items():
            net = load_weights(submissions / model / "weights.safetensors")[0].double()
            found["one_step"][model] = {str(n): mesa_comparison(net, data, n, *fit) for n, (data, *fit) in fits[name].items()}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, (model, task) in enumerate(Q6_MODELS.items()):
        style = "-" if task == "ar/uniform" else "--"
        if found["one_step"] and model in found["one_step"]:
            comp = found["one_step"][model]
            ns = [int(n) for n in comp]
            for k in range(len(comp[str(ns[0])]["cosine"])):
                label = f"{model}" + (f", layer {k + 1}" if len(comp[str(ns[0])]["cosine"]) > 1 else "")
                ax1.plot(ns, [comp[str(n)]["layers_db"][k] for n in ns], style, marker="o", color=f"C{i + k * 3}",
                         label=label)
                ax2.plot(ns, [comp[str(n)]["cosine"][k] for n in ns], style, marker="o", color=f"C{i + k * 3}",
                         label=label)
        elif found["models"][model]["lengths_db"][task]:
            ns_db = found["models"][model]["lengths_db"][task]
            ax1.plot([int(n) for n in ns_db], list(ns_db.values()), style, marker="o", color=f"C{i}", label=model)
    for task, refs in (found["references"] or {}).items():
        ns = [int(n) for n in refs]
        ax1.plot(ns, [refs[str(n)]["gd_db"] for n in ns], ":" if task == "ar/uniform" else "-.", color="black",
                 label=f"one GD step (fitted), {task}")
        if task == "ar/uniform":
            ax1.plot(ns, [refs[str(n)]["two_steps_db"] for n in ns], ":", color="gray", label=f"two GD steps, {task}")
    _label(ax1, "prompt length n (pairs)", "Q6: ar, error against W x_query")
    ax2.set_xlabel("prompt length n (pairs)")
    ax2.set_ylabel("residual cosine with one GD step")
    ax2.set_title("Q6: alignment with one GD step on the OLS objective", fontsize=10)
    _legend(ax2, 7)
    _save(fig, out / "q6_ar.png")
    return found


def question7(docs: Docs, out: Path) -> dict[str, Any]:
    """The GPT-2-style transformer against least squares and the other linear baselines, at every length."""
    found: dict[str, Any] = {
        "lengths_db": {m: lengths_db(docs, m, Q7_TASK) for m in (Q7_MODEL, *Q7_BASELINES)},
        "per_layer_db": [round(v, 2) for v in steps_db(docs, Q7_MODEL, Q7_TASK) or []] or None,
        "nominal_db": {m: {t: err_db(docs, m, t) for t in Q7_TASKS} for m in (Q7_MODEL, *Q7_BASELINES)},
    }
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for i, m in enumerate((Q7_MODEL, *Q7_BASELINES)):
        ns, vals = _lengths(docs, m, Q7_TASK)
        if ns:
            ax.plot(ns, np.maximum(vals, FLOOR_DB), marker="o" if i == 0 else ".", color=f"C{i}", label=m)
    d = get(Q7_TASK).spec.d
    ax.axvline(d, color="gray", linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ns = list(get(Q7_TASK).spec.lengths)
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.minorticks_off()
    _label(ax, f"prompt length n (dotted: n = d = {d})", f"Q7: {Q7_TASK} (cut at {FLOOR_DB:g} dB)")
    _save(fig, out / "q7_gpt2.png")
    return found


DIVERSITY_TASK = "linear/noisy"
DIVERSITY_MODELS = {
    "16": "lsa-3l-noisy-pool16",
    "256": "lsa-3l-noisy-pool256",
    "4096": "lsa-3l-noisy-pool4096",
    "inf": "lsa-3l-noisy",
}
"""The 3-layer LSAs of the task-diversity question, by the size K of their pool of training tasks (`iclbench train
--task-pool K`; "inf": every training task fresh), all trained alike on linear/noisy."""
DIVERSITY_FLOOR_DB = -20.0
"""Errors below this (the pool's posterior mean on its own tasks, -34 to -116 dB) are drawn at it, their value
written."""


def _db_to(pred: torch.Tensor, reference: torch.Tensor, target: torch.Tensor) -> float:
    """sum (pred - reference)^2 / sum target^2 in dB: how far two predictors are apart, on the target's scale."""
    return round(metrics.db(float(((pred.double() - reference.double()) ** 2).sum() / (target.double() ** 2).sum())), 2)


def diversity_references(task: Task, data: EvalSet, n: int, pool: np.ndarray | None) -> dict[str, torch.Tensor]:
    """The predictions (P, q) at length `n` on `data` of ridge at the task's Bayes penalty (the posterior mean under
    the Gaussian prior of fresh tasks) and, with a `pool`, of the pool's posterior mean (dMMSE) and of the posterior
    mean under a Gaussian prior with the pool's second moment, w ~ N(0, mean_k w_k w_k^T) ("pool_gaussian": the Bayes
    predictor that knows the pool only through its covariance)."""
    from iclbench.baselines.oracles import gaussian_posterior_mean, pool_posterior_mean
    from iclbench.baselines.ridge import apply, bayes_lambda, solve

    x, y, xq = data.x[:, :n], data.y[:, :n], data.x_query
    refs = {"ridge": apply(xq.double(), solve(x, y, bayes_lambda(task.spec)))}
    if pool is not None:
        vectors = torch.from_numpy(pool)
        refs["dmmse"] = pool_posterior_mean(x, y, xq, vectors, task.spec.noise)
        refs["pool_gaussian"] = gaussian_posterior_mean(x, y, xq, vectors.T @ vectors / len(vectors), task.spec.noise)
    return refs


def question8(docs: Docs, out: Path, submissions: Path | None) -> dict[str, Any]:
    """Task diversity (Raventós et al. 2023): the LSAs trained on K tasks, on fresh and on in-pool tasks, against
    ridge (Bayes for fresh tasks), the pool's posterior mean (dMMSE, Bayes for the pool's tasks) and the posterior
    mean under the pool's covariance (`diversity_references`), at the nominal length. With `submissions`, the models'
    checkpoints give how far their predictions are from each reference."""
    from iclbench.cache import eval_set
    from iclbench.models.weights import load_weights

    task = get(DIVERSITY_TASK)
    n = task.spec.nominal
    found: dict[str, Any] = {"task": DIVERSITY_TASK, "n": n, "ridge_fresh_db": None, "models": {}}
    present = {k: m for k, m in DIVERSITY_MODELS.items() if entry(docs, m, DIVERSITY_TASK) is not None}
    fresh = eval_set(task)[0] if present else None
    for k, model in present.items():
        e = entry(docs, model, DIVERSITY_TASK)
        declared = docs[model]["model"].get("task_pool")
        row: dict[str, Any] = {"model": model, "task_pool": declared, "fresh_db": err_db(docs, model, DIVERSITY_TASK)}
        sets = {"fresh": (fresh, None)}
        if declared is not None:
            row["in_pool_db"] = round(e["in_pool"]["lengths"][str(n)]["rel_err"]["db"], 2)
            pool = task.task_pool(declared["size"], declared["seed"])
            sets = {"fresh": (fresh, pool), "in_pool": (task.pool_set(declared["size"], declared["seed"]), pool)}
        weights = submissions / model / "weights.safetensors" if submissions else None
        net = load_weights(weights)[0].double() if weights is not None and weights.exists() else None
        for where, (data, pool) in sets.items():
            refs = diversity_references(task, data, n, pool)
            goal = data.targets[n].double()
            for name, pred in refs.items():
                row[f"{name}_{where}_db"] = round(metrics.relative_error(pred, goal)["db"], 2)
            found["ridge_fresh_db"] = row["ridge_fresh_db"]
            if net is not None:
                mine = per_layer(net, data, n)[:, -1]
                row.update({f"to_{name}_{where}_db": _db_to(mine, pred, goal) for name, pred in refs.items()})
        found["models"][k] = row
    rows = found["models"]
    x_of = {k: (np.log2(int(k)) if k != "inf" else 16.0) for k in rows}
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharex=True)
    for ax, where, title in ((axes[0], "fresh", "fresh tasks (the evaluation set)"),
                             (axes[1], "in_pool", "tasks of the training pool")):
        for key, label, style in ((f"{where}_db", "LSA", "o-"),
                                  (f"ridge_{where}_db", "ridge (Bayes for fresh tasks)", ":"),
                                  (f"dmmse_{where}_db", "dMMSE (Bayes for the pool)", "v--"),
                                  (f"pool_gaussian_{where}_db", "Gaussian prior with the pool's covariance", "s-.")):
            pts = [(x_of[k], r[key]) for k, r in rows.items() if r.get(key) is not None]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, np.maximum(ys, DIVERSITY_FLOOR_DB), style, label=label)
                for x, y in pts:
                    if y < DIVERSITY_FLOOR_DB:  # the pool's posterior mean finds the task: drawn at the floor, labelled
                        ax.annotate(f"{y:.0f}", (x, DIVERSITY_FLOOR_DB), textcoords="offset points", xytext=(0, 5),
                                    ha="center", fontsize=7)
        ticks = sorted(x_of.values())
        ax.set_xticks(ticks, ["∞" if t == 16.0 else f"2^{int(t)}" for t in ticks])
        _label(ax, "tasks in the training pool K", f"{DIVERSITY_TASK}, n = {n}: {title}")
    _save(fig, out / "q8_diversity.png")
    return found


def question9(out: Path, submissions: Path | None) -> dict[str, Any]:
    """The GPT-2 trained at d = 5 on linear/noisy against least squares and ridge at that dimension (the Bayes
    predictor there, penalty noise^2 d), on `Q9_PROMPTS` prompts drawn at d = 5, at the task's lengths scaled to
    it; with `submissions`, the model's errors from its checkpoint (in float64), else None."""
    from iclbench.baselines.ridge import apply, bayes_lambda, solve
    from iclbench.models.weights import load_weights
    from iclbench.training import lengths_at

    task = get(Q9_TASK)
    lengths, nominal = lengths_at(task.spec, Q9_DIMS)
    sample = task.sample(Q9_PROMPTS, max(lengths), task.train_generator(Q9_SEED), dims=Q9_DIMS)
    data, target = sample.batch, sample.target.double()
    weights = submissions / Q9_MODEL / "weights.safetensors" if submissions else None
    net = load_weights(weights)[0].double() if weights is not None and weights.exists() else None
    penalty = bayes_lambda(task.in_dimension(Q9_DIMS))
    rows: dict[str, dict[str, float | None]] = {}
    for n in lengths:
        x, y, x_query = data.x[:, :n], data.y[:, :n], data.x_query.double()
        preds = {"ols": apply(x_query, solve(x, y, 0.0)), "ridge": apply(x_query, solve(x, y, penalty))}
        if net is not None:
            preds["model"] = per_layer(net, data, n)[:, -1]
        rows[str(n)] = {f"{k}_db": round(metrics.relative_error(preds[k], target)["db"], 2) if k in preds else None
                        for k in ("model", "ols", "ridge")}
    past = [r for n, r in rows.items() if int(n) >= 2 * Q9_DIMS]
    gaps = [r["model_db"] - r["ols_db"] for r in past if r["model_db"] is not None]
    found: dict[str, Any] = {
        "task": Q9_TASK, "d": Q9_DIMS, "prompts": Q9_PROMPTS, "seed": Q9_SEED, "nominal": nominal,
        "ridge_penalty": penalty, "lengths": rows,
        "worst_gap_to_ols_db": round(max(gaps), 2) if gaps else None,
        "within_gap": (max(gaps) <= Q9_GAP_DB) if gaps else None,
    }
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for i, (key, label) in enumerate((("model_db", Q9_MODEL), ("ols_db", "least squares (minimum norm below d)"),
                                      ("ridge_db", f"ridge, penalty {penalty:g} (Bayes at d = {Q9_DIMS})"))):
        pts = [(int(n), r[key]) for n, r in rows.items() if r[key] is not None]
        if pts:
            ns, vals = zip(*pts)
            ax.plot(ns, np.minimum(vals, CLIP_DB), marker="o" if i == 0 else ".", color=f"C{i}", label=label)
            for n, v in pts:
                if v > CLIP_DB:  # least squares at n = d: drawn at the clip, its value written
                    ax.annotate(f"{v:+.0f}", (n, CLIP_DB), textcoords="offset points", xytext=(6, -4), fontsize=7)
    ax.axvline(Q9_DIMS, color="gray", linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.set_xticks(list(lengths), [str(n) for n in lengths])
    ax.minorticks_off()
    _label(ax, f"prompt length n (dotted: n = d = {Q9_DIMS})", f"Q9: {Q9_TASK} at d = {Q9_DIMS}")
    _save(fig, out / "q9_gpt2_d5.png")
    return found


def build(submissions: Path, baselines: Path, out: Path, checkpoints: bool = True) -> dict[str, Any]:
    """Write the figures and numbers.json to `out`; return the numbers."""
    out.mkdir(parents=True, exist_ok=True)
    docs = load(submissions, baselines)
    numbers = {
        "inputs": {"submissions": submissions.as_posix(), "baselines": baselines.as_posix(), "models": sorted(docs)},
        "q1": question1(docs, out, submissions if checkpoints else None),
        "q2": question2(docs, out),
        "q3": question3(docs, out),
        "q4": question4(docs, out),
        "q5": question5(docs, out, sorted(TRAINED_TASKS)),
        "q6": question6(docs, out, submissions if checkpoints else None),
        "q7": question7(docs, out),
        "q8": question8(docs, out, submissions if checkpoints else None),
        "q9": question9(out, submissions if checkpoints else None),
    }
    (out / "numbers.json").write_text(json.dumps(numbers, indent=1) + "\n")
    return numbers


INPUTS = ("inputs", "submissions"), ("inputs", "baselines"), ("inputs", "models")
"""Fields of numbers.json that name the inputs, not compared: the folders as given on the command line, and the
models found there (every baseline or submission added changes the list; each number read from a model is
compared where it stands)."""


def compare(built: Any, committed: Any, where: tuple[str, ...] = ()) -> list[str]:
    """Differences between two numbers.json documents, one line each: floats must agree as a re-run's
    errors in dB do (`iclbench.submissions.rerun.db_close`: within `TOL_DB`, or both under float32's
    round-off floor), everything else exactly; the inputs (`INPUTS`) are not compared."""
    at = "/".join(where) or "numbers.json"
    if where in INPUTS:
        return []
    if isinstance(built, dict) and isinstance(committed, dict):
        keys = dict.fromkeys([*committed, *built])
        return [p for k in keys for p in compare(built.get(k), committed.get(k), (*where, str(k)))]
    if isinstance(built, list) and isinstance(committed, list) and len(built) == len(committed):
        return [p for i, (a, b) in enumerate(zip(built, committed)) for p in compare(a, b, (*where, str(i)))]
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (built, committed))
    if numbers and any(isinstance(v, float) for v in (built, committed)):
        same = db_close(float(built), float(committed), "float32")
    else:
        same = built == committed and type(built) is type(committed)
    return [] if same else [f"{at}: built {json.dumps(built)[:80]}, committed {json.dumps(committed)[:80]}"]


def check(submissions: Path, baselines: Path, out: Path) -> list[str]:
    """Differences between numbers.json rebuilt (in a temporary folder) and the one in `out`."""
    import tempfile

    committed = json.loads((out / "numbers.json").read_text())
    with tempfile.TemporaryDirectory(prefix="iclbench-findings-") as tmp:
        return compare(build(submissions, baselines, Path(tmp)), committed)


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m iclbench.leaderboard.findings`."""
    p = argparse.ArgumentParser(prog="python -m iclbench.leaderboard.findings", description=__doc__.split("\n\n")[0])
    p.add_argument("--submissions", type=Path, default=Path("submissions"), help="folder of submission folders")
    p.add_argument("--baselines", type=Path, default=Path("results/baselines"), help="folder of baseline results")
    p.add_argument("--out", type=Path, default=Path("docs/findings"), help="folder for the figures and numbers.json")
    p.add_argument("--no-checkpoints", action="store_true", help="results files only (skip question 1's re-evaluation)")
    p.add_argument(
        "--check",
        action="store_true",
        help=f"write nothing; fail if a number of --out's numbers.json is not rebuilt (floats within {TOL_DB} dB)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if args.check and args.no_checkpoints:
        p.error("--check rebuilds every number, question 1's re-evaluation included: leave out --no-checkpoints")
    try:
        if args.check:
            differences = check(args.submissions, args.baselines, args.out)
            for line in differences:
                print(f"findings: {line}", file=sys.stderr)
            print(f"{args.out / 'numbers.json'}: {f'{len(differences)} number(s) differ' if differences else 'rebuilt'}")
            return 1 if differences else 0
        build(args.submissions, args.baselines, args.out, checkpoints=not args.no_checkpoints)
    except (results.ResultsError, OSError, json.JSONDecodeError) as exc:
        print(f"findings: {exc}", file=sys.stderr)
        return 2
    print(f"figures and numbers.json written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
