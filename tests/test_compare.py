"""The comparison report of ``evaluate.py --entry ...``: statistics on known inputs, entry parsing, the report files
from the debug checkpoints of all three phases, videos, and the error messages."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from _scripts import run_script

from dcem_agents.evaluation import compare as compare_mod
from dcem_agents.evaluation.entries import Entry, EntryError, EntrySpec, load_entry, parse_entry
from dcem_agents.evaluation.stats import bootstrap_ci, interquartile_mean, paired_differences, summarize
from dcem_agents.training import save_checkpoint


# ---------------------------------------------------------------- statistics
def test_interquartile_mean_known_values() -> None:
    assert interquartile_mean([1, 2, 3, 4, 5, 6, 7, 8]) == pytest.approx(4.5)  # mean of 3, 4, 5, 6
    assert interquartile_mean([100, -50, 1, 2, 3, 4, 5, 6]) == pytest.approx(3.5)  # outliers cut, order irrelevant
    assert interquartile_mean([7.0]) == 7.0 and interquartile_mean([1, 3]) == 2.0
    x = np.random.default_rng(0).normal(size=101)
    from scipy.stats import trim_mean

    assert interquartile_mean(x) == pytest.approx(trim_mean(x, 0.25))


def test_bootstrap_ci_contains_mean_shrinks_and_is_seeded() -> None:
    rng = np.random.default_rng(1)
    small, large = rng.normal(10.0, 2.0, 25), rng.normal(10.0, 2.0, 400)
    for x in (small, large):
        lo, hi = bootstrap_ci(x)
        assert lo < x.mean() < hi
    width = lambda x: np.subtract(*bootstrap_ci(x)[::-1])  # noqa: E731
    assert width(large) < 0.5 * width(small)  # ~ 1/sqrt(n): 4x smaller expected
    assert width(small) == pytest.approx(2 * 1.96 * small.std() / 5, rel=0.2)  # near the normal interval
    assert bootstrap_ci(small, seed=3) == bootstrap_ci(small, seed=3) != bootstrap_ci(small, seed=4)
    assert bootstrap_ci([5.0]) == (5.0, 5.0)
    with pytest.raises(ValueError):
        bootstrap_ci([])


def test_summarize() -> None:
    s = summarize([1.0, 2.0, 3.0, 10.0])
    assert s["mean"] == 4.0 and s["median"] == 2.5 and s["iqm"] == 2.5 and s["min"] == 1.0 and s["max"] == 10.0
    assert s["std"] == pytest.approx(np.std([1, 2, 3, 10], ddof=1))
    assert s["ci95"][0] <= s["mean"] <= s["ci95"][1]
    assert summarize([3.0])["std"] == 0.0


def test_paired_differences_known_values() -> None:
    a, b, c = [10.0, 20.0, 30.0, 40.0], [12.0, 22.0, 32.0, 42.0], [9.0, 25.0, 30.0, 35.0]
    ab, ac, bc = paired_differences(["a", "b", "c"], [a, b, c])
    assert (ab["a"], ab["b"], ac["b"], bc["a"]) == ("a", "b", "c", "b")
    # a constant shift: the paired interval is that shift exactly, although the unpaired spread of a and b is large
    assert ab["mean"] == 2.0 and ab["ci95"] == [2.0, 2.0] and ab["b_higher"] == 1.0
    assert ac["mean"] == pytest.approx(np.mean([-1, 5, 0, -5])) and ac["b_higher"] == 0.25  # ties do not count
    assert ac["ci95"][0] < ac["mean"] < ac["ci95"][1]
    assert bc["mean"] == pytest.approx(np.mean([-3, 3, -2, -7]))
    with pytest.raises(ValueError, match="same episodes"):
        paired_differences(["a", "b"], [a, b[:3]])


# ---------------------------------------------------------------- entries
def test_parse_entry() -> None:
    assert parse_entry("a/b.pt") == EntrySpec(Path("a/b.pt"))
    assert parse_entry("a/b.pt:dcem") == EntrySpec(Path("a/b.pt"), "dcem")
    assert parse_entry("a/b.pt:latent-cem@hard") == EntrySpec(Path("a/b.pt"), "latent-cem", "hard")
    assert parse_entry("a/b.pt:ppo@DCEM + PPO") == EntrySpec(Path("a/b.pt"), "ppo", "DCEM + PPO")
    assert parse_entry("model.zip@mine") == EntrySpec(Path("model.zip"), None, "mine")
    with pytest.raises(EntryError):
        parse_entry("a.pt@")
    with pytest.raises(EntryError):
        parse_entry(":cem")


def test_parse_entry_planner_settings() -> None:
    spec = parse_entry("a/b.pt:dcem+bf16(n_samples=15, n_iters=10,n_elites=3)@15 x 10")
    assert spec == EntrySpec(Path("a/b.pt"), "dcem", "15 x 10", "bf16", (("n_samples", 15), ("n_iters", 10),
                                                                         ("n_elites", 3)))
    assert parse_entry("a.pt:cem(init_std=0.25)").planner == (("init_std", 0.25),)
    assert parse_entry("a.pt:cem(warm_start=False, n_iters=3)").planner == (("warm_start", False), ("n_iters", 3))
    assert parse_entry("a.pt:cem(warm_start=true)").planner == (("warm_start", True),)
    for bad, match in (("a.pt:dcem(n_samples=1.5)", "whole number"), ("a.pt:dcem(latent_dim=3)", "KEY one of"),
                       ("a.pt:cem(warm_start=0)", "true or false"), ("a.pt:cem(warm_start=yes)", "true or false"),
                       ("a.pt:dcem(n_iters)", "KEY=VALUE"), ("a.pt:dcem()", "empty"),
                       ("a.pt:dcem(n_iters=2,n_iters=3)", "twice"), ("a.pt:dcem(n_iters=2", "cannot read")):
        with pytest.raises(EntryError, match=match):
            parse_entry(bad)


def test_entries_must_share_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake(spec: EntrySpec, device: object, runtime: object = None) -> Entry:
        env_id = "Pendulum-v1" if "pendulum" in str(spec.path) else "dm_control/cartpole-swingup-v0"
        return Entry("latent DCEM", spec.path, "dcem", "dcem", env_id, 8, None, None, 1, None)  # type: ignore[arg-type]

    monkeypatch.setattr(compare_mod, "load_entry", fake)
    same = compare_mod.load_entries([EntrySpec(Path("a.pt")), EntrySpec(Path("b.pt")), EntrySpec(Path("c/b.pt"))])
    assert [e.label for e in same] == ["latent DCEM (a)", "latent DCEM (b)", "latent DCEM (b) #2"]
    with pytest.raises(EntryError, match="same environment id"):
        compare_mod.load_entries([EntrySpec(Path("a.pt")), EntrySpec(Path("pendulum.pt"))])


def test_run_entry_is_seeded(phase1_checkpoint: Path) -> None:
    entry = load_entry(EntrySpec(phase1_checkpoint))
    assert (entry.kind, entry.controller_name, entry.label) == ("planet", "cem", "full-space CEM")
    assert entry.samples_per_action == 16 * 2 and entry.train_env_steps == 3000  # the debug preset's planner
    a = compare_mod.run_entry(entry, [7, 8], n_envs=2, seed=7)
    b = compare_mod.run_entry(entry, [7, 8], n_envs=2, seed=7)
    assert a.returns == b.returns and a.agent_steps == [125, 125] and a.plan_calls == 125


def test_entries_override_the_planners_budget(phase1_checkpoint: Path, phase2_checkpoint: Path,
                                              phase3_checkpoint: Path) -> None:
    """The same checkpoint with its search budget spent differently: the planner and the report's samples change, the
    label says how, and a bad budget or a policy entry is refused with the entry named."""
    base = load_entry(EntrySpec(phase2_checkpoint, "dcem"))
    spec = parse_entry(f"{phase2_checkpoint}:dcem(n_samples=6,n_elites=2,n_iters=4,init_std=0.3)")
    entry = load_entry(spec)
    s = entry.controller.settings
    assert (s.n_samples, s.n_elites, s.n_iters, s.init_std) == (6, 2, 4, 0.3)
    assert s.temperature == base.controller.settings.temperature  # what is not named stays
    assert entry.samples_per_action == 24 and entry.label == "latent DCEM (n_samples=6, n_elites=2, n_iters=4, init_std=0.3)"
    hard = load_entry(parse_entry(f"{phase2_checkpoint}:latent-cem(n_iters=3)"))
    assert hard.controller.settings.temperature is None and hard.controller.settings.n_iters == 3
    cem = load_entry(parse_entry(f"{phase1_checkpoint}:cem(n_samples=8,n_elites=2)"))
    assert (cem.controller.n_samples, cem.controller.n_elites, cem.samples_per_action) == (8, 2, 8 * 2)
    a = compare_mod.run_entry(entry, [3, 4], n_envs=2, seed=3)
    b = compare_mod.run_entry(base, [3, 4], n_envs=2, seed=3)
    assert a.returns != b.returns  # another search, another plan
    with pytest.raises(EntryError, match="n_elites"):
        load_entry(parse_entry(f"{phase2_checkpoint}:dcem(n_samples=4,n_elites=5)"))
    with pytest.raises(EntryError, match="init_std is a setting of the latent planners"):
        load_entry(parse_entry(f"{phase1_checkpoint}:cem(init_std=0.3)"))
    cold = load_entry(parse_entry(f"{phase1_checkpoint}:cem(warm_start=false)"))
    warm = load_entry(EntrySpec(phase1_checkpoint, "cem"))
    assert warm.controller.warm_start and not cold.controller.warm_start and cold.label.endswith("(warm_start=False)")
    assert cold.samples_per_action == warm.samples_per_action  # the same search, started afresh every step
    assert compare_mod.run_entry(cold, [3], n_envs=1, seed=3).returns != compare_mod.run_entry(warm, [3], n_envs=1,
                                                                                               seed=3).returns
    with pytest.raises(EntryError, match="warm_start is a setting of full-space CEM"):
        load_entry(parse_entry(f"{phase2_checkpoint}:dcem(warm_start=true)"))
    longer = load_entry(parse_entry(f"{phase1_checkpoint}:cem(horizon=7)"))
    assert longer.controller.horizon == 7 and warm.controller.horizon != 7
    assert len(compare_mod.run_entry(longer, [3], n_envs=1, seed=3).returns) == 1  # plans of 7 steps run
    for bad, match in (("cem(horizon=0)", "horizon >= 1"), ("cem(horizon=2.5)", "whole number")):
        with pytest.raises(EntryError, match=match):
            load_entry(parse_entry(f"{phase1_checkpoint}:{bad}"))
    with pytest.raises(EntryError, match="horizon is a setting of full-space CEM"):
        load_entry(parse_entry(f"{phase2_checkpoint}:latent-cem(horizon=8)"))
    assert load_entry(parse_entry(f"{phase2_checkpoint}:dcem(temperature=0.1)")).controller.settings.temperature == 0.1
    for bad, match in (("latent-cem(temperature=0.1)", "hard elites"), ("dcem(temperature=0)", "> 0")):
        with pytest.raises(EntryError, match=match):
            load_entry(parse_entry(f"{phase2_checkpoint}:{bad}"))
    with pytest.raises(EntryError, match="policy_kwargs"):
        load_entry(parse_entry(f"{phase3_checkpoint}:ppo(n_iters=2)"))
    # execute_best: every planner, acting on the best evaluated sequence (tests/test_mpc.py, test_latent_controller.py)
    for path, name in ((phase2_checkpoint, "dcem"), (phase2_checkpoint, "latent-cem")):
        best = load_entry(parse_entry(f"{path}:{name}(execute_best=true)"))
        assert best.controller.settings.execute_best and best.label.endswith("(execute_best=True)")
        assert not load_entry(EntrySpec(path, name)).controller.settings.execute_best
    best_cem = load_entry(parse_entry(f"{phase1_checkpoint}:cem(execute_best=true)"))
    assert best_cem.controller.execute_best and not warm.controller.execute_best
    assert compare_mod.run_entry(best_cem, [3], n_envs=1, seed=3).returns != compare_mod.run_entry(
        warm, [3], n_envs=1, seed=3).returns
    with pytest.raises(EntryError, match="true or false"):
        load_entry(parse_entry(f"{phase2_checkpoint}:dcem(execute_best=2)"))
    # reuse_plan: the latent planners; the report counts the previous plan's scoring (and the mean's) in its samples
    reused = load_entry(parse_entry(f"{phase2_checkpoint}:dcem(reuse_plan=true,execute_best=true)"))
    assert reused.controller.settings.reuse_plan and reused.samples_per_action == base.samples_per_action + 1
    assert load_entry(parse_entry(f"{phase2_checkpoint}:latent-cem(reuse_plan=true)")).samples_per_action == (
        base.samples_per_action + 2)
    assert compare_mod.run_entry(reused, [3], n_envs=1, seed=3).returns != compare_mod.run_entry(
        load_entry(parse_entry(f"{phase2_checkpoint}:dcem(execute_best=true)")), [3], n_envs=1, seed=3).returns
    with pytest.raises(EntryError, match="reuse_plan is a setting of the latent planners"):
        load_entry(parse_entry(f"{phase1_checkpoint}:cem(reuse_plan=true)"))


def test_a_ppo_checkpoint_acts_without_its_phase2_file_but_its_start_policy_needs_it(phase3_checkpoint: Path,
                                                                                     tmp_path: Path) -> None:
    """A shipped ppo checkpoint trained from a run folder's phase-2 checkpoint: the fine-tuned policy carries every
    weight, so it loads and acts as before on a machine without that file; the policy before PPO is that file's weights,
    so asking for it is an error, never an untrained policy (entries and ``evaluate.py --checkpoint`` alike)."""
    from dcem_agents.experiments import ppo
    from dcem_agents.training import CheckpointError, load_checkpoint

    ckpt = load_checkpoint(phase3_checkpoint)
    ckpt["config"]["phase2_checkpoint"] = ckpt["policy_kwargs"]["checkpoint"] = str(tmp_path / "gone" / "dcem.pt")
    moved = tmp_path / "ppo_moved.pt"
    torch.save(ckpt, moved)
    here, there = load_entry(EntrySpec(phase3_checkpoint, "ppo")), load_entry(EntrySpec(moved, "ppo"))
    assert (there.env_id, there.action_repeat, there.train_env_steps) == (here.env_id, here.action_repeat,
                                                                           here.train_env_steps)
    a = compare_mod.run_entry(here, [5, 6], n_envs=2, seed=5)
    b = compare_mod.run_entry(there, [5, 6], n_envs=2, seed=5)
    assert a.returns == b.returns
    with pytest.raises(EntryError, match="gone"):
        load_entry(EntrySpec(moved, "dcem"))
    with pytest.raises(CheckpointError, match="not found"):
        ppo.load_policy(ckpt, torch.device("cpu"), fine_tuned=False)


def test_latent_hard_cem_is_the_same_planner_with_hard_elites(phase2_checkpoint: Path) -> None:
    soft = load_entry(EntrySpec(phase2_checkpoint, "dcem"))
    hard = load_entry(EntrySpec(phase2_checkpoint, "latent-cem"))
    assert (hard.label, hard.kind, hard.controller_name) == ("latent hard CEM", "dcem", "latent-cem")
    assert hard.controller.settings.temperature is None and soft.controller.settings.temperature is not None
    assert hard.controller.settings.n_samples == soft.controller.settings.n_samples
    assert hard.samples_per_action == soft.samples_per_action
    a = compare_mod.run_entry(soft, [3, 4], n_envs=2, seed=3)
    b = compare_mod.run_entry(hard, [3, 4], n_envs=2, seed=3)
    assert a.agent_steps == b.agent_steps == [125, 125] and a.returns != b.returns


# ---------------------------------------------------------------- evaluate.py
def test_report_of_all_phases(phase1_checkpoint: Path, phase2_checkpoint: Path, phase3_checkpoint: Path,
                              tmp_path: Path) -> None:
    prefix = tmp_path / "report" / "cmp"
    zip_path = phase3_checkpoint.parent / "model.zip"
    p = run_script("evaluate.py", "--entry", f"{phase1_checkpoint}:cem", "--entry", f"{phase2_checkpoint}:dcem",
                   "--entry", f"{phase3_checkpoint}:ppo", "--entry", f"{zip_path}@zip", "--episodes", "2",
                   "--n-envs", "2", "--seed", "11", "--out", str(prefix), "--device", "cpu")
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads(prefix.with_suffix(".json").read_text())
    entries = summary["entries"]
    assert [e["label"] for e in entries] == ["full-space CEM", "latent DCEM", "latent DCEM + PPO", "zip"]
    assert [(e["kind"], e["controller"]) for e in entries] == [("planet", "cem"), ("dcem", "dcem"), ("ppo", "ppo"),
                                                               ("sb3", "ppo")]
    assert summary["env_id"] == "dm_control/cartpole-swingup-v0" and summary["episode_seeds"] == [11, 12]
    for e in entries:
        s = e["stats"]
        assert len(e["returns"]) == e["episodes"] == 2 and e["agent_steps"] == [125, 125]
        assert s["mean"] == pytest.approx(np.mean(e["returns"]), abs=1e-3)
        assert s["median"] == pytest.approx(np.median(e["returns"]), abs=1e-3)
        assert s["ci95"][0] <= s["mean"] <= s["ci95"][1] and s["std"] >= 0
        assert e["eval_env_steps"] == 250 * 8 and e["ms_per_action"] > 0 and e["samples_per_action"] > 0
        assert e["planner_runtime"]["rollout"] in ("lean", "reference")  # every entry here plans
    assert entries[0]["samples_per_action"] == 32 and entries[1]["samples_per_action"] == 16  # debug presets
    assert entries[2]["train_env_steps"] > entries[1]["train_env_steps"] > entries[0]["train_env_steps"]
    assert entries[3]["returns"] == entries[2]["returns"]  # the SB3 zip is the same policy as the ppo checkpoint
    rows = list(csv.DictReader(Path(f"{prefix}_episodes.csv").open()))
    assert len(rows) == 8 and {r["env_seed"] for r in rows} == {"11", "12"}
    assert float(rows[0]["return"]) == pytest.approx(entries[0]["returns"][0])
    pairs = summary["paired_differences"]
    assert [(d["a"], d["b"]) for d in pairs][:3] == [("full-space CEM", "latent DCEM"),
                                                     ("full-space CEM", "latent DCEM + PPO"), ("full-space CEM", "zip")]
    assert len(pairs) == 6 and pairs[-1]["mean"] == 0.0 and pairs[-1]["ci95"] == [0.0, 0.0]  # ppo vs its own zip
    assert pairs[0]["mean"] == pytest.approx(np.mean(entries[1]["returns"]) - np.mean(entries[0]["returns"]), abs=1e-3)
    md = prefix.with_suffix(".md").read_text()
    assert md.count("\n| ") == 2 * (1 + 4) + 2  # header + 4 entries, header + 6 pairs
    assert "IQM" in md and "B − A" in md and "latent DCEM + PPO" in md and md in p.stdout
    assert prefix.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the learning curves of the runs behind the entries, as their files record them
    planet_ckpt = torch.load(phase1_checkpoint, weights_only=False)
    assert entries[0]["training_curve"] == [[float(e["env_steps"]), pytest.approx(e["return_mean"])]
                                            for e in planet_ckpt["trainer"]["evaluations"]]
    ppo_curve = entries[2]["training_curve"]  # before and after PPO, on the env-step axis after phase 2
    ppo_summary = json.loads((phase3_checkpoint.parent / "summary.json").read_text())
    assert [y for _, y in ppo_curve] == pytest.approx([ppo_summary["before"]["return_mean"],
                                                       ppo_summary["after"]["return_mean"]])
    assert ppo_curve[0][0] == entries[1]["train_env_steps"] and ppo_curve[1][0] == entries[2]["train_env_steps"]
    assert entries[3]["training_curve"] is None  # an SB3 zip records none
    assert Path(summary["files"]["training"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Learning curves of the training runs" in md


# ---------------------------------------------------------------- PPO learning curve
def test_ppo_curve_specs_pick_saved_checkpoints(phase3_checkpoint: Path, tmp_path: Path) -> None:
    from dcem_agents.evaluation.ppo_curve import curve_specs, saved_steps

    run_dir = phase3_checkpoint.parent  # the debug preset saves at 32 and 64 PPO steps
    assert list(saved_steps(run_dir)) == [32, 64]
    specs, steps = curve_specs(run_dir)  # no checkpoint reaches 5k: step 0 and the newest
    assert steps == [0, 64] and [(sp.controller, sp.label) for sp in specs] == [("dcem", "0 PPO steps"),
                                                                                ("ppo", "64 PPO steps")]
    assert specs[0].path.name == "ppo_32_steps.zip" and specs[1].path.name == "ppo_64_steps.zip"
    specs, steps = curve_specs(run_dir, [64, 0, 32])
    assert steps == [0, 32, 64] and [sp.path.name for sp in specs][1:] == ["ppo_32_steps.zip", "ppo_64_steps.zip"]
    with pytest.raises(EntryError, match="no checkpoint at 48 PPO steps; saved: 32, 64"):
        curve_specs(run_dir, [0, 48])
    with pytest.raises(EntryError, match="no SB3 checkpoints"):
        curve_specs(tmp_path)


def test_ppo_curve_report(phase3_checkpoint: Path, tmp_path: Path) -> None:
    """Step 0 is the phase-2 policy and the last step the run's final policy, each on the same episodes; the gains
    are the paired differences to step 0; the figure is the curve."""
    prefix = tmp_path / "curve"
    p = run_script("evaluate.py", "--ppo-curve", str(phase3_checkpoint.parent), "--steps", "0", "32", "64",
                   "--episodes", "2", "--n-envs", "2", "--seed", "11", "--out", str(prefix), "--device", "cpu")
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads(prefix.with_suffix(".json").read_text())
    entries, points = summary["entries"], summary["curve"]["points"]
    assert [pt["steps"] for pt in points] == [0, 32, 64] and summary["curve"]["x"] == "PPO agent steps"
    assert [(e["kind"], e["controller"]) for e in entries] == [("sb3", "dcem"), ("sb3", "ppo"), ("sb3", "ppo")]
    reference = compare_mod.compare([EntrySpec(phase3_checkpoint, "dcem"), EntrySpec(phase3_checkpoint, "ppo")],
                                    tmp_path / "ref", episodes=2, seed=11, n_envs=2, progress=False)["entries"]
    assert entries[0]["returns"] == reference[0]["returns"]  # step 0: the phase-2 weights PPO started from
    assert entries[2]["returns"] == reference[1]["returns"]  # the newest zip: the run's final policy
    assert points[0]["gain"] is None
    for pt, e in zip(points[1:], entries[1:]):
        assert pt["gain"] == pytest.approx(np.mean(e["returns"]) - np.mean(entries[0]["returns"]), abs=1e-3)
        assert pt["gain_ci95"][0] <= pt["gain"] <= pt["gain_ci95"][1]
    md = prefix.with_suffix(".md").read_text()
    assert "Learning curve (PPO agent steps" in md and "| 64 |" in md
    assert prefix.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ppo_curve_input_errors(phase3_checkpoint: Path, tmp_path: Path) -> None:
    from _scripts import run_main

    for argv, message in [(["--ppo-curve", str(tmp_path)], "no SB3 checkpoints"),
                          (["--ppo-curve", str(phase3_checkpoint.parent), "--steps", "0", "50"],
                           "no checkpoint at 50 PPO steps; saved: 32, 64"),
                          (["--entry", str(phase3_checkpoint), "--steps", "0"], "--steps goes with --ppo-curve"),
                          (["--ppo-curve", str(tmp_path), "--steps", "-1"], "--steps must be >= 0")]:
        p = run_main("evaluate.py", *argv)
        assert p.returncode == 2 and message in p.stderr, (argv, p.stderr)


# ---------------------------------------------------------------- model-free SB3 baselines
@pytest.fixture(scope="module")
def model_free_zips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """SB3 PPO and SAC zips on the flat cartpole-swingup observations (action repeat 8), and a Pendulum PPO zip."""
    from stable_baselines3 import PPO, SAC

    from dcem_agents.envs import make_env

    d = tmp_path_factory.mktemp("sb3_model_free")
    env = make_env("dm_control/cartpole-swingup-v0", action_repeat=8, seed=0)
    PPO("MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=1, seed=0, device="cpu").learn(64).save(d / "ppo")
    SAC("MlpPolicy", env, learning_starts=8, seed=0, device="cpu").learn(16).save(d / "sac")
    PPO("MlpPolicy", make_env("Pendulum-v1"), n_steps=32, batch_size=32, n_epochs=1, seed=0,
        device="cpu").learn(32).save(d / "pendulum")
    return {k: d / f"{k}.zip" for k in ("ppo", "sac", "pendulum")}


def _sb3_returns(zip_path: Path, algo: type, seeds: list[int]) -> list[float]:
    """Returns of SB3's own loaded model (deterministic ``predict``) on the comparison's environments: the reference."""
    from dcem_agents.envs import make_env

    model, returns = algo.load(zip_path, device="cpu"), []
    for seed in seeds:
        env = make_env("dm_control/cartpole-swingup-v0", action_repeat=8)
        obs, _ = env.reset(seed=seed)
        total, done = 0.0, False
        while not done:
            obs, reward, term, trunc, _ = env.step(model.predict(obs, deterministic=True)[0])
            total, done = total + reward, term or trunc
        returns.append(total)
    return returns


def test_model_free_zips_run_on_the_checkpoints_environment(phase1_checkpoint: Path, model_free_zips: dict[str, Path],
                                                            tmp_path: Path) -> None:
    from stable_baselines3 import PPO, SAC

    specs = [EntrySpec(phase1_checkpoint), EntrySpec(model_free_zips["ppo"]), EntrySpec(model_free_zips["sac"], "policy",
                                                                                       "SAC baseline")]
    summary = compare_mod.compare(specs, tmp_path / "mf", episodes=3, seed=21, n_envs=2, progress=False)
    cem, ppo, sac = summary["entries"]
    assert [(e["label"], e["kind"], e["controller"]) for e in (ppo, sac)] == [("ppo", "sb3-obs", "policy"),
                                                                              ("SAC baseline", "sb3-obs", "policy")]
    for e in (ppo, sac):  # the environment and action repeat of the checkpoint entry; no planning
        assert (e["env_id"], e["action_repeat"], e["samples_per_action"]) == (cem["env_id"], 8, 0)
        assert e["agent_steps"] == [125] * 3 and e["ms_per_action"] > 0
    assert (ppo["train_env_steps"], sac["train_env_steps"]) == (64 * 8, 16 * 8)  # SB3's num_timesteps × repeat
    # batched, in lockstep with 2 environments: the same returns as SB3's own model, one environment at a time
    assert ppo["returns"] == pytest.approx(_sb3_returns(model_free_zips["ppo"], PPO, [21, 22, 23]), abs=1e-3)
    assert sac["returns"] == pytest.approx(_sb3_returns(model_free_zips["sac"], SAC, [21, 22, 23]), abs=1e-3)
    assert len(summary["paired_differences"]) == 3
    assert "sb3-obs:policy" in (tmp_path / "mf.md").read_text()


def test_model_free_zip_errors(phase1_checkpoint: Path, model_free_zips: dict[str, Path]) -> None:
    with pytest.raises(EntryError, match="do not record their environment"):
        compare_mod.load_entries([EntrySpec(model_free_zips["ppo"])])
    with pytest.raises(EntryError, match=r"does not fit dm_control/cartpole-swingup-v0.*shape \(3,\).*\(5,\)"):
        compare_mod.load_entries([EntrySpec(phase1_checkpoint), EntrySpec(model_free_zips["pendulum"])])
    with pytest.raises(EntryError, match="unknown controller 'ppo' for an SB3 model zip of a model-free policy"):
        load_entry(EntrySpec(model_free_zips["sac"], "ppo"))
    broken = model_free_zips["ppo"].with_name("broken.zip")
    import zipfile

    with zipfile.ZipFile(model_free_zips["ppo"]) as src, zipfile.ZipFile(broken, "w") as dst:
        for item in src.namelist():
            if item != "policy.pth":
                dst.writestr(item, src.read(item))
        dst.writestr("policy.pth", b"not a state dict")
    with pytest.raises(EntryError, match="cannot load this SB3 model zip"):
        load_entry(EntrySpec(broken))


@pytest.mark.slow  # ~15 s: renders 126 frames with MuJoCo (EGL)
def test_video(phase1_checkpoint: Path, tmp_path: Path) -> None:
    prefix = tmp_path / "v"
    p = run_script("evaluate.py", "--entry", f"{phase1_checkpoint}@CEM", "--episodes", "1", "--out", str(prefix),
                   "--video", "--device", "cpu")
    if p.returncode == 2 and "cannot render" in p.stderr:
        pytest.skip(f"no rendering on this machine: {p.stderr.strip().splitlines()[-1]}")
    assert p.returncode == 0, p.stderr[-3000:]
    (video,) = json.loads(prefix.with_suffix(".json").read_text())["videos"]
    assert video["frames"] == 126 and video["fps"] == pytest.approx(12.5)
    assert Path(video["path"]).stat().st_size > 10_000
    if video["format"] == "gif":
        from PIL import Image

        assert Image.open(video["path"]).n_frames == 126


def _evaluate_main():
    path = Path(__file__).resolve().parents[1] / "evaluate.py"
    spec = importlib.util.spec_from_file_location("evaluate_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_errors_are_one_clear_message(phase1_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    main = _evaluate_main()

    def run(*args: str) -> tuple[int, str]:
        try:
            code = main([*args, "--out", str(tmp_path / "x")])
        except SystemExit as e:  # argparse
            code = e.code
        return code, capsys.readouterr().err

    code, err = run("--entry", str(tmp_path / "missing.pt"))
    assert code == 2 and "checkpoint not found" in err
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": 1}, foreign)
    code, err = run("--entry", str(foreign))
    assert code == 2 and "not a dcem-agents checkpoint" in err
    other = save_checkpoint(tmp_path / "opt.pt", "optimize", {}, {})
    code, err = run("--entry", str(other))
    assert code == 2 and "no controller to compare" in err
    code, err = run("--entry", f"{phase1_checkpoint}:dcem")
    assert code == 2 and "unknown controller 'dcem'" in err and "available: cem" in err
    code, err = run("--entry", str(phase1_checkpoint), "--checkpoint", str(phase1_checkpoint))
    assert code == 2 and "not allowed with" in err
    code, err = run("--checkpoint", str(phase1_checkpoint), "--video")
    assert code == 2 and "go with --entry" in err
    assert not list(tmp_path.glob("x*"))  # nothing was written
    p = run_script("evaluate.py", "--entry", f"{phase1_checkpoint}:ppo")  # as a user sees it
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [
        f"evaluate.py: {phase1_checkpoint}: unknown controller 'ppo' for a 'planet' checkpoint; available: cem"]


def test_entry_runtime_syntax() -> None:
    assert parse_entry("ckpt.pt:cem+reference@CEM ref") == EntrySpec(Path("ckpt.pt"), "cem", "CEM ref", "reference")
    assert parse_entry("ckpt.pt:dcem+bf16") == EntrySpec(Path("ckpt.pt"), "dcem", None, "bf16")
    assert parse_entry("ckpt.pt:dcem").runtime is None
    with pytest.raises(EntryError, match="unknown planner runtime 'fp8'"):
        parse_entry("ckpt.pt:dcem+fp8")


def test_entries_take_the_runtime_they_name(phase2_checkpoint: Path) -> None:
    from dcem_agents.planning.runtime import RUNTIME_PRESETS

    ref = load_entry(EntrySpec(phase2_checkpoint, "dcem", runtime="reference"))
    assert ref.controller.runtime == RUNTIME_PRESETS["reference"]
    default = load_entry(EntrySpec(phase2_checkpoint, "dcem"), runtime="bf16")
    assert default.controller.runtime == RUNTIME_PRESETS["bf16"]
    named = load_entry(EntrySpec(phase2_checkpoint, "cem", runtime="fp32"), runtime="bf16")  # the entry's own wins
    assert named.controller.runtime == RUNTIME_PRESETS["fp32"]
    # entries of one file that differ only in their runtime are told apart in the report: label and column
    from dcem_agents.evaluation.entries import runtime_of
    from dcem_agents.evaluation.report import _fmt_runtime

    assert (ref.label, default.label, named.label) == ("latent DCEM (reference)", "latent DCEM",
                                                       "full-space CEM (phase-2 model) (fp32)")
    assert _fmt_runtime(runtime_of(ref.controller)) == " (reference)"
    assert _fmt_runtime(runtime_of(default.controller)) == " (lean bf16)"


# ---------------------------------------------------------------- independent batches and Ray
def test_independent_batches_depend_on_their_own_seeds_only(phase1_checkpoint: Path) -> None:
    (entry,) = compare_mod.load_entries([EntrySpec(phase1_checkpoint, "cem")])
    whole = compare_mod.run_entry(entry, [11, 12, 13, 14], n_envs=2, seed=11, independent_batches=True)
    second = compare_mod.run_entry(entry, [13, 14], n_envs=2, seed=99, independent_batches=True)
    assert whole.returns[2:] == second.returns  # the second batch alone, anywhere, with any entry seed
    shared = compare_mod.run_entry(entry, [11, 12, 13, 14], n_envs=2, seed=11)
    assert shared.returns[:2] == whole.returns[:2]  # the first batch's generator is seeded alike either way ...
    assert shared.returns[2:] != whole.returns[2:]  # ... the second one's is not: the option changes something


def test_a_ray_comparison_equals_a_local_one_with_independent_batches(phase1_checkpoint: Path, phase2_checkpoint: Path,
                                                                      tmp_path: Path) -> None:
    pytest.importorskip("ray")
    entries = ["--entry", f"{phase1_checkpoint}:cem", "--entry", f"{phase2_checkpoint}:dcem"]
    common = ["--episodes", "4", "--n-envs", "2", "--seed", "11", "--device", "cpu"]
    local = compare_mod.compare([parse_entry(e) for e in entries[1::2]], tmp_path / "local", episodes=4, seed=11,
                                n_envs=2, independent_batches=True, progress=False)
    p = run_script("evaluate.py", *entries, *common, "--ray", "--workers", "2", "--out", str(tmp_path / "ray"))
    assert p.returncode == 0, p.stderr[-3000:]
    remote = json.loads((tmp_path / "ray.json").read_text())
    assert remote["ray"] == "local" and remote["planner_noise"] == local["planner_noise"]
    for a, b in zip(local["entries"], remote["entries"]):
        assert a["returns"] == b["returns"] and a["agent_steps"] == b["agent_steps"] and a["stats"] == b["stats"]
    assert local["paired_differences"] == remote["paired_differences"]


def test_a_killed_ray_comparison_resumes_with_the_batches_it_finished(
        phase1_checkpoint: Path, phase2_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ray comparison keeps every batch that extends an entry's evaluated seeds, also when its batches end out of
    order; killed, it resumes on Ray with the rest only, or here with independent batches, and either way writes the
    report of an uninterrupted local run with independent batches. Ray itself is replaced by a stand-in that runs the
    tasks in this process, in a set order (the real one is tested above)."""
    from dcem_agents.training import ray_tasks

    specs = [EntrySpec(phase1_checkpoint, "cem"), EntrySpec(phase2_checkpoint, "dcem")]
    kwargs = dict(episodes=6, seed=11, n_envs=2, progress=False)
    whole = compare_mod.compare(specs, tmp_path / "whole", independent_batches=True, **kwargs)
    sent: list[list[int]] = []  # per ray_map call: the first seed of every task

    def stand_in(function, inputs, on_result, **_) -> None:  # noqa: ANN001 - ray_map's signature
        sent.append([x.seeds[0] for x in inputs])
        order = [1, 0, *range(2, len(inputs))] if len(inputs) > 1 else [0]  # the first two end swapped
        for i in order:
            on_result(i, function(inputs[i]))

    monkeypatch.setattr(ray_tasks, "ray_map", stand_in)
    records: list[tuple[int, ...]] = []
    record = compare_mod._Progress.record
    monkeypatch.setattr(compare_mod._Progress, "record", lambda self, k, run, g: (
        records.append(tuple(e.seed for e in run.episodes)), record(self, k, run, g))[1])
    # killed when the 5th task ends (the second entry's 2nd batch; its 1st has ended and been kept)
    calls = []

    def counted(function, inputs, on_result, **kw) -> None:  # noqa: ANN001
        def on(i: int, r: object) -> None:
            calls.append(i)
            if len(calls) == 5:
                raise KeyboardInterrupt
            on_result(i, r)
        stand_in(function, inputs, on, **kw)

    monkeypatch.setattr(ray_tasks, "ray_map", counted)
    with pytest.raises(KeyboardInterrupt):
        compare_mod.compare(specs, tmp_path / "cut", ray="local", **kwargs)
    # the first entry's prefix grew once both of its first two batches had ended (the 2nd ended first), then again
    assert records == [(11, 12, 13, 14), (11, 12, 13, 14, 15, 16), (11, 12)]
    monkeypatch.setattr(ray_tasks, "ray_map", stand_in)
    resumed = compare_mod.compare(specs, tmp_path / "cut", ray="local", **kwargs)
    assert sent[-1] == [13, 15]  # only the second entry's last two batches were sent again
    assert resumed["reused_episodes"] == 8
    for a, b in zip(whole["entries"], resumed["entries"]):
        assert a["returns"] == b["returns"] and a["agent_steps"] == b["agent_steps"] and a["stats"] == b["stats"]
    # the same kill resumed here, without Ray, with independent batches (the key is the settings, not the way)
    monkeypatch.setattr(ray_tasks, "ray_map", counted)
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        compare_mod.compare(specs, tmp_path / "cut2", ray="local", **kwargs)
    here = compare_mod.compare(specs, tmp_path / "cut2", independent_batches=True, **kwargs)
    assert here["reused_episodes"] == 8 and [e["returns"] for e in here["entries"]] == [
        e["returns"] for e in whole["entries"]]
    # --extend with Ray: only the added entry is sent
    added = EntrySpec(phase2_checkpoint, "latent-cem")
    monkeypatch.setattr(ray_tasks, "ray_map", stand_in)
    extended = compare_mod.compare([*specs, added], tmp_path / "cut", ray="local", extend=True, **kwargs)
    assert sent[-1] == [11, 13, 15] and extended["reused_episodes"] == 12


def _killed_after(monkeypatch: pytest.MonkeyPatch, batches: int, run: Callable[[], object]) -> None:
    """``run()`` (a comparison) killed by a KeyboardInterrupt right after its ``batches``-th batch was saved."""
    record, calls = compare_mod._Progress.record, []

    def killed(self, *args) -> None:  # noqa: ANN001
        record(self, *args)
        calls.append(1)
        if len(calls) == batches:
            raise KeyboardInterrupt

    monkeypatch.setattr(compare_mod._Progress, "record", killed)
    with pytest.raises(KeyboardInterrupt):
        run()
    monkeypatch.setattr(compare_mod._Progress, "record", record)


def _count_evaluations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """From now on, the number of episodes of each ``evaluate_controller`` call, in order."""
    asked: list[int] = []
    evaluate = compare_mod.evaluate_controller
    monkeypatch.setattr(compare_mod, "evaluate_controller", lambda env, model, ctrl, seeds, **kw: (
        asked.append(len(seeds)), evaluate(env, model, ctrl, seeds, **kw))[1])
    return asked


def test_a_killed_comparison_resumes_where_it_stopped(phase1_checkpoint: Path, phase2_checkpoint: Path,
                                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed after its 4th batch (the first entry done, one batch of the second), the same call evaluates only the
    rest and writes the report of an uninterrupted run."""
    specs = [EntrySpec(phase1_checkpoint, "cem"), EntrySpec(phase2_checkpoint, "dcem")]
    kwargs = dict(episodes=6, seed=11, n_envs=2, progress=False)
    whole = compare_mod.compare(specs, tmp_path / "whole", **kwargs)

    _killed_after(monkeypatch, 4, lambda: compare_mod.compare(specs, tmp_path / "cut", **kwargs))
    assert (tmp_path / "cut.evaluated.pt").is_file()
    asked = _count_evaluations(monkeypatch)
    resumed = compare_mod.compare(specs, tmp_path / "cut", **kwargs)
    assert asked == [4]  # only the second entry's last two batches ran again
    for a, b in zip(whole["entries"], resumed["entries"]):
        assert a["returns"] == b["returns"] and a["agent_steps"] == b["agent_steps"] and a["stats"] == b["stats"]
    assert whole["paired_differences"] == resumed["paired_differences"]
    again = compare_mod.compare(specs, tmp_path / "cut", **kwargs)  # a finished report's episodes are not reused
    assert asked == [4, 6, 6] and again["entries"][0]["returns"] == whole["entries"][0]["returns"]


def test_saved_progress_is_not_reused_for_a_rewritten_checkpoint(phase1_checkpoint: Path, tmp_path: Path) -> None:
    import os
    import shutil

    ckpt = tmp_path / "p1.pt"
    shutil.copyfile(phase1_checkpoint, ckpt)
    spec, key = EntrySpec(ckpt, "cem"), {"episodes": 1}
    saved = compare_mod._Progress(tmp_path / "x.evaluated.pt", key)
    saved.record(compare_mod._entry_identity(spec), compare_mod.EvaluationRun([compare_mod.EpisodeRecord(1, 2.0, 3)]),
                 torch.Generator())
    resumed = compare_mod._Progress(tmp_path / "x.evaluated.pt", key)
    assert resumed.run(compare_mod._entry_identity(spec)).episodes  # same file: resumed
    assert compare_mod._entry_identity(EntrySpec(ckpt, "cem", label="renamed")) == compare_mod._entry_identity(spec)
    assert not compare_mod._Progress(tmp_path / "x.evaluated.pt", {"episodes": 2}).entries  # other settings: dropped
    os.utime(ckpt, ns=(0, os.stat(ckpt).st_mtime_ns + 10**9))  # rewritten (a new mtime)
    assert not compare_mod._Progress(tmp_path / "x.evaluated.pt", key).run(compare_mod._entry_identity(spec)).episodes


def test_a_killed_comparison_run_again_with_another_entry_keeps_the_finished_ones(
        phase1_checkpoint: Path, phase2_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed during its second entry, then run again with a third entry added in front and the first relabelled:
    the first entry's episodes are not played again, and every entry's returns equal those of a run of its own."""
    first, second = EntrySpec(phase1_checkpoint, "cem"), EntrySpec(phase2_checkpoint, "dcem")
    added = EntrySpec(phase2_checkpoint, "latent-cem")
    kwargs = dict(episodes=4, seed=11, n_envs=2, progress=False)
    _killed_after(monkeypatch, 3, lambda: compare_mod.compare([first, second], tmp_path / "cut", **kwargs))
    evaluate = compare_mod.evaluate_controller
    asked = _count_evaluations(monkeypatch)
    relabelled = dataclasses.replace(first, label="CEM, renamed")
    resumed = compare_mod.compare([added, relabelled, second], tmp_path / "cut", **kwargs)
    assert asked == [4, 2]  # the added entry whole, the second entry's last batch; nothing of the first
    assert [e["label"] for e in resumed["entries"]][1] == "CEM, renamed"
    monkeypatch.setattr(compare_mod, "evaluate_controller", evaluate)
    for spec, got in zip([added, first, second], resumed["entries"]):
        alone = compare_mod.compare([spec], tmp_path / f"alone_{spec.controller}", **kwargs)
        assert alone["entries"][0]["returns"] == got["returns"]


def test_extend_adds_a_row_to_a_finished_report_without_playing_the_others(
        phase1_checkpoint: Path, phase2_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--extend`` on a finished report: only the new entry is evaluated, the old row's returns are as before and the
    pair is compared; with other settings (here the seed) nothing is reused. (Without ``--extend`` a finished report is
    evaluated afresh: the end of ``test_a_killed_comparison_resumes_where_it_stopped``.)"""
    first, added = EntrySpec(phase1_checkpoint, "cem"), EntrySpec(phase2_checkpoint, "dcem")
    kwargs = dict(episodes=2, seed=11, n_envs=2, progress=False)
    done = compare_mod.compare([first], tmp_path / "r", **kwargs)
    asked = _count_evaluations(monkeypatch)
    extended = compare_mod.compare([first, added], tmp_path / "r", extend=True, **kwargs)
    assert asked == [2] and extended["entries"][0]["returns"] == done["entries"][0]["returns"]
    assert [d["b"] for d in extended["paired_differences"]] == [extended["entries"][1]["label"]]
    # the report's wall time is this invocation's, and says so; the entries' evaluations add up every invocation
    assert (done["reused_episodes"], extended["reused_episodes"]) == (0, 2)
    assert extended["entries"][0]["wall_time_s"] == pytest.approx(done["entries"][0]["wall_time_s"], rel=0.1)
    md = (tmp_path / "r.md").read_text()
    assert f"took {sum(e['wall_time_s'] for e in extended['entries']):.0f} s in all" in md
    assert "wall time of this invocation" in md and "reused 2 episodes" in md and "wall time of the whole run" not in md
    fresh = compare_mod.compare([first, added], tmp_path / "r", extend=True, **{**kwargs, "seed": 12})
    assert asked == [2, 2, 2] and fresh["reused_episodes"] == 0
    assert "wall time of the whole run" in (tmp_path / "r.md").read_text()


@pytest.mark.parametrize("flags", [["--checkpoint", "CKPT"], ["--sweep", "DIR"]])
def test_extend_is_refused_where_it_cannot_apply(phase1_checkpoint: Path, tmp_path: Path, flags: list[str]) -> None:
    flags = [str(phase1_checkpoint) if f == "CKPT" else str(tmp_path) if f == "DIR" else f for f in flags]
    p = run_script("evaluate.py", *flags, "--extend", "--out", str(tmp_path / "x"))
    assert p.returncode == 2 and "--extend" in p.stderr and "Traceback" not in p.stderr, p.stderr
