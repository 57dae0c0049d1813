"""The sandbox a model's worker process runs in: a bubblewrap (`bwrap`) container made for each worker.

`unavailable()` says why a sandbox cannot be made on this machine (None when it can); `choose` applies the
rule of the commands (a required sandbox, none, or one where the platform allows); `command` is the `bwrap`
command line that runs the worker (`iclbench.worker.IsolatedModel`, `sandbox=`). Inside, the model has:

- no network: a network namespace of its own, with a loopback interface only; neither the host's interfaces nor
  its abstract Unix sockets are reachable, and no path socket of the host is visible;
- read-only, only what the worker needs (`exposed`): the system (`/usr` and the `/bin`, `/lib`... beside it, and
  the few files of `/etc` that the dynamic linker and user look-ups read), the Python installation and its
  site-packages, the `iclbench` package the harness imported, the files beside the model (those whose SHA-256
  the results record, `iclbench.plugins.model_files`), every existing path a model argument names (relative
  to the working directory, which is the harness's), the directories of the harness's PYTHONPATH and the
  Hugging Face Hub cache (used offline); not the user's home, the results folder or anything else;
- writable, only a private `/tmp` (a tmpfs of at most the memory limit; HOME and TMPDIR point there), gone with
  the worker; the root is a read-only tmpfs, so even a file beside the model cannot be changed;
- a PID namespace of its own whose first process is bwrap's: when the worker ends (an answer to `exit`, a crash,
  or the harness killing bwrap at a time-out), every process the model started is killed with it; a session of
  its own (no terminal); no capabilities and no further user namespaces;
- an environment of `ALLOWED_ENV` only (what is set of it in the harness's), plus HOME, TMPDIR, PYTHONPATH,
  ICLBENCH_CACHE=off, PYTHONDONTWRITEBYTECODE=1, HF_HUB_OFFLINE=1 and HF_HUB_CACHE: no token or other secret;
- on CUDA, the `/dev/nvidia*` devices and `/sys` besides (the driver's libraries are found under `/usr`, or on
  LD_LIBRARY_PATH, whose directories are exposed).

The worker sets its own resource limits before any model code is imported (`iclbench.worker.main`): the address
space and, in the sandbox, the number of processes and threads (`max_tasks`), both soft and hard, so that every
process the model starts inherits them.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import site
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from iclbench.plugins import model_file, model_files

log = logging.getLogger(__name__)

ALLOWED_ENV = (
    "PATH", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS", "ATEN_CPU_CAPABILITY", "CUDA_VISIBLE_DEVICES", "CUBLAS_WORKSPACE_CONFIG",
    "PYTORCH_CUDA_ALLOC_CONF", "LD_LIBRARY_PATH",
)
"""The variables of the harness's environment a sandboxed worker receives (when set); nothing else is inherited."""
TMP = "/tmp"
"""The sandbox's private writable folder (HOME and TMPDIR)."""
SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
"""Folders of the system, exposed read-only (a symbolic link, such as /bin -> usr/bin, as the same link)."""
ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "passwd", "group", "nsswitch.conf", "alternatives")
"""Files of /etc exposed read-only (when present): those the dynamic linker and user look-ups read."""
NAMESPACES = (
    "--unshare-user", "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
    "--disable-userns", "--die-with-parent", "--new-session",
)
"""Namespaces of its own for the worker (network, processes, IPC, host name, cgroups, users), none further
inside, killed with its parent, in a session of its own."""
FIX_ADVICE = (
    "install bubblewrap (Debian, Ubuntu: apt-get install bubblewrap) and allow unprivileged user namespaces "
    "(Ubuntu 24.04 and later: sysctl -w kernel.apparmor_restrict_unprivileged_userns=0)"
)


class SandboxError(ValueError):
    """A sandbox that was required cannot be made here; the message says why, on one line."""


def _system_args() -> list[str]:
    out: list[str] = []
    for path in SYSTEM:
        if os.path.islink(path):
            out += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            out += ["--ro-bind", path, path]
    for name in ETC:
        out += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    return out + ["--proc", "/proc", "--dev", "/dev"]


@lru_cache(maxsize=4)
def _probe(bwrap: str) -> str | None:
    """Why `bwrap` cannot make the sandbox's namespaces here, from a trial run; None when it can."""
    true = shutil.which("true") or "/bin/true"
    try:
        done = subprocess.run([bwrap, *NAMESPACES, *_system_args(), "--", true], capture_output=True, text=True,
                              timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{bwrap} could not be run ({exc})"
    if done.returncode == 0:
        return None
    lines = done.stderr.strip().splitlines()
    return f"{bwrap} cannot make a sandbox here ({lines[-1] if lines else f'exit status {done.returncode}'})"


def unavailable() -> str | None:
    """Why a model cannot be sandboxed on this machine (one line, with what to do); None when it can.

    A trial run of `bwrap` (once per process for each `bwrap` found on PATH) checks that the kernel lets it make
    the namespaces: user namespaces may be disabled or, on Ubuntu 24.04 and later, restricted by AppArmor.
    """
    if sys.platform != "linux":
        return f"the sandbox needs Linux (this is {sys.platform})"
    bwrap = shutil.which("bwrap")
    why = "bwrap is not on PATH" if bwrap is None else _probe(bwrap)
    return None if why is None else f"{why}; to sandbox models, {FIX_ADVICE}"


def choose(wanted: bool | None) -> bool:
    """Whether to run a worker in the sandbox: `wanted` True (`SandboxError` where it cannot be made) or False;
    None, where it can be made, otherwise not, saying so in one warning line."""
    if wanted is False:
        return False
    why = unavailable()
    if why is None:
        return True
    if wanted:
        raise SandboxError(f"models run in a sandbox, which cannot be made here: {why}")
    log.warning("the model runs without a sandbox: %s", why)
    return False


def refusal(command: str) -> str | None:
    """The line a command that judges a model (`verify`, `validate --rerun`, `predict`) prints, refusing to run it, where the
    sandbox cannot be made; None where it can."""
    why = unavailable()
    if why is None:
        return None
    return (f"iclbench {command}: a model is judged in a sandbox, which cannot be made here: {why}; "
            "--no-sandbox runs it without one (only on your own machine)")


def max_tasks(threads: int) -> int:
    """The most processes and threads a sandboxed worker may run (`RLIMIT_NPROC`): the worker's `threads` (0: one
    per core) twice over, with room for torch's own threads and a few helper processes, at least 64."""
    return max(64, 2 * (threads or os.cpu_count() or 1) + 32)


def hub_cache() -> Path:
    """The Hugging Face Hub cache folder `huggingface_hub` uses with the harness's environment."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "huggingface" / "hub"


def _python_paths() -> list[str]:
    """The Python installation and its site-packages (the user's too, when Python uses it)."""
    paths = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *site.getsitepackages()]
    if site.ENABLE_USER_SITE:
        paths.append(site.getusersitepackages())
    return paths


def exposed(source: str, args: Mapping[str, Any], package_root: str, pythonpath: Iterable[str], device: torch.device) -> list[Path]:
    """Every path a worker running the model `source` (with model arguments `args`) sees, read-only, besides the
    system: absolute, existing, none inside another (a folder's whole tree is seen)."""
    paths = [Path(p) for p in _python_paths()]
    paths.append(Path(package_root, "iclbench"))
    paths += [Path(p) for p in pythonpath if p and Path(p).resolve() != Path(package_root).resolve()]
    if (path := model_file(source)) is not None and path.is_file():
        paths += [path, *model_files(path.parent)]
    paths += [Path(v) for v in args.values() if isinstance(v, str) and v and os.path.exists(v)]
    paths.append(hub_cache())
    if device.type == "cuda":
        paths += [Path(p) for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    found = sorted({Path(os.path.abspath(p)) for p in paths if os.path.exists(p)}, key=lambda p: p.parts)
    system = tuple(Path(p) for p in SYSTEM)
    out: list[Path] = []
    for path in found:
        if not any(path.is_relative_to(above) for above in (*system, *out)):
            out.append(path)
    return out


def command(argv: list[str], env: Mapping[str, str], paths: Iterable[Path], device: torch.device,
            tmp_bytes: int | None) -> list[str]:
    """The `bwrap` command line that runs `argv` in the sandbox, with the environment `env` (built by the caller
    from `ALLOWED_ENV`), `paths` exposed read-only at their own place, the working directory kept, and a
    private /tmp of at most `tmp_bytes` (None: the kernel's default, half the memory)."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxError(f"models run in a sandbox, which cannot be made here: {unavailable()}")
    out = [bwrap, *NAMESPACES, "--clearenv"]
    for key, value in env.items():
        out += ["--setenv", key, value]
    out += _system_args()
    out += [*(["--size", str(tmp_bytes)] if tmp_bytes is not None else []), "--tmpfs", TMP]
    for path in paths:
        out += ["--ro-bind", str(path), str(path)]
    if device.type == "cuda":
        for dev in sorted(glob.glob("/dev/nvidia*")):
            out += ["--dev-bind", dev, dev]
        out += ["--ro-bind", "/sys", "/sys"]
    cwd = os.getcwd()
    out += ["--dir", cwd, "--chdir", cwd, "--remount-ro", "/", "--", *argv]
    return out
