"""Per-prompt outputs (`iclbench run --log-samples`) and the paired comparison of two models on them.

The samples file `<results stem>.samples.safetensors`, beside the results file, holds for every
task and scored prompt length `n` three tensors named `<task>/<n>/<what>`:

- `rel_err` (P,) float64: each prompt's relative squared error, sum_q (y - f)^2 / sum_q f^2;
- `target_sq` (P,) float64: sum_q f^2, each prompt's weight in the suite's `rel_err`, which is
  sum(rel_err * target_sq) / sum(target_sq) (`iclbench.metrics.relative_error`);
- `y` (P, q) float32: the predictions.

A task of a model's declared pool of training tasks (`iclbench.api.Model.task_pool`) also has, for its in-pool
prompts, the same three tensors named `<task>/in_pool/<n>/<what>`.

Its metadata holds `format` ("iclbench-samples-1") and `header`, a JSON object: `suite_version`,
`iclbench_version`, `model` (name, class, args, file_sha256, checkpoint_sha256), `run` (device,
dtype, prompts) and `tasks`: per task its data `fingerprint`, `nominal` length, `n_prompts` and,
per length, the `rel_err_db` the results file records (and `in_pool`, the same per length of the
in-pool prompts, for a task of a declared pool). `compare` checks that the tensors reproduce those
numbers, and those of a results file named beside them, so a stale file is refused.

A run writes the file once, with its results file; until then each finished task's samples are
appended to the hidden journal beside it (`Journal`), which the next run keeps from after a crash.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from iclbench import metrics, results
from iclbench.models.weights import atomic_save

log = logging.getLogger(__name__)

FORMAT = "iclbench-samples-1"
SUFFIX = ".samples.safetensors"
KINDS = ("rel_err", "target_sq", "y")
TOLERANCE_DB = 1e-6
"""Largest difference between a file's recorded `rel_err_db` and the one its tensors give."""


class SamplesError(ValueError):
    """A samples file that cannot be read, is stale, or cannot be compared with another: one line."""


def path_for(results_path: Path) -> Path:
    """The samples file beside a results file: `results/ridge.json` -> `results/ridge.samples.safetensors`."""
    return results_path.with_name(results_path.name.removesuffix(".json") + SUFFIX)


def task_tensors(task: str, n: int, y: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """The samples of one task and length from the predictions `y` and the target `f` (both (P, q), or (P, q, m)),
    computed as the metrics are (`iclbench.metrics.squared_errors`)."""
    err, energy = metrics.squared_errors(y, target)
    return {f"{task}/{n}/rel_err": err / energy, f"{task}/{n}/target_sq": energy, f"{task}/{n}/y": y.float()}


def header(doc: dict[str, Any], tasks: list[str]) -> dict[str, Any]:
    """The samples header for `tasks` of the results document `doc`."""
    model = {k: doc["model"].get(k) for k in ("name", "class", "args", "file_sha256", "checkpoint_sha256")}
    entries = {}
    for name in tasks:
        entry = doc["tasks"][name]
        entries[name] = {
            "fingerprint": entry["fingerprint"],
            "nominal": entry["spec"]["nominal"],
            "n_prompts": entry["n_prompts"],
            **_numbers(entry),
        }
    return {
        "suite_version": doc["suite_version"],
        "iclbench_version": doc["iclbench_version"],
        "model": model,
        "run": {k: doc["run"].get(k) for k in ("device", "dtype", "prompts")},
        "tasks": entries,
    }


def _numbers(entry: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """A header's `lengths` (and `in_pool`): `rel_err_db` per length, from a results entry."""
    per_length = lambda lengths: {n: {"rel_err_db": m["rel_err"]["db"]} for n, m in lengths.items()}  # noqa: E731
    pooled = {"in_pool": per_length(entry["in_pool"]["lengths"])} if "in_pool" in entry else {}
    return {"lengths": per_length(entry["lengths"]), **pooled}


def write(path: Path, doc: dict[str, Any], tensors: dict[str, dict[str, torch.Tensor]]) -> None:
    """Write the samples of the tasks in `tensors` (by task) of the results `doc`, atomically."""
    flat = {k: v for per_task in tensors.values() for k, v in per_task.items()}
    meta = {"format": FORMAT, "header": json.dumps(header(doc, list(tensors)))}
    atomic_save(flat, path, meta)
    path.chmod(0o644)  # readable like the results file beside it (the temporary file was private)


def read(path: Path, kinds: tuple[str, ...] = KINDS) -> tuple[dict[str, Any], dict[str, dict[str, torch.Tensor]]]:
    """(header, tensors by task) of a samples file, only those of `kinds` (default: all); `SamplesError` when it
    is not one."""
    try:
        with safe_open(str(path), "pt") as fh:
            meta = fh.metadata() or {}
            flat = {k: fh.get_tensor(k) for k in fh.keys() if k.rsplit("/", 1)[-1] in kinds}
    except (OSError, SafetensorError) as exc:
        raise SamplesError(f"{path}: not a readable samples file ({exc})") from None
    return _parse(meta, flat, str(path))


def _parse(meta: dict[str, str], flat: dict[str, torch.Tensor], where: str
           ) -> tuple[dict[str, Any], dict[str, dict[str, torch.Tensor]]]:
    """(header, tensors by task) of a samples file's (or journal record's) metadata and tensors."""
    if meta.get("format") != FORMAT:
        raise SamplesError(f"{where}: not an iclbench samples file (format {meta.get('format')!r}, expected {FORMAT})")
    try:
        head = json.loads(meta["header"])
        by_task: dict[str, dict[str, torch.Tensor]] = {name: {} for name in head["tasks"]}
    except (KeyError, TypeError, ValueError) as exc:
        raise SamplesError(f"{where}: its header is not readable ({exc})") from None
    numbers = lambda v: isinstance(v, dict) and all(  # noqa: E731
        isinstance(m, dict) and isinstance(m.get("rel_err_db"), (int, float)) for m in v.values())
    for name, entry in head["tasks"].items():
        if not (isinstance(entry, dict) and isinstance(entry.get("fingerprint"), str)
                and type(entry.get("nominal")) is int and type(entry.get("n_prompts")) is int
                and numbers(entry.get("lengths")) and numbers(entry.get("in_pool", {}))):
            raise SamplesError(f"{where}: its header's entry of {str(name)[:80]!r} is not a fingerprint, a nominal "
                               "length, a number of prompts and a rel_err_db per length (and per in-pool length)")
    for key, t in flat.items():
        name, n, kind = key.rsplit("/", 2) if key.count("/") >= 2 else (key, "", "")
        task = name.removesuffix("/in_pool")
        lengths = head["tasks"][task].get("lengths" if task == name else "in_pool", {}) if task in by_task else {}
        if n not in lengths or kind not in KINDS:
            raise SamplesError(f"{where}: tensor {key!r} is not named <task>[/in_pool]/<length>/<{'|'.join(KINDS)}> "
                               "of its header")
        by_task[task][key] = t
    return head, by_task


class Journal(results.AppendLog):
    """The journal of a samples file (`results.journal_path` of it), that a run appends each finished task's
    samples to: one record, an 8-byte little-endian length and a safetensors blob holding the task's tensors and
    header, flushed to disk. The run writes the samples file once, at its end (or when it is interrupted), and
    removes the journal; `kept` folds a journal that a crash left behind. Records are appended, never truncated:
    a later record of a task supersedes an earlier one."""

    mode = "ab"

    def __init__(self, path: Path) -> None:
        super().__init__(results.journal_path(path))

    def append(self, doc: dict[str, Any], name: str, tensors: dict[str, torch.Tensor]) -> None:
        """Make the samples `tensors` of task `name` (whose entry is in the results `doc`) durable."""
        meta = {"format": FORMAT, "header": json.dumps(header(doc, [name]))}
        blob = save_tensors({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=meta)
        self._durable(len(blob).to_bytes(8, "little") + blob)


def _journaled(path: Path) -> list[tuple[dict[str, Any], dict[str, dict[str, torch.Tensor]]]]:
    """The records of the journal of the samples file `path`, oldest first (none without one); a torn last
    record (a crash while appending) is left out, and so is every record from an unreadable one on."""
    journal = results.journal_path(path)
    try:
        raw = journal.read_bytes() if journal.exists() else b""
    except OSError as exc:
        log.warning("%s: not a readable samples journal (%s); its samples are not kept", journal, exc)
        return []
    records, at = [], 0
    while at + 8 <= len(raw):
        size = int.from_bytes(raw[at:at + 8], "little")
        blob = raw[at + 8:at + 8 + size]
        if len(blob) < size:
            break
        try:
            head_size = int.from_bytes(blob[:8], "little")
            head = json.loads(blob[8:8 + head_size])
            meta = (head.get("__metadata__") if isinstance(head, dict) else None) or {}
            records.append(_parse(meta, load_tensors(blob), f"{journal} (record {len(records) + 1})"))
        except (SamplesError, SafetensorError, ValueError) as exc:
            log.warning("%s; the samples from there on are not kept", exc)
            break
        at += 8 + size
    return records


def kept(path: Path, entries: dict[str, dict[str, Any]]) -> dict[str, dict[str, torch.Tensor]]:
    """The samples of the results `entries` (by task) that a run keeps, from the samples file at `path` and the
    journal beside it (`Journal`; its later records supersede): those whose data fingerprint and every recorded
    `rel_err_db` are the entry's (an unreadable file: none from it)."""
    sources = []
    if path.exists():
        try:
            sources.append(read(path))
        except SamplesError as exc:
            log.warning("%s; its samples are not kept", exc)
    out = {}
    for head, tensors in [*sources, *_journaled(path)]:
        for name, entry in entries.items():
            mine = head["tasks"].get(name)
            if mine is None or entry.get("status") != "ok" or mine["fingerprint"] != entry.get("fingerprint"):
                continue
            if _numbers(entry) == {k: v for k, v in mine.items() if k in ("lengths", "in_pool")}:
                out[name] = tensors[name]
    return out


@dataclass(frozen=True)
class Side:
    """One model's samples for `compare`: where they came from, the header and the tensors."""

    label: str
    header: dict[str, Any]
    tensors: dict[str, dict[str, torch.Tensor]]

    def get(self, task: str, n: str, kind: str) -> torch.Tensor:
        return self.tensors[task][f"{task}/{n}/{kind}"]


def _db(err: torch.Tensor, weight: torch.Tensor) -> float:
    """The suite's `rel_err` in dB of per-prompt squared errors `err` and target energies `weight`."""
    return metrics.db(float(err.sum() / weight.sum()))


def _check(side: Side, recorded: dict[str, Any] | None) -> None:
    """The tensors give the header's numbers (in-pool ones included), and those of the results file `recorded` when
    given."""
    for name, entry in side.header["tasks"].items():
        theirs_entry = {} if recorded is None else recorded["tasks"].get(name, {})
        for key, mine, theirs_lengths in (
            (name, entry["lengths"], theirs_entry.get("lengths", {})),
            (f"{name}/in_pool", entry.get("in_pool", {}), theirs_entry.get("in_pool", {}).get("lengths", {})),
        ):
            for n, m in mine.items():
                try:
                    weight = side.tensors[name][f"{key}/{n}/target_sq"]
                    got = _db(side.tensors[name][f"{key}/{n}/rel_err"] * weight, weight)
                except KeyError:
                    raise SamplesError(f"{side.label}: {key} n={n} has no rel_err or target_sq tensor") from None
                if not math.isclose(got, m["rel_err_db"], abs_tol=TOLERANCE_DB):
                    raise SamplesError(f"{side.label}: {key} n={n}: the samples give {got:.6f} dB, their header "
                                       f"{m['rel_err_db']:.6f} dB: the file is damaged")
                if recorded is None:
                    continue
                theirs = theirs_lengths.get(n, {}).get("rel_err", {}).get("db")
                if theirs is None or theirs_entry.get("fingerprint") != entry["fingerprint"] or not math.isclose(
                        theirs, m["rel_err_db"], abs_tol=TOLERANCE_DB):
                    raise SamplesError(f"{side.label}: the samples of {key} n={n} are not those of the results file "
                                       "beside them (re-run with --log-samples)")


def load(path: Path, kinds: tuple[str, ...] = KINDS) -> Side:
    """The samples of a results file (the samples file beside it) or of a samples file, checked; only the tensors
    of `kinds` (which must include `rel_err` and `target_sq`, the ones checked)."""
    recorded = None
    if not path.name.endswith(SUFFIX):
        recorded, path = results.read(path), path_for(path)
        if not path.exists():
            raise SamplesError(f"no per-prompt samples beside the results file ({path} is missing): "
                               "run it with --log-samples")
    side = Side(str(path), *read(path, kinds))
    _check(side, recorded)
    return side


def compare(a: Side, b: Side, tasks: list[str] | None = None, all_lengths: bool = False) -> list[dict[str, Any]]:
    """Per common task (of `tasks`, when given) and length (the nominal one, or every common one), the paired
    difference A - B in dB over the prompts both scored (`iclbench.metrics.db_difference`).

    `SamplesError` when the files are of different suite versions or their data differ (fingerprints).
    """
    if a.header["suite_version"] != b.header["suite_version"]:
        raise SamplesError(f"{a.label} is of suite {a.header['suite_version']}, {b.label} of suite "
                           f"{b.header['suite_version']}: only results on the same suite can be compared")
    ta, tb = a.header["tasks"], b.header["tasks"]
    common = [t for t in ta if t in tb and (tasks is None or t in tasks)]
    differ = [t for t in common if ta[t]["fingerprint"] != tb[t]["fingerprint"]]
    if differ:
        raise SamplesError(f"{', '.join(differ)}: {a.label} and {b.label} were scored on different data "
                           "(fingerprints differ): their prompts cannot be paired")
    rows = []
    for name in common:
        nominal = str(ta[name]["nominal"])
        lengths = [n for n in ta[name]["lengths"] if n in tb[name]["lengths"]]
        for n in lengths if all_lengths else [n for n in lengths if n == nominal]:
            m = min(ta[name]["n_prompts"], tb[name]["n_prompts"])  # evaluation sets are prefixes of each other
            weight = a.get(name, n, "target_sq")[:m]
            if not torch.equal(weight, b.get(name, n, "target_sq")[:m]):
                raise SamplesError(f"{name} n={n}: the targets of {a.label} and {b.label} differ on the same prompts")
            err_a, err_b = a.get(name, n, "rel_err")[:m] * weight, b.get(name, n, "rel_err")[:m] * weight
            diff = metrics.db_difference(err_a, err_b, weight)
            rows.append({"task": name, "n": int(n), "prompts": m, "a_db": _db(err_a, weight), "b_db": _db(err_b, weight),
                         "diff_db": diff["db"], "ci90_db": diff["ci90_db"]})
    return rows
