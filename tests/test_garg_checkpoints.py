"""Garg et al.'s checkpoints: a run folder of their format scores with their forward pass, and converts.

The run folders are written here in their format (config.yaml with their keys, state.pt a `torch.save` of
their state with Hugging Face's GPT-2 key names, random weights), and `reference_forward` re-implements their
forward pass from those raw tensors with plain torch operations: their token interleaving, read-in, GPT-2
blocks as Hugging Face computes them (Conv1D x W + b, pre-LayerNorm, causal softmax attention scaled by
1/sqrt(head width), the tanh GELU "gelu_new", final LayerNorm) and the read-out at the x positions.
"""

from __future__ import annotations

import json
import math
import pickle
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import iclbench
from iclbench.cli import main
from iclbench.models.garg import GargFormatError, load_run
from iclbench.plugins import PluginError, load_model
from iclbench.submissions.schema import validate
from iclbench.tasks import get

VOCAB = 50257
"""GPT-2's vocabulary: the size of the token embedding their state holds (and the loader drops)."""


def write_run(folder: Path, d: int, n_positions: int, n_embd: int = 16, n_layer: int = 2, n_head: int = 4,
              seed: int = 0, family: str = "gpt2") -> dict[str, torch.Tensor]:
    """A run folder of Garg et al.'s code with random weights; returns the model's state dict."""
    gen = torch.Generator().manual_seed(seed)

    def normal(*shape: int, mean: float = 0.0, std: float = 0.2) -> torch.Tensor:
        return mean + std * torch.randn(shape, generator=gen)

    e, t = n_embd, 2 * n_positions
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    state["_read_in.weight"], state["_read_in.bias"] = normal(e, d, std=0.5), normal(e)
    state["_backbone.wte.weight"] = torch.zeros(VOCAB, e)  # unused with input embeddings
    state["_backbone.wpe.weight"] = normal(t, e)
    for i in range(n_layer):
        h = f"_backbone.h.{i}."
        state[h + "ln_1.weight"], state[h + "ln_1.bias"] = normal(e, mean=1.0, std=0.1), normal(e, std=0.1)
        state[h + "attn.bias"] = torch.tril(torch.ones(t, t, dtype=torch.bool)).view(1, 1, t, t)  # older transformers
        state[h + "attn.masked_bias"] = torch.tensor(-1e4)
        state[h + "attn.c_attn.weight"], state[h + "attn.c_attn.bias"] = normal(e, 3 * e, std=0.4), normal(3 * e)
        state[h + "attn.c_proj.weight"], state[h + "attn.c_proj.bias"] = normal(e, e), normal(e)
        state[h + "ln_2.weight"], state[h + "ln_2.bias"] = normal(e, mean=1.0, std=0.1), normal(e, std=0.1)
        state[h + "mlp.c_fc.weight"], state[h + "mlp.c_fc.bias"] = normal(e, 4 * e, std=0.4), normal(4 * e)
        state[h + "mlp.c_proj.weight"], state[h + "mlp.c_proj.bias"] = normal(4 * e, e), normal(e)
    state["_backbone.ln_f.weight"], state["_backbone.ln_f.bias"] = normal(e, mean=1.0, std=0.1), normal(e, std=0.1)
    state["_read_out.weight"], state["_read_out.bias"] = normal(1, e), normal(1)
    weights = [v for k, v in state.items() if v.is_floating_point() and v.dim() > 0]
    optimizer = {
        "state": {i: {"step": torch.tensor(500.0), "exp_avg": torch.zeros_like(w), "exp_avg_sq": torch.zeros_like(w)}
                  for i, w in enumerate(weights[:2])},
        "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0, "amsgrad": False,
                          "maximize": False, "foreach": None, "params": list(range(len(weights)))}],
    }
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "model": {"family": family, "n_dims": d, "n_embd": n_embd, "n_head": n_head, "n_layer": n_layer,
                  "n_positions": n_positions},
        "out_dir": str(folder), "test_run": False,
        "training": {"task": "linear_regression", "task_kwargs": {}, "data": "gaussian", "batch_size": 64,
                     "learning_rate": 1e-4, "train_steps": 500001, "save_every_steps": 1000, "keep_every_steps": 100000,
                     "resume_id": None, "num_tasks": None, "num_training_examples": None,
                     "curriculum": {"dims": {"start": 5, "end": d, "inc": 1, "interval": 2000},
                                    "points": {"start": 11, "end": n_positions, "inc": 2, "interval": 2000}}},
        "wandb": {"entity": "x", "log_every_steps": 100, "name": "run", "notes": "", "project": "in-context-training"},
    }
    (folder / "config.yaml").write_text(yaml.dump(config, default_flow_style=False))
    torch.save({"model_state_dict": state, "optimizer_state_dict": optimizer, "train_step": 499}, folder / "state.pt")
    return state


def reference_forward(state: dict[str, torch.Tensor], n_head: int, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Their `TransformerModel(xs, ys)`: the predictions (B, points) read at the x positions, in xs's dtype."""
    w = {k: v.to(xs.dtype) for k, v in state.items() if v.is_floating_point()}
    b, points, d = xs.shape
    ys_wide = torch.cat([ys.view(b, points, 1), torch.zeros(b, points, d - 1, dtype=xs.dtype)], 2)
    zs = torch.stack([xs, ys_wide], 2).view(b, 2 * points, d)
    t = 2 * points
    h = zs @ w["_read_in.weight"].T + w["_read_in.bias"] + w["_backbone.wpe.weight"][:t]

    def layer_norm(v: torch.Tensor, name: str) -> torch.Tensor:
        mean = v.mean(-1, keepdim=True)
        var = ((v - mean) ** 2).mean(-1, keepdim=True)
        return (v - mean) / torch.sqrt(var + 1e-5) * w[name + ".weight"] + w[name + ".bias"]

    def gelu_new(v: torch.Tensor) -> torch.Tensor:
        return 0.5 * v * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * torch.pow(v, 3.0))))

    e = h.shape[-1]
    hd = e // n_head
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    layers = len({k.split(".")[2] for k in w if k.startswith("_backbone.h.")})
    for i in range(layers):
        p = f"_backbone.h.{i}."
        qkv = layer_norm(h, p + "ln_1") @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]
        q, k, v = (z.view(b, t, n_head, hd).transpose(1, 2) for z in qkv.split(e, -1))
        scores = (q @ k.transpose(-1, -2) / math.sqrt(hd)).masked_fill(~causal, float("-inf"))
        attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, e)
        h = h + attended @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]
        hidden = gelu_new(layer_norm(h, p + "ln_2") @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"])
        h = h + hidden @ w[p + "mlp.c_proj.weight"] + w[p + "mlp.c_proj.bias"]
    out = layer_norm(h, "_backbone.ln_f") @ w["_read_out.weight"].T + w["_read_out.bias"]
    return out[:, ::2, 0]


def reference_queries(state: dict[str, torch.Tensor], n_head: int, x: torch.Tensor, y: torch.Tensor,
                      x_query: torch.Tensor) -> torch.Tensor:
    """Their prediction (B, q) of each query from the n context pairs: the query as x_{n+1} of their prompt."""
    n = x.shape[1]
    preds = []
    for j in range(x_query.shape[1]):
        xs = torch.cat([x, x_query[:, j : j + 1]], 1)
        ys = torch.cat([y, torch.zeros_like(y[:, :1])], 1)  # the query's label: read by no prediction at x_{n+1}
        preds.append(reference_forward(state, n_head, xs, ys)[:, n])
    return torch.stack(preds, 1)


HEADS = 4
KERNEL_POINTS = 29
"""A run of n_dims 5 and 29 points covers the kernel tasks (d = 5, prompts of 4 to 28 pairs), the suite's cheapest."""


def close(got: torch.Tensor, want: torch.Tensor) -> bool:
    """Equal to 1e-6 of max(1, |want|): float64 computations, the prediction stored in float32 by the samples file."""
    return bool(((got.double() - want).abs() <= 1e-6 * want.abs().clamp(min=1.0)).all())


@pytest.mark.usefixtures("session_fingerprints")  # the evaluation sets come from the session's cache folder
def test_a_run_folder_scores_with_their_forward_pass(tmp_path: Path) -> None:
    run = tmp_path / "run"
    state = write_run(run, d=5, n_positions=KERNEL_POINTS, n_head=HEADS)
    res = iclbench.evaluate(f"garg:{run}", tasks="kernel/exp", prompts=12, dtype="float64", log_samples=True,
                            out=tmp_path / "results", progress=False)
    entry = res.doc["tasks"]["kernel/exp"]
    assert entry["status"] == "ok" and res.doc["model"]["name"] == "garg-run"
    model = res.doc["model"]
    assert model["checkpoint_sha256"] == iclbench.plugins.sha256_file(run / "state.pt")
    assert model["file_sha256"] == iclbench.plugins.sha256_file(run / "config.yaml")
    assert set(model["files_sha256"]) == {"config.yaml", "state.pt"}
    data = iclbench.cache.eval_set(get("kernel/exp"))[0].head(12)
    for n in get("kernel/exp").spec.lengths:
        ref = reference_queries(state, HEADS, data.x[:, :n].double(), data.y[:, :n].double(), data.x_query.double())
        assert close(res.samples["kernel/exp"][f"kernel/exp/{n}/y"], ref), n
    assert float(ref.abs().max()) > 0.1  # predictions far from zero: a wrong weight cannot hide


def test_every_length_in_one_pass_equals_their_forward_on_each_prefix(tmp_path: Path) -> None:
    """Their model reads every prefix at once (the prediction at x_{i+1} sees i pairs): so does the loaded one."""
    state = write_run(tmp_path / "run", d=3, n_positions=9, n_embd=8, n_layer=3, n_head=2, seed=1)
    loaded = load_model(f"garg:{tmp_path / 'run'}")
    loaded.setup(torch.device("cpu"))
    gen = torch.Generator().manual_seed(2)
    x, y = torch.randn(4, 8, 3, generator=gen), torch.randn(4, 8, generator=gen)
    xq = torch.randn(4, 2, 3, generator=gen)
    spec = iclbench.TaskSpec("probe", "garg", 3, (1, 4, 8), 8)
    batch = iclbench.Batch(spec, x.double(), y.double(), xq.double())
    preds = loaded.predict_lengths(batch, [1, 4, 8])
    for n, pred in preds.items():
        assert close(pred.y, reference_queries(state, 2, x[:, :n].double(), y[:, :n].double(), xq.double()))
        assert pred.steps.shape == (4, 3, 2)  # the read-out after each of the 3 layers
    assert loaded.model.supports_length(spec, 8) and not loaded.model.supports_length(spec, 9)  # 9 points: 8 pairs


def test_only_scalar_tasks_of_its_dimension_are_supported(tmp_path: Path) -> None:
    write_run(tmp_path / "run", d=20, n_positions=41)
    loaded = load_model(f"garg:{tmp_path / 'run'}")
    loaded.setup(torch.device("cpu"))
    assert loaded.supported_lengths(get("garg/sparse-linear").spec) == [5, 10, 15, 20, 30, 40]
    assert loaded.supported_lengths(get("garg/relu2nn").spec) == [10, 25]  # 41 points: at most 40 pairs
    assert loaded.supported_lengths(get("linear/kappa1").spec) == [5, 10, 20, 40]
    assert loaded.supported_lengths(get("kernel/exp").spec) is None  # d = 5
    assert loaded.supported_lengths(get("logistic/kappa1").spec) is None  # d = 10


class Payload:
    """An object a full unpickle would rebuild, and `weights_only=True` refuses."""

    def __reduce__(self):
        return (print, ("unpickled",))


def damage_run(run: Path, damage: str) -> None:
    """Spoil a run folder written by `write_run` as `damage` says."""
    config = yaml.safe_load((run / "config.yaml").read_text())
    state = torch.load(run / "state.pt", weights_only=True)["model_state_dict"]
    if damage == "no-config":
        (run / "config.yaml").unlink()
    elif damage in ("family", "n_head", "layers"):
        config["model"].update({"family": {"family": "relu_attn"}, "n_head": {"n_head": "four"},
                                "layers": {"n_layer": 3}}[damage])
        (run / "config.yaml").write_text(yaml.dump(config))
    elif damage == "pickle":
        torch.save({"model_state_dict": state, "train_step": 1, "payload": Payload()}, run / "state.pt")
    else:
        if damage == "missing":
            del state["_backbone.h.1.mlp.c_fc.weight"]
        elif damage == "extra":
            state["_backbone.h.0.attn.extra"] = torch.zeros(1)
        else:
            state["_read_in.weight"] = state["_read_in.weight"][:, :4]
        torch.save({"model_state_dict": state, "train_step": 1}, run / "state.pt")


REFUSALS = {
    "no-config": "config.yaml: cannot read the run's configuration",
    "family": "model family 'relu_attn'; only their gpt2 family loads",
    "n_head": "model.n_head must be a positive integer, got 'four'",
    "pickle": "state.pt: not loadable as plain tensors (torch.load with weights_only=True)",
    "missing": "state.pt: no _backbone.h.1.mlp.c_fc.weight",
    "extra": "state.pt: unexpected entries _backbone.h.0.attn.extra",
    "shape": "state.pt: _read_in.weight has shape (16, 4), expected (16, 5)",
    "layers": "state.pt: no _backbone.h.2.ln_1.weight",
}


@pytest.mark.parametrize("damage", REFUSALS)
def test_a_folder_that_is_not_theirs_is_refused_in_one_line(tmp_path: Path, damage: str, capsys) -> None:
    run = tmp_path / "run"
    write_run(run, d=5, n_positions=9)
    damage_run(run, damage)
    with pytest.raises(GargFormatError) as info:
        load_run(run)
    assert REFUSALS[damage] in str(info.value) and str(run) in str(info.value) and "\n" not in str(info.value)
    if damage in ("no-config", "family", "n_head"):  # refused as soon as the model is created
        with pytest.raises(PluginError, match="creating GargRun"):
            load_model(f"garg:{run}")
    assert "unpickled" not in capsys.readouterr().out  # nothing but tensors was rebuilt


@pytest.mark.parametrize("damage, status", [("family", 2), ("pickle", 1)])
def test_the_command_line_says_what_is_wrong_with_a_run_folder(tmp_path: Path, damage: str, status: int,
                                                              capsys) -> None:
    """Refused when the model is created (exit status 2, nothing run) or when `setup` reads state.pt (the task
    fails)."""
    run = tmp_path / "run"
    write_run(run, d=5, n_positions=9)
    damage_run(run, damage)
    argv = ["run", "--model", f"garg:{run}", "--tasks", "kernel/exp", "--prompts", "4", "--out", str(tmp_path / "out")]
    assert main([*argv, "--quiet"]) == status
    err = capsys.readouterr().err
    assert REFUSALS[damage] in err and "Traceback" not in err and "unpickled" not in err


@pytest.mark.usefixtures("session_fingerprints")
def test_convert_writes_a_submission_that_validates_and_scores_as_the_run(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    write_run(run, d=5, n_positions=KERNEL_POINTS, n_head=HEADS, seed=3)
    out = tmp_path / "submissions" / "garg-tiny"
    assert main(["convert", "garg", str(run), str(out), "--authors", "A. Author", "--contact", "a@example.org",
                 "--license", "MIT", "--device", "cpu", "--quiet"]) == 0, capsys.readouterr().err
    assert validate(out) == []
    assert sorted(p.name for p in out.iterdir()) == [
        "garg-config.yaml", "model.py", "results.json", "submission.yaml", "weights.safetensors"]
    meta = yaml.safe_load((out / "submission.yaml").read_text())
    trained_on = "linear_regression (Garg et al.'s code, https://github.com/dtsip/in-context-learning)"
    assert meta["training"] == {"tasks": [trained_on], "sampler_seeds": None, "steps": 500}
    net, _ = load_run(run)
    assert meta["parameters"] == sum(p.numel() for p in net.parameters())  # every element of the checkpoint
    assert set(load_file(out / "weights.safetensors")) == set(net.state_dict())
    doc = json.loads((out / "results.json").read_text())
    scored = {t for t, e in doc["tasks"].items() if e["status"] == "ok"}
    assert scored == {"kernel/linear", "kernel/exp", "kernel/relu"}
    direct = iclbench.evaluate(f"garg:{run}", tasks="kernel", device="cpu", progress=False)
    for task in scored:  # the converted checkpoint scores as the run folder does
        for n, m in doc["tasks"][task]["lengths"].items():
            assert m["rel_err"]["value"] == pytest.approx(direct.doc["tasks"][task]["lengths"][n]["rel_err"]["value"],
                                                          rel=1e-5)
    assert validate(out, rerun=True, tasks=["kernel/exp"]) == []
