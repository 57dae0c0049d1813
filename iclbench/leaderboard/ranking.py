"""The ranking rule: which rows are ranked, how results become scores, rank ranges, and the per-task columns.

Rows. A submission is ranked, unless its latest fresh-draw verification failed (shown, marked, not ranked);
one not yet verified is ranked and marked. Baselines are split by what they compute: `REFERENCES` (the exact
solvers and oracles) and the iterative `SOLVERS` run to convergence are reference lines, shown and never
ranked; `COMPARATORS`, gd, ista, fista, newton and newton3 given a budget of 1, 4 or 16 steps (steps = layers,
each budget with the step tuned for it: `iclbench.baselines.budgeted`), are ranked; so is every other
baseline (averaging, the learned LISTA variants). For each other depth a submission reports per-layer errors
at, the tuned solvers and newton appear cut at that depth (`CUT_FROM`), shown and not ranked.

Scores (`RANKING_RULE`, printed on the page). At each prompt length n of a task, the error in dB, raised to the
round-off floor of the run's dtype, is placed between two levels that no ranked model moves: 0 dB (the zero
predictor) and the task's reference level at n (`iclbench.leaderboard.levels`: the best exact reference, raised
to float32's floor). The cell score is the fraction of that gap closed on the dB (log) scale, clipped to
[0, 1]: error / level. A task's score is the mean over all its prompt lengths (each weighs the same; a length
not scored counts 0); a family's score is the mean over its tasks (a task not scored counts 0), for every
ranked model scored on at least one of them. A score depends on the model's own errors alone: adding or
removing other models never moves it, and declaring a task or length unsupported never raises it.

Resolution. Every model run with per-prompt samples (`iclbench run --log-samples`, which CI does for every row)
has paired bootstrap replicates of each score (`iclbench.metrics.replicates`: the same resampled prompts for
every model). Two models are told apart on a family (or task) only where the 90 % interval of the paired
difference of their scores excludes 0; otherwise, and where either has no samples, they tie. A model's rank is
a range, as Chatbot Arena's: from 1 + the number of models told apart above it to the pool's size minus the
number told apart below it. Rows are listed by score; equal scores by name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from iclbench.baselines.budgeted import COMPARATOR_BUDGETS, MAX_BUDGET, OPTIMIZERS
from iclbench.leaderboard.levels import levels
from iclbench.metrics import BOOTSTRAP_RESAMPLES, interval
from iclbench.submissions.rerun import FLOOR_DB
from iclbench.tasks import TASKS

FAMILIES = tuple(dict.fromkeys(t.spec.family for t in TASKS.values()))
"""The families, each scored and ranked apart."""
FAMILY_TASKS = {fam: tuple(n for n, t in TASKS.items() if t.spec.family == fam) for fam in FAMILIES}
REFERENCES = {
    "zero": "predicts 0: the 0 dB line",
    "ridge": "exact ridge with the Bayes penalty: the Bayes-optimal predictor of the linear tasks",
    "ols": "exact minimum-norm least squares",
    "lasso-exact": "the exact lasso solution ISTA and FISTA converge to",
    "logistic-optimum": "the regularised logistic optimum, from which the logistic target is made",
    "gp-posterior": "the GP posterior mean: the Bayes-optimal predictor of the kernel tasks; on garg/relu2nn, under "
    "the network's covariance, the best predictor linear in the labels",
    "true-w": "W x_query with the true W: the ar tasks' target itself (error 0 up to round-off)",
    "noise-oracle": "ridge at each prompt's own Bayes penalty, from its hidden noise level (select/noise-mix)",
    "select-bayes": "the Bayes-optimal predictor of the select tasks, from the prompt alone",
    "garg-bayes": "the Bayes-optimal predictor of garg/sparse-linear, decision-tree and quadratic, from the prompt "
    "alone",
}
"""Baselines that are reference lines: exact solvers and oracles, shown and never ranked."""
SOLVERS = ("gd", "newton", "newton3", "ista", "fista")
"""Iterative baselines run to convergence (1,024 steps; newton 64, newton3 41): reference lines at their last
step, never ranked."""
BUDGETS = COMPARATOR_BUDGETS
"""Step budgets of the ranked comparators (steps = layers)."""
COMPARATORS = tuple(f"{s}@{k}" for s in (*OPTIMIZERS, "newton", "newton3") for k in BUDGETS)
"""The ranked comparators (`iclbench.baselines.budgeted`): k steps of gd, ista and fista at the step tuned for
exactly k steps, and the first k steps of newton and newton3."""
CUT_FROM = tuple(f"{s}@{MAX_BUDGET}" for s in (*OPTIMIZERS, "newton", "newton3"))
"""The comparators whose per-step curves give the unranked cuts at a submission's other depths: step k of
`gd@16` is k steps at the step tuned for k, the same as a `gd@k` would run."""
DEPTH_SOLVERS = {"gd": ("gd@16", "gd"), "newton": ("newton",), "ista": ("ista@16", "ista")}
"""The optimizers an optimizer-equivalent depth is counted in, and the per-step curves that count it: the first's
steps, then the next one's beyond them (16 steps each at the step tuned for that many, then the solver's own
1,024-step run)."""
LIMITS = {
    "gd": {"linear": "ols", "ar": "ols", "logistic": "logistic-optimum", "kernel": "gp-posterior"},
    "newton": {"linear": "ridge", "logistic": "logistic-optimum", "kernel": "gp-posterior"},
    "ista": {"linear": "ols", "lasso": "lasso-exact", "garg": "lasso-exact"},
}
"""The reference each depth solver converges to, by family: from 0, GD and ISTA with lambda = 0 reach the
minimum-norm least-squares solution, ISTA on the lasso the exact lasso solution, Newton the ridge solution,
functional GD and Newton on the Gram matrix the minimum-norm interpolant (the noiseless GP posterior mean)."""
KINDS = {
    "submission": "submission",
    "baseline": "baseline",
    "comparator": "ranked comparator",
    "cut": "cut at a submission's depth, not ranked",
    "reference": "reference line, never ranked",
}
"""Row kinds and how the page names them."""
LASSO_FIXED, LASSO_SHIFTED = "lasso/fixed", {"shift0.1": "lasso/shift0.1", "shift0.5": "lasso/shift0.5", "random": "lasso/random"}
FINDINGS_LINK = "../docs/findings.md"
"""Where the findings page lies, relative to the leaderboard folder."""

RANKING_RULE = (
    "Exact solvers and oracles (ridge, ols, lasso-exact, gp-posterior, logistic-optimum, select-bayes, garg-bayes, "
    "true-w, noise-oracle, zero) are reference lines, never ranked; so are the iterative solvers run to "
    "convergence (gd, newton, newton3, ista, fista and their tuned versions), which converge onto them. Ranked "
    "comparators: gd, ista and fista given a budget of "
    f"{', '.join(map(str, BUDGETS))} steps (steps = layers), each budget with its own step, tuned for exactly that "
    "many steps on the training stream, and newton and newton3 cut at those steps; the same, cut at each "
    "submission's other depths, are shown unranked. Submissions and the other baselines are ranked, except a "
    "submission whose latest fresh-draw verification failed: it is shown, marked, and not ranked; one not yet "
    "verified is ranked and marked. "
    "Score: at every prompt length of a task, the error in dB (raised to the round-off floor of the run's dtype: "
    f"{FLOOR_DB['float32']:.1f} dB in float32) closes a fraction of the gap between 0 dB, the zero predictor, and "
    "the task's reference level at that length, the best exact reference's error raised to float32's floor "
    "(ridge, ols, lasso-exact, logistic-optimum, gp-posterior, select-bayes or garg-bayes; pinned, so no ranked "
    "model moves it): the fraction is error / level, clipped to 0..1, so a divergence costs the whole length and "
    "no more. A task's score is the mean over all its prompt lengths, each weighing the same; a family's, the "
    "mean over its tasks; a length or task not scored counts 0, so declaring it unsupported never helps. A score "
    "depends on the model's "
    "own errors alone: adding models never moves it. Every ranked model scored on a task of a family is in the "
    "family's ranking; families are ranked apart (their tasks differ), so there is no overall rank. "
    "Resolution: two models are told apart only where the 90 % interval of the paired bootstrap difference of "
    "their scores (the same resampled prompts for both, from per-prompt errors CI scores itself) excludes 0; "
    "otherwise they tie. A rank is a range: from 1 + the number of models told apart above to the pool's size "
    "minus the number told apart below. Rows are listed by score. The worst length is the family's lowest score "
    "at one prompt length, mean over its tasks that have that length."
)

_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")

RANKING_EXAMPLE = (
    "lsa-4l-kappa100, a 4-layer LSA trained on linear/kappa100, on the linear family. On linear/kappa100 its errors "
    "are +197.9 dB at n = 5 and +83.9 dB at n = 10, then -10.03, -13.61 and -15.58 dB at n = 20, 40 and 80; the "
    "reference levels there are -2.82, -6.42, -85.87, -138.47 and -138.47 dB (ols, raised to float32's floor), so "
    "its cell scores are 0.00, 0.00, 11.69, 9.83 and 11.25 %: a task score of 6.55 %, where the nominal length "
    "alone would give 9.83 %. Its task scores are linear/kappa1 32.18 %, linear/kappa10 24.28 %, linear/kappa100 "
    "6.55 % and linear/noisy 71.32 %: a linear score of 33.58 %, one of 25 models ranked in the family."
)
"""A worked example of `RANKING_RULE` on the results of the committed submissions (checked in
tests/test_ranking.py)."""

Range = tuple[int, int]


@dataclass
class Entry:
    """One row of the leaderboard: a submission, a baseline, a baseline cut at a step budget, or a reference."""

    key: str
    name: str
    kind: str
    """One of `KINDS`."""
    results: dict[str, Any]
    meta: dict[str, Any]
    command: str
    budget: int | None = None
    """A solver cut at this many steps."""
    ranked: bool = True
    """False for references, cuts at a submission's own depth and submissions whose verification failed."""
    verification: str = "–"
    """A submission's fresh-draw verification (`iclbench.submissions.verify.status`); "–" for baselines."""
    boot: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)
    """Bootstrap replicates in dB of every scored (task, length), paired across entries, centred on the error the
    results file records; empty without per-prompt samples."""
    scores: dict[str, float | None] = field(default_factory=dict)
    """Error at each task's nominal length in dB (unfloored); None where not scored."""
    task_scores: dict[str, float | None] = field(default_factory=dict)
    """Score in percent on each task; None where not scored."""
    task_ranks: dict[str, Range | None] = field(default_factory=dict)
    family_scores: dict[str, float | None] = field(default_factory=dict)
    """Score in percent on each family; None where no task of it is scored."""
    family_ranks: dict[str, Range | None] = field(default_factory=dict)
    length_scores: dict[str, dict[int, float]] = field(default_factory=dict)
    """Per family, its score in percent at each prompt length (mean over its tasks that have that length); empty
    where not scored."""

    @property
    def max_steps(self) -> int:
        """The longest per-step error curve the model reports (0 when it reports none)."""
        return max(map(len, (m.get("steps_rel_err_db", []) for _, _, m in _lengths(self))), default=0)

    @property
    def depths(self) -> set[int]:
        """The lengths of the per-layer curves the model reports at nominal prompt lengths."""
        return {len(c) for t in TASKS if (c := steps_curve(self, t))}

    @property
    def floor_db(self) -> float:
        return FLOOR_DB[self.results["run"]["dtype"]]


class LeaderboardError(ValueError):
    """Inputs the leaderboard cannot be built from: the message lists every problem."""


def _lengths(entry: Entry) -> list[tuple[str, int, dict[str, Any]]]:
    """(task, n, metrics) for every scored length of every task."""
    return [
        (name, int(n), m)
        for name, t in entry.results["tasks"].items()
        if t.get("status") == "ok"
        for n, m in t.get("lengths", {}).items()
    ]


def length_metrics(entry: Entry, task: str, n: int | None = None) -> dict[str, Any] | None:
    """The metrics of `entry` on `task` at length `n` (default: nominal); None when not scored there."""
    t = entry.results["tasks"].get(task, {})
    if t.get("status") != "ok":
        return None
    return t.get("lengths", {}).get(str(TASKS[task].spec.nominal if n is None else n))


def steps_curve(entry: Entry, task: str, n: int | None = None) -> list[float] | None:
    """The per-step (per-layer) error curve in dB at length `n` (default: nominal), or None."""
    m = length_metrics(entry, task, n)
    return m.get("steps_rel_err_db") if m else None


def length_db(entry: Entry, task: str, n: int | None = None) -> float | None:
    """The error in dB at length `n` (default: nominal): a cut row's error after its budget; None when not scored."""
    m = length_metrics(entry, task, n)
    if m is None:
        return None
    if entry.budget is not None and m.get("steps_rel_err_db"):
        steps = m["steps_rel_err_db"]
        return steps[min(entry.budget, len(steps)) - 1]
    return m["rel_err"]["db"]


def nominal_db(entry: Entry, task: str) -> float | None:
    """The entry's error in dB at the task's nominal length (None when not scored)."""
    return length_db(entry, task)


def cell_score(db: float | np.ndarray, floor: float, level: float) -> float | np.ndarray:
    """The fraction of the gap from 0 dB to `level` (< 0) closed by an error of `db` raised to `floor`, in 0..1."""
    return np.clip(np.maximum(db, floor) / level, 0.0, 1.0)


def _cells(entry: Entry, task: str) -> dict[int, float]:
    """The entry's cell score (a fraction) at each of the task's prompt lengths; 0 where it is not scored."""
    level = levels()[task]
    return {
        n: 0.0 if (db := length_db(entry, task, n)) is None else float(cell_score(db, entry.floor_db, level[n]))
        for n in TASKS[task].spec.lengths
    }


def _task(entry: Entry, task: str) -> tuple[float, np.ndarray | None] | None:
    """The entry's score on `task` (a fraction: the mean of its cell scores) and its bootstrap replicates (None
    without samples); None when the task is not scored."""
    if entry.results["tasks"].get(task, {}).get("status") != "ok":
        return None
    cells, level = _cells(entry, task), levels()[task]
    reps: np.ndarray | None = np.zeros(BOOTSTRAP_RESAMPLES)
    for n in cells:
        boot = entry.boot.get((task, n))
        if length_db(entry, task, n) is not None:
            reps = None if boot is None or reps is None else reps + cell_score(boot, entry.floor_db, level[n])
    return sum(cells.values()) / len(cells), None if reps is None else reps / len(cells)


def _mean(parts: list[tuple[float, np.ndarray | None] | None]) -> tuple[float, np.ndarray | None] | None:
    """The mean of scores (None counts 0) and of their replicates (None if any scored part has none); None when
    no part is scored."""
    scored = [p for p in parts if p is not None]
    if not scored:
        return None
    reps = None if any(r is None for _, r in scored) else sum(r for _, r in scored) / len(parts)
    return sum(v for v, _ in scored) / len(parts), reps


def resolve(scores: dict[str, tuple[float, np.ndarray | None]]) -> dict[str, Range]:
    """Rank ranges of the keys of `scores` ({key: (score, replicates)}), higher is better: two keys are told apart
    where the 90 % interval of the difference of their replicates excludes 0 (both must have replicates)."""
    keys = list(scores)
    above = dict.fromkeys(keys, 0)  # models told apart above each key
    below = dict.fromkeys(keys, 0)
    paired = [k for k in keys if scores[k][1] is not None]
    if len(paired) > 1:
        reps = np.stack([scores[k][1] for k in paired])
        lo, hi = np.moveaxis(interval(reps[:, None, :] - reps[None, :, :]), -1, 0)
        better = lo > 0  # better[i, j]: i is told apart above j
        for i, k in enumerate(paired):
            above[k], below[k] = int(better[:, i].sum()), int(better[i].sum())
    return {k: (1 + above[k], len(keys) - below[k]) for k in keys}


def rank(entries: list[Entry]) -> list[Entry]:
    """Score and rank every entry by `RANKING_RULE`; return them listed by kind (`KINDS`' order), then name."""
    for e in entries:
        e.scores = {t: nominal_db(e, t) for t in TASKS}
    ranked = [e for e in entries if e.ranked]
    tasks = {e.key: {t: _task(e, t) for t in TASKS} for e in entries}
    for t in TASKS:
        ranges = resolve({e.key: tasks[e.key][t] for e in ranked if tasks[e.key][t] is not None})
        for e in entries:
            e.task_scores[t] = None if tasks[e.key][t] is None else 100 * tasks[e.key][t][0]
            e.task_ranks[t] = ranges.get(e.key)
    for fam, names in FAMILY_TASKS.items():
        family = {e.key: _mean([tasks[e.key][t] for t in names]) for e in entries}
        ranges = resolve({e.key: family[e.key] for e in ranked if family[e.key] is not None})
        for e in entries:
            e.family_scores[fam] = None if family[e.key] is None else 100 * family[e.key][0]
            e.family_ranks[fam] = ranges.get(e.key)
            e.length_scores[fam] = _by_length(e, names) if family[e.key] is not None else {}
    kinds = list(KINDS)
    return sorted(entries, key=lambda e: (kinds.index(e.kind), e.name.lower()))


def _by_length(entry: Entry, names: Iterable[str]) -> dict[int, float]:
    """The family's score in percent at each prompt length of its tasks, ascending: the mean of the cell scores
    there over the tasks that have that length (a task or length not scored counts 0)."""
    cells = [_cells(entry, t) for t in names]
    lengths = sorted({n for c in cells for n in c})
    return {n: 100 * sum(c[n] for c in cells if n in c) / sum(n in c for c in cells) for n in lengths}


def rank_text(r: Range | list[int] | None) -> str:
    """A rank range as shown: "3", or "3–7" where comparisons on the same prompts leave it open; "–" for none."""
    return "–" if r is None else str(r[0]) if r[0] == r[1] else f"{r[0]}–{r[1]}"


def unranked_reason(entry: Entry) -> str | None:
    """Why a row is not ranked (None when it is)."""
    if entry.ranked:
        return None
    if entry.kind == "submission":
        return f"its latest fresh-draw verification {entry.verification}"
    if entry.kind == "cut":
        return f"a cut at a submission's depth; the ranked comparators run {', '.join(map(str, BUDGETS))} steps"
    return "a reference line, never ranked"


def family_order(entries: list[Entry], fam: str) -> list[Entry]:
    """The entries scored in family `fam` as its view lists them: ranked rows by score, then the others by score;
    equal scores by name."""
    scored = [e for e in entries if e.family_scores[fam] is not None]
    return sorted(scored, key=lambda e: (not e.family_ranks[fam], -e.family_scores[fam], e.name.lower()))


def depth_curve(task: str, sources: tuple[str, ...], solvers: dict[str, Entry]) -> list[float]:
    """The per-step curve a depth counts on at `task`'s nominal length: the first source's steps, then each next
    one's beyond them (sources that are missing or do not run on the task are skipped)."""
    curve: list[float] = []
    for source in sources:
        steps = steps_curve(solvers[source], task) if source in solvers else None
        curve += (steps or [])[len(curve):]
    return curve


def depth(
    entry: Entry, task: str, solvers: dict[str, Entry], limits: dict[str, Entry]
) -> dict[str, int | str | None] | None:
    """The optimizer-equivalent depth of the model on `task` at its nominal length, per optimizer of
    `DEPTH_SOLVERS` (`solvers` and `limits`, the references, by baseline name).

    The first step k at which the running best of the optimizer's curve (`depth_curve`) is at or below the
    model's error: up to 16, k steps at the step tuned for exactly k (the best k-step schedule); beyond, the
    solver's own run. Where none of its K steps gets there: "never" when the solution it converges to
    (`LIMITS`) is worse than the model, else "> K". None where the optimizer does not run on the task; None for
    a model that reports no per-layer errors on the task.
    """
    level = entry.scores.get(task) if entry.scores else nominal_db(entry, task)
    if level is None or not steps_curve(entry, task):
        return None
    family = TASKS[task].spec.family
    out: dict[str, int | str | None] = {}
    for name, sources in DEPTH_SOLVERS.items():
        curve = depth_curve(task, sources, solvers)
        if not curve:
            out[name] = None
            continue
        reached = next((k for k, v in enumerate(curve, 1) if v <= level), None)
        limit = limits.get(LIMITS[name].get(family, ""))
        limit_db = None if limit is None else nominal_db(limit, task)
        out[name] = reached or ("never" if limit_db is not None and limit_db > level else f"> {len(curve):,}")
    return out


def lasso_gap_db(entry: Entry, n: int | None = None) -> dict[str, float | None] | None:
    """Error on each shifted or random lasso matrix minus the error on the fixed one, in dB, at length `n`
    (default: each task's nominal); None when lasso/fixed is not scored there."""
    fixed = length_db(entry, LASSO_FIXED, n)
    if fixed is None:
        return None
    gaps = {k: length_db(entry, t, n) for k, t in LASSO_SHIFTED.items()}
    return {k: None if v is None else v - fixed for k, v in gaps.items()}


def _r(v: float | None, digits: int = 2) -> float | None:
    """`v` rounded for the summary (dB and percentages to 0.01)."""
    return None if v is None else round(v, digits)


def _interval(m: dict[str, Any] | None, entry: Entry) -> list[float] | None:
    """The 90% interval in dB of a scored length; None for a cut row (its steps have no interval)."""
    return None if m is None or entry.budget is not None else [_r(v) for v in m["rel_err"]["ci90_db"]]


def task_columns(entry: Entry, task: str, solvers: dict[str, Entry], limits: dict[str, Entry]) -> dict[str, Any]:
    """The summary's per-task columns of one entry (see `site_summary`); errors in dB rounded to 0.01."""
    t = entry.results["tasks"].get(task, {})
    lengths = sorted(int(n) for n in t.get("lengths", {})) if t.get("status") == "ok" else []
    rate = (length_metrics(entry, task) or {}).get("error_rate")
    return {
        "db": _r(entry.scores[task]),
        "ci90_db": _interval(length_metrics(entry, task), entry),
        "score": _r(entry.task_scores[task]),
        "rank": None if entry.task_ranks[task] is None else list(entry.task_ranks[task]),
        "by_length": {
            str(n): {
                "db": _r(db := length_db(entry, task, n)),
                "ci90_db": _interval(length_metrics(entry, task, n), entry),
                "score": _r(100 * float(cell_score(db, entry.floor_db, levels()[task][n]))),
            }
            for n in lengths
        },
        "depth": depth(entry, task, solvers, limits),
        "error_rate": None if rate is None or entry.budget is not None else _r(rate["value"], 4),
        "in_pool": in_pool(entry, task),
    }


def in_pool(entry: Entry, task: str) -> dict[str, Any] | None:
    """The error at the nominal length on in-pool prompts of a model trained on a declared pool of tasks (its size,
    seed, dB and 90% interval; `db` of the task is then the out-of-pool error), or None."""
    t = entry.results["tasks"].get(task, {})
    m = t.get("in_pool", {}).get("lengths", {}).get(str(TASKS[task].spec.nominal)) if t.get("status") == "ok" else None
    if m is None or entry.budget is not None:
        return None
    return {"size": t["in_pool"]["size"], "seed": t["in_pool"]["seed"], "db": _r(m["rel_err"]["db"]),
            "ci90_db": [_r(v) for v in m["rel_err"]["ci90_db"]]}


def _date(entry: Entry) -> str | None:
    """A submission's date: the day its run finished (`run.finished`, written by `iclbench run`, as YYYY-MM-DD);
    None for baselines (CI runs them) and for anything that is not such a day."""
    finished = entry.results["run"].get("finished")
    if entry.kind != "submission" or not isinstance(finished, str) or not _DAY.fullmatch(finished[:10]):
        return None
    return finished[:10]


def family_columns(entry: Entry, fam: str, pool: int) -> dict[str, Any]:
    """The summary's per-family columns of one entry: rank range and pool size, score, worst length, coverage."""
    by_n = entry.length_scores[fam]
    worst = min(by_n, key=by_n.__getitem__) if by_n else None
    names = FAMILY_TASKS[fam]
    return {
        "rank": None if entry.family_ranks[fam] is None else list(entry.family_ranks[fam]),
        "pool": pool,
        "score": _r(entry.family_scores[fam]),
        "worst_length": None if worst is None else {"n": worst, "score": _r(by_n[worst])},
        "by_length": {str(n): _r(v) for n, v in by_n.items()},
        "coverage": [sum(entry.scores[t] is not None for t in names), len(names)],
    }


def site_summary(entries: list[Entry], built: str, digest: str, links: dict[str, str]) -> dict[str, Any]:
    """The site's summary (out/leaderboard.json) of ranked `entries` (as `rank` returns them); `links`: the
    repository, SUBMITTING.md and the findings, by name."""
    import iclbench
    from iclbench.tasks import SUITE_VERSION

    solvers = {e.name: e for e in entries if any(e.name in d for d in DEPTH_SOLVERS.values()) and e.budget is None}
    limits = {e.name: e for e in entries if e.kind == "reference"}
    pools = {f: sum(e.family_ranks[f] is not None for e in entries) for f in FAMILIES}
    models = []
    for e in entries:
        params = e.meta.get("parameters")
        models.append(
            {
                "key": e.key,
                "name": e.name,
                "kind": e.kind,
                "ranked": e.ranked,
                "budget_steps": e.budget,
                "coverage": [sum(e.scores[t] is not None for t in TASKS), len(TASKS)],
                "resolved": bool(e.boot),
                "families": {f: family_columns(e, f, pools[f]) for f in FAMILIES},
                "tasks": {t: task_columns(e, t, solvers, limits) for t in TASKS},
                "lasso_gap_db": None if (gap := lasso_gap_db(e)) is None else {k: _r(v) for k, v in gap.items()},
                "parameters": params if isinstance(params, int) else None,
                "date": _date(e),
                "paper": e.meta.get("paper"),
                "code": e.meta.get("code"),
                "verification": e.verification,
                "command": e.command,
                "detail": f"models/{e.key}.json",
            }
        )
    return {
        "suite_version": SUITE_VERSION,
        "iclbench_version": iclbench.__version__,
        "built": built,
        "inputs_sha256": digest,
        "ranking_rule": RANKING_RULE,
        "ranking_example": RANKING_EXAMPLE,
        "links": links,
        "kinds": KINDS,
        "families": {f: list(names) for f, names in FAMILY_TASKS.items()},
        "tasks": {
            name: {
                "family": t.spec.family,
                "nominal": t.spec.nominal,
                "lengths": list(t.spec.lengths),
                "levels_db": {str(n): v for n, v in levels()[name].items()},
                "floor_db": FLOOR_DB["float32"],
            }
            for name, t in TASKS.items()
        },
        "models": models,
    }
