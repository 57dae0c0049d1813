"""`iclbench convert garg RUN_DIR OUT`: a submission folder from a checkpoint of another code base.

`garg`: a run folder of Garg et al.'s code (`iclbench.models.garg`: config.yaml and state.pt, read without
unpickling anything but tensors). OUT becomes a submission folder as `iclbench submit` makes one: model.py (a
`GargModel` named `--name`, by default OUT's name), weights.safetensors (the iclbench GPT-2 that computes their
forward pass), garg-config.yaml (their config.yaml, for the record), submission.yaml and the results.json of a
full run, all checked as `iclbench validate` checks them before OUT appears. Their code records no training
seed, so `training.sampler_seeds` is null; `training.steps` is state.pt's train_step + 1 (the step index it was
saved at, counted from 0).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

from iclbench import checkpoint
from iclbench.models.garg import CONFIG, GargFormatError, load_run
from iclbench.models.weights import save_weights
from iclbench.plugins import sha256_file
from iclbench.submissions import schema
from iclbench.submissions.create import (
    CHECKPOINT_NAME, REQUIRED, Stage, SubmitError, add_metadata_options, missing_options, write,
)

FORMATS = ("garg",)
CONFIG_COPY = "garg-config.yaml"
CODE = "https://github.com/dtsip/in-context-learning"

GARG_PLUGIN = '''"""{architecture}; converted by `iclbench convert garg` from a run folder of Garg et al.'s code, whose
config.yaml is garg-config.yaml."""

from iclbench.models.garg import GargModel


class Converted(GargModel):
    name = {name!r}
'''


def garg_stage(run_dir: Path) -> Stage:
    """Stages the converted checkpoint of a Garg et al. run folder, its plugin and their config."""

    def stage(staged: Path, name: str) -> dict[str, Any]:
        try:
            net, info = load_run(run_dir)
        except GargFormatError as exc:
            raise SubmitError(str(exc)) from None
        config = info["config"]
        architecture = (f"Garg et al.'s GPT-2: {config['n_layer']} layers, {config['n_head']} heads, width "
                        f"{config['n_embd']}, inputs of dimension {config['n_dims']}, {config['n_positions']} points")
        weights = staged / CHECKPOINT_NAME
        save_weights(net, weights, {"converted_from": "garg", "train_step": info["train_step"]})
        try:
            header = checkpoint.check_safetensors(weights, checkpoint.MAX_FILE_BYTES)
        except checkpoint.CheckpointError as exc:
            raise SubmitError(f"{exc} (a checkpoint over {checkpoint.MAX_FILE_BYTES} bytes goes on the Hugging Face "
                              "Hub: see SUBMITTING.md)") from None
        shutil.copyfile(run_dir / CONFIG, staged / CONFIG_COPY)
        (staged / "model.py").write_text(GARG_PLUGIN.format(architecture=architecture, name=name))
        task = info["task"] or "not recorded"
        return {
            "architecture": architecture,
            "parameters": checkpoint.elements(header),  # every element it holds, as for any submission
            "training": {"tasks": [f"{task} (Garg et al.'s code, {CODE})"], "sampler_seeds": None,
                         "steps": info["train_step"] + 1},
            "checkpoint": {"file": CHECKPOINT_NAME, "sha256": sha256_file(weights)},
        }

    return stage


def cmd_convert(args: argparse.Namespace) -> int:
    out: Path = args.out
    missing = missing_options(args, "convert", {k: v for k, v in REQUIRED.items() if k != "id"})
    if not schema.ID_RE.fullmatch(out.name):
        missing.append(f"iclbench convert: OUT {out}: its name {out.name!r} is the submission id ({schema.ID_RULE})")
    for line in missing:
        print(line, file=sys.stderr)
    if missing:
        return 2
    run = argparse.Namespace(**vars(args), id=out.name, submissions=out.parent, source=str(args.run_dir),
                             parameters=None, results=None)
    return write(run, "convert", garg_stage(args.run_dir))


EXAMPLES = """examples:
  iclbench convert garg models/linear_regression/pretrained submissions/garg-linear \\
      --authors "Shivam Garg" "Dimitris Tsipras" --contact me@example.org --license MIT
  iclbench run --model garg:models/linear_regression/pretrained     # score the run folder as it is
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `iclbench convert`."""
    p = sub.add_parser("convert", help="make a submission folder from another code base's checkpoint",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("format", choices=FORMATS, help="garg: a run folder of Garg et al.'s code (config.yaml, state.pt)")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the run folder")
    p.add_argument("out", type=Path, metavar="OUT", help="the submission folder to write (its name is the id)")
    add_metadata_options(p)
    p.set_defaults(func=cmd_convert)
