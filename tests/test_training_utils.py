"""Checkpoints, the metrics logger and run folders."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from dcem_agents.training import CheckpointError, MetricsLogger, load_checkpoint, make_run_dir, save_checkpoint


def test_checkpoint_round_trip_and_errors(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "a" / "ckpt.pt", "optimize", {"seed": 1}, {"weights": torch.arange(3)})
    assert not path.with_name("ckpt.pt.tmp").exists()
    ckpt = load_checkpoint(path, experiment="optimize")
    assert ckpt["config"] == {"seed": 1} and torch.equal(ckpt["weights"], torch.arange(3))
    with pytest.raises(CheckpointError, match="is a 'optimize' checkpoint, expected 'planet'"):
        load_checkpoint(path, experiment="planet")
    with pytest.raises(CheckpointError, match="not found|does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(CheckpointError, match="not a dcem-agents checkpoint"):
        load_checkpoint(other)
    junk = tmp_path / "junk.pt"
    junk.write_text("hello")
    with pytest.raises(CheckpointError):
        load_checkpoint(junk)


def test_metrics_logger_widens_header_and_resumes(tmp_path: Path) -> None:
    log = MetricsLogger(tmp_path, tensorboard=False)
    log.record("a", 1.0)
    log.dump(1)
    log.record("a", 2.0)
    log.record("b", 3.0)
    log.dump(2)
    log.close()
    rows = list(csv.DictReader((tmp_path / "progress.csv").open()))
    assert [r["step"] for r in rows] == ["1", "2"] and rows[0]["b"] == "" and rows[1]["b"] == "3.0"
    resumed = MetricsLogger(tmp_path, tensorboard=False, resume_step=1)  # forgets what came after its checkpoint
    resumed.record("a", 5.0)
    resumed.dump(2)
    rows = list(csv.DictReader((tmp_path / "progress.csv").open()))
    assert [(r["step"], r["a"]) for r in rows] == [("1", "1.0"), ("2", "5.0")]
    fresh = MetricsLogger(tmp_path, tensorboard=False)  # a fresh start (killed before any checkpoint): a new log
    fresh.record("a", 7.0)
    fresh.dump(1)
    rows = list(csv.DictReader((tmp_path / "progress.csv").open()))
    assert [(r["step"], r["a"]) for r in rows] == [("1", "7.0")]


def _tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series of the event files in ``folder``, read back with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_metrics_logger_writes_tensorboard(tmp_path: Path) -> None:
    log = MetricsLogger(tmp_path)
    log.record("loss", 0.5)
    log.record("val/cost", float("nan"))  # not finite: in the CSV, not in TensorBoard
    log.dump(0)
    log.record("loss", 0.25)
    log.record("val/cost", -3.0)
    log.dump(7)
    log.close()
    assert _tensorboard_scalars(tmp_path / "tb") == {"loss": [(0, 0.5), (7, 0.25)], "val/cost": [(7, -3.0)]}
    rows = list(csv.DictReader((tmp_path / "progress.csv").open()))
    assert [(r["step"], r["loss"], r["val/cost"]) for r in rows] == [("0", "0.5", "nan"), ("7", "0.25", "-3.0")]


def test_run_dirs_are_unique(tmp_path: Path) -> None:
    a = make_run_dir(tmp_path, "optimize", "demo", 3)
    b = make_run_dir(tmp_path, "optimize", "demo", 3)
    assert a != b and a.is_dir() and b.is_dir() and "seed3" in a.name


def test_step_checkpoints_order_by_steps(tmp_path: Path) -> None:
    from dcem_agents.training.checkpoint import step_checkpoints

    assert step_checkpoints(tmp_path, "sac") == []
    for name in ("sac_75_steps.zip", "sac_100_steps.zip", "sac_replay_buffer_900_steps.pkl", "ppo_500_steps.zip",
                 "sac_x_steps.zip", "sac_replay_buffer_800_steps.zip"):
        (tmp_path / name).touch()
    assert step_checkpoints(tmp_path, "sac") == [tmp_path / "sac_100_steps.zip", tmp_path / "sac_75_steps.zip"]  # numeric
    assert step_checkpoints(tmp_path, "ppo") == [tmp_path / "ppo_500_steps.zip"]


def test_publish_run_copies_what_the_config_names(tmp_path: Path) -> None:
    import json
    from types import SimpleNamespace

    from dcem_agents.training.run_dir import publish_run, publish_targets

    from dcem_agents.training import load_checkpoint, save_checkpoint

    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint(run / "checkpoint.pt", "planet", {"seed": 0}, {"weights": torch.arange(3)})
    (run / "progress.csv").write_text("step,a\n1,2\n")
    (run / "fig.png").write_bytes(b"png")
    cfg = SimpleNamespace(results_json=str(tmp_path / "results" / "r.json"), export_checkpoint=str(tmp_path / "ship" / "c.pt"),
                          export_progress=None, figures_dir=str(tmp_path / "figs"))
    written = publish_run(cfg, run, {"checkpoint": str(run / "checkpoint.pt"), "return": 1.5})
    assert sorted(written) == sorted([tmp_path / "ship" / "c.pt", tmp_path / "figs" / "fig.png", tmp_path / "results" / "r.json"])
    shipped = load_checkpoint(tmp_path / "ship" / "c.pt", "planet")
    assert shipped["config"] == {"seed": 0} and torch.equal(shipped["weights"], torch.arange(3))
    assert (tmp_path / "figs" / "fig.png").read_bytes() == b"png"
    # the shipped summary points at the shipped checkpoint, not at the run folder
    assert json.loads((tmp_path / "results" / "r.json").read_text()) == {"checkpoint": str(tmp_path / "ship" / "c.pt"),
                                                                          "return": 1.5}
    assert publish_targets(cfg) == [cfg.export_checkpoint, cfg.figures_dir, cfg.results_json]
    assert publish_run(SimpleNamespace(), run, {"return": 1.0}) == [] and publish_targets(SimpleNamespace()) == []
    with pytest.raises(FileNotFoundError):  # a destination whose run-folder file is missing
        publish_run(SimpleNamespace(export_zip=str(tmp_path / "m.zip")), run, {})
