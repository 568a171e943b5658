"""Several seeds of one preset: one ordinary run folder per seed under a sweep folder, run here or on Ray.

Layout of a sweep folder (``train.py --config X --seeds 0 1 2``)::

    <runs>/<experiment>-<name>-sweep-<time>/
        sweep.json       the resolved config, the seeds and each seed's state (pending, finished, failed)
        config.yaml      the resolved config that every seed runs, its own seed set on the command line
        seed<k>/         an ordinary run folder (``train.py --run-dir``); ``train.log`` holds the seed's output

Each seed is one ``train.py`` process (:class:`SeedTask`): exactly the run one would start by hand, with its own
checkpoints. The driver (:func:`run_local`, :func:`run_ray`) only starts processes and records in ``sweep.json`` the
seeds that ended; that file is written atomically and by the driver alone. A seed process dies with its driver (Linux),
so a killed sweep leaves each seed at its last checkpoint, and the same command with ``--sweep-dir`` resumes the seeds
not recorded finished. On Ray a task whose worker died is retried, which resumes that seed the same way.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from dcem_agents.training.ray_tasks import ray_map
from dcem_agents.training.run_dir import fresh_folder, write_json_atomic

__all__ = ["SWEEP_FILE", "SeedTask", "SweepState", "create_sweep", "run_local", "run_ray", "run_seed", "seed_dir"]

#: the sweep's manifest inside the sweep folder
SWEEP_FILE = "sweep.json"


def seed_dir(sweep_dir: str | Path, seed: int) -> Path:
    """The run folder of ``seed`` inside a sweep folder."""
    return Path(sweep_dir) / f"seed{seed}"


@dataclasses.dataclass(frozen=True)
class SeedTask:
    """One seed's ``train.py`` process.

    :param seed: the seed.
    :param args: the arguments after the interpreter (``train.py --config ... --run-dir ... --set seed=k``), relative
        to ``cwd``; the interpreter is the one that runs :func:`run_seed` (a Ray worker's own on a cluster).
    :param cwd: folder to run in (the repository root), or None for the current one (a Ray cluster's working dir).
    :param log: file the process's output is appended to.
    """

    seed: int
    args: tuple[str, ...]
    cwd: str | None
    log: str


#: run in the child before the seed's command (Linux): ask the kernel for SIGTERM when the parent dies
#: (``prctl(PR_SET_PDEATHSIG)``, kept across exec), give up if it already has, then exec the command. Done in the child
#: itself rather than through ``preexec_fn``, which is unsafe in the driver's threads.
_DIE_WITH_PARENT = ("import ctypes, os, signal, sys\n"
                    "ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGTERM)\n"
                    "if os.getppid() != int(sys.argv[1]):\n"
                    "    sys.exit(128 + signal.SIGTERM)\n"
                    "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])")


def run_seed(task: SeedTask) -> int:
    """Run ``task``'s process to its end, its output appended to ``task.log``; return its exit code.

    On Linux the process dies with the one that started it (a killed driver or Ray worker leaves no orphan writing the
    run folder: the seed resumes from its checkpoints)."""
    Path(task.log).parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    prefix = ["-c", _DIE_WITH_PARENT, str(os.getpid())] if sys.platform.startswith("linux") else []
    with open(task.log, "a") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} seed {task.seed}: {' '.join(task.args)}\n")
        log.flush()
        return subprocess.run([sys.executable, *prefix, *task.args], cwd=task.cwd, stdout=log,
                              stderr=subprocess.STDOUT, env=env, check=False).returncode


def _timed(task: SeedTask) -> tuple[int, float]:
    """:func:`run_seed` and its wall time in seconds."""
    start = time.perf_counter()
    return run_seed(task), time.perf_counter() - start


@dataclasses.dataclass
class SweepState:
    """What ``sweep.json`` holds: the sweep's identity and each seed's state.

    ``states[seed]`` is ``{"state": "finished" | "failed", "returncode": int, "seconds": float}``; a seed with no
    entry is pending (never run, or running when the driver stopped).
    """

    experiment: str
    name: str
    seeds: list[int]
    config: dict[str, Any]
    states: dict[int, dict[str, Any]] = dataclasses.field(default_factory=dict)

    @classmethod
    def load(cls, sweep_dir: str | Path) -> SweepState:
        """Read ``<sweep_dir>/sweep.json``.

        :raises FileNotFoundError: the folder has none. :raises ValueError: it is malformed (the message names it).
        """
        path = Path(sweep_dir) / SWEEP_FILE
        if not path.is_file():
            raise FileNotFoundError(f"not a sweep folder (no {SWEEP_FILE}): {sweep_dir}")
        try:
            data = json.loads(path.read_text())
            state = cls(str(data["experiment"]), str(data["name"]), [int(s) for s in data["seeds"]],
                        dict(data["config"]), {int(k): dict(v) for k, v in data.get("states", {}).items()})
        except (ValueError, KeyError, TypeError, AttributeError) as e:  # hand-edited or truncated by a full disk
            raise ValueError(f"{path} is not a readable sweep manifest ({type(e).__name__}: {e})") from None
        if not state.seeds:
            raise ValueError(f"{path} lists no seeds")
        return state

    def save(self, sweep_dir: str | Path) -> None:
        """Write ``sweep.json`` atomically (a temporary file renamed over it)."""
        data = dataclasses.asdict(self)
        data["states"] = {str(k): v for k, v in sorted(self.states.items())}
        write_json_atomic(Path(sweep_dir) / SWEEP_FILE, data)

    def pending(self) -> list[int]:
        """Seeds not recorded finished, in the sweep's order."""
        return [s for s in self.seeds if self.states.get(s, {}).get("state") != "finished"]


def create_sweep(root: str | Path, state: SweepState) -> Path:
    """Create a fresh sweep folder ``<root>/<experiment>-<name>-sweep-<time>`` holding ``state``; return it."""
    path = fresh_folder(Path(root) / f"{state.experiment}-{state.name}-sweep-{time.strftime('%Y%m%d-%H%M%S')}")
    state.save(path)
    return path


#: called by the drivers once per seed that ended: (seed, exit code (-1: the task itself failed), seconds)
OnDone = Callable[[int, int, float], None]


def run_local(tasks: Sequence[SeedTask], workers: int, on_done: OnDone) -> None:
    """Run ``tasks`` on this machine, at most ``workers`` processes at once, calling ``on_done`` as each ends."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")

    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_timed, task): task for task in tasks}
        for future in as_completed(futures):
            code, seconds = future.result()
            on_done(futures[future].seed, code, seconds)


def run_ray(tasks: Sequence[SeedTask], on_done: OnDone, *, address: str | None = None, num_cpus: float = 1,
            num_gpus: float = 0, runtime_env: dict[str, Any] | None = None, max_retries: int = 3,
            init_kwargs: dict[str, Any] | None = None) -> None:
    """Run each task as a Ray task asking for ``num_cpus`` CPUs and ``num_gpus`` GPUs, calling ``on_done`` as each ends
    (:func:`~dcem_agents.training.ray_tasks.ray_map`; a task whose worker died is retried, which resumes the seed).

    :param address: an existing cluster (``"auto"``, ``"ray://host:10001"``, ...) or None for a local Ray started here.
    :param runtime_env: Ray's runtime environment (on a cluster: ``{"working_dir": <repository>}`` ships the code).
    :param init_kwargs: more arguments of ``ray.init`` (e.g. ``num_cpus`` of a local Ray).
    """
    def result(i: int, value: Any) -> None:
        code, seconds = (-1, 0.0) if isinstance(value, Exception) else value  # retries spent: the seed stays resumable
        on_done(tasks[i].seed, code, seconds)

    ray_map(_timed, tasks, result, address=address, num_cpus=num_cpus, num_gpus=num_gpus, max_retries=max_retries,
            runtime_env=runtime_env, init_kwargs=init_kwargs)
