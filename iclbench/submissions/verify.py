"""Fresh-draw verification: a model scored by the verifier on the public evaluation sets and on sets
drawn with a seed chosen at verification time, and its per-prompt errors on the two compared.

A model that looked the public answers up, or memorised them, scores well on the public sets
only; an honest model's per-prompt errors on fresh sets of the same distributions are
exchangeable with its public ones. `Task.generate(seed)` draws the fresh sets (verification
stream of `seed`, drawn with `secrets` when not given), `iclbench.cache.fresh_sets` makes the
runner use them.

Per task, in one worker (CPU, the results' dtype, every prompt length scored with `predict`
alone, as `validate --rerun` does), the verifier:

1. scores the model on the public set, keeping its per-prompt errors (`iclbench.samples`), and
   checks that it reproduces every metric of `results.json` (the tolerances of
   `iclbench.submissions.rerun`): the claim that is ranked is the one verified;
2. scores it on the fresh set, keeping its per-prompt errors (on a task of the model's declared pool of training
   tasks, both runs also score in-pool prompts: the public ones, and fresh ones of the same pool drawn from the
   seed, `iclbench.cache.pool_set`);
3. compares the two per prompt length (and the public and fresh in-pool prompts per length) with
   `iclbench.submissions.rank_test.compare_errors`, a rank test and a tail test whose thresholds are fixed
   by the numbers of prompts and lengths, not by the errors the model makes (an honest model fails at
   most 1% of verifications of the suite, but for a fraction 1% of public draws).

A task fails when the public run does not reproduce results.json, when it is scored on one side
only or on other lengths, or when a length's test rejects.

The report (`REPORT`, written beside `results.json` unless told otherwise) holds the seed, the
date, the versions, the fresh sets' fingerprints, the rule's constants and, per task and length,
the claimed, public and fresh scores, the shift, both tests and the verdict. The leaderboard reads
it (`status`); only CI writes it.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

import torch

import iclbench
from iclbench import results
from iclbench import samples as samples_file
from iclbench import tasks as task_registry
from iclbench.cache import fresh_sets
from iclbench.plugins import PluginError
from iclbench.runner import RunConfig, Samples, ScoredModel, run
from iclbench.sandbox import SandboxError
from iclbench.submissions import rank_test
from iclbench.submissions.rank_test import compare_errors
from iclbench.submissions.rerun import FLOOR_DB, check_rerun_data
from iclbench.submissions.rerun import compare_task as reproduction
from iclbench.tasks import SUITE_VERSION, TASKS, Task
from iclbench.tasks.family import VERIFY_SEED_BITS
from iclbench.worker import IsolatedModel

FORMAT = "iclbench-verification"
REPORT = "verification.json"
RULE = "rank-and-tail-1"
"""The name of the comparison rule (`iclbench.submissions.rank_test`), recorded in every report."""
IDENTITY = ("name", "file_sha256", "checkpoint_sha256", "task_pool")
"""The fields of `model` in results that name the files scored and the pool of training tasks the model declares."""

TaskReport = Callable[[str, dict[str, Any], float], None]
"""Called with each task's name, its entry in the report and the seconds it took, as it is done."""


class VerifyError(ValueError):
    """Verification that cannot be done: the message says why, on one line."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def compare_task(
    name: str,
    claimed: Any,
    public: tuple[dict[str, Any], Samples],
    fresh: tuple[dict[str, Any], Samples],
    dtype: str,
) -> dict[str, Any]:
    """A task's verdict ("pass", "fail" or "unsupported"), with a reason when it fails, and per-length comparisons
    (`lengths`; and `in_pool`, on a task of the model's declared pool: its public in-pool prompts against fresh ones).

    `claimed`: the task's entry in results.json; `public` and `fresh`: the verifier's entry and samples of its
    runs on the public and the fresh set.
    """
    (pub, pub_samples), (new, new_samples) = public, fresh
    out: dict[str, Any] = {"fingerprint": new.get("fingerprint")}
    if not isinstance(claimed, dict):
        return {**out, "verdict": "fail", "reason": "not in results.json"}
    problems = check_rerun_data(name, claimed, pub) or reproduction(name, claimed, pub, dtype)
    if problems:
        return {**out, "verdict": "fail", "reason": "results.json is not reproduced: " + "; ".join(problems)}
    if pub["status"] == new["status"] == "unsupported":
        return {**out, "verdict": "unsupported"}
    if pub["status"] != "ok" or new["status"] != "ok":
        why = f": {new['error']}" if new.get("error") else ""
        reason = f"status {pub['status']!r} on the public set, {new['status']!r} on the fresh set{why}"
        return {**out, "verdict": "fail", "reason": reason}
    if sorted(pub["lengths"]) != sorted(new["lengths"]):
        reason = f"lengths {sorted(pub['lengths'])} on the public set, {sorted(new['lengths'])} on the fresh set"
        return {**out, "verdict": "fail", "reason": reason}
    shown = lambda e: None if e is None else (e["size"], e["seed"], sorted(e["lengths"]))  # noqa: E731
    pub_pool, new_pool = pub.get("in_pool"), new.get("in_pool")
    if shown(pub_pool) != shown(new_pool):
        reason = (f"in-pool prompts (pool size, seed, lengths) {shown(pub_pool)} on the public side, "
                  f"{shown(new_pool)} on the fresh one")
        return {**out, "verdict": "fail", "reason": reason}

    def compared(key: str, lengths: list[str], claims: dict[str, Any]) -> dict[str, Any]:
        per_prompt = lambda s, n: (s[f"{key}/{n}/rel_err"], s[f"{key}/{n}/target_sq"])  # noqa: E731
        return {n: {"claimed_db": claims[n]["rel_err"]["db"],
                    **compare_errors(per_prompt(pub_samples, n), per_prompt(new_samples, n), dtype)} for n in lengths}

    out["lengths"] = compared(name, list(new["lengths"]), claimed["lengths"])
    failed = [_length_reason(n, c) for n, c in out["lengths"].items() if c["verdict"] == "fail"]
    if new_pool is not None:
        out["in_pool"] = compared(f"{name}/in_pool", list(new_pool["lengths"]), claimed["in_pool"]["lengths"])
        failed += [_length_reason(n, c, "in pool, ") for n, c in out["in_pool"].items() if c["verdict"] == "fail"]
    out["verdict"] = "fail" if failed else "pass"
    if failed:
        out["reason"] = "; ".join(failed)
    return out


def _length_reason(n: str, c: dict[str, Any], where: str = "") -> str:
    return (
        f"{where}n={n}: better on the public set than on the fresh one: shift {c['shift_db']:+.2f} dB, rank z "
        f"{c['rank_z']:.2f}, tail z {c['tail_z']:.2f} (threshold {rank_test.Z:.2f}); scores: public "
        f"{c['public_db']:.1f} dB, fresh {c['fresh_db']:.1f} dB"
    )


def _scored(
    model: ScoredModel, task: Task, cfg: RunConfig, progress: bool
) -> tuple[dict[str, Any], dict[str, Any], Samples]:
    """The model's identity (`IDENTITY`) in one task's run, the run's results document and its per-prompt samples."""
    samples: Samples = {}
    doc = run(model, [task], cfg, progress=progress, samples=samples)
    return {k: doc["model"][k] for k in IDENTITY}, doc, samples.get(task.spec.name, {})


def verify(
    model: str,
    public: dict[str, Any],
    seed: int | None = None,
    patterns: list[str] | None = None,
    prompts: int | None = None,
    batch_size: int = 512,
    progress: bool = False,
    sandbox: bool = True,
    report: TaskReport | None = None,
) -> dict[str, Any]:
    """Score `model` (a `--model` string) on the public and on fresh sets of the tasks matching `patterns`
    (all by default), in one worker, compare with `public`, its results document, and return the report (`judge`).

    `seed`: the verification seed, drawn with `secrets` when None. The worker runs in the sandbox
    (`iclbench.sandbox`) unless `sandbox` is False. Raises `VerifyError` as `judge` does, and when a pattern
    matches no task, the sandbox cannot be made or the model cannot be loaded.
    """
    drawn = seed is None
    seed = secrets.randbits(VERIFY_SEED_BITS) if seed is None else seed
    try:
        chosen = task_registry.select(patterns)
        isolated = IsolatedModel(model, one_pass=False, sandbox=sandbox)
    except (PluginError, task_registry.UnknownTaskError, SandboxError) as exc:
        raise VerifyError(str(exc)) from None
    try:
        out = judge(isolated, isolated, public, seed, drawn, chosen, prompts, batch_size, progress, report)
    finally:
        isolated.close()
    return {**out, "sandboxed": isolated.sandboxed}


def judge(
    public_model: ScoredModel,
    fresh_model: ScoredModel,
    public: dict[str, Any],
    seed: int,
    drawn: bool,
    chosen: list[Task],
    prompts: int | None = None,
    batch_size: int = 512,
    progress: bool = False,
    report: TaskReport | None = None,
    samples: Path | None = None,
) -> dict[str, Any]:
    """The report of a model scored on the public sets (`public_model`) and on the fresh sets of verification seed
    `seed` (`fresh_model`) of the tasks `chosen`, compared with `public`, its results document. Each is a worker
    (one and the same for `verify`), or predictions replayed (`iclbench.predictions.ReplayedModel`).

    The runs are on the CPU in the results' dtype: the public one on the prompts results.json was scored on, the
    fresh one on the first `prompts` (all by default); `drawn` records whether the seed was drawn at random for
    this verification. `progress`: the runner's progress bars; `report` is called as each task is done. Raises
    `VerifyError` when the results are not a results document or of another suite, or the seed is out of range.
    """
    try:
        results.check(public, "results.json")
    except results.ResultsError as exc:
        raise VerifyError(str(exc)) from None
    if public["suite_version"] != SUITE_VERSION:
        raise VerifyError(
            f"results.json was made on suite {public['suite_version']!r}; this is suite {SUITE_VERSION!r}"
        )
    dtype = public["run"]["dtype"]
    if not 0 <= seed < 2**VERIFY_SEED_BITS:
        raise VerifyError(f"--seed {seed}: expected an integer from 0 to 2^{VERIFY_SEED_BITS} - 1")
    public_cfg = RunConfig("cpu", dtype, batch_size, public["run"].get("prompts"))
    fresh_cfg = RunConfig("cpu", dtype, batch_size, prompts)
    started = _now()
    checked, identities = {}, []
    public_run: dict[str, Any] = {}
    public_samples: Samples = {}
    for task in chosen:
        name, start = task.spec.name, time.perf_counter()
        identity, doc, pub_samples = _scored(public_model, task, public_cfg, progress)
        pub = doc["tasks"][name]
        public_run = {**doc, "tasks": {**public_run.get("tasks", {}), name: pub}}
        if pub_samples:
            public_samples[name] = pub_samples
        identities.append(identity)
        with fresh_sets(seed):  # the model receives prompts only: it never learns the seed
            identity, doc, new_samples = _scored(fresh_model, task, fresh_cfg, progress)
        new = doc["tasks"][name]
        identities.append(identity)
        checked[name] = compare_task(name, public["tasks"].get(name), (pub, pub_samples), (new, new_samples), dtype)
        if report is not None:
            report(name, checked[name], time.perf_counter() - start)
    if samples is not None and public_run:
        samples.parent.mkdir(parents=True, exist_ok=True)
        samples_file.write(samples, public_run, public_samples)
    problems = list(dict.fromkeys(
        f"model.{k} is {v!r} when verified, {public['model'].get(k)!r} in results.json"
        for identity in identities
        for k, v in identity.items()
        if v != public["model"].get(k)
    ))
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
        "model": identities[0],
        "dtype": dtype,
        "prompts": prompts,
        "rule": {
            "name": RULE,
            "false_alarm": rank_test.FALSE_ALARM,
            "comparisons": rank_test.COMPARISONS,
            "tests": rank_test.TESTS,
            "alpha": rank_test.ALPHA,
            "z": rank_test.Z,
            "floor_db": FLOOR_DB[dtype],
        },
        "problems": problems,
        "tasks": checked,
    }


def status(report: Any, public: dict[str, Any]) -> str:
    """What the leaderboard shows for a submission's report: "verified <date>", "failed <date>" or "not verified".

    A report counts when it is of this suite and of the current rule (its name and threshold), of the files `public`
    was made with, on every task, with every prompt and a seed drawn at verification time; a failure always shows.
    """
    if not isinstance(report, dict) or report.get("format") != FORMAT or not isinstance(report.get("date"), str):
        return "not verified"
    date = report["date"][:10]
    if report.get("verdict") == "fail":
        return f"failed {date}"
    model = report.get("model")
    same = isinstance(model, dict) and all(model.get(k) == public["model"].get(k) for k in IDENTITY)
    complete = isinstance(report.get("tasks"), dict) and set(report["tasks"]) == set(TASKS)
    rule = report.get("rule")
    counts = (
        report.get("verdict") == "pass"
        and report.get("suite_version") == SUITE_VERSION
        and isinstance(rule, dict) and rule.get("name") == RULE and rule.get("z") == rank_test.Z
        and report.get("prompts") is None
        and report.get("seed_drawn") is True
    )
    if counts and same and complete:
        return f"verified {date}"
    return "not verified"


def task_line(name: str, entry: dict[str, Any]) -> str:
    """One task's verdict on one line: at its nominal length when it passes (and on its in-pool prompts, for a task of
    a declared pool), every failed length's reason otherwise."""
    if entry["verdict"] == "fail":
        return f"{name}: FAIL: {entry['reason']}"
    if entry["verdict"] == "unsupported":
        return f"{name}: unsupported"
    n = str(TASKS[name].spec.nominal)
    n = n if n in entry["lengths"] else next(iter(entry["lengths"]))
    c, pooled = entry["lengths"][n], entry.get("in_pool", {}).get(n)
    in_pool = f"; in pool: public {pooled['public_db']:.1f} dB, fresh {pooled['fresh_db']:.1f} dB" if pooled else ""
    return (
        f"{name}: pass (n={n}: public {c['public_db']:.1f} dB, fresh {c['fresh_db']:.1f} dB, shift "
        f"{c['shift_db']:+.2f} dB, rank z {c['rank_z']:.2f}, tail z {c['tail_z']:.2f}{in_pool})"
    )


class TaskLines:
    """`verify`'s `report` that prints one line per task as it is verified (`task_line`, numbered, with the seconds
    it took) on `stream`, flushed at once: for logs, where a progress bar shows nothing."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total, self.stream, self.count = total, stream, 0

    def __call__(self, name: str, entry: dict[str, Any], seconds: float) -> None:
        self.count += 1
        print(f"[{self.count}/{self.total}] {task_line(name, entry)}, {seconds:.1f} s", file=self.stream, flush=True)


def summary_lines(report: dict[str, Any], folder: Path) -> list[str]:
    """One line per task and one overall line."""
    lines = [task_line(name, t) for name, t in report["tasks"].items()]
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
