"""Running apart from judging: inputs hold no targets, predictions replay to a direct run's numbers, and
`iclbench score` judges a submission from its predictions without importing its code, refusing forged files."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import yaml
from fixtures.cheaters import write_cheater
from safetensors import safe_open
from safetensors.torch import load_file

from iclbench import Batch, plugins, predictions, worker
from iclbench.api import TaskFailure
from iclbench.cli import main
from iclbench.plugins import load_model
from iclbench.predictions import Inputs, PredictionsError, ReplayedModel
from iclbench.runner import RunConfig, run
from iclbench.submissions import score
from iclbench.tasks import TASKS, get, select
from iclbench.tasks.pool import TaskPool

TASK_NAMES = ["lasso/fixed", "kernel/linear"]
"""Two tasks whose sets generate in milliseconds; lasso/fixed is a recovery family (w is scored)."""
SEED = 20261205
TEMPLATE = str(Path(__file__).parents[1] / "examples" / "template_model.py")
MODEL = '''
"""Ridge on two tasks; when a file ARMED lies beside its submissions folder, importing it leaves a mark and fails."""
from pathlib import Path

from iclbench import TaskSpec
from iclbench.baselines.ridge import Ridge

ARMED = Path(__file__).resolve().parent.parent.parent / "ARMED"
if ARMED.exists():
    ARMED.with_name("IMPORTED").write_text("the judge imported the model")
    raise SystemExit("imported by the judge")


class TwoTaskRidge(Ridge):
    name = "two-task-ridge"

    def supports(self, task: TaskSpec) -> bool:
        return task.name in {names!r}
'''


def submission(folder: Path, source: str) -> Path:
    """A training-free submission of the model `source` in `folder`, with a full run's results.json (the model
    supports TASK_NAMES alone, so the run is quick)."""
    folder.mkdir(parents=True)
    (folder / "model.py").write_text(source)
    model = load_model(str(folder / "model.py"))
    meta = {"name": model.name, "authors": ["A. Researcher"], "contact": "a@example.org", "paper": None,
            "code": None, "license": "MIT", "architecture": "ridge regression", "parameters": 0,
            "training": None, "checkpoint": None}
    (folder / "submission.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    run(model, list(TASKS.values()), RunConfig("cpu"), folder / "results.json", progress=False)
    return folder


def predict_to(model_file: Path, inputs: Path, out: Path) -> Path:
    """The predictions of the model file on `inputs`, made in a worker process as `iclbench predict` makes them."""
    model = worker.IsolatedModel(str(model_file), one_pass=False)
    try:
        predictions.write(out, *predictions.predict(model, Inputs.read(inputs), RunConfig("cpu")))
    finally:
        model.close()
    return out


@pytest.fixture(scope="module")
def judged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A submission, the inputs of the public and of fresh sets of TASK_NAMES, and its predictions on both."""
    root = tmp_path_factory.mktemp("judged")
    folder = submission(root / "submissions" / "two-task-ridge", MODEL.format(names=TASK_NAMES))
    predictions.write_inputs(root / "public", select(TASK_NAMES))
    predictions.write_inputs(root / "fresh", select(TASK_NAMES), seed=SEED)
    return {
        "root": root,
        "folder": folder,
        "public": predict_to(folder / "model.py", root / "public", root / "public.safetensors"),
        "fresh": predict_to(folder / "model.py", root / "fresh", root / "fresh.safetensors"),
    }


def test_inputs_hold_the_model_inputs_alone(judged: dict[str, Path]) -> None:
    for side in ("public", "fresh"):
        manifest = json.loads((judged["root"] / side / "manifest.json").read_text())
        assert manifest["format"] == predictions.INPUTS_FORMAT and list(manifest["tasks"]) == TASK_NAMES
        assert str(SEED) not in json.dumps(manifest)
        for name, entry in manifest["tasks"].items():
            assert set(load_file(judged["root"] / side / entry["file"])) == {"x", "y", "x_query"}
    public, fresh = (Inputs.read(judged["root"] / side) for side in ("public", "fresh"))
    task = get("lasso/fixed")
    full = get("lasso/fixed").generate(SEED)
    assert torch.equal(fresh.load(task).x_query, full.x_query)
    assert not torch.equal(public.load(task).x_query, full.x_query)


def test_a_drawn_seed_goes_to_its_own_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inputs", str(tmp_path / "in"), "--tasks", "kernel/linear", "--draw-seed", str(tmp_path / "s")]) == 0
    seed = int((tmp_path / "s").read_text())
    assert (tmp_path / "s").stat().st_mode & 0o777 == 0o600 and str(seed) not in capsys.readouterr().out
    x = Inputs.read(tmp_path / "in").load(get("kernel/linear")).x
    assert torch.equal(x, get("kernel/linear").generate(seed).x)


def test_inputs_hold_the_in_pool_prompts_of_the_pools_submissions_declare(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--pool-of` reads each submission's declared pool from its results.json as validation reads it (a byte-order
    mark included): public or fresh in-pool prompts, as the sets. A folder that cannot be read, or whose results
    file is hostile, gets one line and adds no pool; the others' inputs are still made."""
    pooled = submission(tmp_path / "pooled", POOLED)
    bom = tmp_path / "bom"
    shutil.copytree(pooled, bom)
    (bom / "results.json").write_bytes(b"\xef\xbb\xbf" + (pooled / "results.json").read_bytes())
    deep = tmp_path / "deep"
    shutil.copytree(pooled, deep)
    (deep / "results.json").write_text("[" * 200_000 + "]" * 200_000)
    folders = [str(tmp_path / "missing"), str(deep), str(bom), str(pooled)]
    for side, seed in (("public", []), ("fresh", ["--seed", str(SEED)])):
        assert main(["inputs", str(tmp_path / side), "--tasks", "linear/noisy", "--prompts", "8", *seed,
                     "--pool-of", *folders]) == 0
        captured = capsys.readouterr()
        assert "and of the in-pool prompts of 1 declared task pool(s)" in captured.out
        assert captured.err.splitlines() == [
            f"iclbench inputs: no in-pool prompts for {tmp_path / 'missing'}: {tmp_path / 'missing' / 'results.json'}: "
            "No such file or directory",
            f"iclbench inputs: no in-pool prompts for {deep}: {deep / 'results.json'}: not readable JSON: "
            "nested deeper than 16 levels"]
        inputs = Inputs.read(tmp_path / side)
        assert sorted(inputs.manifest["tasks"]) == ["linear/noisy", "linear/noisy/in_pool/16/3"]
        expected = get("linear/noisy").pool_set(16, 3, *(SEED,) * bool(seed)).head(8)
        assert inputs.load(get("linear/noisy"), TaskPool(("linear/noisy",), 16, 3)).fingerprint() == \
            predictions.inputs_of(expected).fingerprint()


@pytest.mark.parametrize(("model", "returns"), [(TEMPLATE, "steps_rel_err_db"), ("ridge", "recovery")])
def test_replayed_predictions_score_as_a_direct_run(model: str, returns: str, tmp_path: Path) -> None:
    """The replay's results are a direct run's, metric for metric: the same predictions (the same model, batches and
    one thread) pass through the runner's own scoring; the template returns steps, ridge w, ar's labels are vectors."""
    chosen = select(["lasso/fixed", "kernel/linear", "ar/uniform"])
    cfg = RunConfig("cpu", "float32", 40, 64)
    predictions.write_inputs(tmp_path / "in", chosen, prompts=64)
    header, tensors = predictions.predict(load_model(model), Inputs.read(tmp_path / "in"), cfg)
    predictions.write(tmp_path / "p.safetensors", header, tensors)
    replay = run(ReplayedModel(predictions.read(tmp_path / "p.safetensors"), None, None), chosen, cfg, progress=False)
    direct = run(load_model(model), chosen, cfg, progress=False)
    for name, entry in direct["tasks"].items():
        assert {**entry, "seconds": 0} == {**replay["tasks"][name], "seconds": 0}, name
    assert any(returns in m for e in replay["tasks"].values() for m in e.get("lengths", {}).values())


POOLED = """
from iclbench import TaskSpec
from iclbench.baselines.ridge import Ridge


class PooledRidge(Ridge):
    name = "pooled-ridge"
    task_pool = {"tasks": ["linear/noisy"], "size": 16, "seed": 3}

    def supports(self, task: TaskSpec) -> bool:
        return task.name in ("linear/noisy", "kernel/linear")
"""


def test_in_pool_prompts_are_predicted_and_replayed_as_a_direct_run(tmp_path: Path) -> None:
    """A model that declares a pool of tasks answers the in-pool prompts of its pool's tasks that the inputs hold (no
    target), and the replay scores them as a direct run does; predictions of other in-pool prompts, or in-pool
    answers without a declared pool, are not scored, and inputs without the declared pool's prompts fail the task."""
    (tmp_path / "pooled.py").write_text(POOLED)
    chosen = select(["linear/noisy", "kernel/linear"])
    cfg = RunConfig("cpu", "float32", 40, 64)
    predictions.write_inputs(tmp_path / "bare", chosen, prompts=64)
    header, _ = predictions.predict(load_model(str(tmp_path / "pooled.py")), Inputs.read(tmp_path / "bare"), cfg)
    assert header["tasks"]["linear/noisy"] == {
        "inputs": header["tasks"]["linear/noisy"]["inputs"], "status": "failed",
        "error": "the model declares a pool of 16 tasks of seed 3, and the inputs hold no in-pool prompts of it "
                 "(iclbench inputs --pool-of FOLDER writes them)"}
    assert header["tasks"]["kernel/linear"]["status"] == "ok"
    pools = [TaskPool(("linear/noisy",), 16, 3), TaskPool(("linear/noisy",), 16, 4)]  # the model's, and another
    predictions.write_inputs(tmp_path / "in", chosen, prompts=64, pools=pools)
    assert sorted(Inputs.read(tmp_path / "in").manifest["tasks"]) == [
        "kernel/linear", "linear/noisy", "linear/noisy/in_pool/16/3", "linear/noisy/in_pool/16/4"]
    header, tensors = predictions.predict(load_model(str(tmp_path / "pooled.py")), Inputs.read(tmp_path / "in"), cfg)
    assert header["model"]["task_pool"] == {"tasks": ["linear/noisy"], "size": 16, "seed": 3}
    pooled = get("linear/noisy").pool_set(16, 3).head(64)
    assert header["tasks"]["linear/noisy"]["in_pool"] == {
        "size": 16, "seed": 3, "inputs": predictions.inputs_of(pooled).fingerprint(), "lengths": [5, 10, 20, 40, 80]}
    assert "in_pool" not in header["tasks"]["kernel/linear"]
    path = tmp_path / "p.safetensors"
    predictions.write(path, header, tensors)
    replay = run(ReplayedModel(predictions.read(path), None, None), chosen, cfg, progress=False)
    direct = run(load_model(str(tmp_path / "pooled.py")), chosen, cfg, progress=False)
    assert replay["model"]["task_pool"] == direct["model"]["task_pool"] == header["model"]["task_pool"]
    for name, entry in direct["tasks"].items():
        assert {**entry, "seconds": 0} == {**replay["tasks"][name], "seconds": 0}, name
    assert replay["tasks"]["linear/noisy"]["in_pool"]["lengths"] != replay["tasks"]["linear/noisy"]["lengths"]
    fewer = RunConfig("cpu", "float32", 16, 32)  # a replay of the first prompts answers the prompts asked about
    replay = run(ReplayedModel(predictions.read(path), None, None), chosen, fewer, progress=False)
    direct = run(load_model(str(tmp_path / "pooled.py")), chosen, fewer, progress=False)
    assert {**direct["tasks"]["linear/noisy"], "seconds": 0} == {**replay["tasks"]["linear/noisy"], "seconds": 0}
    replayed = ReplayedModel(predictions.read(path), None, None)
    replayed.supported_lengths(chosen[0].spec)
    data = get("linear/noisy").generate(SEED).head(8)  # prompts the predictions do not answer
    with pytest.raises(TaskFailure, match="holds no answers to these prompts of linear/noisy at n=5"):
        replayed.predict(Batch(chosen[0].spec, data.x[:, :5], data.y[:, :5], data.x_query))
    other = forged(path, tmp_path / "other.safetensors", _set("tasks.linear/noisy.in_pool.inputs", "0" * 64))
    entry = run(ReplayedModel(predictions.read(other), None, None), chosen, cfg, progress=False)["tasks"]
    assert entry["linear/noisy"]["status"] == "failed" and entry["kernel/linear"]["status"] == "ok"
    assert entry["linear/noisy"]["error"] == (
        f"linear/noisy: {other} answers in-pool inputs of fingerprint {'0' * 16}..., not those scored here "
        f"({header['tasks']['linear/noisy']['in_pool']['inputs'][:16]}...): predictions made on other inputs")
    for change, message in [
        (_set("model.task_pool", None), "tasks['linear/noisy'].in_pool is there, but the model declares no pool"),
        (_set("model.task_pool.seed", 4), "tasks['linear/noisy'].in_pool must hold the declared pool's size and seed"),
        (lambda h, t: t.pop("linear/noisy/in_pool/40/y"), "no prediction y for linear/noisy/in_pool/40"),
    ]:
        with pytest.raises(PredictionsError, match=re.escape(message)):
            predictions.read(forged(path, tmp_path / "forged.safetensors", change))


def test_score_judges_without_importing_the_model(judged: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Armed, the model's file fails and leaves a mark when imported: scoring leaves none and passes, and nothing
    in this process may load a model or start a process."""
    armed = judged["root"] / "ARMED"
    armed.write_text("")
    try:
        importing = f"import runpy; runpy.run_path({str(judged['folder'] / 'model.py')!r})"
        probe = subprocess.run([sys.executable, "-c", importing], capture_output=True, text=True)
        assert probe.returncode and (judged["root"] / "IMPORTED").exists()  # the trap works
        (judged["root"] / "IMPORTED").unlink()

        def refuse(*args: Any, **kwargs: Any) -> None:
            raise AssertionError("the judge tried to load or start something")

        for target, name in ((plugins, "load_model"), (worker.IsolatedModel, "__init__"), (subprocess, "Popen")):
            monkeypatch.setattr(target, name, refuse)
        report, problems = score.score(judged["folder"], judged["public"], judged["fresh"], SEED, True,
                                       select(TASK_NAMES))
    finally:
        armed.unlink()
    assert not (judged["root"] / "IMPORTED").exists()
    assert problems == [] and report["verdict"] == "pass" and report["seed_drawn"] is True
    assert set(report["tasks"]) == set(TASK_NAMES)


def test_score_command_writes_the_report(
    judged: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report.json"
    args = ["score", str(judged["folder"]), "--public", str(judged["public"]), "--fresh", str(judged["fresh"]),
            "--seed", str(SEED), "--tasks", *TASK_NAMES, "--out", str(out)]
    assert main(args) == 0
    assert json.loads(out.read_text())["verdict"] == "pass" and "verified on fresh data" in capsys.readouterr().out
    swapped = [*args[:3], str(judged["fresh"]), "--fresh", str(judged["public"]), *args[6:]]
    assert main(swapped) == 1  # each file answers other inputs than the judge's
    assert "predictions made on other inputs" in capsys.readouterr().out


def test_a_look_up_cheater_is_caught_from_its_predictions(tmp_path: Path) -> None:
    """A model that looks the public answers up is judged from its predictions: perfect on the public set, zero on the
    fresh one, it fails verification."""
    folder = tmp_path / "submissions" / "look-up"
    source = write_cheater(tmp_path / "source", "look-up", TASK_NAMES).read_text()
    submission(folder, source)
    predictions.write_inputs(tmp_path / "public", select(TASK_NAMES))
    predictions.write_inputs(tmp_path / "fresh", select(TASK_NAMES), seed=SEED)
    files = [predict_to(folder / "model.py", tmp_path / s, tmp_path / f"{s}.safetensors") for s in ("public", "fresh")]
    report, _ = score.score(folder, *files, SEED, True, select(TASK_NAMES))
    assert report["verdict"] == "fail" and all(report["tasks"][n]["verdict"] == "fail" for n in TASK_NAMES)


def forged(source: Path, out: Path, change: Callable[[dict, dict], None]) -> Path:
    """A copy of the predictions file `source` with its header and tensors changed by `change`."""
    with safe_open(str(source), "pt") as fh:
        header = json.loads(fh.metadata()[predictions.HEADER_KEY])
    tensors = load_file(source)
    change(header, tensors)
    predictions.write(out, header, tensors)
    return out


def _set(path: str, value: Any) -> Callable[[dict, dict], None]:
    def apply(header: dict, tensors: dict) -> None:
        *keys, last = path.split(".")
        target = header
        for key in keys:
            target = target[key]
        target[last] = value

    return apply


Y = "kernel/linear/4/y"
CASES: dict[str, tuple[Callable[[dict, dict], None], str]] = {
    "format": (_set("format", "other"), "not an iclbench-predictions file"),
    "suite": (_set("suite_version", "v0"), "made on suite 'v0'"),
    "args": (_set("model.args", {"k": 1}), "model must hold exactly name, source, class, args"),
    "sha": (_set("model.file_sha256", "x" * 64), "SHA-256 hex digests or null"),
    "dtype-name": (_set("run.dtype", "int8"), "run must hold dtype (float32 or float64)"),
    "prompts": (_set("run.prompts", 0), "prompts (positive integers or null)"),
    "unknown-task": (_set("tasks.linear/kappa9", {"status": "ok", "inputs": "0" * 64, "lengths": []}),
                     "tasks['linear/kappa9'] must be a task of suite"),
    "lengths": (_set("tasks.kernel/linear.lengths", [28, 4]), "lengths must be prompt lengths of kernel/linear"),
    "error": (_set("tasks.kernel/linear", {"status": "failed", "inputs": "0" * 64, "error": "x" * 5000}),
              "error must be a string of at most 2000"),
    "extra-tensor": (lambda h, t: t.update({"kernel/linear/4/target": t[Y].clone()}),
                     "tensor 'kernel/linear/4/target' is not"),
    "missing-y": (lambda h, t: t.pop(Y), "no prediction y for kernel/linear/4"),
    "shape": (lambda h, t: t.update({Y: t[Y][:100]}), f"tensor {Y!r} is F32 [100, 8], expected F32 [2048, 8]"),
    "dtype": (lambda h, t: t.update({Y: t[Y].double()}), f"tensor {Y!r} is F64 [2048, 8], expected F32"),
    "steps": (lambda h, t: t.update({"kernel/linear/4/steps": t[Y][:, None].expand(-1, 3, -1).contiguous()}),
              "expected F32 (P, K, q...) with 1 <= K <= 2"),
}


@pytest.mark.parametrize("case", CASES)
def test_forged_predictions_are_refused_with_one_line(
    judged: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    monkeypatch.setattr(predictions, "MAX_STEPS", 2)
    change, message = CASES[case]
    path = forged(judged["public"], tmp_path / "p.safetensors", change)
    with pytest.raises(PredictionsError) as info:
        predictions.read(path)
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value) and "\n" not in str(info.value)


def test_an_oversized_file_is_refused_before_it_is_read(
    judged: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(predictions, "MAX_BYTES", 1000)
    with pytest.raises(PredictionsError, match="over the limit of 1000 bytes"):
        predictions.read(judged["public"])


def test_predictions_that_replay_wrongly_fail_their_task(judged: dict[str, Path], tmp_path: Path) -> None:
    """NaN fails its task as in a run; predictions of another model file, or on fewer prompts, are not scored."""
    nan = forged(judged["public"], tmp_path / "nan.safetensors", lambda h, t: t[Y].__setitem__((5, 0), float("nan")))
    report, problems = score.score(judged["folder"], nan, judged["fresh"], SEED, True, select(TASK_NAMES))
    assert report["verdict"] == "fail"
    reason = report["tasks"]["kernel/linear"]["reason"]
    assert reason.startswith("results.json is not reproduced: ") and "NaN" in reason
    assert "kernel/linear: status 'ok' in results.json, 'failed' on re-run" in reason
    other = forged(judged["public"], tmp_path / "other.safetensors", _set("model.file_sha256", "0" * 64))
    report, problems = score.score(judged["folder"], other, judged["fresh"], SEED, True, select(TASK_NAMES))
    assert report is None and problems == [
        f"{other}: made by a model whose file_sha256 is {'0' * 64!r}, results.json has "
        f"{json.loads((judged['folder'] / 'results.json').read_text())['model']['file_sha256']!r}"
    ]
