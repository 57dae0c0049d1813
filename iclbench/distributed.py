"""Runs launched by `torchrun`: the process group, each rank's device, byte collectives, and the
static assignment of tasks to ranks of a sharded `iclbench run`.

A process is part of a distributed run when `RANK` and `WORLD_SIZE` are in its environment
(torchrun's env:// rendezvous sets them, with `LOCAL_RANK`, `MASTER_ADDR` and `MASTER_PORT`).
`init` joins the process group: gloo for CPU tensors, and NCCL for CUDA tensors when CUDA is
available. Everything exchanged between ranks is JSON text or safetensors bytes sent as uint8
tensors: nothing is pickled.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist

from iclbench.tasks import Task

RENDEZVOUS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE", "ROLE_RANK",
              "ROLE_NAME", "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID",
              "TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_MAX_RESTARTS", "TORCHELASTIC_USE_AGENT_STORE",
              "TORCHELASTIC_ERROR_FILE", "TORCH_NCCL_ASYNC_ERROR_HANDLING")
"""torchrun's variables: a model's worker process does not inherit them (`iclbench.worker`)."""
RESULTS_TIMEOUT = timedelta(days=7)
"""How long a rank of a sharded run waits for the others' results (a rank that dies stops the run at once)."""

_owned = False
_results_group: dist.ProcessGroup | None = None


def launched() -> bool:
    """Whether this process was started by torchrun (or another env:// launcher)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init() -> None:
    """Join the process group when launched by torchrun and not in it yet; nothing otherwise."""
    global _owned
    if not launched() or dist.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        dist.init_process_group("cpu:gloo,cuda:nccl")
    else:
        dist.init_process_group("gloo")
    _owned = True


def shutdown() -> None:
    """Leave the process group `init` joined."""
    global _owned, _results_group
    if _owned and dist.is_initialized():
        dist.destroy_process_group()
    _owned, _results_group = False, None


def rank() -> int:
    """This process's rank (0 outside a distributed run)."""
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    """The number of processes of the run (1 outside a distributed run)."""
    return dist.get_world_size() if dist.is_initialized() else 1


def local_device(device: torch.device) -> torch.device:
    """`device`, with "cuda" (no index) meaning this rank's GPU, `LOCAL_RANK`, in a run launched by torchrun."""
    if device.type != "cuda" or device.index is not None or not launched():
        return device
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % max(1, torch.cuda.device_count()))


def _group() -> dist.ProcessGroup:
    """A gloo group with `RESULTS_TIMEOUT`: ranks that finish their tasks first wait there for the others."""
    global _results_group
    if _results_group is None:
        _results_group = dist.new_group(backend="gloo", timeout=RESULTS_TIMEOUT)
    return _results_group


def all_gather_bytes(data: bytes) -> list[bytes]:
    """Every rank's `data`, by rank, on every rank."""
    group = _group()
    mine = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)
    sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(world_size())]
    dist.all_gather(sizes, torch.tensor([mine.numel()], dtype=torch.int64), group=group)
    longest = int(max(sizes))
    padded = torch.zeros(longest, dtype=torch.uint8)
    padded[: mine.numel()] = mine
    parts = [torch.empty(longest, dtype=torch.uint8) for _ in sizes]
    dist.all_gather(parts, padded, group=group)
    return [part[: int(size)].numpy().tobytes() for part, size in zip(parts, sizes)]


def broadcast_bytes(data: bytes | None) -> bytes:
    """Rank 0's `data` on every rank (the others pass None)."""
    group = _group()
    size = torch.tensor([len(data) if data is not None else 0], dtype=torch.int64)
    dist.broadcast(size, 0, group=group)
    buf = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.empty(int(size), dtype=torch.uint8)
    if int(size):
        dist.broadcast(buf, 0, group=group)
    return buf.numpy().tobytes()


def cost(task: Task, prompts: int | None) -> int:
    """A task's estimated scoring cost: prompts x sum of the scored prompt lengths x d (data and solvers
    grow with n d per prompt)."""
    spec = task.spec
    return min(prompts or spec.n_prompts, spec.n_prompts) * sum(spec.lengths) * spec.d


def assign(costs: list[int], ranks: int) -> list[list[int]]:
    """The indices of `costs` each of `ranks` ranks scores: greedy longest-first (each task, costliest
    first, ties in list order, goes to the rank with the least cost so far, ties to the lowest rank),
    each rank's indices in list order. Static and deterministic: it depends on the costs alone."""
    loads = [0] * ranks
    shares: list[list[int]] = [[] for _ in range(ranks)]
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        r = min(range(ranks), key=lambda r: (loads[r], r))
        loads[r] += costs[i]
        shares[r].append(i)
    return [sorted(share) for share in shares]
