"""Score models from Python with `iclbench.evaluate`, and draw training batches with `Task.sample`.

    python examples/evaluate_in_python.py [--prompts N]

1. A model defined here (a class, created with keyword arguments) is scored in this process
   and compared with the `ridge` baseline, which runs in a worker process like `iclbench run`.
2. `Results` gives the numbers by task and length, the summary table and a pandas DataFrame.
3. `tasks.get(name).sample(...)` draws a training batch: a `Sample` whose `batch` is what a
   model sees, with the query labels and the noiseless targets it is scored against.
"""

from __future__ import annotations

import argparse

import torch

import iclbench
from iclbench import Batch, Model, Prediction, TaskSpec, tasks


class GradientSteps(Model):
    """`steps` steps of gradient descent from 0 on the prompt's least squares, with step size `lr`."""

    name = "gd-steps"

    def __init__(self, steps: int = 4, lr: float = 0.2) -> None:
        self.steps, self.lr = steps, lr

    def supports(self, task: TaskSpec) -> bool:
        return task.family == "linear"

    def predict(self, batch: Batch) -> Prediction:
        x, y = batch.x, batch.y
        w = x.new_zeros(x.shape[0], x.shape[2])
        preds = []
        for _ in range(self.steps):  # a loop over steps, batched over prompts
            residual = torch.einsum("bnd,bd->bn", x, w) - y
            w = w - self.lr * torch.einsum("bnd,bn->bd", x, residual) / batch.n
            preds.append(torch.einsum("bqd,bd->bq", batch.x_query, w))
        steps = torch.stack(preds, 1)  # (B, steps, q): the error after every step is recorded
        return Prediction(steps[:, -1], steps=steps, w=w)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, help="score only the first N prompts per task (quicker, marked limited)")
    args = parser.parse_args()
    chosen = "linear/kappa1,linear/noisy"

    # 1. In this process, with constructor arguments; results are returned, not written (no `out`).
    mine = iclbench.evaluate(GradientSteps, tasks=chosen, model_args={"steps": 8, "lr": 0.2}, device="cpu",
                             prompts=args.prompts, progress=False)
    ridge = iclbench.evaluate("ridge", tasks=chosen, device="cpu", prompts=args.prompts, progress=False)

    # 2. The results: by task and length, as a table, as a DataFrame.
    print(mine.table())
    for task in mine.tasks:
        print(f"{task}: {mine.model} {mine.db(task):.2f} dB, ridge {ridge.db(task):.2f} dB at the nominal length; "
              f"{mine.model} at n=80: {mine.db(task, 80):.2f} dB")
    frame = mine.to_dataframe()
    print(frame[["task", "n", "rel_err_db", "ci90_low_db", "ci90_high_db", "final_step_db"]].to_string(index=False))
    print("recorded model arguments:", mine.doc["model"]["args"])

    # 3. A training batch: 16 prompts of length 40 from the training stream of seed 0.
    task = tasks.get("linear/kappa1")
    sample = task.sample(16, 40, task.train_generator(0))
    b = sample.batch
    print(f"Sample: batch.x {tuple(b.x.shape)}, batch.y {tuple(b.y.shape)}, batch.x_query {tuple(b.x_query.shape)}, "
          f"y_query {tuple(sample.y_query.shape)}, target {tuple(sample.target.shape)}, hidden {sorted(sample.hidden)}")
    pred = GradientSteps(steps=8).predict(b).y
    print(f"GD on the batch: mean squared error against the target {float(((pred - sample.target) ** 2).mean()):.4f}")


if __name__ == "__main__":
    main()
