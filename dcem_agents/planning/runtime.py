"""How a planning call runs, as opposed to what it computes: rollout engine, precision, compilation, CUDA graphs.

:class:`PlannerRuntime` travels with every controller (``controller.runtime``) and is set from the presets
(``planner.precision``, ``planner.compile``) or, for a whole evaluation, from ``evaluate.py --planner-runtime``. It never
changes the plan's hyper-parameters (samples, elites, iterations, horizon), so a checkpoint plans the same problem under
any runtime; only the arithmetic differs:

- ``rollout="lean"`` (default): :func:`~dcem_agents.models.lean_rollout.imagine_objective`, the same function as
  :meth:`~dcem_agents.models.rssm.RSSM.imagine` with the loop-invariant work hoisted; ``"reference"``: ``RSSM.imagine``
  itself, eager fp32, the path every result before the lean step was produced with (benchmarks and fidelity checks);
- ``precision``: ``fp32`` or ``bf16`` products and activations in the rollout (lean only);
- ``compile``: ``torch.compile`` the rollout (first call of each shape compiles, 10-60 s on a CPU);
- ``cuda_graphs``: on CUDA, capture one gradient-free planning call per number of environments and replay it
  (:mod:`dcem_agents.planning.cuda_graph`); ignored on the CPU and whenever gradients are needed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from torch.utils._python_dispatch import TorchDispatchMode

from dcem_agents.models.lean_rollout import PRECISIONS

__all__ = ["DEFAULT_RUNTIME", "PlannerRuntime", "RUNTIME_PRESETS", "count_operators"]


@dataclass(frozen=True)
class PlannerRuntime:
    """Execution settings of a planner (see the module docstring).

    :param rollout: ``lean`` or ``reference``.
    :param precision: ``fp32`` or ``bf16`` (``reference`` is fp32 only).
    :param compile: ``torch.compile`` the lean rollout.
    :param cuda_graphs: replay captured CUDA graphs for gradient-free calls on CUDA.
    :param chunk: rows of a lean rollout run together (cache blocking on the CPU).
    """

    rollout: Literal["lean", "reference"] = "lean"
    precision: Literal["fp32", "bf16"] = "fp32"
    compile: bool = False
    cuda_graphs: bool = True
    chunk: int = 1024

    def __post_init__(self) -> None:
        if self.rollout not in ("lean", "reference"):
            raise ValueError(f"planner runtime: rollout must be 'lean' or 'reference', got {self.rollout!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"planner runtime: precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        if self.rollout == "reference" and (self.precision != "fp32" or self.compile):
            raise ValueError("planner runtime: the reference rollout is eager fp32 (precision fp32, compile false)")
        if self.chunk < 1:
            raise ValueError(f"planner runtime: chunk must be >= 1, got {self.chunk}")


#: the default runtime of controllers built without one
DEFAULT_RUNTIME = PlannerRuntime()

#: named runtimes for command-line flags (``evaluate.py --planner-runtime``, the benchmarks)
RUNTIME_PRESETS: dict[str, PlannerRuntime] = {
    "reference": PlannerRuntime(rollout="reference", cuda_graphs=False),
    "fp32": PlannerRuntime(precision="fp32"),
    "fp32-eager": PlannerRuntime(precision="fp32", cuda_graphs=False),  # the lean step without CUDA graphs
    "bf16": PlannerRuntime(precision="bf16"),
    "fp32-compile": PlannerRuntime(precision="fp32", compile=True),
    "bf16-compile": PlannerRuntime(precision="bf16", compile=True),
}


class _OperatorCount(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        if not func.is_view:
            self.count += 1
        return func(*args, **(kwargs or {}))


def count_operators(fn: Callable[[], Any]) -> int:
    """The operators that ``fn()`` dispatches when run eagerly, views excluded.

    On a GPU each is one kernel launch: the cost a planning call pays per step when it is launch-bound (a CUDA graph
    replays the same kernels, only with less overhead each). Deterministic, so it measures a GPU path's cost on a CPU.
    """
    counter = _OperatorCount()
    with counter:
        fn()
    return counter.count
