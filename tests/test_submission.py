"""`iclbench validate`: a valid submission passes (re-run included); each kind of broken one fails clearly."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from fixtures.submission_kit import make_submission, write_meta
from safetensors.torch import load_file, save_file

from iclbench import samples
from iclbench.checkpoint import check_safetensors
from iclbench.cli import main
from iclbench.plugins import sha256_file
from iclbench.submissions.rerun import db_close
from iclbench.submissions.schema import ID_RE, validate
from iclbench.tasks import SUITE_VERSION


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_submission(tmp_path_factory.mktemp("pristine") / "tiny-gd")


@pytest.fixture
def sub(pristine: Path, tmp_path: Path) -> Path:
    """A fresh copy of the valid submission, to break."""
    return Path(shutil.copytree(pristine, tmp_path / "submissions" / "tiny-gd"))


def edit_results(folder: Path, change) -> None:
    doc = json.loads((folder / "results.json").read_text())
    change(doc)
    (folder / "results.json").write_text(json.dumps(doc))


def only(problems: list[str], *fragments: str) -> None:
    """Every fragment appears in one reported problem."""
    assert problems, "expected the submission to be rejected"
    for fragment in fragments:
        assert any(fragment in p for p in problems), f"{fragment!r} not in {problems}"


def test_valid_submission_passes(sub: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (sub / "__pycache__").mkdir()  # left by importing model.py; git ignores it, so does validation
    (sub / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"\x00")
    assert validate(sub) == []
    assert main(["validate", str(sub)]) == 0
    assert "valid" in capsys.readouterr().out


def test_rerun_matches_and_catches_changed_numbers(sub: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(sub), "--rerun", "--tasks", "linear/kappa1", "kernel/linear", "lasso/fixed"]) == 0
    assert "re-run matches" in capsys.readouterr().out

    def nudge(doc: dict) -> None:
        m = doc["tasks"]["linear/kappa1"]["lengths"]["20"]
        m["rel_err"]["db"] += 0.02  # inside the 0.1 dB tolerance
        m["steps_rel_err_db"][3] -= 0.5  # outside it
        doc["tasks"]["linear/kappa1"]["lengths"]["40"]["rel_err"]["ci90_db"][1] += 1.0

    edit_results(sub, nudge)
    problems = validate(sub, rerun=True, tasks=["linear/kappa1"])
    assert len(problems) == 2, problems
    only(problems, "linear/kappa1 n=20: steps_rel_err_db.[3]", "linear/kappa1 n=40: rel_err.ci90_db[1]")


def test_rerun_prints_a_line_per_task_and_writes_its_samples(sub: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """`validate --rerun` reports each task as it ends (stderr not a terminal); with `--samples DIR` it writes the
    re-run's per-prompt samples as DIR/<id>.samples.safetensors, of the submission's model and numbers."""
    out = tmp_path / "samples"
    args = ["validate", str(sub), "--rerun", "--tasks", "linear/kappa1", "kernel/linear", "--samples", str(out)]
    assert main(args) == 0
    err = capsys.readouterr().err.splitlines()
    assert [line.split(":")[0] for line in err] == ["[1/2] linear/kappa1", "[2/2] kernel/linear"]
    side = samples.load(out / f"tiny-gd{samples.SUFFIX}", ("rel_err", "target_sq"))
    doc = json.loads((sub / "results.json").read_text())
    assert side.header["model"]["file_sha256"] == doc["model"]["file_sha256"]
    for task in ("linear/kappa1", "kernel/linear"):
        for n, m in side.header["tasks"][task]["lengths"].items():
            assert db_close(m["rel_err_db"], doc["tasks"][task]["lengths"][n]["rel_err"]["db"], "float32")
    assert main(["validate", str(sub), "--samples", str(out)]) == 2
    assert capsys.readouterr().err == "iclbench validate: --samples only applies with --rerun\n"
    assert main(["validate", str(sub), "--rerun", "--tasks", "linear/kappa1", "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_rerun_catches_a_model_that_changed_support(sub: Path) -> None:
    edit_results(sub, lambda d: d["tasks"]["linear/kappa1"].update(unsupported_lengths=[80]))
    edit_results(sub, lambda d: d["tasks"]["linear/kappa1"]["lengths"].pop("80"))
    assert validate(sub) == []  # consistent on its face
    only(validate(sub, rerun=True, tasks=["linear/kappa1"]), "unsupported lengths [80] in results.json, [] on re-run")


def test_missing_fields(sub: Path) -> None:
    write_meta(sub, authors=None, license=None, training={"tasks": ["linear/kappa1"], "steps": 10})
    only(validate(sub), "missing field 'authors'", "missing field 'license'", "training: missing field 'sampler_seeds'")


def test_missing_checkpoint_and_files(sub: Path) -> None:
    write_meta(sub, checkpoint=None)
    (sub / "model.py").unlink()
    only(validate(sub), "missing field 'checkpoint'", "missing model.py")


def test_wrong_types(sub: Path) -> None:
    write_meta(
        sub,
        parameters="many",
        authors="A. Researcher",
        contact="nobody",
        paper="arxiv 1234",
        training={"tasks": ["linear/kappa1"], "sampler_seeds": [0], "steps": 1.5},
        licence="MIT",
    )
    only(
        validate(sub),
        "field 'parameters' must be an integer from 0 to 1e+13: the number of trained parameters",
        "field 'authors' must be a non-empty list of names, got str 'A. Researcher'",
        "field 'contact' must be an e-mail address",
        "field 'paper' must be an http(s) URL",
        "training: field 'steps' must be a positive integer: the number of training steps, got float 1.5",
        "unknown field 'licence'",
    )
    write_meta(sub, parameters=10**14)  # no checkpoint a submission can hold has that many
    only(validate(sub), "field 'parameters' must be an integer from 0 to 1e+13")


def test_yaml_is_parsed_safely(sub: Path, tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    (sub / "submission.yaml").write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\n")
    only(validate(sub), "submission.yaml: not readable YAML")
    assert not marker.exists()
    (sub / "submission.yaml").write_text("- just\n- a list\n")
    only(validate(sub), "expected a YAML mapping of fields, got list")
    (sub / "submission.yaml").write_text("parameters: " + "9" * 5000 + "\n")  # beyond Python's int conversion
    only(validate(sub), "submission.yaml: not readable YAML: Exceeds the limit")


def test_wrong_hash(sub: Path) -> None:
    meta = yaml.safe_load((sub / "submission.yaml").read_text())
    save_file({"lr": torch.tensor(0.07)}, str(sub / "weights.safetensors"))  # the file changed after hashing
    problems = validate(sub)
    only(
        problems,
        f"SHA-256 is {sha256_file(sub / 'weights.safetensors')}, but submission.yaml declares "
        f"{meta['checkpoint']['sha256']}",
    )


def test_malformed_hash_and_revision(sub: Path) -> None:
    write_meta(sub, checkpoint={"file": "weights.safetensors", "sha256": "ABC"})
    only(validate(sub), "checkpoint: field 'sha256' must be the file's SHA-256 as 64 lowercase hex digits")
    hub = {"repo_id": "org/tiny", "filename": "weights.safetensors", "revision": "main", "sha256": "0" * 64}
    write_meta(sub, checkpoint=hub)
    only(validate(sub), "field 'revision' must be the 40-hex-digit commit hash", "not the declared checkpoint")
    write_meta(sub, checkpoint={**hub, "file": "weights.safetensors"})
    only(validate(sub), "checkpoint needs exactly one of 'file' (in the folder) or 'repo_id' (on the Hub)")


class Trap:
    """Unpickling this creates a file: proof that a pickle was executed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


@pytest.mark.parametrize("kind", ["torch.save", "pickle"])
def test_pickle_posing_as_checkpoint_is_never_loaded(sub: Path, tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "executed"
    target = sub / "weights.safetensors"
    if kind == "torch.save":
        torch.save({"lr": torch.tensor(0.05), "trap": Trap(marker)}, target)
    else:
        target.write_bytes(pickle.dumps({"trap": Trap(marker)}, protocol=4))
    write_meta(sub, checkpoint={"file": "weights.safetensors", "sha256": sha256_file(target)})
    problems = validate(sub, rerun=True)
    expected = "a zip archive (the torch.save format" if kind == "torch.save" else "this is a Python pickle"
    only(problems, expected, "not a safetensors file")
    assert not marker.exists()


@pytest.mark.parametrize("length", [0x380, 0x480, 0x580])
def test_a_safetensors_header_length_that_starts_like_a_pickle_is_read(tmp_path: Path, length: int) -> None:
    """A header of 0x380 bytes makes a file start with b"\\x80\\x03", a pickle's first two bytes."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    path = tmp_path / "w.safetensors"
    path.write_bytes(length.to_bytes(8, "little") + header.ljust(length) + b"\0\0\x80\x3f")
    assert path.read_bytes()[:1] == b"\x80"
    assert set(check_safetensors(path, 10**6)) == {"w"}
    assert load_file(path)["w"].tolist() == [1.0]


def test_truncated_safetensors(sub: Path) -> None:
    target = sub / "weights.safetensors"
    target.write_bytes(target.read_bytes()[:-2])
    write_meta(sub, checkpoint={"file": "weights.safetensors", "sha256": sha256_file(target)})
    only(validate(sub), "tensor 'lr' has byte range 0-4, inconsistent with its F32 shape [] or the file's 2 data bytes")


def test_results_from_another_suite_version(sub: Path) -> None:
    edit_results(sub, lambda d: d.update(suite_version="v0"))
    only(validate(sub), f"made on suite 'v0'; this is suite {SUITE_VERSION!r}")


def test_results_schema_fingerprint_and_limited(sub: Path) -> None:
    edit_results(sub, lambda d: d.update(schema_version=2))
    only(validate(sub), "schema_version is 2, expected 1")
    edit_results(sub, lambda d: d.update(schema_version=1))
    edit_results(sub, lambda d: d["tasks"]["linear/kappa1"].update(fingerprint="0" * 64))
    edit_results(sub, lambda d: d["run"].update(prompts=64, limited=True, dtype="float64"))
    edit_results(sub, lambda d: d["tasks"].pop("lasso/random"))
    only(
        validate(sub),
        "fingerprint 0000000000000000... is not the suite's",
        "a limited run (--prompts 64)",
        "run in float64; the leaderboard compares float32 runs",
        "tasks missing: lasso/random",
    )


def test_results_made_with_model_arguments_are_refused(sub: Path) -> None:
    """CI re-runs and verifies a submission without --model-args: results made with them cannot be checked."""
    edit_results(sub, lambda d: d["model"].update(args={"scale": 2.0}))
    only(validate(sub), "model.args is dict {'scale': 2.0}: the leaderboard re-runs a model without arguments")


def test_results_must_match_the_submitted_files(sub: Path) -> None:
    edit_results(sub, lambda d: d["model"].update(name="other"))
    with open(sub / "model.py", "a") as fh:
        fh.write("\n# edited after the run\n")
    only(validate(sub), "model.name is 'other', submission.yaml says 'tiny-gd'", "not the SHA-256 of model.py")


def test_failed_task_is_rejected(sub: Path) -> None:
    edit_results(sub, lambda d: d["tasks"]["linear/kappa1"].update(status="failed", error="linear/kappa1: boom"))
    only(validate(sub), "task linear/kappa1 failed: linear/kappa1: boom")


def test_checkpoint_path_escaping_the_folder(sub: Path) -> None:
    outside = sub.parent.parent / "outside.safetensors"
    shutil.copy(sub / "weights.safetensors", outside)
    digest = sha256_file(outside)
    (sub / "weights.safetensors").unlink()
    write_meta(sub, checkpoint={"file": "../../outside.safetensors", "sha256": digest})
    only(
        validate(sub),
        "checkpoint: field 'file' must be a relative path inside the submission folder to a .safetensors file "
        "(ASCII, no '..', no leading '/'), got str '../../outside.safetensors'",
    )
    write_meta(sub, checkpoint={"file": str(outside), "sha256": digest})
    only(validate(sub), "field 'file' must be a relative path inside the submission folder", f"got str '{str(outside)[:40]}")


def test_symlinks_are_rejected(sub: Path) -> None:
    outside = sub.parent.parent / "outside.safetensors"
    shutil.move(sub / "weights.safetensors", outside)
    (sub / "weights.safetensors").symlink_to(outside)
    (sub / "data").symlink_to(sub.parent.parent, target_is_directory=True)
    only(
        validate(sub),
        f"{sub / 'weights.safetensors'}: symbolic links are not accepted",
        f"{sub / 'data'}: symbolic links are not accepted",
        "is a symbolic link; commit the file itself",
    )


def test_folder_name_file_kinds_and_sizes(sub: Path) -> None:
    bad = sub.rename(sub.parent / "Tiny_GD")
    (bad / "weights.pt").write_bytes(b"\x80\x04.")
    (bad / "NOTES.md").write_text("x" * (256 * 1024 + 1))
    (bad / "extra.safetensors").write_bytes((bad / "weights.safetensors").read_bytes())
    only(
        validate(bad),
        "'Tiny_GD' is not a valid submission id",
        "weights.pt: file type not accepted",
        "NOTES.md: 262145 bytes, over the 262144-byte limit",
        "extra.safetensors: a .safetensors file that is not the declared checkpoint",
    )


@pytest.mark.parametrize(
    "name,ok",
    [
        ("abc", True),
        ("my-model-2", True),
        ("ab", False),
        ("-abc", False),
        ("abc-", False),
        ("ABC", False),
        ("a_b", False),
        ("a" * 64, True),
        ("a" * 65, False),
    ],
)
def test_id_form(name: str, ok: bool) -> None:
    assert (ID_RE.fullmatch(name) is not None) == ok


def test_cli_reports_each_problem(sub: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_meta(sub, parameters=0, contact=None)
    assert main(["validate", str(sub)]) == 1
    out = capsys.readouterr().out
    assert "error:" in out and "field 'parameters' is 0, but a trained model with a checkpoint has parameters" in out
    assert "missing field 'contact'" in out and "INVALID, 2 problem(s)" in out
