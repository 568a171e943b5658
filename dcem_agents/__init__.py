"""dcem-agents: differentiable model-based control with the Differentiable Cross-Entropy Method.

The public core: :func:`lml` (soft top-k, eq. 4) and :func:`dcem` (alg. 1). Higher layers live in subpackages:
``models`` (world model, decoders), ``planning`` (controllers), ``training`` (trainers), ``envs`` and ``sb3``
(integrations; :class:`EmbeddedDCEMPolicy` is imported on first use), ``experiments`` (the runs behind ``train.py``
and ``evaluate.py``).
"""

from dcem_agents.math import LML, CEMIterate, ackley, dcem, hard_top_k, lml, rastrigin

__version__ = "0.1.0"

__all__ = ["CEMIterate", "EmbeddedDCEMPolicy", "LML", "__version__", "ackley", "dcem", "hard_top_k", "lml", "rastrigin"]


def __getattr__(name: str):
    """Import the SB3 integration lazily, so ``import dcem_agents`` does not pull in stable-baselines3."""
    if name == "EmbeddedDCEMPolicy":
        from dcem_agents.sb3.policy import EmbeddedDCEMPolicy

        return EmbeddedDCEMPolicy
    raise AttributeError(f"module 'dcem_agents' has no attribute {name!r}")
