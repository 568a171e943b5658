"""The fast planning path: lean rollout (same function as RSSM.imagine), runtimes, counter-based noise, graph cache."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dcem_agents.math.counter_noise import counter_normal
from dcem_agents.models.decoder import LatentActionDecoder
from dcem_agents.models.lean_rollout import imagine_objective, imagine_rewards
from dcem_agents.models.rssm import RSSM
from dcem_agents.planning.cuda_graph import EagerBackend, GraphCache
from dcem_agents.planning.latent import LatentCEMSettings
from dcem_agents.planning.latent_mpc import LatentDCEMController
from dcem_agents.planning.mpc import CEMController, imagined_return_cost
from dcem_agents.planning.runtime import RUNTIME_PRESETS, PlannerRuntime


def _model(obs: int = 4, act: int = 2, hidden: int = 24, layer: int = 20, seed: int = 0,
           continuation: bool = False) -> RSSM:
    torch.manual_seed(seed)
    model = RSSM(obs, act, hidden, layer, continuation=continuation)
    model.set_obs_normalization(torch.randn(obs), torch.rand(obs) + 0.5)
    return model


def _inputs(model: RSSM, m: int, horizon: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    belief = model.initial(torch.randn(m, model.obs_dim, generator=g))
    belief[:, : model.hidden_size] = torch.randn(m, model.hidden_size, generator=g).tanh()
    actions = torch.rand(m, horizon, model.action_dim, generator=g) * 2 - 1
    return belief, actions


@pytest.mark.parametrize("continuation", [False, True])
@pytest.mark.parametrize("chunk", [1, 7, 1024])
def test_lean_rollout_is_rssm_imagine(chunk: int, continuation: bool) -> None:
    model = _model(continuation=continuation)
    belief, actions = _inputs(model, 30, 6)
    ref = model.imagine(belief, actions).weighted_rewards()
    torch.testing.assert_close(imagine_rewards(model, belief, actions, "fp32", chunk), ref, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("continuation", [False, True])
def test_lean_rollout_gradients_match_the_reference(continuation: bool) -> None:
    """Gradients w.r.t. actions, the start belief and every parameter (fp64: equal to rounding)."""
    model = _model(continuation=continuation).double()
    belief, actions = _inputs(model, 12, 5)
    belief, actions = belief.double().requires_grad_(), actions.double().requires_grad_()
    weights = torch.randn(12, 5, dtype=torch.float64)

    def grads(fn) -> list[torch.Tensor]:
        out = (fn() * weights).sum()
        return torch.autograd.grad(out, [actions, belief, *model.parameters()], allow_unused=True)

    ref = grads(lambda: model.imagine(belief, actions).weighted_rewards())
    lean = grads(lambda: imagine_rewards(model, belief, actions, "fp32", chunk=5))
    for r, g in zip(ref, lean):
        if r is None:
            assert g is None or g.abs().max() == 0
        else:
            torch.testing.assert_close(g, r, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("continuation", [False, True])
@pytest.mark.parametrize("chunk", [1, 7, 1024])
def test_lean_objective_is_the_reference_objective_with_a_value_head(chunk: int, continuation: bool) -> None:
    """Rewards plus the terminal value: values (any chunking) and gradients (fp64) as ``imagine(...).objective()``."""
    torch.manual_seed(0)
    model = RSSM(4, 2, 24, 20, continuation=continuation, value=True, discount=0.9)
    with torch.no_grad():
        for p in model.value_head.parameters():  # its last layer starts at 0 (V = 0): give it a value to check
            p.normal_(0, 0.3)
    belief, actions = _inputs(model, 30, 6)
    im = model.imagine(belief, actions)
    assert im.terminal is not None and im.terminal.abs().min() > 0
    torch.testing.assert_close(imagine_objective(model, belief, actions, "fp32", chunk), im.objective(),
                               atol=1e-5, rtol=1e-5)
    # the rewards alone leave the value out
    torch.testing.assert_close(imagine_rewards(model, belief, actions, "fp32", chunk), im.weighted_rewards(),
                               atol=1e-6, rtol=1e-5)
    model = model.double()
    belief, actions = belief.double().requires_grad_(), actions.double().requires_grad_()
    ref = torch.autograd.grad(model.imagine(belief, actions).objective().sum(), [actions, belief, *model.parameters()],
                              allow_unused=True)
    lean = torch.autograd.grad(imagine_objective(model, belief, actions, "fp32", chunk).sum(),
                               [actions, belief, *model.parameters()], allow_unused=True)
    for r, g in zip(ref, lean):
        if r is None:
            assert g is None or g.abs().max() == 0
        else:
            torch.testing.assert_close(g, r, atol=1e-10, rtol=1e-8)


def test_bf16_rollout_is_close_and_returns_the_model_dtype() -> None:
    model = _model(hidden=64, layer=64)
    belief, actions = _inputs(model, 50, 8)
    ref = model.imagine(belief, actions).rewards
    out = imagine_rewards(model, belief, actions, "bf16")
    assert out.dtype == torch.float32
    assert (out - ref).abs().max() < 0.05 * ref.abs().max() + 1e-3
    assert not torch.equal(out, ref)  # it did compute in bf16


def test_bf16_leaves_a_float64_model_in_float64() -> None:
    model = _model().double()
    belief, actions = _inputs(model, 6, 4)
    belief, actions = belief.double(), actions.double()
    out = imagine_rewards(model, belief, actions, "bf16")
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, model.imagine(belief, actions).rewards, atol=1e-12, rtol=1e-10)


def test_cached_weights_follow_in_place_updates() -> None:
    """Gradient-free calls reuse the rearranged weights only while no parameter changed."""
    model = _model()
    belief, actions = _inputs(model, 8, 4)
    with torch.no_grad():
        first = imagine_rewards(model, belief, actions)
        model.reward_head[4].bias.add_(1.0)  # an optimizer-like in-place update
        second = imagine_rewards(model, belief, actions)
        torch.testing.assert_close(second, model.imagine(belief, actions).rewards, atol=1e-6, rtol=1e-5)
        model.load_state_dict(_model(seed=3).state_dict())
        third = imagine_rewards(model, belief, actions)
        torch.testing.assert_close(third, model.imagine(belief, actions).rewards, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(second - first, torch.ones_like(first))


def test_lean_rollout_rejects_bad_arguments() -> None:
    model = _model()
    belief, actions = _inputs(model, 4, 3)
    with pytest.raises(ValueError, match="precision"):
        imagine_rewards(model, belief, actions, "fp16")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="belief"):
        imagine_rewards(model, belief[:3], actions)
    with pytest.raises(ValueError, match="chunk"):
        imagine_rewards(model, belief, actions, chunk=0)


def test_runtime_validation_and_presets() -> None:
    with pytest.raises(ValueError, match="reference rollout"):
        PlannerRuntime(rollout="reference", precision="bf16")
    with pytest.raises(ValueError, match="precision"):
        PlannerRuntime(precision="int8")  # type: ignore[arg-type]
    assert RUNTIME_PRESETS["reference"].rollout == "reference"
    assert {"reference", "fp32", "bf16"} <= set(RUNTIME_PRESETS)


def test_controllers_plan_the_same_under_reference_and_fp32_lean() -> None:
    """Same noise, same plans: the runtime changes the arithmetic, not the planning problem."""
    model = _model(act=1)
    belief, _ = _inputs(model, 3, 1)
    torch.manual_seed(2)
    decoder = LatentActionDecoder(2, 5, 1, -1.0, 1.0, hidden_sizes=(16,))
    settings = LatentCEMSettings(20, 4, 3, 1.0)
    ref = LatentDCEMController(model, decoder, settings, RUNTIME_PRESETS["reference"])
    lean = LatentDCEMController(model, decoder, settings, RUNTIME_PRESETS["fp32"])
    noise = ref.draw_noise(3, torch.Generator().manual_seed(3))
    torch.testing.assert_close(lean.plan(belief, noise=noise).actions, ref.plan(belief, noise=noise).actions,
                               atol=1e-5, rtol=1e-5)
    cems = [CEMController(model, torch.tensor([-1.0]), torch.tensor([1.0]), horizon=5, n_samples=30, n_elites=5,
                          n_iters=3, runtime=RUNTIME_PRESETS[n]) for n in ("reference", "fp32")]
    init = torch.zeros(3, 5, 1)
    cem_noise = torch.randn(3, 3, 30, 5, generator=torch.Generator().manual_seed(4))
    plans = [c.plan(belief, init, noise=cem_noise) for c in cems]
    torch.testing.assert_close(plans[1], plans[0], atol=1e-5, rtol=1e-5)


def test_imagined_return_cost_uses_the_lean_rollout() -> None:
    model = _model()
    belief, _ = _inputs(model, 2, 1)
    actions = torch.rand(2, 6, 4, model.action_dim) * 2 - 1
    lean = imagined_return_cost(model, belief, RUNTIME_PRESETS["fp32"])(actions)
    ref = imagined_return_cost(model, belief, RUNTIME_PRESETS["reference"])(actions)
    torch.testing.assert_close(lean, ref, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------- counter-based noise
def test_counter_noise_is_a_pure_function_of_seed_and_position() -> None:
    seeds = torch.tensor([5.0, 7.0, 5.0, 123456.0])
    z = counter_normal(seeds, (3, 10, 2))
    assert z.shape == (4, 3, 10, 2) and z.dtype == torch.float32
    torch.testing.assert_close(z[0], z[2], atol=0, rtol=0)  # same seed, same numbers
    assert not torch.allclose(z[0], z[1])
    # a row does not depend on the batch it is computed in
    torch.testing.assert_close(counter_normal(seeds[1:2], (3, 10, 2))[0], z[1], atol=0, rtol=0)
    torch.testing.assert_close(counter_normal(seeds.long(), (3, 10, 2)), z, atol=0, rtol=0)


def test_counter_noise_is_standard_normal() -> None:
    from scipy import stats

    z = counter_normal(torch.arange(400.0), (500,)).flatten().double()
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
    assert stats.kstest(z.numpy(), "norm").pvalue > 1e-3
    # neighbouring seeds and neighbouring positions are uncorrelated
    rows = counter_normal(torch.arange(200.0), (1000,)).double()
    assert torch.corrcoef(torch.stack([rows[:-1].flatten(), rows[1:].flatten()]))[0, 1].abs() < 0.02
    assert torch.corrcoef(torch.stack([rows[:, :-1].flatten(), rows[:, 1:].flatten()]))[0, 1].abs() < 0.02


def test_counter_noise_rejects_bad_seeds() -> None:
    with pytest.raises(ValueError, match="1-D"):
        counter_normal(torch.zeros(2, 2), (3,))


# ---------------------------------------------------------------------------------------- graph cache
def test_graph_cache_captures_once_per_key_and_replays_with_new_inputs() -> None:
    backend = EagerBackend()
    cache = GraphCache(backend, max_entries=2)

    def fn(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a * 2 + b

    x, y = torch.ones(3), torch.arange(3.0)
    out = cache.run("k", fn, x, y)
    torch.testing.assert_close(out, fn(x, y))
    out2 = cache.run("k", fn, x + 1, y)  # new values reach the static buffers
    torch.testing.assert_close(out2, fn(x + 1, y))
    torch.testing.assert_close(out, fn(x, y))  # results are clones, not the static output
    assert backend.captures == 1 and backend.replays == 2
    cache.run("other", fn, torch.ones(5), torch.ones(5))
    cache.run("third", fn, torch.ones(2), torch.ones(2))
    assert len(cache) == 2 and backend.captures == 3  # least recently used ("k") dropped
    cache.run("k", fn, x, y)
    assert backend.captures == 4
    with pytest.raises(ValueError, match="captured for inputs"):
        cache.run("k", fn, torch.ones(4), y)
    cache.clear()
    assert len(cache) == 0


def test_controllers_replay_through_the_graph_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the capture forced on (an eager stand-in for CUDA graphs) the controllers plan exactly as without it."""
    import dcem_agents.planning.latent_mpc as latent_mpc
    import dcem_agents.planning.mpc as mpc

    model = _model(act=1)
    belief, _ = _inputs(model, 3, 1)
    torch.manual_seed(2)
    decoder = LatentActionDecoder(2, 5, 1, -1.0, 1.0, hidden_sizes=(16,))
    latent = LatentDCEMController(model, decoder, LatentCEMSettings(20, 4, 3, 1.0))
    cem = CEMController(model, torch.tensor([-1.0]), torch.tensor([1.0]), horizon=5, n_samples=30, n_elites=5, n_iters=3)
    expected_latent = latent.plan(belief, noise=latent.draw_noise(3, torch.Generator().manual_seed(9))).actions[:, 0]
    reuse = LatentDCEMController(model, decoder, LatentCEMSettings(4, 2, 2, 1.0, reuse_plan=True))
    expected_reuse, previous, kept = [], None, 0
    with torch.no_grad():  # what act() does, eagerly, with the noise the graph path draws
        for s in (9, 10, 11):
            plans = reuse.executed_plans(belief, noise=reuse.draw_noise(3, torch.Generator().manual_seed(s)),
                                         previous=previous)
            kept += 0 if previous is None else int((plans == previous).flatten(1).all(1).sum())
            expected_reuse.append(plans[:, 0])
            previous = torch.cat([plans[:, 1:], plans[:, -1:]], 1)
    assert kept > 0  # some rows keep their previous plan, which the graph path must then be given
    cem.reset(3)
    first = cem.act(belief, torch.Generator().manual_seed(9))
    second_eager = cem.act(belief, torch.Generator().manual_seed(10))
    for module in (mpc, latent_mpc):
        monkeypatch.setattr(module, "use_cuda_graphs", lambda runtime, device: True)
    latent.graphs = GraphCache(EagerBackend())
    cem.graphs = GraphCache(EagerBackend())
    with torch.no_grad():
        torch.testing.assert_close(latent.act(belief, torch.Generator().manual_seed(9)), expected_latent)
        latent.act(belief[:2], torch.Generator().manual_seed(9))
        assert len(latent.graphs) == 2  # one capture per number of environments
        reuse.graphs = GraphCache(EagerBackend())
        reuse.reset(3)
        for s, expected in zip((9, 10, 11), expected_reuse):  # a previous plan from the second call on
            torch.testing.assert_close(reuse.act(belief, torch.Generator().manual_seed(s)), expected)
        assert len(reuse.graphs) == 2  # captured without and with a previous plan
        cem.reset(3)
        a1 = cem.act(belief, torch.Generator().manual_seed(9))
        plan1 = cem._plan.clone()
        a2 = cem.act(belief, torch.Generator().manual_seed(10))
        assert len(cem.graphs) == 1
        # the graph path draws all iterations' noise in one call: replay it eagerly with that noise
        noise1 = torch.randn(3, 3, 30, 5, generator=torch.Generator().manual_seed(9))
        ref1 = cem.plan(belief, torch.zeros(3, 5, 1), noise=noise1)
        noise2 = torch.randn(3, 3, 30, 5, generator=torch.Generator().manual_seed(10))
        warm = torch.cat([ref1[:, 1:], torch.zeros(3, 1, 1)], 1)  # the warm start carried into the replay
        ref2 = cem.plan(belief, warm, noise=noise2)
    torch.testing.assert_close(a1, ref1[:, 0])
    torch.testing.assert_close(plan1, ref1)
    torch.testing.assert_close(a2, ref2[:, 0])
    assert first.shape == a1.shape and second_eager.shape == a2.shape


def test_planner_benchmark_counts_fewer_operators_on_the_lean_path(tmp_path: Path) -> None:
    """``bench_planner.py --operators-only``: deterministic operator counts per call; the lean rollout (which a GPU
    runs as fewer kernels) dispatches fewer than the reference for both planners."""
    out = tmp_path / "ops.json"
    root = Path(__file__).resolve().parents[1]
    p = subprocess.run([sys.executable, "bench_planner.py", "--operators-only", "--size", "16", "--batches", "1",
                        "--out", str(out)], cwd=root / "benchmarks", capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    (row,) = json.loads(out.read_text())["rows"]
    for planner in ("cem_full_1000", "dcem_latent_100"):
        assert 0 < row[planner]["lean"] < row[planner]["reference"], row
