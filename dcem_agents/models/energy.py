"""A deep energy model ``E_θ(y|x)`` for energy-based regression (Amos & Yarats 2020, sect. 4.1 and 5.1, app. B).

The model is a structured prediction energy network (SPEN): one MLP on the concatenated input and output,
``E_θ(y|x) = MLP_θ([x, y]) ∈ ℝ``, with ``P(y|x) ∝ exp{-E_θ(y|x)}`` and predictions ``ŷ = argmin_y E_θ(y|x)``
(eq. 6).
The argmin is approximated by one of the differentiable predictors in
:mod:`dcem_agents.models.energy_predictors` (unrolled gradient descent or DCEM).

Sizes. The paper's text gives no architecture; app. B refers to the authors' released experiment, whose energy
network is ``Linear(n_x + n_y, 128) → Softplus → Linear(128, 128) → Softplus → Linear(128, 128) → Softplus →
Linear(128, 1)`` on the raw (unnormalized) inputs. Those are the defaults here (``hidden=128``, ``n_layers=3``);
Softplus keeps ``∇_y E`` smooth, which unrolled gradient descent differentiates through a second time.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["EnergyNet"]


class EnergyNet(nn.Module):
    """Scalar energy ``E_θ(y|x)`` of an input ``x`` (…, n_x) and a candidate output ``y`` (…, n_y).

    :param n_x: input dimension.
    :param n_y: output dimension.
    :param hidden: width of every hidden layer (paper's released code: 128).
    :param n_layers: number of hidden layers (paper's released code: 3).
    :param generator: if given, the weights are (re)initialized from it with PyTorch's default ``nn.Linear`` scheme
        ``U(-1/√fan_in, 1/√fan_in)``, so that a seed alone fixes the initial network (and two models built from
        generators with the same seed start identical).
    """

    def __init__(
        self, n_x: int = 1, n_y: int = 1, hidden: int = 128, n_layers: int = 3, generator: torch.Generator | None = None
    ) -> None:
        super().__init__()
        if min(n_x, n_y, hidden, n_layers) < 1:
            raise ValueError(
                f"EnergyNet: sizes must be >= 1, got n_x={n_x}, n_y={n_y}, hidden={hidden}, n_layers={n_layers}"
            )
        self.n_x, self.n_y, self.hidden, self.n_layers = n_x, n_y, hidden, n_layers
        layers: list[nn.Module] = []
        width = n_x + n_y
        for _ in range(n_layers):
            layers += [nn.Linear(width, hidden), nn.Softplus()]
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)
        if generator is not None:
            self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        """Draw every weight and bias from ``U(-1/√fan_in, 1/√fan_in)`` using ``generator`` (on the CPU)."""
        for module in self.net:
            if isinstance(module, nn.Linear):
                bound = 1.0 / math.sqrt(module.in_features)
                for p in (module.weight, module.bias):
                    p.copy_(torch.empty(p.shape).uniform_(-bound, bound, generator=generator))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Energies ``E_θ(y|x)`` of shape ``(…)`` for ``x`` (…, n_x) and ``y`` (…, n_y).

        ``x`` is broadcast over the leading dimensions of ``y`` (e.g. ``x`` (B, 1, n_x) against samples (B, N, n_y)).
        """
        if x.shape[:-1] != y.shape[:-1]:
            x = x.expand(*y.shape[:-1], x.shape[-1])
        return self.net(torch.cat((x, y), dim=-1)).squeeze(-1)

    def extra_repr(self) -> str:
        return f"n_x={self.n_x}, n_y={self.n_y}, hidden={self.hidden}, n_layers={self.n_layers}"
