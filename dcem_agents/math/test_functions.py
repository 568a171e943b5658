"""Classic non-convex test functions for optimizers, batched over leading dimensions.

Both take points ``x`` of shape ``(..., d)`` and return values ``(...)``; both have their global minimum 0 at the
origin and many local minima around it.
"""

from __future__ import annotations

import math

from torch import Tensor

__all__ = ["ackley", "rastrigin"]


def rastrigin(x: Tensor, a: float = 10.0) -> Tensor:
    """Rastrigin: ``a d + Σ_i (x_i² - a cos(2π x_i))``; local minima on the integer lattice, usually in [-5.12, 5.12]^d."""
    return a * x.shape[-1] + (x**2 - a * (2 * math.pi * x).cos()).sum(-1)


def ackley(x: Tensor, a: float = 20.0, b: float = 0.2, c: float = 2 * math.pi) -> Tensor:
    """Ackley: ``-a exp(-b sqrt(mean x²)) - exp(mean cos(c x)) + a + e``; usually in [-32.768, 32.768]^d."""
    d = x.shape[-1]
    rms = ((x**2).sum(-1) / d + 1e-12).sqrt()
    return -a * (-b * rms).exp() - ((c * x).cos().sum(-1) / d).exp() + a + math.e
