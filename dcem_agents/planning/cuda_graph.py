"""Replay of captured planning calls: one CUDA graph per input signature, static input and output buffers.

A planning call is hundreds of small kernels (10 iterations × H rollout steps × a dozen operations); on a GPU their
launch latency, not their arithmetic, sets the time. :class:`GraphCache` captures a function of tensors once per key
(the controllers use the number of environments) and afterwards only copies the new inputs into the captured buffers
and replays the graph. Requirements on the captured function, all met by the controllers' planning calls:

- every input that changes between calls is one of its tensor arguments (beliefs, warm-start plans, sampling noise:
  random numbers are drawn outside the graph, so the generator stays on the eager path);
- no host synchronization and no host-to-device copy inside (scalars become tensors with ``torch.full``);
- parameters are read, not replaced: in-place optimizer updates are seen by the replay, a ``load_state_dict`` too,
  but assigning a new module or moving the model (``.to``) needs :meth:`GraphCache.clear`.

The capture itself goes through a *backend*: :class:`CUDAGraphBackend` on the GPU, or any object with the same
``capture`` method, which is how the caching and buffer logic is tested on machines without a GPU.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Protocol

import torch
from torch import Tensor

__all__ = ["CUDAGraphBackend", "CaptureBackend", "EagerBackend", "GraphCache"]

Replay = Callable[[], None]


class CaptureBackend(Protocol):
    """Captures ``fn(*static_inputs)`` and returns ``(replay, static_output)``: ``replay()`` refreshes the output."""

    def capture(self, fn: Callable[..., Tensor], static_inputs: tuple[Tensor, ...]) -> tuple[Replay, Tensor]:
        """Capture ``fn`` on the static input buffers."""


class CUDAGraphBackend:
    """Capture with :class:`torch.cuda.CUDAGraph` after ``warmup`` eager calls on a side stream (PyTorch's recipe)."""

    def __init__(self, warmup: int = 2) -> None:
        self.warmup = warmup

    def capture(self, fn: Callable[..., Tensor], static_inputs: tuple[Tensor, ...]) -> tuple[Replay, Tensor]:
        """Warm up (allocator, lazy initializations), capture once, return the graph's replay and its output."""
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(self.warmup):
                fn(*static_inputs)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            output = fn(*static_inputs)
        return graph.replay, output


class EagerBackend:
    """A stand-in for CUDA graphs: ``replay`` re-runs ``fn`` on the static buffers and writes into the static output.

    Behaves like a captured graph for everything :class:`GraphCache` does, on any device; used by the tests.
    """

    def __init__(self) -> None:
        self.captures = 0
        self.replays = 0

    def capture(self, fn: Callable[..., Tensor], static_inputs: tuple[Tensor, ...]) -> tuple[Replay, Tensor]:
        """Run ``fn`` once to make the output buffer; replays overwrite it in place."""
        self.captures += 1
        output = fn(*static_inputs)

        def replay() -> None:
            self.replays += 1
            output.copy_(fn(*static_inputs))

        return replay, output


class GraphCache:
    """Captured calls of one function, by key, least recently used first out.

    :param backend: how to capture (default: :class:`CUDAGraphBackend`).
    :param max_entries: captures kept; each holds its static buffers and the graph's memory pool.
    """

    def __init__(self, backend: CaptureBackend | None = None, max_entries: int = 8) -> None:
        if max_entries < 1:
            raise ValueError(f"GraphCache: max_entries must be >= 1, got {max_entries}")
        self.backend = backend if backend is not None else CUDAGraphBackend()
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, tuple[tuple[Tensor, ...], Replay, Tensor]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Forget every capture (after the model is replaced or moved)."""
        self._entries.clear()

    def run(self, key: Hashable, fn: Callable[..., Tensor], *inputs: Tensor) -> Tensor:
        """``fn(*inputs)`` by replaying the capture of ``key`` (captured now on first use).

        The inputs must have the shapes, dtypes and devices of the first call with this key: they are checked, since
        a mismatch would silently read stale buffers.

        :return: a fresh tensor (a clone of the static output, which the next replay overwrites).
        """
        entry = self._entries.get(key)
        if entry is None:
            static = tuple(x.detach().clone() for x in inputs)
            replay, output = self.backend.capture(fn, static)  # a CUDA capture records kernels, it runs none
            entry = (static, replay, output)
            self._entries[key] = entry
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        self._entries.move_to_end(key)
        static, replay, output = entry
        if len(inputs) != len(static):
            raise ValueError(f"GraphCache: key {key!r} was captured with {len(static)} inputs, got {len(inputs)}")
        for buf, x in zip(static, inputs):
            if buf.shape != x.shape or buf.dtype != x.dtype or buf.device != x.device:
                raise ValueError(
                    f"GraphCache: key {key!r} was captured for inputs {tuple(buf.shape)} {buf.dtype} {buf.device}, "
                    f"got {tuple(x.shape)} {x.dtype} {x.device}")
            buf.copy_(x)
        replay()
        return entry[2].clone()
