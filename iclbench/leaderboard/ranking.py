"""The ranking rule: which rows are ranked, how results become scores and ranks, and the per-task columns.

Rows. A submission is ranked. Baselines are split by what they compute: `REFERENCES` (the
exact solvers and oracles: the Bayes-optimal predictors, the converged solutions a target is
defined by, and the zero predictor) are reference lines, shown and never ranked; the
iterative `SOLVERS` (gd, newton, newton3, ista, fista) are shown at their last step as
reference lines too (they are run to convergence, onto a reference), and are ranked as
comparators cut at each of `BUDGETS` steps (steps = layers); every other baseline (averaging,
the learned LISTA variants at their own 16 layers) is ranked as it is. For each depth a
submission reports per-layer errors at, the solvers also appear cut at that depth, shown
beside it and not ranked (so the depth rows a new submission brings never enter a pool).

Scores (`RANKING_RULE`, printed on the page and in the README). Ranks are decided by
pairwise comparisons on a task: the errors at the task's nominal length in dB, each first
raised to the round-off floor of both runs' dtypes (`FLOOR_DB`: eps², -138.5 dB in float32,
the -300 dB reporting floor in float64), are a tie when they differ by less than `TIE_DB`.
A task rank is 1 + the number of ranked models that beat the model on that task. A family
score is a mean win rate (ties count half): over the family's tasks, the share of the other
models in its pool that the model beats, where the pool is every ranked model scored on all of
the family's tasks; the overall score is the mean of every family's score (`FAMILIES`), for models in
every family's pool. Nothing is imputed: a model outside a pool has no score there, so
declaring a task unsupported can only take a score away. Higher is better; equal scores
(exact fractions) share a rank. In the overall order, models of equal rank and the unranked rows
after them are listed by their family scores, then by name. A win rate is relative to its pool:
adding a model can change the order of two others (as in any ranking by wins), which is why the
per-task errors, absolute, stand beside every score.

Why win rates, not mean dB: errors range over 140 dB on a noiseless task solved to round-off
and a few dB on a noisy one, so a mean of dB is decided by whichever task has the widest
range (one noiseless task solved exactly outweighs 5 dB gained on every other task). A win
rate weighs each task by the same 1 / (number of tasks) whatever the size of the errors:
reaching round-off is worth what beating the same models by 0.01 dB is, and a model better
than another on every task but one beats it on all of them but that one. No floor but the
dtype's round-off is needed, and the floor only decides ties.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from iclbench.metrics import steps_to_reach
from iclbench.submissions.rerun import FLOOR_DB
from iclbench.tasks import TASKS

FAMILIES = tuple(dict.fromkeys(t.spec.family for t in TASKS.values()))
FAMILY_TASKS = {fam: tuple(n for n, t in TASKS.items() if t.spec.family == fam) for fam in FAMILIES}
"""Round-off floor of a relative squared error, by run dtype: eps² in dB (the reporting floor, -300 dB, below it)."""
TIE_DB = 0.01
"""Two floored errors closer than this are a tie."""
REFERENCES = {
    "zero": "predicts 0: the 0 dB line",
    "ridge": "exact ridge with the Bayes penalty: the Bayes-optimal predictor of the linear tasks",
    "ols": "exact minimum-norm least squares",
    "lasso-exact": "the exact lasso solution ISTA and FISTA converge to",
    "logistic-optimum": "the regularised logistic optimum, from which the logistic target is made",
    "gp-posterior": "the GP posterior mean: the Bayes-optimal predictor of the kernel tasks",
    "true-w": "W x_query with the true W: the ar tasks' target itself (error 0 up to round-off)",
    "noise-oracle": "ridge at each prompt's own Bayes penalty, from its hidden noise level (select/noise-mix)",
    "select-bayes": "the Bayes-optimal predictor of the select tasks, from the prompt alone",
}
"""Baselines that are reference lines: exact solvers and oracles, shown and never ranked."""
SOLVERS = ("gd", "newton", "newton3", "ista", "fista")
"""Iterative baselines run to convergence: reference lines at their last step, ranked comparators cut at `BUDGETS`."""
BUDGETS = (1, 4, 16)
"""Step budgets at which `SOLVERS` are ranked comparators (steps = layers)."""
DEPTH_SOLVERS = ("gd", "newton", "ista")
"""The optimizers an optimizer-equivalent depth is counted in."""
LASSO_FIXED, LASSO_SHIFTED = "lasso/fixed", {"shift0.1": "lasso/shift0.1", "shift0.5": "lasso/shift0.5", "random": "lasso/random"}
FINDINGS_LINK = "../docs/findings.md"
"""Where the findings page lies, relative to the leaderboard folder."""

RANKING_RULE = (
    "Exact solvers and oracles (ridge, ols, lasso-exact, gp-posterior, logistic-optimum, true-w, noise-oracle, "
    "select-bayes, zero) are reference "
    "lines, never ranked; so are gd, newton, newton3, ista and fista at their last step, which converge onto them. "
    f"Those five are ranked as comparators cut at {', '.join(map(str, BUDGETS))} steps (steps = layers), and shown, "
    "unranked, cut at each submission's own depth. Submissions and the other baselines are ranked. "
    "On a task, two models compare by their relative error at the nominal prompt length in dB, both raised to the "
    f"round-off floor of the runs' dtypes (eps²: {FLOOR_DB['float32']:.1f} dB in float32, "
    f"{FLOOR_DB['float64']:.0f} dB in float64); errors less than {TIE_DB} dB apart tie. A task rank is 1 + the "
    "number of ranked models better on that task. A family's pool is every ranked model scored on all its tasks; "
    "a model's family score is its mean win rate there: over the family's tasks, the percentage of the other "
    f"models in the pool it beats (a tie counts half). The overall score is the mean of the {len(FAMILIES)} family scores "
    f"({', '.join(FAMILIES)}), "
    "for models in every pool. Nothing is imputed: a task not supported leaves the model out of that family's "
    "pool and of the overall ranking, so declaring a task unsupported never helps. Each task weighs the same "
    "whatever the size of its errors, so solving a noiseless task to round-off counts as much as beating the same "
    "models by 0.01 dB. Higher scores are better; equal scores share a rank (1, 2, 2, 4); rows of equal rank, "
    "and unranked rows after them, are listed by their family scores, then by name. A win rate is relative to its "
    "pool: adding a model can change the order of two others, so the absolute per-task errors stand beside it."
)

_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")

RANKING_EXAMPLE = (
    "the kernel family's pool is the 8 kernel submissions and gd, newton and newton3 cut at 1, 4 and 16 steps: "
    "17 models, 16 others for each. kernel-exp-attn-softmax (-6.39, -5.66 and -6.04 dB on kernel/linear, "
    "kernel/exp and kernel/relu) beats 4, 9 and 8 of them: (4 + 9 + 8) / 48 = 43.75 %, rank 10. "
    "newton @4 steps (-10.87, -3.86 and -4.51 dB) beats 10, 5 and 5: 20 / 48 = 41.67 %, rank 11. "
    "The transformer, better on two tasks of three, ranks above the solver; a mean of dB (-6.03 against -6.41) "
    "would rank the solver first on the strength of kernel/linear's wider range alone."
)
"""A worked example of `RANKING_RULE` on the results of the committed submissions and the baselines
(checked against them in tests/test_ranking.py, whose baseline numbers are `tests/fixtures/baseline_snapshot.json`)."""


@dataclass
class Entry:
    """One row of the leaderboard: a submission, a baseline, a baseline cut at a step budget, or a reference."""

    key: str
    name: str
    kind: str
    """"submission", "baseline" or "reference" (shown, never ranked)."""
    results: dict[str, Any]
    meta: dict[str, Any]
    command: str
    budget: int | None = None
    """A solver cut at this many steps."""
    ranked: bool = True
    """False for references and for comparators cut at a submission's own depth."""
    verification: str = "–"
    """A submission's fresh-draw verification (`iclbench.submissions.verify.status`); "–" for baselines, which CI computes."""
    scores: dict[str, float | None] = field(default_factory=dict)
    """Error at each task's nominal length in dB (unfloored); None where not scored."""
    task_ranks: dict[str, int | None] = field(default_factory=dict)
    family_scores: dict[str, float | None] = field(default_factory=dict)
    """Mean win rate in percent in each family's pool; None outside it."""
    family_ranks: dict[str, int | None] = field(default_factory=dict)
    score: float | None = None
    """Overall score: the mean of the family scores, for a model in every family's pool."""
    rank: int | None = None

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


def compare(a: Entry, b: Entry, task: str) -> int:
    """-1 when `a` beats `b` on `task`, 1 when `b` beats `a`, 0 for a tie (both must be scored)."""
    floor = max(a.floor_db, b.floor_db)
    x, y = max(a.scores[task], floor), max(b.scores[task], floor)
    return 0 if abs(x - y) < TIE_DB else (-1 if x < y else 1)


def _win_rate(e: Entry, pool: list[Entry], task: str) -> Fraction:
    """The share of the other models in `pool` that `e` beats on `task`, ties counting half."""
    points = sum(1 - compare(e, o, task) for o in pool if o is not e)  # 2 per win, 1 per tie
    return Fraction(points, 2 * (len(pool) - 1))


def _competition(values: dict[str, Fraction]) -> dict[str, int]:
    """Ranks 1, 2, 2, 4 of keys by value, higher first."""
    ordered = sorted(values.values(), reverse=True)
    return {k: ordered.index(v) + 1 for k, v in values.items()}


def _percent(v: Fraction) -> float:
    return float(100 * v)


def rank(entries: list[Entry]) -> list[Entry]:
    """Score and rank every entry by `RANKING_RULE`; return them in order: ranked by rank, then the rest.

    Within a rank, and among unranked rows, by family scores then name.
    """
    for e in entries:
        e.scores = {t: nominal_db(e, t) for t in TASKS}
    ranked = [e for e in entries if e.ranked]
    for e in entries:
        e.task_ranks = {
            t: 1 + sum(compare(o, e, t) < 0 for o in ranked if o.scores[t] is not None)
            if e.ranked and e.scores[t] is not None
            else None
            for t in TASKS
        }
    family: dict[str, dict[str, Fraction]] = {}
    for fam, names in FAMILY_TASKS.items():
        pool = [e for e in ranked if all(e.scores[t] is not None for t in names)]
        family[fam] = {
            e.key: sum((_win_rate(e, pool, t) for t in names), Fraction(0)) / len(names) for e in pool if len(pool) > 1
        }
        ranks = _competition(family[fam]) if len(pool) > 1 else {e.key: 1 for e in pool}  # alone: first, no score
        for e in entries:
            e.family_scores[fam] = _percent(family[fam][e.key]) if e.key in family[fam] else None
            e.family_ranks[fam] = ranks.get(e.key)
    overall = {
        e.key: sum((family[f][e.key] for f in FAMILIES), Fraction(0)) / len(FAMILIES)
        for e in ranked
        if all(e.key in family[f] for f in FAMILIES)
    }
    ranks = _competition(overall)
    for e in entries:
        e.score = _percent(overall[e.key]) if e.key in overall else None
        e.rank = ranks.get(e.key)

    def order(e: Entry) -> tuple:
        fams = [-(e.family_scores[f] if e.family_scores[f] is not None else -1.0) for f in FAMILIES]
        return (e.rank is None, e.rank or 0, not e.ranked, *fams, e.name.lower())

    return sorted(entries, key=order)


def family_order(entries: list[Entry], fam: str) -> list[Entry]:
    """The entries as a family view lists them: by family rank, then unranked rows, then name."""
    return sorted(entries, key=lambda e: (e.family_ranks[fam] is None, e.family_ranks[fam] or 0, not e.ranked, e.name.lower()))


def depth(entry: Entry, task: str, solvers: dict[str, Entry]) -> dict[str, float | None] | None:
    """The optimizer-equivalent depth of the model's last layer on `task` at its nominal length.

    For each of `DEPTH_SOLVERS`: the smallest whole number of its steps whose error (its own
    per-step curve, same task and length) is at most the model's; None where that solver does
    not run on the task or never gets there within the steps it runs. None for a model that
    reports no per-layer errors on the task.
    """
    level = entry.scores.get(task) if entry.scores else nominal_db(entry, task)
    if level is None or not steps_curve(entry, task):
        return None
    out: dict[str, float | None] = {}
    for name in DEPTH_SOLVERS:
        k = steps_to_reach(steps_curve(solvers[name], task), level) if name in solvers else None
        out[name] = None if k is None else float(k)
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


def task_columns(entry: Entry, task: str, solvers: dict[str, Entry]) -> dict[str, Any]:
    """The summary's per-task columns of one entry (see `site_summary`); errors in dB rounded to 0.01."""
    t = entry.results["tasks"].get(task, {})
    lengths = sorted(int(n) for n in t.get("lengths", {})) if t.get("status") == "ok" else []
    rate = (length_metrics(entry, task) or {}).get("error_rate")
    return {
        "db": _r(entry.scores[task]),
        "ci90_db": _interval(length_metrics(entry, task), entry),
        "rank": entry.task_ranks[task],
        "by_length": {
            str(n): {"db": _r(length_db(entry, task, n)), "ci90_db": _interval(length_metrics(entry, task, n), entry)}
            for n in lengths
        },
        "depth": depth(entry, task, solvers),
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


def site_summary(entries: list[Entry], built: str, digest: str) -> dict[str, Any]:
    """The site's summary (out/leaderboard.json) of ranked `entries` (as `rank` returns them)."""
    import iclbench
    from iclbench.tasks import SUITE_VERSION

    solvers = {e.name: e for e in entries if e.name in DEPTH_SOLVERS and e.budget is None}
    models = []
    for e in entries:
        params = e.meta.get("parameters")
        models.append(
            {
                "key": e.key,
                "name": e.name,
                "kind": e.kind,
                "budget_steps": e.budget,
                "rank": e.rank,
                "score": _r(e.score),
                "coverage": [sum(v is not None for v in e.scores.values()), len(TASKS)],
                "families": {
                    f: {
                        "rank": e.family_ranks[f],
                        "score": _r(e.family_scores[f]),
                        "coverage": [sum(e.scores[t] is not None for t in names), len(names)],
                    }
                    for f, names in FAMILY_TASKS.items()
                },
                "tasks": {t: task_columns(e, t, solvers) for t in TASKS},
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
        "families": {f: list(names) for f, names in FAMILY_TASKS.items()},
        "tasks": {
            name: {
                "family": t.spec.family,
                "nominal": t.spec.nominal,
                "lengths": list(t.spec.lengths),
                "floor_db": FLOOR_DB["float32"],
            }
            for name, t in TASKS.items()
        },
        "models": models,
    }

