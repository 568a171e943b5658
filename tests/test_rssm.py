"""The proprioceptive RSSM (fig. 8): shapes, filtering, imagination, loss terms, learning on a tiny problem."""

from __future__ import annotations

import pytest
import torch

from dcem_agents.models.rssm import RSSM

OBS, ACT = 3, 2



def _model(hidden: int = 16, layer: int = 16) -> RSSM:
    torch.manual_seed(0)
    return RSSM(OBS, ACT, hidden, layer)


def _linear_system(batch: int, length: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x_{t+1} = A x_t + B u_t, r_t = -|x_{t+1}|²: a tiny problem the model can fit."""
    g = torch.Generator().manual_seed(seed)
    a = torch.tensor([[0.9, 0.2, 0.0], [-0.2, 0.9, 0.0], [0.0, 0.1, 0.8]])
    b = torch.tensor([[0.5, 0.0], [0.0, 0.5], [0.2, 0.2]])
    x = torch.randn(batch, OBS, generator=g)
    u = torch.rand(batch, length, ACT, generator=g) * 2 - 1
    obs, rew = [x], []
    for t in range(length):
        x = x @ a.T + u[:, t] @ b.T
        obs.append(x)
        rew.append(-(x**2).sum(-1))
    return torch.stack(obs, 1), u, torch.stack(rew, 1)


def test_shapes_of_filtering_and_imagination() -> None:
    model = _model()
    assert model.belief_dim == 16 + OBS
    obs, act, _ = _linear_system(4, 7)
    beliefs = model.observe(obs, act)
    assert beliefs.shape == (4, 8, model.belief_dim)
    # the belief holds the normalized current observation after the recurrent state
    torch.testing.assert_close(model.split(beliefs)[1], model.normalize(obs))
    assert (model.split(beliefs[:, 0])[0] == 0).all()
    step = model.observe_step(beliefs[:, 2], act[:, 2], obs[:, 3])
    torch.testing.assert_close(step, beliefs[:, 3])
    imagined = model.imagine(beliefs[:, -1], torch.zeros(4, 5, ACT))
    assert imagined.rewards.shape == (4, 5) and imagined.obs.shape == (4, 5, OBS)
    sampled = model.imagine(beliefs[:, -1], torch.zeros(4, 5, ACT), sample=True, generator=torch.Generator().manual_seed(0))
    assert sampled.rewards.shape == (4, 5) and not torch.allclose(sampled.obs, imagined.obs)


def test_normalization_is_stored_with_the_weights() -> None:
    model = _model()
    model.set_obs_normalization(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 0.0, 4.0]))
    x = torch.tensor([[3.0, 2.0, 7.0]])
    torch.testing.assert_close(model.normalize(x), torch.tensor([[1.0, 0.0, 1.0]]))
    torch.testing.assert_close(model.denormalize(model.normalize(x)), x)
    other = RSSM(OBS, ACT, 16, 16)
    other.load_state_dict(model.state_dict())
    torch.testing.assert_close(other.normalize(x), model.normalize(x))


def test_loss_terms_and_overshooting_consistency() -> None:
    model = _model()
    obs, act, rew = _linear_system(5, 9)
    terms = model.loss(obs, act, rew)
    assert set(terms) == {"obs_nll", "reward"} and all(v.dim() == 0 for v in terms.values())
    terms = model.loss(obs, act, rew, overshooting=3, overshoot_stride=2)
    assert set(terms) == {"obs_nll", "reward", "overshoot_obs", "overshoot_reward"}
    # with K = 1 the open-loop prediction is the teacher-forced one-step prediction
    one = model.loss(obs, act, rew, overshooting=1)
    beliefs = model.observe(obs, act)
    h = model.split(beliefs[:, :-1])[0]
    h_next = torch.stack([model.transition(h[:, t], model.normalize(obs[:, t]), act[:, t]) for t in range(9)], 1)
    mean = model.obs_distribution(h_next)[0]
    expected = (mean - model.normalize(obs[:, 1:])).pow(2).sum(-1).mean()
    torch.testing.assert_close(one["overshoot_obs"], expected)
    # overshooting longer than the chunk is clipped to it
    assert torch.isfinite(model.loss(obs, act, rew, overshooting=50)["overshoot_obs"])


def test_loss_decreases_on_a_tiny_problem() -> None:
    model = _model(32, 32)
    obs, act, rew = _linear_system(32, 12)
    model.set_obs_normalization(obs.reshape(-1, OBS).mean(0), obs.reshape(-1, OBS).std(0))
    opt = torch.optim.Adam(model.parameters(), 3e-3)

    def total() -> torch.Tensor:
        return sum(model.loss(obs, act, rew, overshooting=4).values())

    with torch.no_grad():
        before = model.loss(obs, act, rew, overshooting=4)
    for _ in range(150):
        opt.zero_grad()
        total().backward()
        opt.step()
    with torch.no_grad():
        after = model.loss(obs, act, rew, overshooting=4)
    assert after["obs_nll"] < before["obs_nll"] - 2.0
    for key in ("reward", "overshoot_obs", "overshoot_reward"):
        assert after[key] < 0.3 * before[key], (key, before[key], after[key])


def test_imagined_rewards_are_differentiable_in_the_actions() -> None:
    model = _model()
    obs, act, _ = _linear_system(2, 3)
    belief = model.observe(obs, act)[:, -1]
    actions = torch.zeros(2, 4, ACT, requires_grad=True)
    model.imagine(belief, actions).rewards.sum().backward()
    assert actions.grad is not None and actions.grad.abs().sum() > 0


def test_bad_sizes_raise() -> None:
    with pytest.raises(ValueError, match="sizes"):
        RSSM(0, 1)
