"""The proprioceptive recurrent world model of sect. 5.2.2 (fig. 8), trained by maximum likelihood as in PlaNet.

Deterministic recurrent state and stochastic proprioceptive observations (all observations normalized, ``x̃``)::

    h_{t+1} = f_trans(h_t, x̃_t, u_t)          GRU cell (``hidden_size``, 200) on an ELU embedding of [x̃_t, u_t]
    x̃_t     ~ N(μ(h_t), σ(h_t))              f_odec, MLP 2 × ``layer_size``
    r_t     = f_rew(h_{t+1}, x̃_{t+1})        f_rew, MLP 2 × ``layer_size``, reward of the transition (x_t, u_t)
    c_t     = σ(f_cont(h_{t+1}, x̃_{t+1}))    optional continuation head: P(the episode goes on after (x_t, u_t))
    V(b_t)  = f_val(h_t, x̃_t)                optional value head: the discounted return to go from belief b_t

The **belief** after observing ``x_t`` is the flat tensor ``[h_t, x̃_t]`` (B, ``belief_dim``): filtering feeds real
observations (:meth:`initial`, :meth:`observe_step`, :meth:`observe`); imagination (:meth:`imagine`) feeds back the
predicted mean ``μ(h)`` (or a sample), which is what a planner scores action sequences with.

:meth:`loss` returns named, unweighted terms on chunks (B, L) from the replay:

- ``obs_nll``: one-step Gaussian NLL of ``x̃_{t+1}`` given the teacher-forced ``h_{t+1}`` (summed over dims);
- ``reward``: one-step squared error of ``r_t``;
- ``overshoot_obs`` / ``overshoot_reward`` (with ``overshooting = K > 0``): open-loop predictions that start from
  every teacher-forced belief ``(h_s, x̃_s)`` and feed back ``μ(h)`` for ``K`` steps with the recorded actions,
  squared errors averaged over ``k = 1..K``. Planning rolls the model out open-loop, so pure teacher forcing leaves the
  compounding error of the fed-back predictions untrained; this term trains exactly what the planner uses
  (a deterministic variant of PlaNet's overshooting);
- ``continuation`` (with the continuation head and targets): binary cross-entropy of ``c_t`` against ``1 -
  terminated_t`` (Dreamer's discount predictor). A time limit is not a termination: truncated episodes keep target 1.
- ``value`` (with the value head): squared error of ``V(b_t)`` against the TD(λ) return of the chunk's real rewards,
  ``G_t = r_t + γ (1 - terminated_t) ((1 - λ) V(b_{t+1}) + λ G_{t+1})``, bootstrapped (no gradient) with ``V`` at the
  chunk's last real belief, both scaled by ``1 - γ`` (per-step reward units, so that its gradient is of the size of
  the reward term's). The beliefs enter it without gradient: the value head learns on the model's features and does
  not shape them. It is the value of the policy that collected the data (the planner, with exploration noise).

Chunks may hold padding (episodes shorter than the chunk): with a ``mask`` (B, L) every term averages over real
transitions only. Imagination weights the reward of step ``t`` by the predicted probability of still running,
``w_t = Π_{k<t} c_k`` (:attr:`Imagination.weights`; all ones without the head), so a planner sees that an episode which
ends earns nothing after it. With the value head, the objective of a plan of ``H`` steps (:meth:`Imagination.objective`)
adds what the rollout's end is worth beyond the horizon, ``γ^H w_H V(b_H)`` (``w_H = Π_{k<H} c_k``), as TD-MPC and
POLO do: a short horizon then still sees that a state leads to a fall or to a good gait.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Imagination", "RSSM"]


class Imagination(NamedTuple):
    """An open-loop rollout of :meth:`RSSM.imagine` for ``B`` action sequences of ``H`` steps.

    :param rewards: predicted rewards ``r_t .. r_{t+H-1}`` (B, H).
    :param obs: predicted observations ``x_{t+1} .. x_{t+H}`` in the environment's units (B, H, O).
    :param weights: probability that the episode still runs when reward ``t`` is received, ``Π_{k<t} c_k`` (B, H);
        ones for a model without the continuation head, None from a model that does not predict terminations.
    :param terminal: the value of the last belief, discounted and weighted by survival, ``γ^H w_H V(b_H)`` (B,); None
        for a model without the value head.
    """

    rewards: Tensor
    obs: Tensor
    weights: Tensor | None = None
    terminal: Tensor | None = None

    def weighted_rewards(self) -> Tensor:
        """``rewards * weights`` (B, H): the predicted rewards a planner sums (the rewards themselves without weights)."""
        return self.rewards if self.weights is None else self.rewards * self.weights

    def objective(self) -> Tensor:
        """What a planner maximizes (B,): ``Σ_t w_t r̂_t`` (eq. 7), plus :attr:`terminal` with the value head."""
        total = self.weighted_rewards().sum(-1)
        return total if self.terminal is None else total + self.terminal


def _mlp(inp: int, width: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, width), nn.ELU(), nn.Linear(width, width), nn.ELU(), nn.Linear(width, out))


class RSSM(nn.Module):
    """Deterministic-state recurrent world model over proprioceptive observations (fig. 8).

    :param obs_dim: observation size ``O``.
    :param action_dim: action size ``A``.
    :param hidden_size: size of the GRU state ``h`` (paper: 200).
    :param layer_size: width of the embedding and of the two hidden layers of ``f_odec`` and ``f_rew`` (paper: 200).
    :param min_std: lower bound of the observation model's std (normalized units).
    :param continuation: add the continuation head ``f_cont`` (for environments whose episodes can terminate).
    :param obs_squash: soft-clip threshold ``c`` of normalized observations (0: off; see :meth:`normalize`). It is
        stored with the weights; a state saved before it existed loads with it off.
    :param value: add the value head ``f_val`` (the planners then add the value of a rollout's last belief); its last
        layer starts at zero, so an untrained head adds nothing.
    :param discount: its discount ``γ`` in ``[0, 1)``, stored with the weights (only with the value head).
    """

    def __init__(self, obs_dim: int, action_dim: int, hidden_size: int = 200, layer_size: int = 200, min_std: float = 0.01,
                 continuation: bool = False, obs_squash: float = 0.0, value: bool = False,
                 discount: float = 0.99) -> None:
        super().__init__()
        if min(obs_dim, action_dim, hidden_size, layer_size) < 1 or min_std <= 0:
            raise ValueError("RSSM: sizes must be >= 1 and min_std > 0")
        if not obs_squash >= 0 or obs_squash == float("inf"):
            raise ValueError(f"RSSM: obs_squash must be a finite number >= 0 (0: off), got {obs_squash}")
        if not 0 <= discount < 1:
            raise ValueError(f"RSSM: discount must be in [0, 1), got {discount}")
        self.obs_dim, self.action_dim, self.hidden_size, self.min_std = obs_dim, action_dim, hidden_size, min_std
        self.embed = nn.Sequential(nn.Linear(obs_dim + action_dim, layer_size), nn.ELU())
        self.cell = nn.GRUCell(layer_size, hidden_size)
        self.obs_head = _mlp(hidden_size, layer_size, 2 * obs_dim)
        self.reward_head = _mlp(hidden_size + obs_dim, layer_size, 1)
        self.cont_head = _mlp(hidden_size + obs_dim, layer_size, 1) if continuation else None
        self.value_head = _mlp(hidden_size + obs_dim, layer_size, 1) if value else None
        if value:  # travels with the weights, like obs_squash; a model without the head has no such entry
            nn.init.zeros_(self.value_head[-1].weight)  # V ≡ 0 until trained: a new head does not steer planning
            nn.init.zeros_(self.value_head[-1].bias)
            self.register_buffer("value_discount", torch.tensor(float(discount)))
            discount = float(self.value_discount)  # as stored: a loaded model then plans with the same number
        self._discount = float(discount)
        self.register_buffer("obs_loc", torch.zeros(obs_dim))
        self.register_buffer("obs_scale", torch.ones(obs_dim))
        self.register_buffer("obs_squash", torch.tensor(float(obs_squash)))  # travels with the weights
        self._squash = float(obs_squash)  # its value on the host: normalizing never synchronizes with a GPU

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001, ANN202
        # a state saved before the soft clip existed: the observations it was trained on were not clipped
        state_dict.setdefault(prefix + "obs_squash", torch.zeros(()))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._squash = float(self.obs_squash)
        if self.value_head is not None:
            self._discount = float(self.value_discount)

    @property
    def discount(self) -> float:
        """The value head's discount ``γ`` (meaningful with the head only)."""
        return self._discount

    @property
    def belief_dim(self) -> int:
        """Size of the flat belief ``[h, x̃]``."""
        return self.hidden_size + self.obs_dim

    # ---------------------------------------------------------------- normalization
    def set_obs_normalization(self, mean: Tensor, std: Tensor, min_scale: float = 1e-2) -> None:
        """Normalize observations as ``x̃ = (x - mean) / std`` (O,); stored with the weights.

        A dimension that barely varied in the data the moments come from (``std < min_scale``) is centred but not
        scaled (scale 1): dividing by its tiny std would blow it up once it varies, e.g. the contact forces of
        Ant or Humanoid, zero during the short random seed episodes and then in the hundreds.
        """
        std = torch.as_tensor(std, dtype=self.obs_scale.dtype)
        self.obs_loc.copy_(torch.as_tensor(mean, dtype=self.obs_loc.dtype))
        self.obs_scale.copy_(torch.where(std < min_scale, torch.ones_like(std), std))

    def normalize(self, obs: Tensor) -> Tensor:
        """``x̃`` from observations in environment units (..., O).

        ``v = (x - mean) / std``, then, with ``obs_squash = c > 0``, a soft clip: ``v`` where ``|v| <= c``, else
        ``sign(v) (c + log(1 + |v| - c))`` (continuous, with slope 1 at ``c``). An input that the seed episodes did not
        show varying, e.g. Humanoid's contact forces (zero at first, hundreds later), then stays within a few units of
        ``c`` instead of reaching hundreds of standard units.
        """
        v = (obs - self.obs_loc) / self.obs_scale
        c = self._squash
        if c <= 0:
            return v
        excess = (v.abs() - c).clamp_min(0.0)
        return torch.where(excess > 0, v.sign() * (c + torch.log1p(excess)), v)

    def denormalize(self, obs_n: Tensor) -> Tensor:
        """Environment units from normalized observations (..., O): the inverse of :meth:`normalize`."""
        c = self._squash
        if c > 0:
            excess = (obs_n.abs() - c).clamp_min(0.0)
            obs_n = torch.where(excess > 0, obs_n.sign() * (c + torch.expm1(excess)), obs_n)
        return obs_n * self.obs_scale + self.obs_loc

    # ---------------------------------------------------------------- the networks
    def transition(self, h: Tensor, obs_n: Tensor, action: Tensor) -> Tensor:
        """``h_{t+1} = f_trans(h_t, x̃_t, u_t)``: (B, hidden), (B, O), (B, A) -> (B, hidden)."""
        return self.cell(self.embed(torch.cat([obs_n, action], -1)), h)

    def obs_distribution(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and std of ``x̃_t ~ f_odec(h_t)`` (..., O), normalized units."""
        mean, raw_std = self.obs_head(h).chunk(2, -1)
        return mean, F.softplus(raw_std) + self.min_std

    def reward(self, h: Tensor, obs_n: Tensor) -> Tensor:
        """``r = f_rew(h, x̃)`` (...,)."""
        return self.reward_head(torch.cat([h, obs_n], -1)).squeeze(-1)

    def continuation_logit(self, h: Tensor, obs_n: Tensor) -> Tensor:
        """Logit of ``c = P(not terminated)`` after the transition into ``(h, x̃)`` (...,); requires the head."""
        if self.cont_head is None:
            raise ValueError("this RSSM has no continuation head (continuation=False)")
        return self.cont_head(torch.cat([h, obs_n], -1)).squeeze(-1)

    def value(self, h: Tensor, obs_n: Tensor) -> Tensor:
        """``V(b) = f_val(h, x̃)`` (...,): the discounted return to go from the belief ``[h, x̃]``; requires the head."""
        if self.value_head is None:
            raise ValueError("this RSSM has no value head (value=False)")
        return self.value_head(torch.cat([h, obs_n], -1)).squeeze(-1)

    def terminal_value(self, h: Tensor, obs_n: Tensor, horizon: int, survival: Tensor | None) -> Tensor:
        """``γ^H w_H V(h, x̃)`` (...,): the value of a rollout's last belief as a plan of ``horizon`` steps counts it
        (``survival``: ``w_H = Π_{k<H} c_k``, None for 1)."""
        v = self.value(h, obs_n) * self._discount ** horizon
        return v if survival is None else v * survival

    @staticmethod
    def survival_weights(cont: Tensor) -> Tensor:
        """``w_t = Π_{k<t} c_k`` (B, H) from continuation probabilities ``c`` (B, H): ``w_0 = 1``."""
        return torch.cat([torch.ones_like(cont[:, :1]), torch.cumprod(cont[:, :-1], 1)], 1)

    # ---------------------------------------------------------------- filtering
    def split(self, belief: Tensor) -> tuple[Tensor, Tensor]:
        """``(h, x̃)`` of a belief (..., belief_dim)."""
        return belief[..., : self.hidden_size], belief[..., self.hidden_size :]

    def initial(self, obs: Tensor) -> Tensor:
        """Belief after the first observation of an episode: ``[0, x̃_0]`` (B, belief_dim) from ``obs`` (B, O)."""
        h = torch.zeros(*obs.shape[:-1], self.hidden_size, device=obs.device, dtype=obs.dtype)
        return torch.cat([h, self.normalize(obs)], -1)

    def observe_step(self, belief: Tensor, action: Tensor, obs: Tensor) -> Tensor:
        """Filtering step: belief at ``t`` (B, D), action ``u_t`` (B, A), real ``x_{t+1}`` (B, O) -> belief at ``t+1``."""
        h, x = self.split(belief)
        return torch.cat([self.transition(h, x, action), self.normalize(obs)], -1)

    def observe(self, obs: Tensor, actions: Tensor) -> Tensor:
        """Beliefs ``b_0..b_T`` (B, T+1, D) of observed sequences ``obs`` (B, T+1, O) and ``actions`` (B, T, A)."""
        belief = self.initial(obs[:, 0])
        beliefs = [belief]
        for t in range(actions.shape[1]):
            belief = self.observe_step(belief, actions[:, t], obs[:, t + 1])
            beliefs.append(belief)
        return torch.stack(beliefs, 1)

    # ---------------------------------------------------------------- imagination
    def imagine(self, belief: Tensor, actions: Tensor, sample: bool = False, generator: torch.Generator | None = None) -> Imagination:
        """Roll the model out open-loop from ``belief`` (B, D) under ``actions`` (B, H, A).

        :param sample: feed back samples of ``f_odec`` instead of its mean.
        :param generator: generator of those samples.
        :return: :class:`Imagination` with rewards (B, H), predicted observations (B, H, O), survival weights and, with
            the value head, the terminal value (B,).
        """
        h, x = self.split(belief)
        rewards, observations, conts = [], [], []
        for t in range(actions.shape[1]):
            h = self.transition(h, x, actions[:, t])
            if sample:
                mean, std = self.obs_distribution(h)
                x = mean + std * torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            else:
                x = self.obs_head(h)[..., : self.obs_dim]  # the mean, without computing the std
            rewards.append(self.reward(h, x))
            observations.append(x)
            if self.cont_head is not None:
                conts.append(torch.sigmoid(self.continuation_logit(h, x)))
        r = torch.stack(rewards, 1)
        cont = torch.stack(conts, 1) if conts else None  # (B, H)
        weights = torch.ones_like(r) if cont is None else self.survival_weights(cont)
        terminal = None
        if self.value_head is not None:
            survival = None if cont is None else cont.prod(1)  # Π_{k<H} c_k
            terminal = self.terminal_value(h, x, actions.shape[1], survival)
        return Imagination(r, self.denormalize(torch.stack(observations, 1)), weights, terminal)

    # ---------------------------------------------------------------- maximum likelihood
    def loss(
        self, obs: Tensor, actions: Tensor, rewards: Tensor, overshooting: int = 0, overshoot_stride: int = 1,
        mask: Tensor | None = None, cont: Tensor | None = None, value_lambda: float = 0.95,
    ) -> dict[str, Tensor]:
        """Named loss terms (see the module docstring) on chunks ``obs`` (B, L+1, O), ``actions`` (B, L, A), ``rewards`` (B, L).

        :param overshooting: open-loop steps ``K`` (0 disables the overshooting terms; clipped to ``L``).
        :param overshoot_stride: open-loop rollouts start at every ``stride``-th step ``s = 0, stride, ... <= L - K``
            (neighbouring starts are strongly correlated; a stride > 1 cuts the cost of the term by about that factor).
        :param mask: 1 for the chunk's real transitions, 0 for padding after an episode's end (B, L); None: all real.
        :param cont: continuation targets ``1 - terminated_t`` (B, L); with the continuation head, adds the
            ``continuation`` term; the value's returns stop at a termination (None: no episode terminates here).
        :param value_lambda: λ of the value head's TD(λ) returns.
        :return: ``obs_nll``, ``reward``, with ``K > 0`` ``overshoot_obs`` and ``overshoot_reward``, with the head
            and ``cont`` ``continuation``, and with the value head ``value`` (scalars).
        """
        x = self.normalize(obs)
        batch, length = actions.shape[:2]

        def mean(values: Tensor, m: Tensor | None) -> Tensor:  # over real transitions only
            return values.mean() if m is None else (values * m).sum() / m.sum().clamp_min(1)

        inputs = self.embed(torch.cat([x[:, :-1], actions], -1))
        h = torch.zeros(batch, self.hidden_size, device=obs.device, dtype=obs.dtype)
        hs = []
        for t in range(length):
            h = self.cell(inputs[:, t], h)
            hs.append(h)
        hs = torch.stack(hs, 1)  # h_1 .. h_L  (B, L, hidden)
        mu, std = self.obs_distribution(hs)
        nll = 0.5 * ((x[:, 1:] - mu) / std) ** 2 + std.log() + 0.5 * math.log(2 * math.pi)
        terms = {
            "obs_nll": mean(nll.sum(-1), mask),
            "reward": mean((self.reward(hs, x[:, 1:]) - rewards).pow(2), mask),
        }
        if self.cont_head is not None and cont is not None:
            logits = self.continuation_logit(hs, x[:, 1:])
            terms["continuation"] = mean(F.binary_cross_entropy_with_logits(logits, cont, reduction="none"), mask)
        if self.value_head is not None and length > 1:
            terms["value"] = self._value_loss(hs.detach(), x[:, 1:].detach(), rewards, mask, cont, value_lambda)
        k_max = min(overshooting, length)
        if k_max > 0:
            # starts s = 0, stride, ... <= L-K, each with K targets inside the chunk; h_0 = 0, h_s teacher-forced
            starts = torch.arange(0, length - k_max + 1, max(overshoot_stride, 1), device=obs.device)
            h_all = torch.cat([torch.zeros_like(hs[:, :1]), hs], 1)  # h_0 .. h_L
            h = h_all[:, starts].reshape(-1, self.hidden_size)
            xk = x[:, starts].reshape(-1, self.obs_dim)
            obs_err, rew_err = 0.0, 0.0
            for k in range(1, k_max + 1):
                h = self.transition(h, xk, actions[:, starts + k - 1].reshape(-1, self.action_dim))
                xk = self.obs_distribution(h)[0]
                mk = None if mask is None else mask[:, starts + k - 1].reshape(-1)
                obs_err = obs_err + mean((xk - x[:, starts + k].reshape(-1, self.obs_dim)).pow(2).sum(-1), mk)
                rew_err = rew_err + mean((self.reward(h, xk) - rewards[:, starts + k - 1].reshape(-1)).pow(2), mk)
            terms["overshoot_obs"] = obs_err / k_max
            terms["overshoot_reward"] = rew_err / k_max
        return terms

    def _value_loss(self, hs: Tensor, xs: Tensor, rewards: Tensor, mask: Tensor | None, cont: Tensor | None,
                    lam: float) -> Tensor:
        """The ``value`` term: ``V(b_t)`` for ``t = 1 .. L-1`` against TD(λ) returns (see the module docstring).

        :param hs: ``h_1 .. h_L`` (B, L, hidden) and ``xs``: ``x̃_1 .. x̃_L`` (B, L, O), the beliefs ``b_1 .. b_L``.
        :param rewards: ``r_0 .. r_{L-1}`` (B, L), ``r_t`` received on the transition from ``b_t`` to ``b_{t+1}``.
        """
        gamma = self._discount
        with torch.no_grad():
            v = self.value(hs, xs)  # V(b_1) .. V(b_L)
            g = v[:, -1]
            targets = []
            length = hs.shape[1]
            for t in range(length - 1, 0, -1):  # G_t for t = L-1 .. 1; g holds G_{t+1} (G_L = V(b_L))
                if mask is not None and t + 1 < length:  # b_{t+1} ends the real data: bootstrap there
                    g = torch.where(mask[:, t + 1] > 0, g, v[:, t])
                going = 1.0 if cont is None else cont[:, t]
                g = rewards[:, t] + gamma * going * ((1 - lam) * v[:, t] + lam * g)
                targets.append(g)
            target = torch.stack(targets[::-1], 1)  # G_1 .. G_{L-1}
        pred = self.value(hs[:, :-1], xs[:, :-1])  # V(b_1) .. V(b_{L-1})
        err = ((pred - target) * (1 - gamma)).pow(2)
        m = None if mask is None else mask[:, 1:]
        return err.mean() if m is None else (err * m).sum() / m.sum().clamp_min(1)
