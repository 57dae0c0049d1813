"""`iclbench score`: a submission judged from its predictions, by a process that never imports or runs its code.

    iclbench score FOLDER --public PUBLIC --fresh FRESH --seed SEED [--seed-drawn] [--tasks ...] [--out REPORT]
                   [--samples FILE]

PUBLIC and FRESH are predictions files (`iclbench.predictions`, written by `iclbench predict`) of the model of
FOLDER on the inputs of the suite's evaluation sets and on those of fresh sets of verification seed SEED
(`iclbench inputs`). The scorer holds the targets and the seed; the predictions come from a process that ran the
submitted code, so every number and shape read from them is checked. It

1. validates FOLDER as `iclbench validate` does without `--rerun` (metadata, files, checkpoint, results);
2. reads both predictions files (`iclbench.predictions.read`) and checks that they name the model of FOLDER: the
   name and the SHA-256 of model.py and of the checkpoint that results.json records;
3. replays them through the runner (`iclbench.predictions.ReplayedModel`), regenerating every evaluation set
   and target itself, and judges them as `iclbench verify` judges a worker (`iclbench.submissions.verify.judge`):
   the public predictions must reproduce every metric of results.json, and their per-prompt errors are compared
   with those of the fresh ones;
4. writes the verification report (FOLDER/verification.json unless told otherwise) and, with `--samples`, the
   per-prompt errors of the public predictions, with which the leaderboard resolves its comparisons.

Exit status: 0 when the folder is valid and verified; 1 when it is not (one line per problem, the report
written when the predictions could be replayed); 2 on a usage error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from iclbench import checkpoint, predictions
from iclbench.predictions import Predictions, PredictionsError, ReplayedModel
from iclbench.submissions import schema, verify
from iclbench.tasks import Task



def named_model(found: Predictions, public: dict[str, Any]) -> list[str]:
    """Where the model the predictions name (`verify.IDENTITY`) is not the one results.json records."""
    return [
        f"{found.path}: made by a model whose {k} is {found.identity[k]!r}, results.json has {public['model'].get(k)!r}"
        for k in verify.IDENTITY
        if found.identity[k] != public["model"].get(k)
    ]


def replayed(found: Predictions, sub: schema.Submission) -> ReplayedModel:
    """The predictions as a model for the runner, with the folder's own model file and checkpoint (the files they
    were checked to name), so that the results record their SHA-256 computed here."""
    declared = sub.meta.get("checkpoint")
    ckpt = checkpoint.locate(sub.folder, declared) if found.identity["checkpoint_sha256"] and declared else None
    return ReplayedModel(found, sub.folder / "model.py", None if ckpt is None else str(ckpt))


def score(
    folder: Path,
    public_file: Path,
    fresh_file: Path,
    seed: int,
    drawn: bool,
    chosen: list[Task],
    batch_size: int = 512,
    samples: Path | None = None,
) -> tuple[dict[str, Any] | None, list[str]]:
    """The verification report of the submission in `folder` from its predictions (None when they cannot be
    replayed) and the problems found; the report's verdict is "pass" only without any. With `samples`, the
    public predictions' per-prompt samples are written there (`iclbench.submissions.verify.judge`)."""
    sub, problems = schema.check(folder)
    if problems or sub is None:
        return None, problems
    try:
        found = [predictions.read(path) for path in (public_file, fresh_file)]
    except PredictionsError as exc:
        return None, [str(exc)]
    for side in found:
        problems += named_model(side, sub.results)
        if side.dtype != sub.results["run"]["dtype"]:
            problems.append(f"{side.path}: predictions in {side.dtype}, results.json in {sub.results['run']['dtype']}")
    public, fresh = found
    if public.prompts is not None:
        problems.append(f"{public.path}: predictions of the first {public.prompts} prompts; results.json is a full run")
    if problems:
        return None, problems
    report = verify.judge(replayed(public, sub), replayed(fresh, sub), sub.results, seed, drawn, chosen, fresh.prompts,
                          batch_size, samples=samples)
    report["problems"] += problems
    if problems:
        report["verdict"] = "fail"
    return report, report["problems"]
