"""The comparators `<optimizer>@<k>`: k steps at the step tuned for exactly k steps, checked against the
iterative solvers, the stored tuning against a re-run of its search, and gd @1 against the best single GD step
on the evaluation set, found in closed form."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from iclbench import Batch, metrics
from iclbench.baselines import budgeted, gd, newton, proximal, tune_steps
from iclbench.baselines.tune_steps import Quadratic
from iclbench.cache import eval_set
from iclbench.tasks import get, select

pytestmark = pytest.mark.usefixtures("one_thread")


def batch_of(task: str, n: int, prompts: int = 8, seed: int = 3) -> Batch:
    t = get(task)
    return t.sample(prompts, n, t.train_generator(seed), dtype=torch.float64).batch


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    """Equal up to float64 round-off, relative to the largest value (the closed form sums another way)."""
    torch.testing.assert_close(a, b, rtol=0, atol=1e-11 * float(b.abs().max()))


@pytest.mark.parametrize(("task", "n"), [("linear/kappa100", 10), ("linear/noisy", 40), ("ar/uniform", 20),
                                         ("kernel/relu", 28)])
def test_closed_form_is_gradient_descent(task: str, n: int) -> None:
    batch = batch_of(task, n)
    budgets = (1, 2, 7, 16, 40)
    etas = torch.tensor([0.02, 0.3], dtype=torch.float64)
    got = Quadratic.of(batch).steps(etas, budgets)
    for eta, pred in zip(etas.tolist(), got):
        steps = gd.descend(batch, eta, max(budgets))[0]
        close(pred, steps[:, [k - 1 for k in budgets]])


def test_closed_form_is_ista_on_least_squares() -> None:
    """With lambda = 0, ISTA's step c / L is GD's step c / l_max: the scaled closed form."""
    batch = batch_of("linear/kappa10", 40)
    for c in (0.5, 1.7):
        problem = proximal.LassoProblem.of(batch.x, batch.y, 0.0)
        problem = dataclasses.replace(problem, step=problem.step * c)
        path = torch.stack(list(problem.iterates(16, accelerated=False)), 1)
        steps = path @ batch.x_query.double().mT
        close(Quadratic.of(batch).steps(torch.tensor([c], dtype=torch.float64), (1, 5, 16), scaled=True)[0],
              steps[:, [0, 4, 15]])


CASES = [(budgeted.GdAt4, "linear/kappa1", 20), (budgeted.GdAt4, "logistic/kappa1", 20),
         (budgeted.IstaAt4, "lasso/random", 10), (budgeted.FistaAt4, "linear/noisy", 40)]


@pytest.mark.parametrize(("cls", "task", "n"), CASES)
def test_each_step_is_its_own_budget_at_its_own_tuned_value(cls: type, task: str, n: int) -> None:
    model = cls()
    batch = batch_of(task, n)
    values = budgeted.load_values()[model.optimizer][task][n]
    pred = model.predict(batch)
    assert pred.steps.shape[1] == 4 and model.name == f"{model.optimizer}@4"
    for k in range(1, 5):
        if model.optimizer == "gd":
            ref = gd.descend(batch, values[k - 1], k)[0][:, -1]
        else:
            lam = proximal.lasso_lambda(batch.task, n) if task.startswith("lasso") else 0.0
            problem = proximal.LassoProblem.of(batch.x, batch.y, lam)
            problem = dataclasses.replace(problem, step=problem.step * values[k - 1])
            *_, b = problem.iterates(k, accelerated=model.optimizer == "fista")
            ref = (batch.x_query.double() @ b.unsqueeze(-1)).squeeze(-1)
        torch.testing.assert_close(pred.steps[:, k - 1], ref)
    torch.testing.assert_close(pred.y, pred.steps[:, -1])


def test_newton_comparators_are_its_first_steps() -> None:
    batch = batch_of("kernel/exp", 14)
    for cls, order in ((budgeted.NewtonAt4, 2), (budgeted.Newton3At16, 3)):
        full = (newton.Newton if order == 2 else newton.Newton3)().iterate(batch)[0]
        pred = cls().predict(batch)
        torch.testing.assert_close(pred.steps, full[:, : cls.budget])
    assert not budgeted.Newton3At1().supports(get("logistic/kappa1").spec)


@pytest.mark.parametrize(("optimizer", "task"), [("gd", "ar/uniform"), ("fista", "lasso/fixed"),
                                                 ("ista", "linear/kappa1")])
def test_stored_values_are_the_searchs(optimizer: str, task: str) -> None:
    """The search re-run at the task's first prompt length (the first draw of the tuning stream) finds the stored
    value for every budget."""
    t = get(task)
    n = t.spec.lengths[0]
    sample = t.sample(tune_steps.PROMPTS, n, t.train_generator(tune_steps.TUNING_SEED), dtype=torch.float64)
    if optimizer == "gd":
        errors = tune_steps.gd_errors(sample.batch, sample.target)
    else:
        errors = tune_steps.proximal_errors(sample.batch, sample.target, optimizer == "fista")
    assert tune_steps.best(errors)[0] == budgeted.load_values()[optimizer][task][n]


def test_gd_at_1_is_the_best_single_step() -> None:
    """On ar/uniform's evaluation set (n = 20), gd @1 is within 0.1 dB of the best single GD step there, whose
    step size is found in closed form: one step from 0 predicts eta W_1 x_query, so the best eta is the least-
    squares scale of W_1 x_query onto the target. The step tuned for 12 steps (`gd_steps.json`) is 2.4 dB worse."""
    task = get("ar/uniform")
    data, _ = eval_set(task)
    n = 20
    batch = Batch(task.spec, data.x[:, :n], data.y[:, :n], data.x_query)
    target = data.targets[n].double()
    direction = gd.descend(batch, 1.0, 1)[0][:, 0]  # the step's direction, eta = 1
    scale = float((direction * target).sum() / (direction**2).sum())
    best = metrics.relative_error(scale * direction, target)["db"]
    assert best == pytest.approx(-4.66, abs=0.01)
    tuned = metrics.relative_error(budgeted.GdAt1().predict(batch).y, target)["db"]
    assert abs(tuned - best) < 0.1
    twelve = metrics.relative_error(gd.descend(batch, gd.load_step_sizes()["ar/uniform"][n], 1)[0][:, 0], target)
    assert twelve["db"] > best + 2


def test_every_task_and_length_has_a_value_per_budget() -> None:
    values = budgeted.load_values()
    for optimizer, families in budgeted.FAMILIES.items():
        tasks = select(list(families))
        assert set(values[optimizer]) == {t.spec.name for t in tasks}
        for t in tasks:
            assert set(values[optimizer][t.spec.name]) == set(t.spec.lengths)
            assert all(len(v) == budgeted.MAX_BUDGET and min(v) > 0 for v in values[optimizer][t.spec.name].values())
    assert budgeted.GdAt16().supports(get("logistic/kappa1").spec)
    assert not budgeted.IstaAt1().supports(get("ar/noisy").spec)
