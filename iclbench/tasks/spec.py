"""Task specification, evaluation sets and their fingerprints."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np
import torch


@dataclass(frozen=True)
class TaskSpec:
    """A frozen description of one task of the suite.

    `lengths` is the grid of prompt lengths scored, `nominal` the one reported in
    summary tables; `params` holds the family's own parameters. `m` is the dimension of a
    label: 1 for scalar labels (`y` (B, n), predictions (B, q)), m > 1 for vector labels
    (`y` (B, n, m), predictions (B, q, m)).
    """

    name: str
    family: str
    d: int
    lengths: tuple[int, ...]
    nominal: int
    n_prompts: int = 2048
    n_queries: int = 8
    noise: float = 0.0
    seed: int = 0
    params: Mapping[str, Any] = field(default_factory=dict)
    m: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))
        if self.nominal not in self.lengths:
            raise ValueError(f"{self.name}: nominal length {self.nominal} is not in {self.lengths}")
        if list(self.lengths) != sorted(set(self.lengths)):
            raise ValueError(f"{self.name}: lengths must be strictly increasing, got {self.lengths}")
        if self.m < 1:
            raise ValueError(f"{self.name}: the label dimension m must be at least 1, got {self.m}")

    def __hash__(self) -> int:
        return hash(self.name)

    @property
    def max_length(self) -> int:
        return self.lengths[-1]

    @property
    def label_shape(self) -> tuple[int, ...]:
        """The shape of one label: () for scalar labels, (m,) for vector labels."""
        return () if self.m == 1 else (self.m,)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as stored in results files."""
        return {
            "name": self.name,
            "family": self.family,
            "d": self.d,
            "m": self.m,
            "lengths": list(self.lengths),
            "nominal": self.nominal,
            "n_prompts": self.n_prompts,
            "n_queries": self.n_queries,
            "noise": self.noise,
            "seed": self.seed,
            "params": {k: list(v) if isinstance(v, tuple) else v for k, v in self.params.items()},  # as JSON reads it
        }


@dataclass(frozen=True)
class EvalSet:
    """A task's evaluation set at its longest prompt length, as float32 CPU tensors.

    Shorter prompts are prefixes: the prompt of length n is `x[:, :n]`, `y[:, :n]`.
    `y` is (P, N) for scalar labels and (P, N, m) for vector ones (`TaskSpec.m`);
    `targets[n]` (P, q), or (P, q, m), is the noiseless target scored at length n; `hidden` holds
    the query labels and the task's per-prompt hidden parameters, never shown to a
    model; `public` holds tensors published with the task (shared by all prompts).
    """

    x: torch.Tensor
    y: torch.Tensor
    x_query: torch.Tensor
    targets: dict[int, torch.Tensor]
    hidden: dict[str, torch.Tensor]
    public: dict[str, torch.Tensor]

    @property
    def n_prompts(self) -> int:
        return self.x.shape[0]

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor under a flat, stable name (the fingerprinted content)."""
        out = {"x": self.x, "y": self.y, "x_query": self.x_query}
        out.update({f"target/{n}": t for n, t in self.targets.items()})
        out.update({f"hidden/{k}": t for k, t in self.hidden.items()})
        out.update({f"public/{k}": t for k, t in self.public.items()})
        return out

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, torch.Tensor]) -> EvalSet:
        def group(prefix: str) -> dict[str, torch.Tensor]:
            return {k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith(prefix + "/")}

        targets = {int(k): v for k, v in sorted(group("target").items(), key=lambda kv: int(kv[0]))}
        return cls(tensors["x"], tensors["y"], tensors["x_query"], targets, group("hidden"), group("public"))

    def fingerprint(self) -> str:
        """SHA-256 over every tensor's name, shape and little-endian float32 bytes."""
        h = hashlib.sha256()
        for name, t in sorted(self.tensors().items()):
            a = np.ascontiguousarray(t.numpy(), dtype="<f4")
            h.update(f"{name}:{list(a.shape)}\n".encode())
            h.update(a.tobytes())
        return h.hexdigest()

    def head(self, n_prompts: int) -> EvalSet:
        """The first `n_prompts` prompts (used by `--prompts`)."""
        sl = slice(0, n_prompts)
        return EvalSet(
            self.x[sl],
            self.y[sl],
            self.x_query[sl],
            {n: t[sl] for n, t in self.targets.items()},
            {k: t[sl] for k, t in self.hidden.items()},
            self.public,
        )


def f32(a: np.ndarray) -> np.ndarray:
    """Round float64 data to float32-representable values, kept in float64.

    Generation rounds every drawn or derived quantity this way, so that a model run in
    float32 sees exactly the fingerprinted numbers.
    """
    return np.asarray(a, dtype=np.float64).astype(np.float32).astype(np.float64)
