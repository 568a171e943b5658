"""The one loader of a phase-2 (``dcem``) checkpoint's model-based components, below the experiment layer.

The phase-2 runner, the SB3 policy and the belief wrapper all load a ``dcem`` checkpoint through
:func:`load_components` (the SB3 side from a checkpoint *path*, a plain value that SB3 pickles into its zip): it reads
the sizes from the checkpoint's stored configs and state dicts and returns the world model, the decoder and the
latent planner settings, on CPU.

:func:`architecture` turns components into plain values (sizes, decoder config, planner settings, environment), and
:func:`components_from_architecture` rebuilds them from those values alone, with untrained weights: what an SB3 zip
needs to load without the checkpoint file, its weights coming from the zip itself.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from dcem_agents.models.decoder import LatentActionDecoder
from dcem_agents.models.rssm import RSSM
from dcem_agents.planning.latent import LatentCEMSettings
from dcem_agents.training.checkpoint import CheckpointError, load_checkpoint

log = logging.getLogger(__name__)

__all__ = ["DCEMComponents", "architecture", "components_from_architecture", "components_from_checkpoint",
           "load_components", "resolve_components"]


@dataclass
class DCEMComponents:
    """What a phase-2 checkpoint provides to the SB3 integration.

    :param model: the world model (weights loaded, eval mode).
    :param decoder: the latent action decoder (weights loaded).
    :param settings: the latent planner's hyper-parameters.
    :param env_id: the Gymnasium id the model was trained on.
    :param action_repeat: environment steps per agent step.
    :param env_steps: environment steps behind the checkpoint.
    """

    model: RSSM
    decoder: LatentActionDecoder
    settings: LatentCEMSettings
    env_id: str
    action_repeat: int
    env_steps: int


def load_components(path: str | Path, map_location: str | torch.device = "cpu") -> DCEMComponents:
    """Load a ``dcem`` checkpoint's world model, decoder and latent planner settings.

    :raises CheckpointError: the file is missing or is not a phase-2 (``dcem``) checkpoint.
    """
    return components_from_checkpoint(load_checkpoint(path, "dcem", map_location=map_location))


def components_from_checkpoint(ckpt: dict[str, Any]) -> DCEMComponents:
    """The components of a loaded ``dcem`` checkpoint (see :func:`load_components`)."""
    state: dict[str, Any] = ckpt["trainer"]
    p1, cfg = ckpt["phase1_config"], ckpt["config"]
    model_state, dec_state = state["model"], state["decoder"]
    d, pl = cfg["decoder"], cfg["planner"]
    arch = {"obs_dim": model_state["obs_loc"].numel(), "action_dim": dec_state["lower"].numel(),
            "hidden_size": p1["model"]["hidden_size"], "layer_size": p1["model"]["layer_size"],
            "min_std": p1["model"]["min_std"],
            "continuation": any(k.startswith("cont_head.") for k in model_state),
            "value": any(k.startswith("value_head.") for k in model_state),
            "decoder": {"latent_dim": d["latent_dim"], "horizon": d["horizon"], "action_dim": dec_state["lower"].numel(),
                        "lower": dec_state["lower"].tolist(), "upper": dec_state["upper"].tolist(),
                        "hidden_sizes": d["hidden_sizes"], "init_scale": d["init_scale"]},
            # the preset's planner section minus its runtime keys; a field it predates keeps its default
            "planner": {f.name: pl[f.name] for f in fields(LatentCEMSettings) if f.name in pl},
            "env_id": p1["env_id"], "action_repeat": p1["action_repeat"], "env_steps": state["counters"]["env_steps"]}
    comps = components_from_architecture(arch)
    comps.model.load_state_dict(model_state)
    comps.decoder.load_state_dict(dec_state)
    return comps


def _canonical(value: Any) -> Any:
    """``value`` with tuples as lists, for comparing architectures across a pickle or JSON round trip."""
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def _differences(arch: dict[str, Any], comps: DCEMComponents) -> list[str]:
    """The keys in which the components' architecture differs from the recorded ``arch`` (its steps aside)."""
    recorded, found = _canonical(arch), _canonical(architecture(comps))
    return sorted(k for k in recorded if k != "env_steps" and recorded.get(k) != found.get(k))


def resolve_components(checkpoint: str | Path | None, arch: dict[str, Any] | None,
                       require_weights: bool = False) -> DCEMComponents:
    """A policy's components: the checkpoint's (its weights too) while the file exists and is the checkpoint ``arch``
    was recorded from; else the sizes of ``arch`` with untrained weights (a saved SB3 zip then supplies the weights).

    A path is a plain value: a zip loaded in another folder, or after the file was replaced, may find a different
    file there (another phase's checkpoint, another task's). With ``arch`` recorded, such a file is not used: the
    components are built from ``arch`` and a warning names the file.

    :param require_weights: the caller needs the checkpoint's own weights (no saved state will replace them, e.g. the
        phase-2 policy a PPO run started from): never fall back to untrained components, raise instead.
    :raises CheckpointError: the checkpoint cannot be loaded and there is no architecture to fall back on; with
        ``require_weights``, whenever its weights cannot be had (missing, unreadable, or not the checkpoint ``arch``
        was recorded from).
    """
    if require_weights:
        if checkpoint is None:
            raise CheckpointError("no phase-2 checkpoint recorded, and its weights are needed")
        comps = load_components(checkpoint)
        if arch is not None:
            changed = _differences(arch, comps)
            if changed:
                raise CheckpointError(f"{checkpoint} is not the phase-2 checkpoint this policy was built from (it "
                                      f"differs in {', '.join(changed)}), and its weights are needed")
        return comps
    if arch is None:
        if checkpoint is None:
            raise ValueError("no phase-2 checkpoint and no architecture to build the policy's components from")
        return load_components(checkpoint)
    if checkpoint is not None and Path(checkpoint).is_file():
        try:
            comps = load_components(checkpoint)
        except CheckpointError as e:
            log.warning("%s; building the policy from its recorded architecture instead (its weights come from the "
                        "saved model)", e)
            return components_from_architecture(arch)
        changed = _differences(arch, comps)
        if not changed:
            return comps
        log.warning("%s is not the checkpoint this policy was built from (it differs in %s); building the policy from "
                    "its recorded architecture instead (its weights come from the saved model)",
                    checkpoint, ", ".join(changed))
    return components_from_architecture(arch)


def architecture(comps: DCEMComponents) -> dict[str, Any]:
    """The components as plain values (picklable into an SB3 zip); :func:`components_from_architecture` inverts it."""
    m = comps.model
    return {"obs_dim": m.obs_dim, "action_dim": m.action_dim, "hidden_size": m.hidden_size,
            "layer_size": m.embed[0].out_features, "min_std": m.min_std, "continuation": m.cont_head is not None,
            "value": m.value_head is not None,
            "decoder": comps.decoder.config(),
            "planner": asdict(comps.settings), "env_id": comps.env_id, "action_repeat": comps.action_repeat,
            "env_steps": comps.env_steps}


def components_from_architecture(arch: dict[str, Any]) -> DCEMComponents:
    """Components of the sizes in ``arch`` with untrained weights (load a state dict into them)."""
    try:
        model = RSSM(arch["obs_dim"], arch["action_dim"], arch["hidden_size"], arch["layer_size"], arch["min_std"],
                     bool(arch.get("continuation", False)), value=bool(arch.get("value", False)))
        decoder = LatentActionDecoder(**arch["decoder"])
        settings = LatentCEMSettings(**arch["planner"])
        return DCEMComponents(model.eval(), decoder, settings, arch["env_id"], int(arch["action_repeat"]),
                              int(arch["env_steps"]))
    except (KeyError, TypeError) as e:
        raise ValueError(f"not a valid EmbeddedDCEMPolicy architecture ({type(e).__name__}: {e})") from None
