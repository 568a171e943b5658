"""Train an experiment from a YAML preset: ``python train.py --config configs/<preset>.yaml [--set key=value ...]``.

The preset's top-level key ``experiment`` selects the runner (see ``dcem_agents/experiments``). Every key is validated
before anything runs; the resolved config is saved in the run folder ``<runs>/<experiment>-<name>-seed<seed>-<time>/``.

Everything a run writes stays in its run folder. ``--publish`` also ships the finished run into the repository: the
files the preset names (``results_json``, ``export_checkpoint``, ``export_progress``, ``export_zip``, ...; see
:func:`dcem_agents.training.run_dir.publish_run`), which is how the README's reproduction commands update
``results/`` and ``checkpoints/``. A finished run is published afterwards with ``--run-dir THAT_RUN --publish``.

``--seeds 0 1 2 3 4`` runs one ordinary run folder per seed under a sweep folder
``<runs>/<experiment>-<name>-sweep-<time>/seed<k>/`` (:mod:`dcem_agents.training.sweep`): ``--workers N`` seeds at
once on this machine, or each seed a Ray task with ``--ray`` (a local Ray) or ``--ray ADDRESS`` (a cluster). The same
command with ``--sweep-dir THAT_SWEEP`` resumes the seeds that had not finished; ``evaluate.py --sweep`` aggregates them.

``--study configs/studies/X.yaml`` runs the arms of a study (a base preset, each arm with its own overrides) into
one study folder ``<runs>/study-<name>-<time>/<arm>/`` (:mod:`dcem_agents.training.study`), ``--workers N`` arms at
once; ``--study-dir THAT_STUDY`` resumes the arms that had not finished; ``evaluate.py --study`` compares them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
from pathlib import Path

from dcem_agents.config import ConfigError, apply_overrides, build, describe, load_yaml, parse_yaml, put_seed, to_dict
from dcem_agents.experiments import EXPERIMENTS, get_experiment
from dcem_agents.training import CheckpointError, load_checkpoint, make_run_dir, save_resolved_config
from dcem_agents.training.checkpoint import error_line
from dcem_agents.training.device import resolve_device
from dcem_agents.training.run_dir import RunDirInUseError, lock_run_dir, publish_run, publish_targets
from dcem_agents.training.planet import NonFiniteTrainingError
from dcem_agents.training.rollout import NonFiniteEnvironmentError

ROOT = Path(__file__).resolve().parent
DEFAULT_CONFIG = ROOT / "configs" / "planet" / "cartpole_swingup_cpu.yaml"


#: config keys a resumed run may change: how long it runs, how it is evaluated and where results go, the machine
RESUME_SAFE_KEYS = frozenset({
    "train.total_env_steps", "total_timesteps", "env_steps", "num_threads", "device", "final_eval_episodes",
    "final_eval_seed", "results_json", "export_checkpoint", "export_slim", "export_progress", "export_zip",
    "results_path", "figures_dir", "eval_episodes", "eval_seed",
    "eval_every", "train.eval_every", "train.eval_episodes", "train.stop_return", "train.checkpoint_every",
    "checkpoint_every", "planner.precision", "planner.compile", "policy.precision", "policy.compile",
})


def saved_config(run_dir: Path) -> dict | str | None:
    """The config a run folder was started with: the one inside its ``checkpoint.pt`` (what the run really holds,
    loaded without unpickling code), else its ``config.yaml``; None for a folder never used; a message (str) for a
    folder whose record cannot be read."""
    ckpt = run_dir / "checkpoint.pt"
    if ckpt.is_file():
        try:
            stored = load_checkpoint(ckpt).get("config")
        except Exception as e:  # noqa: BLE001 - any unreadable checkpoint: one line
            return f"{ckpt} cannot be resumed: {error_line(e)}"
        if isinstance(stored, dict):
            return stored
    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    try:
        data = parse_yaml(path.read_text(encoding="utf-8"), str(path))
    except (ConfigError, OSError, UnicodeDecodeError) as e:
        return f"{path} cannot be read ({e}); it records how the run was started: restore it or use a new run folder"
    if data is None:
        return None  # an empty record of a run with no checkpoint: nothing to resume
    if not isinstance(data, dict):
        return f"{path} is not a mapping of config keys; restore it or use a new run folder"
    return data


def changed_keys(old: object, new: object, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two resolved configs (keys the old one lacks are not counted)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [k for key in old if key in new
                for k in changed_keys(old[key], new[key], f"{prefix}.{key}" if prefix else str(key))]
    return [] if old == new else [prefix]


#: the budget keys of the experiments (how long a run trains); a resumed run may raise them, or lower them to a point
#: it has not reached yet
BUDGET_KEYS = ("train.total_env_steps", "total_timesteps", "env_steps")


def _dotted(tree: object, key: str) -> object:
    for part in key.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


def budget_passed(saved: dict, cfg: object, module: object, run_dir: Path) -> str | None:
    """A message when a resumed run's budget was lowered below what its checkpoint has already trained (it would
    otherwise stop at once and report the longer run under the shorter budget); None when the budget is fine."""
    new = to_dict(cfg)
    for key in BUDGET_KEYS:
        old_budget, new_budget = _dotted(saved, key), _dotted(new, key)
        if not (isinstance(old_budget, int) and isinstance(new_budget, int) and new_budget < old_budget):
            continue
        done = module.progress(cfg, run_dir) if hasattr(module, "progress") else None
        if done is not None and done > new_budget:
            return (f"{run_dir} has trained {done:,} steps already, past the new {key}={new_budget:,} (it was started "
                    f"with {old_budget:,}): a run cannot go back; evaluate its checkpoint, or start a new run folder")
    return None


#: checkpoint config keys and the experiment of the checkpoint they must name
_CHECKPOINT_KEYS = {"phase1_checkpoint": "planet", "phase2_checkpoint": "dcem"}


def validate_inputs(cfg: object, check_checkpoints: bool = True, module: object = None) -> None:
    """Check what a config points to before a run folder exists: the environment (id, spaces), the checkpoints and
    the runner's own checks of them (its ``validate(cfg)``, if it has one).

    :raises Exception: the first problem found (the caller prints it as one line).
    """
    seed = getattr(cfg, "seed", 0)
    if not 0 <= seed < 2**63:
        raise ValueError(f"seed must be an integer in [0, 2**63), got {seed}")
    run_name = getattr(cfg, "name", "")
    if "/" in run_name or "\\" in run_name or run_name in (".", ".."):
        raise ValueError(f"name {run_name!r} names the run folder and must not contain a path separator or be . or ..")
    resolve_device(str(getattr(cfg, "device", "cpu")))  # a GPU the machine does not have: refused now
    env_id = getattr(cfg, "env_id", None)
    if env_id is not None:
        from dcem_agents.envs import make_env

        env = make_env(env_id, action_repeat=getattr(cfg, "action_repeat", 1))
        try:  # a task that cannot even reset here (no rendering context, a missing asset) fails before any folder
            env.reset(seed=0)
        finally:
            env.close()
    if check_checkpoints:
        for key, experiment in _CHECKPOINT_KEYS.items():
            path = getattr(cfg, key, None)
            if path is not None:
                load_checkpoint(path, experiment)
        if hasattr(module, "validate"):
            module.validate(cfg)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=None,
                        help=f"YAML preset (default: {DEFAULT_CONFIG.name}, or the config.yaml of the --sweep-dir or "
                             "--run-dir being resumed)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key, e.g. --set seed=3 --set model.hidden=64 (repeatable)")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help="parent folder of run folders (default: runs)")
    parser.add_argument("--run-dir", type=Path, default=None, help="exact run folder (to resume a run, or for tests)")
    parser.add_argument("--publish", action="store_true",
                        help="when the run ends, write its results and checkpoint where the preset says (results/, "
                             "checkpoints/); without it nothing outside the run folder changes")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    parser.add_argument("--help-config", action="store_true", help="list every key of the preset's experiment and exit")
    sweep = parser.add_argument_group("several seeds (a sweep folder with one run folder per seed)")
    sweep.add_argument("--seeds", type=int, nargs="+", metavar="SEED", help="run the preset once per seed")
    sweep.add_argument("--workers", type=int, default=None, metavar="N",
                       help="seeds at once (default: 1 here; with a local Ray, as many as its CPUs allow)")
    sweep.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                       help="each seed a Ray task: a local Ray, or the cluster at ADDRESS (e.g. auto or "
                            "ray://host:10001; the sweep folder must be on storage every node mounts). Needs "
                            "pip install -e '.[ray]'")
    sweep.add_argument("--sweep-dir", type=Path, default=None,
                       help="resume this sweep folder: the seeds not finished continue from their checkpoints")
    study = parser.add_argument_group("a study (arms of one preset, each with its own overrides)")
    study.add_argument("--study", type=Path, default=None, metavar="FILE",
                       help="run every arm of this study file (configs/studies/); --workers arms at once")
    study.add_argument("--study-dir", type=Path, default=None,
                       help="resume this study folder: the arms not finished continue from their checkpoints")
    args = parser.parse_args(argv)
    if args.study is not None or args.study_dir is not None:
        if args.config or args.overrides or args.seeds or args.sweep_dir or args.run_dir or args.publish or args.ray \
                or args.help_config:
            parser.error("--study/--study-dir run a study file's arms: --config, --set, --seeds, --sweep-dir, "
                         "--run-dir, --publish, --ray and --help-config do not apply")
        if args.study is not None and args.study_dir is not None:
            parser.error("--study FILE starts a study, --study-dir DIR resumes one (from the file it holds): give one")
        if args.workers is not None and args.workers < 1:
            parser.error(f"--workers must be >= 1, got {args.workers}")
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return run_study(args)
    if args.sweep_dir is not None and not (args.sweep_dir / "sweep.json").is_file():
        print(f"train.py: not a sweep folder (no sweep.json): {args.sweep_dir}", file=sys.stderr)
        return 2
    if args.config is None:  # a sweep or run folder to resume carries its own config
        if args.sweep_dir is not None:
            args.config = args.sweep_dir / "config.yaml"
        elif args.run_dir is not None and (args.run_dir / "config.yaml").is_file():
            args.config = args.run_dir / "config.yaml"
        else:
            args.config = DEFAULT_CONFIG
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    if (args.seeds is not None or args.sweep_dir is not None) and (args.run_dir is not None or args.publish):
        parser.error("--seeds/--sweep-dir run a sweep folder: --run-dir and --publish are for one run")
    if (args.workers is not None or args.ray is not None) and args.seeds is None and args.sweep_dir is None:
        parser.error("--workers and --ray need --seeds (or --sweep-dir)")
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

    sweeping = args.seeds is not None or args.sweep_dir is not None
    try:  # "{seed}" in a string value becomes the run's seed; a sweep keeps it and each seed's run puts its own
        templated = put_seed(raw, 0) != raw
        per_seed = [build(module.Config, put_seed({**raw, "seed": s}, s)) for s in sweep_seeds(args)] \
            if sweeping and templated else []
        if not sweeping:
            cfg = build(module.Config, put_seed(raw, cfg.seed))
    except ConfigError as e:
        print(f"train.py: config error: {e}", file=sys.stderr)
        return 2
    resuming = args.run_dir is not None and (args.run_dir / "checkpoint.pt").is_file()
    try:
        for checked in per_seed or [cfg]:
            validate_inputs(checked, check_checkpoints=not resuming, module=module)
    except Exception as e:  # noqa: BLE001 - one line for anything the inputs get wrong, before any folder exists
        if args.debug:
            raise
        first = error_line(e)
        print(f"train.py: {first} (run with --debug for the traceback)", file=sys.stderr)
        return 2

    if sweeping:
        return run_sweep(args, cfg)

    saved = None if args.run_dir is None else saved_config(args.run_dir)
    if isinstance(saved, str):
        print(f"train.py: {saved}", file=sys.stderr)
        return 2
    if saved is not None:  # a run folder used before: resume it with the same config
        changed = [k for k in changed_keys(saved, to_dict(cfg)) if k not in RESUME_SAFE_KEYS]
        if changed:
            print(f"train.py: {args.run_dir} was started with other values of {', '.join(changed)}; a resumed run keeps "
                  f"its config (only {', '.join(sorted(RESUME_SAFE_KEYS & set(BUDGET_KEYS)))}, "
                  "evaluation, output and machine keys may change): start a new run folder instead", file=sys.stderr)
            return 2
        passed = budget_passed(saved, cfg, module, args.run_dir)
        if passed is not None:
            print(f"train.py: {passed}", file=sys.stderr)
            return 2

    run_dir = args.run_dir or make_run_dir(args.runs_dir, name, getattr(cfg, "name", name), getattr(cfg, "seed", 0))
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        lock = lock_run_dir(run_dir)
    except RunDirInUseError as e:
        print(f"train.py: {e}", file=sys.stderr)
        return 2
    try:  # the lock is held until the run ends
        save_resolved_config(run_dir, to_dict(cfg))
        logging.getLogger("train").info("run folder: %s", run_dir)
        try:
            summary = module.train(cfg, run_dir)
        except (NonFiniteEnvironmentError, NonFiniteTrainingError) as e:  # the checkpoint before it is intact: nothing non-finite was stored
            print(f"train.py: {e}", file=sys.stderr)
            return 1
        except CheckpointError as e:  # a run folder whose checkpoints cannot be resumed
            print(f"train.py: {e}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:  # Ctrl-C: the last checkpoint is intact (every write is atomic)
            print(f"train.py: interrupted; resume from the last checkpoint with the same command and --run-dir {run_dir}",
                  file=sys.stderr)
            return 130
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
    finally:
        lock.close()


def sweep_seeds(args: argparse.Namespace) -> list[int]:
    """The seeds a sweep runs: ``--seeds``, else those of ``--sweep-dir``'s manifest (read again by :func:`run_sweep`,
    which reports a damaged one)."""
    if args.seeds is not None:
        return list(dict.fromkeys(args.seeds))
    try:
        from dcem_agents.training.sweep import SweepState

        return SweepState.load(args.sweep_dir).seeds
    except (FileNotFoundError, ValueError):
        return []


def run_sweep(args: argparse.Namespace, cfg: object) -> int:
    """``--seeds`` / ``--sweep-dir``: create or resume the sweep folder and run its unfinished seeds (module doc)."""
    from tqdm.auto import tqdm

    from dcem_agents.training.sweep import SeedTask, SweepState, create_sweep, run_local, run_ray, seed_dir

    log = logging.getLogger("train")
    if args.ray is not None and importlib.util.find_spec("ray") is None:  # before any folder exists
        print("train.py: --ray needs Ray: pip install -e \".[ray]\"", file=sys.stderr)
        return 2
    resolved = to_dict(cfg)
    resolved.pop("seed", None)
    if args.sweep_dir is not None:
        try:
            state = SweepState.load(args.sweep_dir)
        except (FileNotFoundError, ValueError) as e:
            print(f"train.py: {e}", file=sys.stderr)
            return 2
        changed = [k for k in changed_keys(state.config, resolved) if k not in RESUME_SAFE_KEYS]
        if changed:
            print(f"train.py: {args.sweep_dir} was started with other values of {', '.join(changed)}: a resumed sweep "
                  "keeps its config", file=sys.stderr)
            return 2
        if args.seeds is not None and sorted(set(args.seeds)) != sorted(state.seeds):
            print(f"train.py: {args.sweep_dir} runs seeds {' '.join(map(str, state.seeds))}, not "
                  f"{' '.join(map(str, args.seeds))}", file=sys.stderr)
            return 2
        state.config = resolved  # only keys a resumed run may change can differ
        sweep_dir = args.sweep_dir.resolve()
        state.save(sweep_dir)
    else:
        state = SweepState(resolved["experiment"], str(resolved.get("name", resolved["experiment"])), sweep_seeds(args),
                           resolved)
        sweep_dir = create_sweep(args.runs_dir, state).resolve()
    config = save_resolved_config(sweep_dir, {**resolved, "seed": state.seeds[0]})
    log.info("sweep folder: %s", sweep_dir)
    if getattr(cfg, "num_threads", 1) == 0 and (args.workers or 1) > 1:
        log.warning("num_threads is 0 (torch's default: every core) for each of %d seeds at once; they will slow each "
                    "other down: --set num_threads=1", args.workers)
    on_cluster = args.ray not in (None, "local")
    tasks = [SeedTask(seed, ("train.py", "--config", str(config), "--run-dir", str(seed_dir(sweep_dir, seed)),
                             "--set", f"seed={seed}"),
                      None if on_cluster else str(ROOT), str(seed_dir(sweep_dir, seed) / "train.log"))
             for seed in state.pending()]
    bar = tqdm(total=len(state.seeds), initial=len(state.seeds) - len(tasks), desc="sweep", unit="seed")

    def done(seed: int, code: int, seconds: float) -> None:
        state.states[seed] = {"state": "finished" if code == 0 else "failed", "returncode": code,
                              "seconds": round(seconds, 1)}
        state.save(sweep_dir)
        bar.update(1)
        log.info("seed %d %s after %.0f s (%s)", seed, state.states[seed]["state"], seconds,
                 seed_dir(sweep_dir, seed) / "train.log")

    try:
        if args.ray is None:
            run_local(tasks, args.workers or 1, done)
        else:
            cpus = max(1, getattr(cfg, "num_threads", 0) or 1)
            gpus = 1 if str(getattr(cfg, "device", "cpu")).startswith("cuda") else 0
            run_ray(tasks, done, address=None if not on_cluster else args.ray, num_cpus=cpus, num_gpus=gpus,
                    runtime_env={"working_dir": str(ROOT), "excludes": ["runs/", ".git/"]} if on_cluster else None,
                    init_kwargs={"num_cpus": args.workers * cpus} if not on_cluster and args.workers else None)
    except ImportError as e:
        print(f"train.py: {e}", file=sys.stderr)
        return 2
    finally:
        bar.close()
    print(json.dumps({"sweep_dir": str(sweep_dir), "seeds": {str(k): v for k, v in sorted(state.states.items())}},
                     indent=2))
    unfinished = state.pending()
    if unfinished:
        print(f"train.py: seeds {' '.join(map(str, unfinished))} did not finish (see their train.log); the same "
              f"command with --sweep-dir {sweep_dir} resumes them", file=sys.stderr)
        return 1
    log.info("every seed finished; aggregate them with: python evaluate.py --sweep %s", sweep_dir)
    return 0


def run_study(args: argparse.Namespace) -> int:
    """``--study`` / ``--study-dir``: validate every arm, create or resume the study folder, run the arms not finished
    (see :mod:`dcem_agents.training.study`)."""
    from tqdm.auto import tqdm

    from dcem_agents.training.study import (arm_config, create_study, load_study, read_states, write_arm_config,
                                            write_states)
    from dcem_agents.training.sweep import SeedTask, run_local

    log = logging.getLogger("train")
    if args.study_dir is not None and not (args.study_dir / "study.yaml").is_file():
        print(f"train.py: not a study folder (no study.yaml): {args.study_dir}", file=sys.stderr)
        return 2
    study_file = args.study if args.study is not None else args.study_dir / "study.yaml"
    try:
        study = load_study(study_file)
    except ConfigError as e:
        print(f"train.py: study error: {e}", file=sys.stderr)
        return 2
    resolved: dict[str, dict] = {}
    for arm in study.arms:  # every arm's inputs, before any folder exists
        try:
            raw = arm_config(study, arm)
            module = get_experiment(str(raw.get("experiment")))
            cfg = build(module.Config, raw)
            validate_inputs(cfg, check_checkpoints=True, module=module)
            resolved[arm] = to_dict(cfg)
        except Exception as e:  # noqa: BLE001 - one line for anything an arm gets wrong
            if args.debug:
                raise
            first = error_line(e)
            print(f"train.py: {study_file}: arm {arm!r}: {first}", file=sys.stderr)
            return 2
    try:
        study_dir = (args.study_dir or create_study(args.runs_dir, study_file, study)).resolve()
        states = read_states(study_dir)
    except ValueError as e:
        print(f"train.py: {e}", file=sys.stderr)
        return 2
    log.info("study folder: %s", study_dir)
    pending = [arm for arm in study.arms if states.get(arm, {}).get("state") != "finished"]
    tasks = [SeedTask(i, ("train.py", "--config", str(write_arm_config(study_dir, arm, resolved[arm])), "--run-dir",
                          str(study_dir / arm)), str(ROOT), str(study_dir / arm / "train.log"))
             for i, arm in enumerate(pending)]
    bar = tqdm(total=len(study.arms), initial=len(study.arms) - len(tasks), desc="study", unit="arm")

    def done(i: int, code: int, seconds: float) -> None:
        arm = pending[i]
        states[arm] = {"state": "finished" if code == 0 else "failed", "returncode": code, "seconds": round(seconds, 1)}
        write_states(study_dir, states)
        bar.update(1)
        log.info("arm %s %s after %.0f s (%s)", arm, states[arm]["state"], seconds, study_dir / arm / "train.log")

    try:
        run_local(tasks, args.workers or 1, done)
    finally:
        bar.close()
    print(json.dumps({"study_dir": str(study_dir), "arms": states}, indent=2))
    unfinished = [arm for arm in study.arms if states.get(arm, {}).get("state") != "finished"]
    if unfinished:
        print(f"train.py: arms {' '.join(unfinished)} did not finish (see their train.log); --study-dir {study_dir} "
              "resumes them", file=sys.stderr)
        return 1
    log.info("every arm finished; compare them with: python evaluate.py --study %s", study_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
