"""Steps per second of the trainer's step with each throughput switch, against a plain fp32 eager loop.

    python benchmarks/training_throughput.py [--arch gpt2 lsa] [--task linear/kappa1] [--width 64] [--layers 4]
        [--heads 4] [--n 40] [--batch-sizes 64] [--steps 20] [--warmup 3] [--combos all] [--device auto] [--threads N]

For each architecture (gpt2: the GPT-2-style model of `--width`, `--layers`, `--heads`; lsa: the linear
self-attention of `--layers` layers) and batch size, in one process and on one device:
1. the reference, a plain fp32 eager loop written out here: the model's forward pass, the mean squared
   error against the query labels, backward, gradient clipping and an Adam step;
2. `iclbench.training.train_step`, the trainer's step, under each combination of its switches available
   on the device (`--precision fp32|bf16`, `--compile`, `--fused`; `--combos` picks some, e.g. `fp32 bf16+fused`).
Every timing runs the same few batches of `--n` context pairs, drawn beforehand (drawing one, on the
CPU, is timed apart); `--warmup` steps (compilation included) are left out. Printed per combination:
milliseconds per step, steps and examples (prompts) per second, and the ratio of its steps per second
to the reference's. Several batch sizes show where a larger batch stops paying (examples per second).
Where torch.compile is unavailable or fails, one line says so and the compiled combinations are skipped.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from iclbench import tasks
from iclbench.runner import resolve_device
from iclbench.tasks import Sample
from iclbench.training import TrainConfig, compile_model, make_model, make_optimizer, train_step

POOL = 4
"""Distinct batches cycled through by every timed loop."""
HEADER = f"{'arch':6} {'batch':>5}  {'step':28} {'ms/step':>9} {'steps/s':>8} {'examples/s':>10} {'x plain':>8} {'warm-up s':>9}"


def row(arch: str, batch: int, label: str, seconds: float, ratio: float, warm: float) -> None:
    """Print one timing as soon as it is measured."""
    print(f"{arch:6} {batch:5}  {label:28} {1e3 * seconds:9.2f} {1 / seconds:8.1f} {batch / seconds:10.0f} "
          f"{ratio:8.2f} {warm:9.1f}", flush=True)


def combinations(device: torch.device) -> list[str]:
    """Every combination of the trainer's switches the device allows, as "precision[+compile][+fused]"."""
    bf16 = device.type == "cpu" or torch.cuda.is_bf16_supported(including_emulation=False)
    precisions = ("fp32", "bf16") if bf16 else ("fp32",)
    return [p + c + f for p in precisions for c in ("", "+compile") for f in ("", "+fused")]


def check_combo(combo: str) -> str:
    """`combo`, checked to be precision[+compile][+fused]."""
    parts = combo.split("+")
    if parts[0] not in ("fp32", "bf16") or not set(parts[1:]) <= {"compile", "fused"}:
        raise SystemExit(f"--combos: {combo!r} is not precision[+compile][+fused], e.g. bf16+compile")
    return combo


def config(args: argparse.Namespace, arch: str, batch: int, combo: str) -> TrainConfig:
    parts = combo.split("+")
    model = dict(arch="gpt2", width=args.width, heads=args.heads) if arch == "gpt2" else dict(arch="lsa")
    return TrainConfig(tasks=(args.task,), layers=args.layers, batch_size=batch, n_min=args.n, n_max=args.n,
                       device=args.device, precision=parts[0], compile="compile" in parts, fused="fused" in parts,
                       **model)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step: Callable[[Sample], object], pool: list[Sample], args: argparse.Namespace,
          device: torch.device) -> tuple[float, float]:
    """(warm-up seconds, seconds per step) of `step` over the batches of `pool`."""
    start = time.perf_counter()
    for i in range(args.warmup):
        step(pool[i % POOL])
    sync(device)
    warm = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(args.steps):
        step(pool[i % POOL])
    sync(device)
    return warm, (time.perf_counter() - start) / args.steps


def plain_loop(cfg: TrainConfig, device: torch.device) -> Callable[[Sample], object]:
    """The reference step: fp32, eager, torch's default Adam."""
    task = tasks.get(cfg.tasks[0])
    model = make_model(cfg, [task]).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)

    def step(sample: Sample) -> None:
        b = sample.batch
        loss = ((model(b.x, b.y, b.x_query)[0] - sample.y_query) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        opt.step()

    return step


def trainer_step(cfg: TrainConfig, device: torch.device) -> Callable[[Sample], object]:
    """The trainer's step under `cfg`'s switches."""
    task = tasks.get(cfg.tasks[0])
    model = make_model(cfg, [task]).to(device).train()
    opt = make_optimizer(cfg, model)
    net = compile_model(model, fixed_length=True) if cfg.compile else model
    return lambda sample: train_step(cfg, net, opt, sample, "label")


def bench(args: argparse.Namespace, arch: str, batch: int, device: torch.device, combos: list[str]) -> None:
    """The rows of one architecture and batch size; the compiled combinations are dropped after a failure."""
    reference = config(args, arch, batch, "fp32")
    task = tasks.get(args.task)
    gen = task.train_generator(0)
    start = time.perf_counter()
    pool = [task.sample(batch, args.n, gen, device=device) for _ in range(POOL)]
    sync(device)
    draw_ms = 1e3 * (time.perf_counter() - start) / POOL
    print(f"{arch}, batch {batch}: drawing one batch on the CPU takes {draw_ms:.2f} ms (not in the step times)",
          flush=True)
    warm, base = timed(plain_loop(reference, device), pool, args, device)
    row(arch, batch, "plain fp32 eager loop", base, 1.0, warm)
    for combo in list(combos):
        try:
            warm, sec = timed(trainer_step(config(args, arch, batch, combo), device), pool, args, device)
        except Exception as exc:  # torch.compile's failures (and a fused Adam's) are many and machine-specific
            first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            if "compile" in combo:
                print(f"torch.compile fails on this machine ({type(exc).__name__}: {first}); compiled combinations "
                      "skipped", flush=True)
                combos[:] = [c for c in combos if "compile" not in c]
            else:
                print(f"trainer {combo} fails on this device ({type(exc).__name__}: {first}); skipped", flush=True)
                combos.remove(combo)
            continue
        row(arch, batch, f"trainer {combo}", sec, base / sec, warm)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", nargs="+", default=["gpt2", "lsa"], choices=["gpt2", "lsa"])
    p.add_argument("--task", default="linear/kappa1")
    p.add_argument("--width", type=int, default=64, help="gpt2 width")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4, help="gpt2 heads")
    p.add_argument("--n", type=int, default=40, help="context pairs per prompt")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[64])
    p.add_argument("--steps", type=int, default=20, help="timed steps per combination")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation included)")
    p.add_argument("--combos", nargs="+", default=["all"], help="e.g. fp32 bf16+fused fp32+compile (default: all)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    combos = combinations(device) if args.combos == ["all"] else [check_combo(c) for c in args.combos]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
          f"{args.steps} timed steps after {args.warmup} warm-up steps", flush=True)
    print(HEADER, flush=True)
    for arch in args.arch:
        for batch in args.batch_sizes:
            bench(args, arch, batch, device, combos)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
