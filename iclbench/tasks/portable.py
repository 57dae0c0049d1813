"""Float64 arithmetic that gives the same bits on every IEEE-754 machine.

Evaluation data are generated with these functions only, on NumPy arrays: elementwise
+, -, *, / and sqrt (which IEEE 754 rounds exactly, whatever the CPU, SIMD width or
library), every sum in a fixed order written out here, and `exp` and `arccos` built from
those operations. Nothing goes through BLAS, LAPACK or a vendor maths library, so the
data cannot depend on MKL or OpenBLAS, their code paths, thread counts or NumPy's SIMD
dispatch. Loops run over the small contracted axis (d or n), never over prompts.
"""

from __future__ import annotations

import numpy as np

_LN2_HI = 6.93147180369123816490e-01  # ln 2 split so that k * _LN2_HI is exact for |k| < 2^20
_LN2_LO = 1.90821492927058770002e-10
_EXP_TERMS = 14  # Taylor terms of exp on |r| <= ln(2) / 2: the remainder is below 1e-17
_ASIN_TERMS = 28  # Taylor terms of asin on |z| <= 1/2: the remainder is below 1e-19


def dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """sum_k a[..., k] * b[..., k], summed in order of k."""
    out = a[..., 0] * b[..., 0]
    for k in range(1, a.shape[-1]):
        out = out + a[..., k] * b[..., k]
    return out


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b for (..., m, k) and (..., k, n) arrays, each entry summed in order of k (in place: one product
    buffer, the same operations)."""
    out = a[..., :, 0:1] * b[..., 0:1, :]
    term = np.empty_like(out)
    for k in range(1, a.shape[-1]):
        np.multiply(a[..., :, k : k + 1], b[..., k : k + 1, :], out=term)
        out += term
    return out


def exp(x: np.ndarray) -> np.ndarray:
    """e^x to about one ulp: x = k ln 2 + r, a Taylor polynomial of e^r, then an exact scaling by 2^k."""
    x = np.clip(x, -745.0, 709.0)
    k = np.rint(x / (_LN2_HI + _LN2_LO))
    r = (x - k * _LN2_HI) - k * _LN2_LO
    p = np.ones_like(r)
    for n in range(_EXP_TERMS, 0, -1):  # Horner: 1 + r/1 (1 + r/2 (1 + ...))
        p = 1.0 + r * p / n
    return np.ldexp(p, k.astype(np.int32))


def _asin_small(z: np.ndarray) -> np.ndarray:
    """asin(z) for |z| <= 1/2 by its Taylor series z sum_n c_n z^(2n), c_n = (2n)! / (4^n (n!)^2 (2n + 1))."""
    coef = [1.0]
    for n in range(1, _ASIN_TERMS):
        coef.append(coef[-1] * (2 * n - 1) ** 2 / ((2 * n) * (2 * n + 1)))
    z2 = z * z
    p = np.full_like(z, coef[-1])
    for c in reversed(coef[:-1]):
        p = c + z2 * p
    return z * p


def arccos(x: np.ndarray) -> np.ndarray:
    """arccos(x) for x in [-1, 1] to a few ulps, from asin on |z| <= 1/2 (half-angle formulas outside)."""
    x = np.clip(x, -1.0, 1.0)
    mid = np.pi / 2 - _asin_small(np.clip(x, -0.5, 0.5))
    hi = 2.0 * _asin_small(np.sqrt((1.0 - np.clip(x, 0.5, 1.0)) / 2.0))
    lo = np.pi - 2.0 * _asin_small(np.sqrt((1.0 + np.clip(x, -1.0, -0.5)) / 2.0))
    return np.where(x > 0.5, hi, np.where(x < -0.5, lo, mid))


def cholesky(a: np.ndarray) -> np.ndarray:
    """The lower Cholesky factor of symmetric positive definite (..., n, n) matrices (unique)."""
    n = a.shape[-1]
    low = np.zeros_like(a)
    for j in range(n):
        head = low[..., j, :j]
        diag = a[..., j, j] - dot(head, head) if j else a[..., j, j]
        if not np.all(diag > 0):
            raise ValueError("cholesky: matrix is not positive definite")
        low[..., j, j] = np.sqrt(diag)
        below = a[..., j + 1 :, j] - dot(low[..., j + 1 :, :j], head[..., None, :]) if j else a[..., j + 1 :, j]
        low[..., j + 1 :, j] = below / low[..., j, j, None]
    return low


def solve_spd(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """x with a x = b for symmetric positive definite (..., n, n) `a` and (..., n) `b`, by Cholesky."""
    low = cholesky(a)
    n = a.shape[-1]
    z = np.zeros_like(b)
    for i in range(n):  # forward substitution: low z = b
        z[..., i] = (b[..., i] - dot(low[..., i, :i], z[..., :i]) if i else b[..., i]) / low[..., i, i]
    x = np.zeros_like(b)
    for i in reversed(range(n)):  # back substitution: low^T x = z
        rest = dot(low[..., i + 1 :, i], x[..., i + 1 :]) if i < n - 1 else 0.0
        x[..., i] = (z[..., i] - rest) / low[..., i, i]
    return x


def haar(g: np.ndarray) -> np.ndarray:
    """The Q factor, with positive diagonal R, of square Gaussian matrices g (..., d, d): Haar-distributed.

    Classical Gram-Schmidt with one re-orthogonalisation pass (orthogonal to round-off);
    the factorisation with positive diagonal R is unique, so Q is a function of g alone.
    """
    d = g.shape[-1]
    q = np.zeros_like(g)
    for j in range(d):
        v = g[..., :, j]
        for _ in range(2):
            if j:
                r = dot(np.swapaxes(q[..., :, :j], -1, -2), v[..., None, :])  # (..., j): q_i . v
                for i in range(j):
                    v = v - r[..., i : i + 1] * q[..., :, i]
        q[..., :, j] = v / np.sqrt(dot(v, v))[..., None]
    return q
