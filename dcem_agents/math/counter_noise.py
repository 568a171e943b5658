"""Standard normal noise as a pure function of ``(seed, index)``: a counter-based generator, batched over seeds.

PPO through the planner needs the planner's sampling noise of a step again at update time, for a shuffled minibatch
of steps, each with its own seed. One ``torch.Generator`` per row costs a host round trip per row; here every
number is computed from its seed and its position by integer hashing, so a whole minibatch's noise is one batched
computation on the device of the seeds, and the same seed gives the same numbers on CPU and CUDA (bit-identical
integers; the floats agree to the last few ulps of ``log`` and ``cos``).

For seed ``s`` and counter ``c`` the 32-bit hash ``m`` (a two-multiply integer finalizer with a low avalanche bias,
constants below 2³¹ so that every product fits in int64 on any device) gives two uniforms

    u_j = (m(m(2c + j) + m(s)) >> 8 + 1/2) · 2⁻²⁴ ∈ (0, 1),        j = 0, 1,

and the Box-Muller transform ``z = √(-2 ln u_0) cos(2π u_1)`` one standard normal.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["counter_normal"]

_MASK = 0xFFFFFFFF
_M1, _M2 = 0x21F0AAAD, 0x735A2D97  # hash-prospector constants, both < 2**31


def _mix32(x: Tensor) -> Tensor:
    """A 32-bit integer hash of ``x`` (int64 holding values in [0, 2³²)), elementwise."""
    x = x ^ (x >> 16)
    x = (x * _M1) & _MASK
    x = x ^ (x >> 15)
    x = (x * _M2) & _MASK
    return x ^ (x >> 15)


def counter_normal(seeds: Tensor, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> Tensor:
    """Standard normal noise ``(B, *shape)``: row ``i`` is a pure function of ``seeds[i]`` (any device).

    :param seeds: integer-valued seeds (B,), any numeric dtype (floats are rounded), non-negative and below 2³².
    :param shape: the shape of one row's noise.
    :param dtype: floating dtype of the result.
    :return: noise on the device of ``seeds``; element ``(i, *idx)`` depends only on ``seeds[i]`` and the flat
        position of ``idx`` in ``shape`` (so a row does not change with the batch it is computed in).
    """
    if seeds.dim() != 1:
        raise ValueError(f"counter_normal: seeds must be 1-D (B,), got shape {tuple(seeds.shape)}")
    keys = _mix32((seeds.round() if seeds.is_floating_point() else seeds).to(torch.int64) & _MASK)  # (B,)
    count = math.prod(shape)
    counter = torch.arange(2 * count, device=seeds.device, dtype=torch.int64)  # (2·count,)
    bits = _mix32((_mix32(counter).unsqueeze(0) + keys.unsqueeze(1)) & _MASK)  # (B, 2·count)
    u = ((bits >> 8).to(torch.float32) + 0.5) * 2.0**-24
    u0, u1 = u[:, 0::2], u[:, 1::2]
    z = torch.sqrt(-2.0 * torch.log(u0)) * torch.cos(2.0 * math.pi * u1)
    return z.to(dtype).reshape(seeds.shape[0], *shape)
