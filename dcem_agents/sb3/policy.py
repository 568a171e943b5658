"""``EmbeddedDCEMPolicy``: the embedded DCEM controller as a Stable-Baselines3 actor-critic policy (phase 3).

The controller induces a differentiable policy class (sect. 5.2.2): from the belief ``b`` in the observation
(:class:`~dcem_agents.sb3.belief_env.BeliefVecEnv`), DCEM plans ``ẑ = argmin_z -Σ_t r̂_t(b, f_dec(z))`` and the policy is
the diagonal Gaussian

    π_θ(u | b) = N(u; f_dec(ẑ(b))_1, diag(σ²)),      σ = exp(log_std), state independent (learned or fixed),

with a separate value network: ``V(b)``, an MLP on the belief, or with ``value_input="belief+plan"``
``V(b, R̂/H)``, which also sees the return the model predicts for the plan (per step, not differentiated). PPO's
loss reaches the model-based components through DCEM and the model rollout; which ones it trains is the
``train_components`` argument (default: the decoder and the reward head, as the paper); the others are frozen — no
gradient and not in the optimizer. ``update_iters`` makes the update re-plan only the last DCEM iterations, from the
distribution kept at collection time (cheaper updates; see the constructor).

Reproducible planner noise: the observation carries one integer seed per step, from which the planner's standard
normal noise ``(n_iters, n_samples, d)`` is regenerated as a pure function of (seed, position)
(:func:`~dcem_agents.math.counter_noise.counter_normal`: one batched computation for a whole minibatch, no host
synchronization, the same numbers on CPU and CUDA). The same (belief, seed) gives the same mean action at
collection and at update time, so PPO's ratio is 1 at the start of each update.

On CUDA, a gradient-free plan (SB3's collection, ``predict``) replays a CUDA graph captured once per batch size
(:class:`~dcem_agents.planning.cuda_graph.GraphCache`): the noise is regenerated outside the graph, optimizer steps
and ``load_state_dict`` update the weights in place and reach the replay, and moving the policy (``.to``) drops the
captures. Plans that record gradients (PPO's update) run eagerly.

Construction from a phase-2 checkpoint, with plain values only (SB3 pickles ``policy_kwargs`` into its zip)::

    model = PPO(EmbeddedDCEMPolicy, make_belief_vec_env(ckpt, n_envs=4),
                policy_kwargs=EmbeddedDCEMPolicy.policy_kwargs(ckpt, log_std_init=math.log(0.1)))

``policy_kwargs`` records the architecture next to the path, so ``PPO.load`` rebuilds the policy without the
checkpoint file (from any folder) and then loads the saved weights. Zips made with ``dict(checkpoint=ckpt)`` alone
still load, through the file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.distributions import DiagGaussianDistribution, Distribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import FlattenExtractor
from stable_baselines3.common.type_aliases import Schedule
from torch import Tensor, nn

from dcem_agents.math import CEMIterate
from dcem_agents.math.counter_noise import counter_normal
from dcem_agents.planning.cuda_graph import GraphCache
from dcem_agents.planning.latent_mpc import LatentDCEMController
from dcem_agents.planning.mpc import imagined_return_cost, use_cuda_graphs
from dcem_agents.planning.runtime import PlannerRuntime
from dcem_agents.sb3.belief_env import SEED_RANGE
from dcem_agents.training.components import architecture, load_components, resolve_components

__all__ = ["COMPONENTS", "VALUE_INPUTS", "EmbeddedDCEMPolicy"]

#: what the value network can see
VALUE_INPUTS = ("belief", "belief+plan")

#: trainable component name -> attribute path on the policy
COMPONENTS = {
    "decoder": ("decoder",),
    "reward": ("world_model", "reward_head"),
    "transition": ("world_model", "embed", "cell"),
    "observation": ("world_model", "obs_head"),
}


#: a seed below this shared by every row of a batch means clipped observations (see ``split_observation``)
_SMALL_SEED = 1024


class EmbeddedDCEMPolicy(ActorCriticPolicy):
    """Actor-critic policy whose actor is the embedded DCEM controller of a phase-2 checkpoint.

    :param observation_space: ``Box((belief_dim + 1,))`` of :class:`~dcem_agents.sb3.belief_env.BeliefVecEnv`.
    :param action_space: the environment's ``Box`` action space.
    :param lr_schedule: SB3 learning-rate schedule.
    :param checkpoint: path of the phase-2 (``dcem``) checkpoint providing model, decoder, planner settings and the
        starting weights.
    :param architecture: the same as plain values (:meth:`policy_kwargs` adds them): with them a saved zip loads
        without the checkpoint file, from any folder, its weights coming from the zip.
    :param train_components: which of ``decoder``, ``reward``, ``transition``, ``observation`` PPO trains.
    :param learn_log_std: learn the state-independent log std (False keeps ``log_std_init``, e.g. log 0.1).
    :param log_std_init: initial log std of the Gaussian.
    :param value_arch: hidden layer widths of the value network on the belief.
    :param update_iters: at update time (:meth:`evaluate_actions`), re-plan only the last ``update_iters`` DCEM
        iterations, resumed from the sampling distribution that the collection-time plan of the same observation had
        reached (kept by :meth:`forward` until the next rollout starts). At the start of each update the actions are
        the collected ones (PPO's ratio is 1) and the gradient is that of ``grad_iters=update_iters``; later epochs
        re-plan those iterations with the updated parameters from the collection-time start, the earlier iterations
        passed straight through. The update's planning costs ``update_iters / n_iters`` of a full one. Rows this
        policy did not collect are planned in full. None: every update plans in full.
    :param value_input: what the value network sees: ``"belief"``, or ``"belief+plan"``, the belief and the plan's
        predicted return per step ``R̂/H = -cost(f_dec(ẑ)) / H`` (a constant to the value loss: no gradient reaches
        the model through it).
    :param n_samples: override the planner's samples per iteration (None: the checkpoint's).
    :param n_iters: override the planner's iterations (None: the checkpoint's).
    :param n_elites: override the planner's elites per iteration, the ``k`` of the soft top-k (None: the
        checkpoint's; needed to go below the checkpoint's ``n_elites`` samples).
    :param precision: the planner's rollout precision, ``fp32`` (None, the default) or ``bf16``. PPO's ratio is 1 at
        the start of an update only if a row's action does not depend on the batch it is computed in; fp32 keeps that
        to rounding (1e-7), bf16 does not (its kernels depend on the batch size: 4e-4 measured between a 4-row and a
        128-row call on the shipped cartpole policy).
    :param compile: ``torch.compile`` the planner's rollout.
    :param grad_iters: backpropagate PPO's loss through the last ``grad_iters`` DCEM iterations only (None: all). The
        action is the same (PPO's ratio stays 1 at the start of an update); the update's backward pass is cheaper.
    :param kwargs: other :class:`~stable_baselines3.common.policies.ActorCriticPolicy` arguments. ``net_arch`` is
        refused (the actor is the planner; the value network's widths are ``value_arch``), and so is ``use_sde=True``
        (the exploration noise is the state-independent Gaussian above).
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        checkpoint: str | None = None,
        architecture: dict[str, Any] | None = None,
        train_components: Sequence[str] = ("decoder", "reward"),
        learn_log_std: bool = True,
        log_std_init: float = math.log(0.1),
        value_arch: Sequence[int] = (64, 64),
        n_samples: int | None = None,
        n_iters: int | None = None,
        n_elites: int | None = None,
        precision: str | None = None,
        compile: bool = False,
        grad_iters: int | None = None,
        value_input: str = "belief",
        update_iters: int | None = None,
        **kwargs: Any,
    ) -> None:
        if value_input not in VALUE_INPUTS:
            raise ValueError(f"value_input must be one of {', '.join(VALUE_INPUTS)}, got {value_input!r}")
        # the planner sizes given (None: the checkpoint's), as LatentCEMSettings fields
        overrides = {"n_samples": n_samples, "n_iters": n_iters, "n_elites": n_elites}
        for name, value in overrides.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be an integer >= 1 (or None: the checkpoint's), got {value!r}")
        if update_iters is not None and update_iters < 1:
            raise ValueError(f"update_iters must be >= 1 (or None: plan in full at update time), got {update_iters}")
        if checkpoint is None and architecture is None:
            raise ValueError("EmbeddedDCEMPolicy needs policy_kwargs=EmbeddedDCEMPolicy.policy_kwargs(PATH) (or "
                             "dict(checkpoint=PATH)) of a phase-2 (dcem) checkpoint")
        if not isinstance(action_space, spaces.Box):
            raise ValueError(f"EmbeddedDCEMPolicy supports Box action spaces only, got {action_space}")
        if isinstance(train_components, str):
            raise ValueError(f"train_components must be a list of component names, e.g. [{train_components!r}], got "
                             f"the string {train_components!r}")
        unknown = sorted(set(train_components) - set(COMPONENTS))
        if unknown:
            raise ValueError(f"unknown train_components {unknown}; choose from {sorted(COMPONENTS)}")
        # Plain attributes first: ActorCriticPolicy.__init__ calls self._build() at its end.
        self.checkpoint = None if checkpoint is None else str(checkpoint)
        self.architecture = architecture
        self.train_components = tuple(train_components)
        self.learn_log_std = bool(learn_log_std)
        self.value_arch = tuple(int(v) for v in value_arch)
        self.value_input = value_input
        self.update_iters = update_iters
        self._starts: dict[bytes, tuple[Tensor, Tensor]] = {}  # observation -> collection-time (mean, std)
        self._graphs = GraphCache()  # captured gradient-free plans on CUDA, one per batch size
        self.planner_overrides, self.grad_iters = overrides, grad_iters
        self.precision, self.compile_planner = precision, bool(compile)  # nn.Module.compile is a method
        self.runtime = PlannerRuntime(precision=precision or "fp32", compile=self.compile_planner)
        if kwargs.pop("net_arch", None) is not None:
            raise ValueError("EmbeddedDCEMPolicy takes no net_arch: the actor is the DCEM planner; set the value "
                             "network's hidden widths with value_arch=[...] in policy_kwargs")
        extractor = kwargs.pop("features_extractor_class", None)
        if (extractor not in (None, FlattenExtractor)) or kwargs.pop("features_extractor_kwargs", None):
            raise ValueError("EmbeddedDCEMPolicy takes no features extractor (features_extractor_class/_kwargs): the "
                             "planner and the value network read the belief of BeliefVecEnv directly; set the value "
                             "network's widths with value_arch=[...]")
        if kwargs.pop("use_sde", False):
            raise ValueError("EmbeddedDCEMPolicy does not support gSDE (use_sde=True): its exploration noise is a "
                             "state-independent Gaussian around the planned action; build the algorithm without use_sde")
        super().__init__(observation_space, action_space, lr_schedule, net_arch=dict(pi=[], vf=list(self.value_arch)),
                         log_std_init=log_std_init, **kwargs)

    @staticmethod
    def policy_kwargs(checkpoint: str | Path, **kwargs: Any) -> dict[str, Any]:
        """``policy_kwargs`` for SB3 from a phase-2 checkpoint: its path and its architecture as plain values.

        A model built with these saves a zip that ``PPO.load`` (or ``A2C.load``) rebuilds without the checkpoint
        file, from any working directory. ``kwargs`` are the policy's other arguments (``log_std_init``, ...).
        """
        return dict(checkpoint=str(checkpoint), architecture=architecture(load_components(checkpoint)), **kwargs)

    @classmethod
    def for_evaluation(cls, policy_kwargs: dict[str, Any], state: dict[str, Tensor] | None = None,
                       device: torch.device | str = "cpu") -> EmbeddedDCEMPolicy:
        """A policy outside SB3's training loop (no learning-rate schedule), in eval mode on ``device``.

        Its observation space ``[belief, seed]`` and action box come from its components (the phase-2 checkpoint of
        ``policy_kwargs``, or their recorded architecture); ``state`` is a saved ``state_dict`` (None: the phase-2
        weights it starts from).
        """
        # without a saved state the phase-2 weights are the policy: its checkpoint must be there, and be the one
        comps = resolve_components(policy_kwargs.get("checkpoint"), policy_kwargs.get("architecture"),
                                   require_weights=state is None)
        obs_space = spaces.Box(-np.inf, np.inf, (comps.model.belief_dim + 1,), np.float32)
        act_space = spaces.Box(comps.decoder.lower.numpy().astype(np.float32),
                               comps.decoder.upper.numpy().astype(np.float32), dtype=np.float32)
        policy = cls(obs_space, act_space, lambda _: 0.0, **policy_kwargs)
        if state is not None:
            policy.load_state_dict(state)
        return policy.to(device).eval()

    # ---------------------------------------------------------------- construction
    def _build(self, lr_schedule: Schedule) -> None:
        """Load the model-based components, build the value network and log std, freeze, and make the optimizer."""
        comps = resolve_components(self.checkpoint, self.architecture)  # SB3's load then sets the zip's weights
        if self.observation_space.shape != (comps.model.belief_dim + 1,):
            raise ValueError(
                f"observation shape {self.observation_space.shape} is not (belief_dim + 1,) = ({comps.model.belief_dim + 1},): "
                "wrap the environment with dcem_agents.sb3.BeliefVecEnv (or use make_belief_vec_env), and put no "
                "wrapper that changes observations after it (frame stacking, VecTransposeImage, ...)"
            )
        dtype = getattr(self.observation_space, "dtype", None)
        if dtype is not None and dtype not in (np.float32, np.float64):
            raise ValueError(
                f"observations of dtype {dtype}: the belief observation must stay float32 (a float16 cast cannot hold the "
                f"planner-noise seeds, integers up to {SEED_RANGE})")
        if self.action_space.shape != (comps.decoder.action_dim,):
            raise ValueError(f"action shape {self.action_space.shape} does not match the decoder's ({comps.decoder.action_dim},)")
        low, high = comps.decoder.lower.numpy(), comps.decoder.upper.numpy()
        if not (np.allclose(self.action_space.low, low, atol=1e-5) and np.allclose(self.action_space.high, high, atol=1e-5)):
            raise ValueError(
                f"action bounds [{self.action_space.low.tolist()}, {self.action_space.high.tolist()}] differ from those "
                f"the decoder was trained in ([{low.tolist()}, {high.tolist()}], task {comps.env_id}): the planner's "
                "actions would be rescaled wrongly; use the checkpoint's task (make_belief_vec_env) without rescaling "
                "the action space")
        self.world_model = comps.model
        self.decoder = comps.decoder
        self.env_id, self.action_repeat = comps.env_id, comps.action_repeat  # the task the components were trained on
        settings = comps.settings
        given = {k: v for k, v in self.planner_overrides.items() if v is not None}
        if given or self.grad_iters:
            settings = replace(settings, grad_iters=self.grad_iters, **given)
        self.planner_settings = settings
        if self.update_iters is not None and self.update_iters > settings.n_iters:
            raise ValueError(f"update_iters={self.update_iters} exceeds the planner's {settings.n_iters} iterations")
        # SB3's value branch: an MLP on the belief (the seed column is not a feature), and the plan's return
        self.features_dim = comps.model.belief_dim + (self.value_input == "belief+plan")
        self._build_mlp_extractor()
        self.value_net = nn.Linear(self.mlp_extractor.latent_dim_vf, 1)
        assert isinstance(self.action_dist, DiagGaussianDistribution)
        action_dim = int(np.prod(self.action_space.shape))
        self.log_std = nn.Parameter(torch.full((action_dim,), float(self.log_std_init)), requires_grad=self.learn_log_std)
        if self.ortho_init:  # only the new networks: the pretrained components keep their weights
            self.mlp_extractor.apply(partial(self.init_weights, gain=np.sqrt(2)))
            self.value_net.apply(partial(self.init_weights, gain=1.0))
        trained = {id(p) for name in self.train_components for p in self._component_parameters(name)}
        for p in list(self.world_model.parameters()) + list(self.decoder.parameters()):
            p.requires_grad_(id(p) in trained)
        params = [p for p in self.parameters() if p.requires_grad]
        self.optimizer = self.optimizer_class(params, lr=lr_schedule(1), **self.optimizer_kwargs)  # type: ignore[call-arg]

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> EmbeddedDCEMPolicy:
        """``.to``, ``.cuda``, ``.double``, ...: the captured graphs read the old tensors, so they are dropped."""
        graphs = getattr(self, "_graphs", None)
        if graphs is not None:
            graphs.clear()
        return super()._apply(fn, *args, **kwargs)

    def _component_parameters(self, name: str) -> list[nn.Parameter]:
        """Parameters of one trainable component (see :data:`COMPONENTS`)."""
        path = COMPONENTS[name]
        if path[0] == "decoder":
            return list(self.decoder.parameters())
        return [p for attr in path[1:] for p in getattr(self.world_model, attr).parameters()]

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.pop("net_arch", None)
        data.update(checkpoint=self.checkpoint, architecture=self.architecture, train_components=list(self.train_components),
                    learn_log_std=self.learn_log_std, value_arch=list(self.value_arch),
                    **self.planner_overrides, grad_iters=self.grad_iters,
                    precision=self.precision, compile=self.compile_planner, value_input=self.value_input,
                    update_iters=self.update_iters)
        return data

    @property
    def controller(self) -> LatentDCEMController:
        """The latent DCEM controller over the policy's own world model and decoder."""
        return LatentDCEMController(self.world_model, self.decoder, self.planner_settings, self.runtime)

    # ---------------------------------------------------------------- the actor
    def split_observation(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """``(belief (B, D), seeds (B,))`` of a batch of observations (B, D + 1), the seeds checked.

        :raises ValueError: a seed that is not an integer in ``[0, SEED_RANGE)``: something changed the observations
            between :class:`~dcem_agents.sb3.BeliefVecEnv` and the policy (the message names the usual causes).
        """
        if obs.shape[-1] != self.world_model.belief_dim + 1:
            raise ValueError(
                f"EmbeddedDCEMPolicy: observations of width {obs.shape[-1]}, expected belief_dim + 1 = "
                f"{self.world_model.belief_dim + 1}: feed the observations of BeliefVecEnv unchanged (no frame stacking)")
        seeds = obs[:, -1]
        bad = (seeds != seeds.round()) | (seeds < 0) | (seeds >= SEED_RANGE) | ~torch.isfinite(seeds)
        # every row the same small seed: clipped observations (a VecNormalize whose statistics never moved clips them
        # to clip_obs). Seeds are uniform in [0, 2**24): by chance this has probability below 1e-11 for 2 rows.
        clipped = (seeds.numel() > 1) & (seeds == seeds[:1]).all() & (seeds[0] < _SMALL_SEED)
        if bool(bad.any() | clipped):  # one host check per forward, at the entry point, not inside the planner
            if not bool(bad.any()):
                raise ValueError(
                    f"EmbeddedDCEMPolicy: every row's planner-noise seed is {float(seeds[0])!r}: the observations "
                    "were clipped after BeliefVecEnv, as VecNormalize(norm_obs=True) does even with training=False; "
                    "use norm_obs=False (normalizing rewards is fine)")
            example = float(seeds[bad][0])
            raise ValueError(
                f"EmbeddedDCEMPolicy: the planner-noise seed column holds {example!r}, not an integer in [0, "
                f"{SEED_RANGE}): the observations were changed after BeliefVecEnv. Usual causes: VecNormalize with "
                "norm_obs=True (use norm_obs=False; normalizing rewards is fine), frame stacking, or a cast to a "
                "lower-precision dtype")
        return obs[:, :-1], seeds

    def planner_noise(self, seeds: Tensor) -> Tensor:
        """Standard normal planner noise ``(n_iters, B, n_samples, d)``, row ``i`` regenerated from ``seeds[i]``."""
        t, _, n, d = self.controller.noise_shape(1)
        return counter_normal(seeds, (t, n, d), self.log_std.dtype).transpose(0, 1)

    def set_training_mode(self, mode: bool) -> None:
        """SB3 switches to evaluation mode before each rollout: the update-time starts of the last one are dropped."""
        if not mode and self.training:
            self._starts.clear()
        super().set_training_mode(mode)

    def plan(self, obs: Tensor, *, record: bool = False, reuse: bool = False) -> tuple[Tensor, Tensor | None]:
        """The DCEM plan from each belief: its first action ``f_dec(ẑ(b))_1`` (B, A), differentiable, and (with
        ``value_input="belief+plan"``, else None) its predicted return per step ``R̂/H`` (B, 1), without gradient.

        :param record: keep each row's sampling distribution after ``n_iters - update_iters`` iterations (collection).
        :param reuse: resume every row from its kept distribution, re-planning the last ``update_iters`` iterations,
            when all rows have one (update time); see ``update_iters``.
        """
        belief, seeds = self.split_observation(obs)
        noise = self.planner_noise(seeds)
        k, n_iters = self.update_iters, self.planner_settings.n_iters
        keys = None
        if k is not None and k < n_iters and (record or reuse):
            keys = [row.tobytes() for row in obs.detach().cpu().numpy()]
        if reuse and keys is not None and all(key in self._starts for key in keys):
            mean = torch.stack([self._starts[key][0] for key in keys]).to(noise)
            std = torch.stack([self._starts[key][1] for key in keys]).to(noise)
            actions = self.controller.plan(belief, noise=noise[n_iters - k:], start=(mean, std)).actions
        else:
            def keep(it: CEMIterate, at: int = n_iters - (k or 0) - 1) -> None:
                if it.iteration == at:
                    for key, m, s in zip(keys, it.mean.detach(), it.std.detach()):
                        self._starts[key] = (m.clone(), s.clone())

            callback = keep if record and keys is not None else None
            if callback is None and use_cuda_graphs(self.runtime, belief.device):
                key = (belief.shape[0], belief.dtype, self.planner_settings, self.runtime)
                actions = self._graphs.run(key, lambda b, e: self.controller.plan(b, noise=e).actions, belief, noise)
            else:
                actions = self.controller.plan(belief, noise=noise, callback=callback).actions
        if self.value_input == "belief":
            return actions[:, 0], None
        with torch.no_grad():
            cost = imagined_return_cost(self.world_model, belief, self.runtime)(actions.detach().unsqueeze(1))
        return actions[:, 0], -cost / actions.shape[1]

    def mean_action(self, obs: Tensor) -> Tensor:
        """``f_dec(ẑ(b))_1`` (B, A): the first action of the DCEM plan from each belief, differentiable."""
        return self.plan(obs)[0]

    def _values(self, obs: Tensor, planned: Tensor | None = None) -> Tensor:
        """``V`` (B, 1) of the belief, and of the plan's return ``planned`` (B, 1) with ``value_input="belief+plan"``
        (None: planned here)."""
        belief, _ = self.split_observation(obs)
        if self.value_input == "belief+plan":
            belief = torch.cat([belief, self.plan(obs)[1] if planned is None else planned], dim=-1)
        return self.value_net(self.mlp_extractor.forward_critic(belief))

    # ---------------------------------------------------------------- SB3's policy contract
    def forward(self, obs: Tensor, deterministic: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """Actions, values and log-probabilities for a batch of observations (collection time)."""
        obs = self.obs_to_float(obs)
        mean, planned = self.plan(obs, record=True)
        dist = self.action_dist.proba_distribution(mean, self.log_std)
        actions = dist.get_actions(deterministic=deterministic)
        return actions.reshape((-1, *self.action_space.shape)), self._values(obs, planned), dist.log_prob(actions)

    def evaluate_actions(self, obs: Tensor, actions: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Values, log-probabilities of ``actions`` and entropy (update time; gradients reach the trained components)."""
        obs = self.obs_to_float(obs)
        mean, planned = self.plan(obs, reuse=True)
        dist = self.action_dist.proba_distribution(mean, self.log_std)
        return self._values(obs, planned), dist.log_prob(actions), dist.entropy()

    def get_distribution(self, obs: Tensor) -> Distribution:
        """The Gaussian around the planned first action."""
        return self.action_dist.proba_distribution(self.mean_action(self.obs_to_float(obs)), self.log_std)

    def predict_values(self, obs: Tensor) -> Tensor:
        """``V(b)`` (B, 1)."""
        return self._values(self.obs_to_float(obs))

    def _predict(self, observation: Tensor, deterministic: bool = False) -> Tensor:
        return self.get_distribution(observation).get_actions(deterministic=deterministic)

    def obs_to_float(self, obs: Tensor) -> Tensor:
        """Observations as a 2-D float tensor of the policy's dtype."""
        return obs.reshape(obs.shape[0], -1).to(self.log_std.dtype)
