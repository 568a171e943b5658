"""Phase 2: the embedded DCEM controller on a world model, alg.-2 gradients, swapping controllers, a tiny run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dcem_agents.models.decoder import LatentActionDecoder
from dcem_agents.models.rssm import RSSM
from dcem_agents.planning.latent import LatentCEMSettings
from dcem_agents.planning.latent_mpc import LatentDCEMController
from dcem_agents.planning.mpc import CEMController, Controller, imagined_return_cost
from dcem_agents.training.latent_phase import decoder_loss

from _scripts import run_script


def _agent(seed: int = 0) -> tuple[RSSM, LatentDCEMController]:
    torch.manual_seed(seed)
    model = RSSM(5, 1, hidden_size=16, layer_size=16)
    decoder = LatentActionDecoder(2, 4, 1, -1.0, 1.0, hidden_sizes=(16, 16))
    return model, LatentDCEMController(model, decoder, LatentCEMSettings(n_samples=12, n_elites=3, n_iters=3))


def test_gradient_reaches_decoder_through_dcem_and_model_rollout() -> None:
    model, ctrl = _agent()
    belief = model.initial(torch.randn(3, 5, generator=torch.Generator().manual_seed(1)))
    model.requires_grad_(False)
    loss = decoder_loss(ctrl, belief, torch.Generator().manual_seed(2))
    loss.backward()
    grads = [p.grad for p in ctrl.decoder.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0
    assert all(p.grad is None for p in model.parameters())


def test_decoder_gradient_matches_finite_differences() -> None:
    """With fixed noise, d(planned cost)/d(decoder bias) from autograd equals central differences (float64)."""
    model, ctrl = _agent(3)
    model.double()
    ctrl.decoder.double()
    belief = model.initial(torch.randn(2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(4)))
    noise = ctrl.draw_noise(2, torch.Generator().manual_seed(5))
    bias = ctrl.decoder.net[-1].bias

    def cost() -> torch.Tensor:
        plan = ctrl.plan(belief, noise=noise)
        return -model.imagine(belief, plan.actions).rewards.sum()

    (grad,) = torch.autograd.grad(cost(), bias)
    fd = torch.zeros_like(bias)
    with torch.no_grad():
        for i in range(bias.numel()):
            bias[i] += 1e-6
            up = cost()
            bias[i] -= 2e-6
            down = cost()
            bias[i] += 1e-6
            fd[i] = (up - down) / 2e-6
    assert grad.abs().max() > 1e-6
    torch.testing.assert_close(grad, fd, atol=1e-6, rtol=1e-4)


def test_same_noise_same_plan_and_controllers_swap() -> None:
    model, latent = _agent()
    belief = model.initial(torch.randn(4, 5, generator=torch.Generator().manual_seed(6)))
    noise = latent.draw_noise(4, torch.Generator().manual_seed(7))
    replayed = latent.plan(belief, noise=noise)
    # pre-drawn noise replays exactly the plan that the same generator gives (what PPO's update relies on) ...
    drawn = latent.plan(belief, torch.Generator().manual_seed(7))
    torch.testing.assert_close(replayed.actions, drawn.actions, atol=0, rtol=0)
    # ... the plan really depends on that noise (so the equality above is not trivially met) ...
    other = latent.plan(belief, noise=latent.draw_noise(4, torch.Generator().manual_seed(70)))
    assert (other.actions - replayed.actions).abs().amax() > 1e-4
    # ... it is the decoded latent mean, inside the latent box, and each row is planned on its own
    torch.testing.assert_close(replayed.actions, latent.decoder(replayed.latent), atol=0, rtol=0)
    assert replayed.latent.abs().amax() <= latent.settings.latent_bound
    row = latent.plan(belief[2:3], noise=noise[:, 2:3])
    torch.testing.assert_close(row.actions, replayed.actions[2:3], atol=1e-6, rtol=0)
    # act() executes the first action of that plan
    latent.reset(4)
    torch.testing.assert_close(latent.act(belief, torch.Generator().manual_seed(7)), drawn.actions[:, 0], atol=0, rtol=0)
    cem = CEMController(model, torch.tensor([-1.0]), torch.tensor([1.0]), horizon=4, n_samples=16, n_elites=4, n_iters=2)
    for ctrl in (latent, cem):
        assert isinstance(ctrl, Controller)
        ctrl.reset(4)
        action = ctrl.act(belief, torch.Generator().manual_seed(8))
        assert action.shape == (4, 1) and (action.abs() <= 1).all() and not action.requires_grad
    assert latent.samples_per_step == 36


def test_execute_best_acts_on_the_best_latent_sample_the_search_evaluated() -> None:
    """With ``execute_best`` the action is the decoded sample of lowest model cost over every iteration (computed here
    by brute force from the iterates), not the decoded mean; the differentiable plan (alg. 2, PPO) is unchanged."""
    import dataclasses

    model, latent = _agent()
    belief = model.initial(torch.randn(4, 5, generator=torch.Generator().manual_seed(6)))
    seen = []
    plan = latent.plan(belief, torch.Generator().manual_seed(7), callback=seen.append)
    samples = torch.cat([it.samples for it in seen], 1)  # (B, n_iters * N, d)
    values = torch.cat([it.values for it in seen], 1)
    best = samples[torch.arange(4), values.argmin(-1)]
    best_controller = LatentDCEMController(model, latent.decoder,
                                           dataclasses.replace(latent.settings, execute_best=True))
    acted = best_controller.act(belief, torch.Generator().manual_seed(7))
    torch.testing.assert_close(acted, latent.decoder(best)[:, 0], atol=0, rtol=0)
    assert (acted - plan.actions[:, 0]).abs().amax() > 1e-4  # the option changes the action here
    # the executed plan's model cost is the lowest the search saw
    best_cost = imagined_return_cost(model, belief)(latent.decoder(best)[:, None])[:, 0]
    torch.testing.assert_close(best_cost, values.min(-1).values, atol=1e-5, rtol=0)
    replanned = best_controller.plan(belief, torch.Generator().manual_seed(7))
    torch.testing.assert_close(replanned.actions, plan.actions, atol=0, rtol=0)


@pytest.mark.parametrize("execute_best", [False, True])
def test_reuse_plan_executes_the_cheaper_of_the_shifted_previous_plan_and_the_new_one(execute_best: bool) -> None:
    """With ``reuse_plan`` each row executes, of its previous executed plan shifted by one step (last action repeated)
    and the plan the search gives now, the one of lower model cost (computed here by brute force); ``reset`` forgets
    the previous plans, and the search itself is the one without the option."""
    import dataclasses

    model, plain = _agent()
    plain.settings = dataclasses.replace(plain.settings, execute_best=execute_best)
    reuse = LatentDCEMController(model, plain.decoder, dataclasses.replace(plain.settings, reuse_plan=True))
    assert reuse.samples_per_step == plain.samples_per_step + (1 if execute_best else 2)
    beliefs = model.initial(torch.randn(2, 32, 5, generator=torch.Generator().manual_seed(6)).view(64, 5)).view(2, 32, -1)
    first = plain.executed_plans(beliefs[0], torch.Generator().manual_seed(7))
    reuse.reset(32)
    torch.testing.assert_close(reuse.act(beliefs[0], torch.Generator().manual_seed(7)), first[:, 0], atol=0, rtol=0)
    new = plain.executed_plans(beliefs[1], torch.Generator().manual_seed(8))
    shifted = torch.cat([first[:, 1:], first[:, -1:]], 1)
    cost = imagined_return_cost(model, beliefs[1])
    keep = cost(shifted[:, None])[:, 0] < cost(new[:, None])[:, 0]
    assert 0 < int(keep.sum()) < 32  # both outcomes occur on these rows, so the check below tells them apart
    expected = torch.where(keep[:, None], shifted[:, 0], new[:, 0])
    torch.testing.assert_close(reuse.act(beliefs[1], torch.Generator().manual_seed(8)), expected, atol=0, rtol=0)
    reuse.reset(32)
    torch.testing.assert_close(reuse.act(beliefs[1], torch.Generator().manual_seed(8)), new[:, 0], atol=0, rtol=0)


@pytest.mark.parametrize("option", ["execute_best", "reuse_plan"])
def test_a_checkpoint_keeps_its_presets_acting_options(phase2_checkpoint: Path, option: str) -> None:
    """A phase-2 run whose preset acts on the best sample (or reuses its plans) evaluates that way; checkpoints written
    before the option existed (no key) load with it off."""
    from dcem_agents.training.checkpoint import load_checkpoint
    from dcem_agents.training.components import components_from_checkpoint

    ckpt = load_checkpoint(phase2_checkpoint, "dcem")
    ckpt["config"]["planner"][option] = True
    assert getattr(components_from_checkpoint(ckpt).settings, option)
    del ckpt["config"]["planner"][option]
    assert not getattr(components_from_checkpoint(ckpt).settings, option)


def test_decoder_action_dim_must_match_model() -> None:
    model = RSSM(5, 2, hidden_size=8, layer_size=8)
    with pytest.raises(ValueError, match="action_dim"):
        LatentDCEMController(model, LatentActionDecoder(2, 4, 1, -1.0, 1.0, hidden_sizes=(8,)))


def test_tiny_phase2_run_and_evaluate_both_controllers(phase2_checkpoint: Path, tmp_path: Path) -> None:
    summary = json.loads((phase2_checkpoint.parent / "summary.json").read_text())
    assert summary["env_steps"] > summary["phase1_env_steps"] and summary["decoder_updates"] > 0
    out = tmp_path / "eval.json"
    ev = run_script("evaluate.py", "--checkpoint", str(phase2_checkpoint), "--controller", "dcem,cem,latent-cem",
                    "--episodes", "2", "--out", str(out))
    assert ev.returncode == 0, ev.stderr[-2000:]
    result = json.loads(out.read_text())
    assert set(result["controllers"]) == {"dcem", "cem", "latent-cem"}  # as evaluate.py --entry offers them
    assert all(len(c["returns"]) == 2 for c in result["controllers"].values())
    dcem_mean, cem_mean = (result["controllers"][k]["return_mean"] for k in ("dcem", "cem"))
    assert result["dcem_minus_cem_return"] == pytest.approx(dcem_mean - cem_mean)
    assert result["dcem_over_cem_return"] == (pytest.approx(dcem_mean / cem_mean) if cem_mean > 0 else None)
    bad = run_script("evaluate.py", "--checkpoint", str(phase2_checkpoint), "--controller", "ppo")
    assert bad.returncode == 2 and "available: dcem, cem" in bad.stderr
