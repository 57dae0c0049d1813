"""LISTA, LISTA-CP and ALISTA in Open-L2O's sparse-coding setting, beside the published numbers.

    python benchmarks/l2o_literature.py [--models lista lista-cp alista] [--out run.json]

Trains the package's own networks (`iclbench.baselines.lista`, with the trainer of
`iclbench.baselines.train_lista`) in the setting of Open-L2O's sparse-recovery benchmark: a
(m, d) = (256, 512) dictionary with N(0, 1/m) entries and unit-norm columns, codes Bernoulli(0.1) x N(0, 1),
noiseless measurements y = A b, 16 layers, batch 128, Adam at 5e-4 for each new layer then 1e-4 and 1e-5 for
all layers, thresholds started at lambda / L~ with lambda = 0.4 (Open-L2O's `model_lam`). Each stage stops
when the validation NMSE (1,024 codes) has not improved for `--patience` validations (Open-L2O: 5 epochs of
400 steps; here one validation every `--val-every` steps, so that a model trains in about an hour of one
core), with no fine-tuning stage after the last layer. `--open-l2o` trains as Open-L2O's code does instead
(`TrainConfig.open_l2o`: its start, loss, Adam, layer decay, validation metric, last weights kept), with its
stopping (`OPEN_L2O_STOPPING`). Training codes are drawn fresh every batch from the seed `--seed` (Chen et
al. 2018's code draws them on the fly; Open-L2O cycles a file of 51,200). ALISTA's weight is the package's
closed form: Open-L2O loads its weight from a file, and ALISTA's own algorithm for it (Liu et al. 2019,
appendix E.1: projected gradient descent on the same problem) converges to the closed form.

It prints the NMSE (dB) of every layer on 1,024 test codes (a seed of their own) in Open-L2O's metric,
the mean over codes of 10 log10((||b_hat - b||^2 / d + 1e-10) / (||b||^2 / d + 1e-10)), with the package's (10 log10 of the ratio of the
sums) beside it, and the published layer-16 values. `--time-steps K` first times K Adam steps at full depth
of LISTA-CP and ALISTA with the matrix copied per prompt, (B, m, d) as a suite task's batch holds it, and
with the shared (m, d) matrix the trainer uses, and prints the ratio. Smaller settings (`--m`, `--d`,
`--layers`, `--patience`, ...) run the same code path.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from iclbench.baselines.lista import ALISTANet, UnrolledNet, alista_weight
from iclbench.baselines.train_lista import Codes, TrainConfig, mean_of_db, new_net, nmse_db, save_net, train

PUBLISHED = {"lista": -35.0, "lista-cp": -30.0, "lista-cpss": -63.0, "alista": -78.0}
"""NMSE (dB) at layer 16 in Open-L2O's figure "Learning to optimize sparse recovery" (README of
github.com/VITA-Group/Open-L2O, Figs/ss.png; Chen et al. 2022, "Learning to Optimize: A Primer and A
Benchmark", JMLR), (256, 512), noiseless, read off the figure to about +-3 dB."""
SOURCE = "Open-L2O, figure 'Learning to optimize sparse recovery' (256 x 512, noiseless), layer 16, read off +-3 dB"
OPEN_L2O_LAMBDA = 0.4
OPEN_L2O_STOPPING = {"val_every": 400, "patience": 5, "max_stage_steps": 20000}
"""`--open-l2o`'s defaults: Open-L2O validates once an epoch (51,200 codes, 400 steps) and ends a stage after 5
epochs without improvement; it sets no cap (100,000 epochs), this one keeps a run finite."""
PACKAGE_STOPPING = {"val_every": 100, "patience": 4, "max_stage_steps": 3000}
"""The defaults otherwise: about an hour of one core per network."""
MATRIX_SEED, TEST_SEED = 2024, 2


class GaussianDictionary(Codes):
    """A fixed (m, d) dictionary with N(0, 1/m) entries and unit-norm columns; codes Bernoulli(p) x N(0, 1);
    noiseless measurements y = A b."""

    def __init__(self, m: int, d: int, p: float = 0.1, seed: int = MATRIX_SEED) -> None:
        a = np.random.default_rng(seed).standard_normal((m, d)) / math.sqrt(m)
        self.matrix = torch.from_numpy(a / np.linalg.norm(a, axis=0)).to(torch.float32)
        self.p, self.seed = p, seed

    def generator(self, seed: int) -> np.random.Generator:
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence(self.seed, spawn_key=(seed,))))

    def draw(self, batch: int, gen: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.matrix.shape[1]
        codes = (gen.random((batch, d)) < self.p) * gen.standard_normal((batch, d))
        beta = torch.from_numpy(codes).to(torch.float32)
        return beta @ self.matrix.T, beta

    def describe(self) -> dict[str, str]:
        m, d = self.matrix.shape
        return {"data": f"Gaussian dictionary ({m}, {d}), unit-norm columns, codes Bernoulli({self.p}) x N(0, 1)",
                "matrix_seed": str(self.seed)}


def per_layer_db(net: UnrolledNet, source: Codes, y: torch.Tensor, beta: torch.Tensor) -> dict[str, list[float]]:
    """Per-layer NMSE (dB) of `net` on (y, beta): Open-L2O's mean of per-code dB, and the ratio of the sums."""
    fixed = {"weight": alista_weight(source.matrix)} if isinstance(net, ALISTANet) else {}
    with torch.no_grad():
        layers = net(source.matrix, y, **fixed).double().unbind(1)
    b = beta.double()
    return {
        "mean_of_db": [round(mean_of_db(c, b), 2) for c in layers],
        "ratio_db": [round(nmse_db(c, b), 2) for c in layers],
    }


def step_seconds(net: UnrolledNet, source: Codes, batch: int, steps: int, shared: bool) -> float:
    """CPU seconds per Adam step of `net` at full depth; the matrix shared by the batch or copied per prompt."""
    x = source.matrix if shared else source.matrix.expand(batch, *source.matrix.shape).contiguous()
    fixed = {}
    if isinstance(net, ALISTANet):  # computed once, as the trainer does; per prompt as a broadcast view
        w = alista_weight(source.matrix)
        fixed = {"weight": w if shared else w.expand(batch, *w.shape)}
    opt = torch.optim.Adam(net.parameters(), lr=1e-9)
    gen = source.generator(99)
    times = []
    for i in range(steps + 1):  # the first step warms up
        y, beta = source.draw(batch, gen)
        t = time.process_time()
        loss = ((net(x, y, **fixed)[:, -1] - beta) ** 2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:
            times.append(time.process_time() - t)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", choices=("lista", "lista-cp", "alista"), default=["lista", "lista-cp", "alista"])
    p.add_argument("--m", type=int, default=256, help="measurements (rows of the dictionary)")
    p.add_argument("--d", type=int, default=512, help="code dimension (columns)")
    p.add_argument("--p", type=float, default=0.1, help="probability of a non-zero code entry")
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--seed", type=int, default=0,
                   help=f"the training codes' seed (default 0; the validation codes take seed {TrainConfig.val_seed}, "
                        f"the test codes {TEST_SEED})")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--open-l2o", action="store_true", help="train as Open-L2O's code does (`TrainConfig.open_l2o`)")
    for key, what in (("val_every", "steps between validations"),
                      ("patience", "validations without improvement that end a stage"),
                      ("max_stage_steps", "steps at most per stage")):
        p.add_argument(f"--{key.replace('_', '-')}", type=int, help=f"{what} (default {PACKAGE_STOPPING[key]}, "
                       f"with --open-l2o {OPEN_L2O_STOPPING[key]})")
    p.add_argument("--val-prompts", type=int, default=1024)
    p.add_argument("--test-prompts", type=int, default=1024)
    p.add_argument("--time-steps", type=int, default=0, help="time this many steps per path first (0: skip)")
    p.add_argument("--out", type=Path, help="write every number (curves, stages, CPU time) to this JSON file, and each "
                   "trained network beside it (<out stem>-<model>.safetensors)")
    args = p.parse_args(argv)
    for key, default in (OPEN_L2O_STOPPING if args.open_l2o else PACKAGE_STOPPING).items():
        if getattr(args, key) is None:
            setattr(args, key, default)
    counts = ("m", "d", "layers", "batch_size", "val_every", "patience", "max_stage_steps", "val_prompts",
              "test_prompts")
    for key in counts:
        if getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')} takes a count >= 1, not {getattr(args, key)}")
    if args.time_steps < 0 or not 0 < args.p <= 1:
        p.error("--time-steps takes a count >= 0 and --p a probability in (0, 1]")
    if args.seed < 0 or args.seed in (TrainConfig.val_seed, TEST_SEED):
        p.error(f"--seed takes a seed >= 0 other than the validation and the test codes' ({TrainConfig.val_seed}, "
                f"{TEST_SEED}), not {args.seed}")
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    source = GaussianDictionary(args.m, args.d, args.p)
    cfg = TrainConfig(layers=args.layers, batch_size=args.batch_size, val_every=args.val_every,
                      patience=args.patience, stage_steps=(args.max_stage_steps,) * 3, final_steps=0,
                      val_prompts=args.val_prompts, init_lambda=OPEN_L2O_LAMBDA, train_seed=args.seed,
                      open_l2o=args.open_l2o)
    doc: dict = {"command": " ".join(["python benchmarks/l2o_literature.py", *(sys.argv[1:] if argv is None else argv)]),
                 "setting": {"m": args.m, "d": args.d, "p": args.p, "matrix_seed": MATRIX_SEED, "test_seed": TEST_SEED},
                 "config": asdict(cfg), "torch_version": torch.__version__, "published_layer16": PUBLISHED,
                 "source": SOURCE, "timing": {}, "models": {}}
    print(f"Open-L2O's setting at (m, d) = ({args.m}, {args.d}), codes Bernoulli({args.p}) x N(0, 1), noiseless, "
          f"{args.layers} layers, batch {args.batch_size}")
    if args.time_steps:
        for kind in ("lista-cp", "alista"):
            net = new_net(kind, source.matrix, cfg)
            copied, shared = (step_seconds(net, source, args.batch_size, args.time_steps, s) for s in (False, True))
            doc["timing"][kind] = {"copied_s": round(copied, 4), "shared_s": round(shared, 4)}
            print(f"{kind}: CPU seconds per Adam step at depth {args.layers}: matrix copied per prompt {copied:.4f}, "
                  f"shared {shared:.4f} ({copied / shared:.1f}x)")
    test_y, test_beta = source.draw(args.test_prompts, source.generator(TEST_SEED))
    ista = new_net("lista-cp", source.matrix, replace(cfg, open_l2o=False))  # untrained: ISTA, whatever the recipe
    curves = {"ista": per_layer_db(ista, source, test_y, test_beta)}
    for kind in args.models:
        net, record = train(kind, cfg, source)
        curves[kind] = per_layer_db(net, source, test_y, test_beta)
        doc["models"][kind] = {**record, "test": curves[kind]}
        if args.out:
            save_net(net, args.out.with_name(f"{args.out.stem}-{kind}.safetensors"), cfg, source)
            args.out.write_text(json.dumps(doc, indent=1) + "\n")
    doc["ista_test"] = curves["ista"]
    print(f"\nNMSE (dB) per layer on {args.test_prompts} test codes: Open-L2O's mean of per-code dB "
          "(ratio of the sums in brackets); ista: the untrained network, ISTA with lambda = 0.4")
    names = list(curves)
    print("layer " + "".join(f"{n:>18}" for n in names))
    for k in range(args.layers):
        print(f"{k + 1:5d} " + "".join(f"{curves[n]['mean_of_db'][k]:9.2f} ({curves[n]['ratio_db'][k]:6.2f})"
                                        for n in names))
    print(f"\npublished at layer 16 ({SOURCE}):")
    for kind in args.models:
        got = curves[kind]["mean_of_db"][-1]
        record = doc["models"][kind]
        print(f"  {kind:9} published {PUBLISHED[kind]:7.1f}  measured {got:7.2f} at layer {args.layers} "
              f"(difference {got - PUBLISHED[kind]:+.2f} dB; {record['steps']} steps, {record['cpu_seconds']:.0f} s CPU)")
    if args.out:
        args.out.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
