"""The sandbox a model runs in (`iclbench.sandbox`): what a model can reach from inside it, what it leaves behind,
the limits it runs under, and what the commands do where it cannot be made."""

from __future__ import annotations

import json
import os
import resource
import site
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from fixtures.plugins import plugin

import iclbench
from iclbench import results, sandbox, tasks, worker
from iclbench.cli import main
from iclbench.plugins import load_model
from iclbench.runner import RunConfig, run

HARNESS_SET = {"HOME", "TMPDIR", "ICLBENCH_CACHE", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "HF_HUB_OFFLINE",
               "HF_HUB_CACHE", "PYTHONUSERBASE", "PWD"}
"""What the harness sets in a sandboxed worker's environment, besides `ALLOWED_ENV` (PWD: bwrap's, for --chdir)."""
ONE_TASK = ["--tasks", "kernel/exp", "--prompts", "8", "--quiet"]

PROBE = """
import errno, glob, json, os, socket, sys

TARGETS = {targets!r}
SOCKETS = {sockets!r}
SECRET = {secret!r}


def attempt(action):
    try:
        action()
        return "ok"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc))


def write(path):
    with open(path, "a") as fh:
        fh.write("written by the model")


def connect(family, address):
    with socket.socket(getattr(socket, family), socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(tuple(address) if isinstance(address, list) else address)


def environ_has_secret(path):
    try:
        with open(path, "rb") as fh:
            return SECRET.encode() in fh.read()
    except OSError:
        return False


class Probe(Model):
    name = "probe"

    def setup(self, device):
        report = {{
            "writes": {{where: attempt(lambda p=path: write(p)) for where, path in TARGETS.items()}},
            "own temp": attempt(lambda: write(os.path.join(os.environ["TMPDIR"], "scratch"))),
            "connects": {{where: attempt(lambda f=f, a=a: connect(f, a)) for where, (f, a) in SOCKETS.items()}},
            "environ": sorted(os.environ),
            "secret in /proc": [p for p in glob.glob("/proc/*/environ") if environ_has_secret(p)],
            "processes": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
        }}
        print("SANDBOX-REPORT " + json.dumps(report), file=sys.stderr, flush=True)

    def predict(self, batch):
        return batch.x_query.new_zeros(batch.x_query.shape[:2])
"""


def _listener(family: int, address: object) -> socket.socket | None:
    """A socket of the host listening at `address`; None where this host has no such address (no IPv6)."""
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.bind(address)
    except OSError:
        s.close()
        return None
    s.listen()
    s.setblocking(False)
    return s


@pytest.fixture(scope="module")
def probed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A probing model run once by `iclbench run` in the sandbox, with a secret in the harness's environment and
    sockets of the host listening: its report, the paths it tried to write and the listeners."""
    root = tmp_path_factory.mktemp("probe")
    folder, out = root / "model", root / "results"
    out.mkdir()
    tag = uuid.uuid4().hex
    targets = {
        "model folder": str(folder / "planted.py"),
        "model file": str(folder / "model.py"),
        "working directory": str(Path.cwd() / f"planted-{tag}.txt"),
        "host /tmp": f"/tmp/iclbench-planted-{tag}",
        "results folder": str(out / "planted.json"),
        "iclbench package": str(Path(iclbench.__file__).parent / f"planted_{tag}.py"),
        "site-packages": str(Path(site.getsitepackages()[0]) / f"planted-{tag}.pth"),
    }
    listeners = {
        "AF_INET": _listener(socket.AF_INET, ("127.0.0.1", 0)),
        "AF_INET6": _listener(socket.AF_INET6, ("::1", 0)),
        "AF_UNIX path": _listener(socket.AF_UNIX, str(root / "host.sock")),
        "AF_UNIX abstract": _listener(socket.AF_UNIX, f"\0iclbench-{tag}"),
    }
    sockets = {
        "AF_INET host loopback": ("AF_INET", ["127.0.0.1", listeners["AF_INET"].getsockname()[1]]),
        "AF_INET outside": ("AF_INET", ["192.0.2.1", 80]),  # TEST-NET-1: a route out is all it takes to try
        "AF_INET6 host loopback": ("AF_INET6", ["::1", listeners["AF_INET6"].getsockname()[1]
                                                if listeners["AF_INET6"] else 9]),
        "AF_INET6 outside": ("AF_INET6", ["2001:db8::1", 80]),
        "AF_UNIX path": ("AF_UNIX", str(root / "host.sock")),
        "AF_UNIX abstract": ("AF_UNIX", f"\0iclbench-{tag}"),
    }
    secret = f"secret-{tag}"
    model = plugin(folder, PROBE.format(targets=targets, sockets=sockets, secret=secret))
    before = model.read_text()
    env = {**os.environ, "ICLBENCH_TEST_SECRET": secret, "GITHUB_TOKEN": secret}
    try:
        done = subprocess.run([sys.executable, "-m", "iclbench", "run", "--model", str(model), "--out", str(out),
                               *ONE_TASK], env=env, capture_output=True, text=True, timeout=600)
        planted = {where: Path(path).exists() for where, path in targets.items() if where != "model file"}
        yield {"done": done, "report": _report(done.stderr), "planted": planted, "model": model, "before": before,
               "listeners": listeners, "secret": secret}
    finally:
        for where, path in targets.items():
            if where != "model file":
                Path(path).unlink(missing_ok=True)
        for s in listeners.values():
            if s is not None:
                s.close()


def _report(stderr: str) -> dict:
    found = [line.split(" ", 1)[1] for line in stderr.splitlines() if line.startswith("SANDBOX-REPORT ")]
    assert len(found) == 1, stderr
    return json.loads(found[0])


def test_a_sandboxed_run_succeeds_and_is_recorded(probed: dict) -> None:
    assert probed["done"].returncode == 0, probed["done"].stderr
    out = Path(probed["model"]).parent.parent / "results" / "probe.json"
    assert results.read(out)["tasks"]["kernel/exp"]["sandboxed"] is True
    assert probed["report"]["own temp"] == "ok"  # the model runs, and may write its own temporary folder


def test_a_model_cannot_write_outside_its_temporary_folder(probed: dict) -> None:
    assert probed["planted"] == dict.fromkeys(probed["planted"], False), probed["report"]["writes"]
    assert probed["model"].read_text() == probed["before"]
    writes = probed["report"]["writes"]
    for where in ("model file", "iclbench package", "site-packages"):  # exposed read-only: the same files as the host's
        assert writes[where] == "EROFS", (where, writes)


def test_a_model_cannot_connect_to_any_socket(probed: dict) -> None:
    connects = probed["report"]["connects"]
    assert all(result != "ok" for result in connects.values()), connects
    for name, s in probed["listeners"].items():
        if s is not None:
            with pytest.raises(BlockingIOError):  # no connection waits on the host's listening sockets
                s.accept()


def test_a_model_sees_only_the_allowed_environment(probed: dict) -> None:
    environ = set(probed["report"]["environ"])
    assert not {"ICLBENCH_TEST_SECRET", "GITHUB_TOKEN"} & environ
    assert environ <= set(sandbox.ALLOWED_ENV) | HARNESS_SET, environ - set(sandbox.ALLOWED_ENV) - HARNESS_SET
    assert probed["report"]["secret in /proc"] == []  # not in any process's environment it can read either


def test_a_model_sees_no_process_but_its_worker_and_the_sandbox_s_first(probed: dict) -> None:
    assert probed["report"]["processes"] == [1, 2]  # bwrap's, and the worker: neither the harness nor any other


SLEEPER = """
import ctypes, os, signal, sys, time

def spawn_sleeper():
    # a process that outlives its parent: forked twice, in a session of its own, named for the test to find
    r, w = os.pipe()
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            ctypes.CDLL(None).prctl(15, {marker!r}.encode())  # PR_SET_NAME
            os.write(w, b"up")
            time.sleep(600)
        os._exit(0)
    os.close(w)
    print("SLEEPER", os.read(r, 8).decode(), file=sys.stderr, flush=True)

class Leaver(Model):
    name = "leaver"
    def predict(self, batch):
        spawn_sleeper()
        if {end!r} == "crash":
            os.kill(os.getpid(), signal.SIGSEGV)
        if {end!r} == "time-out":
            time.sleep(3600)
        return batch.x_query.new_zeros(batch.x_query.shape[:2])
"""


def _marker() -> str:
    return f"icb{uuid.uuid4().hex[:12]}"  # a process name: 15 characters at most


def _marked(marker: str) -> list[int]:
    """The host's processes named `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == marker:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _gone(marker: str, wait: float = 5.0) -> list[int]:
    """The marked processes still there after up to `wait` seconds."""
    deadline = time.monotonic() + wait
    while (left := _marked(marker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@pytest.mark.parametrize("end", ["exit", "crash", "time-out"])
def test_no_process_of_the_model_outlives_its_worker(end: str, tmp_path: Path, capfd) -> None:
    marker = _marker()
    model = plugin(tmp_path, SLEEPER.format(marker=marker, end=end))
    limit = ["--task-timeout", "3"] if end == "time-out" else []
    code = main(["run", "--model", str(model), "--out", str(tmp_path), *limit, *ONE_TASK])
    err = capfd.readouterr().err
    assert "SLEEPER up" in err  # the sleeper ran
    assert code == (0 if end == "exit" else 1), err
    assert _gone(marker) == []


def test_without_the_sandbox_a_process_of_the_model_outlives_its_worker(tmp_path: Path, capfd) -> None:
    """What the sandbox prevents (and that the test above finds such a process)."""
    marker = _marker()
    model = plugin(tmp_path, SLEEPER.format(marker=marker, end="exit"))
    try:
        assert main(["run", "--model", str(model), "--out", str(tmp_path), "--no-sandbox", *ONE_TASK]) == 0
        assert "SLEEPER up" in capfd.readouterr().err
        assert _marked(marker)  # one per predict call, each still there
    finally:
        for pid in _marked(marker):
            os.kill(pid, 9)


HELPER = """
import json, os, resource, sys

def helper_report():
    out = {"as": resource.getrlimit(resource.RLIMIT_AS), "nproc": resource.getrlimit(resource.RLIMIT_NPROC),
           "core": resource.getrlimit(resource.RLIMIT_CORE)}
    try:
        resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        out["raised"] = True
    except (ValueError, OSError):
        out["raised"] = False
    try:
        block = bytearray(3 << 30)
        out["allocated"] = len(block)
    except MemoryError:
        out["allocated"] = 0
    return out

# a helper forked at import, before the model is set up
r, w = os.pipe()
if os.fork() == 0:
    os.write(w, json.dumps(helper_report()).encode())
    os._exit(0)
os.close(w)
print("HELPER " + os.read(r, 4096).decode(), file=sys.stderr, flush=True)

class Forker(Model):
    name = "forker"
    def predict(self, batch):
        return batch.x_query.new_zeros(batch.x_query.shape[:2])
"""


def test_a_process_forked_at_import_inherits_the_limits_and_cannot_raise_them(tmp_path: Path, capfd) -> None:
    model = plugin(tmp_path, HELPER)
    assert main(["run", "--model", str(model), "--out", str(tmp_path), "--max-memory", "2", *ONE_TASK]) == 0
    line = [x for x in capfd.readouterr().err.splitlines() if x.startswith("HELPER ")]
    helper = json.loads(line[0].split(" ", 1)[1])
    assert helper["as"] == [2 << 30, 2 << 30] and helper["core"] == [0, 0]
    assert helper["nproc"] == [sandbox.max_tasks(1)] * 2
    assert helper["raised"] is False and helper["allocated"] == 0


def _under_8g(*args: str) -> subprocess.CompletedProcess[str]:
    """`iclbench run ARGS` with an address-space limit of 8 GiB, soft and hard, inherited from its caller."""
    command = ["prlimit", f"--as={8 << 30}", "--", sys.executable, "-m", "iclbench", "run", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def test_a_run_works_under_an_inherited_hard_memory_limit(tmp_path: Path) -> None:
    done = _under_8g("--model", "zero", "--out", str(tmp_path), *ONE_TASK)
    assert done.returncode == 0, done.stderr
    assert results.read(tmp_path / "zero.json")["tasks"]["kernel/exp"]["status"] == "ok"


def test_running_out_of_an_inherited_memory_limit_names_it(tmp_path: Path) -> None:
    model = plugin(tmp_path, """
    class Greedy(Model):
        name = "greedy"
        def predict(self, batch):
            torch.empty(10 << 30, dtype=torch.uint8)
    """)
    done = _under_8g("--model", str(model), "--out", str(tmp_path), *ONE_TASK)
    assert done.returncode == 1
    assert "predict raised RuntimeError" in done.stderr
    assert "(the worker's memory limit is 8 GB: the limit iclbench was started with, below --max-memory)" in done.stderr


@pytest.fixture
def no_bwrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine where the sandbox cannot be made: no bwrap on PATH."""
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def test_without_bwrap_run_says_so_and_goes_on(no_bwrap: None, tmp_path: Path, capsys, caplog) -> None:
    assert main(["run", "--model", "zero", "--out", str(tmp_path), *ONE_TASK]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [f"the model runs without a sandbox: bwrap is not on PATH; to sandbox models, "
                        f"{sandbox.FIX_ADVICE}"]
    assert results.read(tmp_path / "zero.json")["tasks"]["kernel/exp"]["sandboxed"] is False


@pytest.mark.parametrize("command", [["verify"], ["validate", "--rerun"]])
def test_without_bwrap_the_judging_commands_refuse(command: list[str], no_bwrap: None, tmp_path: Path, capsys) -> None:
    code = main([command[0], str(tmp_path), *command[1:]])
    err = capsys.readouterr().err
    assert code == 2 and err == (f"iclbench {' '.join(command)}: a model is judged in a sandbox, which cannot be made "
                                 f"here: bwrap is not on PATH; to sandbox models, {sandbox.FIX_ADVICE}; --no-sandbox "
                                 "runs it without one (only on your own machine)\n")


def test_without_bwrap_verify_judges_with_no_sandbox_when_told(no_bwrap: None, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "sub"
    model = plugin(folder, """
    class Zero(Model):
        name = "zero-sub"
        def predict(self, batch):
            return batch.x_query.new_zeros(batch.x_query.shape[:2])
    """)
    run(load_model(str(model)), tasks.select(["kernel/exp"]), RunConfig("cpu", prompts=8), folder / "results.json",
        progress=False)
    code = main(["verify", str(folder), "--tasks", "kernel/exp", "--prompts", "8", "--quiet", "--no-sandbox"])
    assert code == 0, capsys.readouterr()
    assert json.loads((folder / "verification.json").read_text())["sandboxed"] is False


def test_a_worker_that_cannot_start_is_not_the_models_fault(tmp_path: Path, monkeypatch, capfd) -> None:
    model = plugin(tmp_path, """
    class Zero(Model):
        def predict(self, batch):
            return batch.x_query.new_zeros(batch.x_query.shape[:2])
    """)
    missing = tmp_path / "missing"
    monkeypatch.setattr(worker, "exposed", lambda *args: [missing])  # bwrap refuses to show a path that is not there
    code = main(["run", "--model", str(model), "--out", str(tmp_path), *ONE_TASK])
    err = capfd.readouterr().err
    assert code == 2 and f"bwrap: Can't find source path {missing}" in err
    assert err.splitlines()[-1] == (f"iclbench run: {model}: the worker process did not start, before the model's "
                                    "code was imported (the lines above say why, from the sandbox)")
