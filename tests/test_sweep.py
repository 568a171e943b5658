"""Several seeds: ``train.py --seeds`` (here and on a local Ray), resuming a killed sweep, ``evaluate.py --sweep``."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dcem_agents.training.run_dir import RunDirInUseError, lock_run_dir
from dcem_agents.training.sweep import SweepState

from _scripts import ROOT, run_main, run_script

#: two seeds of the planet debug preset, each the same short run
SWEEP = ["train.py", "--config", "configs/planet/debug.yaml", "--seeds", "0", "1"]


def _sweep_dir(runs: Path) -> Path:
    (found,) = runs.glob("planet-debug-sweep-*")
    return found


def _rows(run: Path) -> list[dict[str, str]]:
    """A run's progress log without its wall-clock columns."""
    with (run / "progress.csv").open(newline="") as f:
        return [{k: v for k, v in row.items() if not k.startswith("time/")} for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs = tmp_path_factory.mktemp("sweep_local")
    p = run_script(*SWEEP, "--workers", "2", "--runs-dir", str(runs))
    assert p.returncode == 0, p.stderr[-3000:]
    return _sweep_dir(runs)


def test_a_sweep_holds_one_ordinary_run_folder_per_seed(local_sweep: Path) -> None:
    state = SweepState.load(local_sweep)
    assert state.seeds == [0, 1] and state.pending() == []
    assert all(state.states[s]["state"] == "finished" and state.states[s]["returncode"] == 0 for s in (0, 1))
    for seed in (0, 1):
        run = local_sweep / f"seed{seed}"
        assert (run / "checkpoint.pt").is_file() and (run / "summary.json").is_file()
        assert f"seed: {seed}\n" in (run / "config.yaml").read_text()
        assert "run folder:" in (run / "train.log").read_text()
    assert _rows(local_sweep / "seed0") != _rows(local_sweep / "seed1")  # the seeds really differ


def test_a_ray_sweep_gives_the_same_seeds_as_a_local_one(local_sweep: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    p = run_script(*SWEEP, "--ray", "--workers", "2", "--runs-dir", str(tmp_path))
    assert p.returncode == 0, p.stderr[-3000:]
    ray_sweep = _sweep_dir(tmp_path)
    for seed in (0, 1):
        assert _rows(ray_sweep / f"seed{seed}") == _rows(local_sweep / f"seed{seed}")
        local = json.loads((local_sweep / f"seed{seed}" / "summary.json").read_text())
        remote = json.loads((ray_sweep / f"seed{seed}" / "summary.json").read_text())
        assert remote["eval_returns"] == local["eval_returns"] and remote["learning_curve"] == local["learning_curve"]


def test_a_killed_sweep_resumes_and_every_seed_log_is_complete(local_sweep: Path, tmp_path: Path) -> None:
    """SIGKILL the driver once seed 0 has its first checkpoint: its seed process dies with it. The same command with
    --sweep-dir finishes both seeds, and each progress log equals the uninterrupted sweep's: no gap, no duplicate."""
    driver = subprocess.Popen([sys.executable, *SWEEP, "--runs-dir", str(tmp_path)], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not list(tmp_path.glob("planet-debug-sweep-*/seed0/checkpoint.pt")):
        assert driver.poll() is None and time.monotonic() < deadline, "the sweep ended before its first checkpoint"
        time.sleep(0.2)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    sweep = _sweep_dir(tmp_path)
    assert SweepState.load(sweep).pending() == [0, 1]
    deadline = time.monotonic() + 60  # the seed process got SIGTERM from the kernel when its driver died
    while True:
        try:
            lock_run_dir(sweep / "seed0").close()
            break
        except RunDirInUseError:
            assert time.monotonic() < deadline, "the seed process outlived its driver"
            time.sleep(0.2)
    assert not (sweep / "seed0" / "summary.json").exists()  # it died then, not at its end
    p = run_script(*SWEEP, "--sweep-dir", str(sweep))
    assert p.returncode == 0, p.stderr[-3000:]
    assert SweepState.load(sweep).pending() == []
    for seed in (0, 1):
        rows = _rows(sweep / f"seed{seed}")
        assert rows == _rows(local_sweep / f"seed{seed}")
        assert len({r["step"] for r in rows}) == len(rows)
    assert "resumed" in (sweep / "seed0" / "train.log").read_text()


def test_a_finished_sweep_is_left_alone(local_sweep: Path) -> None:
    before = {s: (local_sweep / f"seed{s}" / "progress.csv").stat().st_mtime_ns for s in (0, 1)}
    p = run_main(*SWEEP, "--sweep-dir", str(local_sweep))
    assert p.returncode == 0, p.stderr[-2000:]
    assert {s: (local_sweep / f"seed{s}" / "progress.csv").stat().st_mtime_ns for s in (0, 1)} == before


@pytest.mark.parametrize(("extra", "message"), [
    (["--run-dir", "somewhere"], "--run-dir and --publish are for one run"),
    (["--set", "model.hidden_size=32"], "was started with other values of model.hidden_size"),
    (["--seeds", "0", "1", "2"], "runs seeds 0 1, not 0 1 2"),
])
def test_a_sweep_refuses_what_it_cannot_resume(local_sweep: Path, extra: list[str], message: str) -> None:
    p = run_main("train.py", "--config", "configs/planet/debug.yaml", "--sweep-dir", str(local_sweep), *extra)
    assert p.returncode == 2 and message in p.stderr, p.stderr[-2000:]


def test_sweep_flags_need_a_sweep(tmp_path: Path) -> None:
    p = run_main("train.py", "--config", "configs/planet/debug.yaml", "--workers", "2")
    assert p.returncode == 2 and "need --seeds" in p.stderr
    p = run_main("train.py", "--sweep-dir", str(tmp_path))
    assert p.returncode == 2 and "not a sweep folder" in p.stderr


def test_a_run_folder_is_written_by_one_process_at_a_time(tmp_path: Path) -> None:
    held = lock_run_dir(tmp_path)
    with pytest.raises(RunDirInUseError, match=f"in use by another process \\(pid {os.getpid()}\\)"):
        lock_run_dir(tmp_path)
    held.close()
    lock_run_dir(tmp_path).close()  # free again once the holder ends


def test_evaluate_aggregates_the_seeds(local_sweep: Path, tmp_path: Path) -> None:
    pytest.importorskip("rliable")
    import numpy as np

    prefix = tmp_path / "agg"
    p = run_main("evaluate.py", "--sweep", str(local_sweep), "--sweep", str(local_sweep), "--threshold", "50",
                 "--out", str(prefix))
    assert p.returncode == 0, p.stderr[-3000:]
    report = json.loads(prefix.with_suffix(".json").read_text())
    first, second = report["sweeps"]
    finals = [np.mean(json.loads((local_sweep / f"seed{s}" / "summary.json").read_text())["eval_returns"])
              for s in (0, 1)]
    assert first["final_returns"] == pytest.approx(finals) and first["seeds"] == [0, 1]
    agg = first["aggregates"]
    assert agg["mean"]["value"] == pytest.approx(np.mean(finals))
    assert agg["optimality_gap"]["value"] == pytest.approx(1000 - np.mean(finals))  # dm_control: max return 1000
    for key in ("iqm", "mean", "median", "optimality_gap"):
        low, high = agg[key]["ci95"]
        assert low <= agg[key]["value"] <= high
    assert min(finals) <= agg["mean"]["ci95"][0] and agg["mean"]["ci95"][1] <= max(finals)
    curve = first["learning_curve"]
    assert [pt["n"] for pt in curve] == [2] * len(curve) and curve
    assert first["threshold"]["share_of_seeds_final"] == 1.0  # every debug seed ends above 50
    (pair,) = report["pairs"]  # the same sweep twice: no seed of X beats a seed of Y more often than the reverse
    assert pair["probability_of_improvement"]["value"] == pytest.approx(0.5)
    assert first["label"] != second["label"]
    assert "IQM" in prefix.with_suffix(".md").read_text()
    assert prefix.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_sweep_errors_are_one_line(tmp_path: Path) -> None:
    p = run_main("evaluate.py", "--sweep", str(tmp_path))
    assert p.returncode == 2 and "not a sweep folder" in p.stderr
    p = run_main("evaluate.py", "--sweep", str(tmp_path), "--n-envs", "4")
    assert p.returncode == 2 and "do not apply" in p.stderr


def test_each_experiments_summary_gives_a_curve_and_a_final_return() -> None:
    from dcem_agents.evaluation.seeds import _seed_result

    planet = _seed_result("planet", 0, {"learning_curve": [{"env_steps": 10, "return_mean": 1.0}],
                                        "eval_returns": [3.0, 5.0]})
    assert planet.curve == [(10, 1.0)] and planet.final == 4.0
    baseline = _seed_result("baseline", 1, {"evaluations": [[100, 2.0], [200, 6.0]], "final_eval": {"returns": [7.0]}})
    assert baseline.curve == [(100, 2.0), (200, 6.0)] and baseline.final == 7.0
    ppo = _seed_result("ppo", 2, {"ppo_timesteps": 64, "before": {"returns": [1.0, 3.0]}, "after": {"returns": [4.0]}})
    assert ppo.curve == [(0, 2.0), (64, 4.0)] and ppo.final == 4.0
    no_final_eval = _seed_result("dcem", 3, {"learning_curve": [{"env_steps": 10, "return_mean": 9.0}]})
    assert no_final_eval.final == 9.0  # final_eval_episodes: 0 falls back on the last evaluation
    with pytest.raises(ValueError, match="no evaluation"):
        _seed_result("planet", 4, {"learning_curve": []})


def test_aggregates_do_not_depend_on_the_global_numpy_generator() -> None:
    """rliable resamples with np.random's global generator: the CIs must still be a function of the returns only,
    and the caller's global state must be left as it was."""
    import numpy as np

    from dcem_agents.evaluation.seeds import final_aggregates, probability_of_improvement

    finals = [863.6, 853.3, 807.4, 844.5, 852.7]
    np.random.seed(1)
    a, pa = final_aggregates(finals, 1000.0), probability_of_improvement(finals, [800.0, 850.0, 820.0])
    after = np.random.random()
    np.random.seed(1)
    assert np.random.random() == after  # untouched
    np.random.seed(12345)
    assert final_aggregates(finals, 1000.0) == a and probability_of_improvement(finals, [800.0, 850.0, 820.0]) == pa


def test_curves_evaluated_at_other_steps_are_interpolated_and_a_stopped_seed_holds_its_last() -> None:
    from dcem_agents.evaluation.seeds import SeedResult, learning_curve

    a = SeedResult(0, [(0, 0.0), (100, 100.0)], [100.0])  # stopped at 100 (e.g. stop_return reached)
    b = SeedResult(1, [(50, 10.0), (150, 30.0)], [30.0])
    points = {p["env_steps"]: p for p in learning_curve([a, b])}
    assert sorted(points) == [0, 50, 100, 150]
    assert points[0]["n"] == 1 and points[0]["mean"] == 0.0 and points[0]["held"] == 0  # b not evaluated yet
    assert points[50]["n"] == 2 and points[50]["mean"] == pytest.approx((50.0 + 10.0) / 2)
    assert points[100]["mean"] == pytest.approx((100.0 + 20.0) / 2) and points[100]["held"] == 0
    assert points[150]["n"] == 2 and points[150]["held"] == 1 and points[150]["mean"] == pytest.approx((100.0 + 30.0) / 2)
    assert points[50]["ci95"][0] <= points[50]["mean"] <= points[50]["ci95"][1]


@pytest.mark.parametrize("content", ["{not json", '{"experiment": "planet"}', '{"experiment": "planet", "name": "x", '
                                     '"seeds": [], "config": {}}', "[1, 2]"])
def test_a_damaged_manifest_is_one_clear_error(tmp_path: Path, content: str) -> None:
    (tmp_path / "sweep.json").write_text(content)
    p = run_main("train.py", "--config", "configs/planet/debug.yaml", "--sweep-dir", str(tmp_path))
    assert p.returncode == 2 and "sweep.json" in p.stderr and "Traceback" not in p.stderr, p.stderr
    p = run_main("evaluate.py", "--sweep", str(tmp_path))
    assert p.returncode == 2 and "sweep.json" in p.stderr, p.stderr


def test_put_seed_fills_every_string_value() -> None:
    from dcem_agents.config import put_seed

    data = {"a": "runs/s/seed{seed}/checkpoint.pt", "b": ["x{seed}", 3], "c": {"d": "{seed}-{seed}"}, "e": 1.5}
    assert put_seed(data, 4) == {"a": "runs/s/seed4/checkpoint.pt", "b": ["x4", 3], "c": {"d": "4-4"}, "e": 1.5}


def test_a_later_phase_sweep_checks_each_seeds_own_checkpoint(local_sweep: Path, tmp_path: Path) -> None:
    """phase1_checkpoint=<sweep>/seed{seed}/checkpoint.pt: every seed's checkpoint is checked before anything runs."""
    template = f"phase1_checkpoint={local_sweep}/seed{{seed}}/checkpoint.pt"
    p = run_main("train.py", "--config", "configs/dcem/debug.yaml", "--seeds", "0", "1", "2", "--set", template,
                 "--runs-dir", str(tmp_path))
    assert p.returncode == 2 and f"checkpoint not found: {local_sweep}/seed2/checkpoint.pt" in p.stderr, p.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_a_later_phase_sweep_runs_each_seed_on_its_own_checkpoint(local_sweep: Path, tmp_path: Path) -> None:
    template = f"phase1_checkpoint={local_sweep}/seed{{seed}}/checkpoint.pt"
    p = run_script("train.py", "--config", "configs/dcem/debug.yaml", "--seeds", "0", "1", "--set", template,
                   "--workers", "2", "--runs-dir", str(tmp_path))
    assert p.returncode == 0, p.stderr[-3000:]
    (sweep,) = tmp_path.glob("dcem-debug-sweep-*")
    assert "seed{seed}" in (sweep / "config.yaml").read_text()  # the sweep keeps the template
    for seed in (0, 1):
        run_config = (sweep / f"seed{seed}" / "config.yaml").read_text()
        assert f"phase1_checkpoint: {local_sweep}/seed{seed}/checkpoint.pt" in run_config
        summary = json.loads((sweep / f"seed{seed}" / "summary.json").read_text())
        assert summary["phase1_checkpoint"] == f"{local_sweep}/seed{seed}/checkpoint.pt"
