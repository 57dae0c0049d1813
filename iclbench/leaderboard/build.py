"""Building the leaderboard: submissions and baseline results loaded, ranked (`iclbench.leaderboard.ranking`)
and written as README, the site summary and the site (`iclbench.leaderboard.page`); the `iclbench leaderboard` command.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tabulate import tabulate

import iclbench
from iclbench import distributed
from iclbench.leaderboard.ranking import (
    BUDGETS,
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
    rank,
    site_summary,
)
from iclbench.plugins import sha256_file
from iclbench.results import slug
from iclbench.submissions import schema, verify
from iclbench.tasks import SUITE_VERSION, TASKS


BASELINES = Path("results/baselines")
"""Where `--run-baselines` scores the baselines by default: generated, never committed."""
SITE = Path("leaderboard")
"""Where the site is built by default: generated, never committed (the pages workflow publishes it)."""


def load_entries(submissions: Path, baselines: Path, left_out: list[str] | None = None) -> list[Entry]:
    """Entries of every submission folder and every baseline results file; `LeaderboardError` if any is invalid.

    With a `left_out` list, an invalid submission folder is left out instead, and one line saying where and
    what is wrong is appended to the list; invalid baseline results and repeated names still raise.
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
            entries.append(
                Entry(f"sub-{sub.id}", sub.meta["name"], "submission", sub.results, sub.meta, cmd, verification=status)
            )
    for path in sorted(baselines.glob("*.json")) if baselines.is_dir() else []:
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            problems.append(f"{path}: not readable JSON: {exc}")
            continue
        bad = schema.check_results(doc, str(path))
        problems += bad
        if not bad:
            baseline_docs.append(doc)
    depths = {k for e in entries for k in e.depths}
    for doc in baseline_docs:
        entries += _baseline_rows(doc, baselines, depths)
    names = [e.name for e in entries]
    problems += [f"two models are called {n!r}: names must be unique" for n in sorted(set(names)) if names.count(n) > 1]
    if problems:
        raise LeaderboardError("\n".join(problems))
    return entries


def _baseline_rows(doc: dict[str, Any], baselines: Path, depths: set[int]) -> list[Entry]:
    """A baseline's rows: itself (a reference for `REFERENCES` and `SOLVERS`, else ranked) and, for a solver, its
    ranked cuts at `BUDGETS` steps and unranked cuts at the submissions' other `depths`."""
    name = doc["model"]["name"]
    cmd = f"iclbench run --model {doc['model']['source']} --out {baselines.as_posix()}"
    meta = {"source": doc["model"]["source"]}
    reference = name in REFERENCES or name in SOLVERS
    rows = [Entry(f"base-{slug(name)}", name, "reference" if reference else "baseline", doc, meta, cmd, ranked=not reference)]
    if name in SOLVERS:
        longest = rows[0].max_steps
        for k in sorted(set(BUDGETS) | depths):
            if k < longest:
                label = f"{name} @{k} step{'s' if k > 1 else ''}"
                rows.append(Entry(f"base-{slug(name)}-at{k}", label, "baseline", doc, meta, cmd, budget=k, ranked=k in BUDGETS))
    return rows


def _report(path: Path) -> tuple[Any, list[str]]:
    """A submission's verification report (None when there is none), or why it cannot be read."""
    if not path.is_file():
        return None, []
    try:
        return json.loads(path.read_text()), []
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, [f"{path}: not readable JSON: {exc}"]


def inputs_digest(submissions: Path, baselines: Path) -> str:
    """SHA-256 over the names and contents of every input file, the suite version and iclbench's version."""
    h = hashlib.sha256(f"{SUITE_VERSION}\n{iclbench.__version__}\n".encode())
    for root, pattern in ((submissions, "*/**/*"), (baselines, "*.json")):
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
    """Markdown tables: "overall" and one per family (its own ranks and scores), rendered with tabulate."""
    out = {}
    rows = [
        [
            _fmt(e.rank),
            e.name,
            e.kind,
            e.verification,
            _fmt(e.score, 2),
            *[_fmt(e.family_scores[f], 2) for f in FAMILIES],
            f"{sum(v is not None for v in e.scores.values())}/{len(TASKS)}",
        ]
        for e in entries
    ]
    out["overall"] = tabulate(
        rows,
        ["rank", "model", "kind", "verification", "score (%)", *[f"{f} (%)" for f in FAMILIES], "tasks scored"],
        tablefmt="github",
        disable_numparse=True,
    )
    for fam, names in FAMILY_TASKS.items():
        rows = [
            [_fmt(e.family_ranks[fam]), e.name, e.kind, _fmt(e.family_scores[fam], 2), *[_fmt(e.scores[n]) for n in names]]
            for e in family_order(entries, fam)
            if any(e.scores[n] is not None for n in names)
        ]
        headers = ["rank", "model", "kind", "score (%)", *[f"{n} (n={TASKS[n].spec.nominal}, dB)" for n in names]]
        out[fam] = tabulate(rows, headers, tablefmt="github", disable_numparse=True)
    return out


def readme(entries: list[Entry], built: str) -> str:
    """The leaderboard's README.md."""
    t = tables(entries)
    parts = [
        "# iclbench leaderboard",
        f"Suite {SUITE_VERSION}, built {built} by `iclbench leaderboard`; do not edit by hand. "
        "Every number is in [leaderboard.json](leaderboard.json).",
        "Scores are mean win rates in percent (higher is better); task columns are relative errors in dB at the "
        "nominal prompt length (lower is better; 0 dB is the zero predictor); – marks a task the model does not "
        "support, or a rank or score it does not have. "
        "Verification: the submission's scores on fresh evaluation sets drawn by CI (`iclbench verify`) "
        "agree with its public ones (verified), or do not (failed).",
        f"[Findings: what the reference transformers do]({FINDINGS_LINK}).",
        "## Ranking rule",
        RANKING_RULE,
        f"Worked example, from the committed results: {RANKING_EXAMPLE}",
        "## Overall",
        t["overall"],
    ]
    for fam in FAMILIES:
        parts += [f"## {fam}", t[fam]]
    pools = pool_table(entries)
    if pools:
        parts += ["## Task pools", "Models trained on a finite pool of tasks (`iclbench train --task-pool K`), at "
                  "the nominal length: the error on prompts of the pool's tasks, and on the evaluation set, whose "
                  "tasks are all new (the task's column above).", pools]
    return "\n\n".join(parts) + "\n"


def pool_table(entries: list[Entry]) -> str:
    """A Markdown table of the in-pool and out-of-pool errors of the models that declare a pool of tasks ("" if
    none)."""
    rows = [[e.name, task, pool["size"], pool["seed"], _fmt(pool["db"], 2), _fmt(e.scores[task], 2)]
            for e in entries for task in TASKS if (pool := in_pool(e, task)) is not None]
    headers = ["model", "task", "pool size", "pool seed", "in pool (dB)", "out of pool (dB)"]
    return tabulate(rows, headers, tablefmt="github", disable_numparse=True) if rows else ""


def build(
    submissions: Path, baselines: Path, out: Path, findings: Path | None = None, left_out: list[str] | None = None
) -> list[Entry]:
    """Write README.md, leaderboard.json (the site summary) and the site (`iclbench.leaderboard.page.write`:
    index.html, models/, plots/, leaderboard.csv and, from the Markdown `findings`, findings.html) under `out`.

    `left_out`: as in `load_entries`, a list to which each invalid submission folder, left out, is reported.
    """
    from iclbench.leaderboard import page

    if findings is not None and not findings.is_file():
        raise LeaderboardError(f"{findings}: no such findings page")
    entries = rank(load_entries(submissions, baselines, left_out))
    built = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    site = site_summary(entries, built, inputs_digest(submissions, baselines))
    out.mkdir(parents=True, exist_ok=True)
    (out / "README.md").write_text(readme(entries, built))
    (out / "leaderboard.json").write_text(json.dumps(site, separators=(",", ":"), allow_nan=False) + "\n")
    page.write(site, entries, out, findings)
    return entries


def check(submissions: Path, baselines: Path) -> list[str]:
    """Why the leaderboard cannot be built as it is: one line per invalid submission folder or baseline results
    file (an empty list when every folder is valid and the site builds, into a temporary folder)."""
    left_out: list[str] = []
    with tempfile.TemporaryDirectory(prefix="iclbench-leaderboard-") as tmp:
        try:
            build(submissions, baselines, Path(tmp), left_out=left_out)
        except LeaderboardError as exc:
            return left_out + str(exc).splitlines()
    return left_out


def run_baselines(names: list[str], baselines: Path, device: str) -> list[str]:
    """Score the named baselines (all available when empty) on the full suite into `baselines`; return failures.

    Launched by torchrun, each baseline's tasks are split across the ranks (`iclbench.runner.run`)."""
    from iclbench.plugins import PluginError, baseline_names
    from iclbench.runner import RunConfig, run
    from iclbench.worker import IsolatedModel

    failures = []
    for name in names or baseline_names():
        try:
            model = IsolatedModel(name)
        except PluginError as exc:
            failures.append(f"{name}: {exc}")
            continue
        try:
            doc = run(model, list(TASKS.values()), RunConfig(device), baselines / f"{slug(model.name)}.json")
        finally:
            model.close()
        failures += [f"{name}: {t['error']}" for t in doc["tasks"].values() if t["status"] == "failed"]
    return failures


def cmd_leaderboard(args: argparse.Namespace) -> int:
    failures = []
    if args.run_baselines is not None and not args.check:
        failures = run_baselines(args.run_baselines, args.baselines, args.device)
    if distributed.rank() > 0:  # launched by torchrun: rank 0 alone checks, reports and builds the site
        return 0
    if args.check:
        problems = check(args.submissions, args.baselines)
        for message in problems:
            print(f"error: {message}", file=sys.stderr)
        print(f"{args.submissions}: {f'INVALID, {len(problems)} problem(s)' if problems else 'every folder valid'}")
        return 1 if problems else 0
    for message in failures:
        print(f"warning: baseline not scored: {message}", file=sys.stderr)
    left_out: list[str] = []
    try:
        entries = build(args.submissions, args.baselines, args.out, args.findings or _default_findings(), left_out)
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


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `iclbench leaderboard`."""
    p = sub.add_parser("leaderboard", help="build the leaderboard site (or --check that it can be built)")
    p.add_argument("--submissions", type=Path, default=Path("submissions"), help="folder of submission folders")
    p.add_argument("--baselines", type=Path, default=BASELINES, help="folder of baseline results")
    p.add_argument("--out", type=Path, default=SITE, help="output folder: the site (built, never committed)")
    p.add_argument(
        "--check",
        action="store_true",
        help="build nothing; fail, naming each, if a submission folder is invalid or the site does not build",
    )
    p.add_argument(
        "--run-baselines",
        nargs="*",
        metavar="NAME",
        help="first score these baselines (all available when none are named) into --baselines",
    )
    p.add_argument("--device", default="auto", help="with --run-baselines: auto, cpu, cuda or cuda:N")
    p.add_argument(
        "--findings", type=Path, help="Markdown rendered as the site's findings.html (default: docs/findings.md if any)"
    )
    p.set_defaults(func=cmd_leaderboard)
