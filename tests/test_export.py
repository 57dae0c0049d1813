"""Portable evaluation data: `iclbench export DIR` and `--data DIR`, verified before anything runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.numpy import load_file as load_numpy
from safetensors.torch import load_file, save_file

from iclbench import cache, tasks
from iclbench.cli import main
from iclbench.plugins import sha256_file

SMALL = ["lasso/fixed", "lasso/random"]  # the quickest to generate


@pytest.fixture
def pinned(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The small tasks' registry fingerprints set to what this machine generates; the suite cut to them."""
    monkeypatch.setattr(tasks, "TASKS", {name: tasks.TASKS[name] for name in SMALL})
    for name in SMALL:
        monkeypatch.setitem(tasks.FINGERPRINTS, name, tasks.get(name).generate().fingerprint())
    yield {name: tasks.FINGERPRINTS[name] for name in SMALL}
    cache.use_export(None)


@pytest.fixture
def export(pinned: dict[str, str], tmp_path: Path) -> Path:
    folder = tmp_path / "export"
    assert main(["export", str(folder)]) == 0
    return folder


def manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def test_export_round_trip_gives_identical_tensors(export: Path) -> None:
    m = manifest(export)
    assert m["suite_version"] == tasks.SUITE_VERSION and m["format"] == "iclbench-export" and m["provenance"]["cpu"]
    assert set(m["tasks"]) == set(SMALL)
    cache.use_export(export, tasks.select(SMALL))
    assert cache.export_in_use() == export
    for name in SMALL:
        entry = m["tasks"][name]
        assert entry["sha256"] == sha256_file(export / entry["file"])
        data, fingerprint = cache.eval_set(tasks.get(name))
        assert fingerprint == entry["fingerprint"] == tasks.FINGERPRINTS[name]
        generated = tasks.get(name).generate().tensors()
        loaded = data.tensors()
        assert loaded.keys() == generated.keys()
        assert all(torch.equal(loaded[k], generated[k]) for k in generated)
        arrays = load_numpy(export / entry["file"])  # readable without torch, e.g. from JAX
        assert all((arrays[k] == generated[k].numpy()).all() for k in generated)


def refused(capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str, code: int = 2) -> str:
    """Run the CLI, expect exit `code` and one line on stderr containing `fragment`; return stdout."""
    assert main(argv) == code
    captured = capsys.readouterr()
    assert len(captured.err.strip().splitlines()) == 1 and fragment in captured.err, captured.err
    return captured.out


def run_args(export: Path, out: Path) -> list[str]:
    return ["run", "--quiet", "--model", "zero", "--tasks", "lasso/fixed", "--data", str(export), "--out", str(out)]


def test_tampered_file_is_refused(export: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = export / manifest(export)["tasks"]["lasso/fixed"]["file"]
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 1
    path.write_bytes(bytes(raw))
    assert refused(capsys, run_args(export, tmp_path / "out"), "lasso--fixed.safetensors: SHA-256 ") == ""
    assert not (tmp_path / "out").exists()  # nothing run


def test_export_of_another_suite_version_is_refused(export: Path, tmp_path: Path, capsys) -> None:
    m = manifest(export)
    m["suite_version"] = "v0"
    (export / "manifest.json").write_text(json.dumps(m))
    message = f"made on suite 'v0'; this is suite {tasks.SUITE_VERSION!r}: run `iclbench export` again"
    refused(capsys, run_args(export, tmp_path / "out"), message)
    refused(capsys, ["list", "--verify", "--data", str(export)], message)
    assert not (tmp_path / "out").exists()


def test_data_that_are_not_the_suites_are_refused(export: Path, tmp_path: Path, capsys) -> None:
    """A consistent export (manifest and file agree) of other data than the registry's."""
    m = manifest(export)
    entry = m["tasks"]["lasso/fixed"]
    path = export / entry["file"]
    tensors = load_file(path)
    tensors["y"][0, 0] += 1.0
    save_file(tensors, path)
    entry.update(sha256=sha256_file(path), fingerprint=tasks.EvalSet.from_tensors(tensors).fingerprint())
    (export / "manifest.json").write_text(json.dumps(m))
    refused(capsys, run_args(export, tmp_path / "out"), "is not both the manifest's")
    assert not (tmp_path / "out").exists()


def test_run_and_list_read_a_verified_export(export: Path, tmp_path: Path, capsys) -> None:
    assert main(run_args(export, tmp_path / "out")) == 0
    doc = json.loads((tmp_path / "out" / "zero.json").read_text())
    entry = doc["tasks"]["lasso/fixed"]
    assert entry["status"] == "ok" and entry["fingerprint_ok"] and entry["n_prompts"] == 2048
    assert doc["run"]["data_export"] == str(export) and doc["run"]["data_mismatch"] == []
    capsys.readouterr()
    assert main(["list", "--verify", "--data", str(export)]) == 0
    assert capsys.readouterr().out.count(" ok") == len(SMALL)


def test_export_refuses_data_that_do_not_match(pinned: dict[str, str], tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setitem(tasks.FINGERPRINTS, "lasso/random", "0" * 64)
    refused(capsys, ["export", str(tmp_path / "export")], "the evaluation data of lasso/random do not match", code=1)
    assert not (tmp_path / "export").exists()


def test_export_from_a_verified_export(export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine whose own data do not match can pass a verified export on."""
    monkeypatch.setattr(tasks.Task, "generate", lambda self: pytest.fail("generated instead of read"))
    again = tmp_path / "again"
    assert main(["export", str(again), "--data", str(export)]) == 0
    assert manifest(again)["tasks"] == manifest(export)["tasks"]


def test_a_missing_or_foreign_manifest_is_one_line(pinned: dict[str, str], tmp_path: Path, capsys) -> None:
    refused(capsys, run_args(tmp_path, tmp_path / "out"), "manifest.json: not a readable export manifest")
    (tmp_path / "manifest.json").write_text("{}")
    refused(capsys, run_args(tmp_path, tmp_path / "out"), "manifest.json: not an iclbench export manifest")


def test_validate_rerun_takes_data_from_an_export(export: Path, tmp_path: Path, capsys) -> None:
    refused(capsys, ["validate", str(tmp_path), "--data", str(export)], "--data only applies with --rerun")
    (export / "manifest.json").unlink()
    refused(capsys, ["validate", str(tmp_path), "--rerun", "--data", str(export)], "not a readable export manifest")
