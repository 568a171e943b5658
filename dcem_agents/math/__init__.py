"""The mathematical layer: the LML soft top-k, (D)CEM and test functions. Depends on torch only."""

from dcem_agents.math.cem import BestSample, CEMIterate, check_cem_sizes, dcem, hard_top_k
from dcem_agents.math.lml import LML, lml
from dcem_agents.math.test_functions import ackley, rastrigin

__all__ = ["BestSample", "CEMIterate", "LML", "ackley", "check_cem_sizes", "dcem", "hard_top_k", "lml", "rastrigin"]
