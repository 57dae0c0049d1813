"""A leaderboard submission (`submissions/<id>/`): its metadata schema and its validation.

Validation reads files and parses YAML and JSON with bounded readers (`iclbench.untrusted`:
size limits checked before reading, no YAML anchors or aliases, limited nesting) and
safetensors headers with its own bounded reader (`iclbench.checkpoint`); it imports the
submission's `model.py` only when asked to re-run it.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from iclbench import checkpoint, results
from iclbench.cache import USE_AN_EXPORT, ExportError, use_export
from iclbench.plugins import baseline_names, sha256_file
from iclbench.sandbox import refusal
from iclbench.submissions import payload
from iclbench.tasks import FINGERPRINTS, SUITE_VERSION, TASKS, UnknownTaskError, select
from iclbench.tasks.pool import TaskPool
from iclbench.untrusted import UntrustedError, load_json, load_yaml, read_limited

ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{1,62}[a-z0-9]")
"""A submission id (its folder's name) and a model's name: 3-64 lowercase ASCII letters, digits and
hyphens, no hyphen at either end. Ids and names are unique across submissions and baselines up to look-alikes
(`lookalike`)."""
ID_RULE = "3-64 lowercase ASCII letters, digits and hyphens, starting and ending with a letter or digit"
LOOKALIKE_RULE = (
    "the same after Unicode NFKD, case folding, dropping accents and invisible characters, reading Cyrillic and "
    "Greek look-alikes as Latin letters, 0 as o, 1 as l, rn as m, vv as w, and ignoring '-', '_', '.' and spaces"
)
CONFUSABLES = str.maketrans({
    **dict(zip("авезкмнорстухѕіјԁһӏԛԝ", "abe3kmhopctyxsijdhlqw")),  # Cyrillic (either case looks Latin)
    **dict(zip("αβγεζηικνορτυχω", "abyezhiknoptuxw")),  # Greek
    "ɡ": "g",
    "0": "o",
    "1": "l",
})
"""Case-folded Cyrillic and Greek letters that look like Latin ones in either case (other letters are kept), and the
digits that look like letters."""


def lookalike(text: str) -> str:
    """The form under which two ids or names are the same (`LOOKALIKE_RULE`): `Ridge`, `ri-dge`, `ri_dge`, `ridge`
    with a Cyrillic `е` or a zero-width space all give `ridge`; `lsa-1l` and `lsa-ll` give `lsall`."""
    folded = unicodedata.normalize("NFKD", text).casefold()
    kept = "".join(c for c in folded if unicodedata.category(c) not in ("Mn", "Me", "Cf", "Cc"))
    plain = re.sub(r"[\s._-]+", "", unicodedata.normalize("NFKC", kept).casefold().translate(CONFUSABLES))
    return plain.replace("rn", "m").replace("vv", "w")


REQUIRED_FILES = ("model.py", "submission.yaml", "results.json")
ALLOWED_SUFFIXES = (".py", ".yaml", ".json", ".md", ".txt", ".safetensors")
MAX_BYTES = {
    ".py": 256 * 2**10,
    ".yaml": checkpoint.MAX_YAML_BYTES,
    ".json": 4 * 2**20,
    ".md": 256 * 2**10,
    ".txt": 256 * 2**10,
    ".safetensors": checkpoint.MAX_FILE_BYTES,
}
"""Largest accepted file of each kind; a larger checkpoint goes on the Hugging Face Hub."""
MAX_FOLDER_BYTES = 64 * 2**20
MAX_PARAMETERS = 10**13
"""The largest parameter count accepted: far above any checkpoint a submission can hold (2 GiB on the Hub)."""

Check = tuple[bool, Callable[[Any], bool], str]
"""(required, predicate, what the value must be) for one field of submission.yaml."""


def _text(v: Any) -> bool:
    return isinstance(v, str) and v.strip() != ""


def _declared_pool(v: Any) -> bool:
    """A pool of training tasks a model can declare (`TaskPool.parse`), or null."""
    try:
        TaskPool.parse(v)
    except ValueError:
        return False
    return True


def _int(v: Any, least: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= least


def _list(item: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, list) and len(v) > 0 and all(item(x) for x in v)


def _match(pattern: str) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, str) and re.fullmatch(pattern, v) is not None


_url = _match(r"https?://\S+")
_sha256 = _match(r"[0-9a-f]{64}")
_HUB_PART = r"(?!.*(?:--|\.\.))[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9])?"


def _hub_repo_id(v: Any) -> bool:
    """A Hub model id `owner/name`: each part 1-96 ASCII letters, digits, '-', '_', '.', starting and ending with a
    letter or digit, without '--' or '..' (the Hub's own rules), and the name not ending in '.git'."""
    return _match(rf"{_HUB_PART}/{_HUB_PART}")(v) and not v.endswith(".git")


def _relative_safetensors(v: Any) -> bool:
    """A relative path of '/'-separated ASCII parts (letters, digits, '-', '_', '.') ending in .safetensors: no
    leading '/', no '.' or '..' part."""
    return (
        _match(r"[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*\.safetensors")(v)
        and not {".", ".."} & set(v.split("/"))
    )

SCHEMA: dict[str, Check] = {
    "name": (True, lambda v: isinstance(v, str) and ID_RE.fullmatch(v) is not None, f"the model's name, equal to its Model.name: {ID_RULE}"),
    "description": (False, _text, "a non-empty string"),
    "authors": (True, _list(_text), "a non-empty list of names"),
    "contact": (True, _match(r"[^@\s]+@[^@\s]+\.[^@\s]+"), "an e-mail address"),
    "paper": (True, lambda v: v is None or _url(v), "an http(s) URL, or null"),
    "code": (True, lambda v: v is None or _url(v), "an http(s) URL, or null"),
    "license": (True, _text, "a licence name, such as an SPDX identifier (MIT, Apache-2.0, CC-BY-4.0)"),
    "architecture": (True, _text, "a short description of the architecture (layers, width, attention)"),
    "parameters": (
        True,
        lambda v: _int(v, 0) and v <= MAX_PARAMETERS,
        f"an integer from 0 to {MAX_PARAMETERS:.0e}: the number of trained parameters (0, or the fitted constants, "
        "when training-free)",
    ),
    "training": (
        True,
        lambda v: v is None or isinstance(v, dict),
        "a mapping with tasks, sampler_seeds and steps, or null for a training-free model",
    ),
    "checkpoint": (
        True,
        lambda v: v is None or isinstance(v, dict),
        "a mapping: file + sha256, or repo_id + filename + revision + sha256; or null for a training-free model",
    ),
}
"""A trained model declares `training` and `checkpoint` mappings and at least one parameter; a training-free
model says so with `training: null` and `checkpoint: null`."""
TRAINING: dict[str, Check] = {
    "tasks": (True, _list(_text), "a non-empty list of the task names or distributions trained on"),
    "sampler_seeds": (
        True,
        lambda v: v is None or _list(lambda x: _int(x, 0))(v),
        "a non-empty list of non-negative integers, or null where the training code recorded none (a model trained "
        "outside iclbench, such as one converted by `iclbench convert`)",
    ),
    "steps": (True, lambda v: _int(v, 1), "a positive integer: the number of training steps"),
    "command": (False, _text, "the command that trained the checkpoint"),
    "task_pool": (
        False,
        _declared_pool,
        "a mapping tasks + size + seed: the pool of tasks the training prompts were drawn from (Model.task_pool), "
        "or null",
    ),
}
CHECKPOINT_FILE: dict[str, Check] = {
    "file": (
        True,
        _relative_safetensors,
        "a relative path inside the submission folder to a .safetensors file (ASCII, no '..', no leading '/')",
    ),
    "sha256": (True, _sha256, "the file's SHA-256 as 64 lowercase hex digits"),
}
CHECKPOINT_HUB: dict[str, Check] = {
    "repo_id": (
        True,
        _hub_repo_id,
        "a Hugging Face Hub model id owner/name (ASCII letters, digits, '-', '_', '.'; no '--' or '..')",
    ),
    "filename": (
        True,
        _relative_safetensors,
        "the relative path of a .safetensors file in the Hub repository (ASCII, no '..', no leading '/')",
    ),
    "revision": (True, _match(r"[0-9a-f]{40}"), "the 40-hex-digit commit hash the file is pinned to (not a branch)"),
    "sha256": (True, _sha256, "the file's SHA-256 as 64 lowercase hex digits"),
}


@dataclass(frozen=True)
class Submission:
    """A submission whose metadata and results passed the static checks."""

    id: str
    folder: Path
    meta: dict[str, Any]
    results: dict[str, Any]


def check_fields(obj: dict[str, Any], schema: dict[str, Check], where: str) -> list[str]:
    """Problems of `obj` against `schema`: missing, unknown and mistyped fields, each named."""
    problems = [
        f"{where}: missing field '{k}' ({what})" for k, (req, _, what) in schema.items() if req and k not in obj
    ]
    problems += [f"{where}: unknown field '{k}'; known fields: {', '.join(schema)}" for k in obj if k not in schema]
    problems += [
        f"{where}: field '{k}' must be {what}, got {results.shown(obj[k])}"
        for k, (_, ok, what) in schema.items()
        if k in obj and not ok(obj[k])
    ]
    return problems


def check_meta(meta: Any, where: str) -> list[str]:
    """Problems of a parsed submission.yaml against the schema."""
    if not isinstance(meta, dict):
        return [f"{where}: expected a YAML mapping of fields, got {results.shown(meta)}"]
    problems = check_fields(meta, SCHEMA, where)
    if "training" in meta and "checkpoint" in meta and (meta["training"] is None) != (meta["checkpoint"] is None):
        problems.append(
            f"{where}: training and checkpoint must both be mappings (a trained model) or both null "
            "(a training-free model)"
        )
    elif isinstance(meta.get("checkpoint"), dict) and meta.get("parameters") == 0:
        problems.append(f"{where}: field 'parameters' is 0, but a trained model with a checkpoint has parameters")
    if isinstance(meta.get("training"), dict):
        problems += check_fields(meta["training"], TRAINING, f"{where}: training")
    ckpt = meta.get("checkpoint")
    if isinstance(ckpt, dict):
        if ("file" in ckpt) == ("repo_id" in ckpt):
            problems.append(
                f"{where}: checkpoint needs exactly one of 'file' (in the folder) or 'repo_id' (on the Hub)"
            )
        else:
            problems += check_fields(
                ckpt, CHECKPOINT_FILE if "file" in ckpt else CHECKPOINT_HUB, f"{where}: checkpoint"
            )
    return problems


def check_files(folder: Path) -> list[str]:
    """Problems of the folder's layout: id, symbolic links, file kinds and sizes."""
    problems = []
    if not ID_RE.fullmatch(folder.name):
        problems.append(
            f"{folder}: the folder name {folder.name!r} is not a valid submission id ({ID_RULE})"
        )
    problems += [f"{folder}: missing {name}" for name in REQUIRED_FILES if not (folder / name).is_file()]
    total = 0
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d != "__pycache__"]  # Python's own bytecode cache, never committed
        for name in dirs + files:
            path = Path(root) / name
            if path.is_symlink():
                problems.append(f"{path}: symbolic links are not accepted in a submission")
                continue
            if name in dirs:
                continue
            size = path.stat().st_size
            total += size if size <= MAX_BYTES.get(path.suffix, 0) else 0  # one problem per oversized file
            if path.suffix not in ALLOWED_SUFFIXES:
                problems.append(
                    f"{path}: file type not accepted (accepted: {', '.join(ALLOWED_SUFFIXES)}; "
                    "weights must be safetensors, never pickle formats such as .pt, .pth, .bin, .pkl)"
                )
            elif size > MAX_BYTES[path.suffix]:
                problems.append(
                    f"{path}: {size} bytes, over the {MAX_BYTES[path.suffix]}-byte limit for "
                    f"{path.suffix} files"
                    + (" (put large checkpoints on the Hugging Face Hub)" if path.suffix == ".safetensors" else "")
                )
    if total > MAX_FOLDER_BYTES:
        problems.append(f"{folder}: {total} bytes in all, over the {MAX_FOLDER_BYTES}-byte limit")
    return problems


def check_results(doc: dict[str, Any], where: str) -> list[str]:
    """Problems of a results document for the leaderboard: schema, suite version, full runs, fingerprints."""
    try:
        results.check(doc, where)
    except results.ResultsError as exc:
        return [str(exc)]
    if doc["suite_version"] != SUITE_VERSION:
        return [f"{where}: made on suite {doc['suite_version']!r}; this is suite {SUITE_VERSION!r}: re-run the model"]
    problems = []
    if doc["run"].get("dtype") != "float32":
        problems.append(f"{where}: run in {doc['run'].get('dtype')}; the leaderboard compares float32 runs")
    if doc["model"].get("args"):
        problems.append(
            f"{where}: model.args is {results.shown(doc['model']['args'])}: the leaderboard re-runs a model without "
            "arguments (--model-args), so set them in model.py"
        )
    if doc["run"].get("limited") or doc["run"].get("prompts") is not None:
        problems.append(
            f"{where}: a limited run (--prompts {doc['run'].get('prompts')}); the leaderboard needs full runs"
        )
    missing = [name for name in TASKS if name not in doc["tasks"]]
    if missing:
        problems.append(f"{where}: tasks missing: {', '.join(missing)} (run every task; unsupported ones are recorded)")
    for name, entry in doc["tasks"].items():
        task = TASKS.get(name)
        if task is None:
            problems.append(f"{where}: unknown task {name!r} in suite {SUITE_VERSION}")
        elif entry.get("spec") != task.spec.to_dict():
            problems.append(f"{where}: tasks[{name!r}].spec differs from the suite's definition of {name}")
        elif entry["status"] == "failed":
            problems.append(f"{where}: task {name} failed: {entry.get('error', 'no error recorded')}")
        elif entry["status"] == "ok":
            if entry.get("fingerprint") != FINGERPRINTS[name]:
                problems.append(
                    f"{where}: tasks[{name!r}].fingerprint {str(entry.get('fingerprint'))[:16]}... "
                    f"is not the suite's {FINGERPRINTS[name][:16]}...: scored on other evaluation data; re-run and "
                    f"{USE_AN_EXPORT}"
                )
            if entry.get("n_prompts") != task.spec.n_prompts:
                problems.append(
                    f"{where}: tasks[{name!r}] scored {entry.get('n_prompts')} prompts, "
                    f"not the task's {task.spec.n_prompts}"
                )
            scored = [str(n) for n in task.spec.lengths if n not in entry.get("unsupported_lengths", [])]
            if sorted(entry["lengths"], key=int) != scored:
                problems.append(
                    f"{where}: tasks[{name!r}].lengths has {sorted(entry['lengths'], key=int)}, expected {scored}"
                )
    return problems


def _read(path: Path, reader: Callable[[Path, int], Any]) -> tuple[Any, list[str]]:
    """Parse `path` with a bounded reader of `iclbench.untrusted`; (None, []) when it is missing or over its
    size limit, which `check_files` reports."""
    limit = MAX_BYTES[path.suffix]
    if not path.is_file() or path.stat().st_size > limit:
        return None, []
    try:
        return reader(path, limit), []
    except (OSError, UntrustedError) as exc:
        return None, [f"{path}: {exc}"]


Taken = dict[str, tuple[str, str]]
"""Ids and names already used, by `lookalike` form: (the id or name, what it is)."""


def taken_line(where: str, what: str, value: str, taken: Taken) -> str | None:
    """The problem of an id or name (`what`, `value`) that is already taken or looks like one taken; None if neither."""
    if (found := taken.get(lookalike(value))) is None:
        return None
    used, owner = found
    if used == value:
        return f"{where}: {what} {value!r} is already {owner}"
    return f"{where}: {what} {value!r} looks like {owner} ({LOOKALIKE_RULE})"


def baselines_taken() -> Taken:
    """The baselines' names, by `lookalike` form."""
    return {lookalike(b): (b, f"the name of the baseline {b!r}") for b in baseline_names()}


def check_unique(folder: Path, name: str) -> list[str]:
    """Problems of an id (`folder`'s name) or model name that is, or looks like (`lookalike`), a baseline's name or
    the id or name of another submission beside `folder`."""
    taken = baselines_taken()
    for other in sorted(p for p in folder.parent.iterdir() if p.is_dir() and not p.is_symlink() and p != folder):
        taken.setdefault(lookalike(other.name), (other.name, f"the id of {other}"))
        other_meta, _ = _read(other / "submission.yaml", load_yaml)  # its own validation reports its problems
        if isinstance(other_meta, dict) and isinstance(other_meta.get("name"), str):
            used = other_meta["name"]
            taken.setdefault(lookalike(used), (used, f"the model name {used!r} of {other}"))
    lines = [taken_line(str(folder), what, value, taken) for what, value in (("id", folder.name), ("name", name))]
    return [line for line in lines if line is not None]


def check_training_free(folder: Path) -> list[str]:
    """Problems of a training-free submission (`training: null`) that ships parameters: one line per file other
    than `payload.SCHEMA_FILES` that holds more than `payload.MAX_NUMBERS` numbers (`payload.count`)."""
    problems = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not os.path.islink(os.path.join(root, d)))
        for name in sorted(files):
            path = Path(root) / name
            if path.is_symlink() or (root == str(folder) and name in payload.SCHEMA_FILES):
                continue
            try:
                numbers = payload.count(path, read_limited(path, MAX_BYTES.get(path.suffix, 0)))
            except (OSError, UntrustedError):
                continue  # check_files reports a file of another kind or over its size limit
            if numbers > payload.MAX_NUMBERS:
                problems.append(
                    f"{path}: holds {numbers} numbers, more than the {payload.MAX_NUMBERS} a training-free "
                    "submission (training: null) may ship: trained weights go in the declared checkpoint, with "
                    "training, checkpoint and parameters declared in submission.yaml"
                )
    return problems


def load(folder: str | Path) -> tuple[Submission | None, list[str]]:
    """Run every check that needs neither the checkpoint nor the model's code.

    Returns the submission (None when its files cannot be read) and the list of problems.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None, [f"{folder}: not a folder"]
    problems = check_files(folder)
    meta, bad = _read(folder / "submission.yaml", load_yaml)
    problems += bad
    if meta is not None:
        problems += check_meta(meta, str(folder / "submission.yaml"))
    if isinstance(meta, dict) and isinstance(meta.get("name"), str) and ID_RE.fullmatch(meta["name"]):
        problems += check_unique(folder, meta["name"])
    declared = (
        meta["checkpoint"].get("file") if isinstance(meta, dict) and isinstance(meta.get("checkpoint"), dict) else None
    )
    problems += [
        f"{p}: a .safetensors file that is not the declared checkpoint (checkpoint.file in submission.yaml)"
        for p in sorted(folder.rglob("*.safetensors"))
        if isinstance(meta, dict) and p.relative_to(folder).as_posix() != declared  # unknown when unreadable
    ]
    if isinstance(meta, dict) and "training" in meta and meta["training"] is None:
        problems += check_training_free(folder)
    where = str(folder / "results.json")
    doc, bad = _read(folder / "results.json", load_json)
    if doc is None:
        return None, problems + bad
    problems += check_results(doc, where)
    if not isinstance(meta, dict) or not isinstance(doc, dict) or not isinstance(doc.get("model"), dict):
        return None, problems
    model = doc["model"]
    if "name" in meta and model.get("name") != meta["name"]:
        problems.append(f"{where}: model.name is {model.get('name')!r}, submission.yaml says {meta['name']!r}")
    code = folder / "model.py"
    if code.is_file() and code.stat().st_size <= MAX_BYTES[".py"] and model.get("file_sha256") != sha256_file(code):
        problems.append(f"{where}: model.file_sha256 is not the SHA-256 of model.py: re-run after the last edit")
    declared = meta["checkpoint"].get("sha256") if isinstance(meta.get("checkpoint"), dict) else None
    if declared and model.get("checkpoint_sha256") != declared:
        problems.append(
            f"{where}: model.checkpoint_sha256 is {model.get('checkpoint_sha256')!r}, not the declared "
            "checkpoint's: set Model.checkpoint to the path checkpoint.resolve(__file__) returns"
        )
    pool = meta["training"].get("task_pool") if isinstance(meta.get("training"), dict) else None
    if pool != model.get("task_pool"):
        problems.append(
            f"{where}: model.task_pool is {results.shown(model.get('task_pool'))}, submission.yaml's "
            f"training.task_pool {results.shown(pool)}: the pool the model declares (Model.task_pool) is the one "
            "submission.yaml states"
        )
    if meta.get("checkpoint", ...) is None and model.get("checkpoint_sha256") is not None:
        problems.append(
            f"{where}: the run loaded a checkpoint (model.checkpoint_sha256 {model['checkpoint_sha256']!r}), but "
            "submission.yaml declares none (checkpoint: null): declare it, with its SHA-256"
        )
    return Submission(folder.name, folder, meta, doc), problems


def _checkpoint_declared(sub: Submission) -> bool:
    """Whether submission.yaml's checkpoint field is well formed, and a file in the folder within its size
    limit (`check_files` reports one over it), so that it can be checked."""
    ckpt = sub.meta.get("checkpoint")
    if not (
        isinstance(ckpt, dict)
        and ("file" in ckpt) != ("repo_id" in ckpt)
        and not check_fields(ckpt, CHECKPOINT_FILE if "file" in ckpt else CHECKPOINT_HUB, "")
    ):
        return False
    local = sub.folder / ckpt["file"] if "file" in ckpt else None
    return local is None or not local.is_file() or local.stat().st_size <= checkpoint.MAX_FILE_BYTES


def check_checkpoint(sub: Submission) -> list[str]:
    """Fetch (Hub) or find (folder) the declared checkpoint; check it is safetensors with its SHA-256, and that
    `parameters` is its number of elements."""
    declared = sub.meta["checkpoint"]
    try:
        path = checkpoint.locate(sub.folder, declared)
        header = checkpoint.verify(path, declared["sha256"], checkpoint.max_bytes(declared))
    except checkpoint.CheckpointError as exc:
        return [f"{sub.folder / 'submission.yaml'}: checkpoint: {exc}"]
    elements = checkpoint.elements(header)
    if sub.meta.get("parameters") not in (elements, 0):  # 0 is reported by check_meta
        return [
            f"{sub.folder / 'submission.yaml'}: field 'parameters' is {sub.meta.get('parameters')!r}, "
            f"but the checkpoint holds {elements} numbers: parameters counts every element of the checkpoint"
        ]
    return []


def check(folder: str | Path) -> tuple[Submission | None, list[str]]:
    """`load`'s checks and the checkpoint's (`check_checkpoint`): every check that needs no model code."""
    sub, problems = load(folder)
    if sub is None:
        return None, problems
    return sub, problems + (check_checkpoint(sub) if _checkpoint_declared(sub) else [])


def validate(
    folder: str | Path,
    rerun: bool = False,
    tasks: list[str] | None = None,
    batch_size: int = 512,
    sandbox: bool = True,
    progress: bool = False,
    samples: Path | None = None,
) -> list[str]:
    """Every problem of the submission in `folder`; an empty list means it is valid.

    With `rerun`, the model is loaded from model.py and scored again on the CPU, in the sandbox
    (`iclbench.sandbox`) unless `sandbox` is False (on the tasks matching `tasks`, all by default), and
    every metric is compared with results.json within the tolerances of `iclbench.submissions.rerun`;
    `progress` and `samples` (a folder, which receives `<id>.samples.safetensors`) are `rerun_and_compare`'s.
    """
    sub, problems = check(folder)
    if sub is None:
        return problems
    if rerun and not problems:
        from iclbench.samples import SUFFIX
        from iclbench.submissions.rerun import rerun_and_compare

        out = None if samples is None else samples / f"{sub.id}{SUFFIX}"
        problems = rerun_and_compare(sub.folder / "model.py", sub.results, tasks, batch_size, sandbox=sandbox,
                                     progress=progress, samples=out)
    return problems


def cmd_validate(args: argparse.Namespace) -> int:
    for flag, given in (("--tasks", args.tasks), ("--data", args.data), ("--no-sandbox", args.no_sandbox),
                        ("--samples", args.samples)):
        if given and not args.rerun:
            print(f"iclbench validate: {flag} only applies with --rerun", file=sys.stderr)
            return 2
    if args.rerun and not args.no_sandbox and (refused := refusal("validate --rerun")) is not None:
        print(refused, file=sys.stderr)
        return 2
    if args.data:
        try:
            use_export(args.data, select(args.tasks))
        except (ExportError, UnknownTaskError) as exc:
            print(f"iclbench validate: {exc}", file=sys.stderr)
            return 2
    if args.samples is not None:
        args.samples.mkdir(parents=True, exist_ok=True)
    failed = 0
    for folder in args.folders:
        problems = validate(folder, args.rerun, args.tasks, args.batch_size, not args.no_sandbox, not args.quiet,
                            args.samples)
        for message in problems:
            print(f"error: {message}")
        print(
            f"{folder}: {'INVALID, ' + str(len(problems)) + ' problem(s)' if problems else 'valid'}"
            + (" (re-run matches)" if args.rerun and not problems else "")
        )
        failed += bool(problems)
    return 1 if failed else 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `iclbench validate`."""
    p = sub.add_parser("validate", help="check a submission folder (and re-run it with --rerun)")
    p.add_argument(
        "folders", nargs="+", type=Path, metavar="FOLDER", help="submission folders, e.g. submissions/my-model"
    )
    p.add_argument("--rerun", action="store_true", help="score the model again on the CPU and compare every metric")
    p.add_argument("--tasks", nargs="+", metavar="TASK", help="with --rerun: re-run only these tasks (default: all)")
    p.add_argument("--batch-size", type=int, default=512, help="with --rerun: prompts per predict call")
    p.add_argument(
        "--data", type=Path, metavar="DIR", help="with --rerun: read the evaluation sets from this verified export"
    )
    p.add_argument("--no-sandbox", action="store_true",
                   help="with --rerun: run the model without the sandbox, which is otherwise required (only on your "
                        "own machine, where the sandbox cannot be made)")
    p.add_argument(
        "--samples",
        type=Path,
        metavar="DIR",
        help="with --rerun: write the re-run's per-prompt samples to DIR/<id>.samples.safetensors "
        "(for `iclbench leaderboard --samples DIR`)",
    )
    p.add_argument("--quiet", action="store_true", help="with --rerun: no progress bar and no line per task")
    p.set_defaults(func=cmd_validate)
