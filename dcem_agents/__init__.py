"""dcem-agents: differentiable model-based control with the Differentiable Cross-Entropy Method.

The public core: :func:`lml` (soft top-k, eq. 4) and :func:`dcem` (alg. 1). Higher layers live in subpackages:
``models`` (world model, decoders), ``planning`` (controllers), ``training`` (trainers), ``experiments``
(the runs behind ``train.py`` and ``evaluate.py``).
"""

from dcem_agents.math import LML, CEMIterate, ackley, dcem, hard_top_k, lml, rastrigin

__version__ = "0.1.0"

__all__ = ["CEMIterate", "LML", "__version__", "ackley", "dcem", "hard_top_k", "lml", "rastrigin"]
