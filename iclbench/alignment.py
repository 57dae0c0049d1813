"""Which step of a reference algorithm each layer of a model resembles (Fu et al.'s similarity of errors).

For one task at prompt length n, with the model's per-layer predictions `steps` (P, K, q), a
reference algorithm's per-step predictions `ref_steps` (P, S, q) on the same prompts and the
task's noiseless target (P, q) (`EvalSet.targets[n]`: for logistic tasks the regularised
optimum's logit), the residual of layer k is the vector

    r_k = (steps[p, k, j] - target[p, j]) over every prompt p and query j   (length P * q),

(and over every coordinate of a vector label),

likewise r'_s for step s of the reference, and

    cosine[k][s] = <r_k, r'_s> / (||r_k|| ||r'_s||),

computed in float64 (a residual of zero norm has no direction: its cosines are 0).
`closest_step[k]` is the 1-based step s with the largest cosine for layer k (the first on ties).
A cosine of 1 means that layer k errs on every query exactly in proportion to step s.

`iclbench run --align gd newton` stores, for every task where the model returns steps, under
the task's entry `alignment: {"gd": {"n": <nominal length>, "cosine": [[...] per layer],
"closest_step": [...]}, ...}` for each reference that supports the task and returns steps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from tqdm import tqdm

from iclbench.api import TaskFailure
from iclbench.tasks import EvalSet, TaskSpec

if TYPE_CHECKING:
    from iclbench.runner import References, RunConfig


def cosine_matrix(steps: torch.Tensor, ref_steps: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(K, S) cosine similarities of the residuals of `steps` (P, K, q) and `ref_steps` (P, S, q) to `target` (P, q).

    Vector labels, `steps` (P, K, q, m), `ref_steps` (P, S, q, m) and `target` (P, q, m), count each of
    a query's m coordinates as one more entry of the residual.
    """
    if steps.dim() == 4 and ref_steps.dim() == 4 and target.dim() == 3:
        steps, ref_steps, target = steps.flatten(2), ref_steps.flatten(2), target.flatten(1)
    if steps.dim() != 3 or ref_steps.dim() != 3 or target.dim() != 2:
        raise ValueError(
            f"alignment: expected steps (P, K, q), reference steps (P, S, q) and target (P, q), got shapes "
            f"{tuple(steps.shape)}, {tuple(ref_steps.shape)} and {tuple(target.shape)}"
        )
    p, _, q = steps.shape
    if ref_steps.shape[0] != p or ref_steps.shape[2] != q or tuple(target.shape) != (p, q):
        raise ValueError(
            f"alignment: prompts and queries differ: steps {tuple(steps.shape)}, reference steps "
            f"{tuple(ref_steps.shape)}, target {tuple(target.shape)}"
        )
    goal = target.double().to(steps.device).unsqueeze(1)
    r = (steps.double() - goal).transpose(0, 1).reshape(steps.shape[1], -1)
    r_ref = (ref_steps.double().to(steps.device) - goal).transpose(0, 1).reshape(ref_steps.shape[1], -1)
    norms = r.norm(dim=1, keepdim=True) * r_ref.norm(dim=1).unsqueeze(0)
    dots = r @ r_ref.T
    return torch.where(norms > 0, dots / norms.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(dots))


def align(steps: torch.Tensor, ref_steps: torch.Tensor, target: torch.Tensor, digits: int = 5) -> dict[str, Any]:
    """The results entry for one reference: the cosine matrix (rounded to `digits`) and the closest step per layer."""
    cos = cosine_matrix(steps, ref_steps, target)
    return {
        "cosine": [[round(float(v), digits) for v in row] for row in cos.cpu()],
        "closest_step": [int(s) + 1 for s in cos.argmax(dim=1).cpu()],
    }


def with_references(
    references: References,
    spec: TaskSpec,
    data: EvalSet,
    inputs: EvalSet,
    n: int,
    steps: torch.Tensor,
    cfg: RunConfig,
) -> dict[str, Any]:
    """`align` entries for the model's `steps` at length `n` against every reference that returns steps there.

    `data` holds the targets, `inputs` the prompts in the run's dtype; a reference that
    fails on the task is recorded with its error rather than failing the model's task.
    """
    # imported here: the runner imports this module
    from iclbench.runner import predict_all

    out: dict[str, Any] = {}
    for name, ref in references.items():
        try:
            ref.begin_task()
            if n not in (ref.supported_lengths(spec) or ()):
                continue
            with tqdm(disable=True) as bar:
                ref_steps = dict(predict_all(ref, spec, inputs, [n], cfg, bar, keep_steps={n}))[n].steps
        except TaskFailure as exc:
            out[name] = {"n": n, "error": f"reference {name}: {exc}"}
            continue
        if ref_steps is not None:
            out[name] = {"n": n, **align(steps, ref_steps, data.targets[n])}
    return out
