"""Cartpole embedding (issue 3): dynamics, decoder, planners, the alg.-2 trainer and the experiment's entry points."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from dcem_agents.config import build
from dcem_agents.experiments import EvalOptions
from dcem_agents.experiments.cartpole_embed import Config, evaluate, improvement_factor, make_cost, train
from dcem_agents.models.cartpole import (
    cartpole_cost,
    cartpole_return,
    cartpole_rollout,
    cartpole_step,
    sample_initial_states,
)
from dcem_agents.models.decoder import LatentActionDecoder
from dcem_agents.planning.action_space import action_space_plan
from dcem_agents.planning.latent import LatentCEMSettings, latent_cost_surface, latent_plan
from dcem_agents.training import load_checkpoint
from dcem_agents.training.embed import EmbeddingTrainer




# --------------------------------------------------------------------------------------------- dynamics


@pytest.mark.parametrize("state,force", [((0.1, -0.2, 0.3, 0.5), 10.0), ((-0.4, 1.5, 2.8, -6.0), -70.0),
                                         ((0.0, 0.0, -1.2, 3.0), 0.0)])
def test_step_solves_the_equations_of_motion(state: tuple[float, ...], force: float) -> None:
    """The accelerations of one step against the Lagrangian of a cart (m_c = 1) carrying a uniform rod (m_p = 0.1,
    half-length l = 0.5, θ = 0 upright, towards +x positive), solved as a linear system instead of the implementation's
    eliminated closed form:

        (m_c + m_p) ẍ + m_p l cos θ · θ̈ = F + m_p l θ̇² sin θ
        cos θ · ẍ + (4/3) l θ̈         = g sin θ                  (g = 9.8)

    then one explicit Euler step of dt = 0.05 (positions move with the old velocities)."""
    x, dx, th, dth = state
    m_c, m_p, l, g, dt = 1.0, 0.1, 0.5, 9.8, 0.05
    s, c = math.sin(th), math.cos(th)
    mass = torch.tensor([[m_c + m_p, m_p * l * c], [c, 4 / 3 * l]], dtype=torch.float64)
    rhs = torch.tensor([force + m_p * l * dth**2 * s, g * s], dtype=torch.float64)
    x_acc, th_acc = torch.linalg.solve(mass, rhs).tolist()
    expected = torch.tensor([x + dt * dx, dx + dt * x_acc, th + dt * dth, dth + dt * th_acc], dtype=torch.float64)
    out = cartpole_step(torch.tensor(state, dtype=torch.float64), torch.tensor([force], dtype=torch.float64))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


def test_force_is_clamped_and_reward_formula() -> None:
    state = torch.tensor([[0.3, 0.0, 0.2, 0.0]], dtype=torch.float64)
    big = cartpole_step(state, torch.tensor([[500.0]], dtype=torch.float64))
    bound = cartpole_step(state, torch.tensor([[100.0]], dtype=torch.float64))
    torch.testing.assert_close(big, bound)
    actions = torch.tensor([[[50.0]]], dtype=torch.float64)  # one step
    expected = math.cos(0.2) - 0.1 * 0.3**2 - 1e-5 * 50.0**2
    assert float(cartpole_return(state, actions)[0]) == pytest.approx(expected, abs=1e-12)
    assert float(cartpole_cost(state, actions)[0]) == pytest.approx(-expected, abs=1e-12)


def test_batched_rollout_matches_one_at_a_time() -> None:
    gen = torch.Generator().manual_seed(0)
    x0 = sample_initial_states(5, gen, dtype=torch.float64)
    actions = 100 * (2 * torch.rand(5, 3, 20, 1, generator=gen, dtype=torch.float64) - 1)
    batched = cartpole_return(x0[:, None], actions)  # (5, 3)
    assert batched.shape == (5, 3)
    for i in range(5):
        for j in range(3):
            states, rewards = cartpole_rollout(x0[i], actions[i, j])
            assert states.shape == (21, 4) and rewards.shape == (20,)
            assert float(rewards.sum()) == pytest.approx(float(batched[i, j]), abs=1e-9)


def test_initial_state_sampler_is_seeded_and_in_range() -> None:
    a = sample_initial_states(1000, torch.Generator().manual_seed(3))
    b = sample_initial_states(1000, torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)
    half = torch.tensor([0.5, 0.5, math.pi, 1.0])
    assert bool((a.abs() <= half).all())
    assert bool((a.abs().amax(0) > 0.9 * half).all())  # the whole range is used


# --------------------------------------------------------------------------------------------- decoder


def test_decoder_shapes_and_bounds() -> None:
    dec = LatentActionDecoder(3, horizon=7, action_dim=2, lower=[-1.0, 0.0], upper=[1.0, 5.0], hidden_sizes=(16, 16),
                              init_scale=4.0)
    z = 10 * torch.randn(4, 5, 3)
    u = dec(z)
    assert u.shape == (4, 5, 7, 2)
    assert bool((u[..., 0] >= -1).all() and (u[..., 0] <= 1).all())
    assert bool((u[..., 1] >= 0).all() and (u[..., 1] <= 5).all())
    assert dec(torch.randn(3)).shape == (7, 2)
    rebuilt = LatentActionDecoder(**dec.config())
    rebuilt.load_state_dict(dec.state_dict())
    torch.testing.assert_close(rebuilt(z), u)
    with pytest.raises(ValueError):
        dec(torch.randn(4, 2))


def test_decoder_init_scale_widens_outputs() -> None:
    z = torch.randn(2000, 2, generator=torch.Generator().manual_seed(0))
    spreads = []
    for scale in (0.3, 3.0):
        torch.manual_seed(0)
        with torch.no_grad():
            spreads.append(float(LatentActionDecoder(2, 20, 1, -100.0, 100.0, init_scale=scale)(z).std()))
    assert spreads[1] > 3 * spreads[0]


# --------------------------------------------------------------------------------------------- planners


def _problem(n: int = 2, seed: int = 0):
    x0 = sample_initial_states(n, torch.Generator().manual_seed(seed))
    return x0, make_cost(x0)


def test_gradient_reaches_decoder_through_dcem() -> None:
    torch.manual_seed(0)
    dec = LatentActionDecoder(2, 20, 1, -100.0, 100.0, hidden_sizes=(16, 16))
    x0, cost = _problem()
    settings = LatentCEMSettings(n_samples=20, n_elites=4, n_iters=3)
    plan = latent_plan(cost, dec, 2, generator=torch.Generator().manual_seed(1), **settings.as_kwargs())
    assert plan.latent.shape == (2, 2) and plan.actions.shape == (2, 20, 1)
    assert plan.latent.requires_grad  # ẑ itself depends on the decoder (the DCEM path)
    grads = torch.autograd.grad(plan.latent.sum(), list(dec.parameters()), allow_unused=True, retain_graph=True)
    assert any(g is not None and float(g.abs().sum()) > 0 for g in grads)
    loss = cost(plan.actions.unsqueeze(1)).sum()
    loss.backward()
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in dec.parameters())
    assert float(dec.net[0].weight.grad.abs().sum()) > 0


def test_hard_latent_cem_gives_no_gradient_through_the_optimizer() -> None:
    # τ = 0 in app. C: ẑ comes from hard elites and carries no gradient; only f_dec(ẑ) does (min-differentiation).
    torch.manual_seed(0)
    dec = LatentActionDecoder(2, 20, 1, -100.0, 100.0, hidden_sizes=(16,))
    _, cost = _problem()
    plan = latent_plan(cost, dec, 2, temperature=None, n_samples=20, n_elites=4, n_iters=2,
                       generator=torch.Generator().manual_seed(1))
    assert not plan.latent.requires_grad
    assert plan.actions.requires_grad and plan.actions.shape == (2, 20, 1)


def test_full_space_cem_improves_over_its_initial_guess() -> None:
    x0, cost = _problem(4)
    plan = action_space_plan(cost, 20, -100.0, 100.0, 4, n_samples=200, n_elites=20, n_iters=5,
                             generator=torch.Generator().manual_seed(0))
    assert plan.shape == (4, 20, 1) and bool((plan.abs() <= 100).all())
    zero = torch.zeros(4, 1, 20, 1)
    assert float(cost(plan.unsqueeze(1)).mean()) < float(cost(zero).mean())


def test_cost_surface_is_the_cost_of_each_decoded_grid_point() -> None:
    """``values[b, i, j]`` is minus the return of the plan decoded at ``grid[i, j] = (z_1[j], z_2[i])``, rolled out
    from state ``b`` one at a time; the grid spans ``[-latent_bound, latent_bound]²``."""
    torch.manual_seed(0)
    dec = LatentActionDecoder(2, 20, 1, -100.0, 100.0, hidden_sizes=(8,))
    x0, cost = _problem(3)
    grid, values = latent_cost_surface(cost, dec, 3, latent_bound=2.0, resolution=5)
    assert grid.shape == (5, 5, 2) and values.shape == (3, 5, 5)
    axis = [-2.0, -1.0, 0.0, 1.0, 2.0]
    with torch.no_grad():
        for i in range(5):
            for j in range(5):
                assert grid[i, j].tolist() == pytest.approx([axis[j], axis[i]], abs=1e-6)
                plan = dec(torch.tensor([axis[j], axis[i]]))  # (20, 1)
                for b in range(3):
                    _, rewards = cartpole_rollout(x0[b], plan)
                    assert float(values[b, i, j]) == pytest.approx(-float(rewards.sum()), abs=1e-4), (b, i, j)
    assert values.std() > 1.0  # the surface is not flat: the points are told apart


# --------------------------------------------------------------------------------------------- alg. 2


def test_tiny_alg2_run_lowers_validation_cost() -> None:
    torch.manual_seed(0)
    dec = LatentActionDecoder(2, 20, 1, -100.0, 100.0, hidden_sizes=(32, 32), init_scale=1.0)
    settings = LatentCEMSettings(n_samples=30, n_elites=5, n_iters=3)
    trainer = EmbeddingTrainer(dec, make_cost, settings, lr=1e-2, total_steps=20, lr_min_factor=0.3)
    x_val = sample_initial_states(32, torch.Generator().manual_seed(123))
    before = trainer.validate(x_val, seed=7, step=0)
    assert trainer.validate(x_val, seed=7) == before  # deterministic given the seed
    gen = torch.Generator().manual_seed(0)
    for step in range(1, 21):
        out = trainer.train_step(sample_initial_states(8, gen), gen)
        assert math.isfinite(out["loss"]) and out["grad_norm"] > 0
        if step % 5 == 0:
            trainer.validate(x_val, seed=7, step=step)
    assert trainer.best_cost < before - 1.0  # seeds 0-2 all give a drop of more than 3
    assert trainer.best_state is not None and trainer.best_step > 0


def test_improvement_factor_sign_convention() -> None:
    assert improvement_factor(10.8, 10.0) == pytest.approx(1.08)
    assert improvement_factor(9.0, 10.0) < 1.0
    assert improvement_factor(-4.0, -5.0) > 1.0  # negative returns: a smaller loss is still an improvement
    assert improvement_factor(-6.0, -5.0) < 1.0
    assert improvement_factor(-5.0, -5.0) == 1.0


# --------------------------------------------------------------------------------------------- experiment


def test_train_and_evaluate_smoke(tmp_path: Path) -> None:
    cfg = build(Config, {
        "experiment": "cartpole_embed", "n_steps": 3, "batch_size": 2, "hidden_sizes": [8], "n_samples": 20,
        "n_elites": 4, "n_iters": 2, "n_val_states": 4, "val_interval": 2, "expert_samples": 40, "full_iters": 2,
    })
    summary = train(cfg, tmp_path / "run")
    assert (tmp_path / "run" / "tb").is_dir()
    # validation at step 0, every val_interval = 2 steps and at the last step 3; the summary is read off that log
    import csv

    rows = list(csv.DictReader((tmp_path / "run" / "progress.csv").open()))
    assert [r["step"] for r in rows] == ["0", "1", "2", "3"]
    val = {int(r["step"]): float(r["val/cost"]) for r in rows if r["val/cost"]}
    assert sorted(val) == [0, 2, 3]
    assert summary["final_val_cost"] == pytest.approx(val[3], rel=1e-6)
    assert summary["best_val_cost"] == pytest.approx(min(val.values()), rel=1e-6)
    ckpt = load_checkpoint(summary["checkpoint"], "cartpole_embed")
    assert ckpt["config"]["n_steps"] == 3
    assert ckpt["best_step"] == summary["best_step"] == min(val, key=val.get)
    out = tmp_path / "results" / "cartpole_embed.json"
    result = evaluate(ckpt, EvalOptions(episodes=2, seed=0, out=out, device="cpu"))
    saved = json.loads(out.read_text())
    assert set(saved["controllers"]) == {"latent_dcem", "latent_cem", "full_cem_100", "full_cem_1000"}
    # what the settings imply: samples per iteration, iterations and transitions per plan (horizon 20)
    implied = {"latent_dcem": (20, 2), "latent_cem": (20, 2), "full_cem_100": (100, 2), "full_cem_1000": (40, 2)}
    for name, (samples, iters) in implied.items():
        c = saved["controllers"][name]
        assert (c["samples_per_iter"], c["iters"], c["transitions_per_plan"]) == (samples, iters, samples * iters * 20)
        assert c["ms_per_plan"] > 0
    # each improvement factor from the listed means: 1 + (R - R_expert) / |R_expert|
    expert_mean = saved["controllers"]["full_cem_1000"]["mean_return"]
    for c in saved["controllers"].values():
        assert c["improvement_factor"] == pytest.approx(1 + (c["mean_return"] - expert_mean) / abs(expert_mean))
    # the latent DCEM mean return re-run by hand: the held-out states of seed 0, one plan each (generator seeded by
    # the state's index), scored by rolling the plan out step by step
    from dcem_agents.experiments.cartpole_embed import TEST_SEED_OFFSET, load_decoder

    decoder = load_decoder(ckpt)
    states = sample_initial_states(2, torch.Generator().manual_seed(TEST_SEED_OFFSET))
    by_hand = []
    with torch.no_grad():
        for i in range(2):
            plan = latent_plan(make_cost(states[i : i + 1]), decoder, 1, generator=torch.Generator().manual_seed(i),
                               **build(Config, ckpt["config"]).latent_settings().as_kwargs())
            by_hand.append(float(cartpole_rollout(states[i], plan.actions[0])[1].sum()))
    assert saved["controllers"]["latent_dcem"]["mean_return"] == pytest.approx(sum(by_hand) / 2, rel=1e-5, abs=1e-4)
    assert "| latent_dcem |" in result["table"]
    assert all(Path(f).exists() for f in saved["figures"])
    again = evaluate(ckpt, EvalOptions(controller="latent_dcem", episodes=2, seed=0, out=tmp_path / "b.json"))
    assert again["controllers"]["latent_dcem"]["mean_return"] == saved["controllers"]["latent_dcem"]["mean_return"]
    with pytest.raises(ValueError):
        evaluate(ckpt, EvalOptions(controller="nope", episodes=1, out=tmp_path / "c.json"))


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError):
        Config(n_elites=200)
    with pytest.raises(ValueError):
        Config(temperature=0.0)
