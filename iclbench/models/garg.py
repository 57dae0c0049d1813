"""Garg et al.'s checkpoints (`dtsip/in-context-learning`) as an iclbench GPT-2, with their forward pass.

A run folder of their code holds `config.yaml`, whose `model` section names the architecture (family gpt2,
n_dims, n_positions, n_embd, n_layer, n_head), and `state.pt`, a `torch.save` of {"model_state_dict",
"optimizer_state_dict", "train_step"}, read here with `torch.load(weights_only=True)` (tensors and plain
containers only: nothing else is unpickled). Their model reads tokens that interleave x_i and (y_i, 0, ..., 0),
embeds them with `_read_in`, Linear(n_dims -> n_embd), runs Hugging Face's `GPT2Model` (n_positions
2 * n_positions, dropout 0, no cache) on those embeddings, and reads `_read_out`, Linear(n_embd -> 1), at the
x positions: the prediction for x_{n+1} at position 2n sees the n pairs before it.

`iclbench.models.GPT2` with the tanh GELU (Hugging Face's "gelu_new") computes exactly that, and every weight
maps one to one (`to_gpt2`): Hugging Face's Conv1D layers (c_attn, c_proj, c_fc, weights stored (in, out))
are `torch.nn.Linear` layers transposed; LayerNorms, with the same epsilon 1e-5, and the read-out are copied;
attention scales by 1/sqrt(head width) in both. Two re-indexings, both exact: iclbench's tokens are (x, 0) and
(0, ..., 0, y), so its read-in is [W, W[:, 0]] (a y token reads W[:, 0] y + b, as (y, 0, ..., 0) reads W), and
its position table is wpe's first 2 (n_positions - 1) + 1 rows (n_positions - 1 context pairs and the query).
Left out: the token embedding wte (unused with input embeddings), wpe's last row (the last y token's, which no
prediction reads) and the causal-mask buffers older `transformers` versions saved (attn.bias, attn.masked_bias).

`GargRun` scores a run folder (`iclbench run --model garg:RUN_DIR`); `GargModel` is the plugin of a folder
converted to safetensors (`iclbench convert garg RUN_DIR OUT`). Both score every task with scalar labels in
the checkpoint's dimension, at prompt lengths up to n_positions - 1.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch
import yaml

from iclbench.models.gpt2 import GPT2
from iclbench.models.plugin import TrainedModel
from iclbench.tasks import TaskSpec
from iclbench.untrusted import UntrustedError, read_limited

CONFIG = "config.yaml"
STATE = "state.pt"
NOT_A_RUN = f"a run folder of Garg et al.'s code holds {CONFIG} and {STATE}"
MAX_CONFIG_BYTES = 2**20
MODEL_KEYS = ("n_dims", "n_positions", "n_embd", "n_layer", "n_head")
"""The keys of config.yaml's `model` section that fix the architecture (besides `family: gpt2`)."""
BUFFERS = re.compile(r"_backbone\.h\.\d+\.attn\.(bias|masked_bias)")
"""State-dict entries that are not weights: the causal mask older `transformers` versions saved."""
BLOCK = {
    "ln_1.weight": ("ln1.weight", False), "ln_1.bias": ("ln1.bias", False),
    "attn.c_attn.weight": ("qkv.weight", True), "attn.c_attn.bias": ("qkv.bias", False),
    "attn.c_proj.weight": ("proj.weight", True), "attn.c_proj.bias": ("proj.bias", False),
    "ln_2.weight": ("ln2.weight", False), "ln_2.bias": ("ln2.bias", False),
    "mlp.c_fc.weight": ("mlp.0.weight", True), "mlp.c_fc.bias": ("mlp.0.bias", False),
    "mlp.c_proj.weight": ("mlp.2.weight", True), "mlp.c_proj.bias": ("mlp.2.bias", False),
}
"""A GPT-2 block's entries, by their name in Hugging Face's `GPT2Block`: the name in `iclbench.models.gpt2.Block`
and whether the weight is transposed (Conv1D stores (in, out), Linear (out, in))."""


class GargFormatError(ValueError):
    """A run folder that is not a GPT-2 run of Garg et al.'s code: the message says what and where."""


def read_config(run_dir: Path) -> tuple[dict[str, int], str | None]:
    """The architecture in `run_dir`/config.yaml's `model` section (the `MODEL_KEYS`, positive integers) and the
    name of the task it was trained on (`training.task`, None when absent)."""
    path = run_dir / CONFIG
    try:
        config = yaml.safe_load(read_limited(path, MAX_CONFIG_BYTES).decode("utf-8"))
    except (OSError, UntrustedError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise GargFormatError(f"{path}: cannot read the run's configuration: {exc}") from None
    model = config.get("model") if isinstance(config, dict) else None
    if not isinstance(model, dict):
        raise GargFormatError(f"{path}: no `model` section (not a run folder of Garg et al.'s code)")
    if model.get("family") != "gpt2":
        raise GargFormatError(f"{path}: model family {model.get('family')!r}; only their gpt2 family loads")
    bad = [k for k in MODEL_KEYS if not (type(model.get(k)) is int and model[k] > 0)]
    if bad:
        raise GargFormatError(f"{path}: model.{bad[0]} must be a positive integer, got {model.get(bad[0])!r}")
    if model["n_embd"] % model["n_head"] or model["n_positions"] < 2:
        raise GargFormatError(f"{path}: n_embd {model['n_embd']} is not a multiple of n_head {model['n_head']}, or "
                              f"n_positions {model['n_positions']} is below 2")
    training = config.get("training")
    task = training.get("task") if isinstance(training, dict) else None
    return {k: model[k] for k in MODEL_KEYS}, task if isinstance(task, str) else None


def read_state(run_dir: Path) -> tuple[dict[str, torch.Tensor], int]:
    """The model's state dict and the training step of `run_dir`/state.pt, loaded with `weights_only=True`."""
    path = run_dir / STATE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, pickle.UnpicklingError, EOFError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GargFormatError(
            f"{path}: not loadable as plain tensors (torch.load with weights_only=True): {first}"
        ) from None
    weights = state.get("model_state_dict") if isinstance(state, dict) else None
    step = state.get("train_step") if isinstance(state, dict) else None
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise GargFormatError(f"{path}: no model_state_dict of tensors (not a state.pt of Garg et al.'s code)")
    if type(step) is not int or step < 0:
        raise GargFormatError(f"{path}: train_step must be a non-negative integer, got {step!r}")
    return weights, step


def to_gpt2(config: dict[str, int], weights: dict[str, torch.Tensor], where: str = STATE) -> GPT2:
    """The iclbench GPT-2 computing their model's forward pass (module docstring), in float32, evaluation mode;
    `where` names the state file in messages."""
    d, embd, layers = config["n_dims"], config["n_embd"], config["n_layer"]
    net = GPT2(d, layers, width=embd, heads=config["n_head"], max_len=config["n_positions"] - 1,
               activation="gelu-tanh")
    mapped: dict[str, torch.Tensor] = {}
    used = set()

    def take(name: str) -> torch.Tensor:
        if name not in weights:
            raise GargFormatError(f"{where}: no {name} (not a GPT-2 of Garg et al.'s code with this config)")
        used.add(name)
        return weights[name].float()

    read_in = take("_read_in.weight")
    if read_in.shape != (embd, d):
        raise GargFormatError(f"{where}: _read_in.weight has shape {tuple(read_in.shape)}, expected {(embd, d)} from "
                              f"config.yaml's model section")
    mapped["read_in.weight"] = torch.cat([read_in, read_in[:, :1]], 1)
    mapped["read_in.bias"] = take("_read_in.bias")
    mapped["pos.weight"] = take("_backbone.wpe.weight")[: net.pos.num_embeddings]
    for i in range(layers):
        for theirs, (ours, transposed) in BLOCK.items():
            w = take(f"_backbone.h.{i}.{theirs}")
            mapped[f"blocks.{i}.{ours}"] = w.T if transposed else w
    for name in ("weight", "bias"):
        mapped[f"ln_f.{name}"] = take(f"_backbone.ln_f.{name}")
        mapped[f"read_out.{name}"] = take(f"_read_out.{name}")
    unknown = sorted(k for k in weights if k not in used and k != "_backbone.wte.weight" and not BUFFERS.fullmatch(k))
    if unknown:
        shown = ", ".join(unknown[:3])
        raise GargFormatError(f"{where}: unexpected entries {shown} (not their GPT-2 with this config)")
    expected = net.state_dict()
    for name, tensor in mapped.items():
        if tensor.shape != expected[name].shape:
            raise GargFormatError(f"{where}: {name} has shape {tuple(tensor.shape)} after mapping, expected "
                                  f"{tuple(expected[name].shape)} from config.yaml's model section")
    net.load_state_dict(mapped)
    return net.eval()


def load_run(run_dir: str | Path) -> tuple[GPT2, dict[str, Any]]:
    """The run folder's model as an iclbench GPT-2, and {"train_step", "task", "config"} (the training step
    state.pt was saved at, the training task's name, the `MODEL_KEYS`)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise GargFormatError(f"{run_dir}: not a folder ({NOT_A_RUN})")
    config, task = read_config(run_dir)
    weights, step = read_state(run_dir)
    return to_gpt2(config, weights, str(run_dir / STATE)), {"train_step": step, "task": task, "config": config}


class GargModel(TrainedModel):
    """A Garg et al. GPT-2 converted to safetensors: every scalar-label task of its dimension."""

    def supports(self, task: TaskSpec) -> bool:
        return task.m == 1 and task.d == self._loaded().d


class GargRun(GargModel):
    """A run folder of Garg et al.'s code, loaded as it is (`--model garg:RUN_DIR`); named garg-<folder name>."""

    def __init__(self, run: str | Path) -> None:
        super().__init__()
        self.run = Path(run)
        if not self.run.is_dir():
            raise GargFormatError(f"{run}: not a folder ({NOT_A_RUN})")
        read_config(self.run)  # a folder that is not theirs is refused when the model loads
        self.name = f"garg-{self.run.resolve().name}"

    def setup(self, device: torch.device) -> None:
        self.net, _ = load_run(self.run)
        self.net.to(device)
        self.checkpoint = str(self.run / STATE)
