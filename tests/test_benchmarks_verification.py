"""`benchmarks/verification_false_alarms.py`: its cheats are the errors they claim to be, and it runs end to end
on one model, one task and one seed."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

from iclbench.cache import eval_set
from iclbench.samples import task_tensors
from iclbench.tasks import get

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "verification_false_alarms.py"
TEMPLATE = str(Path(__file__).resolve().parents[1] / "examples" / "template_model.py")


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    """The script as a module (registered while it is used: its dataclass needs that)."""
    spec = importlib.util.spec_from_file_location("verification_false_alarms", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def test_the_cheats_errors(bench: ModuleType) -> None:
    target = eval_set(get("kernel/linear"))[0].targets[14]
    y = target + 0.3 * torch.randn(target.shape, generator=torch.Generator().manual_seed(0))
    honest = task_tensors("kernel/linear", 14, y, target)
    pub = {"y": honest["kernel/linear/14/y"], "rel_err": honest["kernel/linear/14/rel_err"],
           "target_sq": honest["kernel/linear/14/target_sq"]}
    got = bench.cheats("kernel/linear/14", pub)
    rel = pub["rel_err"]
    worst = (rel * pub["target_sq"]).argsort(descending=True)
    assert not got["look-up"][0].any() and got["look-up + huge fresh"][1] and not got["look-up"][1]
    for a in bench.BLENDS:  # the blend is computed in float32, as a model would
        torch.testing.assert_close(got[f"blend {a:g}"][0], rel * (1 - a) ** 2, rtol=1e-5, atol=0)
    for j in bench.BAD:
        bad = got[f"look-up + {j} bad"][0]
        torch.testing.assert_close(bad[worst[:j]], 100 * rel[worst[:j]], rtol=1e-5, atol=0)
        assert int((bad > 0).sum()) == j
    for j in bench.TAIL_FIXES:
        fixed = got[f"tail look-up {j}"][0]
        assert not fixed[worst[:j]].any() and torch.equal(fixed[worst[j:]], rel[worst[j:]])
    planted, j = got["tail look-up 256 + 1 planted"][0], 256
    assert not planted[worst[:j]].any() and planted[worst[j]] == 100 * rel[worst[j]]
    assert torch.equal(planted[worst[j + 1:]], rel[worst[j + 1:]])


def test_the_previous_rule_is_rescued_by_one_huge_fresh_error(bench: ModuleType) -> None:
    look_up = [-300.0, -300.0, -300.0]
    assert bench.old_rule(look_up, [0.0, -0.5, 0.5])
    assert not bench.old_rule(look_up, [200.0, -0.5, 210.0])  # the fresh interval's lower half spans 200 dB


def test_the_report_runs_on_one_model_one_task_and_one_seed(tmp_path: Path) -> None:
    cmd = [sys.executable, str(SCRIPT), "--models", TEMPLATE, "--tasks", "kernel/linear", "--seeds", "1",
           "--first-seed", "20261205", "--keep", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert next(line for line in lines if line.startswith("template_model ")).split()[1:4] == ["4", "0/1", "0/1"]
    look_up = next(line for line in lines if line.startswith("look-up  "))
    assert look_up.split()[1:3] == ["4", "100.0%"]  # 4 lengths x 1 seed, every one flagged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["template_model--20261205.safetensors",
                                                          "template_model--public.safetensors"]
