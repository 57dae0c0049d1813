"""Running a model in a worker process, so that the harness never imports the model's code.

`IsolatedModel(spec, limits, args)` starts `python -m iclbench.worker`, which loads the model
(`iclbench.plugins.load_model`, passing `args`, JSON scalars, to its constructor) and answers
requests on a private pipe (the model's own output on stdout goes to stderr). The harness sends
only what a model is entitled to: the task's spec without its seed, and the context and query
tensors of each batch; the worker
returns plain data (the model's name, class and file, its checkpoint path, the supported
prompt lengths) and the prediction tensors. Nothing is pickled in either direction: a
message is a JSON header and a safetensors blob, each preceded by its length
(`struct "<QQ"`), and the harness bounds both sizes.

Limits (`Limits`, flags `--task-timeout` and `--max-memory` of `iclbench run`):

- wall time per task: loading, `setup`, and each task's requests must finish within
  `task_timeout` seconds of their start, else the worker is killed;
- memory: on the CPU, the worker's address space (`RLIMIT_AS`, virtual memory) is capped at
  `max_memory_gb`; on CUDA, where the driver reserves far more address space than it uses,
  the host memory is left unlimited and the GPU memory the model's allocations may take is
  capped with `torch.cuda.set_per_process_memory_fraction`. An allocation beyond the limit
  fails that request with a message naming the limit.

A hang, a crash (a signal such as SIGSEGV), an exit (`sys.exit`, `os._exit`) or a limit
fails the current task with one message (`TaskFailure`) saying which; the worker is
started again, loaded and set up, for the next task. The worker runs with
`ICLBENCH_CACHE=off`, so it finds no evaluation set on disk, without torchrun's variables
(`iclbench.distributed.RENDEZVOUS`), so it neither knows its rank nor can join the run's process
group, and ignores SIGINT: on Ctrl-C the harness stops it.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import select
import signal
import site
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from iclbench.api import Batch, Prediction, TaskFailure, by_length, check_prediction, predicts_lengths
from iclbench.distributed import RENDEZVOUS
from iclbench.plugins import PluginError, check_model_args
from iclbench.tasks import TaskSpec
from iclbench.tasks.pool import TaskPool

_FRAME = struct.Struct("<QQ")
MAX_HEADER = 1 << 20
"""Largest JSON header the harness accepts from a worker (bytes)."""
MAX_BLOB = 1 << 33
"""Largest tensor blob the harness accepts from a worker (bytes, 8 GiB)."""
_GB = 1 << 30
_PREDICTION_NAMES = ("y", "steps", "w")
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)
"""The folder the harness imported `iclbench` from, which the worker imports it from too."""


@dataclass(frozen=True)
class Limits:
    """Resources of a worker: wall time per task in seconds, memory in GB (None: no memory limit), and
    CPU threads (torch's intra-op threads, with OpenMP's and MKL's; 0: torch's default, one per core)."""

    task_timeout: float = 1800.0
    max_memory_gb: float | None = 16.0
    threads: int = 1
    """One by default: with more, small batched LAPACK solves collapse when another process competes for the cores
    (ridge's full suite, measured on 2 cores beside one busy process: 17-19 s with 2 threads, 8 s with 1)."""


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
            view = view[os.write(fd, view[: 1 << 20]) :]
        except BlockingIOError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            raise _Closed from None


def _read_exact(fd: int, size: int, deadline: float | None) -> bytearray:
    buf = bytearray(size)
    view, got = memoryview(buf), 0
    while got < size:
        _wait(fd, False, deadline)
        try:
            n = os.readv(fd, [view[got:]])
        except BlockingIOError:
            continue
        if n == 0:
            raise _Closed
        got += n
    return buf


def _send(fd: int, header: dict[str, Any], tensors: dict[str, torch.Tensor] | None, deadline: float | None) -> None:
    head = json.dumps(header).encode()
    # a contiguous copy of each: outputs may be strided views sharing storage (y of steps), which safetensors refuses
    blob = save_tensors({k: v.detach().cpu().clone(memory_format=torch.contiguous_format) for k, v in tensors.items()}) if tensors else b""
    _write_all(fd, _FRAME.pack(len(head), len(blob)) + head, deadline)
    _write_all(fd, blob, deadline)


def _receive(fd: int, deadline: float | None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    head_size, blob_size = _FRAME.unpack(bytes(_read_exact(fd, _FRAME.size, deadline)))
    if head_size > MAX_HEADER or blob_size > MAX_BLOB:
        raise ValueError(f"a message of {head_size} + {blob_size} bytes, more than the harness accepts")
    header = json.loads(bytes(_read_exact(fd, head_size, deadline)))
    if not isinstance(header, dict):
        raise ValueError("a message whose header is not a JSON object")
    blob = bytes(_read_exact(fd, blob_size, deadline)) if blob_size else b""
    try:
        tensors = load_tensors(blob) if blob else {}
    except Exception as exc:  # safetensors' own error type
        raise ValueError(f"a tensor blob that is not safetensors ({exc})") from None
    return header, tensors


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


class IsolatedModel:
    """A model run in a worker process; what the runner drives (`iclbench.runner.ScoredModel`).

    Creating it starts the worker and loads the model with `args` as its constructor's keyword
    arguments (`PluginError` on failure, with the model's own message). `setup`, `begin_task`,
    `supported_lengths`, `predict` and `predict_lengths` are the runner's requests; a worker that
    died or was stopped is started again by `begin_task`. With `one_pass` False the runner is told
    that the model has no `predict_lengths` (`validate --rerun` scores with `predict` alone).
    """

    def __init__(
        self, source: str, limits: Limits = Limits(), args: Mapping[str, Any] | None = None, one_pass: bool = True
    ) -> None:
        self.source = source
        self.limits = limits
        self.one_pass = one_pass
        try:
            self.args = check_model_args(args or {})
        except ValueError as exc:
            raise PluginError(str(exc)) from None
        self.checkpoint: str | None = None
        self.task_pool: TaskPool | None = None
        self._device: torch.device | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._deadline: float | None = None
        self._busy = False
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
    def predicts_lengths(self) -> bool:
        """Whether the runner is to call `predict_lengths` (the model defines it, and `one_pass`)."""
        return self.one_pass and self._info["predicts_lengths"]

    def _start(self) -> dict[str, Any]:
        env = {**{k: v for k, v in os.environ.items() if k not in RENDEZVOUS}, "ICLBENCH_CACHE": "off"}
        # -P: never the current folder, so a checkout's source tree in the working directory is not imported by
        # accident; the harness's own iclbench instead, when it was not imported from an installed site
        if _PACKAGE_ROOT not in {*site.getsitepackages(), site.getusersitepackages()}:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_ROOT, env.get("PYTHONPATH")]))
        if self.limits.threads:
            env.update({name: str(self.limits.threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")})
        memory = "" if self.limits.max_memory_gb is None else str(int(self.limits.max_memory_gb * _GB))
        self._proc = subprocess.Popen(
            [sys.executable, "-P", "-m", "iclbench.worker", memory],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        for pipe in (self._proc.stdin, self._proc.stdout):
            os.set_blocking(pipe.fileno(), False)
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

    def _death(self) -> str:
        """Why the worker is gone, after it closed its pipe."""
        assert self._proc is not None
        try:
            code = self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            return "the model's worker process closed its pipe and stopped answering"
        if code < 0:
            return f"the model's worker process was killed by {_signal_name(-code)}"
        return f"the model's worker process exited with status {code} (sys.exit or os._exit in the model?)"

    def _request(
        self, header: dict[str, Any], what: str, tensors: dict[str, torch.Tensor] | None = None
    ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """Send one request before the deadline and return the reply's header and tensors."""
        if self._proc is None:
            raise TaskFailure(f"the model's worker process is not running ({what})")
        self._busy = True
        try:
            _send(self._proc.stdin.fileno(), header, tensors, self._deadline)
            reply, out = _receive(self._proc.stdout.fileno(), self._deadline)
            self._busy = False
        except _TimedOut:
            self._stop()
            raise TaskFailure(
                f"the model ran past the time limit of {self.limits.task_timeout:g} s per task (--task-timeout) "
                f"while {what}; its worker process was stopped"
            ) from None
        except _Closed:
            message = self._death()
            self._stop()
            raise TaskFailure(f"{message}, while {what}") from None
        except ValueError as exc:
            self._stop()
            raise TaskFailure(f"the model's worker process sent {exc}, while {what}") from None
        return reply, out

    def setup(self, device: torch.device) -> None:
        """Call the model's `setup(device)` in the worker; `TaskFailure` with its error."""
        self._device = device
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
        """Start the clock of a task; a worker that died or was stopped is started and set up again."""
        if self._proc is None:
            self._info = self._start()
            assert self._device is not None
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
        header = {"op": "predict", "task": public_spec(batch.task)}
        tensors = {"x": batch.x, "y": batch.y, "x_query": batch.x_query}
        reply, out = self._request(header, "predicting", tensors)
        if "error" in reply:
            raise TaskFailure(str(reply["error"]))
        if "y" not in out or set(out) - set(_PREDICTION_NAMES):
            raise TaskFailure(f"the model's worker process returned tensors {sorted(out)}, expected y, steps, w")
        return Prediction(out["y"], out.get("steps"), out.get("w"))

    def predict_lengths(self, batch: Batch, lengths: list[int]) -> dict[int, Prediction]:
        """The model's predictions at every length of `lengths` for `batch` (at the longest, on the CPU),
        each checked in the worker and returned on the CPU; `TaskFailure` naming the length it concerns."""
        header = {"op": "predict_lengths", "task": public_spec(batch.task), "lengths": lengths}
        tensors = {"x": batch.x, "y": batch.y, "x_query": batch.x_query}
        reply, out = self._request(header, "predicting", tensors)
        if "error" in reply:
            length = reply.get("length")
            raise TaskFailure(str(reply["error"]), length if length in lengths and type(length) is int else None)
        names = {f"{n}/{k}" for n in lengths for k in _PREDICTION_NAMES}
        if set(out) - names or any(f"{n}/y" not in out for n in lengths):
            raise TaskFailure(f"the model's worker process returned tensors {sorted(out)}, "
                              f"expected <length>/y, steps, w for lengths {lengths}")
        return {n: Prediction(out[f"{n}/y"], out.get(f"{n}/steps"), out.get(f"{n}/w")) for n in lengths}

    def close(self) -> None:
        """Stop the worker: ask it to exit, or kill it when a request was cut short (Ctrl-C)."""
        if self._proc is not None and self._proc.poll() is None and not self._busy:
            try:
                _send(self._proc.stdin.fileno(), {"op": "exit"}, None, time.monotonic() + 5)
                self._proc.wait(timeout=5)
            except (_TimedOut, _Closed, subprocess.TimeoutExpired):
                pass
        self._stop()


# The worker's side ---------------------------------------------------------------------------------------------


def _out_of_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or "out of memory" in text or "can't allocate memory" in text


def _describe(call: str, exc: BaseException, memory: int | None) -> str:
    if isinstance(exc, SystemExit):
        return f"{call} called sys.exit({exc.code!r})"
    text = f"{call} raised {type(exc).__name__}: {exc}"
    if _out_of_memory(exc) and memory is not None:
        text += f" (the worker's memory limit is {memory / _GB:g} GB: --max-memory)"
    return text


def _spec(data: dict[str, Any]) -> TaskSpec:
    return TaskSpec(**{**data, "lengths": tuple(data["lengths"])})


class _Worker:
    """The worker's state: the loaded model and its device."""

    def __init__(self, memory: int | None) -> None:
        self.memory = memory
        self.loaded: Any = None
        self.device = torch.device("cpu")

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
            self._limit_memory()
            try:
                model.setup(self.device)
                pool = TaskPool.parse(model.task_pool, f"{type(model).__name__}.task_pool")
            except (Exception, SystemExit) as exc:
                return {"error": _describe("setup", exc, self.memory)}, None
            return {"checkpoint": None if model.checkpoint is None else str(Path(model.checkpoint).resolve()),
                    "task_pool": None if pool is None else pool.to_dict()}, None
        spec = _spec(header["task"])
        if op == "supports":
            try:
                lengths = [n for n in spec.lengths if model.supports_length(spec, n)] if model.supports(spec) else None
            except (Exception, SystemExit) as exc:
                return {"error": _describe(f"supports({spec.name})", exc, self.memory)}, None
            return {"lengths": lengths}, None
        batch = Batch(spec, *(tensors[k].to(self.device) for k in ("x", "y", "x_query")))
        if op == "predict_lengths":
            return self._predict_lengths(model, batch, header["lengths"])
        try:
            pred = check_prediction(model.predict(batch), batch)
        except TaskFailure as exc:
            return {"error": str(exc)}, None
        except (Exception, SystemExit) as exc:
            return {"error": _describe("predict", exc, self.memory)}, None
        out = {k: getattr(pred, k) for k in _PREDICTION_NAMES if getattr(pred, k) is not None}
        return {}, out

    def _predict_lengths(self, model: Any, batch: Batch, lengths: list[int]) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
        try:
            preds = by_length(model.predict_lengths(batch, lengths), lengths)
        except TaskFailure as exc:
            return {"error": str(exc)}, None
        except (Exception, SystemExit) as exc:
            return {"error": _describe("predict_lengths", exc, self.memory)}, None
        out = {}
        for n in lengths:
            try:
                pred = check_prediction(preds[n], batch.prefix(n))
            except TaskFailure as exc:
                return {"error": str(exc), "length": n}, None
            out.update({f"{n}/{k}": getattr(pred, k) for k in _PREDICTION_NAMES if getattr(pred, k) is not None})
        return {}, out

    def _limit_memory(self) -> None:
        if self.memory is None:
            return
        if self.device.type == "cuda":  # CUDA reserves huge address ranges: cap its allocator instead
            resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
            total = torch.cuda.get_device_properties(self.device).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, self.memory / total), self.device)
        else:
            resource.setrlimit(resource.RLIMIT_AS, (self.memory, self.memory))


def _die_with_parent() -> None:
    """Ask Linux to kill this process when the harness dies (elsewhere the closed pipe ends it)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main() -> None:
    """The worker: read requests from the pipe on stdin, answer on the pipe on stdout, until told to exit."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the harness decides
    rfd, wfd = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # what the model prints goes to stderr, never into the protocol
    memory = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1] else None
    if memory is not None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, resource.RLIM_INFINITY))
    worker = _Worker(memory)
    while True:
        try:
            header, tensors = _receive(rfd, None)
        except _Closed:
            return
        if header.get("op") == "exit":
            return
        reply, out = worker.handle(header, tensors)
        _send(wfd, reply, out, None)


if __name__ == "__main__":
    main()
