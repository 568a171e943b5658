"""The training layer: trainers, replay, metrics logging and run folders."""

from dcem_agents.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from dcem_agents.training.metrics import MetricsLogger
from dcem_agents.training.run_dir import make_run_dir, save_resolved_config

__all__ = ["CheckpointError", "MetricsLogger", "load_checkpoint", "save_checkpoint", "make_run_dir", "save_resolved_config"]
