"""A two-layer ReLU network trained on each prompt by Adam (Garg et al.'s "2-layer NN, GD" baseline).

Each prompt trains its own network f(x) = w2^T relu(W1^T x + b1) + b2 of `HIDDEN` hidden units on its n
context pairs: `STEPS` full-batch Adam steps (learning rate `LR`, PyTorch's defaults otherwise) on the mean
squared error over the pairs, Garg et al.'s settings (their batch of 100 points is the whole prompt at
n <= 100). Every prompt's network is one slice of (B, ...) parameter tensors trained at once: the loss is the
sum over prompts of each prompt's mean squared error, so a prompt's gradient, and Adam's elementwise update,
are those of its own network alone, whatever the batch. The prediction after every step is returned as
`steps`.

Every prompt starts from the same weights, drawn once (`initial_weights`, seed `INIT_SEED`) as
`torch.nn.Linear` draws its own: uniform on +-1/sqrt(fan-in). So the prediction is a function of the prompt
alone, the same in every batch and chunk. (Garg et al. draw a fresh initialisation per prompt and average the
loss over their 64 prompts too, which divides every gradient by 64: only Adam's epsilon then weighs 64 times
more.) Training runs in float64.
"""

from __future__ import annotations

import math

import torch

from iclbench import Batch, Model, Prediction, TaskSpec

HIDDEN = 100
STEPS = 100
LR = 5e-3
INIT_SEED = 0


def initial_weights(d: int, hidden: int = HIDDEN, seed: int = INIT_SEED) -> tuple[torch.Tensor, ...]:
    """(W (d + 1, hidden): W1 with b1 as its last row, w2 (hidden,), b2 ()) in float64 on the CPU, each entry uniform
    on +-1/sqrt(fan-in) as `torch.nn.Linear` initialises itself (fan-in d for the first layer, `hidden` for the
    second)."""
    gen = torch.Generator().manual_seed(seed)

    def uniform(fan_in: int, *shape: int) -> torch.Tensor:
        return (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) / math.sqrt(fan_in)

    return uniform(d, d + 1, hidden), uniform(hidden, hidden), uniform(hidden)


def with_ones(x: torch.Tensor) -> torch.Tensor:
    """Points (B, m, d) with a last coordinate 1, so that x W holds the first layer's bias."""
    return torch.cat([x, x.new_ones(*x.shape[:-1], 1)], -1)


def network(x1: torch.Tensor, w: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
    """f(x) (B, m) of points `with_ones` x1 (B, m, d + 1) under each prompt's network: W (B, d + 1, h), w2 (B, h),
    b2 (B,)."""
    return (torch.relu(x1 @ w) @ w2.unsqueeze(-1)).squeeze(-1) + b2.unsqueeze(1)


def gradients(
    x1: torch.Tensor, y: torch.Tensor, w: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor
) -> list[torch.Tensor]:
    """The gradients of each prompt's mean squared error (1/n) sum_i (f(x_i) - y_i)^2 with respect to its W, w2
    and b2, by the chain rule (relu'(0) = 0, as autograd takes it)."""
    hidden = (x1 @ w).clamp_min_(0.0)  # (B, n, h)
    dout = ((hidden @ w2.unsqueeze(-1)).squeeze(-1) + b2.unsqueeze(1) - y).mul_(2 / x1.shape[1])  # d loss / d f(x_i)
    dpre = (dout.unsqueeze(-1) * w2.unsqueeze(1)).masked_fill_(hidden == 0, 0.0)
    return [x1.mT @ dpre, (hidden.mT @ dout.unsqueeze(-1)).squeeze(-1), dout.sum(1)]


def train(x: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor, steps: int = STEPS, lr: float = LR) -> torch.Tensor:
    """The query predictions (B, steps, q) after each Adam step of every prompt's network, computed in x's dtype.

    Adam as `torch.optim.Adam` computes it (betas 0.9 and 0.999, epsilon 1e-8, bias-corrected moments),
    elementwise on the stacked parameters, with the gradients of `gradients`."""
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    x1, q1 = with_ones(x), with_ones(x_query)
    params = [p.to(x).expand(x.shape[0], *p.shape).clone() for p in initial_weights(x.shape[-1])]
    first = [torch.zeros_like(p) for p in params]
    second = [torch.zeros_like(p) for p in params]
    out = x.new_empty(x.shape[0], steps, x_query.shape[1])
    for k in range(1, steps + 1):
        step_size = lr / (1 - beta1**k)
        root_correction = math.sqrt(1 - beta2**k)
        for p, g, m, v in zip(params, gradients(x1, y, *params), first, second):
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            p.addcdiv_(m, (v.sqrt() / root_correction).add_(eps), value=-step_size)
        out[:, k - 1] = network(q1, *params)
    return out


class ReluNetwork(Model):
    """Garg et al.'s two-layer ReLU network of width 100 trained on the prompt, on their function classes."""

    name = "relu-nn"

    def supports(self, task: TaskSpec) -> bool:
        return task.family == "garg"

    def predict(self, batch: Batch) -> Prediction:
        steps = train(batch.x, batch.y, batch.x_query)
        return Prediction(steps[:, -1], steps=steps)
