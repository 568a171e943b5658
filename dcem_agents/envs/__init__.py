"""Environment construction (Gymnasium, DeepMind Control through shimmy): the integration layer."""

from dcem_agents.envs.make import ActionRepeat, FlatFloatObservation, UnsupportedSpaceError, make_env, make_env_fn

__all__ = ["ActionRepeat", "FlatFloatObservation", "UnsupportedSpaceError", "make_env", "make_env_fn"]
