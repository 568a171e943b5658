"""Evaluate checkpoints.

Compare controllers on the same test episodes (paper fig. 4), one ``--entry`` per controller::

    python evaluate.py --entry PATH[:CONTROLLER[+RUNTIME][(KEY=VALUE,...)]][@LABEL] [--entry ...] [--episodes 100] [--seed S]
                       [--n-envs 10] [--out PREFIX] [--video] [--device D] [--planner-runtime NAME] [--threads N]
                       [--extend] [--independent-batches | --ray [ADDRESS] [--workers N]]

A killed comparison resumes when the same command runs again: the batches it finished are kept, per entry, in
PREFIX.evaluated.pt, so only the rest is evaluated, with the same results; entries may be added, removed or relabelled
before it runs again, and those it still names keep their finished episodes. The file stays after the report is
written; a later run evaluates afresh unless --extend reuses it (add a row to a finished report: only the new row is
played).

writes PREFIX.json (statistics per entry), PREFIX.md (table), PREFIX.png (box plot), PREFIX_episodes.csv and with
--video one PREFIX_video_<label>.gif (.mp4 with imageio-ffmpeg) per entry. PATH is a planet (controller cem), dcem
(dcem, latent-cem: hard elites in the latent space, cem), ppo (ppo, dcem) checkpoint, an SB3 model zip of
EmbeddedDCEMPolicy (ppo), or any other SB3 model zip (policy: a model-free baseline on the environment's observations,
e.g. from configs/baselines/); the first controller is the default. RUNTIME (or --planner-runtime for every entry)
sets how a planner computes: reference (eager fp32, the path of every result before the lean rollout), fp32, bf16,
fp32-compile, bf16-compile, fp32-eager (fp32 without CUDA graphs); the same checkpoint under two runtimes on the same seeds is the fidelity check. The bracket sets
a planner's search: n_samples, n_elites, n_iters, init_std and reuse_plan=true|false (the previous step's executed
plan, shifted, competes with the new one) for the latent planners, temperature for dcem, warm_start=true|false
(start each step from the previous plan shifted, as trained, or afresh) and horizon for cem, execute_best=true|false
(act on the best sequence the search evaluated, not its final mean) for every planner, e.g.
"dcem.pt:dcem(n_samples=15,n_elites=3,n_iters=10)@15 x 10" (quote it in a shell): one checkpoint's budget spent
differently, compared on the same seeds. A zip that does not record its environment runs on that of the checkpoint
entries.

The learning curve of a PPO run (phase 3): its saved SB3 checkpoints, compared on the same episodes, each paired with
step 0 (the same policy with the phase-2 weights); the other --entry flags apply::

    python evaluate.py --ppo-curve RUN_DIR [--steps 0 5120 10240 ...] [--episodes 100] [--seed S] [--out PREFIX]

writes the comparison files, PREFIX.png being the curve (mean with 95 % CI, and the paired gain over step 0 with its
95 % CI). Default steps: 0, the first checkpoints at or after 5k, 10k, 25k and 50k, and the newest.

The arms of a study (``train.py --study``), each arm's final checkpoint on the same episodes; in a study of PPO arms
the first entry is the controller they started from, so each arm's paired difference is its gain::

    python evaluate.py --study STUDY_DIR [--episodes N] [--seed S] [--out PREFIX]

(default episodes, seed and PREFIX: the study file's ``evaluation`` section.)

The plan gap of a checkpoint's planners (model exploitation): the first entry runs --episodes episodes (default 10),
--states of their steps are drawn (default 100), every entry plans once from each, and each whole plan is scored by
the world model and executed open-loop in the environment from the same state (entries: planners of one checkpoint)::

    python evaluate.py --plan-gap --entry PATH:dcem --entry "PATH:cem(n_samples=50,n_elites=5,n_iters=3)" [--episodes E]
                       [--states S] [--seed SEED] [--out PREFIX]

writes PREFIX.json, PREFIX.md (predicted and real returns, the over-estimate, paired real differences) and PREFIX.png
(predicted against real, per planner); default PREFIX results/plan_gap. See :mod:`dcem_agents.evaluation.plan_gap`.

One checkpoint with its experiment's own evaluation (JSON)::

    python evaluate.py --checkpoint PATH [--controller NAME] [--episodes N] [--seed S] [--out FILE.json]

Everything about the run (experiment, environment, action repeat, sizes) is read from the checkpoints; the flags
only choose what to evaluate and how often. Without ``--out`` the JSON goes beside the checkpoint
(``<its name>_eval.json``), never into ``results/``.

Aggregate the seeds of sweeps (``train.py --seeds``; Agarwal et al. 2021, with rliable)::

    python evaluate.py --sweep SWEEP_DIR [--sweep ANOTHER ...] [--out PREFIX] [--max-return R] [--threshold R]

writes PREFIX.json, PREFIX.md and PREFIX.png (default PREFIX: <first sweep>/<name>_seeds): learning curves (mean over
seeds, 95 % CI band), the final return's IQM, mean, median and optimality gap with stratified bootstrap CIs, and
P(X > Y) between sweeps. See :mod:`dcem_agents.evaluation.seeds`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from pathlib import Path

from dcem_agents.experiments import EvalOptions, get_experiment
from dcem_agents.planning.runtime import RUNTIME_PRESETS
from dcem_agents.training import CheckpointError, load_checkpoint


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--entry", action="append", metavar="PATH[:CONTROLLER[+RUNTIME][(KEY=VALUE,...)]][@LABEL]",
                      help="a checkpoint (or SB3 zip) and controller to compare; repeat for each entry")
    what.add_argument("--checkpoint", type=Path, help="one checkpoint, evaluated by its experiment")
    what.add_argument("--sweep", type=Path, action="append", metavar="SWEEP_DIR",
                      help="aggregate the seeds of a sweep folder (train.py --seeds); repeat to compare sweeps")
    what.add_argument("--study", type=Path, metavar="STUDY_DIR",
                      help="compare the finished arms of a study folder (train.py --study) on the same episodes")
    what.add_argument("--ppo-curve", type=Path, metavar="RUN_DIR",
                      help="the learning curve of a ppo run folder: its SB3 checkpoints on the same episodes")
    p.add_argument("--steps", type=int, nargs="+", default=None, metavar="S",
                   help="with --ppo-curve: the PPO agent steps to evaluate (0 or saved checkpoints; default: 0, the "
                        "first at or after 5k, 10k, 25k, 50k, and the newest)")
    p.add_argument("--plan-gap", action="store_true",
                   help="with --entry (planners of one checkpoint): the model's predicted return of each planner's "
                        "plans against their open-loop return in the environment, from the same states")
    p.add_argument("--states", type=int, default=None,
                   help="with --plan-gap: states drawn from the first entry's episodes (default: 100)")
    p.add_argument("--max-return", type=float, default=None,
                   help="with --sweep: best possible return, for the optimality gap (default: 1000 on DeepMind Control)")
    p.add_argument("--threshold", type=float, default=None,
                   help="with --sweep: also report the share of seeds reaching this return and the median steps to it")
    p.add_argument("--controller", default=None,
                   help="with --checkpoint: controller(s) (default: the checkpoint's own)")
    p.add_argument("--episodes", type=int, default=None,
                   help="episodes per entry / initial states (default: 100; with --study, the study file's)")
    p.add_argument("--seed", type=int, default=None,
                   help="environment seed of the first episode; episode i uses seed + i (default: 4000000 with "
                        "--entry, apart from training's seeds; 0 with --checkpoint)")
    p.add_argument("--out", type=Path, default=None,
                   help="with --entry: output prefix (default: results/comparison; with --ppo-curve: RUN_DIR/ppo_curve); "
                        "with --checkpoint: the JSON file (default: beside the checkpoint, <its name>_eval.json)")
    p.add_argument("--n-envs", type=int, default=None, help="with --entry: parallel environments (default: 10)")
    p.add_argument("--video", action="store_true", help="with --entry: record one episode per entry (GIF or MP4)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.add_argument("--planner-runtime", default=None, choices=sorted(RUNTIME_PRESETS),
                   help="with --entry: how every planner computes, unless an entry names its own (default: each "
                        "checkpoint's)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--independent-batches", action="store_true",
                   help="with --entry: each batch of --n-envs episodes draws its planner noise from its own generator "
                        "(seeded with its first episode's seed), as --ray does; without it one generator per entry")
    p.add_argument("--extend", action="store_true",
                   help="with --entry, --study or --ppo-curve: reuse the episodes a finished report at --out kept (in "
                        "PREFIX.evaluated.pt, same episodes, seed, --n-envs and runtime) for the entries still named, "
                        "and evaluate only the others")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="with --entry: run the batches of episodes as Ray tasks, on a local Ray or the cluster at "
                        "ADDRESS (checkpoint paths must be readable on every node); implies --independent-batches")
    p.add_argument("--workers", type=int, default=None,
                   help="with --entry --ray (local): the local Ray's CPUs, one batch on each (default: all)")
    return p


def _single(args: argparse.Namespace) -> int:
    """The experiment's own evaluation of one checkpoint."""
    from dcem_agents.evaluation.entries import is_sb3_zip

    if args.checkpoint.is_file() and is_sb3_zip(args.checkpoint):
        print(f"evaluate.py: {args.checkpoint} is an SB3 model zip, not a checkpoint: evaluate it with "
              f"--entry {args.checkpoint}", file=sys.stderr)
        return 2
    try:
        checkpoint = load_checkpoint(args.checkpoint)
        module = get_experiment(checkpoint["experiment"])
    except (CheckpointError, ValueError) as e:
        print(f"evaluate.py: {e}", file=sys.stderr)
        return 2
    if not hasattr(module, "evaluate"):
        print(f"evaluate.py: experiment {checkpoint['experiment']!r} has no evaluation", file=sys.stderr)
        return 2
    if args.out is not None and args.out.is_dir():  # checked now, not after the evaluation has run
        print(f"evaluate.py: --out {args.out} is a folder; with --checkpoint it names the JSON file to write "
              f"(e.g. {args.out / 'eval.json'})", file=sys.stderr)
        return 2
    seed = 0 if args.seed is None else args.seed
    # next to the checkpoint unless --out says where: never over a shipped result by accident
    out = args.out or args.checkpoint.with_name(f"{args.checkpoint.stem}_eval.json")
    options = EvalOptions(args.controller, args.episodes or 100, seed, out, args.device)
    try:
        result = module.evaluate(checkpoint, options)
    except ValueError as e:  # e.g. a controller the checkpoint cannot provide
        print(f"evaluate.py: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, default=str))
    print(f"evaluate.py: wrote {out}", file=sys.stderr)
    return 0


def _sweeps(args: argparse.Namespace) -> int:
    """The across-seed report of ``--sweep`` ... (see :mod:`dcem_agents.evaluation.seeds`)."""
    from dcem_agents.evaluation.seeds import aggregate_sweeps, read_sweep, write_seeds_report

    logging.getLogger("absl").setLevel(logging.WARNING)  # rliable logs every estimate at INFO
    try:
        sweeps = [read_sweep(path) for path in args.sweep]
        report = aggregate_sweeps(sweeps, max_return=args.max_return, threshold=args.threshold)
    except (FileNotFoundError, ValueError, ImportError) as e:
        print(f"evaluate.py: {e}", file=sys.stderr)
        return 2
    for sweep in sweeps:
        if sweep.unfinished:
            logging.getLogger("evaluate").warning("%s: seeds %s have not finished and are left out", sweep.path,
                                                  " ".join(map(str, sweep.unfinished)))
    out = args.out or sweeps[0].path / f"{sweeps[0].name}_seeds"
    if out.suffix in (".json", ".md", ".png"):
        out = out.with_suffix("")
    paths = write_seeds_report(report, out)
    print(paths["md"].read_text())
    print("wrote " + ", ".join(map(str, paths.values())))
    return 0


def _prefix(out: Path) -> Path:
    """A report's output prefix: ``--out`` without the suffix of one of its files (``x.json`` -> ``x``)."""
    return out.with_suffix("") if out.suffix in (".json", ".md", ".png", ".csv") else out


def _compare(args: argparse.Namespace, argv: list[str]) -> int:
    """The comparison report of ``--entry`` ... (see :mod:`dcem_agents.evaluation.compare`)."""
    if args.video:
        os.environ.setdefault("MUJOCO_GL", "egl")  # before MuJoCo is first imported
    from dcem_agents.evaluation.compare import DEFAULT_SEED, compare
    from dcem_agents.evaluation.entries import parse_entry
    from dcem_agents.evaluation.video import RenderError
    from dcem_agents.training.device import resolve_device

    from dcem_agents.evaluation.ppo_curve import curve_annotation, curve_specs
    from dcem_agents.evaluation.study import study_annotation, study_specs

    default = Path("results/comparison") if args.ppo_curve is None else args.ppo_curve / "ppo_curve"
    episodes, seed, n_envs = args.episodes or 100, DEFAULT_SEED if args.seed is None else args.seed, args.n_envs or 10
    try:
        annotate = None
        if args.ppo_curve is not None:
            specs, steps = curve_specs(args.ppo_curve, args.steps)
            annotate = curve_annotation(steps)
        elif args.study is not None:
            specs, study, left_out = study_specs(args.study)
            if left_out:
                logging.getLogger("evaluate").warning("arms %s have not finished and are left out", " ".join(left_out))
            annotate = study_annotation(study)
            ev = study.evaluation
            default = Path(ev.out) if ev.out else args.study / "comparison"
            episodes = args.episodes or ev.episodes
            seed, n_envs = ev.seed if args.seed is None else args.seed, args.n_envs or ev.n_envs
        else:
            specs = [parse_entry(e) for e in args.entry]
        out = _prefix(args.out or default)
        summary = compare(specs, out, episodes=episodes, seed=seed, n_envs=n_envs, device=resolve_device(args.device),
                          video=args.video, command=shlex.join(["python", "evaluate.py", *argv]),
                          runtime=args.planner_runtime, independent_batches=args.independent_batches, ray=args.ray,
                          workers=args.workers, extend=args.extend, annotate=annotate)
    except (ValueError, RenderError, ImportError) as e:  # EntryError and CheckpointError are ValueErrors
        print(f"evaluate.py: {e}", file=sys.stderr)
        return 2
    print(Path(summary["files"]["md"]).read_text())
    print("wrote " + ", ".join(summary["files"].values()))
    return 0


def _plan_gap(args: argparse.Namespace, argv: list[str]) -> int:
    """The plan-gap report of ``--plan-gap --entry ...`` (see :mod:`dcem_agents.evaluation.plan_gap`)."""
    from dcem_agents.evaluation.compare import DEFAULT_SEED, load_entries
    from dcem_agents.evaluation.entries import parse_entry
    from dcem_agents.evaluation.plan_gap import measure_plan_gap, write_plan_gap_report
    from dcem_agents.training.device import resolve_device

    seed = DEFAULT_SEED if args.seed is None else args.seed
    out = _prefix(args.out or Path("results/plan_gap"))
    try:
        entries = load_entries([parse_entry(e) for e in args.entry], resolve_device(args.device), args.planner_runtime)
        episodes = args.episodes or 10
        summary = measure_plan_gap(entries, [seed + i for i in range(episodes)], args.states or 100, seed)
    except ValueError as e:  # EntryError and CheckpointError are ValueErrors
        print(f"evaluate.py: {e}", file=sys.stderr)
        return 2
    summary["command"] = shlex.join(["python", "evaluate.py", *argv])
    files = write_plan_gap_report(summary, out)
    print(Path(files["md"]).read_text())
    print("wrote " + ", ".join(files.values()))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.episodes is not None and args.episodes < 1:
        parser.error("--episodes must be >= 1")
    if args.n_envs is not None and args.n_envs < 1:
        parser.error("--n-envs must be >= 1")
    if args.threads is not None:
        if args.threads < 1:
            parser.error("--threads must be >= 1")
        import torch

        torch.set_num_threads(args.threads)
    if args.states is not None and (not args.plan_gap or args.states < 1):
        parser.error("--states N (N >= 1) goes with --plan-gap")
    if args.plan_gap:
        if args.entry is None:
            parser.error("--plan-gap measures the planners named with --entry (of one checkpoint)")
        if (args.video or args.ray is not None or args.workers is not None or args.extend or args.independent_batches
                or args.n_envs is not None or args.controller is not None):
            parser.error("--plan-gap plans from stored states: --video, --ray, --workers, --extend, "
                         "--independent-batches, --n-envs and --controller do not apply")
        return _plan_gap(args, argv)
    if args.sweep is not None:
        if (any(v is not None for v in (args.controller, args.seed, args.n_envs, args.planner_runtime, args.ray,
                                        args.workers)) or args.video or args.independent_batches or args.extend):
            parser.error("--sweep reads the seeds' own evaluations: --controller, --seed, --n-envs, --video, "
                         "--planner-runtime, --ray, --workers, --independent-batches and --extend do not apply")
        return _sweeps(args)
    if args.max_return is not None or args.threshold is not None:
        parser.error("--max-return and --threshold go with --sweep")
    if args.steps is not None and args.ppo_curve is None:
        parser.error("--steps goes with --ppo-curve")
    if args.steps is not None and any(s < 0 for s in args.steps):
        parser.error("--steps must be >= 0")
    if args.checkpoint is not None and args.planner_runtime is not None:
        parser.error("--planner-runtime goes with --entry (the comparison report)")
    if args.checkpoint is not None:
        if (args.n_envs is not None or args.video or args.ray is not None or args.independent_batches or args.workers
                or args.extend):
            parser.error("--n-envs, --video, --ray, --workers, --independent-batches and --extend go with --entry (the "
                         "comparison report), not --checkpoint")
        return _single(args)
    if args.controller is not None:
        parser.error("with --entry, --study or --ppo-curve, name no --controller (an entry names its own: "
                     "PATH:CONTROLLER)")
    if args.workers is not None and (args.ray != "local" or args.workers < 1):
        parser.error("--workers N (N >= 1) goes with --ray (a local Ray)")
    if args.ray is not None and args.video:
        parser.error("--video records on this machine: run it without --ray")
    return _compare(args, argv)


if __name__ == "__main__":
    sys.exit(main())
