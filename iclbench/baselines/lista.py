"""Learned ISTA: LISTA, LISTA-CP and ALISTA, 16-layer unrolled sparse coders trained on lasso/fixed.

LISTA and LISTA-CP learn weights tied to the first n = 10 rows of the lasso family's
fixed matrix X0: they only apply at that length, and fail when the measurement matrix
changes (lasso/shift, lasso/random). ALISTA computes its weight from each prompt's own X
and learns two scalars per layer: it follows a change of matrix, not of length. All
three apply only at the trained length. `python -m iclbench.baselines.train_lista` trains them
and writes the checkpoints read here.
"""

from __future__ import annotations

import math
from abc import ABCMeta, abstractmethod
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from iclbench import Batch, Model, Prediction, TaskSpec

LAYERS = 16
INIT_LAMBDA = 0.1
"""The lasso penalty of the ISTA iteration the networks start from (thresholds lambda / L~)."""
SS_STEP, SS_MAX = 1.2, 13.0
"""Support selection: at layer k (from 0), p_k = min(1.2 (k + 1), 13) percent of the entries pass unshrunk."""
CHECKPOINTS = Path(__file__).parent / "checkpoints"


def soft(v: torch.Tensor, th: torch.Tensor) -> torch.Tensor:
    """Soft thresholding sign(v) max(|v| - th, 0)."""
    return torch.sign(v) * torch.relu(v.abs() - th)


def soft_ss(v: torch.Tensor, th: torch.Tensor, count: int) -> torch.Tensor:
    """Soft thresholding with support selection (Chen et al. 2018, "CPSS").

    The `count` largest entries of |v| over the code's coordinates that exceed the
    threshold pass unshrunk, the others are soft-thresholded; the choice of entries
    carries no gradient.
    """
    mag = v.abs()
    cut = mag.topk(count, dim=-1).values[..., -1:]
    keep = ((mag > th) & (mag >= cut)).detach()
    return torch.where(keep, v, soft(v, th))


def ss_count(k: int, d: int) -> int:
    """Entries passing unshrunk at layer k (from 0) of a d-dimensional code: ceil(p_k d / 100)."""
    return math.ceil(min(SS_STEP * (k + 1), SS_MAX) * d / 100)


def measure(x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """X b (B, n) for codes b (B, d): X is one (n, d) matrix shared by the batch, or one (B, n, d) per prompt."""
    return b @ x.mT if x.dim() == 2 else torch.einsum("bnd,bd->bn", x, b)


def back_project(w: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """W^T r (B, d) for residuals r (B, n): W is one (n, d) matrix shared by the batch, or one (B, n, d) per prompt."""
    return r @ w if w.dim() == 2 else torch.einsum("bnd,bn->bd", w, r)


def lipschitz(x: torch.Tensor) -> torch.Tensor:
    """L~ = 1.001 ||X||_2^2, the step bound of ISTA on (1/2)||y - X b||^2 (per matrix of a batch)."""
    return 1.001 * torch.linalg.matrix_norm(x, ord=2) ** 2


def alista_weight(x: torch.Tensor) -> torch.Tensor:
    """ALISTA's analytic weight W (..., n, d) for measurement matrices X (..., n, d).

    Column i minimises sum_{j != i} (w_i^T x_j)^2 subject to w_i^T x_i = 1 (the
    Frobenius form: the off-diagonal of W^T X is minimised with diag(W^T X) = 1). The
    solution w_i = G^+ x_i / (x_i^T G^+ x_i), G = X X^T, equals pinv(X)^T e_i / (pinv(X) X)_ii:
    for n < d, (pinv(X) X)_ii is the leverage of column i in X's row space; for n >= d
    and X of full column rank it is 1 and W^T X = I. Computed in float64; a zero column
    gets w_i = 0.
    """
    x64 = x.double()
    p = torch.linalg.pinv(x64)
    lev = (p * x64.mT).sum(-1).clamp_min(torch.finfo(torch.float64).tiny)
    return (p.mT / lev.unsqueeze(-2)).to(x.dtype)


class UnrolledNet(nn.Module, metaclass=ABCMeta):
    """A stack of `LAYERS` layers mapping a prompt's (X, y) to a code estimate per layer."""

    kind = ""

    def __init__(self, n: int, d: int, layers: int = LAYERS) -> None:
        super().__init__()
        self.n, self.d, self.depth = n, d, layers

    @abstractmethod
    def forward(self, x: torch.Tensor, y: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        """Codes (B, depth, d) after each of the first `depth` layers (all by default), from b^0 = 0, for
        measurements y (B, n) by matrices x: (B, n, d), one per prompt, or (n, d), one shared by the batch
        (the training setting of a fixed matrix, without a copy per prompt)."""

    @abstractmethod
    def stage_params(self, k: int) -> list[nn.Parameter]:
        """The parameters layer k (from 0) introduces, trained alone in its first layer-wise stage."""

    @abstractmethod
    def init_from(self, x0: torch.Tensor, lam: float) -> UnrolledNet:
        """Start from ISTA's weights for X0 with penalty `lam` (the package's start)."""

    def init_open_l2o(self, x0: torch.Tensor, lam: float) -> UnrolledNet:
        """Start where Open-L2O's code starts the network (Model_Base_L2O/models): `init_from`'s weights unless the
        class says otherwise."""
        return self.init_from(x0, lam)


class LISTANet(UnrolledNet):
    """b^1 = soft(B y, th_1), b^{k+1} = soft(B y + W_k b^k, th_k); B shared, W_k and th_k per layer."""

    kind = "lista"

    def __init__(self, n: int, d: int, layers: int = LAYERS) -> None:
        super().__init__(n, d, layers)
        self.B = nn.Parameter(torch.zeros(d, n))
        self.W = nn.ParameterList(nn.Parameter(torch.zeros(d, d)) for _ in range(layers - 1))
        self.theta = nn.ParameterList(nn.Parameter(torch.zeros(())) for _ in range(layers))

    def init_from(self, x0: torch.Tensor, lam: float) -> LISTANet:
        """ISTA's weights for X0: B = X0^T / L~, W_k = I - B X0, th_k = lam / L~."""
        x0 = x0.double()
        lip = lipschitz(x0)
        with torch.no_grad():
            self.B.copy_(x0.T / lip)
            for w in self.W:
                w.copy_(torch.eye(self.d, dtype=x0.dtype) - x0.T @ x0 / lip)
            for th in self.theta:
                th.fill_(lam / lip)
        return self

    def forward(self, x: torch.Tensor, y: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        by = y @ self.B.T
        b = soft(by, self.theta[0])
        codes = [b]
        for k in range(1, depth or self.depth):
            b = soft(by + b @ self.W[k - 1].T, self.theta[k])
            codes.append(b)
        return torch.stack(codes, 1)

    def stage_params(self, k: int) -> list[nn.Parameter]:
        return [self.B, self.theta[0]] if k == 0 else [self.W[k - 1], self.theta[k]]


class LISTACPNet(UnrolledNet):
    """b^{k+1} = soft(b^k + W_k^T (y - X b^k), th_k) with the prompt's X; W_k (n, d) and th_k per layer."""

    kind = "lista-cp"

    def __init__(self, n: int, d: int, layers: int = LAYERS) -> None:
        super().__init__(n, d, layers)
        self.W = nn.ParameterList(nn.Parameter(torch.zeros(n, d)) for _ in range(layers))
        self.theta = nn.ParameterList(nn.Parameter(torch.zeros(())) for _ in range(layers))

    def init_from(self, x0: torch.Tensor, lam: float) -> LISTACPNet:
        """ISTA's weights for X0: W_k = X0 / L~, th_k = lam / L~."""
        x0 = x0.double()
        lip = lipschitz(x0)
        with torch.no_grad():
            for w in self.W:
                w.copy_(x0 / lip)
            for th in self.theta:
                th.fill_(lam / lip)
        return self

    def init_open_l2o(self, x0: torch.Tensor, lam: float) -> LISTACPNet:
        """Open-L2O's start: W_k = X0 (a step of 1), th_k = lam / L~."""
        self.init_from(x0, lam)
        with torch.no_grad():
            for w in self.W:
                w.copy_(x0)
        return self

    def forward(self, x: torch.Tensor, y: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        b = y.new_zeros(y.shape[0], self.d)
        codes = []
        for k in range(depth or self.depth):
            b = soft(b + back_project(self.W[k], y - measure(x, b)), self.theta[k])
            codes.append(b)
        return torch.stack(codes, 1)

    def stage_params(self, k: int) -> list[nn.Parameter]:
        return [self.W[k], self.theta[k]]


class ALISTANet(UnrolledNet):
    """b^{k+1} = soft_ss(b^k - gamma_k W^T (X b^k - y), th_k), W = `alista_weight(X)` of each prompt.

    Only gamma_k and th_k are learned; `support` switches support selection on.
    """

    kind = "alista"

    def __init__(self, n: int, d: int, layers: int = LAYERS, support: bool = True) -> None:
        super().__init__(n, d, layers)
        self.support = support
        self.gamma = nn.ParameterList(nn.Parameter(torch.zeros(())) for _ in range(layers))
        self.theta = nn.ParameterList(nn.Parameter(torch.zeros(())) for _ in range(layers))

    def init_from(self, x0: torch.Tensor, lam: float) -> ALISTANet:
        """gamma_k = 1 / ||W^T X0||_2 (a convergent step on X0), th_k = lam gamma_k."""
        x0 = x0.double()
        gamma = 1 / torch.linalg.matrix_norm(alista_weight(x0).T @ x0, ord=2)
        with torch.no_grad():
            for g, th in zip(self.gamma, self.theta):
                g.fill_(gamma)
                th.fill_(lam * gamma)
        return self

    def init_open_l2o(self, x0: torch.Tensor, lam: float) -> ALISTANet:
        """Open-L2O's start: gamma_k = 1, th_k = lam / L~ (ISTA's threshold)."""
        th = lam / lipschitz(x0.double())
        with torch.no_grad():
            for g, t in zip(self.gamma, self.theta):
                g.fill_(1.0)
                t.fill_(th)
        return self

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, depth: int | None = None, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        """As `UnrolledNet.forward`; `weight`, when given, is `alista_weight(x)` computed beforehand (of the
        same shape as x)."""
        w = alista_weight(x) if weight is None else weight
        b = y.new_zeros(y.shape[0], self.d)
        codes = []
        for k in range(depth or self.depth):
            v = b - self.gamma[k] * back_project(w, measure(x, b) - y)
            b = soft_ss(v, self.theta[k], ss_count(k, self.d)) if self.support else soft(v, self.theta[k])
            codes.append(b)
        return torch.stack(codes, 1)

    def stage_params(self, k: int) -> list[nn.Parameter]:
        return [self.gamma[k], self.theta[k]]


NETS: dict[str, type[UnrolledNet]] = {c.kind: c for c in (LISTANet, LISTACPNet, ALISTANet)}


def checkpoint_path(kind: str) -> Path:
    """Where the packaged checkpoint of network `kind` lives."""
    return CHECKPOINTS / f"{kind}.safetensors"


def load_net(path: str | Path) -> UnrolledNet:
    """A network from a safetensors checkpoint written by `train_lista` (metadata: kind, n, d, layers)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found; train it with python -m iclbench.baselines.train_lista")
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    missing = [k for k in ("kind", "n", "d", "layers") if k not in meta]
    if missing or meta["kind"] not in NETS:
        raise ValueError(f"{path}: not a learned-ISTA checkpoint (metadata {meta}, missing {missing})")
    cls = NETS[meta["kind"]]
    extra = {"support": meta["support"] == "true"} if cls is ALISTANet else {}
    net = cls(int(meta["n"]), int(meta["d"]), int(meta["layers"]), **extra)
    net.load_state_dict(tensors)
    net.meta = meta
    return net.eval()


class _Learned(Model):
    """A trained unrolled network scored on the lasso family; codes are returned as `w`."""

    kind = ""
    net: UnrolledNet | None = None

    def _net(self) -> UnrolledNet:
        if self.net is None:
            self.checkpoint = str(checkpoint_path(self.kind))
            self.net = load_net(self.checkpoint)
        return self.net

    def setup(self, device: torch.device) -> None:
        self._net().to(device)

    def supports(self, task: TaskSpec) -> bool:
        return task.family == "lasso" and task.d == self._net().d

    def supports_length(self, task: TaskSpec, n: int) -> bool:
        return n == self._net().n

    @torch.no_grad()
    def predict(self, batch: Batch) -> Prediction:
        net = self._net().to(device=batch.x.device, dtype=batch.x.dtype)
        codes = net(batch.x, batch.y)
        steps = torch.einsum("bqd,bkd->bkq", batch.x_query, codes)
        return Prediction(steps[:, -1], steps, codes[:, -1])


class LISTA(_Learned):
    """LISTA (Gregor & LeCun 2010), 16 layers trained on the first 10 rows of X0; reads only y."""

    name = "lista"
    kind = "lista"


class LISTACP(_Learned):
    """LISTA-CP (Chen et al. 2018), 16 layers trained on the first 10 rows of X0.

    The residual y - X b uses the prompt's own X (the problem's known matrix, as in
    Chen et al.); the learned W_k are tied to X0, so the model only applies at n = 10.
    """

    name = "lista-cp"
    kind = "lista-cp"


class ALISTA(_Learned):
    """ALISTA with support selection (Liu et al. 2019), W recomputed from every prompt's X.

    Only n = 10 is supported: the learned steps and thresholds are calibrated to the
    coherence of W^T X at n / d = 1/2. At n = 5 the iteration diverges, and for n >= d,
    where W = pinv(X)^T, the thresholds do not match the noise that W amplifies (badly
    so at n = d); other lasso matrices of the trained size are fine.
    """

    name = "alista"
    kind = "alista"
