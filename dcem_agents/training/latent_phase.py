"""Phase 2 of the paper: learn the latent action decoder online on the world model (a variant of alg. 2).

:class:`LatentPhaseTrainer` runs the phase-1 loop of :class:`~dcem_agents.training.planet.PlanetTrainer` (the world
model keeps its maximum-likelihood updates) with the embedded DCEM controller collecting the data, and adds, after
the model updates of every iteration, ``decoder.updates_per_episode`` steps of alg. 2 on the decoder ``f_dec``:

1. sample chunks from the replay and filter them with the model (no gradient) to get beliefs ``b`` (B, D) of states
   the agent has visited;
2. solve ``ẑ = argmin_z -Σ_t r̂_t(b, f_dec(z))`` with DCEM from every belief
   (:meth:`~dcem_agents.planning.latent_mpc.LatentDCEMController.plan`);
3. take a gradient step on ``C(f_dec(ẑ)) = -Σ_t r̂_t`` (the planned cost, averaged over beliefs) through DCEM into
   the decoder only: the world model is frozen for this loss (its parameters get no gradient from it).

:meth:`pretrain_decoder` runs step 1–3 on the phase-1 replay before any new data is collected, so that the online
phase starts from a useful latent space instead of a random one. :meth:`reseed` first fills the replay with episodes
of another controller (the phase-1 planner), for a phase 1 whose replay was not kept (a slim, shipped checkpoint).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from dcem_agents.config import field
from dcem_agents.models.rssm import RSSM
from dcem_agents.planning.latent_mpc import LatentDCEMController
from dcem_agents.planning.mpc import Controller
from dcem_agents.training.metrics import MetricsLogger
from dcem_agents.training.planet import PlanetTrainer, TrainSettings
from dcem_agents.training.rollout import run_episodes

__all__ = ["DecoderSettings", "LatentPhaseTrainer", "decoder_loss"]

log = logging.getLogger(__name__)


@dataclass
class DecoderSettings:
    """Optimization of the latent action decoder by alg. 2 (the ``decoder_training:`` section of a preset)."""

    learning_rate: float = field(1e-3, help="Adam learning rate of the decoder")
    grad_clip: float = field(10.0, help="max global gradient norm of the decoder")
    batch_size: int = field(32, help="beliefs per alg.-2 step (each is a full DCEM solve with backward)")
    chunk_length: int = field(20, help="agent steps filtered per sampled chunk to reach the beliefs")
    updates_per_episode: int = field(20, help="alg.-2 steps after the model updates of every collected episode")
    pretrain_updates: int = field(500, help="alg.-2 steps on the phase-1 replay before collecting (0: none)")

    def __post_init__(self) -> None:
        if self.learning_rate <= 0 or self.grad_clip <= 0:
            raise ValueError("decoder_training.learning_rate and grad_clip must be > 0")
        if self.batch_size < 1 or self.chunk_length < 1:
            raise ValueError("decoder_training.batch_size and chunk_length must be >= 1")
        if self.updates_per_episode < 0 or self.pretrain_updates < 0:
            raise ValueError("decoder_training.updates_per_episode and pretrain_updates must be >= 0")


def decoder_loss(controller: LatentDCEMController, belief: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Alg. 2's loss: the model's predicted cost ``-Σ_t w_t r̂_t`` of the DCEM plan from each belief (B, D), averaged
    (``w_t``: the survival weights of the continuation head, ones without it; with the value head, minus the terminal
    value too: the planners' objective, :meth:`~dcem_agents.models.rssm.Imagination.objective`).

    Differentiable w.r.t. the decoder (and the model, if its parameters require gradients).
    """
    plan = controller.plan(belief, generator)
    return -controller.model.imagine(belief, plan.actions).objective().mean()  # (B,) -> scalar


class LatentPhaseTrainer(PlanetTrainer):
    """The phase-2 loop: phase-1 updates and collection with the latent controller, plus alg.-2 decoder steps.

    :param env_fn: ``seed -> env`` factory.
    :param model: the (phase-1 trained) world model.
    :param controller: the embedded DCEM controller; its decoder is trained here.
    :param settings: the schedule of the maximum-likelihood part (as phase 1).
    :param decoder_settings: alg.-2 optimization.
    :param seed: seeds the generators (see :class:`PlanetTrainer`).
    :param action_repeat: environment steps per agent step.
    :param logger: metrics sink, or None.
    :param save_fn: resume-checkpoint writer, or None.
    """

    progress_label = "phase 2 (latent dcem)"

    def __init__(
        self,
        env_fn: Callable[[int | None], gym.Env],
        model: RSSM,
        controller: LatentDCEMController,
        settings: TrainSettings,
        decoder_settings: DecoderSettings,
        seed: int,
        action_repeat: int = 1,
        logger: MetricsLogger | None = None,
        save_fn: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        super().__init__(env_fn, model, controller, settings, seed, action_repeat, logger, save_fn)
        self.decoder = controller.decoder
        self.decoder_settings = decoder_settings
        self.decoder_optimizer = torch.optim.Adam(self.decoder.parameters(), lr=decoder_settings.learning_rate)
        self.counters.update({"decoder_updates": 0, "pretrained": 0, "reseeded": 0})

    # ---------------------------------------------------------------- checkpointing
    def state_dict(self) -> dict[str, Any]:
        """Phase-1 state plus the decoder and its optimizer."""
        return {**super().state_dict(), "decoder": self.decoder.state_dict(),
                "decoder_optimizer": self.decoder_optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        super().load_state_dict(state)
        self.decoder.load_state_dict(state["decoder"])
        self.decoder_optimizer.load_state_dict(state["decoder_optimizer"])

    # ---------------------------------------------------------------- alg. 2
    @torch.no_grad()
    def sample_beliefs(self, n: int) -> Tensor:
        """Beliefs (n, D) at random steps of chunks from the replay, filtered with the current model."""
        s = self.decoder_settings
        param = next(self.model.parameters())
        chunk = self.replay.sample(n, s.chunk_length, self.rng)
        obs, actions = (torch.as_tensor(x, device=param.device, dtype=param.dtype) for x in chunk[:2])
        beliefs = self.model.observe(obs, actions)  # (n, L+1, D)
        real = chunk.mask.sum(1).astype(np.int64)  # beliefs 0 .. real[i] are filtered from real observations
        steps = self.rng.integers(0, beliefs.shape[1], size=n) if (real == s.chunk_length).all() \
            else self.rng.integers(0, real + 1)
        t = torch.as_tensor(steps, device=param.device)
        return beliefs[torch.arange(n, device=param.device), t]

    def decoder_step(self) -> dict[str, float]:
        """One alg.-2 step on a batch of replay beliefs; returns the loss (= mean planned cost) and gradient norm."""
        s = self.decoder_settings
        belief = self.sample_beliefs(s.batch_size)
        requires = [p.requires_grad for p in self.model.parameters()]
        self.model.requires_grad_(False)
        try:
            loss = decoder_loss(self.controller, belief, self.torch_gen)
            self.decoder_optimizer.zero_grad(set_to_none=True)
            loss.backward()
        finally:
            for p, r in zip(self.model.parameters(), requires):
                p.requires_grad_(r)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.decoder.parameters(), s.grad_clip)
        if not self.finite_step(loss, grad_norm, "decoder"):
            return {}
        self.decoder_optimizer.step()
        self.counters["decoder_updates"] += 1
        return {"decoder_loss": float(loss.detach()), "decoder_grad_norm": float(grad_norm)}

    def reseed(self, controller: Controller, episodes: int, n_envs: int = 10) -> list[float]:
        """Collect ``episodes`` episodes with ``controller`` (e.g. phase 1's full-space planner on this model), with
        ``train.exploration_noise``, into the replay; their environment steps count in ``total_env_steps``.

        ``n_envs`` environments run at once, with one batched planning call per step. The trainer is saved after every
        batch, so a killed run resumes the collection where it stopped (counters ``reseed_done``,
        ``reseed_return_sum``, ``reseed_env_steps``). Once complete (counter ``reseeded``) it is skipped, like
        :meth:`pretrain_decoder`. Returns the returns of the episodes this call collected.
        """
        c = self.counters
        if c.get("reseeded") or episodes < 1:
            return []
        if n_envs < 1:
            raise ValueError(f"reseed: n_envs must be >= 1, got {n_envs}")
        for key in ("reseed_done", "reseed_return_sum", "reseed_env_steps"):
            c.setdefault(key, 0)
        envs = [self.env_fn(None) for _ in range(min(n_envs, episodes - c["reseed_done"]))]
        returns: list[float] = []
        bar = tqdm(total=episodes, initial=c["reseed_done"], desc="reseeding the replay", unit="episode",
                   dynamic_ncols=True)
        try:
            while True:
                if c["reseed_done"] >= episodes:  # complete (also when a resume asks for fewer than were collected)
                    c["reseeded"] = 1
                    c["next_eval"] += c["reseed_env_steps"]  # the evaluation schedule starts after the reseeding
                    self.save()
                    break
                batch = envs[: episodes - c["reseed_done"]]
                seeds = [int(self.rng.integers(2**31)) for _ in batch]
                collected, stats = run_episodes(batch, self.model, controller, seeds, generator=self.torch_gen,
                                                rng=self.rng, noise_std=self.settings.exploration_noise)
                for episode in collected:
                    self.replay.add_episode(episode.obs, episode.actions, episode.rewards, episode.terminated)
                    returns.append(episode.return_)
                    c["reseed_return_sum"] += episode.return_
                c["episodes"] += len(batch)
                c["reseed_done"] += len(batch)
                c["env_steps"] += stats.env_steps
                c["reseed_env_steps"] += stats.env_steps
                bar.update(len(batch))
                bar.set_postfix(ret=f"{c['reseed_return_sum'] / c['reseed_done']:.0f}")
                self.save()
        finally:
            bar.close()
            for env in envs:
                env.close()
        if self.logger is not None:
            self.logger.record("reseed/return_mean", c["reseed_return_sum"] / c["reseed_done"])
            self.logger.record("reseed/episodes", episodes)
            self.logger.dump(c["env_steps"])
        return returns

    def pretrain_value(self, n: int) -> list[float]:
        """``n`` steps on the value term alone (a value head new to a trained model), once per run; returns its losses.

        The value head's inputs carry no gradient into the model (see :meth:`RSSM.loss`), so these steps move the
        head alone.
        """
        if self.counters.get("value_pretrained") or n < 1:
            return []
        s, losses = self.settings, []
        self.model.train()
        for _ in tqdm(range(n), desc="value head pretraining", unit="step", dynamic_ncols=True):
            obs, actions, rewards, mask, cont = self.sample_batch()
            loss = self.model.loss(obs, actions, rewards, mask=mask, cont=cont, value_lambda=s.value_lambda)["value"]
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), s.grad_clip)
            if self.finite_step(loss, grad_norm, "value"):
                self.optimizer.step()
                losses.append(float(loss.detach()))
        self.model.eval()
        if self.logger is not None and losses:
            self.logger.record("pretrain/value_loss_first10", float(np.mean(losses[:10])))
            self.logger.record("pretrain/value_loss_last10", float(np.mean(losses[-10:])))
            self.logger.dump(self.counters["env_steps"])
        self.counters["value_pretrained"] = 1
        self.save()
        return losses

    def pretrain_decoder(self) -> list[float]:
        """``pretrain_updates`` alg.-2 steps on the current replay (once per run; skipped after a resume)."""
        if self.counters["pretrained"]:
            return []
        n = self.decoder_settings.pretrain_updates
        losses = []
        for _ in tqdm(range(n), desc="decoder pretraining", unit="step", dynamic_ncols=True):
            out = self.decoder_step()
            if out:  # else a skipped (non-finite) step
                losses.append(out["decoder_loss"])
        if self.logger is not None and losses:
            # one row at the environment step pretraining happened at: the log's step column counts env steps only
            self.logger.record("pretrain/decoder_loss_first10", float(np.mean(losses[:10])))
            self.logger.record("pretrain/decoder_loss_last10", float(np.mean(losses[-10:])))
            self.logger.record("pretrain/decoder_updates", len(losses))
            self.logger.dump(self.counters["env_steps"])
        self.counters["pretrained"] = 1
        self.save()
        return losses

    def _update(self) -> dict[str, float]:
        """Phase-1 model updates, then ``updates_per_episode`` decoder steps (means of both are returned)."""
        out = super()._update()
        sums: dict[str, float] = {}
        for _ in range(self.decoder_settings.updates_per_episode):
            for k, v in self.decoder_step().items():
                sums[k] = sums.get(k, 0.0) + v
        n = max(self.decoder_settings.updates_per_episode, 1)
        out.update({k: v / n for k, v in sums.items()})
        return out

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """The model's and the decoder's optimizers."""
        return [self.optimizer, self.decoder_optimizer]
