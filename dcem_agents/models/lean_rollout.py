"""The planner's imagination as one lean step: :meth:`RSSM.imagine`'s rewards with the loop-invariant work hoisted out.

A planner only needs the predicted rewards ``r̂_1 .. r̂_H`` of many candidate action sequences (eq. 7 and 8), and the
reference :meth:`~dcem_agents.models.rssm.RSSM.imagine` spends much of a step on work that does not depend on it.
:func:`imagine_rewards` computes exactly the same function (the same weights, the mean observation fed back) as

- **the action part of the embedding, hoisted.** ``ELU(W_e [x̃_t, u_t] + b_e) = ELU(W_x x̃_t + (W_u u_t + b_e))``: the
  bracket does not depend on the rollout, so it is one matrix product over all ``B·H`` actions before the loop;
- **one product on the new state.** After the GRU update ``h_{t+1}`` feeds three layers: the next step's hidden
  gates ``W_hh h``, the observation head's first layer and the ``h`` columns of the reward head's first layer
  (``f_rew(h, x̃) = ... W_rh h + W_rx x̃ ...``, no ``torch.cat``). Their weights are stacked once per call, so a
  step runs one ``(M, hidden) @ (hidden, 3·hidden + 2·layer)`` product instead of three;
- **the heads after the loop.** Rewards (and continuations) feed nothing back into the rollout, so the loop runs
  only the GRU and the observation mean, and the reward (and continuation) heads run once over all ``M·H`` rows; the
  value head, in a model that has one, runs once on the ``M`` last beliefs, in the model's own dtype
  (:meth:`RSSM.terminal_value <dcem_agents.models.rssm.RSSM.terminal_value>`, from :func:`imagine_objective`);
- **only the mean** of the observation head's last layer (its first ``O`` rows);
- **the GRU cell written out** (PyTorch's gate order r, z, n), so that every product can run in bf16;
- **weights rearranged once**: the stacked and cast weights are kept between gradient-free calls until a parameter
  changes;
- **no per-step** ``cat`` **or** ``stack``: wide products are cut with ``split`` (whose backward is one
  concatenation, where slicing would fill a full-size zero gradient per slice), and the rewards are gathered once;
- **row chunks** (CPU only): the ``B·N`` rows are rolled out ``chunk`` rows at a time, so that the working set of a
  step stays in the CPU's cache however many environments are planned for (the reference path slows down per
  environment beyond one). On a GPU, where a step's cost is its kernel launches, all rows go in one pass.

``precision="bf16"`` casts the weights (cached as above) and runs every product and activation, and the recurrent
state, in bfloat16 (AMX or AVX-512-BF16 on CPUs that have them, tensor cores on CUDA); the rewards come back in the
model's dtype. Gradients flow into the model's fp32 parameters through the casts. ``fp32`` matches the reference to
rounding (tested, values and gradients). bf16 results depend on the batch they are computed in (kernel choice by
size), which PPO's ratio does not tolerate: :class:`~dcem_agents.sb3.EmbeddedDCEMPolicy` plans in fp32 by default.
"""

from __future__ import annotations

import weakref
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from dcem_agents.models.rssm import RSSM

__all__ = ["PRECISIONS", "Precision", "imagine_objective", "imagine_rewards"]

Precision = Literal["fp32", "bf16"]
#: the precisions of :func:`imagine_rewards`
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")
_DTYPES = {"bf16": torch.bfloat16}


class _Weights:
    """The model's weights rearranged for the lean step and cast to the compute dtype (see :func:`_weights`)."""

    def __init__(self, model: RSSM, dtype: torch.dtype) -> None:
        o, hid = model.obs_dim, model.hidden_size
        cell, emb = model.cell, model.embed[0]
        o1, o2, o3 = model.obs_head[0], model.obs_head[2], model.obs_head[4]
        r1, r2, r3 = model.reward_head[0], model.reward_head[2], model.reward_head[4]

        def c(t: Tensor) -> Tensor:
            return t.to(dtype)

        self.w_ex, self.w_eu, self.b_e = c(emb.weight[:, :o]), c(emb.weight[:, o:]), c(emb.bias)
        self.w_ih, self.b_ih = c(cell.weight_ih), c(cell.bias_ih)
        heads = [r1] if model.cont_head is None else [r1, model.cont_head[0]]
        # rows: [W_hh (3·hidden) | W_o1 (layer) | W_rh (layer) | W_ch (layer), with the continuation head] on h_{t+1}
        self.w_h = c(torch.cat([cell.weight_hh, o1.weight] + [m.weight[:, :hid] for m in heads], 0))
        self.b_h = c(torch.cat([cell.bias_hh, o1.bias] + [m.bias for m in heads], 0))
        self.gates = 3 * hid
        self.layer = o1.weight.shape[0]
        self.sizes = [self.gates, self.layer, self.layer * len(heads)]  # the split of one product on h
        self.w_o2, self.b_o2 = c(o2.weight), c(o2.bias)
        self.w_o3, self.b_o3 = c(o3.weight[:o]), c(o3.bias[:o])
        # rows: [W_rx | W_cx] on x̃_{t+1}: the heads' first layers, completed after the loop
        self.w_x = c(torch.cat([m.weight[:, hid:] for m in heads], 0))
        self.w_r2, self.b_r2 = c(r2.weight), c(r2.bias)
        self.w_r3, self.b_r3 = c(r3.weight), c(r3.bias)
        self.cont = model.cont_head is not None
        if self.cont:
            c2, c3 = model.cont_head[2], model.cont_head[4]
            self.w_c2, self.b_c2 = c(c2.weight), c(c2.bias)
            self.w_c3, self.b_c3 = c(c3.weight), c(c3.bias)


_CACHE: "weakref.WeakKeyDictionary[RSSM, tuple[tuple, _Weights]]" = weakref.WeakKeyDictionary()


def _weights(model: RSSM, dtype: torch.dtype) -> _Weights:
    """The rearranged weights, reused across gradient-free calls while no parameter changed.

    A parameter's storage and version counter (bumped by every in-place update, e.g. an optimizer step or
    ``load_state_dict``) key the cache. Calls that record gradients, or run inside a CUDA graph capture (whose replays
    must see later in-place updates), rearrange the weights anew.
    """
    if torch.is_grad_enabled() or (torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()):
        return _Weights(model, dtype)
    key = (dtype, tuple((p.data_ptr(), p._version, p.device) for p in model.parameters()))
    hit = _CACHE.get(model)
    if hit is None or hit[0] != key:
        hit = (key, _Weights(model, dtype))
        _CACHE[model] = hit
    return hit[1]


def _rollout(w: _Weights, h: Tensor, x: Tensor, act_emb: Tensor) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
    """Rewards (M, H) of the rows ``h`` (M, hidden), ``x̃`` (M, O) under ``W_u u + b_e`` (M, H, L); with the
    continuation head, each weighted by the survival probability ``Π_{k<t} c_k``. Also the probability of still
    running after the last step, ``w_H = Π_{k<H} c_k`` (M,; None without the head), and the last belief ``(h_H, x̃_H)``.

    Only the recurrence runs step by step: the GRU and the observation mean, which feeds the next step. The reward
    (and continuation) heads feed nothing back, so the loop keeps only their first layers' ``h`` part (a slice of the
    one product on ``h_{t+1}``) and ``x̃_{t+1}``, and the heads run once over all ``M·H`` rows after it: fewer, larger
    products (fewer kernel launches on a GPU, better-shaped products on a CPU). Wide products are cut with ``split``
    (one backward node that concatenates) rather than slicing (one zero-filled full-size gradient per slice in the
    backward pass).
    """
    m, horizon = act_emb.shape[:2]
    hid = h.shape[-1]
    g = w.gates
    gh = F.linear(h, w.w_h[:g], w.b_h[:g])  # W_hh h_0 + b_hh
    acts = act_emb.unbind(1)  # one backward node (indexing per step would fill a (M, H, L) zero gradient per step)
    heads_h, xs = [], []  # per step: W_rh h_{t+1} + b_r1 (and W_ch h + b_c1), and x̃_{t+1}
    for t in range(horizon):
        e = F.elu(torch.addmm(acts[t], x, w.w_ex.t()))
        gi_rz, gi_n = torch.addmm(w.b_ih, e, w.w_ih.t()).split([2 * hid, hid], 1)
        gh_rz, gh_n = gh.split([2 * hid, hid], 1)
        r, z = torch.sigmoid(gi_rz + gh_rz).split([hid, hid], 1)
        n = torch.tanh(torch.addcmul(gi_n, r, gh_n))
        h = torch.addcmul(n, z, h - n)  # (1 - z) n + z h
        if t + 1 < horizon:
            gh, o1, hh = torch.addmm(w.b_h, h, w.w_h.t()).split(w.sizes, 1)
        else:  # the last step needs no hidden gates for a next step
            o1, hh = torch.addmm(w.b_h[g:], h, w.w_h[g:].t()).split(w.sizes[1:], 1)
        obs = F.elu(torch.addmm(w.b_o2, F.elu(o1), w.w_o2.t()))
        x = torch.addmm(w.b_o3, obs, w.w_o3.t())  # the mean x̃_{t+1}
        heads_h.append(hh)
        xs.append(x)
    # the heads over all M·H rows at once, rows in (m, t) order
    first = torch.addmm(torch.stack(heads_h, 1).view(m * horizon, -1), torch.stack(xs, 1).view(m * horizon, -1),
                        w.w_x.t())
    q, *qc = first.split(w.layer, 1)
    q = F.elu(torch.addmm(w.b_r2, F.elu(q), w.w_r2.t()))
    rewards = torch.addmm(w.b_r3, q, w.w_r3.t()).view(m, horizon)
    if not w.cont:
        return rewards, None, h, x
    q = F.elu(torch.addmm(w.b_c2, F.elu(qc[0]), w.w_c2.t()))
    cont = torch.sigmoid(torch.addmm(w.b_c3, q, w.w_c3.t())).view(m, horizon)
    return rewards * RSSM.survival_weights(cont), cont.prod(1), h, x


_compiled: list = []  # the torch.compile'd _rollout, made on first use


def _compiled_rollout():  # noqa: ANN202 - a torch.compile wrapper
    if not _compiled:
        _compiled.append(torch.compile(_rollout, dynamic=True))
    return _compiled[0]


def imagine_rewards(
    model: RSSM, belief: Tensor, actions: Tensor, precision: Precision = "fp32", chunk: int = 1024,
    compile: bool = False,
) -> Tensor:
    """Predicted rewards of open-loop rollouts: the same function as ``im.rewards * im.weights`` of
    ``im = model.imagine(belief, actions)`` (the rewards alone for a model without the continuation head).
    A model's value head is not run (see :func:`imagine_objective`).

    :param model: the world model (its parameters fix device and dtype of the result).
    :param belief: start beliefs ``[h, x̃]`` (M, belief_dim), one per action sequence.
    :param actions: action sequences ``u_t .. u_{t+H-1}`` (M, H, A).
    :param precision: ``fp32`` (the model's dtype) or ``bf16`` (products and activations in bfloat16; only for a
        float32 model, a float64 one keeps its dtype).
    :param chunk: rows rolled out together on the CPU (cache blocking; a GPU takes all rows at once); the result does
        not depend on it beyond rounding.
    :param compile: run the step loop through ``torch.compile`` (fuses the activations with their neighbours; the
        first call compiles, 10-60 s on a CPU).
    :return: rewards ``r̂_t .. r̂_{t+H-1}`` (M, H), weighted by the survival probabilities with the continuation head,
        in the model's dtype, differentiable w.r.t. the inputs and the model's parameters.
    """
    return _imagine(model, belief, actions, precision, chunk, compile)[0]


def imagine_objective(
    model: RSSM, belief: Tensor, actions: Tensor, precision: Precision = "fp32", chunk: int = 1024,
    compile: bool = False,
) -> Tensor:
    """What a planner maximizes (M,): the same function as ``model.imagine(belief, actions).objective()``, the sum of
    :func:`imagine_rewards` plus, with the value head, the terminal value ``γ^H w_H V(b_H)``. Arguments as there."""
    rewards, survival, h, x = _imagine(model, belief, actions, precision, chunk, compile)
    total = rewards.sum(-1)
    if model.value_head is None:
        return total
    return total + model.terminal_value(h, x, actions.shape[1], survival)


def _imagine(model: RSSM, belief: Tensor, actions: Tensor, precision: Precision, chunk: int,
             compile: bool) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
    """:func:`_rollout` over all rows (chunked on the CPU), its outputs in the model's dtype."""
    if precision not in PRECISIONS:
        raise ValueError(f"imagine_rewards: precision must be one of {PRECISIONS}, got {precision!r}")
    if chunk < 1:
        raise ValueError(f"imagine_rewards: chunk must be >= 1, got {chunk}")
    m, horizon, _ = actions.shape
    if belief.shape != (m, model.belief_dim):
        raise ValueError(f"imagine_rewards: belief must be ({m}, {model.belief_dim}), got {tuple(belief.shape)}")
    out_dtype = model.embed[0].weight.dtype
    # bf16 lowers fp32 arithmetic; a model kept in float64 (gradient checks, say) keeps its precision
    dtype = _DTYPES.get(precision, out_dtype) if out_dtype == torch.float32 else out_dtype
    w = _weights(model, dtype)
    h, x = model.split(belief.to(dtype))
    act_emb = torch.addmm(w.b_e, actions.to(dtype).reshape(m * horizon, -1), w.w_eu.t()).view(m, horizon, -1)
    step = _compiled_rollout() if compile else _rollout
    if m <= chunk or belief.device.type != "cpu":
        outputs = step(w, h, x, act_emb)
    else:
        # split, not slicing: its backward is one concatenation, not a full-size zero gradient per chunk
        parts = [step(w, *rows) for rows in zip(h.split(chunk), x.split(chunk), act_emb.split(chunk))]
        outputs = [None if p[0] is None else torch.cat(p, 0) for p in zip(*parts)]
    return tuple(None if t is None else t.to(out_dtype) for t in outputs)
