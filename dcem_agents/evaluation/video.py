"""Videos of a controller comparison: one rendered episode per entry, MP4 (imageio + ffmpeg) or GIF (Pillow).

Rendering uses the environment's ``rgb_array`` mode, one frame per agent step (after every ``action_repeat``
environment steps). DeepMind Control renders through MuJoCo's OpenGL backend: on a machine without a display set
``MUJOCO_GL=egl`` (or ``osmesa``) **before** MuJoCo is first imported — ``evaluate.py --video`` does this unless the
variable is already set. When rendering fails, :class:`RenderError` says so with the backend that was tried.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from dcem_agents.envs import make_env
from dcem_agents.evaluation.entries import Entry
from dcem_agents.evaluation.harness import evaluate_controller

__all__ = ["FrameRecorder", "RenderError", "check_rendering", "record_episode", "video_format", "write_video"]


class RenderError(RuntimeError):
    """The environment cannot render on this machine (no usable OpenGL backend)."""


class FrameRecorder(gym.Wrapper):
    """Keep ``env.render()`` (H, W, 3) ``uint8`` after every ``reset`` and ``step`` in :attr:`frames`."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.frames: list[np.ndarray] = []

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        out = self.env.reset(**kwargs)
        self.frames = [np.asarray(self.env.render())]
        return out

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        out = self.env.step(action)
        self.frames.append(np.asarray(self.env.render()))
        return out


def _render_failure(env_id: str, error: Exception) -> RenderError:
    backend = os.environ.get("MUJOCO_GL", "(unset)")
    return RenderError(f"cannot render {env_id} on this machine (MUJOCO_GL={backend}): {type(error).__name__}: "
                       f"{error}. "
                       "Headless rendering needs EGL (MUJOCO_GL=egl, libEGL) or OSMesa (MUJOCO_GL=osmesa); or run "
                       "without --video")


def _make_render_env(env_id: str, action_repeat: int) -> FrameRecorder:
    try:
        return FrameRecorder(make_env(env_id, action_repeat=action_repeat, render_mode="rgb_array"))
    except Exception as e:  # noqa: BLE001 - any backend failure means "cannot render here"
        raise _render_failure(env_id, e) from e


def check_rendering(env_id: str, action_repeat: int = 1) -> tuple[int, int]:
    """Render one frame of ``env_id``; return its (H, W) or raise :class:`RenderError`."""
    env = _make_render_env(env_id, action_repeat)
    try:
        env.reset(seed=0)
        frame = env.frames[0]
    except Exception as e:  # noqa: BLE001
        raise _render_failure(env_id, e) from e
    finally:
        env.close()
    if frame.ndim != 3 or frame.shape[-1] != 3:
        raise RenderError(f"{env_id} rendered an array of shape {frame.shape}, not an RGB image")
    return frame.shape[0], frame.shape[1]


def _agent_fps(env: gym.Env, action_repeat: int) -> float:
    """Frames per second of one frame per agent step: ``1 / (control timestep · action_repeat)``."""
    u = env.unwrapped
    dt = getattr(u, "dt", None)
    inner = getattr(u, "_env", None)  # shimmy's DeepMind Control environment
    if dt is None and inner is not None and hasattr(inner, "control_timestep"):
        dt = inner.control_timestep()
    if dt:
        return 1.0 / (float(dt) * action_repeat)
    return float(env.metadata.get("render_fps") or 30) / action_repeat


def video_format() -> str:
    """``"mp4"`` when imageio can reach ffmpeg (``imageio-ffmpeg`` installed), else ``"gif"`` (Pillow)."""
    has_ffmpeg = importlib.util.find_spec("imageio") and importlib.util.find_spec("imageio_ffmpeg")
    return "mp4" if has_ffmpeg else "gif"


def write_video(frames: list[np.ndarray], stem: Path, fps: float) -> Path:
    """Write ``frames`` (H, W, 3) ``uint8`` to ``stem.mp4`` or ``stem.gif`` (:func:`video_format`); return its path."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    if video_format() == "mp4":
        import imageio.v2 as imageio

        path = stem.with_name(stem.name + ".mp4")
        imageio.mimwrite(path, frames, fps=fps)
        return path
    from PIL import Image

    path = stem.with_name(stem.name + ".gif")
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=max(20, round(1000.0 / fps)), loop=0)
    return path


def record_episode(entry: Entry, seed: int, stem: Path) -> dict[str, Any]:
    """Run one episode of ``entry`` (env seed ``seed``, planner generator seeded with ``seed``) and save its video.

    Call :func:`check_rendering` first for a clear :class:`RenderError` when the machine cannot render.

    :return: ``label``, ``path``, ``format``, ``seed``, ``return``, ``frames``, ``fps``.
    """
    env = _make_render_env(entry.env_id, entry.action_repeat)
    gen = entry.generator(seed)
    try:
        run = evaluate_controller([env], entry.model, entry.controller, [seed], generator=gen, label=None)
        fps = _agent_fps(env, entry.action_repeat)
        frames = env.frames
    finally:
        env.close()
    path = write_video(frames, stem, fps)
    return {"label": entry.label, "path": str(path), "format": path.suffix[1:], "seed": seed,
            "return": run.returns[0], "frames": len(frames), "fps": round(fps, 3)}
