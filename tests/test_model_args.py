"""`--model-args`: parsed by a stated rule, passed to the constructor in the worker, recorded, named in the
results file, compared by --resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures.plugins import plugin, run_cli

from iclbench import results
from iclbench.plugins import parse_model_args

TYPED = """
class Typed(Model):
    name = "typed"
    def __init__(self, scale=1.0, label="none", exact=False, limit=None, layers=1):
        assert isinstance(scale, float) and isinstance(layers, int) and isinstance(exact, bool), (scale, layers, exact)
        assert limit is None and isinstance(label, str), (limit, label)
        self.scale = scale
    def supports(self, task):
        return task.family == "linear"
    def predict(self, batch):
        return self.scale * batch.x_query.sum(-1) / batch.task.d ** 0.5
"""


def test_the_parsing_rule() -> None:
    assert parse_model_args("a=1,b=2.5,c=true,d=null,e=runs/x.safetensors,f=\"1\",g=NaN,h=1e3") == {
        "a": 1, "b": 2.5, "c": True, "d": None, "e": "runs/x.safetensors", "f": "1", "g": "NaN", "h": 1000.0}
    assert parse_model_args(" k = [1 ") == {"k": "[1"}  # not JSON: the text itself
    assert parse_model_args("k=[1]") == {"k": "[1]"}  # JSON, but not a scalar: the text too
    for bad, message in [("a=1,a=2", "a is given twice"), ("a", "'a' is not key=value"),
                         ("=1", "'=1' is not key=value"), ("my-arg=1", "must be a Python identifier"),
                         ("a=1,", "'' is not key=value"), ("n=9007199254740993", "a value must be")]:
        with pytest.raises(ValueError, match=message):
            parse_model_args(bad)


def test_arguments_reach_the_constructor_in_the_worker_and_are_recorded(tmp_path: Path, capsys) -> None:
    path = plugin(tmp_path / "m", TYPED)
    args = "scale=2.0,label=runs/b.safetensors,exact=true,limit=null,layers=3"
    code, out, err = run_cli(capsys, "--model", str(path), "--model-args", args, "--tasks", "linear/kappa1",
                             "--out", str(tmp_path))
    assert code == 0, err
    written = tmp_path / "typed--scale-2.0-label-runs-b.safetensors-exact-true-limit-null-layers-3.json"
    assert f"results written to {written}" in out
    doc = results.read(written)
    assert doc["model"]["args"] == {"scale": 2.0, "label": "runs/b.safetensors", "exact": True, "limit": None,
                                    "layers": 3}
    plain = run_cli(capsys, "--model", str(path), "--tasks", "linear/kappa1", "--out", str(tmp_path))
    assert plain[0] == 0 and results.read(tmp_path / "typed.json")["model"]["args"] == {}
    scaled = doc["tasks"]["linear/kappa1"]["lengths"]["40"]["rel_err"]["db"]
    unscaled = results.read(tmp_path / "typed.json")["tasks"]["linear/kappa1"]["lengths"]["40"]["rel_err"]["db"]
    assert scaled != unscaled  # the argument changed what the model computed
    code, _, err = run_cli(capsys, "--model", str(path), "--model-args", "depth=2", "--tasks", "linear/kappa1")
    assert code == 2 and "unexpected keyword argument 'depth'" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "--model", str(path), "--model-args", "scale", "--tasks", "linear/kappa1")
    assert code == 2 and err.strip() == "iclbench run: --model-args: 'scale' is not key=value (pairs are separated by commas)"


def test_arguments_whose_file_names_collide_are_refused(tmp_path: Path, capsys) -> None:
    path = plugin(tmp_path / "m", TYPED)
    assert run_cli(capsys, "--model", str(path), "--model-args", "label=a/b", "--tasks", "linear/kappa1",
                   "--out", str(tmp_path))[0] == 0
    before = (tmp_path / "typed--label-a-b.json").read_text()
    code, _, err = run_cli(capsys, "--model", str(path), "--model-args", "label=a-b", "--tasks", "linear/kappa1",
                           "--out", str(tmp_path))
    assert code == 2 and "with model arguments {'label': 'a/b'}, not {'label': 'a-b'}" in err
    assert (tmp_path / "typed--label-a-b.json").read_text() == before


def test_resume_compares_the_arguments(tmp_path: Path) -> None:
    doc = {"iclbench_version": "0.1.0", "suite_version": "v2",
           "model": {"name": "m", "class": "c", "args": {"scale": 2.0}, "file_sha256": None,
                     "checkpoint_sha256": None, "files_sha256": {}},
           "run": {"device": "cpu", "dtype": "float32", "prompts": None, "torch_version": "2"}}
    other = json.loads(json.dumps(doc))
    other["model"]["args"] = {"scale": 3.0}
    assert results.changes(doc, other) == ["model.args {'scale': 2.0} -> {'scale': 3.0}"]
    older = json.loads(json.dumps(doc))
    del older["model"]["args"]
    doc["model"]["args"] = {}
    assert results.changes(older, doc) == []  # a file from before model arguments was made without any
    assert results.file_stem("m", {"ckpt": "x" * 200}).startswith("m--ckpt-xxx")
    assert len(results.file_stem("m", {"ckpt": "x" * 200})) == len("m--") + results.MAX_ARGS_IN_NAME
    assert results.file_stem("m", {"ckpt": "x" * 200}) != results.file_stem("m", {"ckpt": "x" * 199})
