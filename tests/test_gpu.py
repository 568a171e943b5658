"""CUDA checks (marked ``gpu``; skipped without a CUDA device): graph capture and replay of both controllers, the
lean rollout and the counter-based noise on the GPU against their CPU results."""

from __future__ import annotations

import pytest
import torch

from dcem_agents.math.counter_noise import counter_normal
from dcem_agents.models.decoder import LatentActionDecoder
from dcem_agents.models.lean_rollout import imagine_rewards
from dcem_agents.models.rssm import RSSM
from dcem_agents.planning.latent import LatentCEMSettings
from dcem_agents.planning.latent_mpc import LatentDCEMController
from dcem_agents.planning.mpc import CEMController
from dcem_agents.planning.runtime import RUNTIME_PRESETS

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")


def _model() -> RSSM:
    torch.manual_seed(0)
    return RSSM(5, 1, 64, 64)


def test_lean_rollout_on_cuda_matches_the_cpu_reference() -> None:
    model = _model()
    g = torch.Generator().manual_seed(1)
    belief = model.initial(torch.randn(40, 5, generator=g))
    actions = torch.rand(40, 8, 1, generator=g) * 2 - 1
    ref = model.imagine(belief, actions).rewards
    torch.backends.cuda.matmul.allow_tf32 = False
    with torch.no_grad():
        out = imagine_rewards(model.to(CUDA), belief.to(CUDA), actions.to(CUDA), "fp32").cpu()
        bf16 = imagine_rewards(model, belief.to(CUDA), actions.to(CUDA), "bf16").cpu()
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    assert (bf16 - ref).abs().max() < 0.05 * ref.abs().max() + 1e-3


def test_counter_noise_is_the_same_on_cpu_and_cuda() -> None:
    seeds = torch.tensor([0.0, 3.0, 16777215.0])
    cpu = counter_normal(seeds, (10, 100, 2))
    gpu = counter_normal(seeds.to(CUDA), (10, 100, 2)).cpu()
    torch.testing.assert_close(gpu, cpu, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n_envs", [1, 5])
def test_cem_graph_replay_equals_the_eager_plan(n_envs: int) -> None:
    model = _model().to(CUDA)
    ctrl = CEMController(model, torch.tensor([-1.0]), torch.tensor([1.0]), horizon=6, n_samples=64, n_elites=8,
                         n_iters=4, runtime=RUNTIME_PRESETS["fp32"])
    belief = model.initial(torch.randn(n_envs, 5, device=CUDA))
    ctrl.reset(n_envs)
    with torch.no_grad():
        for seed in (1, 2, 3):  # capture, then replays with new beliefs and a warm start
            init = torch.zeros(n_envs, 6, 1, device=CUDA) if ctrl._plan is None else torch.cat(
                [ctrl._plan[:, 1:], torch.zeros(n_envs, 1, 1, device=CUDA)], 1)
            noise = torch.randn(4, n_envs, 64, 6, generator=torch.Generator(device=CUDA).manual_seed(seed), device=CUDA)
            expected = ctrl.plan(belief, init, noise=noise)
            action = ctrl.act(belief, torch.Generator(device=CUDA).manual_seed(seed))
            torch.testing.assert_close(ctrl._plan, expected, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(action, expected[:, 0], atol=1e-5, rtol=1e-5)
            belief = belief + 0.1
    assert len(ctrl.graphs) == 1


def test_latent_graph_replay_equals_the_eager_plan_and_sees_weight_updates() -> None:
    model = _model().to(CUDA)
    torch.manual_seed(1)
    decoder = LatentActionDecoder(2, 6, 1, -1.0, 1.0, hidden_sizes=(32, 32)).to(CUDA)
    ctrl = LatentDCEMController(model, decoder, LatentCEMSettings(50, 5, 4, 1.0), RUNTIME_PRESETS["fp32"])
    belief = model.initial(torch.randn(3, 5, device=CUDA))
    for step in range(3):
        noise = ctrl.draw_noise(3, torch.Generator(device=CUDA).manual_seed(step))
        with torch.no_grad():
            expected = ctrl.plan(belief, noise=noise).actions[:, 0]
            action = ctrl.act(belief, torch.Generator(device=CUDA).manual_seed(step))
            torch.testing.assert_close(action, expected, atol=1e-5, rtol=1e-5)
            decoder.net[-1].bias.add_(0.3)  # an in-place update between calls must reach the replay
    assert len(ctrl.graphs) == 1


def _policy_collection_and_update(device: torch.device) -> tuple[int, float, float]:
    """The shipped PPO start policy on ``device``: collect twice (capture, replay), then PPO's eager update forward.

    :return: captures held, max |replayed - first action|, max |update log-prob - collection log-prob|.
    """
    from pathlib import Path

    from dcem_agents import EmbeddedDCEMPolicy

    ckpt = Path(__file__).resolve().parents[1] / "checkpoints" / "dcem_cartpole_swingup.pt"
    policy = EmbeddedDCEMPolicy.for_evaluation(EmbeddedDCEMPolicy.policy_kwargs(ckpt), device=device)
    g = torch.Generator().manual_seed(0)
    obs = torch.cat([torch.randn(8, policy.world_model.belief_dim, generator=g) * 0.5,
                     torch.randint(0, 2**24, (8, 1), generator=g).float()], 1).to(device)
    with torch.no_grad():
        actions, _, log_prob = policy(obs, deterministic=True)
        again, _, _ = policy(obs, deterministic=True)
    _, update_log_prob, _ = policy.evaluate_actions(obs, actions)  # records gradients: eager
    return (len(policy._graphs), float((again - actions).abs().max()),
            float((update_log_prob.detach() - log_prob).abs().max()))


def test_policy_collection_replays_a_graph_and_keeps_the_ratio() -> None:
    captures, replay_diff, log_prob_diff = _policy_collection_and_update(CUDA)
    assert captures == 1
    assert replay_diff < 1e-6
    assert log_prob_diff < 1e-4  # PPO's ratio exp(Δ log π) is 1 at the start of the update
