"""The model-free SB3 baseline experiment: training on the debug preset, resuming, its zip as a comparison entry, and
configuration errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _scripts import run_script

from dcem_agents.config import ConfigError, build
from dcem_agents.experiments import baseline
from dcem_agents.evaluation.compare import compare, load_entries
from dcem_agents.evaluation.entries import EntryError, EntrySpec


def _episode_return(zip_path: Path, seed: int) -> tuple[float, int]:
    """Return and length of one episode of the debug preset's environment (cartpole-swingup, action repeat 8) reset
    with ``seed``, stepped by hand with the saved SAC model's deterministic actions."""
    from stable_baselines3 import SAC

    from dcem_agents.envs import make_env

    model = SAC.load(zip_path, device="cpu")
    env = make_env("dm_control/cartpole-swingup-v0", action_repeat=8)
    obs, _ = env.reset(seed=seed)
    total, steps, done = 0.0, 0, False
    while not done:
        action, _ = model.predict(obs, deterministic=True)
        obs, reward, terminated, truncated, _ = env.step(action)
        total, steps, done = total + reward, steps + 1, terminated or truncated
    env.close()
    return total, steps


@pytest.fixture(scope="module")
def baseline_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("baseline_debug")
    p = run_script("train.py", "--config", "configs/baselines/debug.yaml", "--run-dir", str(run_dir))
    assert p.returncode == 0, p.stderr[-3000:]
    return run_dir


def test_trains_evaluates_and_checkpoints(baseline_run: Path) -> None:
    summary = json.loads((baseline_run / "summary.json").read_text())
    assert (summary["algorithm"], summary["agent_steps"], summary["env_steps"]) == ("SAC", 50, 400)
    assert summary["final_eval"]["episodes"] == 1 and len(summary["final_eval"]["returns"]) == 1
    # every evaluation re-run by hand: the saved weights of that moment, deterministic actions, the episode of seed
    # eval_seed (1_000_000) stepped to its end, rewards summed (the final one: model.zip; at 200 and 400 env steps:
    # the checkpoints written at the same agent steps, 25 and 50)
    final, steps = _episode_return(baseline_run / "model.zip", 1_000_000)
    assert steps == 125  # 1000 env steps at action repeat 8
    assert summary["final_eval"]["return_mean"] == pytest.approx(final, abs=1e-3)
    assert summary["final_eval"]["returns"] == [pytest.approx(final, abs=0.006)]  # stored to 2 decimals
    at_200, _ = _episode_return(baseline_run / "sb3_checkpoints" / "sac_25_steps.zip", 1_000_000)
    at_400, _ = _episode_return(baseline_run / "sb3_checkpoints" / "sac_50_steps.zip", 1_000_000)
    assert summary["evaluations"] == [[200, pytest.approx(at_200, abs=1e-3)], [400, pytest.approx(at_400, abs=1e-3)]]
    assert abs(at_200 - at_400) > 0.1  # training changed the policy: the two evaluations are told apart
    saved = sorted(p.name for p in (baseline_run / "sb3_checkpoints").iterdir())
    assert saved == ["sac_25_steps.zip", "sac_50_steps.zip", "sac_replay_buffer_25_steps.pkl",
                     "sac_replay_buffer_50_steps.pkl", "sac_resume_25_steps.pt",
                     "sac_resume_50_steps.pt"]  # every 200 env steps = 25 agent steps, with the exact-resume state
    assert "eval/mean_reward" in (baseline_run / "progress.csv").read_text().splitlines()[0]
    assert [e[0] for e in summary["evaluations"]] == [200, 400]  # every eval_every env steps, in env steps


def test_resumes_from_its_last_checkpoint(baseline_run: Path, tmp_path: Path) -> None:
    import shutil

    run_dir = tmp_path / "resumed"
    shutil.copytree(baseline_run, run_dir)
    p = run_script("train.py", "--config", "configs/baselines/debug.yaml", "--run-dir", str(run_dir),
                   "--set", "env_steps=600")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "resumed sac from" in p.stderr and "at 50 agent steps" in p.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["agent_steps"] == 75 and [e[0] for e in summary["evaluations"]] == [200, 400, 600]
    assert (run_dir / "sb3_checkpoints" / "sac_75_steps.zip").exists()
    # one log for the whole run: the first part's rows (up to its checkpoint) kept, the new ones after them
    first = (baseline_run / "progress.csv").read_text().splitlines()
    both = (run_dir / "progress.csv").read_text().splitlines()
    assert not list(run_dir.glob("progress_*.csv"))
    assert both[: len(first)] == first and len(both) > len(first)


def test_a_truncated_latest_checkpoint_is_skipped_on_resume(baseline_run: Path, tmp_path: Path) -> None:
    """A kill during a checkpoint write used to leave a 0-byte zip that broke every later resume."""
    import shutil

    run_dir = tmp_path / "killed"
    shutil.copytree(baseline_run, run_dir)
    ckpts = run_dir / "sb3_checkpoints"
    (ckpts / "sac_50_steps.zip").write_bytes(b"")  # what an interrupted in-place write leaves
    p = run_script("train.py", "--config", "configs/baselines/debug.yaml", "--run-dir", str(run_dir))
    assert p.returncode == 0, p.stderr[-3000:]
    assert "skipping the broken checkpoint" in p.stderr and "at 25 agent steps" in p.stderr
    assert (ckpts / "sac_50_steps.zip").stat().st_size > 0  # rewritten by the resumed run
    assert not [f for f in ckpts.iterdir() if f.name.startswith(".tmp-")]  # no temporary files left behind


def test_its_zip_is_a_self_describing_entry(baseline_run: Path, tmp_path: Path) -> None:
    (entry,) = load_entries([EntrySpec(baseline_run / "model.zip")])  # no checkpoint entry needed
    assert (entry.label, entry.kind, entry.env_id, entry.action_repeat) == (
        "SAC (model-free)", "sb3-obs", "dm_control/cartpole-swingup-v0", 8)
    assert entry.train_env_steps == 400 and entry.samples_per_action == 0 and entry.model is None
    recorded = json.loads((baseline_run / "summary.json").read_text())["evaluations"]
    assert entry.training_curve == [[float(s), pytest.approx(r)] for s, r in recorded]  # its learning curve
    summary = compare([EntrySpec(baseline_run / "model.zip")], tmp_path / "r", episodes=2, seed=5, progress=False)
    assert summary["entries"][0]["agent_steps"] == [125, 125]
    assert Path(summary["files"]["training"]).is_file()


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="'clip_range' is not an argument of SAC.*allowed: .*learning_starts"):
        build(baseline.Config, {"algo_kwargs": {"clip_range": 0.2}})
    with pytest.raises(ConfigError, match="set by the experiment"):
        build(baseline.Config, {"algo_kwargs": {"seed": 5}})
    with pytest.raises(ConfigError, match="must be one of"):
        build(baseline.Config, {"algorithm": "dqn"})
    with pytest.raises(ConfigError, match="at least one agent step"):
        build(baseline.Config, {"env_steps": 4, "action_repeat": 8})
    assert build(baseline.Config, {"algorithm": "ppo", "algo_kwargs": {"n_steps": 64}}).agent_steps == 30_000 // 8
    p = run_script("train.py", "--config", "configs/baselines/debug.yaml", "--set", "algo_kwargs.gradient_step=2")
    assert p.returncode == 2 and "gradient_step" in p.stderr and "gradient_steps" in p.stderr


def test_evaluate_checkpoint_points_a_zip_to_entry(baseline_run: Path) -> None:
    p = run_script("evaluate.py", "--checkpoint", str(baseline_run / "model.zip"))
    assert p.returncode == 2 and "is an SB3 model zip, not a checkpoint: evaluate it with --entry" in p.stderr


class _Payload:
    """Unpickling calls ``os.system``: what a tampered SB3 file would carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        import os

        return os.system, (f"touch {self.marker}",)


def _tamper_zip_item(path: Path, key: str, payload: object) -> None:
    """Replace one cloudpickled item of an SB3 zip's ``data`` by ``payload``, pickled."""
    import base64
    import pickle
    import zipfile

    with zipfile.ZipFile(path) as z:
        files = {name: z.read(name) for name in z.namelist()}
    data = json.loads(files["data"])
    data[key] = {":type:": "<class 'object'>", ":serialized:": base64.b64encode(pickle.dumps(payload)).decode()}
    files["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(path, "w") as z:
        for name, content in files.items():
            z.writestr(name, content)


def test_tampered_sb3_files_run_no_code(baseline_run: Path, tmp_path: Path) -> None:
    """A replay buffer and a model zip that would run a command when unpickled: the resume refuses both (falling
    back to the checkpoint before, then stopping: no checkpoint loads) and evaluate.py refuses the zip; the command
    never runs."""
    import pickle
    import shutil

    marker = tmp_path / "PWNED"
    run_dir = tmp_path / "run"
    shutil.copytree(baseline_run, run_dir)
    ckpts = run_dir / "sb3_checkpoints"
    (ckpts / "sac_replay_buffer_50_steps.pkl").write_bytes(pickle.dumps(_Payload(marker)))
    _tamper_zip_item(ckpts / "sac_25_steps.zip", "lr_schedule", _Payload(marker))
    p = run_script("train.py", "--config", "configs/baselines/debug.yaml", "--run-dir", str(run_dir))
    assert p.returncode == 1, p.stderr[-3000:]
    assert p.stderr.count("skipping the broken checkpoint") == 2 and "refused to unpickle posix.system" in p.stderr
    assert "none of the 2 checkpoints" in p.stderr.strip().splitlines()[-1] and "Traceback" not in p.stderr
    assert not marker.exists()
    evil = tmp_path / "evil.zip"
    shutil.copyfile(baseline_run / "model.zip", evil)
    _tamper_zip_item(evil, "observation_space", _Payload(marker))
    with pytest.raises(EntryError, match="refused to unpickle posix.system"):
        load_entries([EntrySpec(evil)])
    assert not marker.exists()


def test_progress_reads_the_newest_checkpoint_name_in_environment_steps(tmp_path: Path) -> None:
    """What train.py compares a lowered budget with: the newest ``sac_<agent steps>_steps.zip``, times the repeat."""
    from dcem_agents.experiments import ppo

    cfg = build(baseline.Config, {"experiment": "baseline", "algorithm": "sac", "action_repeat": 4})
    assert baseline.progress(cfg, tmp_path) is None
    folder = tmp_path / "sb3_checkpoints"
    folder.mkdir()
    for steps in (250, 1000, 750):
        (folder / f"sac_{steps}_steps.zip").write_bytes(b"")
    (folder / "ppo_5000_steps.zip").write_bytes(b"")  # another algorithm's name is not this run's progress
    assert baseline.progress(cfg, tmp_path) == 4000
    assert ppo.progress(None, tmp_path) == 5000


def test_environment_steps_are_counted_exactly_where_episodes_end_early(tmp_path: Path) -> None:
    """InvertedPendulum-v5 under random early actions falls within a few steps, often inside an action repeat of 3:
    the budget and the evaluations count the steps really taken (as the planning agents do), not agent steps x 3."""
    from stable_baselines3 import SAC

    run_dir = tmp_path / "run"
    p = run_script("train.py", "--config", "configs/baselines/debug.yaml", "--run-dir", str(run_dir),
                   "--set", "env_id=InvertedPendulum-v5", "--set", "action_repeat=3", "--set", "env_steps=300",
                   "--set", "eval_every=150", "--set", "checkpoint_every=150")
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert 300 <= summary["env_steps"] < 303  # stopped at the first agent step that reached the budget
    assert summary["env_steps"] < 3 * summary["agent_steps"]  # some repeats were cut short by a fall
    assert [e[0] >= 150 for e in summary["evaluations"]] == [True, True] and summary["evaluations"][-1][0] >= 300
    # the count is the model's own, saved in its zip (a resumed run continues it)
    model = SAC.load(run_dir / "model.zip", device="cpu")
    assert model.dcem_env_steps == summary["env_steps"]
    entry = load_entries([EntrySpec(run_dir / "model.zip")])[0]  # and the comparison reports it
    assert entry.train_env_steps == summary["env_steps"]
