"""PPO-sample benchmark (not a test): seconds per PPO agent step through the embedded DCEM policy, reference against
fast, timed in the same run.

    python benchmarks/bench_ppo.py [--config configs/ppo/cartpole_swingup.yaml] [--runtimes reference bf16]
                                   [--grad-iters K ...] [--update-iters K ...] [--threads 1] [--repeats 3]
                                   [--device cpu] [--out results/ppo_sample_benchmark.json]

``--grad-iters K ...`` also times each runtime with the policy's truncated differentiation (``policy.grad_iters``:
the update backpropagates through the last K DCEM iterations only; the actions are the same). ``--update-iters K ...``
times ``policy.update_iters``: the update re-plans only the last K iterations, from the distribution kept at
collection (the minibatch is collected first, so every row has one).

One PPO agent step costs its share of a collection call (the policy's forward pass, no gradient, for ``n_envs``
environments at once) and ``n_epochs`` shares of an update (``evaluate_actions`` on a minibatch of ``batch_size``,
PPO's clipped loss, backward through DCEM into the trained components, an optimizer step), with the sizes of the
preset's ``ppo`` section:

    s / agent step = t(collect n_envs) / n_envs + n_epochs · t(update batch_size) / batch_size

``reference`` is the policy as it was before the lean rollout: ``RSSM.imagine`` in eager fp32 and the planner noise
regenerated with one ``torch.Generator`` per row (reproduced here); the other runtimes use the package's policy as it
is (lean rollout, counter-based noise). The beliefs are random: the cost does not depend on them.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch

from _timing import time_ms

from dcem_agents.config import build, load_yaml
from dcem_agents.experiments import ppo
from dcem_agents.planning.runtime import RUNTIME_PRESETS
from dcem_agents.sb3 import EmbeddedDCEMPolicy, SEED_RANGE, load_components


def reference_noise(policy: EmbeddedDCEMPolicy, seeds: torch.Tensor) -> torch.Tensor:
    """The planner noise as the policy drew it before the counter-based noise: one generator per row."""
    t, _, n, d = policy.controller.noise_shape(1)
    rows = [torch.randn(t, n, d, generator=torch.Generator(device=seeds.device).manual_seed(int(s)),
                        device=seeds.device, dtype=policy.log_std.dtype)
            for s in seeds.round().long().tolist()]
    return torch.stack(rows, 1)


def make_policy(cfg: ppo.Config, runtime: str, **options: int) -> EmbeddedDCEMPolicy:
    """The preset's policy with ``runtime`` and policy ``options`` (``grad_iters``, ``update_iters``); ``reference``
    also gets the per-row-generator noise."""
    comps = load_components(cfg.phase2_checkpoint)
    import gymnasium as gym

    obs_space = gym.spaces.Box(-np.inf, np.inf, (comps.model.belief_dim + 1,), np.float32)
    act_space = gym.spaces.Box(comps.decoder.lower.numpy(), comps.decoder.upper.numpy(), dtype=np.float32)
    kwargs = ppo._policy_kwargs(cfg)
    kwargs["precision"] = None if runtime == "reference" else RUNTIME_PRESETS[runtime].precision
    kwargs["compile"] = RUNTIME_PRESETS[runtime].compile
    kwargs.update(options)
    policy = EmbeddedDCEMPolicy(obs_space, act_space, lambda _: cfg.ppo.learning_rate, **kwargs)
    policy.runtime = RUNTIME_PRESETS[runtime]
    if runtime == "reference":
        policy.planner_noise = lambda seeds: reference_noise(policy, seeds)  # type: ignore[method-assign]
    return policy


def observations(policy: EmbeddedDCEMPolicy, n: int, gen: torch.Generator) -> torch.Tensor:
    """Random beliefs with planner-noise seeds: ``(n, belief_dim + 1)``."""
    model = policy.world_model
    belief = model.initial(torch.randn(n, model.obs_dim, generator=gen))
    belief[:, : model.hidden_size] = torch.randn(n, model.hidden_size, generator=gen).tanh()
    seeds = torch.randint(0, SEED_RANGE, (n, 1), generator=gen).float()
    return torch.cat([belief, seeds], 1)


def time_policy(policy: EmbeddedDCEMPolicy, cfg: ppo.Config, repeats: int,
                device: torch.device = torch.device("cpu")) -> dict[str, float]:
    """Collection and update times and the seconds per PPO agent step (see the module docstring), on ``device``."""
    gen = torch.Generator().manual_seed(0)
    collect_obs = observations(policy, cfg.n_envs, gen).to(device)  # drawn on the CPU, same beliefs on any device
    batch_obs = observations(policy, cfg.ppo.batch_size, gen).to(device)
    policy = policy.to(device)
    with torch.no_grad():
        actions, _, old_log_prob = policy(batch_obs)
    advantages = torch.randn(cfg.ppo.batch_size, generator=gen).to(device)
    returns = torch.randn(cfg.ppo.batch_size, generator=gen).to(device)

    def collect() -> None:
        with torch.no_grad():
            policy(collect_obs)

    def update() -> None:  # SB3 PPO.train's loss for one minibatch
        values, log_prob, entropy = policy.evaluate_actions(batch_obs, actions)
        ratio = torch.exp(log_prob - old_log_prob)
        clip = cfg.ppo.clip_range
        policy_loss = -torch.min(advantages * ratio, advantages * ratio.clamp(1 - clip, 1 + clip)).mean()
        loss = policy_loss + 0.5 * (returns - values.flatten()).pow(2).mean() - 0.0 * entropy.mean()
        policy.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.ppo.max_grad_norm)
        policy.optimizer.step()

    t_collect = time_ms(collect, device, repeats, warmup=1)["median_ms"] / 1e3
    t_update = time_ms(update, device, repeats, warmup=1)["median_ms"] / 1e3
    per_step = t_collect / cfg.n_envs + cfg.ppo.n_epochs * t_update / cfg.ppo.batch_size
    return {"collect_s": t_collect, "update_s": t_update, "s_per_agent_step": per_step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path("configs/ppo/cartpole_swingup.yaml"))
    parser.add_argument("--runtimes", nargs="+", default=["reference", "bf16"], choices=sorted(RUNTIME_PRESETS))
    parser.add_argument("--grad-iters", type=int, nargs="*", default=[],
                        help="also time each runtime backpropagating through the last K DCEM iterations only")
    parser.add_argument("--update-iters", type=int, nargs="*", default=[],
                        help="also time each runtime re-planning the last K DCEM iterations only at update time")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = build(ppo.Config, load_yaml(args.config))
    result = {"torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
              "cpu_threads": torch.get_num_threads(), "config": str(args.config), "device": str(device),
              "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
              "sizes": {"n_envs": cfg.n_envs, "batch_size": cfg.ppo.batch_size, "n_epochs": cfg.ppo.n_epochs},
              "runtimes": {}}
    print(f"{'runtime':26s} {'collect s':>10s} {'update s':>9s} {'s/agent step':>13s} {'speed-up':>8s}")
    first = None
    for rt in args.runtimes:
        variants = [{}] + [{"grad_iters": k} for k in args.grad_iters] + [{"update_iters": k} for k in args.update_iters]
        for options in variants:
            name = " ".join([rt, *(f"{k}={v}" for k, v in options.items())])
            torch.manual_seed(0)
            r = time_policy(make_policy(cfg, rt, **options), cfg, args.repeats, device)
            result["runtimes"][name] = r
            first = first or r  # the speed-up is against the first row (reference when it is timed)
            r["speedup_vs_first"] = first["s_per_agent_step"] / r["s_per_agent_step"]
            print(f"{name:26s} {r['collect_s']:10.3f} {r['update_s']:9.2f} {r['s_per_agent_step']:13.4f} "
                  f"{r['speedup_vs_first']:7.2f}x", flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
