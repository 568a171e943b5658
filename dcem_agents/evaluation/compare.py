"""Compare controllers on the same test episodes: ``python evaluate.py --entry A --entry B ... --out PREFIX`` (fig. 4).

Every entry (:mod:`~dcem_agents.evaluation.entries`: a checkpoint or SB3 zip and one of its controllers) runs
``episodes`` episodes on the same initial states — episode ``i`` resets its environment with seed ``seed + i`` —
``n_envs`` environments at a time with ONE batched planning call per step
(:func:`~dcem_agents.evaluation.harness.evaluate_controller`). The planner's sampling generator is seeded with ``seed`` at the
start of every entry, so a seed determines the run on one machine and torch build (repeated runs in one process give
identical returns). Across installs, floating-point differences in the batched matrix products can change a planner's
choice: two runs of the shipped report on fresh installs of the same kind of machine differed by at most 1.2 per
episode for latent DCEM and by up to 10 for full-space CEM (its mean moved by 0.3). Planning wall time is measured
around the controller calls only.

With ``independent_batches`` each batch of ``n_envs`` episodes draws its planner noise from its own generator, seeded
with its first episode's seed, so a batch's returns depend on its seeds only. That is what lets ``ray`` spread the
batches over Ray workers (``evaluate.py --entry ... --ray``): the report equals a local run with independent batches,
episode for episode, and a killed Ray run resumes either way. The shipped reports were made with one generator per
entry.

The default ``seed`` (:data:`DEFAULT_SEED`) keeps the test episodes apart from the seeds training and its
evaluations use (random collection seeds below 2^31 are unlikely to hit it; evaluation seeds start at 1e6, 2e6, 3e6
and PPO's first resets at 0). Results: ``PREFIX.json``, ``.md``, ``.png``, ``_episodes.csv``
(:func:`~dcem_agents.evaluation.report.write_report`) and with ``video`` one ``PREFIX_video_<label>.gif``
(or ``.mp4``) per entry (:mod:`~dcem_agents.evaluation.video`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from dcem_agents.envs import make_env
from dcem_agents.evaluation.entries import Entry, EntryError, EntrySpec, bind_environment, load_entry, runtime_of
from dcem_agents.evaluation.harness import EpisodeRecord, EvaluationRun, evaluate_controller
from dcem_agents.evaluation.report import has_training_curves, report_paths, write_report
from dcem_agents.evaluation.stats import (BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, convention, paired_differences,
                                          summarize)

__all__ = ["DEFAULT_SEED", "compare", "load_entries", "run_entry"]

log = logging.getLogger(__name__)

#: first environment seed of the comparison's test episodes
DEFAULT_SEED = 4_000_000


def load_entries(specs: Sequence[EntrySpec], device: torch.device | str = "cpu", runtime: str | None = None) -> list[Entry]:
    """Load every entry; labels made unique (file stem, then a number); all must be on the same environment id.

    Model-free SB3 zips that do not record their environment run on the environment and action repeat of the first
    entry that does (:func:`~dcem_agents.evaluation.entries.bind_environment`).

    :raises EntryError: see :func:`~dcem_agents.evaluation.entries.load_entry`, mismatched env ids, or only
        model-free SB3 zips (no environment to run them on).
    """
    if not specs:
        raise EntryError("no entries to compare")
    entries = [load_entry(s, device, runtime) for s in specs]
    known = [e for e in entries if e.env_id is not None]
    if not known:
        raise EntryError("these SB3 model zips do not record their environment: compare them with at least one "
                         "planet, dcem or ppo checkpoint (or a zip of train.py's baseline experiment), whose "
                         "environment and action repeat they then run on")
    ids = {e.env_id for e in known}
    if len(ids) > 1:
        listing = "; ".join(f"{e.path} ({e.label}): {e.env_id}" for e in known)
        raise EntryError(f"entries must be on the same environment id to be compared, got {listing}")
    for e in entries:
        if e.env_id is None:
            bind_environment(e, known[0].env_id, known[0].action_repeat)
    counts = {label: [e.label for e in entries].count(label) for label in {e.label for e in entries}}
    for spec, e in zip(specs, entries):
        if spec.label is None and counts[e.label] > 1:
            e.label = f"{e.label} ({e.path.stem})"
    seen: dict[str, int] = {}
    for e in entries:
        seen[e.label] = seen.get(e.label, 0) + 1
        if seen[e.label] > 1:
            e.label = f"{e.label} #{seen[e.label]}"
    return entries


def run_entry(entry: Entry, seeds: Sequence[int], *, n_envs: int, seed: int,
              on_step: Callable[[], None] | None = None, on_batch: Callable[[int], None] | None = None,
              independent_batches: bool = False, generator: torch.Generator | None = None,
              after_batch: Callable[[EvaluationRun], None] | None = None) -> EvaluationRun:
    """One episode per seed in ``seeds``, ``n_envs`` at a time, batched planning (generator seeded with ``seed``).

    :param on_step: called after every batched planning call.
    :param on_batch: called with the number of episodes after every finished batch.
    :param independent_batches: each batch draws its planner noise from a generator seeded with its first episode's
        seed (``seed`` unused), so a batch gives the same returns wherever it runs (:func:`evaluate_controller`).
    :param generator: the planner's generator (default: a new one seeded with ``seed``), e.g. restored to where a
        killed run stopped.
    :param after_batch: called with the run so far after every batch (:func:`evaluate_controller`).
    """
    generator = entry.generator(seed) if generator is None else generator
    return evaluate_controller(lambda: make_env(entry.env_id, action_repeat=entry.action_repeat), entry.model,
                               entry.controller, seeds, generator=generator,
                               n_envs=n_envs, label=None, on_step=on_step, on_batch=on_batch,
                               batch_generator=entry.generator if independent_batches else None,
                               after_batch=after_batch)


class _Progress:
    """The evaluated batches of a comparison, in ``PREFIX.evaluated.pt`` beside its report: each entry's records,
    timings and planner-generator state after its last finished batch, under the entry's identity
    (:func:`_entry_identity`), written atomically after every batch (on Ray: after every batch that extends the
    entry's evaluated prefix of seeds).

    An entry's episodes depend on nothing but its identity and the comparison's settings (``key``: episodes, seed,
    batch size, device, runtime). A killed run therefore resumes where it stopped, even with entries added, removed,
    reordered or relabelled: the entries the command still names keep their work. Once the report is written the file
    is marked finished and kept; a later run ignores it (it evaluates afresh, so a changed package is never hidden
    behind stored episodes) unless ``extend`` asks to reuse it, to add rows to a finished report. A file made with
    other settings is ignored and replaced."""

    def __init__(self, path: Path, key: dict[str, Any], extend: bool = False) -> None:
        self.path, self.key = path, key
        self.entries: dict[str, dict[str, Any]] = {}
        saved = None
        if path.is_file():
            try:
                saved = torch.load(path, weights_only=True)
            except Exception:  # noqa: BLE001 - a damaged progress file only costs the work it held
                log.warning("%s cannot be read: starting over", path)
        if not isinstance(saved, dict):
            if extend:
                log.warning("--extend: no finished report's episodes in %s: every entry is evaluated", path)
        elif saved.get("key") != key:
            log.warning("%s was written with other settings (episodes, seed, batch size, device or runtime): "
                        "starting over", path)
        elif saved.get("finished") and not extend:
            log.info("%s holds a finished report's episodes: evaluating afresh (--extend reuses them)", path)
        else:
            self.entries = saved["entries"]
            log.info("%s %s: %d episodes already evaluated", "extending" if saved.get("finished") else "resuming from",
                     path, sum(len(v["episodes"]) for v in self.entries.values()))

    def run(self, k: str) -> EvaluationRun:
        """The finished batches of the entry whose identity is ``k``, as a run (empty if none)."""
        saved = self.entries.get(k)
        if saved is None:
            return EvaluationRun()
        return EvaluationRun([EpisodeRecord(int(s), float(r), int(n)) for s, r, n in saved["episodes"]],
                             saved["plan_seconds"], saved["plan_calls"], saved["seconds"], saved.get("env_steps", 0))

    def restore_generator(self, k: str, generator: torch.Generator) -> None:
        """Set ``generator`` to the state it had after the entry ``k``'s last finished batch (unchanged if none)."""
        if k in self.entries:
            generator.set_state(self.entries[k]["generator"])

    def record(self, k: str, run: EvaluationRun, generator: torch.Generator) -> None:
        self.entries[k] = {"episodes": [[e.seed, e.return_, e.agent_steps] for e in run.episodes],
                           "plan_seconds": run.plan_seconds, "plan_calls": run.plan_calls, "seconds": run.seconds,
                           "env_steps": run.env_steps, "generator": generator.get_state()}
        self._write(finished=False)

    def finish(self, kept: Sequence[str]) -> None:
        """Mark the file finished, keeping only the entries ``kept`` (the written report's)."""
        self.entries = {k: v for k, v in self.entries.items() if k in kept}
        self._write(finished=True)

    def _write(self, finished: bool) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"key": self.key, "entries": self.entries, "finished": finished}, tmp)
        os.replace(tmp, self.path)


def _file_identity(path: str | Path) -> list[int]:
    """``[size, mtime_ns]`` of a file (``[]`` for a folder), so saved progress is never reused on a changed file."""
    stat = Path(path).stat()
    return [] if Path(path).is_dir() else [stat.st_size, stat.st_mtime_ns]


def _entry_identity(spec: EntrySpec) -> str:
    """What an entry's episodes depend on: its file (path, size, mtime: a rewritten checkpoint is another entry), its
    controller, runtime and planner overrides; not its label."""
    return json.dumps([str(spec.path), spec.controller, spec.runtime, _file_identity(spec.path),
                       [list(kv) for kv in spec.planner or ()]])


def _joined(before: EvaluationRun, after: EvaluationRun) -> EvaluationRun:
    return EvaluationRun(before.episodes + after.episodes, before.plan_seconds + after.plan_seconds,
                         before.plan_calls + after.plan_calls, before.seconds + after.seconds,
                         before.env_steps + after.env_steps)


@dataclass(frozen=True)
class _Chunk:
    """One batch of an entry's episodes, as sent to a Ray worker (everything it needs to load the entry itself)."""

    spec: EntrySpec
    device: str
    runtime: str | None
    env_id: str
    action_repeat: int
    seeds: tuple[int, ...]


def _run_chunk(chunk: _Chunk) -> EvaluationRun:
    """In a Ray worker: load the entry and run its batch with independent batches (one torch thread)."""
    torch.set_num_threads(1)
    entry = load_entry(chunk.spec, chunk.device, chunk.runtime)
    if entry.env_id is None:
        bind_environment(entry, chunk.env_id, chunk.action_repeat)
    return run_entry(entry, chunk.seeds, n_envs=len(chunk.seeds), seed=chunk.seeds[0], independent_batches=True)


def _runs_on_ray(entries: Sequence[Entry], specs: Sequence[EntrySpec], seeds: Sequence[int], n_envs: int,
                 device: torch.device | str, runtime: str | None, address: str, workers: int | None,
                 on_batch: Callable[[int], None], done: Sequence[EvaluationRun],
                 record: Callable[[int, EvaluationRun], None]) -> list[EvaluationRun]:
    """Every entry's remaining batches of ``n_envs`` episodes as Ray tasks (one CPU each, or one GPU on CUDA); the
    records reassembled in seed order, so each run equals a local one with independent batches. ``seconds`` is the
    sum of the batches' times.

    :param done: per entry, the episodes already evaluated (a prefix of ``seeds`` in whole batches, from a killed
        run); only the batches after it are sent.
    :param record: called with ``(entry index, run so far)`` whenever an entry's evaluated prefix grows, i.e. when the
        batch right after it ends (batches ending out of order wait in memory for the ones before them), so that a
        killed run keeps them (:class:`_Progress`).
    """
    from dcem_agents.training.ray_tasks import ray_map

    chunks, keys = [], []
    for k, (e, spec) in enumerate(zip(entries, specs)):
        absolute = dataclasses.replace(spec, path=Path(spec.path).resolve())  # workers start in other folders
        for i in range(len(done[k].episodes), len(seeds), n_envs):
            chunks.append(_Chunk(absolute, str(device), runtime, e.env_id, e.action_repeat,
                                 tuple(int(s) for s in seeds[i : i + n_envs])))
            keys.append((k, i))
    runs = list(done)
    waiting: dict[tuple[int, int], EvaluationRun] = {}  # ended, but a batch before it has not

    def result(j: int, run: Any) -> None:
        k = keys[j][0]
        if isinstance(run, Exception):
            raise EntryError(f"{entries[k].label}: the Ray task of episodes {chunks[j].seeds[0]}–"
                             f"{chunks[j].seeds[-1]} failed: {run}")
        waiting[keys[j]] = run
        on_batch(len(chunks[j].seeds))
        grown = False
        while (k, len(runs[k].episodes)) in waiting:
            runs[k] = _joined(runs[k], waiting.pop((k, len(runs[k].episodes))))
            grown = True
        if grown:
            record(k, runs[k])

    if chunks:
        local = address == "local"
        gpus = 1 if str(device).startswith("cuda") else 0
        ray_map(_run_chunk, chunks, result, address=None if local else address, num_cpus=0 if gpus else 1,
                num_gpus=gpus, init_kwargs={"num_cpus": workers} if local and workers else None)
    return runs


def _entry_summary(entry: Entry, run: EvaluationRun, n_envs: int) -> dict[str, Any]:
    actions = sum(run.agent_steps)
    return {
        "label": entry.label, "checkpoint": str(entry.path), "kind": entry.kind, "controller": entry.controller_name,
        "env_id": entry.env_id, "action_repeat": entry.action_repeat, "train_env_steps": entry.train_env_steps,
        "episodes": len(run.returns),
        "stats": summarize(run.returns),
        "eval_agent_steps": actions, "eval_env_steps": run.env_steps,
        "samples_per_action": entry.samples_per_action, "planner_runtime": runtime_of(entry.controller),
        "ms_per_action": run.ms_per_action, "ms_per_planning_call": run.ms_per_plan, "n_envs": n_envs,
        "wall_time_s": run.seconds,
        "returns": [round(r, 4) for r in run.returns], "agent_steps": run.agent_steps,
        "training_curve": entry.training_curve,
    }


def _slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_") or "entry"


def compare(specs: Sequence[EntrySpec], out: Path, *, episodes: int = 100, seed: int = DEFAULT_SEED, n_envs: int = 10,
            device: torch.device | str = "cpu", video: bool = False, command: str | None = None,
            progress: bool = True, runtime: str | None = None, independent_batches: bool = False,
            ray: str | None = None, workers: int | None = None, extend: bool = False,
            annotate: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Evaluate every entry on the same ``episodes`` seeds and write the report files under the prefix ``out``.

    :param video: first record one episode per entry (seed ``seed``); raises
        :class:`~dcem_agents.evaluation.video.RenderError` before any evaluation when rendering is impossible.
    :param command: the command line, stored in the JSON.
    :param runtime: planner runtime preset of the entries that name none (None: each checkpoint's own).
    :param independent_batches: each batch of ``n_envs`` episodes draws its planner noise from a generator seeded with
        its first episode's seed, instead of one generator per entry (seeded with ``seed``) shared by its batches.
    :param ray: run the batches as Ray tasks (``"local"``: a local Ray; else a cluster address); implies
        ``independent_batches``, and gives the same per-episode returns as a local run with it.
    :param workers: with a local Ray, its CPUs (None: all).
    :param extend: reuse the episodes that a finished report with the same settings kept in ``PREFIX.evaluated.pt``
        for the entries still named, so that only new entries are evaluated (without it, a finished report's episodes
        are not reused; a killed run's always are). With ``ray`` too: the episodes are kept on this machine, where
        the report is written, whichever way they ran.
    :param annotate: adds sections to the finished summary before the report is written, from its entries and
        paired differences: a learning curve (:func:`~dcem_agents.evaluation.ppo_curve.curve_annotation`, drawn
        instead of the box plot) or a study's arms (:func:`~dcem_agents.evaluation.study.study_annotation`);
        :func:`~dcem_agents.evaluation.report.write_report` renders them.
    :return: the summary written to ``PREFIX.json`` (``files`` lists the written paths).
    :raises EntryError: an entry cannot be loaded, or the entries are on different environments.
    """
    if episodes < 1 or n_envs < 1:
        raise ValueError(f"episodes and n_envs must be >= 1, got {episodes} and {n_envs}")
    t0 = time.perf_counter()
    entries = load_entries(specs, device, runtime)
    videos: list[dict[str, Any]] = []
    if video:
        from dcem_agents.evaluation.video import check_rendering, record_episode

        check_rendering(entries[0].env_id, entries[0].action_repeat)
        for e in entries:
            videos.append(record_episode(e, seed, Path(f"{out}_video_{_slug(e.label)}")))
            log.info("video of %s: %s (return %.1f)", e.label, videos[-1]["path"], videos[-1]["return"])
    seeds = [seed + i for i in range(episodes)]
    independent = independent_batches or ray is not None
    idents = [_entry_identity(sp) for sp in specs]  # once, before any batch: the files as they were when loaded
    results = []
    reused = 0  # episodes an earlier invocation (killed, or extended) evaluated
    # the batches finished so far, kept whichever way they run: a killed Ray run resumes on Ray or here with
    # independent batches, and the other way round (the settings, not the way, make the key)
    progress_file = _Progress(Path(f"{out}.evaluated.pt"), {
        "format": 2, "episodes": episodes, "seed": seed, "n_envs": n_envs, "device": str(device),
        "runtime": runtime, "independent": independent}, extend=extend)
    with tqdm(total=len(entries) * episodes, unit="episode", dynamic_ncols=True, disable=not progress) as bar:
        if ray is not None:  # every entry's remaining batches at once, on the workers
            bar.set_description(f"{len(entries)} entries on Ray")
            done = [progress_file.run(ident) for ident in idents]
            reused = sum(len(run.episodes) for run in done)
            bar.update(reused)

            def keep(k: int, run: EvaluationRun) -> None:  # the generator is unused with independent batches
                progress_file.record(idents[k], run, entries[k].generator(seed))

            runs = _runs_on_ray(entries, specs, seeds, n_envs, device, runtime, ray, workers, bar.update, done, keep)
        else:
            runs = []
            for k, e in enumerate(entries):
                bar.set_description(e.label)
                steps, shown = [0], [time.perf_counter()]

                def tick() -> None:  # batched planning calls so far, shown at most every 2 s
                    steps[0] += 1
                    if time.perf_counter() - shown[0] > 2.0:
                        bar.set_postfix_str(f"planning calls {steps[0]}")
                        shown[0] = time.perf_counter()

                ident = idents[k]
                before = progress_file.run(ident)  # batches a killed run finished for this entry
                generator = e.generator(seed)
                progress_file.restore_generator(ident, generator)
                bar.update(len(before.episodes))
                reused += len(before.episodes)
                if len(before.episodes) < episodes:
                    def save(so_far: EvaluationRun, ident: str = ident, before: EvaluationRun = before,
                             generator: torch.Generator = generator) -> None:
                        progress_file.record(ident, _joined(before, so_far), generator)

                    before = _joined(before, run_entry(
                        e, seeds[len(before.episodes):], n_envs=n_envs, seed=seed, on_step=tick, on_batch=bar.update,
                        independent_batches=independent, generator=generator, after_batch=save))
                runs.append(before)
    for e, run in zip(entries, runs):
        results.append(_entry_summary(e, run, min(n_envs, episodes)))
        log.info("%s: return %.1f ± %.1f over %d episodes (%.0f s)", e.label, results[-1]["stats"]["mean"],
                 results[-1]["stats"]["std"], episodes, run.seconds)
    summary: dict[str, Any] = {
        "env_id": entries[0].env_id, "episodes": episodes, "seed": seed, "episode_seeds": [seeds[0], seeds[-1]],
        "n_envs": min(n_envs, episodes), "device": str(device),
        "planner_noise": ("one generator per batch of n_envs episodes, seeded with its first episode's seed"
                          if independent else "one generator per entry, seeded with seed, shared by its batches"),
        "ray": ray,
        "bootstrap": {"method": "percentile", "level": 0.95, "resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED},
        "statistics": convention(),
        "command": command, "wall_time_s": time.perf_counter() - t0, "reused_episodes": reused, "entries": results,
        "paired_differences": paired_differences([r["label"] for r in results], [r["returns"] for r in results]),
        "videos": videos,
    }
    summary["files"] = {k: str(p) for k, p in report_paths(out, has_training_curves(summary)).items()} | {
        f"video {v['label']}": v["path"] for v in videos}
    if annotate is not None:
        annotate(summary)
    write_report(summary, out)
    progress_file.finish(idents)
    return summary
