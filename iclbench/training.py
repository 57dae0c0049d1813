"""`iclbench train`: train an architecture on the training stream of one task or a family.

Batches come from `Task.sample` on `Task.train_generator(seed)`, a stream disjoint from the
evaluation sets; validation uses the same sampler on another seed (`val_seed`). Each step
picks a task of the selection (uniformly) and a prompt length n, uniform in
[n_min, hi], where hi grows linearly from n_min to n_max over the first `curriculum` steps
(no curriculum: hi = n_max throughout). With a dimension curriculum (`dim_curriculum` steps) the
prompts are drawn at dimension k, zero-padded to d (`Task.sample`), k growing linearly from `d_min`
(default 5, Garg et al.'s; from 2 to d - 1) to d over those steps, as in Garg et al. (families whose
tasks have such draws only: linear, logistic and kernel); validation is always at d. With `dims` = k < d,
training and validation are at dimension k throughout (the end of the dimension curriculum, when there is
one): the task's problem in k dimensions, zero-padded to d, validated at the task's lengths in proportion,
round(n k / d) (at least 1), the nominal length included (Garg et al.'s curve at a small dimension).

The loss is the mean squared error of the query predictions against the sampled query label
("label"), the noiseless target the benchmark scores ("target"), or the logistic loss on the +-1
labels ("logistic"); "auto" is "target" on tasks with classification prompts (logistic, select/reg-cls: the
regularised optimum's logit, which the benchmark scores: label regression would bound predictions to [-1, 1] and
the logistic loss drives them to +-infinity on separable prompts) and "label" elsewhere. With `all_layers` the loss is
averaged over the read-out of every layer. With `every_prefix` (gpt2) the loss also covers the
prediction of every context label y_t from the t - 1 pairs before it (t = 2 to n), read out at the
context x tokens, weighted like the q queries: n - 1 + q predictions per prompt instead of q, as
Garg et al. train on every prefix (they also predict y_1 from no pair).

The causal LSA (`--arch causal-lsa`, `iclbench.models.causal_lsa`, the one architecture for the
vector labels of the `ar` family) is trained autoregressively, as von Oswald et al. and Zheng et al.
train it: one forward pass predicts every context label y_t from the pairs before it and every query
from the whole context, and the loss is the mean squared error against the sampled labels over all
of them (positions 2 to n, the first having no pair before it, and the queries). `--weight-decay`
makes the optimiser AdamW (the papers': AdamW at 3e-4 with weight decay 0.05); without it, Adam.

Task pools (Raventós et al. 2023, task diversity): with `task_pool` K, every training prompt's hidden w is a row,
drawn uniformly, of the task's pool of K tasks (`Task.task_pool(K, seed)`, drawn from the task's prior on the
training stream of `seed`; tasks whose prompts are one hidden vector only: the linear family). The pool is
recorded (`task_pool`: tasks, size, seed) in log.json and the checkpoint's metadata, from which the trained model
declares it (`iclbench.api.Model.task_pool`); each validation also scores prompts of the pool's tasks
(`in_pool`), while early stopping follows the fresh tasks.

Output folder: model.safetensors (weights, config and training info in its metadata),
state.safetensors (weights, Adam state, step and generator states, for `--resume`),
log.json (config, command, seeds, validations, final metrics, time) and model.py (a
plugin for `iclbench run --model <out>/model.py`). A resumed run ends bit-identical to an
uninterrupted one on the same device: all randomness after initialisation comes from the
NumPy generators, saved with the state.

Data-parallel training: launched by torchrun (`torchrun --nproc-per-node N -m iclbench train ...`),
the model is wrapped in `DistributedDataParallel` (gloo on the CPU, NCCL on CUDA; "auto" and "cuda"
mean each rank's GPU, `LOCAL_RANK`). Every rank initialises the model from `seed` and follows the
same schedule (task and n per step), and draws its own batch of `batch_size` prompts: rank 0 from
`Task.train_generator(seed)`, the stream of a single-process run, and rank r > 0 from
`Task.train_generator(seed, rank=r)`, a stream of its own (spawn key (train, seed, r)), disjoint
from the others and from validation. Gradients are averaged over the ranks, so a step sees an
effective batch of world_size x `batch_size` prompts. A run is reproducible for a given world size;
another world size gives another effective batch, hence another run (its first batch of each step is
the single-process run's). Rank 0 alone validates, logs, prints and writes the outputs; the train
loss it logs is the mean over all ranks. The state holds every rank's generator states, and every
rank resumes from it, with as many processes as it was trained with (checked).

Throughput switches, off by default (the default is the plain fp32 eager step, bit for bit the
trainer's step of earlier versions): `--precision bf16` runs the forward pass under bfloat16
autocast (the loss, gradients, weights and Adam state stay fp32); on a GPU without bfloat16 it is
refused, on the CPU it runs wherever torch's CPU autocast does, but is fast only on CPUs with native
bf16 (AVX512-BF16, AMX). `--compile` wraps the model in `torch.compile` (shapes marked dynamic when
the prompt length varies, so that each new n does not recompile); a failure of torch.compile stops
the run with one line. Validation always runs the eager fp32 model. `--fused` makes Adam/AdamW one
fused kernel over all parameters (CUDA and CPU; on CUDA, torch's default is already the
multi-tensor "foreach" form). Training prompts stay drawn by
NumPy on the CPU, for one portable training stream whatever the device; on a GPU they are copied
from page-locked memory without blocking, and as nothing in a step waits for the GPU, the draw of
step k + 1 overlaps the kernels of step k (`benchmarks/training_throughput.py` measures the step).

Early stopping: with `--patience K` the run stops after K validations in a row without a lower
mean validation error at the nominal lengths, and model.safetensors holds the weights of the best
validation (log.json's "final" is that validation; "stopped_early" the step it stopped at);
state.safetensors holds the last state, and a resumed run recovers the best from model.safetensors.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import sys
import time
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

import iclbench
from iclbench import distributed, metrics
from iclbench import tasks as task_registry
from iclbench.models import ATTENTIONS, InContextModel, build
from iclbench.models.weights import atomic_save, read_metadata, save_weights
from iclbench.runner import resolve_device
from iclbench.tasks import EvalSet, Sample, Task, TaskSpec, UnknownTaskError
from iclbench.tasks.pool import TaskPool

STATE_FORMAT = "iclbench-train-state-1"
LOSSES = ("auto", "label", "target", "logistic")
ARCH_CHOICES = ("lsa", "linear-transformer", "gpt2", "causal-lsa", "prox-transformer")
PRECISIONS = ("fp32", "bf16")
RESUMABLE = ("steps", "device", "compile", "patience")
"""Settings a resumed run may change; every other one must match the saved state."""


class TrainError(Exception):
    """A training run that cannot start or resume: the message says why."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (recorded in log.json and the state)."""

    tasks: tuple[str, ...]
    arch: str = "lsa"
    layers: int = 1
    attention: str = "linear"
    heads: int = 1
    width: int | None = None
    norm: bool = False
    tied: bool = False
    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float | None = None
    clip: float = 1.0
    loss: str = "auto"
    all_layers: bool = False
    n_min: int | None = None
    n_max: int | None = None
    curriculum: int = 0
    dim_curriculum: int = 0
    d_min: int | None = None
    dims: int | None = None
    every_prefix: bool = False
    seed: int = 0
    val_seed: int | None = None
    val_every: int = 200
    val_prompts: int = 256
    device: str = "auto"
    precision: str = "fp32"
    compile: bool = False
    fused: bool = False
    patience: int | None = None
    task_pool: int | None = None

    def __post_init__(self) -> None:
        if self.arch not in ARCH_CHOICES:
            raise TrainError(f"--arch must be one of {ARCH_CHOICES}, got {self.arch!r}")
        if self.attention not in ATTENTIONS:
            raise TrainError(f"--attention must be one of {ATTENTIONS}, got {self.attention!r}")
        if self.arch == "lsa" and self.attention != "linear":
            raise TrainError("--arch lsa has linear attention; use --arch linear-transformer for --attention "
                             f"{self.attention}")
        if self.precision not in PRECISIONS:
            raise TrainError(f"--precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.patience is not None and self.patience < 1:
            raise TrainError(f"--patience must be at least 1 validation, got {self.patience}")
        if self.loss not in LOSSES:
            raise TrainError(f"--loss must be one of {LOSSES}, got {self.loss!r}")
        if self.arch == "causal-lsa":
            unused = [flag for flag, on in (("--norm", self.norm), ("--tied", self.tied), ("--width", self.width),
                                            (f"--attention {self.attention}", self.attention != "linear")) if on]
            if unused:
                raise TrainError(f"--arch causal-lsa is plain linear attention on (x, y) tokens: no {', '.join(unused)}")
            if self.loss not in ("auto", "label"):
                raise TrainError(f"--arch causal-lsa is trained on the labels of every position: --loss {self.loss} "
                                 "does not apply (leave --loss auto)")
        if self.arch == "prox-transformer":
            unused = [flag for flag, on in (("--norm", self.norm),
                                            (f"--attention {self.attention}", self.attention != "linear")) if on]
            if unused:
                raise TrainError(f"--arch prox-transformer has linear attention and a ReLU MLP: no {', '.join(unused)}")
        if self.weight_decay is not None and not self.weight_decay >= 0:
            raise TrainError(f"--weight-decay must be at least 0, got {self.weight_decay}")
        for name in ("layers", "heads", "steps", "batch_size", "val_every", "val_prompts"):
            if getattr(self, name) < 1:
                raise TrainError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.curriculum < 0 or not self.lr > 0:
            raise TrainError(f"need --curriculum >= 0 and --lr > 0, got {self.curriculum} and {self.lr}")
        if self.dim_curriculum < 0:
            raise TrainError(f"--dim-curriculum must be at least 0 steps, got {self.dim_curriculum}")
        if self.d_min is not None and not self.dim_curriculum:
            raise TrainError("--d-min is the first dimension of a dimension curriculum: give --dim-curriculum STEPS")
        if self.every_prefix and self.arch != "gpt2":
            raise TrainError(f"--every-prefix reads out the context tokens of --arch gpt2, not {self.arch}"
                             + (" (which is always trained on every position)" if self.arch == "causal-lsa" else ""))
        if self.task_pool is not None and self.task_pool < 1:
            raise TrainError(f"--task-pool must be at least 1 task, got {self.task_pool}")
        if self.task_pool is not None and (self.dim_curriculum or self.dims is not None):
            raise TrainError("--task-pool draws the tasks at the tasks' dimension: no --dim-curriculum or --dims")
        if self.held_out_seed == self.seed:
            raise TrainError(f"--val-seed must differ from --seed ({self.seed}): validation is on held-out prompts")

    @property
    def held_out_seed(self) -> int:
        """The validation seed: `val_seed`, or seed + 1,000,003 by default."""
        return self.seed + 1_000_003 if self.val_seed is None else self.val_seed


def select_tasks(patterns: tuple[str, ...]) -> list[Task]:
    """The tasks named (a family name means all its tasks); they must share d."""
    try:
        chosen = task_registry.select(list(patterns))
    except UnknownTaskError as exc:
        raise TrainError(str(exc)) from None
    for dim in ("d", "m"):
        dims = {getattr(t.spec, dim) for t in chosen}
        if len(dims) > 1:
            raise TrainError(f"tasks {[t.spec.name for t in chosen]} have different {dim} {sorted(dims)}; "
                             f"train on one {dim}")
    return chosen


def dimension_range(cfg: TrainConfig, tasks: list[Task]) -> tuple[int, int]:
    """The first and last dimension of training prompts (d and d without a curriculum or `dims`); checks the
    tasks have draws in fewer dimensions where they are asked for."""
    d = tasks[0].spec.d
    if not cfg.dim_curriculum and cfg.dims is None:
        return d, d
    flag = "--dim-curriculum" if cfg.dim_curriculum else "--dims"
    for t in tasks:
        if t.family.dimension_axes is None:
            raise TrainError(f"{flag}: {t.spec.name}: the {t.spec.family} family has no draws in fewer dimensions")
    end = d if cfg.dims is None else cfg.dims
    if not 2 <= end <= d:
        raise TrainError(f"--dims must be from 2 to the tasks' dimension d = {d}, got {end}")
    if not cfg.dim_curriculum:
        return end, end
    d_min = 5 if cfg.d_min is None else cfg.d_min
    if not 2 <= d_min < end:
        where = f"the tasks' dimension d = {d}" if cfg.dims is None else f"--dims {end}"
        raise TrainError(f"--dim-curriculum starts below {where}: --d-min must be from 2 to {end - 1}, got {d_min}"
                         + (" (the default)" if cfg.d_min is None else ""))
    return d_min, end


def lengths_at(spec: TaskSpec, dims: int | None) -> tuple[tuple[int, ...], int]:
    """A task's scored lengths and nominal length, at dimension `dims` < d in proportion: round(n dims / d), at
    least 1 (the task's own at d)."""
    if dims is None or dims == spec.d:
        return spec.lengths, spec.nominal
    scale = lambda n: max(1, round(n * dims / spec.d))  # noqa: E731
    return tuple(dict.fromkeys(scale(n) for n in spec.lengths)), scale(spec.nominal)


def task_pools(cfg: TrainConfig, tasks: list[Task]) -> list[np.ndarray | None]:
    """Each task's pool of `cfg.task_pool` tasks (`Task.task_pool`, seed `cfg.seed`), or None per task without one."""
    if cfg.task_pool is None:
        return [None] * len(tasks)
    for t in tasks:
        if not t.family.pooled:
            raise TrainError(f"--task-pool: {t.spec.name}: the {t.spec.family} family has no task vector to draw a "
                             "pool of (the linear family has)")
    return [t.task_pool(cfg.task_pool, cfg.seed) for t in tasks]


def declared_pool(cfg: TrainConfig, tasks: list[Task]) -> dict[str, Any] | None:
    """The task pool a model trained by `cfg` on `tasks` declares (`iclbench.tasks.pool.TaskPool`; in log.json and the
    checkpoint's metadata, from which `TrainedModel` declares it)."""
    if cfg.task_pool is None:
        return None
    return TaskPool(tuple(t.spec.name for t in tasks), cfg.task_pool, cfg.seed).to_dict()


def length_range(cfg: TrainConfig, tasks: list[Task]) -> tuple[int, int]:
    """(n_min, n_max) of training prompts: by default the shortest scored length to the longest all tasks allow."""
    lo = cfg.n_min if cfg.n_min is not None else min(t.spec.lengths[0] for t in tasks)
    hi = cfg.n_max if cfg.n_max is not None else min(t.spec.max_length for t in tasks)
    if not 1 <= lo <= hi:
        raise TrainError(f"need 1 <= --n-min <= --n-max, got {lo} and {hi}")
    return lo, hi


def make_model(cfg: TrainConfig, tasks: list[Task]) -> InContextModel:
    """The architecture `cfg` describes, initialised from `cfg.seed`."""
    torch.manual_seed(cfg.seed)
    d = tasks[0].spec.d
    if cfg.arch == "gpt2":
        max_len = max(length_range(cfg, tasks)[1], max(t.spec.max_length for t in tasks))
        config = {"arch": "gpt2", "d": d, "layers": cfg.layers, "width": cfg.width or 64, "heads": cfg.heads,
                  "max_len": max_len, "tied": cfg.tied}
    elif cfg.arch == "causal-lsa":
        config = {"arch": "causal-lsa", "d": d, "m": tasks[0].spec.m, "layers": cfg.layers, "heads": cfg.heads}
    elif cfg.arch == "prox-transformer":
        config = {"arch": "prox-transformer", "d": d, "layers": cfg.layers, "heads": cfg.heads, "hidden": cfg.width,
                  "tied": cfg.tied}
    else:
        config = {"arch": "linear-transformer", "d": d, "layers": cfg.layers, "attention": cfg.attention,
                  "heads": cfg.heads, "width": cfg.width, "norm": cfg.norm, "tied": cfg.tied}
    try:
        return build(config)
    except ValueError as exc:
        raise TrainError(str(exc)) from None


def loss_kind(cfg: TrainConfig, task: Task) -> str:
    if cfg.loss == "auto":
        return "target" if task.family.classifies(task.spec) else "label"
    return cfg.loss


def compute_loss(steps: torch.Tensor, sample: Sample, kind: str, all_layers: bool) -> torch.Tensor:
    """The training loss of per-layer predictions `steps` (B, K, q) on `sample`."""
    pred = steps if all_layers else steps[:, -1:]
    if kind == "logistic":
        return F.softplus(-sample.y_query.unsqueeze(1) * pred).mean()
    goal = sample.y_query if kind == "label" else sample.target
    return ((pred - goal.unsqueeze(1)) ** 2).mean()


def autoregressive_loss(context: torch.Tensor, steps: torch.Tensor, sample: Sample, all_layers: bool) -> torch.Tensor:
    """The mean squared error of the per-layer predictions of every context label, `context` (B, K, n[, m]),
    from position 2 on, and of every query, `steps` (B, K, q[, m]), against the sampled labels."""
    pred = torch.cat([context[:, :, 1:], steps], 2)
    pred = pred if all_layers else pred[:, -1:]
    goal = torch.cat([sample.batch.y[:, 1:], sample.y_query], 1)
    return ((pred - goal.unsqueeze(1)) ** 2).mean()


def make_optimizer(cfg: TrainConfig, model: InContextModel) -> torch.optim.Optimizer:
    """Adam, or AdamW with `cfg.weight_decay` when it is set; fused with `cfg.fused`."""
    fused = True if cfg.fused else None
    try:
        if cfg.weight_decay is None:
            return torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=fused)
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    except RuntimeError as exc:
        raise TrainError(f"--fused: {exc}") from None


def check_precision(cfg: TrainConfig, device: torch.device) -> None:
    """Refuse `--precision bf16` on a GPU without bfloat16 (the CPU's autocast has it everywhere)."""
    if cfg.precision != "bf16" or device.type != "cuda":
        return
    if not torch.cuda.is_bf16_supported(including_emulation=False):
        raise TrainError(f"--precision bf16: {torch.cuda.get_device_name(device)} has no bfloat16 support; "
                         "use --precision fp32")


def compile_model(net: torch.nn.Module, fixed_length: bool) -> torch.nn.Module:
    """`torch.compile(net)`, with dynamic shapes unless every prompt has the same length."""
    return torch.compile(net, dynamic=not fixed_length)


def train_step(cfg: TrainConfig, net: torch.nn.Module, opt: torch.optim.Optimizer, sample: Sample,
               kind: str) -> torch.Tensor:
    """One optimisation step of `net` on `sample` with loss `kind`; the loss, detached (nothing waits for the GPU).

    The forward pass runs under bfloat16 autocast with `cfg.precision` bf16; the loss is computed in fp32.
    """
    b = sample.batch
    bf16 = cfg.precision == "bf16"
    every_position = cfg.arch == "causal-lsa" or cfg.every_prefix  # the context labels are predicted too
    with torch.autocast(b.x.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
        if every_position:
            context, steps = net(b.x, b.y, b.x_query, context=True)
        else:
            steps = net(b.x, b.y, b.x_query)[1]
    if every_position:
        loss = autoregressive_loss(context.float(), steps.float(), sample, cfg.all_layers)
    else:
        loss = compute_loss(steps.float(), sample, kind, cfg.all_layers)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.clip > 0:
        torch.nn.utils.clip_grad_norm_([p for group in opt.param_groups for p in group["params"]], cfg.clip)
    opt.step()
    return loss.detach()


def command_line(cfg: TrainConfig, out: Path) -> str:
    """The full `iclbench train` command that reproduces `cfg` (every setting spelled out)."""
    parts = ["iclbench", "train", "--task", *cfg.tasks]
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if f.name == "tasks" or value is None or value is False:
            continue
        flag = "--" + f.name.replace("_", "-")
        parts += [flag] if value is True else [flag, str(value)]
    return shlex.join([*parts, "--out", str(out)])


class Validation:
    """Held-out prompts at every scored length of every task (at dimension `cfg.dims`, `lengths_at`), drawn once
    from `val_seed`: of fresh tasks and, with task `pools`, also of tasks of the pools (`in_pool`)."""

    def __init__(self, cfg: TrainConfig, tasks: list[Task], model: InContextModel, device: torch.device,
                 pools: list[np.ndarray | None] | None = None) -> None:
        self.sets: list[tuple[Task, int, bool, Sample]] = []
        self.pool_sets: list[tuple[Task, int, bool, Sample]] = []
        for task, pool in zip(tasks, pools or [None] * len(tasks), strict=True):
            gen = task.train_generator(cfg.held_out_seed)
            lengths, nominal = lengths_at(task.spec, cfg.dims)
            lengths = [n for n in lengths if model.supports_length(n)]
            self.sets += [(task, n, n == nominal, task.sample(cfg.val_prompts, n, gen, device=device, dims=cfg.dims))
                          for n in lengths]
            if pool is not None:
                self.pool_sets += [(task, n, n == nominal, task.sample(cfg.val_prompts, n, gen, device=device,
                                                                       pool=pool)) for n in lengths]

    def __call__(self, model: InContextModel) -> dict[str, Any]:
        """Relative error in dB per task and length, per layer at each task's nominal length (fresh tasks)."""
        return self.score(model, self.sets)

    def in_pool(self, model: InContextModel) -> dict[str, Any]:
        """The same on prompts of the pools' tasks (empty without pools)."""
        return self.score(model, self.pool_sets)

    @staticmethod
    @torch.no_grad()
    def score(model: InContextModel, sets: list[tuple[Task, int, bool, Sample]]) -> dict[str, Any]:
        model.eval()
        out: dict[str, Any] = {}
        for task, n, nominal, sample in sets:
            b = sample.batch
            y, steps = model(b.x, b.y, b.x_query)
            data = EvalSet(b.x.cpu(), b.y.cpu(), b.x_query.cpu(), {n: sample.target.cpu()},
                           {"y_query": sample.y_query.cpu()}, {})
            scores = metrics.score(task.spec, data, n, y.cpu(), steps.cpu() if nominal else None)
            entry = out.setdefault(task.spec.name, {"rel_err_db": {}})
            entry["rel_err_db"][str(n)] = round(scores["rel_err"]["db"], 3)
            if "error_rate" in scores:
                entry.setdefault("error_rate", {})[str(n)] = round(scores["error_rate"]["value"], 4)
            if nominal:
                entry["steps_rel_err_db"] = [round(v, 3) for v in scores["steps_rel_err_db"]]
        model.train()
        return out


def nominal_mean_db(validation: dict[str, Any]) -> float:
    """Mean over tasks of the validation error in dB at each task's nominal length."""
    values = [entry["steps_rel_err_db"][-1] for entry in validation.values() if "steps_rel_err_db" in entry]
    return round(float(np.mean(values)), 3) if values else float("nan")


def best_validation(validations: list[dict[str, Any]], weights: Path) -> tuple[dict[str, Any], int]:
    """The validation of the weights saved in `weights` (the best so far, under early stopping) and the number
    of validations since it."""
    step = read_metadata(weights)[1].get("steps") if weights.exists() else None
    index = next((i for i, v in enumerate(validations) if v["step"] == step), len(validations) - 1)
    return validations[index], len(validations) - 1 - index


def lead_decides(flag: bool) -> bool:
    """Rank 0's `flag`, on every rank of a data-parallel run (call it on every rank)."""
    if not dist.is_initialized():
        return flag
    shared = torch.tensor([int(flag)])
    dist.broadcast(shared, 0)
    return bool(shared.item())


def _rng_state(gen: np.random.Generator) -> dict[str, Any]:
    return gen.bit_generator.state


def _set_rng_state(gen: np.random.Generator, state: dict[str, Any]) -> np.random.Generator:
    gen.bit_generator.state = state
    return gen


def save_state(path: Path, step: int, cfg: TrainConfig, model: InContextModel, opt: torch.optim.Optimizer,
               schedule: np.random.Generator, gens: list[np.random.Generator],
               rank_gens: list[list[dict[str, Any]]] | None = None) -> None:
    """Weights, Adam state (flattened to tensors) and generator states in one safetensors file;
    `rank_gens`: in a data-parallel run, the task generator states of ranks 1, 2, ... (`gens` are rank 0's)."""
    tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
    opt_state = opt.state_dict()
    for idx, entry in opt_state["state"].items():
        for key, value in entry.items():
            tensors[f"optim/{idx}/{key}"] = torch.as_tensor(value)
    metadata = {
        "format": STATE_FORMAT,
        "step": str(step),
        "config": json.dumps(asdict(cfg)),
        "param_groups": json.dumps(opt_state["param_groups"]),
        "rng": json.dumps({"schedule": _rng_state(schedule), "tasks": [_rng_state(g) for g in gens],
                           **({"rank_tasks": rank_gens} if rank_gens else {})}),
    }
    if rank_gens:
        metadata["world_size"] = str(len(rank_gens) + 1)
    atomic_save(tensors, path, metadata)


def load_state(path: Path, model: InContextModel, opt: torch.optim.Optimizer, schedule: np.random.Generator,
               gens: list[np.random.Generator], rank: int = 0) -> int:
    """Restore what `save_state` wrote into the given objects (`gens`: those of rank `rank`); return the step reached."""
    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata() or {}
    tensors = load_file(str(path))
    device = next(model.parameters()).device
    model.load_state_dict({k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith("model/")})
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim/"):
            _, idx, name = key.split("/", 2)
            state.setdefault(int(idx), {})[name] = value if name == "step" else value.to(device)
    opt.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
    rng = json.loads(meta["rng"])
    _set_rng_state(schedule, rng["schedule"])
    for gen, s in zip(gens, rng["tasks"] if rank == 0 else rng["rank_tasks"][rank - 1], strict=True):
        _set_rng_state(gen, s)
    return int(meta["step"])


def saved_config(path: Path) -> tuple[dict[str, Any], int]:
    """The training config stored in a state file, and the number of processes that trained it."""
    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata() or {}
    if meta.get("format") != STATE_FORMAT:
        raise TrainError(f"{path}: not an iclbench training state")
    return json.loads(meta["config"]), int(meta.get("world_size", "1"))


PLUGIN_SOURCE = '''"""{arch} trained with `iclbench train`; the command and training log are in log.json."""

from iclbench.models.plugin import TrainedModel


class Trained(TrainedModel):
    name = {name!r}
'''


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(path)


def train(cfg: TrainConfig, out: Path, resume: bool = False, progress: bool = True,
          name: str | None = None) -> dict[str, Any]:
    """Train as `cfg` says, writing the outputs to `out`; return the log.

    Launched by torchrun, data-parallel (`DistributedDataParallel`, module docstring); every rank
    must read `out`, which rank 0 alone writes.
    """
    distributed.init()
    rank, world = distributed.rank(), distributed.world_size()
    lead = rank == 0
    out = Path(out)
    state_path, log_path = out / "state.safetensors", out / "log.json"
    if resume:
        if not state_path.exists():
            raise TrainError(f"--resume: no {state_path} to resume from")
        before, trained_by = saved_config(state_path)
        if trained_by != world:
            raise TrainError(f"--resume: {state_path} was trained by {trained_by} process(es), this run has {world}: "
                             "resume with as many (the effective batch and every rank's stream depend on it)")
        now, defaults = asdict(cfg), asdict(TrainConfig(tasks=()))  # a setting added since the state: its default
        changed = [k for k in now
                   if k not in RESUMABLE and json.dumps(before.get(k, defaults[k])) != json.dumps(now[k])]
        if changed:
            diff = ", ".join(f"{k}: {before.get(k, defaults[k])!r} -> {now[k]!r}" for k in changed)
            raise TrainError(f"--resume: settings differ from the saved run ({diff}); only {RESUMABLE} may change")
    elif state_path.exists():
        raise TrainError(f"{out} already holds a training run; use --resume or another --out")
    device = distributed.local_device(resolve_device(cfg.device))
    check_precision(cfg, device)
    tasks = select_tasks(cfg.tasks)
    n_min, n_max = length_range(cfg, tasks)
    (d_min, d), d_input = dimension_range(cfg, tasks), tasks[0].spec.d
    if cfg.every_prefix and any(loss_kind(cfg, t) != "label" for t in tasks):
        raise TrainError("--every-prefix is trained on the context labels: it needs --loss label (or auto on "
                         "tasks without classification prompts)")
    model = make_model(cfg, tasks).to(device)
    if cfg.arch == "gpt2" and not model.supports_length(n_max):
        raise TrainError(f"--n-max {n_max} is longer than the model's {model.max_len}")
    opt = make_optimizer(cfg, model)
    schedule = np.random.Generator(np.random.PCG64(cfg.seed))
    gens = [t.train_generator(cfg.seed, rank) for t in tasks]
    pools = task_pools(cfg, tasks)
    validate = Validation(cfg, tasks, model, device, pools) if lead else None
    names = [t.spec.name for t in tasks]
    log: dict[str, Any] = {
        "iclbench_version": iclbench.__version__,
        "command": command_line(cfg, out),
        "config": asdict(cfg),
        "model_config": model.config(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "tasks": names,
        "seeds": {"init": cfg.seed, "train_stream": cfg.seed, "validation_stream": cfg.held_out_seed},
        "task_pool": declared_pool(cfg, tasks),
        "world_size": world,
        "effective_batch_size": world * cfg.batch_size,
        "lengths": {"n_min": n_min, "n_max": n_max, "curriculum_steps": cfg.curriculum},
        "dimensions": {"d_min": d_min, "d": d, "input_d": d_input, "curriculum_steps": cfg.dim_curriculum},
        "device": str(device),
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "started": _now(),
        "finished": None,
        "seconds": 0.0,
        "resumed_at": [],
        "validations": [],
        "final": None,
        "stopped_early": None,
    }
    start = 0
    if resume:
        start = load_state(state_path, model, opt, schedule, gens, rank)
        previous = json.loads(log_path.read_text()) if lead and log_path.exists() else {}
        kept = ("started", "finished", "seconds", "validations", "resumed_at", "final", "stopped_early")
        log.update({k: previous[k] for k in kept if k in previous})
        log["resumed_at"] = [*log["resumed_at"], start]
    info = {"tasks": names, "train_config": asdict(cfg), "task_pool": declared_pool(cfg, tasks)}
    plugin = out / "model.py"
    if lead:
        out.mkdir(parents=True, exist_ok=True)
        if not plugin.exists():
            plugin.write_text(PLUGIN_SOURCE.format(arch=model.arch, name=name or out.resolve().name))
    net = model
    if dist.is_initialized():
        net = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    if cfg.compile:
        net = compile_model(net, n_min == n_max)
    progress = progress and lead
    best, since = None, 0  # the best validation (lowest mean error at the nominal lengths), and validations since
    if lead and resume and log["validations"]:
        best, since = best_validation(log["validations"], out / "model.safetensors")
    stopped = cfg.patience is not None and lead_decides(since >= cfg.patience)

    model.train()
    clock = time.perf_counter()
    running = torch.zeros((), device=device)
    count = 0
    lines = progress and not sys.stderr.isatty()  # where a bar shows nothing: one line per validation
    with tqdm(total=cfg.steps, initial=start, desc="train", disable=not progress or None) as bar:
        for step in range(start, start if stopped else cfg.steps):
            hi = n_min + round((n_max - n_min) * min(1.0, step / cfg.curriculum)) if cfg.curriculum else n_max
            dims = d_min + round((d - d_min) * min(1.0, step / cfg.dim_curriculum)) if cfg.dim_curriculum else d
            which = int(schedule.integers(len(tasks)))
            n = int(schedule.integers(n_min, hi + 1))
            task = tasks[which]
            sample = task.sample(cfg.batch_size, n, gens[which], device=device, dims=dims, pool=pools[which])
            try:
                running += train_step(cfg, net, opt, sample, loss_kind(cfg, task))
            except Exception as exc:
                if cfg.compile and isinstance(exc, torch._dynamo.exc.TorchDynamoException):
                    cause = getattr(exc, "inner_exception", None) or exc  # what the compiler backend raised
                    first = next((line for line in str(cause).splitlines() if line.strip()), "")
                    raise TrainError(f"--compile: torch.compile failed on this machine ({type(cause).__name__}: "
                                     f"{first}); train without --compile") from None
                raise
            count += 1
            bar.update(1)
            done = step + 1
            if done % cfg.val_every == 0 or done == cfg.steps:
                rank_gens = None
                if dist.is_initialized():  # the mean over the effective batch; every rank's generators
                    dist.all_reduce(running)
                    running /= world
                    states = distributed.all_gather_bytes(json.dumps([_rng_state(g) for g in gens]).encode())
                    rank_gens = [json.loads(b) for b in states[1:]]
                if not torch.isfinite(running):
                    raise TrainError(f"training diverged (non-finite loss) between steps {done - count} and {done}; "
                                     f"the last checkpoint in {out} is from step {done - count}: lower --lr")
                stop = False
                if lead:
                    assert validate is not None
                    val = validate(model)
                    record = {"step": done, "n_max": hi, "d": dims, "train_loss": round(float(running) / count, 6),
                              "val_nominal_db": nominal_mean_db(val), "tasks": val}
                    if cfg.task_pool is not None:
                        record["in_pool"] = validate.in_pool(model)
                    log["validations"].append(record)
                    improved = best is None or record["val_nominal_db"] < best["val_nominal_db"]
                    best, since = (record, 0) if improved else (best, since + 1)
                    stop = cfg.patience is not None and since >= cfg.patience
                    end = stop or done == cfg.steps
                    bar.set_postfix(loss=f"{record['train_loss']:.4g}", val_db=record["val_nominal_db"])
                    log["seconds"] = round(log["seconds"] + time.perf_counter() - clock, 2)
                    clock = time.perf_counter()
                    if improved or cfg.patience is None:  # under early stopping model.safetensors is the best
                        save_weights(model, out / "model.safetensors", {**info, "steps": done})
                    save_state(state_path, done, cfg, model, opt, schedule, gens, rank_gens)
                    log["final"] = (record if cfg.patience is None else best) if end else None
                    log["stopped_early"] = done if stop and done < cfg.steps else None
                    log["finished"] = _now() if end else None
                    _write_json(log_path, log)
                    if lines:
                        print(f"step {done}/{cfg.steps}: train loss {record['train_loss']:.4g}, validation "
                              f"{record['val_nominal_db']:.2f} dB (mean at the nominal lengths), "
                              f"{log['seconds']:.1f} s", file=sys.stderr, flush=True)
                running.zero_()
                count = 0
                if cfg.patience is not None and lead_decides(stop):
                    break
    return log


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    values["tasks"] = tuple(args.task)
    return TrainConfig(**values)


def saved_step(path: Path) -> int | None:
    """The step a training state file was saved at, or None when there is none."""
    if not path.exists():
        return None
    with safe_open(str(path), "pt") as fh:
        return int((fh.metadata() or {})["step"])


def cmd_train(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        cfg = config_from_args(args)
        log = train(cfg, args.out, resume=args.resume, progress=not args.quiet, name=args.name)
    except (TrainError, ValueError) as exc:
        print(f"iclbench train: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        step = saved_step(args.out / "state.safetensors")
        if step is None:
            print("iclbench train: interrupted before the first validation; nothing was kept", file=sys.stderr)
        else:
            again = shlex.join(["iclbench", *args.argv, *([] if args.resume else ["--resume"])])
            print(f"iclbench train: interrupted; {args.out} keeps the state of step {step} (state.safetensors, "
                  f"model.safetensors); continue with: {again}", file=sys.stderr)
        return 130
    if distributed.rank() > 0:  # rank 0 reports
        return 0
    final = log["final"]
    print(f"trained {log['model_config']['arch']} ({log['parameters']} parameters) on {', '.join(log['tasks'])} "
          f"for {final['step']} steps in {log['seconds']:.1f} s")
    if log["stopped_early"]:
        print(f"  stopped early at step {log['stopped_early']}: {cfg.patience} validations without improvement; "
              f"kept the best, step {final['step']}")
    for what, key in (("validation error (dB)", "tasks"), ("in-pool validation error (dB)", "in_pool")):
        for task, entry in final.get(key, {}).items():
            lengths = ", ".join(f"n={n}: {v:.1f}" for n, v in entry["rel_err_db"].items())
            print(f"  {task}: {what} {lengths}")
    print(f"written to {args.out} (score it with: iclbench run --model {args.out / 'model.py'})")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `iclbench train` on the CLI's subparsers."""
    d = TrainConfig(tasks=())
    p = sub.add_parser("train", help="train an architecture on a task or family (training stream only)",
                       epilog=TRAIN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", "--tasks", nargs="+", required=True, metavar="TASK", dest="task",
                   help="task names, families (all their tasks, mixed uniformly) or glob patterns, "
                        "separated by spaces or commas")
    p.add_argument("--arch", default=d.arch, choices=ARCH_CHOICES,
                   help="lsa (linear self-attention), linear-transformer (with --attention), gpt2, causal-lsa "
                        "(causal linear self-attention for labels of any dimension, trained autoregressively), or "
                        "prox-transformer (a state token updated by attention and a ReLU MLP: proximal steps)")
    p.add_argument("--layers", type=int, default=d.layers, help="number of layers (loops when --tied)")
    p.add_argument("--attention", default=d.attention, choices=ATTENTIONS, help="attention non-linearity h")
    p.add_argument("--heads", type=int, default=d.heads)
    p.add_argument("--width", type=int,
                   help="token width (default d + 1 for LSA, 64 for gpt2); prox-transformer: MLP width (default 4d)")
    p.add_argument("--norm", action="store_true", help="LayerNorm before each attention layer (LSA/linear)")
    p.add_argument("--tied", action="store_true", help="looped model: one layer's weights applied --layers times")
    p.add_argument("--steps", type=int, default=d.steps, help="total optimisation steps (may grow on --resume)")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate")
    p.add_argument("--weight-decay", type=float, help="AdamW with this weight decay (default: Adam, no decay)")
    p.add_argument("--clip", type=float, default=d.clip, help="gradient norm clip (0: none)")
    p.add_argument("--loss", default=d.loss, choices=LOSSES,
                   help="auto: target on tasks with classification prompts (logistic, select/reg-cls), label elsewhere")
    p.add_argument("--all-layers", action="store_true", help="average the loss over every layer's read-out")
    p.add_argument("--n-min", type=int, help="shortest training prompt (default: the tasks' shortest length)")
    p.add_argument("--n-max", type=int, help="longest training prompt (default: the tasks' longest length)")
    p.add_argument("--curriculum", type=int, default=d.curriculum,
                   help="steps over which the longest prompt grows from --n-min to --n-max (0: off)")
    p.add_argument("--dim-curriculum", type=int, default=d.dim_curriculum,
                   help="steps over which the prompts' dimension grows from --d-min to d, inputs zero-padded "
                        "(0: off; linear, logistic and kernel tasks)")
    p.add_argument("--d-min", type=int, help="first dimension of --dim-curriculum, 2 to d - 1 (default 5)")
    p.add_argument("--dims", type=int,
                   help="train and validate at this dimension k < d throughout, inputs zero-padded (validation at the "
                        "task's lengths scaled by k / d); the end of --dim-curriculum when given")
    p.add_argument("--every-prefix", action="store_true",
                   help="gpt2: the loss also covers every context label y_t predicted from the t - 1 pairs before it")
    p.add_argument("--seed", type=int, default=d.seed, help="initialisation and training-stream seed")
    p.add_argument("--val-seed", type=int, help="held-out validation seed (default: seed + 1000003)")
    p.add_argument("--val-every", type=int, default=d.val_every, help="validate and save every K steps")
    p.add_argument("--val-prompts", type=int, default=d.val_prompts, help="validation prompts per task and length")
    p.add_argument("--device", default=d.device, help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--precision", default=d.precision, choices=PRECISIONS,
                   help="bf16: forward pass under bfloat16 autocast (GPU; on a CPU only fast with native bf16)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (pays on long GPU runs)")
    p.add_argument("--fused", action="store_true", help="fused Adam/AdamW kernel (GPU and CPU)")
    p.add_argument("--patience", type=int,
                   help="early stopping: stop after K validations without improvement, keeping the best weights")
    p.add_argument("--task-pool", type=int, metavar="K",
                   help="draw every training prompt's task (w) from a fixed pool of K tasks, seeded by --seed "
                        "(linear tasks); validation on fresh and on in-pool tasks")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice; 1 is often fastest)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--name", help="model name written in <out>/model.py (default: the folder's name)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/state.safetensors")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar, and no line per validation when output is not a terminal")
    p.set_defaults(func=cmd_train)


TRAIN_EXAMPLES = """examples:
  iclbench train --task linear/kappa1 --arch lsa --layers 1 --steps 2000 --lr 0.005 --out runs/lsa1
  iclbench train --task linear --arch gpt2 --layers 4 --heads 4 --curriculum 1000 --out runs/gpt2-linear
  iclbench train --task linear/kappa1 --arch gpt2 --layers 6 --width 128 --heads 4 --every-prefix \
      --n-min 11 --n-max 41 --curriculum 30000 --dim-curriculum 30000 --out runs/garg
                                       Garg et al.'s objective and curricula (dimension 5 to 20, length 11 to 41)
  iclbench train --task ar/uniform --arch causal-lsa --layers 1 --lr 3e-4 --weight-decay 0.05 --batch-size 256 \
      --steps 20000 --out runs/mesa1      autoregressive training, the settings of von Oswald et al.
  iclbench train --task linear/kappa1 --arch lsa --layers 1 --steps 4000 --lr 0.005 --out runs/lsa1 --resume
                                       continue an interrupted run, or extend it (only --steps, --device,
                                       --compile and --patience may change)
  iclbench train --task linear --arch gpt2 --layers 12 --width 256 --heads 8 --device cuda --precision bf16 \
      --compile --fused --patience 10 --out runs/gpt2-gpu      the fast path on a GPU, with early stopping
  iclbench train --task linear/noisy --arch lsa --layers 3 --steps 4000 --lr 0.001 --curriculum 2000 \
      --task-pool 16 --out runs/pool16    every training task from a pool of 16 (task diversity)
  iclbench run --model runs/lsa1/model.py

With output redirected (not a terminal), one line per validation goes to stderr. Ctrl-C keeps
the state of the last validation; --resume continues from it bit-identically.
"""
