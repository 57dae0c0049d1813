"""Train LISTA, LISTA-CP and ALISTA on lasso/fixed and write their checkpoints.

    python -m iclbench.baselines.train_lista [--models lista lista-cp alista] [--out DIR]

The schedule follows Chen et al. (2018): for each layer k, train the parameters layer k introduces
at 5e-4, then fine-tune every layer up to k at 1e-4 and at 1e-5, with Adam on the squared error of the
code at layer k; after the last layer, fine-tune the whole network at 1e-4 for `final_steps`. As Open-L2O
runs it, a stage ends once the validation NMSE at layer k, measured every `val_every` steps, has not
improved for `patience` validations in a row (`stage_steps` and `final_steps` cap the stages); it then keeps
the weights of its best validation. So were the package's checkpoints trained: the last stage of each, the
whole network's fine-tuning, ended by the criterion, after 4 to 6 minutes of one core. With `patience` None
(`--patience 0`) every stage runs its steps. `TrainConfig.open_l2o` trains as Open-L2O's code does instead
(its start, loss, Adam, layer decay and validation metric; a stage keeps its last weights). Batches are drawn fresh
from `Codes.draw` on the training seed `train_seed`; the validation set comes from another training seed,
never from the evaluation stream. The measurement matrix is one (n, d) matrix shared by every prompt of a
batch (`UnrolledNet.forward`), never a copy per prompt. Runs on one thread, so a run is deterministic on
a given machine.

The package's checkpoints are trained on lasso/fixed at its nominal length n = 10 (`TaskCodes`);
`benchmarks/l2o_literature.py` trains the same networks in Open-L2O's setting, with early stopping.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import struct
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save

from iclbench import tasks
from iclbench.baselines.lista import (
    CHECKPOINTS,
    INIT_LAMBDA,
    LAYERS,
    NETS,
    SS_MAX,
    SS_STEP,
    ALISTANet,
    UnrolledNet,
    alista_weight,
    load_net,
)
from iclbench.plugins import sha256_file
from iclbench.tasks import Task

TASK = "lasso/fixed"
KINDS = ("lista", "lista-cp", "alista")
STAGES = ("new layer", "fine-tune", "fine-tune")
FINAL = "final"
"""The name of the whole network's last fine-tuning stage in a training record."""
OPEN_L2O_DECAY = 0.3
"""Open-L2O's factor on the gradients of a layer's parameters per layer of age in fine-tuning (`utils.Adam`). As
Adam divides a gradient by its own scale, it changes a step only where the scaled gradient nears Adam's eps: in a
test's setting, not at all."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on besides its data; recorded in the training log."""

    layers: int = LAYERS
    batch_size: int = 128
    stage_steps: tuple[int, int, int] = (5000, 2000, 2000)
    """Steps of the three stages of each layer (at most, with `patience`): new layer alone, then everything."""
    stage_lrs: tuple[float, float, float] = (5e-4, 1e-4, 1e-5)
    """Adam's rate in the three stages of each layer."""
    final_steps: int = 20000
    """Fine-tuning steps of the whole network at the first fine-tuning rate, after the last layer (at most, with
    `patience`)."""
    train_seed: int = 0
    val_seed: int = 1
    val_prompts: int = 2048
    init_lambda: float = INIT_LAMBDA
    patience: int | None = 10
    """None: every stage runs its steps. Otherwise a stage ends after this many validations in a row without a
    lower validation NMSE, and keeps its best weights: by default, 1,000 steps without progress end a stage."""
    val_every: int = 100
    """Steps between two validations of a stage, with `patience`."""
    open_l2o: bool = False
    """Train as Open-L2O's code does (Model_Base_L2O/train.py and utils.py) where it differs from the package's
    way: the networks start from `UnrolledNet.init_open_l2o`; the loss is half the squared error summed over the
    batch (`tf.nn.l2_loss`); Adam's eps is 1e-7, Keras's value; a fine-tuning stage at layer k multiplies the
    gradient of layer j's parameters by `OPEN_L2O_DECAY`^(k - j); validation is Open-L2O's NMSE, `mean_of_db`;
    and a stage keeps its last weights (Keras's `EarlyStopping` without `restore_best_weights`), not its best.
    Three details stay the package's: Keras adds its eps to the bias-corrected root of Adam's second moment
    (PyTorch's eps equal to 1e-7 / sqrt(1 - 0.999^t) at step t would match it); Keras's `EarlyStopping` counts the
    first validation of each stage as a gain (a stage runs at least patience + 1 validations), where a stage here
    compares with the validation before it; and support selection passes ceil(p d / 100) entries, where Open-L2O
    passes those above a percentile (one fewer at most layers for d = 512)."""


class Codes(ABC):
    """Sparse codes measured by one matrix, the data a learned ISTA trains on."""

    matrix: torch.Tensor
    """The (n, d) float32 measurement matrix of every prompt."""

    @abstractmethod
    def generator(self, seed: int) -> np.random.Generator:
        """The generator of training seed `seed`."""

    @abstractmethod
    def draw(self, batch: int, gen: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """`batch` measurements y (B, n) and their codes (B, d), float32."""

    @abstractmethod
    def describe(self) -> dict[str, str]:
        """What the data are, for a checkpoint's metadata."""


class TaskCodes(Codes):
    """The prompts of a fixed-matrix lasso task at length n: the first n rows of its X0, its codes and noise."""

    def __init__(self, task: Task, n: int) -> None:
        if task.spec.family != "lasso" or task.spec.params["mode"] != "fixed":
            raise ValueError(f"{task.spec.name}: learned ISTA trains on one matrix, a lasso task of mode 'fixed'")
        self.task, self.n = task, n
        self.matrix = task.public["X0"][:n].to(torch.float32)

    def generator(self, seed: int) -> np.random.Generator:
        return self.task.train_generator(seed)

    def draw(self, batch: int, gen: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.task.sample(batch, self.n, gen, n_queries=1)
        return s.batch.y, s.hidden["w"]

    def describe(self) -> dict[str, str]:
        return {"task": self.task.spec.name, "matrix_seed": str(self.task.spec.params["matrix_seed"])}


def nmse_db(codes: torch.Tensor, beta: torch.Tensor) -> float:
    """10 log10(sum ||b_hat - b||^2 / sum ||b||^2) over prompts."""
    return 10 * torch.log10(((codes - beta) ** 2).sum() / (beta**2).sum()).item()


def mean_of_db(codes: torch.Tensor, beta: torch.Tensor, eps: float = 1e-10) -> float:
    """Open-L2O's NMSE (its `NMSE` and `EvalNMSE` metrics): the mean over prompts of
    10 log10((||b_hat - b||^2 / d + eps) / (||b||^2 / d + eps)), in float64."""
    b = beta.double()
    ratio = (((codes.double() - b) ** 2).mean(-1) + eps) / ((b**2).mean(-1) + eps)
    return (10 * ratio.log10()).mean().item()


def validation_set(codes: Codes, cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, codes) of the validation prompts, drawn from the training seed `cfg.val_seed`."""
    return codes.draw(cfg.val_prompts, codes.generator(cfg.val_seed))


def new_net(kind: str, x0: torch.Tensor, cfg: TrainConfig) -> UnrolledNet:
    """An untrained network of `kind` started from ISTA's weights for X0 (or Open-L2O's start, `cfg.open_l2o`)."""
    net = NETS[kind](x0.shape[0], x0.shape[1], cfg.layers)
    return net.init_open_l2o(x0, cfg.init_lambda) if cfg.open_l2o else net.init_from(x0, cfg.init_lambda)


def stage_groups(net: UnrolledNet, k: int, stage: int, open_l2o: bool) -> list[dict[str, Any]]:
    """Adam's parameter groups in stage `stage` (0, 1, 2) of layer k (from 0), each with `decay`, the factor on its
    gradients: the parameters layer k introduces alone, then every parameter; with `open_l2o`, layer j's
    gradients times `OPEN_L2O_DECAY`^(k - j) in the fine-tuning stages."""
    if stage == 0:
        return [{"params": net.stage_params(k), "decay": 1.0}]
    if open_l2o:
        return [{"params": net.stage_params(j), "decay": OPEN_L2O_DECAY ** (k - j)} for j in range(k + 1)]
    return [{"params": list(net.parameters()), "decay": 1.0}]


def decay_gradients(opt: torch.optim.Optimizer) -> None:
    """Multiply the gradients of each of `opt`'s groups (`stage_groups`) by its `decay`."""
    for group in opt.param_groups:
        if group["decay"] != 1.0:
            for param in group["params"]:
                param.grad.mul_(group["decay"])


def train(kind: str, cfg: TrainConfig, codes: Codes, log: bool = True) -> tuple[UnrolledNet, dict[str, Any]]:
    """Train one network layer by layer (`TrainConfig`); returns it and its training record (every stage's steps
    and validation NMSE at its end, the final per-layer validation NMSE: `nmse_db`, or `mean_of_db` with
    `cfg.open_l2o`)."""
    torch.manual_seed(cfg.train_seed)
    x0 = codes.matrix
    net = new_net(kind, x0, cfg)
    gen = codes.generator(cfg.train_seed)
    fixed = {"weight": alista_weight(x0)} if kind == "alista" else {}  # one matrix: ALISTA's weight computed once
    vy, vbeta = validation_set(codes, cfg)
    score = mean_of_db if cfg.open_l2o else nmse_db
    start, cpu = time.perf_counter(), time.process_time()
    stages: list[dict[str, Any]] = []

    def validate(depth: int) -> float:
        with torch.no_grad():
            return score(net(x0, vy, depth, **fixed)[:, -1], vbeta)

    def optimise(opt: torch.optim.Optimizer, steps: int, depth: int) -> None:
        for _ in range(steps):
            y, beta = codes.draw(cfg.batch_size, gen)
            err = net(x0, y, depth, **fixed)[:, -1] - beta
            loss = 0.5 * (err**2).sum() if cfg.open_l2o else (err**2).sum(-1).mean()
            opt.zero_grad()
            loss.backward()
            decay_gradients(opt)
            opt.step()

    def run_stage(k: int, stage: int, steps: int) -> dict[str, Any]:
        """Stage `stage` (0, 1, 2) of layer k (from 0)."""
        groups = stage_groups(net, k, stage, cfg.open_l2o)
        opt = torch.optim.Adam(groups, lr=cfg.stage_lrs[stage], eps=1e-7 if cfg.open_l2o else 1e-8)
        depth = k + 1
        if cfg.patience is None:
            optimise(opt, steps, depth)
            return {"steps": steps, "val_nmse_db": round(validate(depth), 4)}
        keep_best = not cfg.open_l2o  # Open-L2O keeps a stage's last weights
        best = val = validate(depth)
        kept, since, done = copy.deepcopy(net.state_dict()) if keep_best else None, 0, 0
        while since < cfg.patience and done < steps:
            chunk = min(cfg.val_every, steps - done)
            optimise(opt, chunk, depth)
            done += chunk
            val = validate(depth)
            if val < best:
                best, since = val, 0
                if keep_best:
                    kept = copy.deepcopy(net.state_dict())
            else:
                since += 1
        if not keep_best:
            return {"steps": done, "val_nmse_db": round(val, 4)}
        net.load_state_dict(kept)
        return {"steps": done, "val_nmse_db": round(best, 4)}

    for k in range(cfg.layers):
        for stage, (name, lr, steps) in enumerate(zip(STAGES, cfg.stage_lrs, cfg.stage_steps)):
            stages.append({"layer": k + 1, "stage": name, "lr": lr, **run_stage(k, stage, steps)})
        if log:
            steps = sum(r["steps"] for r in stages[-len(STAGES):])
            print(f"{kind}: layer {k + 1:2d}  validation NMSE {stages[-1]['val_nmse_db']:8.3f} dB  ({steps} steps, "
                  f"{time.process_time() - cpu:.0f} s CPU)", file=sys.stderr, flush=True)
    if cfg.final_steps:  # the first fine-tuning stage of the last layer, again
        stages.append({"layer": cfg.layers, "stage": FINAL, "lr": cfg.stage_lrs[1],
                       **run_stage(cfg.layers - 1, 1, cfg.final_steps)})
    with torch.no_grad():
        per_layer = [score(c, vbeta) for c in net(x0, vy, **fixed).unbind(1)]
    record = {
        "val_nmse_db": per_layer[-1],
        "val_nmse_db_per_layer": [round(v, 4) for v in per_layer],
        "steps": sum(r["steps"] for r in stages),
        "stages": stages,
        "seconds": round(time.perf_counter() - start, 1),
        "cpu_seconds": round(time.process_time() - cpu, 1),
    }
    if log:
        print(f"{kind}: final validation NMSE {per_layer[-1]:.3f} dB ({record['steps']} steps, "
              f"{record['cpu_seconds']} s CPU)", file=sys.stderr)
    return net, record


def save_net(net: UnrolledNet, path: Path, cfg: TrainConfig, codes: Codes) -> None:
    """Write the network, trained on `codes`, as a float32 safetensors file with its metadata."""
    meta = {"kind": net.kind, "n": str(net.n), "d": str(net.d), "layers": str(net.depth), "seed": str(cfg.train_seed),
            **codes.describe()}
    if isinstance(net, ALISTANet):
        meta.update(
            support=str(net.support).lower(),
            support_percent=f"min({SS_STEP} (k + 1), {SS_MAX})",
            support_count="ceil(p_k d / 100)",
        )
    tensors = {k: v.detach().to(torch.float32).contiguous() for k, v in net.state_dict().items()}
    path.write_bytes(canonical(save(tensors, metadata=meta)))


def canonical(raw: bytes) -> bytes:
    """A safetensors file with its JSON header's keys sorted, so that equal networks give equal bytes."""
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.dumps(json.loads(raw[8 : 8 + size]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + raw[8 + size :]


def main(argv: list[str] | None = None) -> None:
    prog = "python -m iclbench.baselines.train_lista"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--out", type=Path, default=CHECKPOINTS, help="output folder (default: the package's)")
    default = TrainConfig()
    parser.add_argument("--stage-steps", type=int, nargs=3, default=default.stage_steps,
                        metavar=("NEW", "TUNE", "TUNE2"),
                        help="steps of the three stages of each layer, at most with --patience (default %(default)s)")
    parser.add_argument("--final-steps", type=int, default=default.final_steps,
                        help="steps of the whole network's last fine-tuning (default %(default)s)")
    parser.add_argument("--patience", type=int, default=default.patience,
                        help="end a stage after this many validations without improvement; 0: every stage runs its "
                             "steps (default %(default)s)")
    parser.add_argument("--val-every", type=int, default=default.val_every,
                        help="steps between two validations, with --patience (default %(default)s)")
    args = parser.parse_args(argv)
    if min(*args.stage_steps, args.final_steps, args.patience) < 0 or args.val_every < 1:
        parser.error("--stage-steps, --final-steps and --patience take counts >= 0, --val-every a count >= 1")
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    cfg = TrainConfig(stage_steps=tuple(args.stage_steps), final_steps=args.final_steps,
                      patience=args.patience or None, val_every=args.val_every)
    task = tasks.get(TASK)
    codes = TaskCodes(task, task.spec.nominal)
    args.out.mkdir(parents=True, exist_ok=True)
    log_path = args.out / "training_log.json"
    doc: dict[str, Any] = json.loads(log_path.read_text()) if log_path.exists() else {"models": {}}
    doc.update(
        command=" ".join(["python -m iclbench.baselines.train_lista", *(sys.argv[1:] if argv is None else argv)]),
        task=TASK,
        config={"n": codes.n, **asdict(cfg)},
        torch_version=torch.__version__,
        platform=platform.platform(),
    )
    for kind in args.models:
        net, record = train(kind, cfg, codes)
        path = args.out / f"{kind}.safetensors"
        save_net(net, path, cfg, codes)
        with torch.no_grad():  # the logged validation score is the saved (float32) network's
            vy, vbeta = validation_set(codes, cfg)
            record["val_nmse_db"] = nmse_db(load_net(path)(codes.matrix, vy)[:, -1], vbeta)
        doc["models"][kind] = {"file": path.name, "sha256": sha256_file(path), **record}
        log_path.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
