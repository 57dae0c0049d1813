"""CPU threads of a run: one by default in the model's worker and in the harness, `--threads N` to change it,
recorded in the results; the harness's thread pools are given back after the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from threadpoolctl import threadpool_info

from iclbench.cli import main
from iclbench.evaluation import thread_limit

RUN = ["run", "--model", "ridge", "--tasks", "linear/kappa1", "--prompts", "16", "--quiet"]


@pytest.mark.parametrize(("flags", "threads"), [([], 1), (["--threads", "2"], 2)])
def test_the_worker_computes_with_the_threads_asked(tmp_path: Path, flags: list[str], threads: int) -> None:
    assert main([*RUN, *flags, "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "ridge.json").read_text())
    assert doc["run"]["threads"] == threads  # as the worker's torch.get_num_threads() reported it


def test_a_bad_thread_count_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*RUN, "--threads", "many"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(
        "argument --threads: expected a number of threads (0 for torch's default), got many"
    )


def test_the_harness_threads_are_held_then_given_back() -> None:
    before = torch.get_num_threads(), [p["num_threads"] for p in threadpool_info()]
    with thread_limit(1):
        assert torch.get_num_threads() == 1
        assert all(p["num_threads"] == 1 for p in threadpool_info())
    assert (torch.get_num_threads(), [p["num_threads"] for p in threadpool_info()]) == before
    with thread_limit(0):  # 0: as they are
        assert torch.get_num_threads() == before[0]
