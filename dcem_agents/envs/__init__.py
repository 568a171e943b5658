"""Environment construction (Gymnasium, DeepMind Control through shimmy): the integration layer."""

from dcem_agents.envs.make import ActionRepeat, FlatFloatObservation, UnsupportedSpaceError, make_env, make_env_fn
from dcem_agents.envs.replayable import ReplayableEnv, make_replayable_env

__all__ = ["ActionRepeat", "FlatFloatObservation", "ReplayableEnv", "UnsupportedSpaceError", "make_env", "make_env_fn",
           "make_replayable_env"]
