"""The `iclbench` command line: `run`, `list`, `export`, `verify`, and the commands of `iclbench.submissions`,
`iclbench.leaderboard` and `iclbench.training`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from tabulate import tabulate

from iclbench import tasks as task_registry
from iclbench import training
from iclbench import results
from iclbench.leaderboard import build as leaderboard_build
from iclbench.submissions import create, schema, verify
from iclbench.api import TaskFailure
from iclbench.cache import USE_AN_EXPORT, ExportError, eval_set, use_export, write_export
from iclbench.plugins import PluginError
from iclbench.provenance import provenance
from iclbench.results import ResultsError, slug
from iclbench.runner import RunConfig, resolve_device, run
from iclbench.tasks import FINGERPRINTS, SUITE_VERSION, UnknownTaskError
from iclbench.worker import IsolatedModel, Limits


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _limit(text: str, what: str, zero_means_none: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (0 <= value if zero_means_none else 0 < value) or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
    return value


def _seconds(text: str) -> float:
    return _limit(text, "a positive number of seconds", zero_means_none=False)


def _gigabytes(text: str) -> float:
    return _limit(text, "a number of GB, 0 for no limit", zero_means_none=True)


def summary_table(doc: dict[str, Any]) -> str:
    """One row per task: nominal-length error in dB with its 90% interval, and the time taken."""
    rows = []
    for name, entry in doc["tasks"].items():
        nominal = entry["spec"]["nominal"]
        m = entry.get("lengths", {}).get(str(nominal)) if entry["status"] == "ok" else None
        err = m["rel_err"] if m else None
        rate = m.get("error_rate") if m else None
        rows.append(
            [
                name,
                entry["status"] if entry["status"] != "failed" else "FAILED",
                nominal,
                f"{err['db']:.1f}" if err else "",
                f"[{err['ci90_db'][0]:.1f}, {err['ci90_db'][1]:.1f}]" if err else "",
                f"{100 * rate['value']:.1f}%" if rate else "",
                f"{entry['seconds']:.2f}" if "seconds" in entry else "",
            ]
        )
    headers = ["task", "status", "n", "error (dB)", "90% CI (dB)", "error rate", "time (s)"]
    return tabulate(rows, headers, disable_numparse=True)


def mismatch_advice(names: list[str]) -> str:
    """What a fingerprint mismatch means for the tasks `names`, and what to do about it."""
    return (
        f"the evaluation data generated on this machine for {', '.join(names)} do not match the suite's "
        f"fingerprints, so results on them are not eligible for the leaderboard: {USE_AN_EXPORT}, "
        "and report this machine's provenance in an issue"
    )


def _start_models(args: argparse.Namespace) -> tuple[IsolatedModel, dict[str, IsolatedModel]]:
    """The model and the `--align` references, each in its worker; the references set up on the device."""
    device = resolve_device(args.device)
    limits = Limits(args.task_timeout, args.max_memory or None)
    started: list[IsolatedModel] = []
    try:
        started.append(IsolatedModel(args.model, limits))
        references = {}
        for name in args.align or []:
            references[name] = ref = IsolatedModel(name, limits)
            started.append(ref)
            try:
                ref.setup(device)
            except TaskFailure as exc:
                raise ValueError(f"--align {name}: {exc}") from None
    except (PluginError, ValueError):
        for model in started:
            model.close()
        raise
    return started[0], references


def cmd_run(args: argparse.Namespace) -> int:
    try:
        selected = task_registry.select(args.tasks)
        if args.data:
            use_export(args.data, selected)
        model, references = _start_models(args)
    except (PluginError, UnknownTaskError, ValueError) as exc:
        print(f"iclbench run: {exc}", file=sys.stderr)
        return 2
    cfg = RunConfig(args.device, args.dtype, args.batch_size, args.prompts)
    out = args.out / f"{slug(model.name)}.json"
    try:
        doc = run(model, selected, cfg, out, resume=args.resume, progress=not args.quiet, references=references)
    except ResultsError as exc:
        print(f"iclbench run: {exc}", file=sys.stderr)
        return 2
    finally:
        for m in (model, *references.values()):
            m.close()
    limited = f", first {args.prompts} prompts per task" if args.prompts else ""
    print(f"{model.name} on suite {SUITE_VERSION} ({doc['run']['device']}, {args.dtype}{limited})")
    print(summary_table(doc))
    names = {task.spec.name for task in selected}
    failed = [e["error"] for name, e in doc["tasks"].items() if e["status"] == "failed" and name in names]
    for message in failed:
        print(f"error: {message}", file=sys.stderr)
    if doc["run"]["data_mismatch"]:
        print(f"warning: {mismatch_advice(doc['run']['data_mismatch'])} (run.provenance in {out})", file=sys.stderr)
    print(f"results written to {out}")
    return 1 if failed else 0


def cmd_list(args: argparse.Namespace) -> int:
    if args.data and not args.verify:
        print("iclbench list: --data only applies with --verify", file=sys.stderr)
        return 2
    if args.data:
        try:
            use_export(args.data, task_registry.TASKS.values())
        except ExportError as exc:
            print(f"iclbench list: {exc}", file=sys.stderr)
            return 2
    rows, mismatched = [], []
    for task in task_registry.TASKS.values():
        s = task.spec
        fingerprint = FINGERPRINTS.get(s.name, "")
        if args.verify:
            actual = eval_set(task)[1]
            if actual != fingerprint:
                mismatched.append(s.name)
            fingerprint = f"{fingerprint[:16]} {'ok' if actual == fingerprint else 'MISMATCH ' + actual[:16]}"
        lengths = ", ".join(f"{n}*" if n == s.nominal else str(n) for n in s.lengths)
        params = ", ".join(f"{k}={v}" for k, v in s.params.items())
        rows.append([s.name, s.d, lengths, s.n_prompts, s.n_queries, s.noise, params, fingerprint if args.verify else fingerprint[:16]])
    headers = ["task", "d", "prompt lengths (nominal*)", "prompts", "queries", "noise", "parameters", "fingerprint"]
    print(f"suite {SUITE_VERSION}")
    print(tabulate(rows, headers, disable_numparse=True))
    if not mismatched:
        return 0
    print("provenance of this machine (paste it into the report):")
    print(json.dumps(provenance(), indent=1))
    print(f"iclbench list: {mismatch_advice(mismatched)}", file=sys.stderr)
    return 1


def cmd_export(args: argparse.Namespace) -> int:
    every = list(task_registry.TASKS.values())
    if args.data:
        try:
            use_export(args.data, every)
        except ExportError as exc:
            print(f"iclbench export: {exc}", file=sys.stderr)
            return 2
    try:
        write_export(args.folder, every)
    except ExportError as exc:
        print(f"iclbench export: {exc}", file=sys.stderr)
        return 1
    print(f"{args.folder}: the {len(every)} evaluation sets of suite {SUITE_VERSION}, verified, with manifest.json")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    out = args.out or args.folder / verify.REPORT
    try:
        public = results.read(args.folder / "results.json")
        report = verify.verify(
            str(args.folder / "model.py"), public, args.seed, args.tasks, args.prompts, args.batch_size, not args.quiet
        )
        results.write(out, report)
    except (ResultsError, verify.VerifyError, OSError) as exc:
        print(f"iclbench verify: {exc}", file=sys.stderr)
        return 2
    for line in verify.summary_lines(report, args.folder):
        print(line)
    print(f"report written to {out}")
    return 0 if report["verdict"] == "pass" else 1


DATA_HELP = "read the evaluation sets from this export (`iclbench export`), verified, instead of generating them"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iclbench", description="Benchmark of in-context learning as learned optimization.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="score a model on the suite")
    p.add_argument("--model", required=True, help="path.py[:Class], a baseline name, or module[:Class]")
    p.add_argument("--tasks", nargs="+", metavar="TASK", help="task names, families or glob patterns (default: all)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--batch-size", type=_positive, default=512, help="prompts per predict call")
    p.add_argument("--prompts", type=_positive, help="score only the first N prompts per task (marked as limited)")
    p.add_argument("--out", type=Path, default=Path("results"), help="folder of the results file")
    p.add_argument("--resume", action="store_true", help="keep finished tasks of an existing results file")
    p.add_argument("--task-timeout", type=_seconds, default=Limits.task_timeout, metavar="SECONDS",
                   help="wall time allowed per task (and for loading and setup) before the model's worker is stopped")
    p.add_argument("--max-memory", type=_gigabytes, default=Limits.max_memory_gb, metavar="GB",
                   help="memory allowed to the model's worker: address space on the CPU, GPU memory on CUDA (0: no limit)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--align", nargs="+", metavar="BASELINE",
                   help="store the cosine similarity of per-layer residuals with these baselines' steps (e.g. gd newton)")
    p.add_argument("--data", type=Path, metavar="DIR", help=DATA_HELP)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("list", help="list the tasks with their fingerprints")
    p.add_argument("--verify", action="store_true", help="generate every evaluation set and check its fingerprint")
    p.add_argument("--data", type=Path, metavar="DIR", help="with --verify: " + DATA_HELP)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("export", help="write every evaluation set, verified, as safetensors files with a manifest")
    p.add_argument("folder", type=Path, metavar="DIR", help="folder to write (created if needed)")
    p.add_argument("--data", type=Path, metavar="DIR", help="re-export a verified export instead of generating")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("verify", help="score a submission on fresh evaluation sets and compare with its results")
    p.add_argument("folder", type=Path, metavar="FOLDER", help="a submission folder (model.py and results.json)")
    p.add_argument("--seed", type=int, help="verification seed (default: drawn now with `secrets`)")
    p.add_argument("--tasks", nargs="+", metavar="TASK", help="verify only these tasks (default: all)")
    p.add_argument("--prompts", type=_positive, help="score only the first N fresh prompts per task (partial)")
    p.add_argument("--batch-size", type=_positive, default=512, help="prompts per predict call")
    p.add_argument("--out", type=Path, help=f"report file (default: FOLDER/{verify.REPORT})")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_verify)
    schema.add_parser(sub)
    create.add_parser(sub)
    leaderboard_build.add_parser(sub)
    training.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
