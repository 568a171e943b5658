"""MPC by CEM on a world model: batched planning, bounds, warm start, the controller interface."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from dcem_agents.models.rssm import RSSM, Imagination
from dcem_agents.planning.mpc import CEMController, Controller, imagined_return_cost
from dcem_agents.training.rollout import RandomController



class _TargetModel(nn.Module):
    """A stand-in world model whose reward is -|u_t - target|², the target being the belief itself (A = 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))
        self.calls: list[tuple[int, ...]] = []

    def imagine(self, belief: Tensor, actions: Tensor) -> Imagination:
        self.calls.append(tuple(actions.shape))
        rewards = -((actions - belief.unsqueeze(1)) ** 2).sum(-1)
        return Imagination(rewards, actions)


def test_cem_controller_solves_batched_problems_in_one_call() -> None:
    model = _TargetModel()
    ctrl = CEMController(model, torch.tensor([-1.0, -1.0]), torch.tensor([1.0, 1.0]), horizon=3, n_samples=200, n_elites=20, n_iters=8)
    assert isinstance(ctrl, Controller)
    targets = torch.tensor([[0.5, -0.25], [-0.7, 0.1], [0.0, 0.9]])
    ctrl.reset(3)
    actions = ctrl.act(targets, torch.Generator().manual_seed(0))
    assert actions.shape == (3, 2)
    torch.testing.assert_close(actions, targets, atol=0.05, rtol=0)
    # every CEM iteration evaluated all 3 × 200 candidates in one model call
    assert model.calls == [(600, 3, 2)] * 8


def test_actions_stay_in_the_box() -> None:
    model = _TargetModel()
    ctrl = CEMController(model, torch.tensor([-1.0, -1.0]), torch.tensor([1.0, 1.0]), horizon=2, n_samples=100, n_elites=10, n_iters=8)
    ctrl.reset(2)
    actions = ctrl.act(torch.tensor([[5.0, -5.0], [3.0, 0.0]]), torch.Generator().manual_seed(0))
    assert (actions.abs() <= 1.0).all()
    assert actions[0, 0] > 0.9 and actions[0, 1] < -0.9 and actions[1, 0] > 0.9


def test_warm_start_shifts_the_previous_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    import dcem_agents.planning.mpc as mpc

    model = _TargetModel()
    ctrl = CEMController(model, torch.tensor([-1.0, -1.0]), torch.tensor([1.0, 1.0]), horizon=4, n_samples=100, n_elites=10, n_iters=5)
    ctrl.reset(1)
    belief = torch.tensor([[0.3, -0.3]])
    ctrl.act(belief, torch.Generator().manual_seed(0))
    previous = ctrl._plan.clone()
    seen = []
    original = mpc.action_space_plan

    def spy(*args, **kwargs):
        seen.append(kwargs["init_mean"])
        return original(*args, **kwargs)

    monkeypatch.setattr(mpc, "action_space_plan", spy)
    ctrl.act(belief, torch.Generator().manual_seed(1))
    ctrl.reset(1)
    ctrl.act(belief, torch.Generator().manual_seed(1))
    torch.testing.assert_close(seen[0][:, :-1], previous[:, 1:])
    torch.testing.assert_close(seen[0][:, -1], torch.zeros(1, 2))  # the new last step starts at the box centre
    torch.testing.assert_close(seen[1], torch.zeros(1, 4, 2))  # after reset: no warm start, the box centre


def test_execute_best_acts_on_the_best_sequence_evaluated_and_warm_starts_from_the_mean() -> None:
    """Full-space CEM with ``execute_best``: the action is the first step of the evaluated sequence of highest model
    return (brute force from the iterates), the stored warm-start plan is still the mean plan."""
    from dcem_agents.math import BestSample

    torch.manual_seed(0)
    model = RSSM(3, 2, 8, 8)
    belief = model.initial(torch.randn(3, 3))
    kw = dict(horizon=4, n_samples=20, n_elites=4, n_iters=3)
    mean_ctrl = CEMController(model, -torch.ones(2), torch.ones(2), **kw)
    best_ctrl = CEMController(model, -torch.ones(2), torch.ones(2), execute_best=True, **kw)
    seen: list = []
    centre = mean_ctrl.centre_plan(3, belief.device, belief.dtype)
    plan = mean_ctrl.plan(belief, centre, generator=torch.Generator().manual_seed(5), callback=seen.append)
    samples = torch.cat([it.samples for it in seen], 1)
    values = torch.cat([it.values for it in seen], 1)
    best = samples[torch.arange(3), values.argmin(-1)].view(3, 4, 2)
    best_ctrl.reset(3)
    acted = best_ctrl.act(belief, torch.Generator().manual_seed(5))
    torch.testing.assert_close(acted, best[:, 0], atol=0, rtol=0)
    torch.testing.assert_close(best_ctrl._plan, plan, atol=0, rtol=0)  # the warm start shifts the mean plan
    mean_ctrl.reset(3)
    assert (mean_ctrl.act(belief, torch.Generator().manual_seed(5)) - acted).abs().amax() > 1e-4
    # BestSample ignores non-finite values
    tracker = BestSample()
    from dcem_agents.math.cem import CEMIterate

    x = torch.tensor([[[0.0], [1.0], [2.0]]])
    tracker(CEMIterate(0, x, torch.tensor([[float("nan"), 3.0, float("-inf")]]), x[..., 0], x[:, 0], x[:, 0]))
    tracker(CEMIterate(1, x + 10, torch.tensor([[4.0, 2.5, float("inf")]]), x[..., 0], x[:, 0], x[:, 0]))
    assert tracker.value.tolist() == [2.5] and tracker.sample.tolist() == [[11.0]]


def test_imagined_return_cost_matches_the_model_rollout() -> None:
    torch.manual_seed(0)
    model = RSSM(3, 1, 8, 8)
    belief = model.initial(torch.randn(2, 3))
    actions = torch.rand(2, 5, 4, 1) * 2 - 1
    costs = imagined_return_cost(model, belief)(actions)
    assert costs.shape == (2, 5)
    expected = -model.imagine(belief[1:2].expand(5, -1), actions[1]).rewards.sum(-1)
    torch.testing.assert_close(costs[1], expected)


def test_controller_on_the_rssm_is_seeded_and_bounded() -> None:
    torch.manual_seed(0)
    model = RSSM(3, 1, 8, 8)
    ctrl = CEMController(model, torch.tensor([-2.0]), torch.tensor([2.0]), horizon=5, n_samples=30, n_elites=5, n_iters=2)
    belief = model.initial(torch.randn(4, 3))
    ctrl.reset(4)
    a = ctrl.act(belief, torch.Generator().manual_seed(3))
    ctrl.reset(4)
    b = ctrl.act(belief, torch.Generator().manual_seed(3))
    assert a.shape == (4, 1) and torch.equal(a, b) and (a.abs() <= 2).all()
    with pytest.raises(ValueError, match="n_elites"):
        CEMController(model, torch.tensor([-1.0]), torch.tensor([1.0]), n_samples=10, n_elites=11)


def test_random_controller_implements_the_interface() -> None:
    ctrl = RandomController(torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 2.0]))
    assert isinstance(ctrl, Controller)
    a = ctrl.act(torch.zeros(1000, 5), torch.Generator().manual_seed(0))
    assert a.shape == (1000, 2) and (a[:, 0].abs() <= 1).all() and (a[:, 1] >= 0).all() and (a[:, 1] <= 2).all()
    assert a[:, 1].mean() == pytest.approx(1.0, abs=0.1)
