"""`benchmarks/training_throughput.py` end to end at a tiny size (the timings are printed, never asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "training_throughput.py"


def test_the_throughput_report_runs_at_a_tiny_size() -> None:
    """Every uncompiled combination on both architectures and two batch sizes (compiling takes minutes on a
    small CPU; `--combos` with a bad name is refused in one line)."""
    combos = ["fp32", "fp32+fused", "bf16", "bf16+fused"]
    cmd = [sys.executable, str(SCRIPT), "--arch", "gpt2", "lsa", "--width", "8", "--layers", "1", "--heads", "2",
           "--n", "5", "--batch-sizes", "2", "4", "--steps", "2", "--warmup", "1", "--threads", "1",
           "--combos", *combos]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if line.startswith(("gpt2 ", "lsa "))]
    for arch in ("gpt2", "lsa"):
        for batch in ("2", "4"):
            mine = [r for r in rows if r[:2] == [arch, batch]]
            assert [r[2:-5] for r in mine] == [["plain", "fp32", "eager", "loop"], *[["trainer", c] for c in combos]]
            for r in mine:
                ms, per_s, examples, ratio = map(float, r[-5:-1])
                assert ms > 0 and per_s > 0 and examples > 0 and ratio > 0
            assert float(mine[0][-2]) == 1.0
    bad = subprocess.run([*cmd[:2], "--combos", "fp16"], capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.strip().splitlines() == [
        "--combos: 'fp16' is not precision[+compile][+fused], e.g. bf16+compile"]
