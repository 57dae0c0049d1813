"""Whole-prompt prediction (`Model.predict_lengths`): every prefix length in one call, the same numbers as
per-length calls, checked like them, through the worker too; and never trusted by `validate --rerun`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from iclbench import tasks
from iclbench.api import Batch, Model, Prediction, predicts_lengths
from iclbench.models import GPT2, CausalLSA, LinearTransformer
from iclbench.models.plugin import TrainedModel
from iclbench.models.weights import save_weights
from iclbench.plugins import load_model, loaded
from iclbench.runner import RunConfig, run, run_task
from iclbench.submissions.rerun import rerun_and_compare
from iclbench.worker import IsolatedModel

pytestmark = pytest.mark.usefixtures("one_thread")

LINEAR = tasks.get("linear/kappa1")


def _prompts(b: int, n: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(n)
    return (torch.randn(b, n, 4, generator=g, dtype=dtype), torch.randn(b, n, generator=g, dtype=dtype),
            torch.randn(b, 3, 4, generator=g, dtype=dtype))


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
def test_gpt2_reads_every_prefix_in_one_pass_as_in_one_pass_per_length(tied: bool, dtype: torch.dtype, tol: float) -> None:
    torch.manual_seed(0)
    net = GPT2(4, 3, width=16, heads=2, max_len=12, tied=tied).to(dtype)
    x, y, xq = _prompts(5, 12, dtype)
    lengths = [1, 2, 5, 9, 12]
    with torch.no_grad():
        whole = net.forward_lengths(x, y, xq, lengths)
        for n in lengths:
            y_n, steps_n = net(x[:, :n], y[:, :n], xq)
            torch.testing.assert_close(whole[n][1], steps_n, rtol=tol, atol=tol)
            torch.testing.assert_close(whole[n][0], y_n, rtol=tol, atol=tol)
        # a prediction at length n does not move when later context pairs change
        x2, y2 = x.clone(), y.clone()
        x2[:, 5:], y2[:, 5:] = 7.0, -3.0
        torch.testing.assert_close(net.forward_lengths(x2, y2, xq, [5])[5][1], whole[5][1], rtol=tol, atol=tol)
    with pytest.raises(ValueError, match="must lie in 1..12"):
        net.forward_lengths(x, y, xq, [13])


@pytest.mark.parametrize("tied", [False, True])
def test_gpt2_context_read_outs_are_the_predictions_of_each_prefix(tied: bool) -> None:
    """`context=True` (the every-prefix loss): the read-out at x_t is the query prediction of y_t from the t - 1
    pairs before it; the queries' read-outs are those of the plain forward pass."""
    torch.manual_seed(1)
    net = GPT2(4, 3, width=16, heads=2, max_len=12, tied=tied).double()
    x, y, xq = _prompts(5, 12, torch.float64)
    with torch.no_grad():
        context, steps = net(x, y, xq, context=True)
        assert context.shape == (5, 3, 12)
        torch.testing.assert_close(steps, net(x, y, xq)[1], rtol=1e-12, atol=1e-12)
        for t in range(1, 12):  # x_{t+1} as the query of the first t pairs
            per_layer = net(x[:, :t], y[:, :t], x[:, t : t + 1])[1][:, :, 0]
            torch.testing.assert_close(context[:, :, t], per_layer, rtol=1e-12, atol=1e-12)
        y2 = y.clone()
        y2[:, 6] = 50.0  # a label moves no prediction of itself or of an earlier label
        moved = net(x, y2, xq, context=True)[0]
        torch.testing.assert_close(moved[:, :, :7], context[:, :, :7], rtol=1e-12, atol=1e-12)
        assert (moved[:, :, 7:] - context[:, :, 7:]).abs().min() > 0


@pytest.mark.parametrize("m", [1, 3])
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
def test_causal_lsa_reads_every_prefix_in_one_pass_as_in_one_pass_per_length(m: int, dtype: torch.dtype,
                                                                              tol: float) -> None:
    torch.manual_seed(0)
    net = CausalLSA(4, 2, m=m, heads=2, init_std=0.3).to(dtype)
    x, y, xq = _prompts(5, 12, dtype)
    y = y if m == 1 else torch.randn(5, 12, m, dtype=dtype)
    lengths = [1, 2, 5, 9, 12]
    with torch.no_grad():
        whole = net.forward_lengths(x, y, xq, lengths)
        assert torch.equal(whole[12][1], net(x, y, xq)[1])  # the longest: the very pass `forward` makes
        for n in lengths:
            y_n, steps_n = net(x[:, :n], y[:, :n], xq)
            assert whole[n][1].shape == steps_n.shape == (5, 2, 3, *([m] if m > 1 else []))
            torch.testing.assert_close(whole[n][1], steps_n, rtol=tol, atol=tol)
            torch.testing.assert_close(whole[n][0], y_n, rtol=tol, atol=tol)
            assert steps_n.abs().max() > 1e-3  # not trivially zero
        x2, y2 = x.clone(), y.clone()
        x2[:, 5:], y2[:, 5:] = 7.0, -3.0
        torch.testing.assert_close(net.forward_lengths(x2, y2, xq, [5])[5][1], whole[5][1], rtol=tol, atol=tol)
    with pytest.raises(ValueError, match="must lie in 1..12"):
        net.forward_lengths(x, y, xq, [0])


def _checkpoint(folder: Path, net: torch.nn.Module) -> Path:
    """A model.py scoring `net` (saved beside it), as a submission's would."""
    torch.manual_seed(1)
    folder.mkdir(exist_ok=True)
    save_weights(net.double(), folder / "model.safetensors", {"tasks": ["linear/kappa1"]})
    (folder / "model.py").write_text(
        "from iclbench.models.plugin import TrainedModel\n\n\nclass Net(TrainedModel):\n    name = 'net'\n"
    )
    return folder / "model.py"


def _numbers(doc: dict) -> list[float]:
    out = []
    for entry in doc["tasks"].values():
        for m in entry["lengths"].values():
            out += [m["rel_err"]["value"], *m["rel_err"]["ci90"], *m["steps_rel_err_db"]]
    return out


def test_the_runner_calls_predict_lengths_once_per_chunk_with_the_numbers_of_per_length_calls(tmp_path: Path,
                                                                                               monkeypatch) -> None:
    path = _checkpoint(tmp_path / "gpt2", GPT2(20, 2, width=16, heads=2, max_len=80))
    cfg = RunConfig(dtype="float64", prompts=120, batch_size=50)
    plugin = load_model(str(path))
    assert plugin.predicts_lengths and predicts_lengths(plugin.model) and not predicts_lengths(load_model("ridge").model)
    calls = []
    original = plugin.model.predict_lengths
    monkeypatch.setattr(plugin.model, "predict_lengths", lambda b, ls: calls.append((b.n, ls)) or original(b, ls))
    monkeypatch.setattr(plugin.model, "predict", lambda b: pytest.fail("predict called"))
    one_pass = run(plugin, [LINEAR], cfg, progress=False)
    assert calls == [(80, [5, 10, 20, 40, 80])] * 3  # 120 prompts in chunks of 50
    isolated = [IsolatedModel(str(path), one_pass=flag) for flag in (True, False)]
    try:
        assert [m.predicts_lengths for m in isolated] == [True, False]
        through_worker, per_length = (run(m, [LINEAR], cfg, progress=False) for m in isolated)
    finally:
        for m in isolated:
            m.close()
    assert _numbers(through_worker) == _numbers(one_pass)
    assert _numbers(per_length) == pytest.approx(_numbers(one_pass), rel=1e-9)
    assert len(_numbers(one_pass)) == 5 * 3 + 5 * 2


def test_a_model_that_is_not_prefix_causal_keeps_one_pass_per_length(tmp_path: Path) -> None:
    torch.manual_seed(0)
    plugin = TrainedModel(_checkpoint(tmp_path / "lt", LinearTransformer(20, 2)).with_name("model.safetensors"))
    plugin.setup(torch.device("cpu"))
    batch = LINEAR.sample(3, 40, LINEAR.train_generator(0)).batch
    batch = Batch(batch.task, batch.x.double(), batch.y.double(), batch.x_query.double())
    whole = plugin.predict_lengths(batch, [10, 40])
    for n in (10, 40):
        assert torch.equal(whole[n].steps, plugin.predict(batch.prefix(n)).steps)


class _Lengths(Model):
    """Least squares per length, its `predict_lengths` returning `mistake`'s kind of wrong answer."""

    name = "lengths"

    def __init__(self, mistake: str = "") -> None:
        self.mistake = mistake

    def predict(self, batch: Batch) -> Prediction:
        w = torch.linalg.lstsq(batch.x, batch.y.unsqueeze(-1)).solution
        return Prediction((batch.x_query @ w).squeeze(-1), w=w.squeeze(-1))

    def predict_lengths(self, batch: Batch, lengths: list[int]):  # type: ignore[override]
        out = super().predict_lengths(batch, lengths)
        if self.mistake == "list":
            return list(out.values())
        if self.mistake == "keys":
            return {str(n): p for n, p in out.items()}
        if self.mistake == "shape":
            out[10] = out[10].y[:, :2]
        if self.mistake == "nan":
            out[20].y[3, 0] = float("nan")
        if self.mistake == "raise":
            raise RuntimeError("boom")
        return out


@pytest.mark.parametrize("mistake, message", [
    ("list", "predict_lengths returned a list, expected a dict of predictions by prompt length (n=5, 10, 20, 40, 80, prompts 0-63)"),
    ("keys", "predict_lengths returned predictions for lengths ["),
    ("shape", "prediction has shape (64, 2), expected (64, 8) (n=10, prompts 0-63)"),
    ("nan", "prediction contains NaN or Inf (n=20, first at prompt 3)"),
    ("raise", "predict_lengths raised RuntimeError: boom (n=5, 10, 20, 40, 80, prompts 0-63)"),
])
def test_every_prediction_of_predict_lengths_is_checked_as_a_predict_call(mistake: str, message: str) -> None:
    entry = run_task(loaded(_Lengths(mistake), "lengths", None), LINEAR, RunConfig(prompts=64), progress=False)
    assert entry["status"] == "failed" and message in entry["error"], entry.get("error")
    good = run_task(loaded(_Lengths(), "lengths", None), LINEAR, RunConfig(prompts=64), progress=False)
    assert good["status"] == "ok"


def test_a_failure_in_the_worker_names_its_length(tmp_path: Path) -> None:
    source = tmp_path / "bad.py"
    source.write_text(
        "from iclbench import Model, Prediction\n\n\nclass Bad(Model):\n    name = 'bad'\n\n"
        "    def predict(self, batch):\n        return batch.x_query[..., 0]\n\n"
        "    def predict_lengths(self, batch, lengths):\n"
        "        return {n: batch.x_query[..., 0] if n != 20 else batch.x_query for n in lengths}\n"
    )
    model = IsolatedModel(str(source))
    try:
        entry = run_task(model, LINEAR, RunConfig(prompts=64), progress=False)
    finally:
        model.close()
    assert entry["status"] == "failed"
    assert "prediction has shape (64, 8, 20), expected (64, 8) (n=20, prompts 0-63)" in entry["error"]


def test_validate_rerun_finds_a_model_whose_short_prompts_read_later_pairs(tmp_path: Path) -> None:
    source = tmp_path / "peek.py"
    source.write_text(
        "import torch\nfrom iclbench import Model\n\n\nclass Peek(Model):\n    name = 'peek'\n\n"
        "    def predict(self, batch):\n"
        "        return (batch.x_query @ torch.linalg.lstsq(batch.x, batch.y.unsqueeze(-1)).solution).squeeze(-1)\n\n"
        "    def predict_lengths(self, batch, lengths):  # every length answered from the whole context\n"
        "        return {n: self.predict(batch) for n in lengths}\n"
    )
    model = IsolatedModel(str(source))
    try:
        doc = run(model, [LINEAR], RunConfig("cpu"), progress=False)
    finally:
        model.close()
    assert doc["tasks"]["linear/kappa1"]["lengths"]["10"]["rel_err"]["db"] < -100  # 10 pairs cannot fit d = 20
    problems = rerun_and_compare(source, doc, ["linear/kappa1"])
    assert any(p.startswith("linear/kappa1 n=10: rel_err") for p in problems), problems
    assert not any(p.startswith("linear/kappa1 n=80") for p in problems), problems
