"""The `iclbench` command line: `run`, `compare`, `list`, `export`, `inputs`, `predict`, `verify`, and the commands
of `iclbench.submissions`, `iclbench.leaderboard` and `iclbench.training`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import shlex
import sys
from pathlib import Path

from tabulate import tabulate

import iclbench
from iclbench import samples as samples_file
from iclbench import tasks as task_registry
from iclbench import distributed, training
from iclbench import predictions, results
from iclbench.leaderboard import build as leaderboard_build
from iclbench.submissions import convert, create, schema, score, verify
from iclbench.checkpoint import CheckpointError
from iclbench.cache import USE_AN_EXPORT, ExportError, eval_set, use_export, write_export
from iclbench.evaluation import Interrupted, evaluate
from iclbench.plugins import PluginError, parse_model_args
from iclbench.provenance import provenance
from iclbench.runner import RunConfig
from iclbench.results import ResultsError
from iclbench.samples import SamplesError
from iclbench.sandbox import SandboxError, refusal
from iclbench.tasks import FINGERPRINTS, SUITE_VERSION, UnknownTaskError
from iclbench.tasks.family import VERIFY_SEED_BITS
from iclbench.tasks.pool import TaskPool
from iclbench.untrusted import UntrustedError, load_json
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


def _threads(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of threads (0 for torch's default), got {text}")
    return value


def _seconds(text: str) -> float:
    return _limit(text, "a positive number of seconds", zero_means_none=False)


def _gigabytes(text: str) -> float:
    return _limit(text, "a number of GB, 0 for no limit", zero_means_none=True)


def mismatch_advice(names: list[str]) -> str:
    """What a fingerprint mismatch means for the tasks `names`, and what to do about it."""
    return (
        f"the evaluation data generated on this machine for {', '.join(names)} do not match the suite's "
        f"fingerprints, so results on them are not eligible for the leaderboard: {USE_AN_EXPORT}, "
        "and report this machine's provenance in an issue"
    )


def resume_command(argv: list[str]) -> str:
    """The command line that continues an interrupted `argv` (`iclbench ARGV --resume`)."""
    return shlex.join(["iclbench", *argv, *([] if "--resume" in argv else ["--resume"])])


def cmd_run(args: argparse.Namespace) -> int:
    try:
        model_args = parse_model_args(args.model_args) if args.model_args else {}
        res = evaluate(
            args.model, args.tasks, device=args.device, dtype=args.dtype, batch_size=args.batch_size,
            prompts=args.prompts, out=args.out, resume=args.resume, model_args=model_args,
            limits=Limits(args.task_timeout, args.max_memory or None, args.threads), align=args.align or (), data=args.data,
            log_samples=args.log_samples, progress=not args.quiet, sandbox=False if args.no_sandbox else None,
            overwrite=args.overwrite,
        )
    except (PluginError, UnknownTaskError, ValueError) as exc:
        print(f"iclbench run: {exc}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        again = f"; continue with: {resume_command(args.argv)}" if exc.done else ""
        print(f"iclbench run: {exc}{again}", file=sys.stderr)
        return 130
    doc = res.doc
    names = {task.spec.name for task in task_registry.select(args.tasks)}
    failed = [message for name, message in res.failed.items() if name in names]
    if distributed.rank() > 0:  # rank 0 reports
        return 1 if failed else 0
    limited = f", first {args.prompts} prompts per task" if args.prompts else ""
    print(f"{res.model} on suite {SUITE_VERSION} ({doc['run']['device']}, {args.dtype}{limited})")
    print(res.table())
    for message in failed:
        print(f"error: {message}", file=sys.stderr)
    if doc["run"]["data_mismatch"]:
        print(f"warning: {mismatch_advice(doc['run']['data_mismatch'])} (run.provenance in {res.path})", file=sys.stderr)
    print(f"results written to {res.path}")
    if res.samples_path is not None:
        print(f"per-prompt samples written to {res.samples_path}")
    return 1 if failed else 0


def cmd_compare(args: argparse.Namespace) -> int:
    try:
        a, b = samples_file.load(args.a), samples_file.load(args.b)
        chosen = None if args.tasks is None else [t.spec.name for t in task_registry.select(args.tasks)]
        rows = samples_file.compare(a, b, chosen, args.all_lengths)
    except (SamplesError, ResultsError, UnknownTaskError) as exc:
        print(f"iclbench compare: {exc}", file=sys.stderr)
        return 2
    if not rows:
        print(f"iclbench compare: {args.a} and {args.b} have no scored task (and length) in common", file=sys.stderr)
        return 2
    ma, mb = a.header["model"]["name"], b.header["model"]["name"]
    print(f"A = {ma} ({a.label}), B = {mb} ({b.label}), suite {a.header['suite_version']}")
    print("A - B: paired difference of relative errors in dB over the prompts both scored, 90% bootstrap interval "
          "(negative: A is better)")
    table = []
    for r in rows:
        lo, hi = r["ci90_db"]
        verdict = "A better" if hi < 0 else "B better" if lo > 0 else "no clear difference"
        table.append([r["task"], r["n"], r["prompts"], f"{r['a_db']:.2f}", f"{r['b_db']:.2f}", f"{r['diff_db']:+.2f}",
                      f"[{lo:+.2f}, {hi:+.2f}]", verdict])
    print(tabulate(table, ["task", "n", "prompts", "A (dB)", "B (dB)", "A - B (dB)", "90% CI (dB)", ""],
                   disable_numparse=True))
    return 0


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


def declared_pools(folders: list[Path]) -> list[TaskPool]:
    """The pools of training tasks that the submissions in `folders` declare (their results.json's `model.task_pool`,
    read and checked as `iclbench validate` reads it, which checks it against submission.yaml), each once. A folder
    whose results cannot be read gets a line on stderr and adds none: one broken submission does not stop the
    inputs of the others."""
    pools: list[TaskPool] = []
    for folder in folders:
        path = folder / "results.json"
        try:
            try:
                doc = load_json(path, schema.MAX_BYTES[".json"])
            except (OSError, UntrustedError) as exc:
                raise ValueError(f"{path}: {exc.strerror if isinstance(exc, OSError) else exc}") from None
            results.check(doc, str(path))
            pool = TaskPool.parse(doc["model"].get("task_pool"), f"{path}: model.task_pool")
        except Exception as exc:  # a submitter's file, whatever it holds: the other folders go on
            print(f"iclbench inputs: no in-pool prompts for {folder}: {exc}", file=sys.stderr)
            continue
        if pool is not None and pool not in pools:
            pools.append(pool)
    return pools


def cmd_inputs(args: argparse.Namespace) -> int:
    seed = args.seed
    pools = declared_pools(args.pool_of)
    try:
        if args.draw_seed is not None:
            seed = secrets.randbits(VERIFY_SEED_BITS)
            args.draw_seed.parent.mkdir(parents=True, exist_ok=True)
            args.draw_seed.touch(0o600)
            args.draw_seed.write_text(f"{seed}\n")  # written before the inputs: a seed in use is never lost
        predictions.write_inputs(args.folder, task_registry.select(args.tasks), seed, args.prompts, pools)
    except (predictions.PredictionsError, UnknownTaskError, OSError) as exc:
        print(f"iclbench inputs: {exc}", file=sys.stderr)
        return 2
    kind = "the suite's evaluation sets" if seed is None else "fresh evaluation sets"
    pooled = f" and of the in-pool prompts of {len(pools)} declared task pool(s)" if pools else ""
    print(f"{args.folder}: the inputs (x, y, x_query) of {kind}{pooled}, with manifest.json")
    return 0


def judged_model(args: argparse.Namespace) -> IsolatedModel:
    """The worker that runs a judged model (`predict`): scored with `predict` alone, as `validate --rerun` scores it,
    in the sandbox unless `--no-sandbox`."""
    limits = Limits(args.task_timeout, args.max_memory or None, args.threads)
    return IsolatedModel(args.model, limits, one_pass=False, sandbox=not args.no_sandbox)


def cmd_predict(args: argparse.Namespace) -> int:
    if not args.no_sandbox and (refused := refusal("predict")) is not None:
        print(refused, file=sys.stderr)
        return 2
    try:
        inputs = predictions.Inputs.read(args.inputs)
        model = judged_model(args)
    except (predictions.PredictionsError, PluginError, SandboxError) as exc:
        print(f"iclbench predict: {exc}", file=sys.stderr)
        return 2
    try:
        cfg = RunConfig("cpu", args.dtype, args.batch_size)
        header, tensors = predictions.predict(model, inputs, cfg, not args.quiet)
        predictions.write(args.out, header, tensors)
    except (predictions.PredictionsError, OSError) as exc:
        print(f"iclbench predict: {exc}", file=sys.stderr)
        return 2
    finally:
        model.close()
    errors = [f"setup: {header['setup_error']}"] if header["setup_error"] is not None else []
    errors += [f"{name}: {e['error']}" for name, e in header["tasks"].items() if e["status"] == "failed"]
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    done = sum(e["status"] == "ok" for e in header["tasks"].values())
    print(f"{args.out}: predictions of {header['model']['name']} on {done} task(s) of {args.inputs}")
    return 1 if errors else 0


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < 2**VERIFY_SEED_BITS:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to 2^{VERIFY_SEED_BITS} - 1, got {text}")
    return value


def cmd_score(args: argparse.Namespace) -> int:
    out = args.out or args.folder / verify.REPORT
    try:
        chosen = task_registry.select(args.tasks)
        report, problems = score.score(args.folder, args.public, args.fresh, args.seed, args.seed_drawn, chosen,
                                       args.batch_size, args.samples)
        if report is not None:
            results.write(out, report)
    except (UnknownTaskError, verify.VerifyError, CheckpointError, OSError) as exc:
        print(f"iclbench score: {exc}", file=sys.stderr)
        return 2
    if report is None:
        for line in problems:
            print(f"error: {line}")
        print(f"{args.folder}: NOT SCORED, {len(problems)} problem(s)")
        return 1
    for line in verify.summary_lines(report, args.folder):
        print(line)
    print(f"report written to {out}")
    return 0 if report["verdict"] == "pass" else 1


def cmd_verify(args: argparse.Namespace) -> int:
    out = args.out or args.folder / verify.REPORT
    if not args.no_sandbox and (refused := refusal("verify")) is not None:
        print(refused, file=sys.stderr)
        return 2
    terminal = sys.stderr.isatty()
    try:
        lines = None if args.quiet or terminal else verify.TaskLines(len(task_registry.select(args.tasks)), sys.stderr)
        public = results.read(args.folder / "results.json")
        report = verify.verify(
            str(args.folder / "model.py"), public, args.seed, args.tasks, args.prompts, args.batch_size,
            progress=not args.quiet and terminal, report=lines, sandbox=not args.no_sandbox,
        )
        results.write(out, report)
    except (ResultsError, verify.VerifyError, UnknownTaskError, OSError) as exc:
        print(f"iclbench verify: {exc}", file=sys.stderr)
        return 2
    for line in verify.summary_lines(report, args.folder):
        print(line)
    print(f"report written to {out}")
    return 0 if report["verdict"] == "pass" else 1


DATA_HELP = "read the evaluation sets from this export (`iclbench export`), verified, instead of generating them"
TASKS_HELP = "task names, families or glob patterns, separated by spaces or commas (default: all)"
QUIET_HELP = "no progress bar, and no line per finished task when output is not a terminal"
NO_SANDBOX_HELP = ("run the model without the sandbox, which is otherwise required (only on your own machine, "
                   "where the sandbox cannot be made)")
_Raw = argparse.RawDescriptionHelpFormatter
EXAMPLES = """examples:
  iclbench run --model examples/template_model.py          score a model file on the whole suite
  iclbench run --model ridge --tasks linear,lasso          a baseline on two families
  iclbench compare results/ridge.json results/gd.json      paired comparison (both run with --log-samples)
  iclbench train --task linear/kappa1 --out runs/lsa1      train a reference architecture
  iclbench list                                            the tasks and their fingerprints
  iclbench COMMAND --help                                  the options of a command
"""
RUN_EXAMPLES = """examples:
  iclbench run --model examples/template_model.py
  iclbench run --model my_model.py:Big --model-args ckpt=runs/b.safetensors,layers=4 --tasks linear
  iclbench run --model ridge --tasks linear/kappa1,kernel --prompts 256 --log-samples
  iclbench run --model my_model.py --resume                  continue an interrupted run

The results go to OUT/<model name>.json, or OUT/<model name>--<key>-<value>....json with
--model-args, written after every task; Ctrl-C keeps the finished tasks (exit status 130).
"""
COMPARE_EXAMPLES = """examples:
  iclbench run --model ridge --log-samples && iclbench run --model gd --log-samples
  iclbench compare results/ridge.json results/gd.json
  iclbench compare results/ridge.json results/gd.json --tasks linear --all-lengths

Files of different suite versions or data (fingerprints) are refused. Prompts are paired by
index over the prompts both files scored (--prompts runs score the first N).
"""
INPUTS_EXAMPLES = """examples:
  iclbench inputs in/public --tasks kernel                              the suite's sets, inputs only
  iclbench inputs in/fresh --tasks kernel --draw-seed seed.txt          fresh sets of a seed drawn now
  iclbench inputs in/fresh --draw-seed seed.txt --pool-of submissions/my-model   and fresh in-pool prompts of its pool
  iclbench predict --model my_model.py --inputs in/public --out public.safetensors
  iclbench score submissions/my-model --public public.safetensors --fresh fresh.safetensors \\
      --seed "$(cat seed.txt)" --seed-drawn --tasks kernel

The model runs on inputs alone (no targets); `iclbench score` judges its predictions without running it.
"""
LIST_EXAMPLES = """examples:
  iclbench list
  iclbench list --verify                 check this machine reproduces every evaluation set
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iclbench", description="Benchmark of in-context learning as learned optimization.",
                                     epilog=EXAMPLES, formatter_class=_Raw)
    parser.add_argument("--version", action="version",
                        version=f"iclbench {iclbench.__version__} (suite {SUITE_VERSION})")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="score a model on the suite", epilog=RUN_EXAMPLES, formatter_class=_Raw)
    p.add_argument("--model", required=True, help="path.py[:Class], a baseline name, or module[:Class]")
    p.add_argument("--model-args", metavar="KEY=VALUE,...",
                   help="keyword arguments of the model's constructor; a value JSON reads as a number, true, false, "
                        "null or a \"quoted string\" is that, any other is the text itself (no commas in values)")
    p.add_argument("--tasks", nargs="+", metavar="TASK", help=TASKS_HELP)
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--batch-size", type=_positive, default=512, help="prompts per predict call")
    p.add_argument("--prompts", type=_positive, help="score only the first N prompts per task (marked as limited)")
    p.add_argument("--out", type=Path, default=Path("results"), help="folder of the results file")
    p.add_argument("--resume", action="store_true", help="keep finished tasks of an existing results file")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a results file made with other settings, even by a smaller run (fewer prompts or "
                        "tasks, another dtype or device), which is otherwise refused")
    p.add_argument("--no-sandbox", action="store_true",
                   help="run the model without the sandbox (by default it runs in one wherever this machine allows)")
    p.add_argument("--task-timeout", type=_seconds, default=Limits.task_timeout, metavar="SECONDS",
                   help="wall time allowed per task (and for loading and setup) before the model's worker is stopped")
    p.add_argument("--max-memory", type=_gigabytes, default=Limits.max_memory_gb, metavar="GB",
                   help="memory allowed to the model's worker: address space on the CPU, GPU memory on CUDA (0: no limit)")
    p.add_argument("--threads", type=_threads, default=Limits.threads, metavar="N",
                   help="CPU threads of the model's worker (default 1: never slowed down many times by other load; "
                        "0: torch's default, one per core)")
    p.add_argument("--log-samples", action="store_true",
                   help="also write every prompt's error and prediction to <results stem>.samples.safetensors "
                        "(for iclbench compare)")
    p.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    p.add_argument("--align", nargs="+", metavar="BASELINE",
                   help="store the cosine similarity of per-layer residuals with these baselines' steps (e.g. gd newton)")
    p.add_argument("--data", type=Path, metavar="DIR", help=DATA_HELP)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("compare", help="paired comparison of two models on the same prompts",
                       epilog=COMPARE_EXAMPLES, formatter_class=_Raw)
    p.add_argument("a", type=Path, metavar="A", help="a results file run with --log-samples, or its .samples.safetensors")
    p.add_argument("b", type=Path, metavar="B", help="the same for the other model")
    p.add_argument("--tasks", nargs="+", metavar="TASK", help="compare only these tasks (default: every common one)")
    p.add_argument("--all-lengths", action="store_true", help="every common prompt length (default: the nominal one)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("list", help="list the tasks with their fingerprints", epilog=LIST_EXAMPLES, formatter_class=_Raw)
    p.add_argument("--verify", action="store_true", help="generate every evaluation set and check its fingerprint")
    p.add_argument("--data", type=Path, metavar="DIR", help="with --verify: " + DATA_HELP)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("export", help="write every evaluation set, verified, as safetensors files with a manifest",
                       epilog="examples:\n  iclbench export exported/ && iclbench run --model ridge --data exported/",
                       formatter_class=_Raw)
    p.add_argument("folder", type=Path, metavar="DIR", help="folder to write (created if needed)")
    p.add_argument("--data", type=Path, metavar="DIR", help="re-export a verified export instead of generating")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("inputs", help="write the inputs (x, y, x_query; no targets) of evaluation sets, for predict",
                       epilog=INPUTS_EXAMPLES, formatter_class=_Raw)
    p.add_argument("folder", type=Path, metavar="DIR", help="folder to write (created if needed)")
    p.add_argument("--tasks", nargs="+", metavar="TASK", help=TASKS_HELP)
    p.add_argument("--prompts", type=_positive, help="only the first N prompts of each task")
    seed = p.add_mutually_exclusive_group()
    seed.add_argument("--seed", type=_seed, help="fresh sets of this verification seed (default: the suite's sets)")
    seed.add_argument("--draw-seed", type=Path, metavar="FILE",
                      help="fresh sets of a seed drawn now with `secrets`, written to FILE (never into DIR)")
    p.add_argument("--pool-of", nargs="+", type=Path, default=[], metavar="FOLDER",
                   help="also the in-pool prompts of the pool of training tasks each submission FOLDER declares "
                        "(results.json's model.task_pool), public or fresh as the sets")
    p.set_defaults(func=cmd_inputs)

    p = sub.add_parser("predict", help="run a model on inputs (iclbench inputs) and write its predictions, unscored",
                       epilog=INPUTS_EXAMPLES, formatter_class=_Raw)
    p.add_argument("--model", required=True, help="path.py[:Class], a baseline name, or module[:Class]")
    p.add_argument("--inputs", type=Path, required=True, metavar="DIR", help="a folder written by `iclbench inputs`")
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="the predictions file (.safetensors)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--batch-size", type=_positive, default=512, help="prompts per predict call")
    p.add_argument("--task-timeout", type=_seconds, default=Limits.task_timeout, metavar="SECONDS",
                   help="wall time allowed per task (and for loading and setup) before the model's worker is stopped")
    p.add_argument("--max-memory", type=_gigabytes, default=Limits.max_memory_gb, metavar="GB",
                   help="memory allowed to the model's worker (0: no limit)")
    p.add_argument("--threads", type=_threads, default=Limits.threads, metavar="N", help="CPU threads of the worker")
    p.add_argument("--no-sandbox", action="store_true", help=NO_SANDBOX_HELP)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("score", help="judge a submission from its predictions (iclbench predict), never running it",
                       epilog=INPUTS_EXAMPLES, formatter_class=_Raw)
    p.add_argument("folder", type=Path, metavar="FOLDER", help="the submission folder (model.py is read, never run)")
    p.add_argument("--public", type=Path, required=True, metavar="FILE",
                   help="its predictions on the inputs of the suite's sets (iclbench inputs DIR)")
    p.add_argument("--fresh", type=Path, required=True, metavar="FILE",
                   help="its predictions on the inputs of fresh sets (iclbench inputs DIR --seed SEED)")
    p.add_argument("--seed", type=_seed, required=True, help="the verification seed of the fresh inputs")
    p.add_argument("--seed-drawn", action="store_true",
                   help="the seed was drawn at random for this verification (iclbench inputs --draw-seed)")
    p.add_argument("--tasks", nargs="+", metavar="TASK", help="judge only these tasks (default: all)")
    p.add_argument("--batch-size", type=_positive, default=512, help="prompts per replayed call")
    p.add_argument("--out", type=Path, help=f"report file (default: FOLDER/{verify.REPORT})")
    p.add_argument("--samples", type=Path, metavar="FILE",
                   help="write the public predictions' per-prompt errors there (<id>.samples.safetensors in the "
                        "folder of `iclbench leaderboard --samples DIR`)")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("verify", help="score a submission on the public and on fresh evaluation sets, and compare",
                       epilog="examples:\n  iclbench verify submissions/lsa-1 --tasks linear --prompts 256",
                       formatter_class=_Raw)
    p.add_argument("folder", type=Path, metavar="FOLDER", help="a submission folder (model.py and results.json)")
    p.add_argument("--seed", type=int, help="verification seed (default: drawn now with `secrets`)")
    p.add_argument("--tasks", nargs="+", metavar="TASK", help="verify only these tasks (default: all; spaces or commas)")
    p.add_argument("--prompts", type=_positive, help="score only the first N fresh prompts per task (partial; the "
                   "public sets are scored on the prompts of results.json)")
    p.add_argument("--batch-size", type=_positive, default=512, help="prompts per predict call")
    p.add_argument("--out", type=Path, help=f"report file (default: FOLDER/{verify.REPORT})")
    p.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    p.add_argument("--no-sandbox", action="store_true", help=NO_SANDBOX_HELP)
    p.set_defaults(func=cmd_verify)
    schema.add_parser(sub)
    create.add_parser(sub)
    convert.add_parser(sub)
    leaderboard_build.add_parser(sub)
    training.add_parser(sub)
    return parser


def split_lists(values: list[str] | None) -> list[str] | None:
    """Task lists given with spaces, commas or both (`--tasks linear,lasso kernel`) as one list."""
    if values is None:
        return None
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


SHARDED = ("run", "train", "leaderboard")
"""The commands that, launched by torchrun, split their work across processes (docs/distributed.md)."""


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    for name in ("tasks", "task"):  # every command's task list, whichever module registered it
        if isinstance(getattr(args, name, None), list):
            setattr(args, name, split_lists(getattr(args, name)))
    if distributed.launched() and os.environ["WORLD_SIZE"] != "1" and args.command not in SHARDED:
        print(f"iclbench {args.command}: runs in one process; under torchrun only {', '.join(SHARDED)} are split "
              "across processes", file=sys.stderr)
        return 2
    try:
        if args.command in SHARDED:
            distributed.init()
        return args.func(args)
    except KeyboardInterrupt:
        print(f"iclbench {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    sys.exit(main())
