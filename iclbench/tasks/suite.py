"""Suite v4: the task specs and the SHA-256 fingerprints of their evaluation sets."""

from __future__ import annotations

from iclbench.tasks.spec import TaskSpec

SUITE_VERSION = "v4"

LINEAR_LENGTHS = (5, 10, 20, 40, 80)
LASSO_LENGTHS = (5, 10, 15, 20, 40)
KERNEL_LENGTHS = (4, 8, 14, 28)
LASSO_MATRIX_SEED = 20240
LOGISTIC_MU = 0.01
KERNEL_JITTER = 1e-8
AR_LENGTHS = (5, 10, 20, 30, 50)
AR_D = 10
GARG_SHORT_LENGTHS = (5, 10, 15, 20, 30, 40)
GARG_LONG_LENGTHS = (10, 25, 50, 75, 100)
SELECT_NOISE_LEVELS = (0.1, 0.5, 1.0)


def _linear(name: str, seed: int, kappa: float, noise: float = 0.0) -> TaskSpec:
    return TaskSpec(name, "linear", 20, LINEAR_LENGTHS, 40, noise=noise, seed=seed, params={"kappa": kappa})


def _logistic(name: str, seed: int, kappa: float) -> TaskSpec:
    return TaskSpec(name, "logistic", 10, LINEAR_LENGTHS, 20, seed=seed, params={"kappa": kappa, "mu": LOGISTIC_MU})


def _lasso(name: str, seed: int, mode: str, shift: float = 0.0) -> TaskSpec:
    params = {"mode": mode, "shift": shift, "k": 3, "matrix_seed": LASSO_MATRIX_SEED}
    return TaskSpec(name, "lasso", 20, LASSO_LENGTHS, 10, noise=0.05, seed=seed, params=params)


def _kernel(name: str, seed: int, kernel: str) -> TaskSpec:
    params = {"kernel": kernel, "jitter": 0.0 if kernel == "linear" else KERNEL_JITTER}
    return TaskSpec(name, "kernel", 5, KERNEL_LENGTHS, 14, seed=seed, params=params)


def _ar(name: str, seed: int, init: str, noise: float = 0.0) -> TaskSpec:
    return TaskSpec(name, "ar", AR_D, AR_LENGTHS, 20, n_queries=1, noise=noise, seed=seed, params={"init": init}, m=AR_D)


def _select(name: str, seed: int, d: int, nominal: int, noise: float = 0.0, **params: object) -> TaskSpec:
    return TaskSpec(name, "select", d, LINEAR_LENGTHS, nominal, noise=noise, seed=seed, params=params)


def _garg(name: str, seed: int, lengths: tuple[int, ...], nominal: int, **params: object) -> TaskSpec:
    return TaskSpec(name, "garg", 20, lengths, nominal, seed=seed, params={"function": name.split("/")[1], **params})


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
    _ar("ar/uniform", 5001, "uniform"),
    _ar("ar/gaussian", 5002, "gaussian"),
    _ar("ar/noisy", 5003, "uniform", noise=0.01),
    _select("select/noise-mix", 6001, 20, 40, mode="noise", noise_levels=SELECT_NOISE_LEVELS),
    _select("select/reg-cls", 6002, 10, 20, noise=1.0, mode="reg-cls", classification=0.5, mu=LOGISTIC_MU),
    _garg("garg/sparse-linear", 7001, GARG_SHORT_LENGTHS, 10, k=3),
    _garg("garg/decision-tree", 7002, GARG_LONG_LENGTHS, 100, depth=4),
    _garg("garg/relu2nn", 7003, GARG_LONG_LENGTHS, 100, hidden=100),
    _garg("garg/quadratic", 7004, GARG_SHORT_LENGTHS, 40),
)

FINGERPRINTS: dict[str, str] = {
    "linear/kappa1": "680d1fcfd471a69a7fe23ba742224d55bcba316286d5fcdeff986083bb3a41ca",
    "linear/kappa10": "978f95a61059e58455141821585e0183f67d13b73dedd9a06655e3009cc5f6e2",
    "linear/kappa100": "8584128965e02b3e1ef8772643adfeecdb98df10a9f82713bf6d4410eea05fa6",
    "linear/noisy": "cdc78e99ccf1066c2957b28ed3419a174079838f060b597e30959973830bb3ec",
    "logistic/kappa1": "5cb36c41b07f59281d5b2402e3e00e69a0451d882516876aa9ae1903a6097a03",
    "logistic/kappa10": "0f5deccfbe5b959ee503ff0fd409e4a79d84ba5cdefce89ff24cf57127e9c755",
    "lasso/fixed": "d8e0846ceeae12008e393b31b62e2e646482674cfce80b0c9165d70503b9d751",
    "lasso/shift0.1": "6b977f36a13315b77363cafda1b74f4d504c165d4860217c72d83d781ad2f68a",
    "lasso/shift0.5": "b2b3cef1b4472433ece37c285659ffadff9fcb2639090ca0437311f0584fb158",
    "lasso/random": "28b769d5f6991eace60c509a392159b7543a5cff9d215c6a0cae268e898f868a",
    "kernel/linear": "48c90762e2ba14eab53acf3d4b74391e6fd91320a94929fa9b8be7b23c20a2e0",
    "kernel/exp": "c4860cf4b6c2b701a1e133710c022179dcbecb556d6a77ed894b847eb7998662",
    "kernel/relu": "0be30075f77f6f722d1c2c6c7451cef33946f85bf5e830a39969f10bdcc451b2",
    "ar/uniform": "0b3f82c266bbb9a230182c9921b1e4f9cf3aa8f1304f371b5e42e6343c023845",
    "ar/gaussian": "649bc4f18bd94f6fe7b5ac9ec387204334388f03ed6b90748fbaea7edfd76a18",
    "ar/noisy": "e50996d3bb0eed1e362a0ccc54ea26a267fd2bcb660526af367c888f52879280",
    "select/noise-mix": "743f37cd2ef2cf8972080eba0780333c7a1851b07e4c064f92ecfce4b64a37b2",
    "select/reg-cls": "63a9f1e9dcce8d3c63ac9b62888ffe0a23ee4ad01c3710f01716212a2c75f436",
    "garg/sparse-linear": "b66cb9322dbd7f797c17ccd990536d169a40739318f32b1b1010dafc82c66cf8",
    "garg/decision-tree": "e682e4b43293b1c6f95554057b128ca3f03b574cfd2b71e961debce079ebbedd",
    "garg/relu2nn": "e7993f00b999fe21147c8d2359cea9383d5e696a72d3ca3f30e920566c639768",
    "garg/quadratic": "283eca225923a51d58803c8af5c4f88f4ad55d8567bb3594de4ed24de2901219",
}
