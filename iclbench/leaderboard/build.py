"""Building the leaderboard: submissions and baseline results loaded, ranked (`iclbench.leaderboard.ranking`)
and written as README, CSV, JSON, plots and a page; the `iclbench leaderboard` command.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tabulate import tabulate

import iclbench
from iclbench.leaderboard.ranking import BUDGET_STEPS, FAMILIES, FINDINGS_LINK, RANKING_RULE, Entry, LeaderboardError, rank
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
    entries, problems = [], []
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
        if bad:
            continue
        name = doc["model"]["name"]
        cmd = f"iclbench run --model {doc['model']['source']} --out {baselines.as_posix()}"
        meta = {"source": doc["model"]["source"]}
        entry = Entry(f"base-{slug(name)}", name, "baseline", doc, meta, cmd)
        entries.append(entry)
        if entry.max_steps > BUDGET_STEPS:
            entries.append(
                Entry(
                    f"base-{slug(name)}-at{BUDGET_STEPS}",
                    f"{name} @{BUDGET_STEPS} steps",
                    "baseline",
                    doc,
                    meta,
                    cmd,
                    budget=BUDGET_STEPS,
                )
            )
    names = [e.name for e in entries]
    problems += [f"two models are called {n!r}: names must be unique" for n in sorted(set(names)) if names.count(n) > 1]
    if problems:
        raise LeaderboardError("\n".join(problems))
    return entries


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


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.1f}"


def tables(entries: list[Entry]) -> dict[str, str]:
    """Markdown tables: "overall" and one per family, rendered with tabulate."""
    out = {}
    rows = [
        [
            e.rank,
            e.name,
            e.kind,
            e.verification,
            f"{e.overall:.2f}",
            *[f"{e.family_scores[f]:.2f}" for f in FAMILIES],
            sum(v is not None for v in e.scores.values()),
        ]
        for e in entries
    ]
    out["overall"] = tabulate(
        rows,
        ["rank", "model", "kind", "verification", "score (dB)", *FAMILIES, "tasks scored"],
        tablefmt="github",
        disable_numparse=True,
    )
    for fam in FAMILIES:
        names = [n for n in TASKS if TASKS[n].spec.family == fam]
        ordered = sorted(entries, key=lambda e: (e.family_ranks[fam], e.name.lower()))
        rows = [
            [e.family_ranks[fam], e.name, e.kind, f"{e.family_scores[fam]:.2f}", *[_fmt(e.scores[n]) for n in names]]
            for e in ordered
        ]
        headers = ["rank", "model", "kind", "score (dB)", *[f"{n} (n={TASKS[n].spec.nominal})" for n in names]]
        out[fam] = tabulate(rows, headers, tablefmt="github", disable_numparse=True)
    return out


def readme(entries: list[Entry], built: str) -> str:
    """The leaderboard's README.md."""
    t = tables(entries)
    parts = [
        "# iclbench leaderboard",
        f"Suite {SUITE_VERSION}, built {built} by `iclbench leaderboard`; do not edit by hand. "
        "The interactive page is [index.html](index.html); every number is in [leaderboard.csv](leaderboard.csv) "
        "and [leaderboard.json](leaderboard.json); plots are in [plots/](plots/).",
        "Scores are relative errors in dB (lower is better; 0 dB is the zero predictor); "
        "– marks a task the model does not support (scored 0 dB). "
        "Verification: the submission's scores on fresh evaluation sets drawn by CI (`iclbench verify`) "
        "agree with its public ones (verified), or do not (failed).",
        f"[Findings: what the reference transformers do]({FINDINGS_LINK}).",
        "## Ranking rule",
        RANKING_RULE,
        "## Overall",
        t["overall"],
    ]
    for fam in FAMILIES:
        parts += [f"## {fam}", t[fam]]
    return "\n\n".join(parts) + "\n"


def every_number(entries: list[Entry]) -> str:
    """leaderboard.csv: one row per model, task, prompt length, metric and step."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["model", "kind", "task", "family", "n", "nominal", "metric", "step", "value", "ci90_low", "ci90_high"])
    for e in entries:
        if e.budget is not None:
            continue
        for task, t in e.results["tasks"].items():
            fam, nominal = TASKS[task].spec.family, TASKS[task].spec.nominal
            for n, metrics in t.get("lengths", {}).items():
                row = [e.name, e.kind, task, fam, n, int(n) == nominal]
                for metric, m in metrics.items():
                    if metric == "steps_rel_err_db":
                        w.writerows([*row, metric, k + 1, v, "", ""] for k, v in enumerate(m))
                        continue
                    w.writerow([*row, metric, "", m["value"], *m["ci90"]])
                    if "db" in m:
                        w.writerow([*row, f"{metric}_db", "", m["db"], *m["ci90_db"]])
    return buf.getvalue()


def summary(entries: list[Entry], built: str, digest: str) -> dict[str, Any]:
    """leaderboard.json: ranks, scores, metadata, commands and the full results of every model."""
    return {
        "suite_version": SUITE_VERSION,
        "iclbench_version": iclbench.__version__,
        "built": built,
        "inputs_sha256": digest,
        "ranking_rule": RANKING_RULE,
        "models": [
            {
                "key": e.key,
                "name": e.name,
                "kind": e.kind,
                "verification": e.verification,
                "budget_steps": e.budget,
                "rank": e.rank,
                "score_db": e.overall,
                "family_scores_db": e.family_scores,
                "family_ranks": e.family_ranks,
                "task_scores_db": e.scores,
                "meta": e.meta,
                "command": e.command,
                "results": e.results if e.budget is None else None,
            }
            for e in entries
        ],
    }


def build(submissions: Path, baselines: Path, out: Path, left_out: list[str] | None = None) -> list[Entry]:
    """Write README.md, leaderboard.csv, leaderboard.json, plots/ and index.html under `out`.

    `left_out`: as in `load_entries`, a list to which each invalid submission folder, left out, is reported.
    """
    from iclbench.leaderboard import page, plots as plotting

    entries = rank(load_entries(submissions, baselines, left_out))
    built = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    digest = inputs_digest(submissions, baselines)
    out.mkdir(parents=True, exist_ok=True)
    plots = plotting.draw(entries, out / "plots")
    (out / "README.md").write_text(readme(entries, built))
    (out / "leaderboard.csv").write_text(every_number(entries))
    (out / "leaderboard.json").write_text(json.dumps(summary(entries, built, digest), indent=1, allow_nan=False) + "\n")
    (out / "index.html").write_text(page.render(entries, plots, out, built))
    return entries


def check(submissions: Path, baselines: Path) -> list[str]:
    """Why the leaderboard cannot be built as it is: one line per invalid submission folder or baseline results
    file (an empty list when every folder is valid and the site builds, into a temporary folder)."""
    left_out: list[str] = []
    with tempfile.TemporaryDirectory(prefix="iclbench-leaderboard-") as tmp:
        try:
            build(submissions, baselines, Path(tmp), left_out)
        except LeaderboardError as exc:
            return left_out + str(exc).splitlines()
    return left_out


def run_baselines(names: list[str], baselines: Path, device: str) -> list[str]:
    """Score the named baselines (all available when empty) on the full suite into `baselines`; return failures."""
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
    if args.check:
        problems = check(args.submissions, args.baselines)
        for message in problems:
            print(f"error: {message}", file=sys.stderr)
        print(f"{args.submissions}: {f'INVALID, {len(problems)} problem(s)' if problems else 'every folder valid'}")
        return 1 if problems else 0
    if args.run_baselines is not None:
        for message in run_baselines(args.run_baselines, args.baselines, args.device):
            print(f"warning: baseline not scored: {message}", file=sys.stderr)
    left_out: list[str] = []
    try:
        entries = build(args.submissions, args.baselines, args.out, left_out)
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
    p.set_defaults(func=cmd_leaderboard)
