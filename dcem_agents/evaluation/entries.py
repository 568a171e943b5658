"""The entries of a controller comparison: a checkpoint and one of its controllers, ready to run on environments.

An entry is written ``PATH[:CONTROLLER[+RUNTIME][(KEY=VALUE,...)]][@LABEL]`` (:func:`parse_entry`); ``RUNTIME``
names one of :data:`~dcem_agents.planning.runtime.RUNTIME_PRESETS` (``reference``, ``fp32``, ``bf16``, ...) and sets
how the entry's planner computes (the same checkpoint under two runtimes, compared on the same seeds, is the fidelity
check of a faster rollout). The bracket overrides the planner's search (:data:`PLANNER_KEYS`: ``n_samples``,
``n_elites``, ``n_iters``; for the latent planners also ``init_std``, ``reuse_plan`` (the previous step's executed plan,
shifted, competes with the new one) and ``temperature`` for ``dcem``; for full-space
CEM ``warm_start``, ``true`` or ``false``: whether each step starts from the previous plan shifted by one step, and
``horizon``, the steps each plan spans; for every planner ``execute_best``: act on the best sequence the search
evaluated instead of its final mean), e.g.
``dcem.pt:dcem(n_samples=15,n_iters=10,n_elites=3)``: the same checkpoint with its budget spent differently, compared
on the same seeds. :func:`load_entry` reads everything from the file — environment id, action repeat, model sizes,
planner settings — and returns an :class:`Entry`: the world model whose filter gives the beliefs, and a :class:`~dcem_agents.planning.mpc.Controller` that acts on them, so every
entry runs in the one evaluation loop (:func:`dcem_agents.evaluation.harness.evaluate_controller`).

======================  ===============  ===================================================================
file                    controllers      what runs
======================  ===============  ===================================================================
``planet`` checkpoint   ``cem``          phase 1: full-space CEM on the phase-1 world model
``dcem`` checkpoint     ``dcem``,        phase 2: latent DCEM (eq. 8); ``latent-cem``: the same latent planner with
                        latent-cem, cem  hard elites (τ → 0); ``cem``: full-space CEM, same model
``ppo`` checkpoint      ``ppo``, dcem    phase 3: the PPO-fine-tuned policy's mean action; ``dcem``: the same
                                         policy with the phase-2 weights it started from
SB3 model zip           ``ppo``, dcem    a policy on belief observations (``EmbeddedDCEMPolicy``) saved by SB3;
                                         ``dcem``: the same policy with the phase-2 weights it started from
SB3 model zip           ``policy``       any other SB3 policy (PPO, A2C, SAC, TD3, ...): a model-free baseline on
                                         the environment's own observations, deterministic actions
======================  ===============  ===================================================================

The first controller listed is the default. SB3 policies on beliefs act through
:class:`~dcem_agents.sb3.controllers.PolicyController`, which builds their observation ``[belief, planner-noise seed]``
(:mod:`dcem_agents.sb3.belief_env`) from the same beliefs; other SB3 policies act through
:class:`~dcem_agents.sb3.controllers.ObservationPolicyController` with no world model (:attr:`Entry.model` is None).

A model-free SB3 zip trained by this package's ``baseline`` experiment records its environment id and action repeat
(:data:`dcem_agents.experiments.baseline.ENV_ATTRIBUTE`). Any other SB3 zip does not: it runs on the environment and
action repeat of the comparison's checkpoint entries. Either way :func:`bind_environment` checks that the policy's
observation and action spaces are that environment's (the flat ``float32`` observations of
:func:`dcem_agents.envs.make_env`): train such a baseline on ``make_env(env_id, action_repeat=...)``. Observation
normalization that SB3 keeps outside the zip (``VecNormalize`` statistics) is not applied.

Trust: checkpoints of this package are loaded without unpickling anything but tensors and plain values
(:func:`~dcem_agents.training.load_checkpoint`). SB3 model zips are read with SB3's own loader, which unpickles parts of
the file (the policy class, the spaces) as SB3 documents: compare only zips from a source you trust.
"""

from __future__ import annotations

import dataclasses
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dcem_agents.experiments.baseline import ENV_ATTRIBUTE
from dcem_agents.sb3.progress import ENV_STEPS_ATTRIBUTE
from dcem_agents.models.rssm import RSSM
from dcem_agents.math.cem import check_cem_sizes
from dcem_agents.planning.latent_mpc import LatentDCEMController
from dcem_agents.planning.mpc import CEMController, Controller
from dcem_agents.planning.runtime import RUNTIME_PRESETS, PlannerRuntime
from dcem_agents.training import CheckpointError, load_checkpoint
from dcem_agents.training.checkpoint import require_file

__all__ = ["CONTROLLERS", "Entry", "EntryError", "EntrySpec", "PLANNER_KEYS", "bind_environment", "is_sb3_zip",
           "load_entry", "parse_entry", "runtime_of", "set_runtime"]

#: planner settings an entry may override, with their types (``init_std``, ``temperature``, the soft top-k's τ, and
#: ``reuse_plan``: latent planners only; ``latent-cem`` keeps hard elites; ``warm_start`` and ``horizon``: full-space
#: CEM only, the latent planners' horizon being their decoder's; ``execute_best``: every planner)
PLANNER_KEYS: dict[str, type] = {"n_samples": int, "n_elites": int, "n_iters": int, "init_std": float,
                                 "temperature": float, "warm_start": bool, "horizon": int, "execute_best": bool,
                                 "reuse_plan": bool}

_LATENT_ONLY = ("init_std", "temperature", "reuse_plan")
_FULL_SPACE_ONLY = ("warm_start", "horizon")


def _typed(key: str, value: str) -> int | float | bool:
    """``value`` as :data:`PLANNER_KEYS` types ``key``; a flag is ``true`` or ``false`` (any case)."""
    if PLANNER_KEYS[key] is bool:
        flag = {"true": True, "false": False}.get(value.lower())
        if flag is None:
            raise ValueError(value)
        return flag
    return PLANNER_KEYS[key](value)

#: file kind -> controllers it provides (the first is the default)
CONTROLLERS: dict[str, tuple[str, ...]] = {"planet": ("cem",), "dcem": ("dcem", "latent-cem", "cem"),
                                           "ppo": ("ppo", "dcem"),
                                           "sb3": ("ppo", "dcem"), "sb3-obs": ("policy",)}

_LABELS = {("planet", "cem"): "full-space CEM", ("dcem", "dcem"): "latent DCEM",
           ("dcem", "latent-cem"): "latent hard CEM",
           ("dcem", "cem"): "full-space CEM (phase-2 model)", ("ppo", "ppo"): "latent DCEM + PPO",
           ("ppo", "dcem"): "latent DCEM (before PPO)", ("sb3", "ppo"): "latent DCEM + PPO (SB3 zip)",
           ("sb3", "dcem"): "latent DCEM (before PPO, SB3 zip)"}


class EntryError(ValueError):
    """An entry cannot be compared: missing file, foreign format, unknown controller, mismatched environments."""


@dataclass(frozen=True)
class EntrySpec:
    """An entry as written on the command line: ``path``, ``controller`` and ``label`` (None: the defaults),
    ``runtime`` and the ``planner`` settings it overrides (``(key, value)`` pairs)."""

    path: Path
    controller: str | None = None
    label: str | None = None
    runtime: str | None = None
    planner: tuple[tuple[str, int | float | bool], ...] = ()


def _planner_overrides(text: str, entry: str) -> tuple[tuple[str, int | float | bool], ...]:
    """``"n_samples=15,n_iters=10"`` -> ``(("n_samples", 15), ("n_iters", 10))``, types per :data:`PLANNER_KEYS`."""
    pairs: dict[str, int | float | bool] = {}
    for item in filter(None, (i.strip() for i in text.split(","))):
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or key not in PLANNER_KEYS:
            raise EntryError(f"planner setting {item!r} in entry {entry!r}: expected KEY=VALUE with KEY one of "
                             f"{', '.join(PLANNER_KEYS)}")
        if key in pairs:
            raise EntryError(f"planner setting {key!r} given twice in entry {entry!r}")
        try:
            pairs[key] = _typed(key, value)
        except ValueError:
            kind = {int: "a whole number", float: "a number", bool: "true or false"}[PLANNER_KEYS[key]]
            raise EntryError(f"planner setting {key}={value!r} in entry {entry!r}: not {kind}") from None
    if not pairs:
        raise EntryError(f"empty planner settings '()' in entry {entry!r}")
    return tuple(pairs.items())


def parse_entry(text: str) -> EntrySpec:
    """Parse ``PATH[:CONTROLLER[+RUNTIME][(KEY=VALUE,...)]][@LABEL]`` (the label is after the last ``@``, the controller
    after the last ``:``, the runtime after the controller's ``+``, planner settings in the bracket)."""
    label = None
    if "@" in text:
        text, label = text.rsplit("@", 1)
        if not label.strip():
            raise EntryError(f"empty label in entry {text + '@'!r}")
        label = label.strip()
    controller = runtime = None
    planner: tuple[tuple[str, int | float | bool], ...] = ()
    head, sep, tail = text.rpartition(":")
    match = re.fullmatch(r"([A-Za-z0-9_-]+)(?:\+([A-Za-z0-9_-]+))?(?:\((.*)\))?", tail) if sep else None
    if match:
        text, controller, runtime = head, match.group(1), match.group(2)
        if runtime is not None and runtime not in RUNTIME_PRESETS:
            raise EntryError(f"unknown planner runtime {runtime!r} in entry {tail!r}; available: "
                             f"{', '.join(RUNTIME_PRESETS)}")
        if match.group(3) is not None:
            planner = _planner_overrides(match.group(3), tail)
    elif sep and "(" in tail:
        raise EntryError(f"cannot read {tail!r} as CONTROLLER[+RUNTIME][(KEY=VALUE,...)]")
    if not text:
        raise EntryError("an entry needs a path: PATH[:CONTROLLER[+RUNTIME][(KEY=VALUE,...)]][@LABEL]")
    return EntrySpec(Path(text), controller, label, runtime, planner)


def _override_planner(controller: Controller, settings: dict[str, int | float | bool], where: str) -> None:
    """Set a planner's search budget (:data:`PLANNER_KEYS`), validated as its constructor validates it."""
    if isinstance(controller, LatentDCEMController):
        full_only = sorted(set(_FULL_SPACE_ONLY) & set(settings))
        if full_only:
            raise EntryError(f"{where}: {full_only[0]} is a setting of full-space CEM (cem); the latent planners "
                             f"start every step afresh, over their decoder's horizon")
        if "temperature" in settings and controller.settings.temperature is None:
            raise EntryError(f"{where}: latent-cem is the latent planner with hard elites; a temperature applies to "
                             f"dcem")
        try:
            controller.settings = dataclasses.replace(controller.settings, **settings)
        except ValueError as e:
            raise EntryError(f"{where}: {e}") from None
    elif isinstance(controller, CEMController):
        latent_only = sorted(set(_LATENT_ONLY) & set(settings))
        if latent_only:
            raise EntryError(f"{where}: {latent_only[0]} is a setting of the latent planners (dcem, latent-cem); "
                             f"full-space CEM has hard elites and warm-starts from its previous plan (warm_start)")
        merged = {k: settings.get(k, getattr(controller, k)) for k in ("n_samples", "n_elites", "n_iters", "horizon")}
        try:
            check_cem_sizes(merged["n_samples"], merged["n_elites"], merged["n_iters"], merged["horizon"], where)
        except ValueError as e:
            raise EntryError(str(e)) from None
        for key, value in settings.items():  # validated above; init_std and temperature were refused
            setattr(controller, key, value)
    else:
        raise EntryError(f"{where}: planner settings apply to the planners of planet and dcem checkpoints (cem, dcem, "
                         f"latent-cem); a policy's are set where it is built (policy_kwargs)")


def runtime_of(controller: Controller) -> dict[str, Any] | None:
    """How ``controller`` plans (its :class:`PlannerRuntime` as a dict), for the report; None if it does not plan."""
    runtime = getattr(getattr(controller, "policy", controller), "runtime", None)
    return dataclasses.asdict(runtime) if isinstance(runtime, PlannerRuntime) else None


def set_runtime(controller: Controller, runtime: PlannerRuntime) -> bool:
    """Make ``controller`` plan with ``runtime`` (planners and SB3 policies on beliefs); False if it does not plan."""
    target = getattr(controller, "policy", controller)
    if not hasattr(target, "runtime"):
        return False
    target.runtime = runtime  # graph captures are keyed by the runtime: no stale replay
    return True


@dataclass
class Entry:
    """A loaded entry.

    :param label: name in the tables and figure.
    :param path: the file it came from.
    :param kind: ``planet``, ``dcem``, ``ppo``, ``sb3`` (a policy on beliefs) or ``sb3-obs`` (a model-free policy).
    :param controller_name: which of the file's controllers.
    :param env_id: Gymnasium id the file was trained on (None for ``sb3-obs`` until :func:`bind_environment`).
    :param action_repeat: environment steps per agent step.
    :param model: the world model whose filter gives the beliefs (n_envs, D) (eval mode, on the device); None: the
        controller acts on the observations themselves.
    :param controller: acts on those beliefs (or observations).
    :param samples_per_action: action sequences evaluated per planning call and environment (samples × iterations;
        0 for a policy that does not plan).
    :param train_env_steps: environment steps behind the file (all phases), when known.
    :param training_curve: the training run's evaluations ``[[env steps, mean return], ...]`` as the file records them
        (planet and dcem checkpoints; ppo checkpoints and baseline zips written since they record it), else None.
    """

    label: str
    path: Path
    kind: str
    controller_name: str
    env_id: str | None
    action_repeat: int
    model: RSSM | None
    controller: Controller
    samples_per_action: int
    train_env_steps: int | None
    training_curve: list[list[float]] | None = None

    def generator(self, seed: int) -> torch.Generator:
        """A torch generator seeded with ``seed`` on the world model's device (CPU without a model)."""
        device = torch.device("cpu") if self.model is None else next(self.model.parameters()).device
        return torch.Generator(device=device).manual_seed(seed)


def _curve(value: Any) -> list[list[float]] | None:
    """``[[env steps, mean return], ...]`` if ``value`` is such a non-empty list of finite numbers, else None (a file
    that records no curve, or a malformed one: the comparison runs without it)."""
    if not isinstance(value, list) or not value:
        return None
    try:
        points = [[float(x), float(y)] for x, y in value]
    except (TypeError, ValueError):
        return None
    return points if all(np.isfinite(p).all() for p in points) else None


def _label(kind: str, controller: str) -> str:
    return _LABELS[(kind, controller)]


def _controller_name(kind: str, spec: EntrySpec) -> str:
    name = spec.controller or CONTROLLERS[kind][0]
    if name not in CONTROLLERS[kind]:
        what = {"sb3": "an SB3 model zip", "sb3-obs": "an SB3 model zip of a model-free policy"}.get(
            kind, f"a {kind!r} checkpoint")
        raise EntryError(f"{spec.path}: unknown controller {name!r} for {what}; "
                         f"available: {', '.join(CONTROLLERS[kind])}")
    return name


def is_sb3_zip(path: Path) -> bool:
    """SB3 saves ``data`` (JSON) and ``policy.pth`` in a plain zip; ``torch.save`` zips hold ``<name>/data.pkl``."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        names = set(z.namelist())
    return "data" in names and "policy.pth" in names


def _phase2(path: str | None, where: str, arch: dict[str, Any] | None = None, require_weights: bool = False) -> Any:
    """The components of the phase-2 checkpoint that ``where`` names (or of its recorded architecture, unless its
    weights are required)."""
    from dcem_agents.sb3 import resolve_components

    try:
        return resolve_components(path, arch, require_weights)
    except CheckpointError as e:
        raise EntryError(f"{where} names the phase-2 checkpoint {path!r}, which cannot be loaded ({e}); run from the "
                         "folder it was trained in or keep that checkpoint next to it") from None


def _sb3_policy(policy_class: Any, obs_space: Any, act_space: Any, kwargs: dict[str, Any],
                state: dict[str, Any] | None, device: torch.device) -> Any:
    """An SB3 policy for evaluation (no learning-rate schedule), with ``state`` loaded unless None, in eval mode."""
    policy = policy_class(obs_space, act_space, lambda _: 0.0, **kwargs)
    if state is not None:
        policy.load_state_dict(state)
    return policy.to(device).eval()


def _policy_entry(path: Path, kind: str, name: str, policy: Any, comps: Any, env_steps: int) -> dict[str, Any]:
    """The fields of a policy entry; ``env_steps``: the environment steps PPO trained it on (0: the phase-2
    weights)."""
    from dcem_agents.sb3.controllers import PolicyController

    model = getattr(policy, "world_model", None)  # the filter PPO's rollouts used (synced when PPO trains it)
    model = comps.model if model is None else model
    settings = getattr(policy, "planner_settings", comps.settings)
    return dict(path=path, kind=kind, controller_name=name, env_id=comps.env_id, action_repeat=comps.action_repeat,
                model=model, controller=PolicyController(policy),
                samples_per_action=settings.n_samples * settings.n_iters,
                train_env_steps=comps.env_steps + env_steps)


def _load_sb3_zip(spec: EntrySpec, device: torch.device) -> dict[str, Any]:
    from stable_baselines3.common.save_util import load_from_zip_file

    from dcem_agents.sb3.safe_pickle import safe_custom_objects

    try:  # the zip's pickled items through the allowlist: SB3 unpickles nothing itself
        data, params, _ = load_from_zip_file(spec.path, device=device, custom_objects=safe_custom_objects(spec.path))
    except Exception as e:  # noqa: BLE001 - a foreign zip can fail to unpickle in many ways; say which, once
        raise EntryError(f"{spec.path}: cannot load this SB3 model zip ({type(e).__name__}: {e})") from None
    if not isinstance(data.get("policy_class"), type) or params is None or "policy" not in params:
        raise EntryError(f"{spec.path}: this SB3 model zip has no loadable policy class or weights (a custom policy "
                         "class must be importable where evaluate.py runs)")
    kwargs = dict(data.get("policy_kwargs") or {})
    if "checkpoint" not in kwargs and "architecture" not in kwargs:
        return _load_model_free_zip(spec, data, kwargs, params["policy"], device)
    name = _controller_name("sb3", spec)
    fine_tuned = name == "ppo"  # dcem: the architecture with the phase-2 weights (PPO step 0), from their file
    where = f"the SB3 model {spec.path}" + ("" if fine_tuned else " (its 'dcem' controller needs the phase-2 weights "
                                                                  "PPO started from; the zip holds the fine-tuned ones)")
    comps = _phase2(kwargs.get("checkpoint"), where, kwargs.get("architecture"), require_weights=not fine_tuned)
    policy = _sb3_policy(data["policy_class"], data["observation_space"], data["action_space"], kwargs,
                         params["policy"] if fine_tuned else None, device)
    counted = data.get(ENV_STEPS_ATTRIBUTE)  # a zip written before the count (or a foreign one): timesteps x repeat
    steps = counted if isinstance(counted, int) else int(data.get("num_timesteps", 0)) * comps.action_repeat
    fields = _policy_entry(spec.path, "sb3", name, policy, comps, steps if fine_tuned else 0)
    algorithm = _on_policy_algorithm(data)
    if fine_tuned and algorithm != "PPO":  # the default label names the algorithm that fine-tuned it
        fields["default_label"] = f"latent DCEM + {algorithm} (SB3 zip)"
    return fields


def _on_policy_algorithm(data: dict[str, Any]) -> str:
    """The SB3 algorithm that saved a zip of an actor-critic policy, told by its saved attributes (SB3 records no
    class name): PPO has a clip range, A2C none."""
    return "PPO" if "clip_range" in data else "A2C" if "normalize_advantage" in data or "ent_coef" in data else "SB3"


def _load_model_free_zip(spec: EntrySpec, data: dict[str, Any], kwargs: dict[str, Any], state: dict[str, Any],
                         device: torch.device) -> dict[str, Any]:
    """An SB3 policy on the environment's observations; its environment is bound later (:func:`bind_environment`)."""
    import gymnasium as gym

    from dcem_agents.sb3.controllers import ObservationPolicyController

    name = _controller_name("sb3-obs", spec)
    obs_space, act_space = data.get("observation_space"), data.get("action_space")
    if not isinstance(act_space, gym.spaces.Box):
        raise EntryError(f"{spec.path}: the policy's action space is {act_space!r}; the comparison's environments have "
                         "continuous (Box) actions")
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        raise EntryError(f"{spec.path}: the policy observes {obs_space!r}; entries run on flat float32 observation "
                         "vectors (dcem_agents.envs.make_env): train the baseline on make_env(env_id, action_repeat)")
    try:
        policy = _sb3_policy(data["policy_class"], obs_space, act_space, kwargs, state, device)
    except RuntimeError as e:
        raise EntryError(f"{spec.path}: the policy weights do not fit {data['policy_class'].__name__} ({e})") from None
    recorded = data.get(ENV_ATTRIBUTE)
    if not (isinstance(recorded, dict) and isinstance(recorded.get("env_id"), str)
            and isinstance(recorded.get("action_repeat"), int)):
        recorded = None
    return dict(path=spec.path, kind="sb3-obs", controller_name=name, env_id=None, action_repeat=1, model=None,
                controller=ObservationPolicyController(policy), samples_per_action=0,
                train_env_steps=int(data.get("num_timesteps", 0)), recorded_env=recorded,
                exact_env_steps=data.get(ENV_STEPS_ATTRIBUTE),
                training_curve=_curve((recorded or {}).get("evaluations")))


def bind_environment(entry: Entry, env_id: str, action_repeat: int,
                     source: str = "the environment of the other entries") -> None:
    """Run a model-free SB3 entry on ``env_id`` with ``action_repeat``, after checking that its policy fits them.

    Sets ``entry.env_id`` and ``entry.action_repeat`` and turns ``train_env_steps`` from the zip's agent steps into
    environment steps (agent steps × ``action_repeat``).

    :param source: where ``env_id`` comes from, for the error message.
    :raises EntryError: the policy's observation or action space is not the environment's.
    """
    from dcem_agents.envs import make_env

    probe = make_env(env_id, action_repeat=action_repeat)
    obs_space, act_space = probe.observation_space, probe.action_space
    probe.close()
    policy = entry.controller.policy  # type: ignore[attr-defined]
    problems = []
    if policy.observation_space.shape != obs_space.shape:
        problems.append(f"observations of shape {policy.observation_space.shape}, the environment's are "
                        f"{obs_space.shape}")
    if policy.action_space.shape != act_space.shape or not (
            np.allclose(policy.action_space.low, act_space.low) and np.allclose(policy.action_space.high, act_space.high)):
        problems.append(f"actions {policy.action_space}, the environment's are {act_space}")
    if problems:
        raise EntryError(f"{entry.path}: the SB3 policy does not fit {env_id} ({source}): "
                         f"it has {'; '.join(problems)}")
    entry.env_id, entry.action_repeat = env_id, action_repeat
    if entry.train_env_steps is not None:
        entry.train_env_steps *= action_repeat


def _load_ppo(ckpt: dict[str, Any], spec: EntrySpec, name: str, device: torch.device) -> dict[str, Any]:
    from dcem_agents.experiments import ppo

    # the fine-tuned policy carries every weight (its recorded architecture suffices when the phase-2 file is elsewhere,
    # e.g. a shipped checkpoint trained in a run folder); the policy before PPO is the phase-2 file's weights
    comps = _phase2(ckpt["config"]["phase2_checkpoint"], f"the ppo checkpoint {spec.path}",
                    ckpt["policy_kwargs"].get("architecture"), require_weights=name != "ppo")
    policy = ppo.load_policy(ckpt, device, fine_tuned=name == "ppo")  # dcem: the architecture, phase-2 weights
    # environment steps as counted (checkpoints written before the count: timesteps x action repeat)
    counted = ckpt.get("env_steps")
    steps = (counted if isinstance(counted, int) else int(ckpt.get("num_timesteps") or 0) * comps.action_repeat) \
        if name == "ppo" else 0
    curve = _curve(ckpt.get("evaluations")) if name == "ppo" else None
    return _policy_entry(spec.path, "ppo", name, policy, comps, steps) | {"training_curve": curve}


def _load_planner(ckpt: dict[str, Any], spec: EntrySpec, name: str, device: torch.device) -> dict[str, Any]:
    from dcem_agents.experiments import dcem, planet

    kind = ckpt["experiment"]
    if kind == "planet":
        p1, _, model, controller = planet.load_agent(ckpt, device)
    else:
        _, p1, _, model, latent = dcem.load_latent_agent(ckpt, device)
        controller = dcem.named_controller(name, p1, model, latent, device)
    return dict(path=spec.path, kind=kind, controller_name=name, env_id=p1.env_id, action_repeat=p1.action_repeat,
                model=model, controller=controller, samples_per_action=controller.samples_per_step,
                train_env_steps=int(ckpt["trainer"]["counters"]["env_steps"]),
                training_curve=_curve([[e.get("env_steps"), e.get("return_mean")]
                                       for e in ckpt["trainer"].get("evaluations", []) if isinstance(e, dict)]))


def load_entry(spec: EntrySpec, device: torch.device | str = "cpu", runtime: str | None = None) -> Entry:
    """Load an entry's file and controller on ``device``.

    :param runtime: planner runtime preset for entries that do not name their own (None: the checkpoint's).

    :raises EntryError: the file is missing, of another format or experiment, or lacks the controller (all
        :class:`ValueError`; :class:`~dcem_agents.training.CheckpointError` is one too).
    """
    device = torch.device(device)
    require_file(spec.path)
    if is_sb3_zip(spec.path):
        fields = _load_sb3_zip(spec, device)
    else:
        ckpt = load_checkpoint(spec.path, map_location=device)
        kind = ckpt["experiment"]
        if kind not in CONTROLLERS:
            raise EntryError(f"{spec.path} is a {kind!r} checkpoint, which has no controller to compare: entries are "
                             f"planet, dcem or ppo checkpoints or SB3 model zips (evaluate.py --checkpoint runs the "
                             f"{kind!r} experiment's own evaluation)")
        name = _controller_name(kind, spec)
        fields = _load_ppo(ckpt, spec, name, device) if kind == "ppo" else _load_planner(ckpt, spec, name, device)
    if spec.planner:
        settings = dict(spec.planner)
        _override_planner(fields["controller"], settings, f"{spec.path}:{fields['controller_name']}")
        fields["samples_per_action"] = fields["controller"].samples_per_step
    recorded = fields.pop("recorded_env", None)
    exact_env_steps = fields.pop("exact_env_steps", None)
    own_label = fields.pop("default_label", None)
    if own_label is not None:
        default = own_label
    elif fields["kind"] != "sb3-obs":
        default = _label(fields["kind"], fields["controller_name"])
    else:  # a baseline zip of this package names its algorithm
        default = f"{recorded['algorithm']} (model-free)" if recorded and recorded.get("algorithm") else spec.path.stem
    if spec.runtime is not None:  # entries of one file that differ only in how they plan are told apart
        default = f"{default} ({spec.runtime})"
    if spec.planner:
        default = f"{default} ({', '.join(f'{k}={v}' for k, v in spec.planner)})"
    entry = Entry(label=spec.label or default, **fields)
    name = spec.runtime or runtime
    if name is not None:
        if name not in RUNTIME_PRESETS:
            raise EntryError(f"unknown planner runtime {name!r}; available: {', '.join(RUNTIME_PRESETS)}")
        if not set_runtime(entry.controller, RUNTIME_PRESETS[name]) and spec.runtime is not None:
            raise EntryError(f"{spec.path}: the {entry.controller_name!r} controller does not plan; it has no runtime")
    if recorded is not None:  # a baseline zip of this package: it says where it was trained
        bind_environment(entry, recorded["env_id"], recorded["action_repeat"], "the environment its zip records")
        if isinstance(exact_env_steps, int):  # and how many environment steps, as counted
            entry.train_env_steps = exact_env_steps
    return entry
