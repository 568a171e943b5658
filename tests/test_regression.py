"""Energy-based regression (sect. 5.1): the energy model, the GD/DCEM predictors and the experiment end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from dcem_agents.config import build, load_yaml
from dcem_agents.experiments import EvalOptions
from dcem_agents.experiments.regression import Config, evaluate, train
from dcem_agents.training.run_dir import publish_run
from dcem_agents.models.energy import EnergyNet
from dcem_agents.models.energy_predictors import DCEMPredictor, UnrolledGDPredictor
from dcem_agents.training import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "experiment": "regression", "seed": 3, "device": "cpu", "n_train": 24, "n_test": 20, "hidden": 16, "n_layers": 2,
    "gd": {"n_steps": 4, "inner_lr": 0.3}, "dcem": {"n_iters": 4, "n_samples": 16, "n_elites": 4},
    "n_updates": 30, "batch_size": 8, "lr": 2e-2, "eval_every": 10, "lr_patience": 100, "ablation_max_steps": 8,
    "surface_grid": 24,
}


def _energy(seed: int = 0, dtype: torch.dtype = torch.float32) -> EnergyNet:
    return EnergyNet(1, 1, hidden=8, n_layers=2, generator=torch.Generator().manual_seed(seed)).to(dtype)


def _loss(predictor: torch.nn.Module, x: torch.Tensor, seed: int | None = None) -> torch.Tensor:
    if isinstance(predictor, DCEMPredictor):
        return ((predictor(x, generator=torch.Generator().manual_seed(seed)) - x * torch.sin(x)) ** 2).mean()
    return ((predictor(x) - x * torch.sin(x)) ** 2).mean()


def test_energy_net_shapes_and_seeded_init() -> None:
    a, b, c = _energy(0), _energy(0), _energy(1)
    x, y = torch.rand(5, 1), torch.rand(5, 1)
    assert a(x, y).shape == (5,)
    assert a(x.unsqueeze(1), torch.rand(5, 7, 1)).shape == (5, 7)  # x broadcast over samples
    assert torch.equal(a(x, y), b(x, y)) and not torch.allclose(a(x, y), c(x, y))


@pytest.mark.parametrize("method", ["gd", "dcem"])
def test_predictor_gradient_reaches_theta_and_matches_finite_differences(method: str) -> None:
    torch.manual_seed(0)
    energy = _energy(0, torch.float64)
    predictor = (UnrolledGDPredictor(energy, n_steps=10, inner_lr=0.1) if method == "gd"
                 else DCEMPredictor(energy, n_iters=5, n_samples=30, n_elites=5, init_std=3.0))
    x = torch.linspace(0.3, 6.0, 6, dtype=torch.float64).unsqueeze(1)
    _loss(predictor, x, seed=7).backward()
    first = energy.net[0].weight
    assert first.grad is not None and torch.isfinite(first.grad).all() and first.grad.abs().sum() > 0
    # the gradient goes through the inner optimizer: compare with central differences on a few weights
    for idx in [(0, 0), (1, 1), (3, 0)]:
        with torch.no_grad():
            orig = first[idx].item()
            first[idx] = orig + 1e-6
            up = _loss(predictor, x, seed=7).item()
            first[idx] = orig - 1e-6
            down = _loss(predictor, x, seed=7).item()
            first[idx] = orig
        assert first.grad[idx].item() == pytest.approx((up - down) / 2e-6, rel=1e-3, abs=1e-7)


def test_gd_without_create_graph_would_lose_the_gradient() -> None:
    """Under no_grad the GD iterates still move (they need ∇_y E) but carry no graph."""
    energy = _energy(0)
    predictor = UnrolledGDPredictor(energy, n_steps=3)
    x = torch.rand(4, 1)
    with torch.no_grad():
        its = predictor.iterates(x)
    assert its.shape == (3, 4, 1) and not its.requires_grad and its.abs().sum() > 0
    assert predictor(x).requires_grad


def test_iterates_equal_shorter_runs() -> None:
    energy = _energy(2)
    x = torch.rand(5, 1) * 2 * math.pi
    gd = UnrolledGDPredictor(energy, inner_lr=0.1)
    dc = DCEMPredictor(energy, n_samples=20, n_elites=4)
    with torch.no_grad():
        assert torch.allclose(gd.iterates(x, 6)[2], gd(x, 3))
        long = dc.iterates(x, 6, generator=torch.Generator().manual_seed(1))
        short = dc(x, 3, generator=torch.Generator().manual_seed(1))
    assert long.shape == (6, 5, 1) and torch.allclose(long[2], short)


def test_preset_has_the_papers_settings() -> None:
    cfg = build(Config, load_yaml(ROOT / "configs" / "regression.yaml"))
    assert (cfg.gd.n_steps, cfg.gd.inner_lr, cfg.y0) == (10, 0.1, 0.0)
    assert (cfg.dcem.n_iters, cfg.dcem.n_samples, cfg.dcem.n_elites, cfg.dcem.temperature) == (10, 100, 10, 1.0)
    assert cfg.ablation_max_steps == 30 and cfg.results_path == "results/regression.json"


BAD_VALUES = [{"n_updates": 0}, {"dcem": {"n_elites": 200}}, {"lr_factor": 1.5}, {"gd": {"inner_lr": 0}}]


@pytest.mark.parametrize("bad", BAD_VALUES)
def test_config_rejects_bad_values(bad: dict) -> None:
    with pytest.raises(ValueError):
        build(Config, {**TINY, **bad})


def test_train_end_to_end_tiny(tmp_path: Path) -> None:
    cfg = build(Config, {**TINY, "results_path": str(tmp_path / "res" / "regression.json"),
                         "figures_dir": str(tmp_path / "res")})
    run_dir = tmp_path / "run"
    summary = train(cfg, run_dir)
    assert not (tmp_path / "res").exists()  # a run writes into its run folder only
    published = publish_run(cfg, run_dir, summary)  # train.py --publish
    assert sorted(p.name for p in published) == ["regression.json"] + [f"regression_{n}.png" for n in
                                                                        ("ablation", "energy", "loss", "predictions")]
    results = json.loads((tmp_path / "res" / "regression.json").read_text())
    assert results == json.loads((run_dir / "regression.json").read_text())
    for key in ("config", "seeds", "final_train_mse", "loss_curves", "ablation", "wall_time_s", "figures"):
        assert key in results
    assert results["seeds"] == [3]
    assert results["loss_curves"]["updates"] == [0, 10, 20, 30]
    for method in ("gd", "dcem"):
        curve = results["loss_curves"][method]["mean"]
        assert len(curve) == len(results["loss_curves"]["updates"]) == 4  # updates 0, 10, 20, 30
        assert all(math.isfinite(v) for v in curve)
        assert curve[-1] < 0.8 * curve[0], f"{method} training loss did not decrease: {curve}"
        assert len(results["ablation"][method]["mean"]) == 8
        assert all(math.isfinite(v) and v >= 0 for v in results["ablation"][method]["mean"])
        assert results["wall_time_s"][f"train_updates_{method}"] > 0
    assert results["ablation"]["inner_steps"] == list(range(1, 9))
    assert summary["gd_test_mse_at_steps"]["4"] == results["ablation"]["gd"]["mean"][3]
    for name in ("loss", "ablation", "energy", "predictions"):
        png = tmp_path / "res" / f"regression_{name}.png"
        assert png.is_file() and 0 < png.stat().st_size < 1_000_000
    assert (run_dir / "progress.csv").is_file()

    ckpt = load_checkpoint(run_dir / "checkpoint.pt", "regression")
    assert set(ckpt["models"]) == {"gd/seed3", "dcem/seed3"}
    out = evaluate(ckpt, EvalOptions(controller="gd", episodes=20, seed=cfg.seed + 10_000, out=tmp_path / "e.json"))
    # the GD predictor is deterministic and the test grid is the same: evaluate() reproduces train()'s ablation
    assert out["gd"]["mean"] == pytest.approx(results["ablation"]["gd"]["mean"], rel=1e-5)
    assert (tmp_path / "e.json").is_file()
    with pytest.raises(ValueError):
        evaluate(ckpt, EvalOptions(controller="sac"))
