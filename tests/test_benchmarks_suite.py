"""Speed of the suite itself: generating every evaluation set, and a full run of exact ridge.

Timings are reported by pytest-benchmark (`pytest tests/test_benchmarks_suite.py --benchmark-enable`);
nothing here asserts on time. The default run checks loading every set and a ridge run on `SAMPLE`
prompts per task and generating two sets in this process; generating every set is checked there by
`test_fingerprints.py`.
"""

from __future__ import annotations

from iclbench import cache, tasks
from iclbench.plugins import load_model
from iclbench.runner import RunConfig, run

SAMPLE = 64
"""Prompts per task of the ridge run in the default run (every prompt when timed)."""


def test_generate_every_evaluation_set(benchmark, timed: bool) -> None:
    """Timed: every set, twice. Untimed: two sets in this process (test_fingerprints.py checks every set,
    generated once per session in a separate process)."""
    chosen = tasks.TASKS if timed else {name: tasks.TASKS[name] for name in ("linear/kappa1", "ar/uniform")}
    fingerprints = benchmark.pedantic(
        lambda: {name: t.generate().fingerprint() for name, t in chosen.items()}, rounds=2 if timed else 1, iterations=1
    )
    assert fingerprints == {name: tasks.FINGERPRINTS[name] for name in chosen}


def test_load_every_evaluation_set_from_the_disk_cache(benchmark, session_fingerprints: dict[str, str]) -> None:
    assert session_fingerprints == tasks.FINGERPRINTS  # every set generated and written to the cache folder

    def load_all() -> dict[str, str]:
        cache.clear_memory()
        return {name: cache.eval_set(t)[1] for name, t in tasks.TASKS.items()}

    assert benchmark.pedantic(load_all, rounds=3, iterations=1) == tasks.FINGERPRINTS


def test_ridge_on_the_whole_suite(benchmark, timed: bool, session_fingerprints: dict[str, str]) -> None:
    loaded = load_model("ridge")
    config = RunConfig(prompts=None if timed else SAMPLE)
    doc = benchmark.pedantic(lambda: run(loaded, tasks.select(), config, progress=False), rounds=2, iterations=1)
    statuses = {name: entry["status"] for name, entry in doc["tasks"].items()}
    assert set(statuses.values()) == {"ok", "unsupported"}
    unsupported = ["logistic/kappa1", "logistic/kappa10", "select/noise-mix", "select/reg-cls"]
    assert [n for n, s in statuses.items() if s == "unsupported"] == unsupported
