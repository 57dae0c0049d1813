"""Building the leaderboard: submissions and baseline results loaded, ranked (`iclbench.leaderboard.ranking`)
and written as README, the site summary and the site (`iclbench.leaderboard.page`); the `iclbench leaderboard` command.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import multiprocessing
import os
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from tabulate import tabulate

import iclbench
from iclbench import distributed
from iclbench.leaderboard.ranking import (
    BUDGETS,
    COMPARATORS,
    CUT_FROM,
    FAMILIES,
    FAMILY_TASKS,
    FINDINGS_LINK,
    RANKING_EXAMPLE,
    RANKING_RULE,
    REFERENCES,
    SOLVERS,
    Entry,
    LeaderboardError,
    family_order,
    in_pool,
    length_db,
    rank,
    rank_text,
    site_summary,
)
from iclbench.metrics import db_array, replicates
from iclbench.plugins import sha256_file
from iclbench.results import slug
from iclbench.samples import SUFFIX, SamplesError, path_for
from iclbench.samples import load as load_samples
from iclbench.submissions import schema, verify
from iclbench.submissions.rerun import db_close
from iclbench.tasks import SUITE_VERSION, TASKS


BASELINES = Path("results/baselines")
"""Where `--run-baselines` scores the baselines by default: generated, never committed."""
SITE = Path("leaderboard")
"""Where the site is built by default: generated, never committed (the pages workflow publishes it)."""


def load_entries(
    submissions: Path, baselines: Path, left_out: list[str] | None = None, samples: Path | None = None
) -> list[Entry]:
    """Entries of every submission folder and every baseline results file; `LeaderboardError` if any is invalid.

    Per-prompt samples resolve comparisons (`attach_samples`): a baseline's are the samples file beside its results
    file, a submission's `<samples>/<submission id>.samples.safetensors`, written by CI's judge from the model's
    public predictions (`iclbench score FOLDER ... --samples FILE`; locally, `iclbench validate FOLDER --rerun
    --samples DIR`); a file in a submission folder is never read. With a
    `left_out` list, an invalid submission folder is left out instead, and one line saying where and what is
    wrong is appended to the list, as are a submission's samples that are not its results' (the row stays,
    unresolved); invalid baseline results, their samples' mismatches and repeated names still raise.
    """
    entries, problems, baseline_docs = [], [], []
    for folder in sorted(p for p in submissions.iterdir() if p.is_dir()) if submissions.is_dir() else []:
        sub, bad = schema.load(folder)
        report, unreadable = _report(folder / verify.REPORT)
        bad += unreadable
        if bad and left_out is not None:
            left_out.append(f"{folder}: left out, {len(bad)} problem(s): {'; '.join(bad)}")
            continue
        problems += bad
        if sub is not None and not bad:
            cmd = (
                f"iclbench run --model {(folder / 'model.py').as_posix()} --out results\n"
                f"iclbench validate {folder.as_posix()} --rerun  # re-runs on CPU and compares with results.json"
            )
            status = verify.status(report, sub.results)
            entry = Entry(
                f"sub-{sub.id}", sub.meta["name"], "submission", sub.results, sub.meta, cmd,
                ranked=not status.startswith("failed"), verification=status,
            )
            unmatched = attach_samples(entry, None if samples is None else samples / f"{sub.id}{SUFFIX}")
            if unmatched and left_out is not None:  # a re-run on another machine that differs: shown, unresolved
                left_out.append(f"{folder}: its per-prompt samples are left out: {'; '.join(unmatched)}")
            else:
                problems += unmatched
            entries.append(entry)
    for path in sorted(baselines.glob("*.json")) if baselines.is_dir() else []:
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            problems.append(f"{path}: not readable JSON: {exc}")
            continue
        bad = schema.check_results(doc, str(path))
        problems += bad
        if not bad:
            baseline_docs.append((doc, path))
    depths = {k for e in entries for k in e.depths}
    for doc, path in baseline_docs:
        rows = _baseline_rows(doc, baselines, depths)
        problems += attach_samples(rows[0], path_for(path))
        entries += rows
    names = [e.name for e in entries]
    problems += [f"two models are called {n!r}: names must be unique" for n in sorted(set(names)) if names.count(n) > 1]
    if problems:
        raise LeaderboardError("\n".join(problems))
    return entries


def attach_samples(entry: Entry, path: Path | None) -> list[str]:
    """Give `entry` the bootstrap replicates of its errors (`Entry.boot`) from the samples file at `path`, when
    there is one; return the problems that keep them out (none when there is no file).

    The samples must be of the entry's model files, suite, data and prompts, with every scored length's error
    within a re-run's tolerance of the results file's (`iclbench.submissions.rerun.db_close`: CI's re-run of a
    submission is another machine's); the replicates are then centred on the results file's errors.
    """
    if path is None or not path.is_file():
        return []
    try:
        side = load_samples(path, ("rel_err", "target_sq"))
    except SamplesError as exc:
        return [str(exc)]
    head, doc = side.header, entry.results
    model = {k: doc["model"].get(k) for k in ("name", "file_sha256", "checkpoint_sha256")}
    if head["suite_version"] != doc["suite_version"] or any(head["model"].get(k) != v for k, v in model.items()):
        return [f"{path}: samples of {head['model'].get('name')!r} on suite {head['suite_version']}, not of the "
                f"files of {entry.name!r} on suite {doc['suite_version']}"]
    cells, problems = [], []
    for task, t in doc["tasks"].items():
        if t.get("status") != "ok":
            continue
        mine = head["tasks"].get(task)
        if mine is None or mine["fingerprint"] != t["fingerprint"] or mine["n_prompts"] != t["n_prompts"]:
            problems.append(f"{path}: no samples of {task} on the data and prompts of {entry.name}'s results")
            continue
        for n in t["lengths"]:
            db = length_db(entry, task, int(n))
            if n not in mine["lengths"] or not db_close(mine["lengths"][n]["rel_err_db"], db, doc["run"]["dtype"]):
                problems.append(f"{path}: {task} n={n} differs from {entry.name}'s results ({db:.2f} dB)")
            else:
                cells.append((task, n, db - mine["lengths"][n]["rel_err_db"]))
    if problems or not cells:
        return problems
    by_prompts: dict[int, list[tuple[str, str, float]]] = {}  # one product with the bootstrap's counts per size
    for cell in cells:
        by_prompts.setdefault(len(side.get(cell[0], cell[1], "target_sq")), []).append(cell)
    for group in by_prompts.values():
        weight = torch.stack([side.get(task, n, "target_sq") for task, n, _ in group], 1)
        err = torch.stack([side.get(task, n, "rel_err") for task, n, _ in group], 1) * weight
        reps = db_array(replicates(err, weight))
        for i, (task, n, shift) in enumerate(group):
            entry.boot[task, int(n)] = reps[:, i] + shift
    return []


def _baseline_rows(doc: dict[str, Any], baselines: Path, depths: set[int]) -> list[Entry]:
    """A baseline's rows: itself (a reference for `REFERENCES` and `SOLVERS`, a ranked comparator for
    `COMPARATORS`, else a ranked baseline) and, for one of `CUT_FROM`, its unranked cuts at the submissions' other
    `depths` below its budget, named as the comparator of that budget would be (`gd@8`)."""
    name = doc["model"]["name"]
    cmd = f"iclbench run --model {doc['model']['source']} --out {baselines.as_posix()}"
    meta = {"source": doc["model"]["source"]}
    kind = "reference" if name in REFERENCES or name in SOLVERS else "comparator" if name in COMPARATORS else "baseline"
    rows = [Entry(f"base-{slug(name)}", name, kind, doc, meta, cmd, ranked=kind != "reference")]
    if name in CUT_FROM:
        solver = name.split("@")[0]
        for k in sorted(depths - set(BUDGETS)):
            if k < rows[0].max_steps:
                label = f"{solver}@{k}"
                rows.append(Entry(f"base-{slug(label)}", label, "cut", doc, meta, cmd, budget=k, ranked=False))
    return rows


def _report(path: Path) -> tuple[Any, list[str]]:
    """A submission's verification report (None when there is none), or why it cannot be read."""
    if not path.is_file():
        return None, []
    try:
        return json.loads(path.read_text()), []
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, [f"{path}: not readable JSON: {exc}"]


def inputs_digest(submissions: Path, baselines: Path, samples: Path | None = None) -> str:
    """SHA-256 over the names and contents of every input file, the suite version and iclbench's version."""
    h = hashlib.sha256(f"{SUITE_VERSION}\n{iclbench.__version__}\n".encode())
    roots = [(submissions, "*/**/*"), (baselines, "*.json"), (baselines, f"*{SUFFIX}")]
    for root, pattern in roots + ([] if samples is None else [(samples, f"*{SUFFIX}")]):
        files = (
            sorted(p for p in root.glob(pattern) if p.is_file() and "__pycache__" not in p.parts)
            if root.is_dir()
            else []
        )
        for p in files:
            h.update(f"{p.relative_to(root).as_posix()}:{sha256_file(p)}\n".encode())
    return h.hexdigest()


def _fmt(v: float | int | None, digits: int = 1) -> str:
    return "–" if v is None else str(v) if isinstance(v, int) else f"{v:.{digits}f}"


def tables(entries: list[Entry]) -> dict[str, str]:
    """Markdown tables, one per family (its ranks and scores), rendered with tabulate."""
    out = {}
    for fam, names in FAMILY_TASKS.items():
        rows = []
        for e in family_order(entries, fam):
            by_n = e.length_scores[fam]
            worst = min(by_n, key=by_n.__getitem__)
            rows.append([
                rank_text(e.family_ranks[fam]), e.name, e.kind, e.verification, _fmt(e.family_scores[fam], 2),
                f"{by_n[worst]:.2f} (n={worst})", *[_fmt(e.scores[n]) for n in names],
            ])
        headers = ["rank", "model", "kind", "verification", "score (%)", "worst length (%)",
                   *[f"{n} (n={TASKS[n].spec.nominal}, dB)" for n in names]]
        out[fam] = tabulate(rows, headers, tablefmt="github", disable_numparse=True)
    return out


def readme(entries: list[Entry], built: str) -> str:
    """The leaderboard's README.md."""
    t = tables(entries)
    parts = [
        "# iclbench leaderboard",
        f"Suite {SUITE_VERSION}, built {built} by `iclbench leaderboard`; do not edit by hand. "
        "Every number is in [leaderboard.json](leaderboard.json).",
        "Scores are the percentage of the gap closed between the zero predictor (0 %) and each task's best exact "
        "reference (100 %), over every prompt length (higher is better); a rank is a range where comparisons on "
        "the same prompts cannot tell models apart; task columns are relative errors in dB at the nominal prompt "
        "length (lower is better; 0 dB is the zero predictor); – marks a task the model does not support, or a "
        "rank or score it does not have. Verification: the submission's scores on fresh evaluation sets drawn by "
        "CI (`iclbench verify`) agree with its public ones (verified), or do not (failed: not ranked).",
        f"[Findings: what the reference transformers do]({FINDINGS_LINK}).",
        "## Ranking rule",
        RANKING_RULE,
        *([f"Worked example, from the committed results: {RANKING_EXAMPLE}"] if RANKING_EXAMPLE else []),
    ]
    for fam in FAMILIES:
        parts += [f"## {fam}", t[fam]]
    pools = pool_table(entries)
    if pools:
        parts += ["## Task pools", "Models trained on a finite pool of tasks (`iclbench train --task-pool K`), at "
                  "the nominal length: the error on prompts of the pool's tasks (never ranked; a verified model's "
                  "in-pool errors are fresh-draw verified with the rest), and on the evaluation set, whose tasks are "
                  "all new (the task's column above).",
                  pools]
    return "\n\n".join(parts) + "\n"


def links(repository: str | None, findings: bool) -> dict[str, str]:
    """The links every page carries: the repository, SUBMITTING.md and the findings. Without a repository URL
    (a local build), paths of the checkout the site is built in (`SITE`, one folder below its root)."""
    base = repository.rstrip("/") + "/blob/HEAD/" if repository else "../"
    return {
        "repository": repository or "..",
        "submitting": base + "SUBMITTING.md",
        "findings": "findings.html" if findings else base + "docs/findings.md",
    }


def pool_table(entries: list[Entry]) -> str:
    """A Markdown table of the in-pool and out-of-pool errors of the models that declare a pool of tasks, with each
    model's verification ("" if none)."""
    rows = [[e.name, task, pool["size"], pool["seed"], _fmt(pool["db"], 2), _fmt(e.scores[task], 2), e.verification]
            for e in entries for task in TASKS if (pool := in_pool(e, task)) is not None]
    headers = ["model", "task", "pool size", "pool seed", "in pool (dB)", "out of pool (dB)", "verification"]
    return tabulate(rows, headers, tablefmt="github", disable_numparse=True) if rows else ""


def build(
    submissions: Path,
    baselines: Path,
    out: Path,
    findings: Path | None = None,
    left_out: list[str] | None = None,
    samples: Path | None = None,
    repository: str | None = None,
    plots: bool = True,
) -> list[Entry]:
    """Write README.md, leaderboard.json (the site summary) and the site (`iclbench.leaderboard.page.write`:
    index.html, models/, plots/, leaderboard.csv and, from the Markdown `findings`, findings.html) under `out`.

    `left_out` and `samples`: as in `load_entries`; `repository`: its URL, which every page links to (`links`);
    without `plots`, none is drawn (`check`).
    """
    from iclbench.leaderboard import page

    if findings is not None and not findings.is_file():
        raise LeaderboardError(f"{findings}: no such findings page")
    if samples is not None and not samples.is_dir():
        raise LeaderboardError(f"{samples}: no such folder of samples")
    entries = rank(load_entries(submissions, baselines, left_out, samples))
    built = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    digest = inputs_digest(submissions, baselines, samples)
    site = site_summary(entries, built, digest, links(repository, findings is not None))
    out.mkdir(parents=True, exist_ok=True)
    (out / "README.md").write_text(readme(entries, built))
    (out / "leaderboard.json").write_text(json.dumps(site, separators=(",", ":"), allow_nan=False) + "\n")
    page.write(site, entries, out, findings, plots)
    return entries


def check(submissions: Path, baselines: Path, samples: Path | None = None) -> list[str]:
    """Why the leaderboard cannot be built as it is: one line per invalid submission folder or baseline results
    file (an empty list when every folder is valid and the site builds, into a temporary folder). The plots are
    not drawn: they show numbers that the build has read and checked, and take most of its time."""
    left_out: list[str] = []
    with tempfile.TemporaryDirectory(prefix="iclbench-leaderboard-") as tmp:
        try:
            build(submissions, baselines, Path(tmp), left_out=left_out, samples=samples, plots=False)
        except LeaderboardError as exc:
            return left_out + str(exc).splitlines()
    return left_out


def run_baselines(
    names: list[str], baselines: Path, device: str, jobs: int = 1, tasks: list[str] | None = None,
    prompts: int | None = None,
) -> list[str]:
    """Score the named baselines (all available when empty) on the full suite into `baselines`, each results file
    with its per-prompt samples beside it (which resolve the board's comparisons); return failures.

    `jobs` baselines at a time, each in a process of its own (with its model's worker), one line on stderr
    as each task and each baseline is done; the results files are those of one baseline after another.
    `tasks` and `prompts` limit the run (a few tasks, the first prompts). Launched by torchrun (with
    `jobs` 1), each baseline's tasks are split across the ranks (`iclbench.runner.run`)."""
    from iclbench.plugins import baseline_names

    names = names or baseline_names()
    chosen = tasks or list(TASKS)
    if jobs <= 1 or len(names) <= 1:
        return [f for name in names for f in _score_baseline(name, baselines, device, chosen, prompts)]
    spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: no state inherited from this one
    jobs = min(jobs, len(names))
    with ProcessPoolExecutor(jobs, mp_context=spawn, initializer=_share_cores, initargs=(jobs,)) as pool:
        runs = [pool.submit(_score_baseline, name, baselines, device, chosen, prompts) for name in names]
        return [f for done in runs for f in done.result()]


def _share_cores(jobs: int) -> None:
    """Give a process of `run_baselines` its share of the cores for torch's threads (each model's worker has its own
    limit): with every process at one thread per core, the jobs' threads outnumber the cores and wait on each
    other, and two jobs side by side took longer than one after another."""
    torch.set_num_threads(max(1, default_jobs() // jobs))


def _score_baseline(name: str, baselines: Path, device: str, tasks: list[str], prompts: int | None) -> list[str]:
    """`run_baselines` for one baseline: its failures, and a progress line on stderr per task and at the end."""
    from iclbench.plugins import PluginError
    from iclbench.runner import RunConfig, run
    from iclbench.worker import IsolatedModel

    def progress(line: str) -> None:
        print(f"run-baselines: {line}", file=sys.stderr, flush=True)

    start = time.perf_counter()
    try:
        model = IsolatedModel(name)
    except PluginError as exc:
        progress(f"{name}: not scored: {exc}")
        return [f"{name}: {exc}"]
    try:
        out, cfg = baselines / f"{slug(model.name)}.json", RunConfig(device, prompts=prompts)
        report = lambda task, entry, kept: progress(f"{name} {task}: {entry['status']}")  # noqa: E731
        doc = run(model, [TASKS[t] for t in tasks], cfg, out, progress=False, report=report, samples={})
    finally:
        model.close()
    statuses = Counter(entry["status"] for entry in doc["tasks"].values())
    tally = ", ".join(f"{count} {status}" for status, count in sorted(statuses.items()))
    progress(f"{name}: done in {time.perf_counter() - start:.1f} s ({tally})")
    return [f"{name}: {t['error']}" for t in doc["tasks"].values() if t["status"] == "failed"]


def default_jobs() -> int:
    """The CPU cores this process may run on: `--jobs`' default."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _jobs(text: str) -> int:
    try:
        jobs = int(text)
    except ValueError:
        jobs = 0
    if jobs < 1:
        raise argparse.ArgumentTypeError(f"expected a number of processes (at least 1), got {text}")
    return jobs


def cmd_leaderboard(args: argparse.Namespace) -> int:
    failures = []
    if args.run_baselines is not None and not args.check:
        if distributed.world_size() > 1 and (args.jobs or 1) > 1:
            print("iclbench leaderboard: --jobs runs baselines side by side in one process's children; under "
                  "torchrun the ranks split each baseline's tasks: use one or the other", file=sys.stderr)
            return 2
        jobs = args.jobs or (1 if distributed.world_size() > 1 else default_jobs())
        failures = run_baselines(args.run_baselines, args.baselines, args.device, jobs)
    if distributed.rank() > 0:  # launched by torchrun: rank 0 alone checks, reports and builds the site
        return 0
    if args.check:
        problems = check(args.submissions, args.baselines, args.samples)
        for message in problems:
            print(f"error: {message}", file=sys.stderr)
        print(f"{args.submissions}: {f'INVALID, {len(problems)} problem(s)' if problems else 'every folder valid'}")
        return 1 if problems else 0
    for message in failures:
        print(f"warning: baseline not scored: {message}", file=sys.stderr)
    left_out: list[str] = []
    try:
        entries = build(
            args.submissions, args.baselines, args.out, args.findings or _default_findings(), left_out, args.samples,
            args.repository or _default_repository(),
        )
    except LeaderboardError as exc:
        for message in str(exc).splitlines():
            print(f"error: {message}", file=sys.stderr)
        return 1
    for message in left_out:
        print(f"warning: {message}", file=sys.stderr)
    subs = sum(e.kind == "submission" for e in entries)
    print(
        f"{args.out}: {subs} submission(s), {len(entries) - subs} baseline row(s), suite {SUITE_VERSION}"
        + (f"; {len(left_out)} invalid submission folder(s) left out" if left_out else "")
    )
    return 0


def _default_findings() -> Path | None:
    path = Path("docs/findings.md")
    return path if path.is_file() else None


def _default_repository() -> str | None:
    """The repository URL of the installed package's metadata (pyproject's `[project.urls] Repository`), if any."""
    try:
        urls = importlib.metadata.metadata("iclbench").get_all("Project-URL") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    labelled = (url.partition(",") for url in urls)
    return next((url.strip() for label, _, url in labelled if label.strip() == "Repository"), None)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `iclbench leaderboard`."""
    p = sub.add_parser("leaderboard", help="build the leaderboard site (or --check that it can be built)")
    p.add_argument("--submissions", type=Path, default=Path("submissions"), help="folder of submission folders")
    p.add_argument("--baselines", type=Path, default=BASELINES, help="folder of baseline results")
    p.add_argument("--out", type=Path, default=SITE, help="output folder: the site (built, never committed)")
    p.add_argument(
        "--check",
        action="store_true",
        help="build nothing; fail, naming each, if a submission folder is invalid or the site (plots aside) fails",
    )
    p.add_argument(
        "--run-baselines",
        nargs="*",
        metavar="NAME",
        help="first score these baselines (all available when none are named) into --baselines",
    )
    p.add_argument("--device", default="auto", help="with --run-baselines: auto, cpu, cuda or cuda:N")
    p.add_argument(
        "--jobs",
        type=_jobs,
        metavar="N",
        help="with --run-baselines: baselines scored at a time, each in its own process (default: the CPU cores "
        "available, 1 under torchrun)",
    )
    p.add_argument(
        "--findings", type=Path, help="Markdown rendered as the site's findings.html (default: docs/findings.md if any)"
    )
    p.add_argument(
        "--samples",
        type=Path,
        metavar="DIR",
        help="folder of the submissions' per-prompt samples, <id>.samples.safetensors, from CI's judge "
        "(`iclbench score FOLDER ... --samples DIR/<id>.samples.safetensors`) or a re-run (`iclbench validate FOLDER "
        "--rerun --samples DIR`); they resolve comparisons (baselines' are beside their results)",
    )
    p.add_argument(
        "--repository",
        metavar="URL",
        help="the repository every page links to (default: the installed package's Repository URL)",
    )
    p.set_defaults(func=cmd_leaderboard)
