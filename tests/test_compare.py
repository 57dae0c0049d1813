"""`--log-samples` and `iclbench compare`: per-prompt errors that reproduce the results, and the paired
difference checked against an independent computation (NumPy, SciPy)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from iclbench import samples
from iclbench.cli import main

TASKS = ["linear/kappa10", "linear/noisy"]  # in suite order
PROMPTS = 128


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ridge and averaging on two linear tasks, with their per-prompt samples."""
    folder = tmp_path_factory.mktemp("compare")
    for model, prompts in (("ridge", PROMPTS), ("averaging", PROMPTS + 64)):
        assert main(["run", "--model", model, "--tasks", ",".join(TASKS), "--prompts", str(prompts), "--quiet",
                     "--device", "cpu", "--log-samples", "--out", str(folder)]) == 0
    return folder


def _db(v: float) -> float:
    return 10 * np.log10(v)


def test_samples_reproduce_the_results_numbers(two_runs: Path) -> None:
    doc = json.loads((two_runs / "ridge.json").read_text())
    arrays = load_file(two_runs / "ridge.samples.safetensors")
    with safe_open(two_runs / "ridge.samples.safetensors", "np") as fh:
        head = json.loads(fh.metadata()["header"])
    assert head["suite_version"] == doc["suite_version"] and head["model"]["name"] == "ridge"
    for name in TASKS:
        assert head["tasks"][name]["fingerprint"] == doc["tasks"][name]["fingerprint"]
        for n, m in doc["tasks"][name]["lengths"].items():
            rel, weight, y = (arrays[f"{name}/{n}/{k}"] for k in ("rel_err", "target_sq", "y"))
            assert rel.shape == weight.shape == (PROMPTS,) and rel.dtype == weight.dtype == np.float64
            assert y.shape == (PROMPTS, 8) and y.dtype == np.float32
            assert _db((rel * weight).sum() / weight.sum()) == pytest.approx(m["rel_err"]["db"], abs=1e-9)


def test_compare_gives_the_paired_interval(two_runs: Path, capsys) -> None:
    a, b = two_runs / "averaging.json", two_runs / "ridge.json"
    rows = samples.compare(samples.load(a), samples.load(b))
    assert [(r["task"], r["n"], r["prompts"]) for r in rows] == [(t, 40, PROMPTS) for t in TASKS]
    arr_a, arr_b = load_file(samples.path_for(a)), load_file(samples.path_for(b))
    doc_b = json.loads(b.read_text())
    for row in rows:
        key = f"{row['task']}/40"
        w = arr_b[f"{key}/target_sq"]
        np.testing.assert_array_equal(arr_a[f"{key}/target_sq"][:PROMPTS], w)  # the same prompts, paired
        err_a, err_b = arr_a[f"{key}/rel_err"][:PROMPTS] * w, arr_b[f"{key}/rel_err"] * w
        # the point estimate: the difference of the two models' rel_err in dB over the common prompts
        assert row["b_db"] == pytest.approx(doc_b["tasks"][row["task"]]["lengths"]["40"]["rel_err"]["db"], abs=1e-9)
        assert row["diff_db"] == pytest.approx(_db(err_a.sum() / w.sum()) - _db(err_b.sum() / w.sum()), abs=1e-9)
        # the documented bootstrap (1,000 resamples of prompts from PCG64(0), 5% and 95% quantiles), by indices
        idx = np.random.Generator(np.random.PCG64(0)).integers(0, PROMPTS, size=(1000, PROMPTS))
        stat = _db(err_a[idx].sum(1) / w[idx].sum(1)) - _db(err_b[idx].sum(1) / w[idx].sum(1))
        np.testing.assert_allclose(row["ci90_db"], np.quantile(stat, [0.05, 0.95]), rtol=0, atol=1e-9)
        # SciPy's paired percentile bootstrap with other resamples agrees within Monte Carlo error
        ref = scipy.stats.bootstrap(
            (err_a, err_b, w), lambda x, y, v, axis=-1: _db(x.sum(axis) / v.sum(axis)) - _db(y.sum(axis) / v.sum(axis)),
            paired=True, vectorized=True, n_resamples=20000, confidence_level=0.9, method="percentile",
            random_state=np.random.default_rng(1)).confidence_interval
        width = row["ci90_db"][1] - row["ci90_db"][0]
        assert abs(row["ci90_db"][0] - ref.low) < 0.1 * width and abs(row["ci90_db"][1] - ref.high) < 0.1 * width
        assert row["ci90_db"][0] < row["diff_db"] < row["ci90_db"][1]
    assert main(["compare", str(a), str(samples.path_for(b)), "--tasks", "linear/noisy"]) == 0
    out = capsys.readouterr().out
    noisy = rows[1]
    lo, hi = noisy["ci90_db"]
    assert f"{noisy['diff_db']:+.2f}" in out and f"[{lo:+.2f}, {hi:+.2f}]" in out and "linear/kappa10" not in out
    assert main(["compare", str(a), str(b), "--all-lengths"]) == 0
    assert capsys.readouterr().out.count("linear/noisy") == 5


def _rewrite(src: Path, dst: Path, change) -> None:
    arrays = load_file(src)
    with safe_open(src, "np") as fh:
        meta = fh.metadata()
    head = json.loads(meta["header"])
    change(head)
    save_file(arrays, dst, metadata={**meta, "header": json.dumps(head)})


def _refusal(capsys, a: Path, b: Path) -> str:
    assert main(["compare", str(a), str(b)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    return err


def test_compare_refuses_what_cannot_be_paired(two_runs: Path, tmp_path: Path, capsys) -> None:
    ridge = samples.path_for(two_runs / "ridge.json")
    other = tmp_path / "old.samples.safetensors"
    _rewrite(ridge, other, lambda h: h.update(suite_version="v1"))
    assert "is of suite v1" in _refusal(capsys, other, two_runs / "averaging.json")
    _rewrite(ridge, other, lambda h: h["tasks"]["linear/noisy"].update(fingerprint="0" * 64))
    assert "linear/noisy: " in _refusal(capsys, other, two_runs / "averaging.json")
    _rewrite(ridge, other, lambda h: h["tasks"]["linear/noisy"]["lengths"]["40"].update(rel_err_db=-30.0))
    assert "the file is damaged" in _refusal(capsys, other, two_runs / "averaging.json")
    for damage in (lambda h: h["tasks"].update({"linear/noisy": []}),
                   lambda h: h["tasks"]["linear/noisy"].update(in_pool=5),
                   lambda h: h["tasks"]["linear/noisy"]["lengths"].update({"40": -3.0})):
        _rewrite(ridge, other, damage)
        assert "its header's entry of 'linear/noisy' is not a fingerprint" in _refusal(capsys, other, ridge)
    stale = tmp_path / "ridge.json"
    doc = json.loads((two_runs / "ridge.json").read_text())
    doc["tasks"]["linear/noisy"]["lengths"]["40"]["rel_err"]["db"] -= 1.0  # a re-run without --log-samples
    stale.write_text(json.dumps(doc))
    shutil.copy(ridge, samples.path_for(stale))
    assert "are not those of the results file beside them" in _refusal(capsys, stale, two_runs / "averaging.json")
    samples.path_for(stale).unlink()
    assert "run it with --log-samples" in _refusal(capsys, stale, two_runs / "averaging.json")
