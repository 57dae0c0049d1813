"""Speed of the suite itself: generating every evaluation set, and a full run of exact ridge.

Timings are reported by pytest-benchmark (`pytest tests/test_benchmarks_suite.py`); nothing here
asserts on time.
"""

from __future__ import annotations

from iclbench import cache, tasks
from iclbench.plugins import load_model
from iclbench.runner import RunConfig, run


def test_generate_every_evaluation_set(benchmark) -> None:
    fingerprints = benchmark.pedantic(
        lambda: {name: t.generate().fingerprint() for name, t in tasks.TASKS.items()}, rounds=2, iterations=1
    )
    assert fingerprints == tasks.FINGERPRINTS


def test_load_every_evaluation_set_from_the_disk_cache(benchmark) -> None:
    for task in tasks.TASKS.values():
        cache.eval_set(task)  # written to the cache folder

    def load_all() -> dict[str, str]:
        cache.clear_memory()
        return {name: cache.eval_set(t)[1] for name, t in tasks.TASKS.items()}

    assert benchmark.pedantic(load_all, rounds=3, iterations=1) == tasks.FINGERPRINTS


def test_ridge_on_the_whole_suite(benchmark) -> None:
    loaded = load_model("ridge")
    for task in tasks.TASKS.values():
        cache.eval_set(task)
    doc = benchmark.pedantic(lambda: run(loaded, tasks.select(), RunConfig(), progress=False), rounds=2, iterations=1)
    statuses = {name: entry["status"] for name, entry in doc["tasks"].items()}
    assert set(statuses.values()) == {"ok", "unsupported"}
    assert [n for n, s in statuses.items() if s == "unsupported"] == ["logistic/kappa1", "logistic/kappa10"]
