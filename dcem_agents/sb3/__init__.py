"""Stable-Baselines3 integration: :class:`EmbeddedDCEMPolicy` and the belief-carrying VecEnv wrapper (phase 3)."""

from dcem_agents.sb3.belief_env import (SEED_RANGE, BeliefSyncCallback, BeliefVecEnv, find_belief_env, make_belief_vec_env,
                                        sync_belief_filter)
from dcem_agents.training.components import (DCEMComponents, architecture, components_from_architecture, load_components,
                                        resolve_components)
from dcem_agents.sb3.policy import COMPONENTS, EmbeddedDCEMPolicy

__all__ = ["COMPONENTS", "SEED_RANGE", "BeliefSyncCallback", "BeliefVecEnv", "DCEMComponents", "EmbeddedDCEMPolicy",
           "architecture", "components_from_architecture", "find_belief_env", "load_components", "make_belief_vec_env",
           "resolve_components", "sync_belief_filter"]
