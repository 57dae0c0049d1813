"""Reference in-context architectures: LSA and its kernel variants, GPT-2, looped forms, causal LSA, and a
proximal-step transformer for the lasso.

Every architecture is an `InContextModel`: `model(x, y, x_query)` returns the (B, q)
prediction and the (B, K, q) prediction after each of its K layers ((B, q, m) and (B, K, q, m)
for the m-dimensional labels of the causal LSA, the one architecture with `m` > 1). `build(config)` makes
one from the dict its `config()` returns (the form stored in checkpoints).
"""

from __future__ import annotations

from typing import Any

from iclbench.models.base import InContextModel
from iclbench.models.causal_lsa import CausalLSA, gd_causal_lsa
from iclbench.models.gpt2 import GPT2
from iclbench.models.linear_transformer import ATTENTIONS, LinearTransformer
from iclbench.models.lsa import gd_lsa
from iclbench.models.prox_transformer import ProxTransformer, ista_prox_transformer

ARCHS: dict[str, type[InContextModel]] = {
    "linear-transformer": LinearTransformer, "gpt2": GPT2, "causal-lsa": CausalLSA, "prox-transformer": ProxTransformer,
}


def build(config: dict[str, Any]) -> InContextModel:
    """The architecture `config["arch"]` with the other entries as its arguments."""
    kwargs = dict(config)
    arch = kwargs.pop("arch", None)
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHS)}")
    try:
        return ARCHS[arch](**kwargs)
    except TypeError as exc:
        raise ValueError(f"bad configuration for {arch}: {exc}") from None


__all__ = ["ARCHS", "ATTENTIONS", "GPT2", "CausalLSA", "InContextModel", "LinearTransformer", "ProxTransformer", "build",
           "gd_causal_lsa", "gd_lsa", "ista_prox_transformer"]
