"""`iclbench submit`: a trained run or a model file becomes a valid submission folder in one command; every
refusal is one line per problem and leaves nothing behind; adding a submission changes only its folder."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from iclbench.cli import main
from iclbench.plugins import sha256_file
from iclbench.submissions import create
from iclbench.submissions.schema import validate
from iclbench.tasks import TASKS

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "examples" / "template_model.py"
META = ["--authors", "A. Researcher", "--contact", "researcher@example.org", "--license", "MIT"]
KNN = ["--architecture", "k-nearest-neighbour regression, k = 1 to 8", *META]

pytestmark = pytest.mark.usefixtures("session_fingerprints")  # the sets are generated once, in a separate process


def submit(*args: str | Path) -> int:
    return main(["submit", *map(str, args), "--device", "cpu", "--quiet"])


def leftovers(submissions: Path) -> list[str]:
    """Temporary folders of `iclbench submit` beside `submissions`."""
    return sorted(p.name for p in submissions.parent.glob(".iclbench-submit-*"))


@pytest.fixture(scope="module")
def knn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The README's training-free kNN template, submitted with a full run of the suite (about a minute on CPU);
    what it printed on stderr (not a terminal) is kept in submit.log beside the submissions folder."""
    subs = tmp_path_factory.mktemp("knn") / "submissions"
    log = io.StringIO()
    with contextlib.redirect_stderr(log):
        assert main(["submit", str(TEMPLATE), "--id", "template-knn", "--submissions", str(subs), *KNN, "--device",
                     "cpu"]) == 0
    (subs.parent / "submit.log").write_text(log.getvalue())
    return subs / "template-knn"


def test_submit_prints_a_line_per_task(knn: Path) -> None:
    """Where a progress bar shows nothing (stderr not a terminal), the full run reports each task as it ends."""
    lines = (knn.parent.parent / "submit.log").read_text().splitlines()
    assert [line.split(":")[0] for line in lines] == [f"[{i}/{len(TASKS)}] {name}" for i, name in enumerate(TASKS, 1)]
    assert lines[0].startswith(f"[1/{len(TASKS)}] linear/kappa1: ") and " dB at n=40, " in lines[0]


def test_a_training_free_model_file(knn: Path) -> None:
    assert sorted(p.name for p in knn.iterdir()) == ["model.py", "results.json", "submission.yaml"]
    assert (knn / "model.py").read_bytes() == TEMPLATE.read_bytes()
    meta = yaml.safe_load((knn / "submission.yaml").read_text())
    assert meta == {
        "name": "template-knn",
        "authors": ["A. Researcher"],
        "contact": "researcher@example.org",
        "paper": None,
        "code": None,
        "license": "MIT",
        "architecture": "k-nearest-neighbour regression, k = 1 to 8",
        "parameters": 0,
        "training": None,
        "checkpoint": None,
    }
    doc = json.loads((knn / "results.json").read_text())
    assert doc["run"]["prompts"] is None and doc["run"]["dtype"] == "float32"  # a full run, every task
    assert all(t["status"] == "ok" for t in doc["tasks"].values())
    assert doc["model"]["file_sha256"] == sha256_file(TEMPLATE) and doc["model"]["checkpoint_sha256"] is None
    assert doc["model"]["source"] == (knn / "model.py").as_posix()  # where it lands, not the staging folder
    assert validate(knn) == [] and main(["validate", str(knn)]) == 0
    assert leftovers(knn.parent) == []


def test_training_free_schema(knn: Path, tmp_path: Path) -> None:
    sub = Path(shutil.copytree(knn, tmp_path / "submissions" / "template-knn"))
    meta = yaml.safe_load((sub / "submission.yaml").read_text())
    (sub / "submission.yaml").write_text(yaml.safe_dump({**meta, "training": {"tasks": ["x"], "sampler_seeds": [0], "steps": 1}}))
    assert any("must both be mappings (a trained model) or both null" in p for p in validate(sub))
    (sub / "submission.yaml").write_text(yaml.safe_dump(meta))
    doc = json.loads((sub / "results.json").read_text())
    doc["model"]["checkpoint_sha256"] = "ab" * 32  # the run loaded weights that the metadata do not declare
    (sub / "results.json").write_text(json.dumps(doc))
    (problem,) = validate(sub)
    assert "the run loaded a checkpoint" in problem and "declares none (checkpoint: null)" in problem


def test_results_of_the_same_file_are_reused(knn: Path, tmp_path: Path) -> None:
    subs = tmp_path / "submissions"
    given = ["--id", "template-knn", "--submissions", subs, "--results", knn / "results.json", *KNN]
    assert submit(TEMPLATE, *given) == 0
    assert (subs / "template-knn" / "results.json").read_bytes() == (knn / "results.json").read_bytes()
    assert validate(subs / "template-knn") == []

    edited = tmp_path / "edited.py"  # another file: the results are not a run of it
    edited.write_text(TEMPLATE.read_text().replace("max_k = 8", "max_k = 4"))
    assert submit(edited, *given, "--force") == 1
    assert (subs / "template-knn" / "results.json").read_bytes() == (knn / "results.json").read_bytes()  # kept
    assert leftovers(subs) == []


def test_refusals(knn: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    subs = tmp_path / "submissions"
    assert submit(TEMPLATE, "--submissions", subs) == 2
    assert capsys.readouterr().err.splitlines() == [
        "iclbench submit: missing --id (the submission id: the folder's name)",
        "iclbench submit: missing --authors (the authors' names)",
        "iclbench submit: missing --contact (an e-mail address)",
        "iclbench submit: missing --license (the licence of the code and weights, e.g. MIT)",
        "iclbench submit: missing --architecture (a short description of the model file's model)",
    ]
    cases = [
        (["--id", "Bad_Id"], "--id 'Bad_Id' is not a valid submission id"),
        (["--id", "my-knn", "--name", "other"], "the model in "),
        (["--id", "my-knn", "--contact", "nobody"], "field 'contact' must be an e-mail address"),
        (["--id", "ridge"], "'ridge' is already the name of the baseline 'ridge'"),
    ]
    for extra, message in cases:
        assert submit(TEMPLATE, "--submissions", subs, *KNN, *extra) == 1
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    limited = json.loads((knn / "results.json").read_text())
    limited["run"].update(prompts=10, limited=True)
    (tmp_path / "limited.json").write_text(json.dumps(limited))
    assert submit(TEMPLATE, "--id", "my-knn", "--submissions", subs, "--results", tmp_path / "limited.json", *KNN) == 1
    assert "a limited run (--prompts 10); the leaderboard needs full runs" in capsys.readouterr().err
    assert not subs.exists() or list(subs.iterdir()) == []
    assert leftovers(subs) == []

    assert submit(f"{TEMPLATE}:Nope", "--id", "my-knn", "--submissions", subs, *KNN) == 1  # the class is checked
    assert f"the model {TEMPLATE} defines is NearestNeighbours, not Nope" in capsys.readouterr().err
    two = tmp_path / "two.py"  # CI loads model.py with no class named: it must hold one model
    two.write_text(TEMPLATE.read_text() + "\n\nclass Other(NearestNeighbours):\n    name = 'other-knn'\n")
    assert submit(f"{two}:Other", "--id", "my-knn", "--submissions", subs, *KNN) == 1
    assert f"{two}:Other: a submission's model.py defines one model: " in capsys.readouterr().err
    assert leftovers(subs) == []

    shutil.copytree(knn, subs / "template-knn")  # an existing folder is replaced only with --force
    assert submit(TEMPLATE, "--id", "template-knn", "--submissions", subs, *KNN) == 1
    assert "already exists: choose another --id, or replace it with --force" in capsys.readouterr().err


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short `iclbench train` run of a 1-layer LSA on linear/kappa1."""
    out = tmp_path_factory.mktemp("train") / "run"
    args = ["train", "--task", "linear/kappa1", "--steps", "20", "--val-every", "10", "--val-prompts", "16"]
    assert main([*args, "--device", "cpu", "--threads", "1", "--out", str(out), "--quiet"]) == 0
    return out


def test_a_trained_run(trained: Path, tmp_path: Path) -> None:
    subs = tmp_path / "submissions"
    assert submit(trained, "--id", "tiny-lsa", "--submissions", subs, "--paper", "https://example.org/p", *META) == 0
    sub = subs / "tiny-lsa"
    assert sorted(p.name for p in sub.iterdir()) == [
        "log.json", "model.py", "results.json", "submission.yaml", "weights.safetensors"
    ]
    log = json.loads((trained / "log.json").read_text())
    meta = yaml.safe_load((sub / "submission.yaml").read_text())
    digest = sha256_file(trained / "model.safetensors")
    assert meta["name"] == "tiny-lsa" and meta["paper"] == "https://example.org/p"
    assert meta["architecture"] == "1-layer linear self-attention (LSA), 1 head(s), width 21, no MLP"
    assert meta["parameters"] == log["parameters"] == 882
    assert meta["training"] == {"tasks": ["linear/kappa1"], "sampler_seeds": [0], "steps": 20, "command": log["command"]}
    assert meta["checkpoint"] == {"file": "weights.safetensors", "sha256": digest}
    doc = json.loads((sub / "results.json").read_text())
    assert doc["model"]["checkpoint_sha256"] == digest and doc["run"]["prompts"] is None
    assert doc["tasks"]["linear/kappa1"]["status"] == "ok" and doc["tasks"]["lasso/fixed"]["status"] == "unsupported"
    assert validate(sub) == []


def test_a_trained_run_that_does_not_add_up(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = Path(shutil.copytree(trained, tmp_path / "run"))
    subs = tmp_path / "submissions"
    log = json.loads((run / "log.json").read_text())
    (run / "log.json").write_text(json.dumps({**log, "parameters": 10}))
    assert submit(run, "--id", "tiny-lsa", "--submissions", subs, *META) == 1
    assert f"{run / 'log.json'}: parameters is 10, {run / 'model.safetensors'} holds 882" in capsys.readouterr().err
    (run / "log.json").write_text(json.dumps({**log, "final": None}))
    assert submit(run, "--id", "tiny-lsa", "--submissions", subs, *META) == 1
    assert "the training run has not finished" in capsys.readouterr().err
    (run / "log.json").write_text(json.dumps(log))
    assert submit(run, "--id", "tiny-lsa", "--submissions", subs, "--parameters", "3", *META) == 1
    assert "a trained run's parameters are counted in its checkpoint" in capsys.readouterr().err
    assert not subs.exists() or list(subs.iterdir()) == []
    assert leftovers(subs) == []


def test_adding_a_submission_changes_only_its_folder(knn: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a clone of this repository, what a submitter runs (submit, validate, a local leaderboard and its check)
    leaves git with one new folder and nothing else."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", "--no-checkout", str(ROOT), str(clone)], check=True)
    # the other submissions are left out of the working tree (sparse checkout: git counts them neither as deleted
    # nor as changed), so the local leaderboard is built from the new folder alone
    subprocess.run(["git", "sparse-checkout", "set", "--no-cone", "/*", "!/submissions/*/"], cwd=clone, check=True)
    subprocess.run(["git", "checkout", "-q"], cwd=clone, check=True)
    assert (clone / "submissions" / "README.md").is_file() and not list((clone / "submissions").glob("*/"))
    monkeypatch.chdir(clone)
    results = tmp_path / "results.json"
    shutil.copyfile(knn / "results.json", results)
    assert submit("examples/template_model.py", "--id", "template-knn", "--results", results, *KNN) == 0
    assert main(["validate", "submissions/template-knn"]) == 0
    assert main(["leaderboard"]) == 0 and Path("leaderboard/index.html").is_file()
    assert main(["leaderboard", "--check"]) == 0
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"], check=True, capture_output=True, text=True
    ).stdout.splitlines()
    assert status == [
        f"?? submissions/template-knn/{name}" for name in ("model.py", "results.json", "submission.yaml")
    ]


def test_a_failed_run_keeps_its_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    broken = tmp_path / "broken.py"
    broken.write_text(TEMPLATE.read_text().replace("k = min(self.max_k, batch.n)", "raise ValueError('no k')"))
    assert submit(broken, "--id", "broken-knn", *KNN) == 1
    err = capsys.readouterr().err
    assert "iclbench submit: linear/kappa1: predict raised ValueError: no k (n=5, prompts 0-511)\n" in err and "the run's results are kept in results/broken-knn.submit.json" in err
    assert json.loads(Path("results/broken-knn.submit.json").read_text())["tasks"]["kernel/relu"]["status"] == "failed"
    assert not Path("submissions/broken-knn").exists() and leftovers(Path("submissions")) == []


def test_an_interrupted_run_keeps_its_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C during the run: what was scored is kept, the staging folder is removed, one line says where."""
    monkeypatch.chdir(tmp_path)

    def interrupted(model: object, tasks: list, cfg: object, out: Path, **kw: object) -> None:
        out.write_text('{"tasks": {}}\n')  # the runner writes each finished task before the next starts
        raise KeyboardInterrupt

    monkeypatch.setattr(create, "run", interrupted)
    assert submit(TEMPLATE, "--id", "stopped-knn", *KNN) == 1
    err = capsys.readouterr().err
    assert err == "iclbench submit: interrupted\niclbench submit: the run's results are kept in results/stopped-knn.submit.json\n"
    assert Path("results/stopped-knn.submit.json").read_text() == '{"tasks": {}}\n'
    assert not Path("submissions/stopped-knn").exists() and leftovers(Path("submissions")) == []
