"""Train an experiment from a YAML preset: ``python train.py --config configs/<preset>.yaml [--set key=value ...]``.

The preset's top-level key ``experiment`` selects the runner (see ``dcem_agents/experiments``). Every key is validated
before anything runs; the resolved config is saved in the run folder ``<runs>/<experiment>-<name>-seed<seed>-<time>/``.

Everything a run writes stays in its run folder. ``--publish`` also ships the finished run into the repository: the
files the preset names (``results_json``, ``export_checkpoint``, ``export_progress``, ``export_zip``, ...; see
:func:`dcem_agents.training.run_dir.publish_run`), which is how the README's reproduction commands update
``results/`` and ``checkpoints/``. A finished run is published afterwards with ``--run-dir THAT_RUN --publish``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from dcem_agents.config import ConfigError, apply_overrides, build, describe, load_yaml, to_dict
from dcem_agents.experiments import EXPERIMENTS, get_experiment
from dcem_agents.training import load_checkpoint, make_run_dir, save_resolved_config
from dcem_agents.training.run_dir import publish_run, publish_targets
from dcem_agents.training.planet import NonFiniteTrainingError
from dcem_agents.training.rollout import NonFiniteEnvironmentError

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "planet" / "cartpole_swingup_cpu.yaml"


#: config keys a resumed run may change: how long it runs, how it is evaluated and where results go, the machine
RESUME_SAFE_KEYS = frozenset({
    "train.total_env_steps", "total_timesteps", "env_steps", "num_threads", "device", "final_eval_episodes",
    "final_eval_seed", "results_json", "export_checkpoint", "export_progress", "export_zip", "results_path",
    "figures_dir", "eval_episodes", "eval_seed",
    "eval_every", "train.eval_every", "train.eval_episodes", "train.stop_return", "train.checkpoint_every",
    "checkpoint_every", "planner.precision", "planner.compile", "policy.precision", "policy.compile",
})


def changed_keys(old: object, new: object, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two resolved configs (keys the old one lacks are not counted)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [k for key in old if key in new
                for k in changed_keys(old[key], new[key], f"{prefix}.{key}" if prefix else str(key))]
    return [] if old == new else [prefix]


#: checkpoint config keys and the experiment of the checkpoint they must name
_CHECKPOINT_KEYS = {"phase1_checkpoint": "planet", "phase2_checkpoint": "dcem"}


def validate_inputs(cfg: object, check_checkpoints: bool = True, module: object = None) -> None:
    """Check what a config points to before a run folder exists: the environment (id, spaces), the checkpoints and
    the runner's own checks of them (its ``validate(cfg)``, if it has one).

    :raises Exception: the first problem found (the caller prints it as one line).
    """
    env_id = getattr(cfg, "env_id", None)
    if env_id is not None:
        from dcem_agents.envs import make_env

        make_env(env_id, action_repeat=getattr(cfg, "action_repeat", 1)).close()
    if check_checkpoints:
        for key, experiment in _CHECKPOINT_KEYS.items():
            path = getattr(cfg, key, None)
            if path is not None:
                load_checkpoint(path, experiment)
        if hasattr(module, "validate"):
            module.validate(cfg)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=f"YAML preset (default: {DEFAULT_CONFIG.name})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key, e.g. --set seed=3 --set model.hidden=64 (repeatable)")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help="parent folder of run folders (default: runs)")
    parser.add_argument("--run-dir", type=Path, default=None, help="exact run folder (to resume a run, or for tests)")
    parser.add_argument("--publish", action="store_true",
                        help="when the run ends, write its results and checkpoint where the preset says (results/, "
                             "checkpoints/); without it nothing outside the run folder changes")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    parser.add_argument("--help-config", action="store_true", help="list every key of the preset's experiment and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    try:
        raw = apply_overrides(load_yaml(args.config), args.overrides)
        name = raw.get("experiment")
        if name is None:
            raise ConfigError(f"{args.config}: missing key 'experiment'; known experiments: {', '.join(sorted(EXPERIMENTS))}")
        try:
            module = get_experiment(name)
        except ValueError as e:
            raise ConfigError(f"config key 'experiment': {e}") from e
        if args.help_config:
            print("\n".join(describe(module.Config)))
            return 0
        cfg = build(module.Config, raw)
    except ConfigError as e:
        print(f"train.py: config error: {e}", file=sys.stderr)
        return 2

    resuming = args.run_dir is not None and (args.run_dir / "checkpoint.pt").is_file()
    try:
        validate_inputs(cfg, check_checkpoints=not resuming, module=module)
    except Exception as e:  # noqa: BLE001 - one line for anything the inputs get wrong, before any folder exists
        if args.debug:
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"train.py: {first} (run with --debug for the traceback)", file=sys.stderr)
        return 2

    saved = args.run_dir / "config.yaml" if args.run_dir is not None else None
    if saved is not None and saved.is_file():  # a run folder used before: resume it with the same config
        import yaml

        changed = [k for k in changed_keys(yaml.safe_load(saved.read_text()) or {}, to_dict(cfg))
                   if k not in RESUME_SAFE_KEYS]
        if changed:
            print(f"train.py: {args.run_dir} was started with other values of {', '.join(changed)}; a resumed run keeps "
                  f"its config (only {', '.join(sorted(RESUME_SAFE_KEYS & {'train.total_env_steps', 'total_timesteps', 'env_steps'}))}, "
                  "evaluation, output and machine keys may change): start a new run folder instead", file=sys.stderr)
            return 2

    run_dir = args.run_dir or make_run_dir(args.runs_dir, name, getattr(cfg, "name", name), getattr(cfg, "seed", 0))
    run_dir.mkdir(parents=True, exist_ok=True)
    save_resolved_config(run_dir, to_dict(cfg))
    logging.getLogger("train").info("run folder: %s", run_dir)
    try:
        summary = module.train(cfg, run_dir)
    except (NonFiniteEnvironmentError, NonFiniteTrainingError) as e:  # the checkpoint before it is intact: nothing non-finite was stored
        print(f"train.py: {e}", file=sys.stderr)
        return 1
    print(json.dumps({"run_dir": str(run_dir), **(summary or {})}, indent=2, default=str))
    log = logging.getLogger("train")
    targets = publish_targets(cfg)
    if args.publish:
        written = publish_run(cfg, run_dir, summary or {})
        log.info("published: %s", ", ".join(map(str, written)) or "nothing (the preset names no destination)")
    elif targets:
        log.info("results are in %s (summary.json and the checkpoint); to ship them to %s, run again with "
                 "--run-dir %s --publish", run_dir, ", ".join(targets), run_dir)
    else:
        log.info("results are in %s", run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
