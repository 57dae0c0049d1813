"""Running a model in a worker process, so that the harness never imports the model's code.

`IsolatedModel(spec, limits, args, sandbox=...)` starts `python -m iclbench.worker`, by default in the sandbox
of `iclbench.sandbox` wherever it can be made, which loads the model (`iclbench.plugins.load_model`, passing
`args`, JSON scalars, to its constructor) and answers requests on a private pipe (the model's own output on
stdout goes to stderr). The harness sends only what a model is entitled to: the task's spec without its seed,
and the context and query tensors of each batch; the worker returns plain data (the model's name, class and
file, its checkpoint path, the supported prompt lengths) and the prediction tensors. Nothing is pickled in
either direction: a message is a frame (`struct "<QQ"`: the sizes of a JSON header and of the tensor bytes),
the JSON header, which names each tensor with its dtype and shape, and the tensors' raw bytes, written from
their memory and read into tensors allocated beforehand. The harness checks a reply's header before it reads
a tensor byte: at most `MAX_HEADER` bytes, then only the tensors a reply may hold, in the batch's dtype and
of the shapes its prompts give (at most `iclbench.api.MAX_STEPS` steps), so what it reads is bounded by what
the task can need. The harness keeps `AHEAD` prediction requests under way (`IsolatedModel.answers`): while it
scores one answer, the worker writes the next (from a thread of its own, `_Replies`) and computes the one after;
replies come in the order of the requests. The runner hands it one round of requests at a time, whose prompts
differ (`iclbench.runner.predict_all`), so the worker is never sent a longer prefix of prompts it has yet to
answer.

Limits (`Limits`, flags `--task-timeout` and `--max-memory` of `iclbench run`), set by the worker before it
imports any model code, soft and hard, so that every process the model starts inherits them:

- wall time per task: loading, `setup`, and each task's requests must finish within `task_timeout` seconds of
  their start, else the worker (with, in the sandbox, every process it started) is killed (the worker's own
  start, before the model's code is imported, is given `START_TIMEOUT`);
- memory: on the CPU, the worker's address space (`RLIMIT_AS`, virtual memory) is capped at `max_memory_gb`;
  on CUDA, where the driver reserves far more address space than it uses, the address space is left as it is
  and the GPU memory the model's allocations may take is capped with
  `torch.cuda.set_per_process_memory_fraction`. An allocation beyond the limit fails that request with a
  message naming the limit. A lower limit inherited by the harness (`ulimit -v`, a batch scheduler) is kept: a
  hard limit is never raised, and the worker then runs under the inherited one;
- in the sandbox, processes and threads (`RLIMIT_NPROC`, `iclbench.sandbox.max_tasks`; counted in the
  sandbox's user namespace, and not enforced by Linux when the harness runs as root); no core dumps.

A hang, a crash (a signal such as SIGSEGV), an exit (`sys.exit`, `os._exit`) or a limit fails the current task
with one message (`TaskFailure`) saying which; the worker is started again, loaded and set up, for the next
task. A worker that cannot start (before it answers, say the sandbox cannot be made) is a `PluginError` that
says so, not the model's failure. The worker runs with `ICLBENCH_CACHE=off`, so it finds no evaluation set
on disk, without torchrun's variables (`iclbench.distributed.RENDEZVOUS`), so it neither knows its rank nor can
join the run's process group, and ignores SIGINT: on Ctrl-C the harness stops it. Told to exit, it exits at
once (`os._exit`), after flushing what the model printed.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import math
import os
import queue
import resource
import select
import signal
import site
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import torch

from iclbench.api import (
    MAX_STEPS, Answer, Batch, Prediction, Request, TaskFailure, by_length, check_prediction, predicts_lengths,
)
from iclbench.distributed import RENDEZVOUS
from iclbench.plugins import PluginError, check_model_args
from iclbench.sandbox import ALLOWED_ENV, TMP, choose, command, exposed, hub_cache, max_tasks
from iclbench.tasks import TaskSpec
from iclbench.tasks.pool import TaskPool

_FRAME = struct.Struct("<QQ")
MAX_HEADER = 1 << 20
"""Largest JSON header the harness accepts from a worker (bytes)."""
PIPE_BYTES = 1 << 20
"""Capacity asked of each pipe (Linux's default limit for unprivileged processes): fewer, larger transfers."""
CLOSE_WAIT = 1.0
"""Seconds `IsolatedModel.close` gives the worker to exit when told to, before it is killed."""
AHEAD = 2
"""Requests `IsolatedModel.answers` keeps under way: the one whose reply the worker writes, and the next, which it
computes meanwhile."""
DROP_WAIT = 5.0
"""Seconds `IsolatedModel.answers` waits for the replies still owed when the runner stops reading (a task that
fails), to read and drop them; past it the worker is stopped, and started again for the next task."""
START_TIMEOUT = 300.0
"""Seconds a worker may take to start (the sandbox, Python, torch), before the model's code runs and its
time limit starts."""
_GB = 1 << 30
_PREDICTION_NAMES = ("y", "steps", "w")
_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)
"""The folder the harness imported `iclbench` from, which the worker imports it from too."""

TensorSpec = tuple[str, str, tuple[int, ...]]
"""A tensor as a message's header announces it: name, dtype name, shape."""
Accept = Callable[[dict[str, Any], list[TensorSpec]], None]
"""What checks a reply's header and the tensors it announces before any is read: `ValueError` saying what is wrong."""


@dataclass(frozen=True)
class Limits:
    """Resources of a worker: wall time per task in seconds, memory in GB (None: no memory limit), and
    CPU threads (torch's intra-op threads, with OpenMP's and MKL's; 0: torch's default, one per core)."""

    task_timeout: float = 1800.0
    max_memory_gb: float | None = 16.0
    threads: int = 1
    """One by default: with more, small batched LAPACK solves collapse when another process competes for the cores
    (ridge's full suite, measured on 2 cores beside one busy process: 17-19 s with 2 threads, 8 s with 1)."""

    @property
    def memory_bytes(self) -> int | None:
        return None if self.max_memory_gb is None else int(self.max_memory_gb * _GB)


class _Closed(Exception):
    """The other end of the pipe is gone."""


class _TimedOut(Exception):
    """The deadline passed before the message was complete."""


def _wait(fd: int, write: bool, deadline: float | None) -> None:
    remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
    ready = select.select([], [fd], [], remaining) if write else select.select([fd], [], [], remaining)
    if not any(ready):
        raise _TimedOut


def _write_all(fd: int, data: bytes | memoryview, deadline: float | None) -> None:
    view = memoryview(data).cast("B")
    while view:
        _wait(fd, True, deadline)
        try:
            view = view[os.write(fd, view[:PIPE_BYTES]) :]
        except BlockingIOError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            raise _Closed from None


def _read_into(fd: int, view: memoryview, deadline: float | None) -> None:
    got = 0
    while got < len(view):
        _wait(fd, False, deadline)
        try:
            n = os.readv(fd, [view[got:]])
        except BlockingIOError:
            continue
        if n == 0:
            raise _Closed
        got += n


def _read_exact(fd: int, size: int, deadline: float | None) -> bytes:
    buf = bytearray(size)
    _read_into(fd, memoryview(buf), deadline)
    return bytes(buf)


def _buffer(t: torch.Tensor) -> memoryview:
    """The bytes of a contiguous CPU tensor, without a copy."""
    return memoryview(t.numpy()).cast("B")


def _flat(tensors: Mapping[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """The tensors as contiguous CPU tensors (copied once where they are not, such as a view of another)."""
    return {k: v.detach().cpu().resolve_neg().contiguous() for k, v in (tensors or {}).items()}


def _send(fd: int, header: dict[str, Any], tensors: Mapping[str, torch.Tensor] | None, deadline: float | None) -> None:
    """One message: the frame, the header naming each tensor, then each tensor's bytes, from its own memory
    (`_flat`)."""
    flat = _flat(tensors)
    specs = [[k, str(v.dtype).removeprefix("torch."), list(v.shape)] for k, v in flat.items()]
    head = json.dumps({**header, "tensors": specs}).encode()
    _write_all(fd, _FRAME.pack(len(head), sum(v.nbytes for v in flat.values())) + head, deadline)
    for v in flat.values():
        _write_all(fd, _buffer(v), deadline)


def _specs(header: dict[str, Any]) -> list[TensorSpec]:
    """The tensors a header announces, checked to be named float tensors of non-negative sizes."""
    specs, out = header.pop("tensors", []), []
    if not isinstance(specs, list):
        raise ValueError("a message whose tensors are not a list")
    for spec in specs:
        if not (isinstance(spec, list) and len(spec) == 3 and isinstance(spec[0], str) and spec[1] in _DTYPES
                and isinstance(spec[2], list) and len(spec[2]) <= 8
                and all(type(n) is int and 0 <= n < 1 << 40 for n in spec[2])):
            raise ValueError(f"a tensor announced as {str(spec)[:80]}, not [name, float32 or float64, shape]")
        out.append((spec[0], spec[1], tuple(spec[2])))
    if len({name for name, _, _ in out}) < len(out):
        raise ValueError("a message that names a tensor twice")
    return out


def _no_tensors(header: dict[str, Any], specs: list[TensorSpec]) -> None:
    if specs:
        raise ValueError(f"tensors {[name for name, _, _ in specs]} in a reply that has none")


def _receive(fd: int, deadline: float | None, accept: Accept | None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """One message; with `accept`, its announced tensors are checked by it before any byte of theirs is read."""
    head_size, blob_size = _FRAME.unpack(_read_exact(fd, _FRAME.size, deadline))
    if head_size > MAX_HEADER:
        raise ValueError(f"a message header of {head_size} bytes, more than the {MAX_HEADER} the harness accepts")
    try:
        header = json.loads(_read_exact(fd, head_size, deadline))
    except ValueError:
        raise ValueError("a message header that is not JSON") from None
    if not isinstance(header, dict):
        raise ValueError("a message whose header is not a JSON object")
    specs = _specs(header)
    if accept is not None:
        accept(header, specs)
    sizes = [math.prod(shape) * _DTYPES[dtype].itemsize for _, dtype, shape in specs]
    if sum(sizes) != blob_size:
        raise ValueError(f"{blob_size} tensor bytes for tensors of {sum(sizes)} bytes")
    tensors = {}
    for name, dtype, shape in specs:
        tensors[name] = t = torch.empty(shape, dtype=_DTYPES[dtype])
        _read_into(fd, _buffer(t), deadline)
    return header, tensors


def _accept_prediction(batch: Batch, lengths: list[int] | None) -> Accept:
    """What a prediction reply for `batch` may hold: an error and no tensor, or `y`, `steps` and `w`
    (`<length>/y`... for each of `lengths` with `predict_lengths`), `y` always, in the batch's dtype and of the
    shapes its prompts give."""
    b, q = batch.x_query.shape[:2]
    label, d = batch.task.label_shape, batch.task.d
    dtype = str(batch.x.dtype).removeprefix("torch.")
    prefixes = [""] if lengths is None else [f"{n}/" for n in lengths]

    def accept(header: dict[str, Any], specs: list[TensorSpec]) -> None:
        if "error" in header:
            return _no_tensors(header, specs)
        names = {name for name, _, _ in specs}
        if missing := [p + "y" for p in prefixes if p + "y" not in names]:
            raise ValueError(f"a prediction without tensor {missing[0]}")
        for name, kind, shape in specs:
            prefix, _, field = name.rpartition("/")
            if prefix + "/" * bool(prefix) not in prefixes or field not in _PREDICTION_NAMES:
                raise ValueError(f"a tensor named {name[:80]!r}, expected {', '.join(prefixes[0] + f for f in _PREDICTION_NAMES)}")
            steps = shape[1] if field == "steps" and len(shape) > 1 and shape[1] <= MAX_STEPS else None
            expected = {"y": (b, q, *label), "steps": (b, steps, q, *label), "w": (b, *label, d)}[field]
            if kind != dtype or shape != expected:
                raise ValueError(f"tensor {name} of {kind} {list(shape)}, expected {dtype} of shape "
                                 f"{[n if n is not None else f'K <= {MAX_STEPS}' for n in expected]}")

    return accept


def public_spec(spec: TaskSpec) -> dict[str, Any]:
    """What a worker is told about a task: its spec without the evaluation seed."""
    out = spec.to_dict()
    del out["seed"]
    return out


def _signal_name(code: int) -> str:
    try:
        name = signal.Signals(code).name
    except ValueError:
        return f"signal {code}"
    notes = {"SIGSEGV": " (segmentation fault)", "SIGKILL": " (by hand, or by the system when memory ran out)"}
    return name + notes.get(name, "")


def _pythonpath() -> list[str]:
    """The worker's import path besides its installation: the harness's iclbench when it was not imported from an
    installed site, then the harness's PYTHONPATH."""
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    installed = _PACKAGE_ROOT in {*site.getsitepackages(), site.getusersitepackages()}
    return inherited if installed else [_PACKAGE_ROOT, *inherited]


def _environment(limits: Limits, sandboxed: bool) -> dict[str, str]:
    """The worker's environment: in the sandbox, `iclbench.sandbox.ALLOWED_ENV` and what the harness sets; else the
    harness's, without torchrun's variables."""
    if sandboxed:
        env = {k: os.environ[k] for k in ALLOWED_ENV if k in os.environ}
        env.update(HOME=TMP, TMPDIR=TMP, PYTHONDONTWRITEBYTECODE="1", HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(hub_cache()),
                   PYTHONUSERBASE=site.getuserbase())
    else:
        env = {k: v for k, v in os.environ.items() if k not in RENDEZVOUS}
    env["ICLBENCH_CACHE"] = "off"
    # -P: never the current folder, so a checkout's source tree in the working directory is not imported by
    # accident; the harness's own iclbench instead, when it was not imported from an installed site
    if path := _pythonpath():
        env["PYTHONPATH"] = os.pathsep.join(path)
    else:
        env.pop("PYTHONPATH", None)
    if limits.threads:
        env.update({name: str(limits.threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")})
    return env


def _large_pipe(fd: int) -> None:
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except (OSError, AttributeError):  # over the system's limit, or not Linux: the default size
        pass


class IsolatedModel:
    """A model run in a worker process; what the runner drives (`iclbench.runner.ScoredModel`).

    Creating it starts the worker and loads the model with `args` as its constructor's keyword
    arguments (`PluginError` on failure, with the model's own message). `setup`, `begin_task`,
    `supported_lengths`, `predict` and `predict_lengths` are the runner's requests; a worker that
    died or was stopped is started again by `begin_task`. With `one_pass` False the runner is told
    that the model has no `predict_lengths` (`validate --rerun` scores with `predict` alone).

    `sandbox`: True runs the worker in the sandbox (`iclbench.sandbox.SandboxError` where it cannot be made,
    `iclbench.sandbox.unavailable` says why), False without, None in it wherever it can be made (else with
    a warning). `device`: where `setup` will put the model, which decides the kind of memory limit the worker
    sets at its start (a `setup` on another device starts the worker again).
    """

    def __init__(
        self,
        source: str,
        limits: Limits = Limits(),
        args: Mapping[str, Any] | None = None,
        one_pass: bool = True,
        sandbox: bool | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.source = source
        self.limits = limits
        self.one_pass = one_pass
        try:
            self.args = check_model_args(args or {})
        except ValueError as exc:
            raise PluginError(str(exc)) from None
        self.sandboxed = choose(sandbox)
        self.checkpoint: str | None = None
        self.task_pool: TaskPool | None = None
        self._device = torch.device(device)
        self._proc: subprocess.Popen[bytes] | None = None
        self._deadline: float | None = None
        self._outstanding = 0
        """Requests sent whose replies are not read yet."""
        self._info = self._start()

    @property
    def name(self) -> str:
        return self._info["name"]

    @property
    def qualname(self) -> str:
        return self._info["class"]

    @property
    def threads(self) -> int:
        return self._info["threads"]

    @property
    def path(self) -> Path | None:
        return None if self._info["path"] is None else Path(self._info["path"])

    @property
    def pid(self) -> int | None:
        """The process id of the worker (of bwrap, in the sandbox), or None when none runs."""
        return None if self._proc is None else self._proc.pid

    @property
    def predicts_lengths(self) -> bool:
        """Whether the runner is to call `predict_lengths` (the model defines it, and `one_pass`)."""
        return self.one_pass and self._info["predicts_lengths"]

    def _command(self) -> list[str]:
        config = {"memory": self.limits.memory_bytes, "device": str(self._device),
                  "tasks": max_tasks(self.limits.threads) if self.sandboxed else None}
        argv = [sys.executable, "-P", "-m", "iclbench.worker", json.dumps(config)]
        if not self.sandboxed:
            return argv
        seen = exposed(self.source, self.args, _PACKAGE_ROOT, _pythonpath(), self._device)
        return command(argv, _environment(self.limits, True), seen, self._device, self.limits.memory_bytes)

    def _start(self) -> dict[str, Any]:
        # in the sandbox, bwrap's own environment is the worker's too: its first process's is readable inside
        self._proc = subprocess.Popen(self._command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      env=_environment(self.limits, self.sandboxed))
        for pipe in (self._proc.stdin, self._proc.stdout):
            os.set_blocking(pipe.fileno(), False)
            _large_pipe(pipe.fileno())
        try:  # the worker says it is ready once its limits are set, before any model code is imported
            _receive(self._proc.stdout.fileno(), time.monotonic() + START_TIMEOUT, _no_tensors)
        except (_Closed, _TimedOut, ValueError):
            self._stop()
            raise PluginError(
                f"{self.source}: the worker process did not start, before the model's code was imported (the lines "
                f"above say why{', from the sandbox' if self.sandboxed else ''})"
            ) from None
        self._deadline = time.monotonic() + self.limits.task_timeout
        try:
            reply, _ = self._request({"op": "load", "source": self.source, "args": self.args}, "loading the model")
        except TaskFailure as exc:
            raise PluginError(f"{self.source}: {exc}") from None
        threads = reply.get("threads")
        if not (isinstance(reply.get("name"), str) and isinstance(reply.get("class"), str)
                and type(threads) is int and threads >= 1):
            self._stop()
            raise PluginError(str(reply.get("error") or f"{self.source}: the worker answered loading with {reply!r}"))
        path = reply.get("path")
        return {"name": reply["name"], "class": reply["class"], "threads": threads,
                "path": path if isinstance(path, str) else None, "predicts_lengths": reply.get("predicts_lengths") is True}

    def _stop(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            for pipe in (self._proc.stdin, self._proc.stdout):
                pipe.close()
            self._proc = None
        self._outstanding = 0

    def _death(self) -> str:
        """Why the worker is gone, after it closed its pipe."""
        assert self._proc is not None
        try:
            code = self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            return "the model's worker process closed its pipe and stopped answering"
        if self.sandboxed and code > 128:  # bwrap exits with 128 + the signal that killed the worker
            code = 128 - code
        if code < 0:
            return f"the model's worker process was killed by {_signal_name(-code)}"
        return f"the model's worker process exited with status {code} (sys.exit or os._exit in the model?)"

    def _request(
        self, header: dict[str, Any], what: str, tensors: dict[str, torch.Tensor] | None = None,
        accept: Accept = _no_tensors,
    ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """Send one request before the deadline and return the reply's header and tensors (checked by `accept`)."""
        self._post(header, what, tensors)
        return self._reply(what, accept)

    def _post(
        self, header: dict[str, Any], what: str, tensors: dict[str, torch.Tensor] | None = None, ahead: bool = False
    ) -> None:
        """Send one request before the deadline; its reply is outstanding until read (`_reply`). Unless the request
        goes `ahead` of replies not read yet (`answers`), a worker that still owes replies is stopped first, so that
        no reply is read for another request."""
        if self._outstanding and not ahead:
            self._stop()
        if self._proc is None:
            raise TaskFailure(f"the model's worker process is not running ({what})")
        self._outstanding += 1
        with self._failures(what):
            _send(self._proc.stdin.fileno(), header, tensors, self._deadline)

    def _reply(self, what: str, accept: Accept = _no_tensors) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """The reply to the oldest outstanding request: its header and tensors (checked by `accept`), read before the
        deadline."""
        assert self._proc is not None and self._outstanding
        with self._failures(what, reading=True):
            reply, out = _receive(self._proc.stdout.fileno(), self._deadline, accept)
        self._outstanding -= 1
        return reply, out

    @contextmanager
    def _failures(self, what: str, reading: bool = False) -> Iterator[None]:
        """A time-out, a closed pipe or a bad message while `what` (`reading` a reply): the worker is stopped, and
        `TaskFailure` says why."""
        try:
            yield
        except _TimedOut:
            self._stop()
            raise TaskFailure(
                f"the model ran past the time limit of {self.limits.task_timeout:g} s per task (--task-timeout) "
                f"while {what}; its worker process was stopped"
            ) from None
        except _Closed:
            # with the next request under way, the reply it was writing may be lost with it
            either = " (on this batch or the next, which it had been sent)" if reading and self._outstanding > 1 else ""
            message = self._death()
            self._stop()
            raise TaskFailure(f"{message}, while {what}{either}") from None
        except ValueError as exc:
            self._stop()
            raise TaskFailure(f"the model's worker process sent {exc}, while {what}") from None

    def setup(self, device: torch.device) -> None:
        """Call the model's `setup(device)` in the worker; `TaskFailure` with its error."""
        if torch.device(device) != self._device:  # a worker started for another device
            self._stop()
            self._device = torch.device(device)
            self._info = self._start()
        self._deadline = time.monotonic() + self.limits.task_timeout
        reply, _ = self._request({"op": "setup", "device": str(device)}, "running setup")
        if "error" in reply:
            raise TaskFailure(str(reply["error"]))
        checkpoint = reply.get("checkpoint")
        self.checkpoint = checkpoint if isinstance(checkpoint, str) else None
        try:
            self.task_pool = TaskPool.parse(reply.get("task_pool"), "the model's task_pool")
        except ValueError as exc:
            raise TaskFailure(str(exc)) from None

    def begin_task(self) -> None:
        """Start the clock of a task; a worker that died or was stopped is started and set up again, as is one whose
        last answers were never read (`answers` left before them)."""
        if self._outstanding:
            self._stop()
        if self._proc is None:
            self._info = self._start()
            self.setup(self._device)
        self._deadline = time.monotonic() + self.limits.task_timeout

    def supported_lengths(self, spec: TaskSpec) -> list[int] | None:
        """The prompt lengths of `spec` the model is scored at; None when it does not support the task."""
        reply, _ = self._request({"op": "supports", "task": public_spec(spec)}, f"asking supports({spec.name})")
        if "error" in reply:
            raise TaskFailure(str(reply["error"]))
        lengths = reply.get("lengths")
        if lengths is None:
            return None
        if not (isinstance(lengths, list) and all(n in spec.lengths for n in lengths)):
            raise TaskFailure(f"the model's worker process answered supports with {lengths!r}")
        return [n for n in spec.lengths if n in lengths]

    def predict(self, batch: Batch) -> Prediction:
        """The model's prediction for `batch` (on the CPU), checked and returned on the CPU."""
        self._ask(batch, None)
        return self._answer(batch, None)

    def predict_lengths(self, batch: Batch, lengths: list[int]) -> dict[int, Prediction]:
        """The model's predictions at every length of `lengths` for `batch` (at the longest, on the CPU),
        each checked in the worker and returned on the CPU; `TaskFailure` naming the length it concerns."""
        self._ask(batch, lengths)
        return self._answer(batch, lengths)

    def answers(self, requests: Iterable[Request]) -> Iterator[Answer]:
        """The answer to each request in turn (`predict` or `predict_lengths`). `AHEAD` requests are kept under way:
        while the runner scores one answer, the worker writes the next and computes the one after. If the runner
        stops reading answers, or one is an error, with others under way, their replies are read and dropped
        (`DROP_WAIT`; else the worker is stopped, and `begin_task` starts another). A request that cannot be sent
        (the worker died or ran past its time) fails the oldest one under way, which the worker was computing; a
        worker that dies while a reply is read, with the next request under way, may have died on either (the
        reply it was writing is lost with it), which the failure says."""
        pending, asked, proc = iter(requests), deque(), self._proc
        broken: TaskFailure | None = None

        def ask_next() -> bool:
            nonlocal broken
            if (request := next(pending, None)) is None:
                return False
            if broken is None:
                try:
                    self._ask(*request, ahead=True)
                except TaskFailure as exc:  # the worker is stopped: the requests under way are lost with it
                    broken = exc
            asked.append(request)
            return True

        try:
            while len(asked) < AHEAD and ask_next():
                pass
            while asked:
                request = asked.popleft()
                if broken is not None:
                    raise broken
                answer = self._answer(*request)
                ask_next()
                yield answer
        finally:
            if self._outstanding and self._proc is proc:
                self._drop(asked)

    def _drop(self, requests: Iterable[Request]) -> None:
        """Read and drop the replies owed for `requests` within `DROP_WAIT` seconds (and the task's deadline); a
        worker that does not answer by then, or answers wrongly, is stopped."""
        deadline = self._deadline
        self._deadline = min(math.inf if deadline is None else deadline, time.monotonic() + DROP_WAIT)
        try:
            for batch, lengths in requests:
                self._reply("dropping an answer under way", _accept_prediction(batch, lengths))
        except TaskFailure:  # the worker is stopped
            pass
        finally:
            self._deadline = deadline

    def _ask(self, batch: Batch, lengths: list[int] | None, ahead: bool = False) -> None:
        header = {"op": "predict" if lengths is None else "predict_lengths", "task": public_spec(batch.task)}
        if lengths is not None:
            header["lengths"] = lengths
        self._post(header, "predicting", {"x": batch.x, "y": batch.y, "x_query": batch.x_query}, ahead)

    def _answer(self, batch: Batch, lengths: list[int] | None) -> Answer:
        reply, out = self._reply("predicting", _accept_prediction(batch, lengths))
        if "error" in reply:
            length = reply.get("length")
            known = lengths is not None and type(length) is int and length in lengths
            raise TaskFailure(str(reply["error"]), length if known else None)
        if lengths is None:
            return Prediction(out["y"], out.get("steps"), out.get("w"))
        return {n: Prediction(out[f"{n}/y"], out.get(f"{n}/steps"), out.get(f"{n}/w")) for n in lengths}

    def close(self) -> None:
        """Stop the worker: tell it to exit (it does at once), or kill it when a request was cut short (Ctrl-C)."""
        if self._proc is not None and self._proc.poll() is None and not self._outstanding:
            try:
                _send(self._proc.stdin.fileno(), {"op": "exit"}, None, time.monotonic() + CLOSE_WAIT)
                self._proc.wait(timeout=CLOSE_WAIT)
            except (_TimedOut, _Closed, subprocess.TimeoutExpired):
                pass
        self._stop()


# The worker's side ---------------------------------------------------------------------------------------------


def _out_of_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or "out of memory" in text or "can't allocate memory" in text


@dataclass(frozen=True)
class _Applied:
    """The memory limit the worker runs under (bytes, None: none) and whether it is one inherited by the harness,
    lower than --max-memory."""

    memory: int | None
    inherited: bool

    def describe(self) -> str:
        if self.memory is None:
            return ""
        where = "the limit iclbench was started with, below --max-memory" if self.inherited else "--max-memory"
        return f" (the worker's memory limit is {self.memory / _GB:g} GB: {where})"


def _describe(call: str, exc: BaseException, limits: _Applied) -> str:
    if isinstance(exc, SystemExit):
        return f"{call} called sys.exit({exc.code!r})"
    text = f"{call} raised {type(exc).__name__}: {exc}"
    return text + limits.describe() if _out_of_memory(exc) else text


def _lower(which: int, value: int) -> int:
    """Set the limit `which` to `value`, soft and hard, or to the hard limit inherited when that is lower (a hard
    limit is never raised); return the limit set."""
    hard = resource.getrlimit(which)[1]
    value = value if hard == resource.RLIM_INFINITY else min(value, hard)
    resource.setrlimit(which, (value, value))
    return value


def _apply_limits(memory: int | None, device: torch.device, tasks: int | None) -> _Applied:
    """The worker's limits (see the module), before any model code is imported."""
    _lower(resource.RLIMIT_CORE, 0)
    if tasks is not None:
        _lower(resource.RLIMIT_NPROC, tasks)
    if memory is None:
        return _Applied(None, False)
    if device.type == "cuda":  # CUDA reserves huge address ranges: its allocator is capped at `setup` instead
        return _Applied(memory, False)
    applied = _lower(resource.RLIMIT_AS, memory)
    return _Applied(applied, applied < memory)


def _spec(data: dict[str, Any]) -> TaskSpec:
    return TaskSpec(**{**data, "lengths": tuple(data["lengths"])})


class _Worker:
    """The worker's state: the loaded model, its device and its limits."""

    def __init__(self, limits: _Applied, device: torch.device) -> None:
        self.limits = limits
        self.loaded: Any = None
        self.device = device

    def handle(self, header: dict[str, Any], tensors: dict[str, torch.Tensor]) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
        op = header["op"]
        if op == "load":
            from iclbench.plugins import load_model

            try:
                self.loaded = load_model(header["source"], header.get("args"))
            except PluginError as exc:
                return {"error": str(exc)}, None
            path = self.loaded.path
            return {"name": self.loaded.model.name, "class": self.loaded.qualname, "threads": torch.get_num_threads(),
                    "path": None if path is None else str(Path(path).resolve()),
                    "predicts_lengths": predicts_lengths(self.loaded.model)}, None
        model = self.loaded.model
        if op == "setup":
            self.device = torch.device(header["device"])
            try:
                self._limit_gpu_memory()
                model.setup(self.device)
                pool = TaskPool.parse(model.task_pool, f"{type(model).__name__}.task_pool")
            except (Exception, SystemExit) as exc:
                return {"error": _describe("setup", exc, self.limits)}, None
            return {"checkpoint": None if model.checkpoint is None else str(Path(model.checkpoint).resolve()),
                    "task_pool": None if pool is None else pool.to_dict()}, None
        spec = _spec(header["task"])
        if op == "supports":
            try:
                lengths = [n for n in spec.lengths if model.supports_length(spec, n)] if model.supports(spec) else None
            except (Exception, SystemExit) as exc:
                return {"error": _describe(f"supports({spec.name})", exc, self.limits)}, None
            return {"lengths": lengths}, None
        batch = Batch(spec, *(tensors[k].to(self.device) for k in ("x", "y", "x_query")))
        if op == "predict_lengths":
            return self._predict_lengths(model, batch, header["lengths"])
        try:
            pred = check_prediction(model.predict(batch), batch)
        except TaskFailure as exc:
            return {"error": str(exc)}, None
        except (Exception, SystemExit) as exc:
            return {"error": _describe("predict", exc, self.limits)}, None
        out = {k: getattr(pred, k) for k in _PREDICTION_NAMES if getattr(pred, k) is not None}
        return {}, out

    def _predict_lengths(self, model: Any, batch: Batch, lengths: list[int]) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
        try:
            preds = by_length(model.predict_lengths(batch, lengths), lengths)
        except TaskFailure as exc:
            return {"error": str(exc)}, None
        except (Exception, SystemExit) as exc:
            return {"error": _describe("predict_lengths", exc, self.limits)}, None
        out = {}
        for n in lengths:
            try:
                pred = check_prediction(preds[n], batch.prefix(n))
            except TaskFailure as exc:
                return {"error": str(exc), "length": n}, None
            out.update({f"{n}/{k}": getattr(pred, k) for k in _PREDICTION_NAMES if getattr(pred, k) is not None})
        return {}, out

    def _limit_gpu_memory(self) -> None:
        if self.limits.memory is not None and self.device.type == "cuda":
            total = torch.cuda.get_device_properties(self.device).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, self.limits.memory / total), self.device)


def _die_with_parent() -> None:
    """Ask Linux to kill this process when the harness dies (elsewhere the closed pipe ends it)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _exit() -> None:
    """End the worker at once, what the model printed flushed first (no interpreter teardown: nothing is left to do)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)


class _Replies:
    """The worker's replies, written in order by a thread of their own, so that the worker reads and answers the
    next request while one is written (the harness sends it before it reads the reply: `AHEAD`)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._queue: queue.Queue[tuple[dict[str, Any], dict[str, torch.Tensor]] | None] = queue.Queue(maxsize=1)
        self._thread = threading.Thread(target=self._write, name="iclbench-replies", daemon=True)
        self._thread.start()

    def put(self, reply: dict[str, Any], tensors: Mapping[str, torch.Tensor] | None) -> None:
        """Queue a reply (its tensors made contiguous on the CPU here, so that the thread only writes)."""
        self._queue.put((reply, _flat(tensors)))

    def finish(self) -> None:
        """Return once every reply queued is written."""
        self._queue.put(None)
        self._thread.join()

    def _write(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                _send(self._fd, *item, None)
            except _Closed:  # the harness is gone
                _exit()
            except BaseException as exc:  # never a silent hang of the main thread on `put`: the worker ends
                print(f"iclbench worker: a reply could not be written: {exc!r}", file=sys.stderr, flush=True)
                os._exit(1)


def main() -> None:
    """The worker: set its limits, say it is ready, then read requests from the pipe on stdin and answer on the
    pipe on stdout (`_Replies`), until told to exit."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the harness decides
    rfd, wfd = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # what the model prints goes to stderr, never into the protocol
    config = json.loads(sys.argv[1])
    device = torch.device(config["device"])
    worker = _Worker(_apply_limits(config["memory"], device, config["tasks"]), device)
    _send(wfd, {"ready": True}, None, None)
    replies = _Replies(wfd)
    while True:
        try:
            header, tensors = _receive(rfd, None, None)
        except _Closed:
            header = {"op": "exit"}
        if header.get("op") == "exit":
            replies.finish()
            _exit()
        replies.put(*worker.handle(header, tensors))


if __name__ == "__main__":
    main()
