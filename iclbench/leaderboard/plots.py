"""The leaderboard's plots (matplotlib, SVG files loaded on demand by the page), drawn from the site summary and the
per-model detail files: per task (error against prompt length, against steps), the lasso matrix shift, per model.

The y-axis of a plot is fitted to the ranked models it shows: reference models (exact solvers, oracles), errors
below a task's round-off floor and above `CEILING_DB` do not stretch it; a point outside the range is drawn on the axis edge with a
triangle, and its series is labelled "(clipped)". Series vary in colour, line style and marker, so that more than
ten stay apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from iclbench.tasks import TASKS  # noqa: E402

STYLE = {"svg.hashsalt": "iclbench", "svg.fonttype": "none", "font.size": 9, "axes.grid": True, "grid.alpha": 0.3}
COLOURS = plt.get_cmap("tab10").colors
LINESTYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "D", "^", "v", "P", "X", "*", "<", ">", "h")
LASSO_SHIFT_ORDER = ("fixed", "shift", "random")
CEILING_DB = 20.0
"""Errors above this do not stretch a plot's y-axis either (a model that blows up on one prompt length)."""

Series = tuple[str, list[float], list[float], str]
"""(label, xs, ys, kind) of one curve."""


def file_name(stem: str) -> str:
    """The SVG file name of a plot: task names' '/' becomes '--'."""
    return stem.replace("/", "--") + ".svg"


def style(i: int) -> dict[str, Any]:
    """The i-th series' look: ten colours, then the next line style, with a marker that changes too."""
    return {
        "color": COLOURS[i % len(COLOURS)],
        "ls": LINESTYLES[(i // len(COLOURS)) % len(LINESTYLES)],
        "marker": MARKERS[i % len(MARKERS)],
    }


def limits(series: list[Series], floor: float) -> tuple[float, float]:
    """The y range: the span of the non-reference series (values kept within `floor` and `CEILING_DB`), padded."""
    ranked = [min(max(v, floor), CEILING_DB) for _, _, ys, kind in series if kind != "reference" for v in ys]
    vals = ranked or [min(max(v, floor), CEILING_DB) for _, _, ys, _ in series for v in ys]
    lo, hi = min(vals), max(vals)
    pad = max(0.06 * (hi - lo), 1.0)
    return lo - pad, hi + pad


def _draw(ax: Any, series: list[Series], floor: float, legend: bool = True) -> None:
    """Plot every series with its own style on a y range from `limits`, outside points on the edges."""
    lo, hi = limits(series, floor)
    for i, (label, xs, ys, kind) in enumerate(series):
        outside = [(x, lo if y < lo else hi) for x, y in zip(xs, ys) if not lo <= y <= hi]
        below = [(x, y) for x, y in outside if y == lo]
        s = style(i)
        ax.plot(
            xs,
            [min(max(y, lo), hi) for y in ys],
            label=label + (" (clipped)" if outside else ""),
            lw=1.8 if kind == "submission" else 1.0,
            ms=4 if kind == "submission" else 3,
            alpha=0.7 if kind == "reference" else 1.0,
            **s,
        )
        for points, marker in ((below, "v"), ([p for p in outside if p[1] == hi], "^")):
            if points:
                ax.scatter(*zip(*points), marker=marker, color=s["color"], s=36, zorder=3, clip_on=False)
    if lo < floor < hi:
        ax.axhline(floor, color="0.5", lw=0.8, ls=":")
        ax.annotate("round-off floor", (0.99, floor), xycoords=("axes fraction", "data"), ha="right", va="bottom",
                    fontsize=7, color="0.4")
    ax.set_ylim(lo, hi)
    if legend and series:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False,
                  ncol=2 if len(series) > 24 else 1)


def _save(fig: Any, folder: Path, name: str) -> str:
    fig.savefig(folder / name, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return f"{folder.name}/{name}"


def _axes(xlabel: str, title: str, log_x: bool = False) -> tuple[Any, Any]:
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("error (dB)")
    ax.set_title(title)
    if log_x:
        ax.set_xscale("log")
    return fig, ax


def _lengths(m: dict[str, Any], task: str) -> tuple[list[float], list[float]]:
    pts = sorted((int(n), v["db"]) for n, v in (m["tasks"].get(task) or {}).get("by_length", {}).items())
    return [n for n, _ in pts], [v for _, v in pts]


def _steps(detail: dict[str, Any], task: str, n: int) -> tuple[list[float], list[float]]:
    curve = detail["steps"].get(task, {}).get(str(n))
    return (curve["step"], curve["db"]) if curve else ([], [])


def no_plots() -> dict[str, Any]:
    """`draw`'s answer when no plot is drawn."""
    return {"task": {}, "steps": {}, "lasso_shift": None, "model": {}, "model_steps": {}}


def draw(site: dict[str, Any], details: dict[str, dict[str, Any]], folder: Path) -> dict[str, Any]:
    """Draw every plot into `folder`; return their paths relative to its parent, by kind.

    Kinds: "task" and "steps" (by task), "lasso_shift", "model" and "model_steps" (by model key). Models cut at a
    step budget are drawn within their full model's curves, not on their own.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.svg"):
        old.unlink()
    models = [m for m in site["models"] if m["budget_steps"] is None]
    out = no_plots()
    with plt.rc_context(STYLE):
        for task, info in site["tasks"].items():
            series = [(m["name"], *_lengths(m, task), m["kind"]) for m in models]
            series = [s for s in series if s[1]]
            if series:
                fig, ax = _axes("prompt length n (dotted: nominal)", f"{task}: error against prompt length")
                _draw(ax, series, info["floor_db"])
                ax.axvline(info["nominal"], color="0.6", lw=0.8, ls=":")
                out["task"][task] = _save(fig, folder, file_name(f"task-{task}"))
            series = [(m["name"], *_steps(details[m["key"]], task, info["nominal"]), m["kind"]) for m in models]
            series = [s for s in series if s[1]]
            if series:
                fig, ax = _axes("steps / layers", f"{task} (n={info['nominal']}): error against steps", log_x=True)
                _draw(ax, series, info["floor_db"])
                out["steps"][task] = _save(fig, folder, file_name(f"steps-{task}"))
        out["lasso_shift"] = _lasso_shift(site, models, folder)
        for m in models:
            out["model"][m["key"]], out["model_steps"][m["key"]] = _model(site, m, details[m["key"]], folder)
    return out


def _lasso_shift(site: dict[str, Any], models: list[dict[str, Any]], folder: Path) -> str | None:
    """Nominal error against the shift of the measurement matrix: fixed (0), shifted, and a fresh random matrix."""
    lasso = sorted(
        (t for t in TASKS.values() if t.spec.family == "lasso" and t.spec.name in site["tasks"]),
        key=lambda t: (LASSO_SHIFT_ORDER.index(t.spec.params["mode"]), t.spec.params["shift"]),
    )
    series = []
    for m in models:
        pts = [(i, (m["tasks"].get(t.spec.name) or {}).get("db")) for i, t in enumerate(lasso)]
        pts = [(i, v) for i, v in pts if v is not None]
        if pts:
            series.append((m["name"], [i for i, _ in pts], [v for _, v in pts], m["kind"]))
    if not series:
        return None
    fig, ax = _axes("shift of the measurement matrix from the training one", "lasso: error against matrix shift")
    _draw(ax, series, min(site["tasks"][t.spec.name]["floor_db"] for t in lasso))
    labels = ["random" if t.spec.params["mode"] == "random" else f"{t.spec.params['shift']:g}" for t in lasso]
    ax.set_xticks(range(len(lasso)), labels)
    return _save(fig, folder, "lasso-shift.svg")


def _model(site: dict[str, Any], m: dict[str, Any], detail: dict[str, Any], folder: Path
           ) -> tuple[str | None, str | None]:
    """A model's own plots: error against prompt length in each family it is scored on, and against steps if it
    reports them (None for a plot with nothing to show)."""
    fams = {f: tasks for f, tasks in site["families"].items() if any(_lengths(m, t)[0] for t in tasks)}
    main = None
    if fams:
        fig, axes = plt.subplots(1, len(fams), figsize=(3.2 * max(len(fams), 2), 2.8), squeeze=False)
        for ax, (fam, tasks) in zip(axes[0], fams.items()):
            ax.set_title(fam)
            ax.set_xlabel("prompt length n")
            series = [(task.split("/", 1)[-1], *_lengths(m, task), m["kind"]) for task in tasks]
            _draw(ax, [s for s in series if s[1]], min(site["tasks"][t]["floor_db"] for t in tasks), legend=False)
            ax.legend(fontsize=7, frameon=False)
        axes[0][0].set_ylabel("error (dB)")
        fig.suptitle(f"{m['name']}: error against prompt length", y=1.06)
        main = _save(fig, folder, file_name(f"model-{m['key']}"))
    series = [(t, *_steps(detail, t, info["nominal"]), m["kind"]) for t, info in site["tasks"].items()]
    series = [s for s in series if s[1]]
    if not series:
        return main, None
    fig, ax = _axes("steps / layers (nominal prompt length)", f"{m['name']}: error against steps", log_x=True)
    _draw(ax, series, min(site["tasks"][s[0]]["floor_db"] for s in series))
    return main, _save(fig, folder, file_name(f"model-{m['key']}-steps"))
