"""Reading SB3's pickled files without running code from them: an allowlist unpickler.

SB3 saves part of a model zip (``data``: the policy class, spaces, schedules, ...) with cloudpickle, and the replay
buffer and ``VecNormalize`` statistics as plain pickles. Unpickling calls whatever the file names, so resuming a run
folder someone else wrote, or evaluating a zip from elsewhere, could run any code. Here every such file is read by
:class:`AllowlistUnpickler`, which resolves only the classes and reconstruction helpers SB3 itself writes for the
algorithms this package uses (numpy arrays and generators, Gymnasium spaces, SB3 buffers, schedules, policies,
``VecNormalize``, torch devices, activation and optimizer classes) and refuses anything else with
:class:`UnsafePickleError`, before any of it runs. The zip's tensors are read by SB3 with ``torch.load(weights_only=True)``.

Entry points: :func:`safe_custom_objects` (pass as ``custom_objects`` to ``Algorithm.load`` or ``load_from_zip_file``,
so that SB3 unpickles nothing itself), :func:`load_vecnormalize` and :func:`load_replay_buffer`.
"""

from __future__ import annotations

import base64
import io
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

__all__ = ["AllowlistUnpickler", "UnsafePickleError", "load_replay_buffer", "load_vecnormalize", "safe_custom_objects",
           "safe_loads"]


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle names something outside the allowlist: it was not loaded (nothing in it ran)."""


#: (module, name) pairs a pickle may name: data classes and the helpers numpy's and SB3's own pickles use. Classes
#: only where constructing them has no effect outside the object (no file, process or import side effects).
ALLOWED: frozenset[tuple[str, str]] = frozenset({
    ("builtins", "slice"), ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "complex"),
    ("builtins", "range"), ("builtins", "bytearray"),
    ("collections", "deque"), ("collections", "OrderedDict"),
    ("numpy", "dtype"), ("numpy", "ndarray"),
    *((core, name) for core in ("numpy.core.multiarray", "numpy._core.multiarray") for name in ("_reconstruct", "scalar")),
    *((core, "_frombuffer") for core in ("numpy.core.numeric", "numpy._core.numeric")),
    ("numpy.random._pickle", "__generator_ctor"), ("numpy.random._pickle", "__bit_generator_ctor"),
    ("numpy.random._pickle", "__randomstate_ctor"),
    ("numpy.random._pcg64", "PCG64"), ("numpy.random._pcg64", "PCG64DXSM"), ("numpy.random._mt19937", "MT19937"),
    ("numpy.random._philox", "Philox"), ("numpy.random._sfc64", "SFC64"),
    ("numpy.random.bit_generator", "SeedSequence"), ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
    ("numpy.random.mtrand", "RandomState"),
    *(("gymnasium.spaces." + mod, cls) for mod, cls in (
        ("box", "Box"), ("discrete", "Discrete"), ("dict", "Dict"), ("tuple", "Tuple"),
        ("multi_discrete", "MultiDiscrete"), ("multi_binary", "MultiBinary"))),
    ("torch", "device"),
    *(("torch.nn.modules.activation", cls) for cls in ("ReLU", "Tanh", "ELU", "LeakyReLU", "SiLU", "GELU", "Sigmoid")),
    *(("torch.optim." + mod, cls) for mod, cls in (("adam", "Adam"), ("adamw", "AdamW"), ("rmsprop", "RMSprop"),
                                                   ("sgd", "SGD"))),
    *(("stable_baselines3.common.buffers", cls) for cls in ("ReplayBuffer", "DictReplayBuffer", "RolloutBuffer",
                                                             "DictRolloutBuffer")),
    ("stable_baselines3.common.running_mean_std", "RunningMeanStd"),
    ("stable_baselines3.common.vec_env.vec_normalize", "VecNormalize"),
    *(("stable_baselines3.common.utils", cls) for cls in ("ConstantSchedule", "FloatSchedule", "LinearSchedule")),
    ("stable_baselines3.common.type_aliases", "TrainFreq"), ("stable_baselines3.common.type_aliases", "TrainFrequencyUnit"),
    ("stable_baselines3.common.noise", "NormalActionNoise"),
    ("stable_baselines3.common.policies", "ActorCriticPolicy"),
    ("stable_baselines3.common.torch_layers", "FlattenExtractor"),
    ("stable_baselines3.sac.policies", "SACPolicy"), ("stable_baselines3.sac.policies", "MlpPolicy"),
    ("stable_baselines3.td3.policies", "TD3Policy"), ("stable_baselines3.td3.policies", "MlpPolicy"),
    ("stable_baselines3.ppo.policies", "MlpPolicy"),
    ("dcem_agents.sb3.policy", "EmbeddedDCEMPolicy"),
})


class AllowlistUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only the names in :data:`ALLOWED` (raises :class:`UnsafePickleError`)."""

    def find_class(self, module: str, name: str) -> Any:  # noqa: ANN401 - whatever the allowed name is
        if (module, name) not in ALLOWED:
            raise UnsafePickleError(f"refused to unpickle {module}.{name}: not a class SB3 saves for this package "
                                    "(the file may have been tampered with; load it with SB3 only if you trust it)")
        return super().find_class(module, name)


def safe_loads(data: bytes) -> Any:  # noqa: ANN401 - any allowed object
    """Unpickle ``data`` through :class:`AllowlistUnpickler`."""
    return AllowlistUnpickler(io.BytesIO(data)).load()


def safe_custom_objects(zip_path: str | Path) -> dict[str, Any]:
    """Every cloudpickled item of an SB3 zip's ``data``, unpickled through the allowlist: as ``custom_objects`` of
    ``Algorithm.load`` / ``load_from_zip_file`` they leave SB3 nothing to unpickle itself.

    :raises UnsafePickleError: an item names something outside the allowlist.
    :raises zipfile.BadZipFile, KeyError, ValueError: not an SB3 zip.
    """
    with zipfile.ZipFile(zip_path) as archive:
        data = json.loads(archive.read("data").decode())
    objects = {}
    for key, item in data.items():
        if isinstance(item, dict) and ":serialized:" in item:
            try:
                objects[key] = safe_loads(base64.b64decode(item[":serialized:"].encode()))
            except UnsafePickleError as e:
                raise UnsafePickleError(f"{zip_path}: item {key!r}: {e}") from None
    return objects


def _load_file(path: str | Path) -> Any:  # noqa: ANN401 - any allowed object
    try:
        with Path(path).open("rb") as f:
            return AllowlistUnpickler(f).load()
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{path}: {e}") from None


def load_vecnormalize(path: str | Path, venv: Any) -> Any:  # noqa: ANN401 - a VecNormalize
    """``VecNormalize.load(path, venv)`` through the allowlist."""
    from stable_baselines3.common.vec_env import VecNormalize

    obj = _load_file(path)
    if not isinstance(obj, VecNormalize):
        raise TypeError(f"{path}: not VecNormalize statistics (holds a {type(obj).__name__})")
    obj.set_venv(venv)
    return obj


def load_replay_buffer(model: Any, path: str | Path) -> None:  # noqa: ANN401 - an off-policy SB3 algorithm
    """``model.load_replay_buffer(path)`` through the allowlist (plain ``ReplayBuffer`` only, no HER)."""
    from stable_baselines3.common.buffers import ReplayBuffer

    obj = _load_file(path)
    if not isinstance(obj, ReplayBuffer):
        raise TypeError(f"{path}: not an SB3 replay buffer (holds a {type(obj).__name__})")
    obj.device = model.device
    model.replay_buffer = obj
