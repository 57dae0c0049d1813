"""The leaderboard's plots (matplotlib, SVG): per task, per model, against steps, and the lasso matrix shift."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from iclbench.tasks import TASKS  # noqa: E402

if TYPE_CHECKING:
    from iclbench.leaderboard.ranking import Entry

STYLE = {"svg.hashsalt": "iclbench", "svg.fonttype": "none", "font.size": 9, "axes.grid": True, "grid.alpha": 0.3}
LASSO_SHIFT_ORDER = ("fixed", "shift", "random")
DENSE_STEPS = 16
SPARSE_POINTS = 40
"""Steps curves show every step up to DENSE_STEPS, then SPARSE_POINTS log-spaced ones."""


def _file(stem: str) -> str:
    return stem.replace("/", "--") + ".svg"


def _save(fig: Any, folder: Path, name: str) -> str:
    fig.savefig(folder / name, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return name


def _line(ax: Any, e: Entry, xs: list[float], ys: list[float], label: str | None = None) -> None:
    sub = e.kind == "submission"
    ax.plot(xs, ys, marker="o" if sub else ".", ls="-" if sub else "--", lw=1.8 if sub else 1.0, label=label or e.name)


def _finish(ax: Any, xlabel: str, title: str, legend: bool = True) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel("error (dB)")
    ax.set_title(title)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)


def _length_curve(e: Entry, task: str) -> tuple[list[int], list[float]]:
    t = e.results["tasks"].get(task, {})
    pts = (
        sorted((int(n), m["rel_err"]["db"]) for n, m in t.get("lengths", {}).items()) if t.get("status") == "ok" else []
    )
    return [n for n, _ in pts], [v for _, v in pts]


def _steps_curve(e: Entry, task: str) -> tuple[list[int], list[float]]:
    """Error against steps at the nominal length: every step up to `DENSE_STEPS`, then log-spaced ones
    (and the last), so that curves of a thousand steps draw light on a log axis."""
    t = e.results["tasks"].get(task, {})
    m = t.get("lengths", {}).get(str(TASKS[task].spec.nominal), {}) if t.get("status") == "ok" else {}
    ys = m.get("steps_rel_err_db", [])
    sparse = np.geomspace(DENSE_STEPS, len(ys), SPARSE_POINTS).round().astype(int) if len(ys) > DENSE_STEPS else []
    xs = sorted({*range(1, min(len(ys), DENSE_STEPS) + 1), *map(int, sparse)})
    return xs, [ys[k - 1] for k in xs]


def draw(entries: list[Entry], folder: Path) -> dict[str, Any]:
    """Draw every plot into `folder`; return the file names by kind.

    Kinds: "task" and "steps" (by task), "lasso_shift", "model" and "model_steps" (by entry key).
    """
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.svg"):
        old.unlink()
    models = [e for e in entries if e.budget is None]
    out: dict[str, Any] = {"task": {}, "steps": {}, "lasso_shift": None, "model": {}, "model_steps": {}}
    with plt.rc_context(STYLE):
        for task, t in TASKS.items():
            fig, ax = plt.subplots(figsize=(6.4, 3.4))
            for e in models:
                xs, ys = _length_curve(e, task)
                if xs:
                    _line(ax, e, xs, ys)
            ax.axvline(t.spec.nominal, color="0.6", lw=0.8, ls=":")
            _finish(ax, "prompt length n (dotted: nominal)", f"{task}: error against prompt length")
            out["task"][task] = _save(fig, folder, _file(f"task-{task}"))
            stepped = [(e, curve) for e in models if (curve := _steps_curve(e, task))[0]]
            if stepped:
                fig, ax = plt.subplots(figsize=(6.4, 3.4))
                for e, (xs, ys) in stepped:
                    _line(ax, e, xs, ys)
                ax.set_xscale("log")
                _finish(ax, "steps / layers", f"{task} (n={t.spec.nominal}): error against steps")
                out["steps"][task] = _save(fig, folder, _file(f"steps-{task}"))
        out["lasso_shift"] = _lasso_shift(models, folder)
        for e in models:
            out["model"][e.key], out["model_steps"][e.key] = _model(e, folder)
    return out


def _lasso_shift(models: list[Entry], folder: Path) -> str:
    """Nominal error against the shift of the measurement matrix: fixed (0), shifted, and a fresh random matrix."""
    lasso = sorted(
        (t for t in TASKS.values() if t.spec.family == "lasso"),
        key=lambda t: (LASSO_SHIFT_ORDER.index(t.spec.params["mode"]), t.spec.params["shift"]),
    )
    labels = ["random" if t.spec.params["mode"] == "random" else f"{t.spec.params['shift']:g}" for t in lasso]
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    for e in models:
        pts = [(i, e.scores[t.spec.name]) for i, t in enumerate(lasso) if e.scores.get(t.spec.name) is not None]
        if pts:
            _line(ax, e, [i for i, _ in pts], [v for _, v in pts])
    ax.set_xticks(range(len(lasso)), labels)
    _finish(ax, "shift of the measurement matrix from the training one", "lasso: error against matrix shift")
    return _save(fig, folder, "lasso-shift.svg")


def _model(e: Entry, folder: Path) -> tuple[str, str | None]:
    """A model's own plots: error against prompt length per family, and against steps if it reports them."""
    families = list(dict.fromkeys(t.spec.family for t in TASKS.values()))
    fig, axes = plt.subplots(1, len(families), figsize=(3.2 * len(families), 2.8), squeeze=False)
    for ax, fam in zip(axes[0], families):
        for task in (n for n, t in TASKS.items() if t.spec.family == fam):
            xs, ys = _length_curve(e, task)
            if xs:
                ax.plot(xs, ys, marker=".", label=task.split("/", 1)[1])
        _finish(ax, "prompt length n", fam, legend=False)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, frameon=False)
        else:
            ax.text(0.5, 0.5, "not supported", transform=ax.transAxes, ha="center", va="center", color="0.4")
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"{e.name}: error against prompt length", y=1.06)
    main = _save(fig, folder, _file(f"model-{e.key}"))
    curves = {task: curve for task in TASKS if (curve := _steps_curve(e, task))[0]}
    if not curves:
        return main, None
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    for task, (xs, ys) in curves.items():
        ax.plot(xs, ys, marker=".", label=task)
    ax.set_xscale("log")
    _finish(ax, "steps / layers (nominal prompt length)", f"{e.name}: error against steps")
    return main, _save(fig, folder, _file(f"model-{e.key}-steps"))
