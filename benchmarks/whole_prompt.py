"""Whole-prompt prediction: a GPT-2's predictions at every prompt length of a task in one pass
(`GPT2.forward_lengths`, what `TrainedModel.predict_lengths` runs) against one forward per length
(what the runner calls without `predict_lengths`), on chunks of evaluation prompts of linear/kappa1.

    python benchmarks/whole_prompt.py [--layers 12 --width 256 --heads 8 --batch 512 --repeats 3 --threads 1]

It prints the best-of-`repeats` wall time of both, their ratio, and the largest difference of the
per-layer predictions (float32).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from iclbench import tasks
from iclbench.cache import eval_set
from iclbench.models import GPT2


def best_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--batch", type=int, default=512, help="prompts per call (the runner's --batch-size)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    task = tasks.get("linear/kappa1")
    data, _ = eval_set(task)
    lengths = list(task.spec.lengths)
    longest = max(lengths)
    x, y, xq = data.x[: args.batch, :longest], data.y[: args.batch, :longest], data.x_query[: args.batch]
    torch.manual_seed(0)
    net = GPT2(task.spec.d, args.layers, args.width, args.heads, max_len=longest).eval()

    @torch.no_grad()
    def per_length() -> dict[int, torch.Tensor]:
        return {n: net(x[:, :n], y[:, :n], xq)[1] for n in lengths}

    @torch.no_grad()
    def one_pass() -> dict[int, torch.Tensor]:
        return {n: steps for n, (_, steps) in net.forward_lengths(x, y, xq, lengths).items()}

    a, b = per_length(), one_pass()
    diff = max(float((a[n] - b[n]).abs().max()) for n in lengths)
    t_per, t_one = best_time(per_length, args.repeats), best_time(one_pass, args.repeats)
    print(f"GPT2 {args.layers} layers, width {args.width}, {args.heads} heads; {args.batch} prompts of "
          f"{task.spec.name}, lengths {lengths}, {args.threads} thread(s)")
    print(f"one forward per length  {t_per:8.3f} s")
    print(f"one pass, every length  {t_one:8.3f} s   ratio {t_per / t_one:.2f}x   largest difference {diff:.2e}")


if __name__ == "__main__":
    main()
