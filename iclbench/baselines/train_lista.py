"""Train LISTA, LISTA-CP and ALISTA on lasso/fixed and write their checkpoints.

    python -m iclbench.baselines.train_lista [--models lista lista-cp alista] [--out DIR]

The schedule follows Chen et al. (2018), scaled down to run on a CPU in a few minutes:
for each layer k, train the parameters layer k introduces at 5e-4, then fine-tune every
layer up to k at 1e-4 and at 1e-5, with Adam on the MSE of the code at layer k. Batches
are drawn fresh from lasso/fixed's training sampler at the nominal length n = 10 (seed
`train_seed`); the validation set comes from another training seed, never from the
evaluation stream. Runs on one thread, so a run is deterministic on a given machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import struct
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save

from iclbench import tasks
from iclbench.baselines.lista import (
    CHECKPOINTS,
    INIT_LAMBDA,
    LAYERS,
    SS_MAX,
    SS_STEP,
    ALISTANet,
    LISTACPNet,
    LISTANet,
    UnrolledNet,
    alista_weight,
    load_net,
)
from iclbench.plugins import sha256_file
from iclbench.tasks import Task

TASK = "lasso/fixed"
KINDS = ("lista", "lista-cp", "alista")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on; recorded in the training log."""

    n: int = 10
    layers: int = LAYERS
    batch_size: int = 128
    stage_steps: tuple[int, int, int] = (300, 100, 50)
    """Steps of the three stages of each layer: new layer alone, then everything at two lower rates."""
    stage_lrs: tuple[float, float, float] = (5e-4, 1e-4, 1e-5)
    final_steps: int = 1000
    """Extra fine-tuning steps of the whole network at the first fine-tuning rate, after the last layer."""
    train_seed: int = 0
    val_seed: int = 1
    val_prompts: int = 2048
    init_lambda: float = INIT_LAMBDA


def nmse_db(codes: torch.Tensor, beta: torch.Tensor) -> float:
    """10 log10(sum ||b_hat - b||^2 / sum ||b||^2) over prompts."""
    return 10 * torch.log10(((codes - beta) ** 2).sum() / (beta**2).sum()).item()


def validation_set(task: Task, cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x, y, beta*) of the validation prompts, drawn from the training seed `cfg.val_seed`."""
    s = task.sample(cfg.val_prompts, cfg.n, task.train_generator(cfg.val_seed), n_queries=1)
    return s.batch.x, s.batch.y, s.hidden["w"]


def new_net(kind: str, x0: torch.Tensor, cfg: TrainConfig) -> UnrolledNet:
    """An untrained network of `kind` started from ISTA's weights for X0."""
    cls = {"lista": LISTANet, "lista-cp": LISTACPNet, "alista": ALISTANet}[kind]
    return cls(cfg.n, x0.shape[1], cfg.layers).init_from(x0, cfg.init_lambda)


def train(kind: str, cfg: TrainConfig, task: Task, log: bool = True) -> tuple[UnrolledNet, dict[str, Any]]:
    """Train one network layer by layer; returns it and its training record."""
    torch.manual_seed(cfg.train_seed)
    x0 = task.public["X0"][: cfg.n].to(torch.float32)
    net = new_net(kind, x0, cfg)
    gen = task.train_generator(cfg.train_seed)
    # every training prompt measures with X0: ALISTA's weight is computed once
    weight = alista_weight(x0).expand(cfg.batch_size, *x0.shape) if kind == "alista" else None
    fixed = {} if weight is None else {"weight": weight}
    vx, vy, vbeta = validation_set(task, cfg)
    start = time.perf_counter()
    stages: list[dict[str, Any]] = []
    recent: list[float] = []

    def run_stage(params: list[torch.nn.Parameter], lr: float, steps: int, depth: int) -> None:
        opt = torch.optim.Adam(params, lr=lr)
        for _ in range(steps):
            s = task.sample(cfg.batch_size, cfg.n, gen, n_queries=1)
            beta = s.hidden["w"]
            code = net(s.batch.x, s.batch.y, depth, **fixed)[:, -1]
            loss = ((code - beta) ** 2).sum(-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            recent.append(((code.detach() - beta) ** 2).sum().item() / (beta**2).sum().item())
            del recent[:-50]

    for k in range(cfg.layers):
        run_stage(net.stage_params(k), cfg.stage_lrs[0], cfg.stage_steps[0], k + 1)
        for lr, steps in zip(cfg.stage_lrs[1:], cfg.stage_steps[1:]):
            run_stage(list(net.parameters()), lr, steps, k + 1)
        with torch.no_grad():
            val = nmse_db(net(vx, vy, k + 1)[:, -1], vbeta)
        stages.append({"layer": k + 1, "val_nmse_db": round(val, 4)})
        if log:
            print(f"{kind}: layer {k + 1:2d}  validation NMSE {val:8.3f} dB", file=sys.stderr)
    run_stage(list(net.parameters()), cfg.stage_lrs[1], cfg.final_steps, cfg.layers)
    with torch.no_grad():
        per_layer = [nmse_db(c, vbeta) for c in net(vx, vy).unbind(1)]
    record = {
        "train_nmse_db": 10 * torch.log10(torch.tensor(sum(recent) / len(recent))).item(),
        "val_nmse_db": per_layer[-1],
        "val_nmse_db_per_layer": [round(v, 4) for v in per_layer],
        "stages": stages,
        "seconds": round(time.perf_counter() - start, 1),
    }
    if log:
        print(f"{kind}: final validation NMSE {per_layer[-1]:.3f} dB ({record['seconds']} s)", file=sys.stderr)
    return net, record


def save_net(net: UnrolledNet, path: Path, cfg: TrainConfig, task: Task) -> None:
    """Write the network as a float32 safetensors file with its metadata."""
    meta = {
        "kind": net.kind,
        "n": str(net.n),
        "d": str(net.d),
        "layers": str(net.depth),
        "seed": str(cfg.train_seed),
        "task": task.spec.name,
        "matrix_seed": str(task.spec.params["matrix_seed"]),
    }
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
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    cfg = TrainConfig()
    task = tasks.get(TASK)
    args.out.mkdir(parents=True, exist_ok=True)
    log_path = args.out / "training_log.json"
    doc: dict[str, Any] = json.loads(log_path.read_text()) if log_path.exists() else {"models": {}}
    doc.update(
        command=" ".join(["python -m iclbench.baselines.train_lista", *(sys.argv[1:] if argv is None else argv)]),
        task=TASK,
        config=asdict(cfg),
        torch_version=torch.__version__,
        platform=platform.platform(),
    )
    for kind in args.models:
        net, record = train(kind, cfg, task)
        path = args.out / f"{kind}.safetensors"
        save_net(net, path, cfg, task)
        with torch.no_grad():  # the logged validation score is the saved (float32) network's
            vx, vy, vbeta = validation_set(task, cfg)
            record["val_nmse_db"] = nmse_db(load_net(path)(vx, vy)[:, -1], vbeta)
        doc["models"][kind] = {"file": path.name, "sha256": sha256_file(path), **record}
        log_path.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
