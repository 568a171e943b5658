"""The latent action decoder ``u_{1:H} = f_dec(z)`` (paper sect. 4.2, eq. 8, app. C).

An MLP with ELU activations maps a latent point ``z`` (..., latent_dim) to a whole action sequence
(..., horizon, action_dim), squashed into the box ``[lower, upper]`` by ``tanh`` and an affine map. App. C motivates
both choices: ReLU biases the initial outputs towards a corner, ELU is almost linear around zero, and the initial
weight scale ``α`` decides whether the untrained decoder already covers the action box (too small and it learns
slowly to expand). Weights start at ``N(0, α² · 2/(fan_in + fan_out))`` (Xavier-normal times ``α``), biases at 0.

The module knows nothing about the task: latent size, horizon, action size and bounds are constructor arguments, so
the same class serves the known cartpole (issue 3) and the learned world model of the RL agent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["LatentActionDecoder"]


class LatentActionDecoder(nn.Module):
    """MLP decoder from a latent space to bounded action sequences.

    :param latent_dim: size ``d`` of the latent space ``Z``.
    :param horizon: length ``H`` of the decoded action sequences.
    :param action_dim: size of one action.
    :param lower: lower action bound, a scalar or a sequence of ``action_dim`` values.
    :param upper: upper action bound, like ``lower``.
    :param hidden_sizes: widths of the hidden layers (each followed by an ELU).
    :param init_scale: the factor ``α`` on the initial weights (app. C).
    """

    def __init__(
        self,
        latent_dim: int,
        horizon: int,
        action_dim: int,
        lower: float | Sequence[float],
        upper: float | Sequence[float],
        hidden_sizes: Sequence[int] = (256, 256, 256),
        init_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if latent_dim < 1 or horizon < 1 or action_dim < 1:
            raise ValueError(
                f"latent_dim, horizon and action_dim must be >= 1, got {latent_dim}, {horizon}, {action_dim}"
            )
        if init_scale <= 0:
            raise ValueError(f"init_scale must be > 0, got {init_scale}")
        lo = torch.as_tensor(lower, dtype=torch.float32).expand(action_dim).clone()
        hi = torch.as_tensor(upper, dtype=torch.float32).expand(action_dim).clone()
        if not bool((hi > lo).all()):
            raise ValueError(f"need upper > lower for every action dimension, got lower={lower}, upper={upper}")
        self.latent_dim = latent_dim
        self.horizon = horizon
        self.action_dim = action_dim
        self.hidden_sizes = tuple(int(h) for h in hidden_sizes)
        self.init_scale = float(init_scale)
        # Buffers: they follow .to(device/dtype) and are saved in the state dict.
        self.register_buffer("lower", lo)
        self.register_buffer("upper", hi)

        layers: list[nn.Module] = []
        width = latent_dim
        for h in self.hidden_sizes:
            layers += [nn.Linear(width, h), nn.ELU()]
            width = h
        layers.append(nn.Linear(width, horizon * action_dim))
        self.net = nn.Sequential(*layers)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Weights ``~ N(0, α² · 2 / (fan_in + fan_out))``, biases zero (app. C)."""
        for m in self.net:
            if isinstance(m, nn.Linear):
                fan_out, fan_in = m.weight.shape
                nn.init.normal_(m.weight, 0.0, self.init_scale * math.sqrt(2.0 / (fan_in + fan_out)))
                nn.init.zeros_(m.bias)

    def forward(self, z: Tensor) -> Tensor:
        """Decode latent points ``z`` (..., latent_dim) into action sequences (..., horizon, action_dim) in the box."""
        if z.shape[-1] != self.latent_dim:
            raise ValueError(f"expected latent points (..., {self.latent_dim}), got shape {tuple(z.shape)}")
        y = self.net(z).unflatten(-1, (self.horizon, self.action_dim))
        return self.lower + (self.upper - self.lower) * 0.5 * (torch.tanh(y) + 1.0)

    def extra_repr(self) -> str:
        return (
            f"latent_dim={self.latent_dim}, horizon={self.horizon}, action_dim={self.action_dim}, "
            f"init_scale={self.init_scale}"
        )

    def config(self) -> dict:
        """Constructor arguments as plain values (to rebuild the decoder from a checkpoint)."""
        return {
            "latent_dim": self.latent_dim,
            "horizon": self.horizon,
            "action_dim": self.action_dim,
            "lower": self.lower.tolist(),
            "upper": self.upper.tolist(),
            "hidden_sizes": list(self.hidden_sizes),
            "init_scale": self.init_scale,
        }
