"""ACA's per-dataset settings from the reference code (spec, "Per-dataset settings")."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from rllib_o2o.suggest import UnknownNameError


@dataclass(frozen=True)
class Preset:
    clip_beta: float
    w_schedule: tuple[float, float, float]
    seed_episodes: int
    entropy_scale: float


PRESETS = {
    "random": Preset(7.0, (1.0, 10.0, 0.0), 0, 1.0),
    "medium": Preset(7.0, (1.0, 40.0, 0.5), 0, 1.0),
    "medium-replay": Preset(7.0, (1.0, 40.0, 0.5), 50, 1.0),
    "medium-expert": Preset(15.0, (1.0, 100.0, 1.0), 50, 1.0),
    "expert": Preset(15.0, (1.0, 100.0, 1.0), 50, 1.0),
}


def get_preset(name: str, **overrides) -> Preset:
    """The named preset with any non-None override applied."""
    if name not in PRESETS:
        raise UnknownNameError("preset", [name], PRESETS, hint=f"; choose from {sorted(PRESETS)}")
    overrides = {k: (tuple(v) if k == "w_schedule" else v) for k, v in overrides.items() if v is not None}
    unknown = set(overrides) - set(asdict(PRESETS[name]))
    if unknown:
        raise ValueError(f"unknown preset field(s) {sorted(unknown)}")
    return replace(PRESETS[name], **overrides)


def preset_for_dataset(name: str | None) -> str:
    """Guesses the preset from a dataset name such as 'hopper-medium-replay'."""
    lowered = (name or "").lower()
    if "antmaze" in lowered:
        raise ValueError(f"{name}: AntMaze needs the unsquashed-Gaussian ACA setting "
                         "(beta 3, [1, 200, 0.5], c_H 0.5), which this project does not implement yet")
    for key in sorted(PRESETS, key=len, reverse=True):
        if key in lowered:
            return key
    return "medium"
