"""`iclbench submit`: a complete submission folder, `submissions/<id>/`, from a trained run or a model file.

From a run folder of `iclbench train --out DIR`, the folder gets the trained-model plugin as
model.py (named `--name`, by default the id), the checkpoint as weights.safetensors (its SHA-256
in submission.yaml), the run's log.json, the parameter count (counted in the checkpoint's header,
which must agree with the log) and the training tasks, seed, steps and command from the log.
From a model file (`path.py[:Class]`), the file is copied as model.py and the submission is
training-free (`training: null`, `checkpoint: null`, `--parameters`, 0 by default). The other
metadata come from the options. results.json is a full run of the folder's own model.py, made
as `iclbench run` makes it (the model in a worker process, float32, every task and prompt), or,
with `--results FILE`, an existing results file, which must be a full run of exactly these files.

Everything is written in a temporary folder beside the submissions folder and checked as
`iclbench validate` checks it (with the ids and names of the other submissions); it becomes
`submissions/<id>/` by one rename, so a failure leaves nothing behind and an existing folder is
replaced only with `--force`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import yaml

from iclbench import checkpoint, results, training
from iclbench.cache import ExportError, use_export
from iclbench.evaluation import task_lines
from iclbench.plugins import PluginError, sha256_file
from iclbench.runner import RunConfig, resolve_device, run
from iclbench.submissions import schema
from iclbench.tasks import TASKS
from iclbench.worker import IsolatedModel

CHECKPOINT_NAME = "weights.safetensors"
LOG_NAME = "log.json"


class SubmitError(Exception):
    """A submission that cannot be made: the message says why and where."""


def describe(config: dict[str, Any]) -> str:
    """A one-line description of an architecture from its checkpoint config (submission.yaml's `architecture`)."""
    layers, heads, width = config.get("layers"), config.get("heads"), config.get("width")
    looped = f" looped (one tied layer applied {layers} times)" if config.get("tied") else ""
    if config.get("arch") == "gpt2":
        return f"{layers}-layer{looped} GPT-2 transformer, {heads} head(s), width {width}"
    if config.get("arch") == "causal-lsa":
        return (f"{layers}-layer causal linear self-attention on (x, y) tokens, {heads} head(s), "
                f"labels of dimension {config.get('m')}, no MLP")
    if config.get("arch") == "prox-transformer":
        return (f"{layers}-layer{looped} proximal-step transformer: a state token updated by linear attention over "
                f"the context, {heads} head(s), then a ReLU MLP of width {config.get('hidden')}")
    attention = config.get("attention", "linear")
    kind = "linear self-attention (LSA)" if attention == "linear" else f"{attention}-attention linear transformer"
    norm = " with LayerNorm" if config.get("norm") else ""
    return f"{layers}-layer{looped} {kind}{norm}, {heads} head(s), width {width}, no MLP"


def _read_log(run_dir: Path) -> dict[str, Any]:
    path = run_dir / LOG_NAME
    if not path.is_file():
        raise SubmitError(f"{run_dir}: no {LOG_NAME}: not a run folder of `iclbench train --out DIR`")
    try:
        log = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SubmitError(f"{path}: not readable JSON: {exc}") from None
    if not isinstance(log, dict) or not isinstance(log.get("final"), dict):
        raise SubmitError(f"{path}: the training run has not finished (no final validation): finish it with --resume")
    return log


def trained_run(run_dir: Path, staged: Path, name: str, parameters: int | None) -> dict[str, Any]:
    """Stage a trained run's plugin, checkpoint and log in `staged`; return its metadata fields."""
    if parameters is not None:
        raise SubmitError("--parameters: a trained run's parameters are counted in its checkpoint; leave it out")
    log = _read_log(run_dir)
    weights = run_dir / "model.safetensors"
    if not weights.is_file():
        raise SubmitError(f"{run_dir}: no model.safetensors (the checkpoint `iclbench train` writes)")
    try:
        header = checkpoint.check_safetensors(weights, checkpoint.MAX_FILE_BYTES)
    except checkpoint.CheckpointError as exc:
        raise SubmitError(
            f"{exc} (a checkpoint over {checkpoint.MAX_FILE_BYTES} bytes goes on the Hugging Face Hub: see SUBMITTING.md)"
        ) from None
    count = checkpoint.elements(header)
    if log.get("parameters") != count:
        raise SubmitError(f"{run_dir / LOG_NAME}: parameters is {log.get('parameters')!r}, {weights} holds {count}")
    try:
        seeds, steps = [log["seeds"]["train_stream"]], log["final"]["step"]
        config, tasks, command = log["model_config"], log["tasks"], log["command"]
    except (KeyError, TypeError) as exc:
        raise SubmitError(f"{run_dir / LOG_NAME}: no {exc} recorded: not a log of `iclbench train`") from None
    (staged / "model.py").write_text(training.PLUGIN_SOURCE.format(arch=describe(config), name=name))
    shutil.copyfile(weights, staged / CHECKPOINT_NAME)
    shutil.copyfile(run_dir / LOG_NAME, staged / LOG_NAME)
    return {
        "architecture": describe(config),
        "parameters": count,
        "training": {"tasks": list(tasks), "sampler_seeds": seeds, "steps": steps, "command": command,
                     **({"task_pool": log["task_pool"]} if log.get("task_pool") else {})},
        "checkpoint": {"file": CHECKPOINT_NAME, "sha256": sha256_file(staged / CHECKPOINT_NAME)},
    }


def model_file(path: Path, staged: Path, parameters: int | None) -> dict[str, Any]:
    """Stage a model file as model.py of a training-free submission; return its metadata fields."""
    if path.suffix != ".py" or not path.is_file():
        raise SubmitError(f"{path}: not a Python file or a run folder of `iclbench train --out DIR`")
    shutil.copyfile(path, staged / "model.py")
    return {"parameters": 0 if parameters is None else parameters, "training": None, "checkpoint": None}


def _name_problem(loaded: str, wanted: str | None, source: str) -> str | None:
    if wanted is None or wanted == loaded:
        return None
    return f"--name {wanted}: the model in {source} is called {loaded!r} (its Model.name); set that name there"


def _results(staged: Path, model: IsolatedModel, given: Path | None, args: argparse.Namespace, source: str) -> None:
    """results.json in `staged`: a copy of `given`, or a full float32 run of the staged model.py, whose
    `model.source` is then `source`, where that model.py lands (not the staging folder, removed once done)."""
    out = staged / "results.json"
    if given is not None:
        results.read(given)  # a readable results file of the current schema; `schema.validate` checks the rest
        shutil.copyfile(given, out)
        return
    doc = run(model, list(TASKS.values()), RunConfig(args.device, "float32", args.batch_size), out,
              progress=not args.quiet, report=task_lines(len(TASKS), not args.quiet, out))
    failed = [e["error"] for e in doc["tasks"].values() if e["status"] == "failed"]
    if failed:
        raise SubmitError("\n".join(failed))
    doc["model"]["source"] = source
    results.write(out, doc)


Stage = Callable[[Path, str], dict[str, Any]]
"""Writes a submission's model.py and checkpoint into a staging folder for a model name; returns the metadata
fields it determines (architecture, parameters, training, checkpoint)."""


def create(args: argparse.Namespace, stage: Stage | None = None) -> Path:
    """Write `args.submissions / args.id` as the module docstring says; return it. `SubmitError` on any problem.

    `stage` stages the model's files (`iclbench convert`); by default they come from `args.source`, a run folder
    of `iclbench train` or a model file."""
    target = args.submissions / args.id
    if not schema.ID_RE.fullmatch(args.id):
        raise SubmitError(f"--id {args.id!r} is not a valid submission id ({schema.ID_RULE})")
    if (target.exists() or target.is_symlink()) and not args.force:
        raise SubmitError(f"{target} already exists: choose another --id, or replace it with --force")
    source, _, class_name = args.source.partition(":")
    src = Path(source)
    if stage is None:
        if src.is_dir() and class_name:
            raise SubmitError(f"{args.source}: a run folder has no class to choose")
        if src.is_dir():
            stage = lambda staged, name: trained_run(src, staged, name, args.parameters)  # noqa: E731
        else:
            stage = lambda staged, name: model_file(src, staged, args.parameters)  # noqa: E731
    resolve_device(args.device)
    args.submissions.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".iclbench-submit-", dir=args.submissions.resolve().parent))
    try:
        staged = work / args.id
        staged.mkdir()
        name = args.name or args.id
        fields = stage(staged, name)
        if args.architecture is not None:
            fields["architecture"] = args.architecture
        try:  # as CI loads it: model.py with its one model, no class named
            model = IsolatedModel(str(staged / "model.py"))
        except PluginError as exc:
            raise SubmitError(
                f"{args.source}: a submission's model.py defines one model: "
                + str(exc).replace(str(staged), str(target))
            ) from None
        try:
            defined = model.qualname.rpartition(":")[2].rpartition(".")[2]
            if class_name and defined != class_name:
                raise SubmitError(f"{args.source}: the model {source} defines is {defined}, not {class_name}")
            if (problem := _name_problem(model.name, args.name, args.source)) is not None:
                raise SubmitError(problem)
            meta = {
                "name": model.name,
                **({"description": args.description} if args.description else {}),
                "authors": list(args.authors),
                "contact": args.contact,
                "paper": args.paper,
                "code": args.code,
                "license": args.license,
                "architecture": fields["architecture"],
                "parameters": fields["parameters"],
                "training": fields["training"],
                "checkpoint": fields["checkpoint"],
            }
            (staged / "submission.yaml").write_text(yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=120))
            unique = schema.check_unique(target, model.name)
            early = schema.check_meta(meta, str(target / "submission.yaml")) + unique  # before the long run
            if early:
                raise SubmitError("\n".join(early))
            # the run's worker starts anew: its sandbox shows the folder as CI will, submission.yaml included
            model.close()
            model = IsolatedModel(str(staged / "model.py"))
            _results(staged, model, args.results, args, (target / "model.py").as_posix())
        finally:
            model.close()
        shutil.rmtree(staged / "__pycache__", ignore_errors=True)
        problems = schema.validate(staged) + unique
        if problems:
            raise SubmitError("\n".join(p.replace(str(staged), str(target)) for p in problems))
        replaced = work / "replaced"
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.exists():
            target.rename(replaced)  # removed with `work`, once the new folder is in place
        try:
            staged.rename(target)
        except OSError:
            if replaced.exists():
                replaced.rename(target)
            raise
    except (SubmitError, KeyboardInterrupt) as exc:
        made = work / args.id / "results.json"
        why = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)
        if args.results is None and made.is_file():  # a run that took minutes is kept for a look
            kept = Path("results") / f"{args.id}.submit.json"
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(made, kept)
            raise SubmitError(f"{why}\nthe run's results are kept in {kept}") from None
        raise SubmitError(why) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


REQUIRED = {
    "id": "the submission id: the folder's name",
    "authors": "the authors' names",
    "contact": "an e-mail address",
    "license": "the licence of the code and weights, e.g. MIT",
}


def missing_options(args: argparse.Namespace, command: str, required: dict[str, str]) -> list[str]:
    """One line for each option of `required` that `args` lacks, naming the command."""
    return [f"iclbench {command}: missing --{k} ({what})" for k, what in required.items() if not getattr(args, k)]


def write(args: argparse.Namespace, command: str, stage: Stage | None = None) -> int:
    """`create` the submission (after checking the export of `--data`) and say how it went, as `iclbench COMMAND`:
    its exit status (1 when it could not be made)."""
    try:
        if args.data:
            use_export(args.data, list(TASKS.values()))
        target = create(args, stage)
    except (SubmitError, ExportError, results.ResultsError, ValueError, OSError) as exc:
        for line in str(exc).splitlines():
            print(f"iclbench {command}: {line}", file=sys.stderr)
        return 1
    print(f"{target}: valid submission written")
    print(f"next: iclbench validate {target} --rerun, then commit {target} alone (SUBMITTING.md)")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    missing = missing_options(args, "submit", REQUIRED)
    if not Path(args.source.partition(":")[0]).is_dir() and not args.architecture:
        missing.append("iclbench submit: missing --architecture (a short description of the model file's model)")
    for line in missing:
        print(line, file=sys.stderr)
    return 2 if missing else write(args, "submit")


def add_metadata_options(p: argparse.ArgumentParser) -> None:
    """The options of `submit` and `convert` that fill submission.yaml, and those of the full run."""
    p.add_argument("--name", help="the model's name (default: the id; for a model file, its Model.name)")
    p.add_argument("--authors", nargs="+", metavar="NAME", help="the authors' names")
    p.add_argument("--contact", help="an e-mail address")
    p.add_argument("--license", help="licence of the code and weights (an SPDX identifier: MIT, Apache-2.0...)")
    p.add_argument("--paper", help="an http(s) URL of the paper")
    p.add_argument("--code", help="an http(s) URL of the code")
    p.add_argument("--description", help="a sentence about the model")
    p.add_argument("--architecture", help="a short description (default for a run: from its checkpoint)")
    p.add_argument("--force", action="store_true", help="replace an existing submission folder")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int, default=512, help="prompts per predict call")
    p.add_argument("--data", type=Path, metavar="DIR", help="read the evaluation sets from this verified export")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `iclbench submit`."""
    p = sub.add_parser("submit", help="make a complete submission folder from a trained run or a model file")
    p.add_argument("source", metavar="SOURCE", help="a run folder of `iclbench train --out DIR`, or path.py[:Class]")
    p.add_argument("--id", help="the submission id: submissions/<id>/ (" + schema.ID_RULE + ")")
    add_metadata_options(p)
    p.add_argument("--parameters", type=int, metavar="N",
                   help="for a model file: fitted constants it holds (default 0: training-free)")
    p.add_argument("--results", type=Path, metavar="FILE",
                   help="reuse this full run of the same files instead of running the suite")
    p.add_argument("--submissions", type=Path, default=Path("submissions"), help="folder of submission folders")
    p.set_defaults(func=cmd_submit)
