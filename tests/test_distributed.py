"""torchrun on the CPU (gloo, 2 processes): data-parallel training and its resume, sharded runs equal to
single-process ones, and a rank that dies losing none of the others' work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from iclbench import distributed, evaluate, results
from iclbench.cli import main
from iclbench import samples as samples_file
from iclbench.models.weights import load_weights
from iclbench.runner import partial_path
from iclbench.tasks import TASKS, get
from iclbench.training import TrainConfig, TrainError, compute_loss, make_model, train

from fixtures.plugins import plugin

pytestmark = pytest.mark.usefixtures("one_thread")

TRAIN = ["--task", "linear", "--arch", "gpt2", "--layers", "2", "--heads", "2", "--width", "16", "--n-min", "5",
         "--n-max", "20", "--curriculum", "4", "--batch-size", "8", "--val-prompts", "16", "--val-every", "2", "--quiet"]


def torchrun(nproc: int, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`torchrun --standalone --nproc-per-node NPROC -m iclbench ARGS` (one node, a free port)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           "-m", "iclbench", *args]
    # one thread per process, as in these tests' own process: CPU arithmetic may depend on the thread count
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def same_tensors(a: Path, b: Path) -> bool:
    ta, tb = tensors(a), tensors(b)
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def test_assignment_is_static_balanced_and_covers_every_task() -> None:
    costs = [distributed.cost(t, None) for t in TASKS.values()]
    for ranks in (1, 2, 3, 5, 20):
        shares = distributed.assign(costs, ranks)
        assert shares == distributed.assign(costs, ranks) and len(shares) == ranks
        assert sorted(i for share in shares for i in share) == list(range(len(costs)))
        loads = [sum(costs[i] for i in share) for share in shares]
        assert max(loads) - min(loads) <= max(costs)  # greedy longest-first: within one task of even
    assert distributed.assign([5, 1, 1, 1, 1, 1], 2) == [[0], [1, 2, 3, 4, 5]]
    assert distributed.cost(get("linear/kappa1"), 64) == 64 * (5 + 10 + 20 + 40 + 80) * 20


@pytest.mark.parametrize("arch", ["lsa", "gpt2"])
def test_single_process_training_is_the_plain_adam_loop(tmp_path: Path, arch: str) -> None:
    """Outside torchrun, `train` without throughput switches is plain fp32 eager Adam on the training stream of
    `seed`: every step's loss is that of this loop, and so are the final weights, bit for bit."""
    cfg = TrainConfig(tasks=("linear",), arch=arch, layers=2, heads=2, width=16 if arch == "gpt2" else None, steps=5,
                      n_min=5, n_max=20, curriculum=3, batch_size=8, val_prompts=8, val_every=1, lr=0.01)
    log = train(cfg, tmp_path / "run", progress=False)
    tasks = [get(n) for n in ("linear/kappa1", "linear/kappa10", "linear/kappa100", "linear/noisy")]
    model = make_model(cfg, tasks)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    schedule, gens = np.random.Generator(np.random.PCG64(cfg.seed)), [t.train_generator(cfg.seed) for t in tasks]
    losses = []
    for step in range(cfg.steps):
        hi = 5 + round(15 * min(1.0, step / 3))
        which = int(schedule.integers(4))
        sample = tasks[which].sample(8, int(schedule.integers(5, hi + 1)), gens[which])
        loss = compute_loss(model(sample.batch.x, sample.batch.y, sample.batch.x_query)[1], sample, "label", False)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        opt.step()
        losses.append(round(float(loss.detach()), 6))
    assert [v["train_loss"] for v in log["validations"]] == losses
    assert log["world_size"] == 1 and log["effective_batch_size"] == 8
    trained = tensors(tmp_path / "run" / "model.safetensors")
    assert all(torch.equal(trained[k], v) for k, v in model.state_dict().items())


def test_torchrun_one_process_trains_as_a_single_process(tmp_path: Path) -> None:
    single = train(TrainConfig(tasks=("linear",), arch="gpt2", layers=2, heads=2, width=16, n_min=5, n_max=20,
                               curriculum=4, batch_size=8, val_prompts=16, val_every=2, steps=4),
                   tmp_path / "single", progress=False)
    proc = torchrun(1, "train", *TRAIN, "--steps", "4", "--out", "one", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for name in ("model.safetensors", "state.safetensors"):
        assert same_tensors(tmp_path / "single" / name, tmp_path / "one" / name), name
    assert json.loads((tmp_path / "one" / "log.json").read_text())["validations"] == single["validations"]


def test_two_process_early_stopping_stops_every_rank(tmp_path: Path) -> None:
    """Rank 0 alone validates and decides; the others stop with it (at lr 1e-9 no validation improves on the first,
    to the 0.001 dB the log keeps), and a resumed stopped run stops at once on every rank."""
    args = ["train", *TRAIN, "--steps", "8", "--lr", "1e-9", "--patience", "1", "--out", "es"]
    proc = torchrun(2, *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    log = json.loads((tmp_path / "es" / "log.json").read_text())
    assert [v["step"] for v in log["validations"]] == [2, 4] and log["stopped_early"] == 4
    assert log["final"]["step"] == 2 and load_weights(tmp_path / "es" / "model.safetensors")[1]["steps"] == 2
    again = torchrun(2, *args, "--resume", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "es" / "log.json").read_text())["validations"] == log["validations"]


def test_two_process_training_writes_a_valid_run_and_resumes_bit_identically(tmp_path: Path) -> None:
    whole = torchrun(2, "train", *TRAIN, "--steps", "4", "--out", "whole", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr
    assert whole.stdout.count("trained gpt2") == 1  # rank 0 alone reports
    log = json.loads((tmp_path / "whole" / "log.json").read_text())
    assert log["world_size"] == 2 and log["effective_batch_size"] == 16
    assert [v["step"] for v in log["validations"]] == [2, 4] and log["final"]["step"] == 4
    assert all(np.isfinite(v["train_loss"]) for v in log["validations"])
    model, info = load_weights(tmp_path / "whole" / "model.safetensors")
    assert info["steps"] == 4 and model.config()["layers"] == 2
    assert sorted(p.name for p in (tmp_path / "whole").iterdir()) == ["log.json", "model.py", "model.safetensors",
                                                                      "state.safetensors"]

    split = torchrun(2, "train", *TRAIN, "--steps", "2", "--out", "split", cwd=tmp_path)
    assert split.returncode == 0, split.stderr
    again = torchrun(2, "train", *TRAIN, "--steps", "4", "--out", "split", "--resume", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    for name in ("model.safetensors", "state.safetensors"):
        assert same_tensors(tmp_path / "whole" / name, tmp_path / "split" / name), name
    resumed = json.loads((tmp_path / "split" / "log.json").read_text())
    assert resumed["validations"] == log["validations"] and resumed["resumed_at"] == [2]

    # two ranks differ from one process (twice the batch) but share its schedule and rank 0's stream
    one = train(TrainConfig(tasks=("linear",), arch="gpt2", layers=2, heads=2, width=16, n_min=5, n_max=20,
                            curriculum=4, batch_size=8, val_prompts=16, val_every=2, steps=4),
                tmp_path / "one", progress=False)
    assert [v["train_loss"] for v in one["validations"]] != [v["train_loss"] for v in log["validations"]]
    with pytest.raises(TrainError, match=r"trained by 2 process\(es\), this run has 1"):
        train(TrainConfig(tasks=("linear",), arch="gpt2", layers=2, heads=2, width=16, n_min=5, n_max=20,
                          curriculum=4, batch_size=8, val_prompts=16, val_every=2, steps=6),
              tmp_path / "whole", resume=True, progress=False)


ONE_STEP = """
import os
from iclbench.api import TaskFailure
class OneStep(Model):
    name = "one-step"
    def supports(self, task):
        return task.family != "logistic"
    def predict(self, batch):
        if "RANK" in os.environ or "MASTER_PORT" in os.environ:
            raise TaskFailure("the model's worker sees torchrun's variables")
        if batch.task.name == "lasso/fixed" and batch.n == 20:
            raise TaskFailure("no lasso at n=20")
        w1 = torch.einsum("bnd,bn->bd", batch.x, batch.y) / batch.n
        w2 = w1 + 0.5 * torch.einsum("bnd,bn->bd", batch.x, batch.y - torch.einsum("bnd,bd->bn", batch.x, w1)) / batch.n
        steps = torch.stack([torch.einsum("bqd,bd->bq", batch.x_query, w) for w in (w1, w2)], 1)
        return Prediction(steps[:, -1], steps)
"""
CHOSEN = ["linear/kappa1", "linear/noisy", "logistic/kappa1", "lasso/fixed", "kernel/exp"]
TIMES = ("started", "finished", "provenance")
"""Fields that differ between any two runs (dates, and the threads torchrun gives each process)."""


def comparable(doc: dict) -> dict:
    """A results document without its timings, dates and provenance."""
    return {**doc, "run": {k: v for k, v in doc["run"].items() if k not in TIMES},
            "tasks": {n: {k: v for k, v in e.items() if k != "seconds"} for n, e in doc["tasks"].items()}}


def test_a_sharded_run_writes_the_single_process_results(tmp_path: Path) -> None:
    model = plugin(tmp_path / "model", ONE_STEP)
    single = evaluate(str(model), CHOSEN, prompts=64, out=tmp_path / "single", log_samples=True, progress=False)
    proc = torchrun(2, "run", "--model", str(model), "--tasks", *CHOSEN, "--prompts", "64", "--log-samples",
                    "--out", "sharded", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr  # lasso/fixed failed, as in one process
    assert proc.stdout.count("results written to") == 1
    assert "[rank 0]" in proc.stderr and "[rank 1]" in proc.stderr
    sharded = results.read(tmp_path / "sharded" / "one-step.json")
    assert [single.status(n) for n in CHOSEN] == ["ok", "ok", "unsupported", "failed", "ok"]
    assert comparable(sharded) == comparable(single.doc)
    assert list(sharded["tasks"]) == list(single.doc["tasks"])
    head_a, by_task_a = samples_file.read(tmp_path / "sharded" / "one-step.samples.safetensors")
    head_b, by_task_b = samples_file.read(single.samples_path)
    assert head_a == head_b and by_task_a.keys() == by_task_b.keys() == {"linear/kappa1", "linear/noisy", "kernel/exp"}
    for name, ts in by_task_a.items():
        assert ts.keys() == by_task_b[name].keys() and all(torch.equal(t, by_task_b[name][k]) for k, t in ts.items())
    assert sorted(p.name for p in (tmp_path / "sharded").iterdir()) == ["one-step.json", "one-step.samples.safetensors"]


DIES = """
import os, signal
from pathlib import Path
class Dies(Model):
    name = "dies"
    def predict(self, batch):
        marker = Path({marker!r})
        if batch.task.name == {victim!r} and not marker.exists():
            marker.touch()
            os.kill(os.getppid(), signal.SIGKILL)  # the rank's harness process, not this worker
        return torch.einsum("bqd,bnd,bn->bq", batch.x_query, batch.x, batch.y) / batch.n
"""


def test_a_rank_that_dies_loses_none_of_the_others_work(tmp_path: Path) -> None:
    chosen = ["linear/kappa1", "linear/kappa10", "linear/kappa100", "linear/noisy"]
    shares = distributed.assign([distributed.cost(get(n), 32) for n in chosen], 2)
    first, victim = (chosen[i] for i in shares[1][:2])  # rank 1 finishes `first`, then dies during `victim`
    model = plugin(tmp_path / "model", DIES.format(marker=str(tmp_path / "died"), victim=victim))
    # without the sandbox: the model must see its harness's process, and leave its marker, to play the crash
    run = ["run", "--model", str(model), "--tasks", *chosen, "--prompts", "32", "--log-samples", "--out", "res",
           "--no-sandbox"]
    crashed = torchrun(2, *run, cwd=tmp_path)
    assert crashed.returncode != 0 and (tmp_path / "died").exists()
    out = tmp_path / "res" / "dies.json"
    part = results.read_journaled(partial_path(out, 1))  # its journal: rank 1 wrote no file
    assert list(part["tasks"]) == [first]
    done = {**(results.read_journaled(out) or {"tasks": {}})["tasks"], **part["tasks"]}

    again = torchrun(2, *run, "--resume", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    final = results.read(out)
    assert all(final["tasks"][n] == entry for n, entry in done.items())  # kept as they were, timings included
    assert any(f"] {first}: " in line and "kept from" in line for line in again.stderr.splitlines())
    assert not list((tmp_path / "res").glob(".*"))  # partial files and lock gone
    single = evaluate(str(model), chosen, prompts=32, out=tmp_path / "single", log_samples=True, progress=False,
                      sandbox=False)
    assert comparable(final)["tasks"] == comparable(single.doc)["tasks"]
    _, kept = samples_file.read(out.with_name("dies.samples.safetensors"))  # the kept tasks' samples too
    _, fresh = samples_file.read(single.samples_path)
    assert kept.keys() == fresh.keys() == set(chosen)
    assert all(torch.equal(t, fresh[n][k]) for n, ts in kept.items() for k, t in ts.items())


def test_commands_that_do_not_shard_refuse_torchrun(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["list"]) == 2
    assert capsys.readouterr().err == ("iclbench list: runs in one process; under torchrun only run, train, leaderboard "
                                       "are split across processes\n")
