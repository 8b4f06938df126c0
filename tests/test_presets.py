"""ACA's per-dataset presets against the spec's table, overrides, errors, and the name guess."""

from __future__ import annotations

import dataclasses

import h5py
import pytest

from rllib_o2o.presets import PRESETS, Preset, get_preset, preset_for_dataset

# The spec's "Per-dataset settings of the reference code" (docs/method.md):
# dataset -> beta, [w0, T, w_min], offline trajectories seeded into the buffer, c_H.
SPEC_TABLE = {
    "random": (7, (1, 10, 0), 0, 1.0),
    "medium": (7, (1, 40, 0.5), 0, 1.0),
    "medium-replay": (7, (1, 40, 0.5), 50, 1.0),
    "medium-expert": (15, (1, 100, 1), 50, 1.0),
    "expert": (15, (1, 100, 1), 50, 1.0),
}


@pytest.mark.parametrize("name", sorted(SPEC_TABLE))
def test_preset_matches_the_spec_table(name):
    beta, schedule, seeded, c_h = SPEC_TABLE[name]
    preset = get_preset(name)
    assert preset == PRESETS[name]
    assert preset.clip_beta == beta
    assert tuple(preset.w_schedule) == schedule
    assert len(preset.w_schedule) == 3
    w0, horizon, w_min = preset.w_schedule
    assert horizon > 0 and 0 <= w_min <= w0
    assert preset.seed_episodes == seeded
    assert preset.entropy_scale == c_h


def test_every_mujoco_dataset_kind_has_a_preset():
    assert set(SPEC_TABLE) <= set(PRESETS)


def test_overrides_replace_only_the_given_fields():
    base = get_preset("medium-replay")
    p = get_preset("medium-replay", clip_beta=3.0, w_schedule=[2.0, 5.0, 0.25])
    assert p.clip_beta == 3.0
    assert p.w_schedule == (2.0, 5.0, 0.25) and isinstance(p.w_schedule, tuple)
    assert (p.seed_episodes, p.entropy_scale) == (base.seed_episodes, base.entropy_scale)
    p = get_preset("expert", seed_episodes=0, entropy_scale=0.5)
    assert (p.seed_episodes, p.entropy_scale) == (0, 0.5)
    assert (p.clip_beta, p.w_schedule) == (15.0, (1.0, 100.0, 1.0))
    # None means "not given" (the CLI passes unset options as None).
    assert get_preset("random", clip_beta=None, w_schedule=None, seed_episodes=None,
                      entropy_scale=None) == PRESETS["random"]
    # Falsy but given values are real overrides.
    assert get_preset("expert", seed_episodes=0).seed_episodes == 0


def test_overrides_do_not_leak_into_the_table():
    before = dataclasses.asdict(PRESETS["medium"])
    get_preset("medium", clip_beta=1.0, w_schedule=(9.0, 9.0, 9.0))
    assert dataclasses.asdict(PRESETS["medium"]) == before
    with pytest.raises(dataclasses.FrozenInstanceError):
        PRESETS["medium"].clip_beta = 1.0


def test_unknown_preset_and_field_are_errors():
    with pytest.raises(ValueError, match="unknown preset 'hopper'"):
        get_preset("hopper")
    with pytest.raises(ValueError, match="beta"):
        get_preset("medium", beta=3.0)
    with pytest.raises(ValueError, match="nope"):
        get_preset("medium", clip_beta=2.0, nope=1)


@pytest.mark.parametrize("name, expected", [
    ("hopper-medium-replay", "medium-replay"),
    ("hopper-medium-replay-v2", "medium-replay"),
    ("walker2d-medium-expert-v2", "medium-expert"),
    ("halfcheetah-expert-v2", "expert"),
    ("halfcheetah-medium-v2", "medium"),
    ("hopper-random-v2", "random"),
    ("HOPPER-MEDIUM-REPLAY-V2", "medium-replay"),
    ("mujoco/hopper/expert-v0", "expert"),
    ("pendulum-medium-expert", "medium-expert"),
    ("runs/x/datasets/medium-replay", "medium-replay"),
])
def test_preset_for_dataset(name, expected):
    assert preset_for_dataset(name) == expected


def test_longer_names_win_over_their_parts():
    # "medium-expert" contains both "medium" and "expert"; "medium-replay" contains "medium".
    assert preset_for_dataset("medium-expert") == "medium-expert"
    assert preset_for_dataset("expert-medium-expert") == "medium-expert"
    assert preset_for_dataset("medium-replay") == "medium-replay"


def test_unrecognised_names_fall_back_to_medium():
    assert preset_for_dataset(None) == "medium"
    assert preset_for_dataset("") == "medium"
    assert preset_for_dataset("pendulum") == "medium"


def test_preset_type():
    assert all(isinstance(p, Preset) for p in PRESETS.values())


def test_antmaze_is_not_silently_a_mujoco_preset():
    for name in ("antmaze-medium-play-v2", "antmaze-umaze-v2"):
        try:
            key = preset_for_dataset(name)
        except ValueError:
            continue  # refusing is acceptable: this project has no unsquashed AntMaze policy
        preset = get_preset(key)
        assert (preset.clip_beta, tuple(preset.w_schedule), preset.entropy_scale) == (3, (1, 200, 0.5), 0.5)


def _pendulum_hdf5(path, num=400):
    from rllib_o2o.data.rollouts import collect_transitions

    tr = collect_transitions("Pendulum-v1", num, seed=0)
    with h5py.File(path, "w") as f:
        f["observations"] = tr["obs"]
        f["next_observations"] = tr["new_obs"]
        f["actions"] = tr["actions"]
        f["rewards"] = tr["rewards"]
        f["terminals"] = tr["terminateds"]
        f["timeouts"] = tr["truncateds"]
    return path


def test_imported_dataset_keeps_its_name_for_the_preset(tmp_path):
    from rllib_o2o.context import RunContext
    from rllib_o2o.pipeline import PipelineConfig, open_run

    results = {}
    for kind in ("medium-replay", "expert"):
        h5 = _pendulum_hdf5(tmp_path / f"pendulum-{kind}-v2.hdf5")
        cfg = PipelineConfig(dataset=str(h5), env="Pendulum-v1", out=str(tmp_path / f"run-{kind}"))
        results[kind] = RunContext.open(cfg, open_run(cfg)).config.preset
    assert results == {"medium-replay": "medium-replay", "expert": "expert"}


def test_dataset_directory_name_chooses_the_preset(tmp_path):
    """The path that works today: a dataset directory used in place keeps its own name."""
    from rllib_o2o.data.rollouts import collect_transitions, env_meta
    from rllib_o2o.data.schema import write_dataset
    from rllib_o2o.context import RunContext
    from rllib_o2o.pipeline import PipelineConfig, open_run

    data = write_dataset(tmp_path / "pendulum-medium-expert", collect_transitions("Pendulum-v1", 250, seed=0),
                         env_meta("Pendulum-v1"))
    cfg = PipelineConfig(dataset=str(data), out=str(tmp_path / "run"))
    assert RunContext.open(cfg, open_run(cfg)).config.preset == "medium-expert"
    cfg = PipelineConfig(dataset=str(data), out=str(tmp_path / "run2"), preset="random")
    assert RunContext.open(cfg, open_run(cfg)).config.preset == "random"  # an explicit preset wins over the guess
