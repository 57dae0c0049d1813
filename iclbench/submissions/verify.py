"""Fresh-draw verification: a model scored on evaluation sets drawn with a seed chosen at
verification time, and compared per task with the public scores of its results file.

A model that looked the public answers up, or memorised them, scores well on the public sets
only; an honest model scores on fresh sets of the same distributions as on the public ones, up
to sampling error. `Task.generate(seed)` draws the fresh sets (verification stream of `seed`,
drawn with `secrets` when not given), `iclbench.cache.fresh_sets` makes the runner use them.

The rule, for `rel_err` at every prompt length the model is scored at: each side's standard
error in dB is the half of its 90% bootstrap interval (`ci90_db`, over prompts) that faces the
other side, divided by 1.645 (the public score's upper half, the fresh score's lower half); the
length is flagged when the public score is better (lower) than the fresh one by more than
`Z` standard errors of the difference, sqrt(se_public² + se_fresh²). One-sided: doing better
on fresh data is not cheating. `Z` makes the false-alarm rate of an honest model at most
`FALSE_ALARM` over the suite's `COMPARISONS` prompt lengths (Bonferroni: one-sided tail
`FALSE_ALARM / COMPARISONS` per length, z = 3.65 in suite v3). Both scores are first raised to the run
dtype's round-off floor `FLOOR_DB` (eps², eps the dtype's machine epsilon: -138.5 dB in
float32; in float64 below the -300 dB reporting floor), so two errors below it count as equal.
A public score that is not a finite number at or above -300 dB with ordered interval bounds
fails its task, as does a task that is scored on one side only.

The report (`REPORT`, written beside `results.json` unless told otherwise) holds the seed, the
date, the versions, the fresh sets' fingerprints and, per task and length, both scores, the
difference, the tolerance and the verdict. The leaderboard reads it (`status`); only CI writes it.
"""

from __future__ import annotations

import math
import secrets
from datetime import datetime, timezone
from pathlib import Path
from statistics import NormalDist
from typing import Any

import torch

import iclbench
from iclbench import tasks as task_registry
from iclbench.cache import fresh_sets
from iclbench.metrics import CI_LEVEL, DB_FLOOR, db
from iclbench.plugins import PluginError
from iclbench.submissions.rerun import FLOOR_DB
from iclbench.runner import RunConfig, ScoredModel, run
from iclbench.tasks import SUITE_VERSION, TASKS, Task
from iclbench.tasks.family import VERIFY_SEED_BITS
from iclbench.worker import IsolatedModel

FORMAT = "iclbench-verification"
REPORT = "verification.json"
FALSE_ALARM = 0.01
"""Target probability that an honest model fails verification of the whole suite."""
COMPARISONS = sum(len(t.spec.lengths) for t in TASKS.values())
"""Prompt lengths compared on a full verification (77 in suite v3)."""
Z = NormalDist().inv_cdf(1 - FALSE_ALARM / COMPARISONS)
"""Standard errors of the difference by which a public score may beat the fresh one."""
CI_Z = NormalDist().inv_cdf(0.5 + CI_LEVEL / 2)
"""Standard errors in each half of a 90% interval (1.645)."""
LOWEST_DB = db(DB_FLOOR)
IDENTITY = ("name", "file_sha256", "checkpoint_sha256")
"""The fields of `model` in results that name the files scored."""


class VerifyError(ValueError):
    """Verification that cannot be done: the message says why, on one line."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _public_error(m: Any) -> tuple[float, float, float] | str:
    """(db, ci90 low, ci90 high) of a public `rel_err`, or why it is not a score iclbench reports."""
    try:
        value, (lo, hi) = m["db"], m["ci90_db"]
    except (TypeError, KeyError, ValueError):
        return "rel_err has no db and two-number ci90_db"
    numbers = (value, lo, hi)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in numbers):
        return f"rel_err {numbers} holds something that is not a finite number"
    if min(numbers) < LOWEST_DB or lo > hi:
        return f"rel_err {numbers} is below the {LOWEST_DB:.0f} dB reporting floor or has its interval reversed"
    return float(value), float(lo), float(hi)


def compare_length(public: Any, fresh: dict[str, Any], dtype: str) -> dict[str, Any]:
    """The verdict on one prompt length: public and fresh `rel_err`, difference, tolerance (see the module)."""
    got = _public_error(public)
    if isinstance(got, str):
        return {"verdict": "fail", "reason": f"public {got}"}
    floor = FLOOR_DB[dtype]
    pub, pub_lo, pub_hi = (max(v, floor) for v in got)
    new, new_lo, new_hi = (max(v, floor) for v in (fresh["db"], *fresh["ci90_db"]))
    se = math.hypot(max(pub_hi - pub, 0.0), max(new - new_lo, 0.0)) / CI_Z
    difference, tolerance = new - pub, Z * se
    return {
        "public_db": got[0],
        "public_ci90_db": [got[1], got[2]],
        "fresh_db": fresh["db"],
        "fresh_ci90_db": fresh["ci90_db"],
        "difference_db": difference,
        "tolerance_db": tolerance,
        "verdict": "fail" if difference > tolerance else "pass",
    }


def compare_task(name: str, public: Any, fresh: dict[str, Any], dtype: str) -> dict[str, Any]:
    """A task's verdict ("pass", "fail" or "unsupported") with a reason when it fails, and per-length comparisons."""
    status = public.get("status") if isinstance(public, dict) else None
    out: dict[str, Any] = {"fingerprint": fresh.get("fingerprint")}
    if status == fresh["status"] == "unsupported":
        return {**out, "verdict": "unsupported"}
    if fresh["status"] != "ok" or status != "ok":
        why = f": {fresh['error']}" if fresh.get("error") else ""
        reason = f"status {status!r} in results.json, {fresh['status']!r} on fresh data{why}"
        return {**out, "verdict": "fail", "reason": reason}
    lengths = public.get("lengths")
    if not isinstance(lengths, dict) or sorted(lengths, key=str) != sorted(fresh["lengths"]):
        scored = sorted(lengths, key=str) if isinstance(lengths, dict) else lengths
        reason = f"lengths {scored} in results.json, {sorted(fresh['lengths'])} on fresh data"
        return {**out, "verdict": "fail", "reason": reason}
    compared = {
        n: compare_length(lengths[n].get("rel_err") if isinstance(lengths[n], dict) else None, m["rel_err"], dtype)
        for n, m in fresh["lengths"].items()
    }
    failed = [n for n, c in compared.items() if c["verdict"] == "fail"]
    out.update(verdict="fail" if failed else "pass", lengths=compared)
    if failed:
        out["reason"] = "; ".join(_length_reason(n, compared[n]) for n in failed)
    return out


def _length_reason(n: str, c: dict[str, Any]) -> str:
    if "reason" in c:
        return f"n={n}: {c['reason']}"
    return (
        f"n={n}: public {c['public_db']:.1f} dB, fresh {c['fresh_db']:.1f} dB: better on the public set by "
        f"{c['difference_db']:.1f} dB, more than the tolerance {c['tolerance_db']:.1f} dB"
    )


def verify(
    model: str,
    public: dict[str, Any],
    seed: int | None = None,
    patterns: list[str] | None = None,
    prompts: int | None = None,
    batch_size: int = 512,
    progress: bool = False,
) -> dict[str, Any]:
    """Score `model` (a `--model` string) on fresh sets of the tasks matching `patterns` (all by default)
    and compare with `public`, its results document; return the report (`judge`).

    `seed`: the verification seed, drawn with `secrets` when None. Raises `VerifyError` when the results are of
    another suite or dtype, the seed is out of range, a pattern matches no task or the model cannot be loaded.
    """
    drawn = seed is None
    seed = secrets.randbits(VERIFY_SEED_BITS) if seed is None else seed
    try:
        chosen = task_registry.select(patterns)
        isolated = IsolatedModel(model)
    except (PluginError, task_registry.UnknownTaskError) as exc:
        raise VerifyError(str(exc)) from None
    try:
        return judge(isolated, public, seed, drawn, chosen, prompts, batch_size, progress)
    finally:
        isolated.close()


def judge(
    model: ScoredModel,
    public: dict[str, Any],
    seed: int,
    drawn: bool,
    chosen: list[Task],
    prompts: int | None = None,
    batch_size: int = 512,
    progress: bool = False,
) -> dict[str, Any]:
    """The report of `model` (a worker, or predictions replayed: `iclbench.predictions.ReplayedModel`) scored on the
    fresh sets of verification seed `seed` of the tasks `chosen`, compared with `public`, its results document.

    The run is on the CPU in the public results' dtype; `prompts` scores only the first N fresh prompts; `drawn`
    records whether the seed was drawn at random for this verification. Raises `VerifyError` when the results are
    of another suite or dtype or the seed is out of range.
    """
    if public.get("suite_version") != SUITE_VERSION:
        raise VerifyError(
            f"results.json was made on suite {public.get('suite_version')!r}; this is suite {SUITE_VERSION!r}"
        )
    dtype = public["run"].get("dtype")
    if dtype not in FLOOR_DB:
        raise VerifyError(f"results.json: run.dtype is {dtype!r}, expected one of {', '.join(FLOOR_DB)}")
    if not 0 <= seed < 2**VERIFY_SEED_BITS:
        raise VerifyError(f"--seed {seed}: expected an integer from 0 to 2^{VERIFY_SEED_BITS} - 1")
    started = _now()
    with fresh_sets(seed):  # the model receives prompts only: it never learns the seed
        fresh = run(model, chosen, RunConfig("cpu", dtype, batch_size, prompts), progress=progress)
    problems = [
        f"model.{k} is {v!r} on fresh data, {public['model'].get(k)!r} in results.json"
        for k, v in fresh["model"].items()
        if k in IDENTITY and v != public["model"].get(k)
    ]
    checked = {
        name: compare_task(name, public["tasks"].get(name), entry, dtype) for name, entry in fresh["tasks"].items()
    }
    passed = not problems and all(t["verdict"] != "fail" for t in checked.values())
    return {
        "format": FORMAT,
        "verdict": "pass" if passed else "fail",
        "seed": seed,
        "seed_drawn": drawn,
        "started": started,
        "date": _now(),
        "iclbench_version": iclbench.__version__,
        "suite_version": SUITE_VERSION,
        "torch_version": torch.__version__,
        "model": {k: fresh["model"][k] for k in IDENTITY},
        "dtype": dtype,
        "prompts": prompts,
        "rule": {"z": Z, "false_alarm": FALSE_ALARM, "comparisons": COMPARISONS, "floor_db": FLOOR_DB[dtype]},
        "problems": problems,
        "tasks": checked,
    }


def status(report: Any, public: dict[str, Any]) -> str:
    """What the leaderboard shows for a submission's report: "verified <date>", "failed <date>" or "not verified".

    A report counts when it is of this suite, of the files `public` was made with, on every task,
    with every prompt and a seed drawn at verification time; a failure always shows.
    """
    if not isinstance(report, dict) or report.get("format") != FORMAT or not isinstance(report.get("date"), str):
        return "not verified"
    date = report["date"][:10]
    if report.get("verdict") == "fail":
        return f"failed {date}"
    model = report.get("model")
    same = isinstance(model, dict) and all(model.get(k) == public["model"].get(k) for k in IDENTITY)
    complete = isinstance(report.get("tasks"), dict) and set(report["tasks"]) == set(TASKS)
    counts = (
        report.get("verdict") == "pass"
        and report.get("suite_version") == SUITE_VERSION
        and report.get("prompts") is None
        and report.get("seed_drawn") is True
    )
    if counts and same and complete:
        return f"verified {date}"
    return "not verified"


def summary_lines(report: dict[str, Any], folder: Path) -> list[str]:
    """One line per task and one overall line."""
    lines = []
    for name, t in report["tasks"].items():
        if t["verdict"] == "fail":
            lines.append(f"{name}: FAIL: {t['reason']}")
        elif t["verdict"] == "unsupported":
            lines.append(f"{name}: unsupported")
        else:
            n = str(TASKS[name].spec.nominal)
            n = n if n in t["lengths"] else next(iter(t["lengths"]))
            c = t["lengths"][n]
            lines.append(
                f"{name}: pass (n={n}: public {c['public_db']:.1f} dB, fresh {c['fresh_db']:.1f} dB, "
                f"difference {c['difference_db']:.2f} dB, tolerance {c['tolerance_db']:.2f} dB)"
            )
    lines += [f"error: {p}" for p in report["problems"]]
    failed = sum(t["verdict"] == "fail" for t in report["tasks"].values())
    problems = len(report["problems"])
    verdict = (
        "verified"
        if report["verdict"] == "pass"
        else f"FAILED verification ({failed} task(s), {problems} other problem(s))"
    )
    lines.append(f"{folder}: {verdict} on fresh data, seed {report['seed']}")
    return lines
