"""Ray, where the package uses it: start or join a cluster, and run one function over many inputs as Ray tasks.

Ray is optional (``pip install -e ".[ray]"``) and imported only here, when a user asks for it (``--ray``): the seeds of
a sweep (:mod:`dcem_agents.training.sweep`) and the episode chunks of a comparison
(:mod:`dcem_agents.evaluation.compare`) run through :func:`ray_map`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["import_ray", "ray_map"]


def import_ray() -> Any:
    """The ``ray`` module; ``ImportError`` with the install command when the extra is missing."""
    try:
        import ray
    except ImportError as e:
        raise ImportError("--ray needs Ray: pip install -e \".[ray]\"") from e
    return ray


def ray_map(function: Callable[..., Any], inputs: Sequence[Any], on_result: Callable[[int, Any], None], *,
            address: str | None = None, num_cpus: float = 1, num_gpus: float = 0, max_retries: int = 3,
            runtime_env: dict[str, Any] | None = None, init_kwargs: dict[str, Any] | None = None) -> None:
    """Run ``function(x)`` for every ``x`` of ``inputs`` as a Ray task; call ``on_result(i, result)`` as each ends
    (in the order they end; a task that raised gives its exception as the result).

    :param address: an existing cluster (``"auto"``, ``"ray://host:10001"``) or None for a local Ray started here
        (unless this process has one already).
    :param num_cpus: CPUs each task asks for. :param num_gpus: GPUs each task asks for.
    :param max_retries: retries of a task whose worker process died.
    :param runtime_env: Ray's runtime environment (on a cluster: ``{"working_dir": <repository>}`` ships the code).
    :param init_kwargs: more arguments of ``ray.init`` (e.g. ``num_cpus`` of a local Ray).
    """
    ray = import_ray()
    if not ray.is_initialized():
        ray.init(address=address, runtime_env=runtime_env, **(init_kwargs or {}))
    remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=max_retries)(function)
    pending = {remote.remote(x): i for i, x in enumerate(inputs)}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        i = pending.pop(done[0])
        try:
            result = ray.get(done[0])
        except Exception as e:  # noqa: BLE001 - the caller decides what a failed task means
            result = e
        on_result(i, result)
