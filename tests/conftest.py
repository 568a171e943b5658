"""Shared test fixtures and markers: ``gpu`` tests skip without CUDA; every test runs torch on one thread."""

from __future__ import annotations

import pytest
import torch


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


from pathlib import Path  # noqa: E402

from _scripts import run_script  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    """The tests' models are tiny: one thread is fastest, and two threads crawl on a shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _train_debug(tmp_path_factory: pytest.TempPathFactory, name: str, config: str, *overrides: str) -> Path:
    """Run ``train.py`` on a debug preset into a fresh folder; return its ``checkpoint.pt``."""
    run_dir = tmp_path_factory.mktemp(name)
    args = [arg for override in overrides for arg in ("--set", override)]
    p = run_script("train.py", "--config", config, "--run-dir", str(run_dir), *args)
    assert p.returncode == 0, p.stderr[-3000:]
    return run_dir / "checkpoint.pt"


@pytest.fixture(scope="session")
def phase1_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A phase-1 checkpoint of the debug preset (trained once per test session, a few seconds)."""
    return _train_debug(tmp_path_factory, "planet_debug", "configs/planet/debug.yaml")


@pytest.fixture(scope="session")
def phase2_checkpoint(tmp_path_factory: pytest.TempPathFactory, phase1_checkpoint: Path) -> Path:
    """A phase-2 checkpoint of the debug preset, from :func:`phase1_checkpoint`."""
    return _train_debug(tmp_path_factory, "dcem_debug", "configs/dcem/debug.yaml", f"phase1_checkpoint={phase1_checkpoint}")


@pytest.fixture(scope="session")
def phase3_checkpoint(tmp_path_factory: pytest.TempPathFactory, phase2_checkpoint: Path) -> Path:
    """A phase-3 (``ppo``) checkpoint of the debug preset, from :func:`phase2_checkpoint`; ``model.zip`` lies next to it."""
    return _train_debug(tmp_path_factory, "ppo_debug", "configs/ppo/debug.yaml", f"phase2_checkpoint={phase2_checkpoint}")
