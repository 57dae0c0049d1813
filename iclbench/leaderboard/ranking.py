"""The ranking rule: how results become scores and ranks.

Ranking rule (also printed on the page and in the README, from `RANKING_RULE`): a
model's score on a task is its relative error at the task's nominal prompt length, in
dB, floored at `CLIP_DB`; a task the model does not support (or whose nominal length it
does not support) scores 0 dB, as the zero predictor does. A family's score is the mean
over its tasks, the overall score the mean over the families (each family weighs the
same). Lower is better; scores equal to 0.01 dB share a rank (1, 2, 2, 4).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from iclbench.tasks import TASKS

CLIP_DB = -100.0
"""Task scores below this count as this: lower errors are float round-off, not skill."""
BUDGET_STEPS = 12
"""Iterative baselines also appear cut at this many steps (the depth of a 12-layer transformer)."""
FAMILIES = tuple(dict.fromkeys(t.spec.family for t in TASKS.values()))
FINDINGS_LINK = "../docs/findings.md"
"""Where the findings page lies, relative to the leaderboard folder."""

RANKING_RULE = (
    "A model's score on a task is its relative error at the task's nominal prompt length, in dB "
    "(10 log10 of E[(prediction - target)^2] / E[target^2]; the zero predictor scores 0 dB), "
    f"floored at {CLIP_DB:.0f} dB. A task the model does not support, or whose nominal length it does not "
    "support, scores 0 dB, as predicting zero would. "
    "A family's score is the mean over its tasks; the overall score is the mean over the "
    f"{len(FAMILIES)} families, so each family weighs the same. Lower is better. Scores equal when rounded to "
    "0.01 dB share a rank (1, 2, 2, 4) and are listed by name. Family tables rank by the family's score. "
    f"Iterative baselines that run more than {BUDGET_STEPS} steps also appear cut at {BUDGET_STEPS} steps "
    f"(on a task where they take fewer, at their last step), the depth of a {BUDGET_STEPS}-layer transformer."
)


@dataclass
class Entry:
    """One row of the leaderboard: a submission, a baseline, or a baseline cut at a step budget."""

    key: str
    name: str
    kind: str
    results: dict[str, Any]
    meta: dict[str, Any]
    command: str
    budget: int | None = None
    verification: str = "–"
    """A submission's fresh-draw verification (`iclbench.submissions.verify.status`); "–" for baselines, which CI computes."""
    scores: dict[str, float | None] = field(default_factory=dict)
    family_scores: dict[str, float] = field(default_factory=dict)
    overall: float = 0.0
    rank: int = 0
    family_ranks: dict[str, int] = field(default_factory=dict)

    @property
    def max_steps(self) -> int:
        """The longest per-step error curve the model reports (0 when it reports none)."""
        curves = [
            m.get("steps_rel_err_db", []) for t in self.results["tasks"].values() for m in t.get("lengths", {}).values()
        ]
        return max(map(len, curves), default=0)


class LeaderboardError(ValueError):
    """Inputs the leaderboard cannot be built from: the message lists every problem."""


def nominal_db(entry: Entry, task: str) -> float | None:
    """The entry's error in dB at the task's nominal length (None when not scored)."""
    t = entry.results["tasks"].get(task, {})
    m = t.get("lengths", {}).get(str(TASKS[task].spec.nominal)) if t.get("status") == "ok" else None
    if m is None:
        return None
    if entry.budget is not None and m.get("steps_rel_err_db"):
        steps = m["steps_rel_err_db"]
        return steps[min(entry.budget, len(steps)) - 1]
    return m["rel_err"]["db"]


def _ranks(scores: list[tuple[str, float]]) -> dict[str, int]:
    """Competition ranks (1, 2, 2, 4) of (key, score) pairs, lower score first, ties at 0.01 dB."""
    ordered = sorted(scores, key=lambda ks: round(ks[1], 2))
    ranks: dict[str, int] = {}
    for i, (key, score) in enumerate(ordered):
        prev = ordered[i - 1] if i else None
        ranks[key] = ranks[prev[0]] if prev and round(prev[1], 2) == round(score, 2) else i + 1
    return ranks


def rank(entries: list[Entry]) -> list[Entry]:
    """Score and rank every entry by `RANKING_RULE`; return them in rank order (ties by name)."""
    for e in entries:
        e.scores = {name: nominal_db(e, name) for name in TASKS}
        for fam in FAMILIES:
            vals = [
                max(s, CLIP_DB) if s is not None else 0.0 for n, s in e.scores.items() if TASKS[n].spec.family == fam
            ]
            e.family_scores[fam] = sum(vals) / len(vals)
        e.overall = sum(e.family_scores.values()) / len(FAMILIES)
    overall = _ranks([(e.key, e.overall) for e in entries])
    family = {fam: _ranks([(e.key, e.family_scores[fam]) for e in entries]) for fam in FAMILIES}
    for e in entries:
        e.rank = overall[e.key]
        e.family_ranks = {fam: family[fam][e.key] for fam in FAMILIES}
    return sorted(entries, key=lambda e: (e.rank, e.name.lower()))
