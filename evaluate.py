"""Evaluate a checkpoint: ``python evaluate.py --checkpoint PATH [--controller NAME] [--episodes N] [--seed S] [--out FILE.json]``.

Everything about the run (experiment, environment, sizes) is read from the checkpoint; the flags only choose what
to evaluate and how often.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from dcem_agents.experiments import EvalOptions, get_experiment
from dcem_agents.training import CheckpointError, load_checkpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="checkpoint file written by train.py")
    parser.add_argument("--controller", default=None, help="controller to evaluate (default: the checkpoint's own)")
    parser.add_argument("--episodes", type=int, default=100, help="episodes / initial states (default: 100)")
    parser.add_argument("--seed", type=int, default=0, help="base seed of the evaluation (default: 0)")
    parser.add_argument("--out", type=Path, default=None, help="JSON output (default: the experiment's results file)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.episodes < 1:
        parser.error("--episodes must be >= 1")

    try:
        checkpoint = load_checkpoint(args.checkpoint)
        module = get_experiment(checkpoint["experiment"])
    except (CheckpointError, ValueError) as e:
        print(f"evaluate.py: {e}", file=sys.stderr)
        return 2
    if not hasattr(module, "evaluate"):
        print(f"evaluate.py: experiment {checkpoint['experiment']!r} has no evaluation", file=sys.stderr)
        return 2
    options = EvalOptions(args.controller, args.episodes, args.seed, args.out, args.device)
    try:
        result = module.evaluate(checkpoint, options)
    except ValueError as e:  # e.g. a controller the checkpoint cannot provide
        print(f"evaluate.py: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
