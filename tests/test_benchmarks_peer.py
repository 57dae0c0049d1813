"""`python benchmarks/peer_harness.py` end to end at a tiny size: both sides predict the same numbers from the
same exported data, and every timing and ratio is printed (none is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "peer_harness.py"


@pytest.mark.usefixtures("session_fingerprints")  # the export is written from the session's cache
def test_the_peer_harness_runs_at_a_tiny_size() -> None:
    cmd = [sys.executable, str(SCRIPT), "--cases", "ridge,ols-garg", "--prompts", "4", "--repeats", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {line.split()[0]: line for line in proc.stdout.splitlines() if line.split()[:1] in (["ridge"], ["ols-garg"])}
    assert set(rows) == {"ridge", "ols-garg"}
    for row in rows.values():
        *_, compute, peer_e2e, icl_e2e, e2e, peer_db, slash, icl_db = row.split()
        assert compute.endswith("x") and e2e.endswith("x") and slash == "/"
        assert float(peer_e2e) > 0 and float(icl_e2e) > 0
        rows[row.split()[0]] = (float(peer_db), float(icl_db))
    assert abs(rows["ridge"][0] - rows["ridge"][1]) < 0.01  # sklearn's Ridge and iclbench's ridge: one solution
    assert max(rows["ols-garg"]) < -100  # least squares on noiseless prompts, n > d: both exact
    assert "load at the start" in proc.stdout and "load at the end" in proc.stdout
