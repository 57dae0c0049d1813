"""Suite v1: the task specs and the SHA-256 fingerprints of their evaluation sets."""

from __future__ import annotations

from iclbench.tasks.spec import TaskSpec

SUITE_VERSION = "v1"

LINEAR_LENGTHS = (5, 10, 20, 40, 80)
LASSO_LENGTHS = (5, 10, 15, 20, 40)
KERNEL_LENGTHS = (4, 8, 14, 28)
LASSO_MATRIX_SEED = 20240
LOGISTIC_MU = 0.01


def _linear(name: str, seed: int, kappa: float, noise: float = 0.0) -> TaskSpec:
    return TaskSpec(name, "linear", 20, LINEAR_LENGTHS, 20, noise=noise, seed=seed, params={"kappa": kappa})


def _logistic(name: str, seed: int, kappa: float) -> TaskSpec:
    return TaskSpec(name, "logistic", 10, LINEAR_LENGTHS, 20, seed=seed, params={"kappa": kappa, "mu": LOGISTIC_MU})


def _lasso(name: str, seed: int, mode: str, shift: float = 0.0) -> TaskSpec:
    params = {"mode": mode, "shift": shift, "k": 3, "matrix_seed": LASSO_MATRIX_SEED}
    return TaskSpec(name, "lasso", 20, LASSO_LENGTHS, 10, noise=0.05, seed=seed, params=params)


def _kernel(name: str, seed: int, kernel: str) -> TaskSpec:
    return TaskSpec(name, "kernel", 5, KERNEL_LENGTHS, 14, seed=seed, params={"kernel": kernel})


SPECS: tuple[TaskSpec, ...] = (
    _linear("linear/kappa1", 1001, 1),
    _linear("linear/kappa10", 1002, 10),
    _linear("linear/kappa100", 1003, 100),
    _linear("linear/noisy", 1004, 1, noise=0.5),
    _logistic("logistic/kappa1", 2001, 1),
    _logistic("logistic/kappa10", 2002, 10),
    _lasso("lasso/fixed", 3001, "fixed"),
    _lasso("lasso/shift0.1", 3002, "shift", 0.1),
    _lasso("lasso/shift0.5", 3003, "shift", 0.5),
    _lasso("lasso/random", 3004, "random"),
    _kernel("kernel/linear", 4001, "linear"),
    _kernel("kernel/exp", 4002, "exp"),
    _kernel("kernel/relu", 4003, "relu"),
)

FINGERPRINTS: dict[str, str] = {
    "linear/kappa1": "6356f4e8bb8f14b49f4f622b2634331ec764ea9da00c215c614a9543ed6a1e9a",
    "linear/kappa10": "472366e8c8b709bd50e3573df451eb27310aa36396e179de5dc3535d23b73a3e",
    "linear/kappa100": "95f14d51a5c7ff1fb0c48f966544723a689e8c334fc5276a3c920205f8108350",
    "linear/noisy": "9668a9ef774950f97f93f6bec9d03ed93e18fd3bd63960aff0f86863acff5b85",
    "logistic/kappa1": "e3e127250c08df1e65b66e3b8e89ba38c0ae18ae212a8a568ba2749ffd699fec",
    "logistic/kappa10": "6bb39686b9c3fcaeb7ffe6bd956abad8f285fad9c3444f515e04c15bc75b3006",
    "lasso/fixed": "d8e0846ceeae12008e393b31b62e2e646482674cfce80b0c9165d70503b9d751",
    "lasso/shift0.1": "6b977f36a13315b77363cafda1b74f4d504c165d4860217c72d83d781ad2f68a",
    "lasso/shift0.5": "b2b3cef1b4472433ece37c285659ffadff9fcb2639090ca0437311f0584fb158",
    "lasso/random": "28b769d5f6991eace60c509a392159b7543a5cff9d215c6a0cae268e898f868a",
    "kernel/linear": "27308c699f5d5f71b62d31f0e41dffea987fb1bfebd056bb84a49e41faa0cdef",
    "kernel/exp": "13b743fbaa61fe7e2412dbf1d5dcfa456ee3fd0d1c76239d163a69ee04d8ce20",
    "kernel/relu": "8c4b90c2b432fbd5665ea52669dfaf9d49ccfe2cea270805217cc0dc098c26f1",
}
