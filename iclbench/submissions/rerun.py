"""Re-running a submitted model and comparing every metric with its results file.

Tolerances: the evaluation sets and the bootstrap are fixed-seed, so a re-run differs
only by floating-point round-off (another device, another BLAS, batch size). Every
number a metric holds is compared: errors in dB (`rel_err`, `recovery` and their 90%
intervals, `steps_rel_err_db`) and the ratios they are made from (`value`, `ci90`, in
dB) must agree within `TOL_DB`, or differ by at most the run's dtype round-off floor
`ROUNDOFF[dtype]` in linear terms (so two values both below the floor count as equal);
error rates and their intervals agree within `TOL_RATE`.

The round-off floor is eps², eps the dtype's machine epsilon: a prediction carries a
relative round-off of at least eps, so a relative squared error below eps² (-138.5 dB
in float32, -313 dB in float64, that is below the -300 dB reporting floor) is
round-off, not a property of the model. Above it, nothing is left unchecked: -150 dB
claimed against -88 dB re-run is a difference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from iclbench import samples as samples_file
from iclbench import tasks as task_registry
from iclbench.cache import USE_AN_EXPORT
from iclbench.metrics import db
from iclbench.plugins import PluginError
from iclbench.runner import RunConfig, run
from iclbench.sandbox import SandboxError
from iclbench.tasks import FINGERPRINTS
from iclbench.worker import IsolatedModel, Limits

TOL_DB = 0.1
TOL_RATE = 0.002
ROUNDOFF = {dtype: float(torch.finfo(getattr(torch, dtype)).eps) ** 2 for dtype in ("float32", "float64")}
"""The round-off floor of a relative squared error computed in each dtype: eps²."""
FLOOR_DB = {dtype: db(eps2) for dtype, eps2 in ROUNDOFF.items()}
"""`ROUNDOFF` in dB (-138.5 in float32): errors below it are round-off, equal to each other."""


def db_close(a: float, b: float, dtype: str) -> bool:
    """Whether two errors in dB agree: within `TOL_DB`, or within the dtype's round-off floor in linear terms."""
    return abs(a - b) <= TOL_DB or (max(a, b) < 0 and abs(10 ** (a / 10) - 10 ** (b / 10)) <= ROUNDOFF[dtype])


def _pairs(metric: str, old: Any, new: Any, dtype: str) -> list[tuple[str, float, float, bool]]:
    """(what, old, new, close) for every number of one metric."""
    if metric in ("rel_err", "recovery"):
        values = [
            ("db", old["db"], new["db"]),
            ("value", db(old["value"]), db(new["value"])),
            *[(f"ci90_db[{i}]", old["ci90_db"][i], new["ci90_db"][i]) for i in (0, 1)],
            *[(f"ci90[{i}]", db(old["ci90"][i]), db(new["ci90"][i])) for i in (0, 1)],
        ]
        return [(w, a, b, db_close(a, b, dtype)) for w, a, b in values]
    if metric == "error_rate":
        values = [("value", old["value"], new["value"])] + [
            (f"ci90[{i}]", old["ci90"][i], new["ci90"][i]) for i in (0, 1)
        ]
        return [(w, a, b, abs(a - b) <= TOL_RATE) for w, a, b in values]
    if metric == "steps_rel_err_db":
        return [(f"[{k}]", a, b, db_close(a, b, dtype)) for k, (a, b) in enumerate(zip(old, new))]
    raise KeyError(metric)


def compare_task(name: str, old: dict[str, Any], new: dict[str, Any], dtype: str) -> list[str]:
    """Differences between a task's submitted entry and its re-run in `dtype`, beyond the tolerances."""
    if old["status"] != new["status"]:
        extra = f": {new['error']}" if new.get("error") else ""
        return [f"{name}: status {old['status']!r} in results.json, {new['status']!r} on re-run{extra}"]
    if old.get("unsupported_lengths", []) != new.get("unsupported_lengths", []):
        return [
            f"{name}: unsupported lengths {old.get('unsupported_lengths')} in results.json, "
            f"{new.get('unsupported_lengths')} on re-run"
        ]
    problems = compare_lengths(name, old.get("lengths", {}), new.get("lengths", {}), dtype)
    pool_old, pool_new = old.get("in_pool"), new.get("in_pool")
    declared = lambda p: None if p is None else (p["size"], p["seed"], p["n_prompts"])  # noqa: E731
    if declared(pool_old) != declared(pool_new):
        problems.append(f"{name}: in-pool prompts (size, seed, prompts) {declared(pool_old)} in results.json, "
                        f"{declared(pool_new)} on re-run")
    elif pool_new is not None:
        problems += compare_lengths(f"{name} (in pool)", pool_old["lengths"], pool_new["lengths"], dtype)
    return problems


def compare_lengths(name: str, old: dict[str, Any], new: dict[str, Any], dtype: str) -> list[str]:
    """Differences between submitted metrics per length `old` and their re-run `new`, beyond the tolerances."""
    if sorted(old) != sorted(new):
        return [f"{name}: lengths {sorted(old)} in results.json, {sorted(new)} on re-run"]
    problems = []
    for n, metrics in new.items():
        submitted = old.get(n, {})
        if set(submitted) != set(metrics):
            problems.append(f"{name} n={n}: metrics {sorted(submitted)} in results.json, {sorted(metrics)} on re-run")
            continue
        for metric in metrics:
            if metric == "steps_rel_err_db" and len(submitted[metric]) != len(metrics[metric]):
                problems.append(
                    f"{name} n={n}: {len(submitted[metric])} steps in results.json, {len(metrics[metric])} on re-run"
                )
                continue
            try:
                pairs = _pairs(metric, submitted[metric], metrics[metric], dtype)
            except KeyError:
                problems.append(f"{name} n={n}: metric {metric!r} cannot be compared (unknown to this iclbench)")
                continue
            problems += [
                f"{name} n={n}: {metric}.{what} is {a:.6g} in results.json, {b:.6g} on re-run"
                for what, a, b, close in pairs
                if not close
            ]
    return problems


def check_rerun_data(name: str, old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Whether a task was re-run on the suite's data and on the data of the submitted results."""
    fingerprint = new.get("fingerprint")
    if fingerprint is None:  # not scored: nothing was read
        return []
    if fingerprint != FINGERPRINTS.get(name):
        return [
            f"{name}: the re-run's evaluation set has fingerprint {fingerprint[:16]}..., not the suite's "
            f"{str(FINGERPRINTS.get(name))[:16]}...: this machine does not reproduce the suite's data, so nothing "
            f"was compared; {USE_AN_EXPORT}, and report this machine's provenance (`iclbench list --verify`)"
        ]
    if old.get("fingerprint") not in (None, fingerprint):
        return [
            f"{name}: the re-run's evaluation set has fingerprint {fingerprint[:16]}..., results.json has "
            f"{str(old.get('fingerprint'))[:16]}...: the results were scored on other data"
        ]
    return []


def rerun_and_compare(
    model_file: Path,
    submitted: dict[str, Any],
    patterns: list[str] | None,
    batch_size: int = 512,
    limits: Limits = Limits(),
    sandbox: bool = True,
    progress: bool = False,
    samples: Path | None = None,
) -> list[str]:
    """Score the model of `model_file` on the CPU, in a worker process (in the sandbox unless `sandbox` is False),
    and list every metric that differs from `submitted`; this process never imports the model's code.

    A task re-run on data that are not the suite's, or not those of `submitted`, is reported as such
    and its metrics are not compared. The model is scored with `predict` alone, one call per length
    and chunk, never with its `predict_lengths` (`iclbench.api.Model.predict_lengths`): a prediction
    at length n that read context pairs past the n-th is then not reproduced. `progress`: a bar on a
    terminal, one line per task on stderr otherwise. With `samples`, the re-run's per-prompt samples
    (`iclbench.samples`) are written there: the leaderboard's comparisons use them (`--samples`).
    """
    from iclbench.evaluation import task_lines

    try:
        chosen = task_registry.select(patterns)
        model = IsolatedModel(str(model_file), limits, one_pass=False, sandbox=sandbox)
    except (PluginError, task_registry.UnknownTaskError, SandboxError) as exc:
        return [f"{model_file}: {exc}"]
    logged: dict[str, dict[str, torch.Tensor]] | None = None if samples is None else {}
    try:
        cfg = RunConfig("cpu", submitted["run"].get("dtype", "float32"), batch_size)
        fresh = run(model, chosen, cfg, progress=progress, samples=logged, report=task_lines(len(chosen), progress))
    finally:
        model.close()
    if samples is not None:
        samples_file.write(samples, fresh, {t: logged[t] for t in fresh["tasks"] if t in logged})
    problems = [
        f"{model_file}: re-run model.{k} is {v!r}, results.json has {submitted['model'].get(k)!r}"
        for k, v in fresh["model"].items()
        if k in ("name", "file_sha256", "checkpoint_sha256", "task_pool") and v != submitted["model"].get(k)
    ]
    for name, entry in fresh["tasks"].items():
        old = submitted["tasks"][name]
        problems += check_rerun_data(name, old, entry) or compare_task(name, old, entry, submitted["run"]["dtype"])
    return problems
