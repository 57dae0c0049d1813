"""`benchmarks/l2o_literature.py` at a reduced size: the same code path as the full Open-L2O run (data, trainer,
per-layer evaluation, timing), with per-layer curves that fall as learned ISTA's do."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from iclbench.baselines.lista import load_net
from iclbench.baselines.train_lista import TrainConfig, mean_of_db, nmse_db, validation_set

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "l2o_literature.py"


def load_script():
    spec = importlib.util.spec_from_file_location("l2o_literature", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_dictionary_and_codes_are_open_l2o_s() -> None:
    """Unit-norm columns, Bernoulli(p) x N(0, 1) codes, noiseless y = A b, reproducible from the seeds."""
    l2o = load_script()
    source = l2o.GaussianDictionary(40, 80, p=0.1)
    np.testing.assert_allclose(torch.linalg.vector_norm(source.matrix.double(), dim=0).numpy(), 1.0, atol=1e-6)
    y, beta = source.draw(2000, source.generator(5))
    assert abs(float((beta != 0).double().mean()) - 0.1) < 0.01  # 160,000 Bernoulli(0.1): sd 0.00075
    nonzero = beta[beta != 0].double()
    assert abs(float(nonzero.mean())) < 0.05 and abs(float(nonzero.std()) - 1.0) < 0.05
    torch.testing.assert_close(y, beta @ source.matrix.T, rtol=0, atol=0)
    again = l2o.GaussianDictionary(40, 80, p=0.1)
    assert torch.equal(again.matrix, source.matrix) and torch.equal(again.draw(2000, again.generator(5))[1], beta)


@pytest.mark.parametrize(
    ("recipe", "kinds"),
    # Open-L2O starts LISTA-CP at a step of 1, where ISTA's is 1 / L~: more steps than a test's undo that
    [([], ("lista", "lista-cp", "alista")), (["--open-l2o", "--models", "alista"], ("alista",))],
    ids=["package", "open-l2o"],
)
def test_the_reduced_run_learns_curves_that_fall_below_ista(tmp_path: Path, recipe: list[str], kinds) -> None:
    out = tmp_path / "run.json"
    cmd = [sys.executable, str(SCRIPT), "--m", "24", "--d", "48", "--layers", "3", "--batch-size", "32",
           "--val-every", "15", "--patience", "2", "--max-stage-steps", "60", "--val-prompts", "128",
           "--test-prompts", "256", "--time-steps", "1", *recipe, "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(out.read_text())
    assert doc["config"]["open_l2o"] == ("--open-l2o" in recipe)
    score = mean_of_db if "--open-l2o" in recipe else nmse_db  # the recipe's validation NMSE, in the record
    source = load_script().GaussianDictionary(24, 48)
    vy, vbeta = validation_set(source, TrainConfig(val_prompts=128))
    ista = doc["ista_test"]
    assert set(doc["models"]) == set(kinds)
    for kind in kinds:
        test = doc["models"][kind]["test"]
        for metric in ("mean_of_db", "ratio_db"):
            curve = test[metric]
            assert len(curve) == 3 and all(b < a for a, b in zip(curve, curve[1:])), (kind, metric, curve)
            assert curve[-1] < ista[metric][-1] - 0.5, (kind, metric, curve, ista[metric])  # beats ISTA at its depth
        assert doc["models"][kind]["steps"] == sum(s["steps"] for s in doc["models"][kind]["stages"])
        assert f"{kind:9} published {doc['published_layer16'][kind]:7.1f}" in proc.stdout
        net = load_net(tmp_path / f"run-{kind}.safetensors")  # the trained network, saved beside the numbers
        assert net.kind == kind and (net.n, net.d, net.depth) == (24, 48, 3)
        with torch.no_grad():
            layers = net(source.matrix, vy).unbind(1)
        np.testing.assert_allclose(doc["models"][kind]["val_nmse_db_per_layer"], [score(c, vbeta) for c in layers],
                                   rtol=0, atol=1e-3)
    for kind in ("lista-cp", "alista"):
        assert doc["timing"][kind]["copied_s"] > 0 and doc["timing"][kind]["shared_s"] > 0
        assert f"{kind}: CPU seconds per Adam step" in proc.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--seed", "1"], "--seed takes a seed >= 0 other than the validation and the test codes' (1, 2), not 1"),
     (["--seed", "2"], "not 2"), (["--seed", "-1"], "not -1"), (["--patience", "0"], "--patience takes a count >= 1"),
     (["--open-l2o", "--val-every", "0"], "--val-every takes a count >= 1, not 0")],
)
def test_bad_options_are_refused_in_one_line(capsys, args: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exit_:
        load_script().main(args)
    assert exit_.value.code == 2 and message in capsys.readouterr().err
