"""PipelineConfig and what is derived from it: flags, the embedded default, and suggestions for mistyped names."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field

import pytest

from rllib_o2o.config import (
    PipelineConfig,
    config_from_options,
    embedded_default_config,
)
from rllib_o2o.data.schema import DatasetError
from rllib_o2o.data.sources import D4RL, DIRECTORY, MINARI, dataset_kind
from rllib_o2o.flags import add_config_flags, given_values
from rllib_o2o.suggest import UnknownNameError


@dataclass
class Toy:
    fast: bool = field(default=False, metadata={"help": "a switch"})
    steps: int = field(default=3, metadata={"help": "a count"})
    sizes: list = field(default_factory=lambda: [8], metadata={"help": "a list"})
    extra: dict | None = field(default=None, metadata={"help": "a mapping"})
    threads: int | str = field(default="auto", metadata={"help": "auto or N"})


def _toy_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_config_flags(parser, Toy, alternative=("elsewhere", Toy(steps=5)))
    return parser


def test_a_new_field_is_a_new_flag_typed_by_its_annotation():
    args = _toy_parser().parse_args(["--fast", "--steps", "4", "--sizes", "[1, 2]", "--extra", '{"a": 1}',
                                     "--threads", "2"])
    assert given_values(args, Toy) == {"fast": True, "steps": 4, "sizes": [1, 2], "extra": {"a": 1}, "threads": 2}
    assert _toy_parser().parse_args(["--no-fast", "--threads", "auto"]).fast is False
    assert given_values(_toy_parser().parse_args([]), Toy) == {}


def test_flag_help_shows_the_default_and_the_alternative_where_it_differs():
    helps = {a.dest: a.help for a in _toy_parser()._actions}
    assert "default: 3" in helps["steps"] and "elsewhere: 5" in helps["steps"]
    assert "default: [8]" in helps["sizes"] and "elsewhere" not in helps["sizes"]


def test_unknown_keys_name_the_nearest_known_key():
    with pytest.raises(UnknownNameError) as err:
        PipelineConfig.from_dict({"offline_stepz": 5, "zzz": 1, "online_steps": 3})
    assert err.value.suggestions == {"offline_stepz": "offline_steps", "zzz": None}
    assert isinstance(err.value, ValueError)  # reported like any other bad value


def test_wrong_types_are_refused_naming_the_key():
    for values in ({"offline_steps": "many"}, {"hidden": 64}, {"num_gpus_per_learner": True}):
        with pytest.raises(ValueError, match=repr(next(iter(values)))):
            PipelineConfig.from_dict(values)


def test_options_without_a_dataset_start_from_the_embedded_default():
    embedded = asdict(embedded_default_config())
    assert asdict(config_from_options({})) == embedded
    assert asdict(config_from_options({"dataset": None, "seed": 4})) == {**embedded, "seed": 4}
    with_data = config_from_options({"dataset": "data/x", "seed": 4})
    assert asdict(with_data) == {**asdict(PipelineConfig()), "dataset": "data/x", "seed": 4}


def test_the_default_method_distils_z_unless_an_imported_policy_has_no_critic():
    from rllib_o2o.methods import DEFAULT_METHOD, get_method

    assert DEFAULT_METHOD == "aca"
    default = get_method(DEFAULT_METHOD)
    assert default.distill_baseline and default.reference_entropy_target and default.keep_offline_entropy_bonus
    assert PipelineConfig().method == DEFAULT_METHOD == embedded_default_config().method
    assert PipelineConfig(offline_checkpoint="ckpt").method == "aca-td"
    for values in ({}, {"dataset": "data/x"}):
        assert config_from_options(values).method == DEFAULT_METHOD
        assert config_from_options({**values, "offline_checkpoint": "ckpt"}).method == "aca-td"
        assert config_from_options({**values, "offline_checkpoint": "ckpt", "method": "naive"}).method == "naive"
    PipelineConfig(offline_checkpoint="ckpt").validate()
    with pytest.raises(ValueError, match="actor only; use --method aca-td"):
        PipelineConfig(offline_checkpoint="ckpt", method=DEFAULT_METHOD).validate()


def test_tune_refuses_a_method_without_an_alignment_stage(no_ray, tmp_path):
    from rllib_o2o.cli import main
    from rllib_o2o.rundir.layout import RunDir
    from rllib_o2o.tune import ensure_aligned

    assert main(["tune", "--method", "naive", "--out", str(tmp_path / "run")]) == 2
    with pytest.raises(ValueError, match="no alignment stage"):
        ensure_aligned(PipelineConfig(method="naive", out=str(tmp_path / "run")), RunDir(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_an_env_other_than_the_embedded_one_needs_a_dataset():
    with pytest.raises(ValueError, match="dataset"):
        config_from_options({"env": "Hopper-v5"}).validate()
    config_from_options({"env": "Pendulum-v1"}).validate()
    PipelineConfig(dataset="data/hopper-medium", env="Hopper-v5").validate()


def test_unknown_method_preset_and_env_name_the_nearest():
    from rllib_o2o.data.rollouts import check_registered

    cases = [(PipelineConfig(method="aca-papr").validate, {"aca-papr": "aca-paper"}),
             (PipelineConfig(preset="medum").validate, {"medum": "medium"}),
             (lambda: check_registered("Hoper-v5"), {"Hoper-v5": "Hopper-v5"})]
    for call, suggestions in cases:
        with pytest.raises(UnknownNameError) as err:
            call()
        assert err.value.suggestions == suggestions


def test_dataset_kind_tells_a_missing_path_from_a_minari_id(tmp_path, pendulum_dir, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    assert dataset_kind(pendulum_dir) == DIRECTORY
    (tmp_path / "f.hdf5").write_bytes(b"")
    assert dataset_kind(tmp_path / "f.hdf5") == D4RL
    assert dataset_kind("mujoco/hopper/medium-v0") == MINARI  # id-shaped: the importer says it is not there
    (tmp_path / "minari" / "pendulum" / "mine").mkdir(parents=True)
    assert dataset_kind("pendulum/mine") == MINARI  # under MINARI_DATASETS_PATH
    for missing in ("data/hopper-medium", tmp_path / "gone", tmp_path / "gone.hdf5"):
        with pytest.raises(DatasetError, match="no such file or directory"):
            dataset_kind(missing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="dataset.json"):
        dataset_kind(tmp_path / "empty")


def test_stage_1_hands_over_the_actor_moving_average_over_4_percent_of_its_updates_by_default(tmp_path):
    """auto: tau = max(5e-4, 25 / offline_steps), a horizon of offline_steps / 25 updates, at most 2,000;
    a number is the rate itself, 0 the last actor; the offline stage's learner gets the resolved rate."""
    from rllib_o2o.stages.offline import offline_config

    assert PipelineConfig().offline_actor_ema == "auto"
    assert PipelineConfig(offline_steps=50_000).actor_ema_rate() == pytest.approx(5e-4)  # 25 / 50,000
    assert PipelineConfig(offline_steps=20_000).actor_ema_rate() == pytest.approx(1.25e-3)  # 25 / 20,000
    assert PipelineConfig(offline_steps=3_000).actor_ema_rate() == pytest.approx(1 / 120)  # horizon 120
    assert PipelineConfig(offline_steps=500_000).actor_ema_rate() == 5e-4  # 25 / 500k = 5e-5: capped at 2,000
    assert PipelineConfig(offline_steps=3_000, offline_actor_ema=0.0).actor_ema_rate() == 0.0
    assert PipelineConfig(offline_actor_ema=1e-4).actor_ema_rate() == 1e-4
    for bad in ("often", 1.0, -0.1, True):
        with pytest.raises(ValueError, match="offline_actor_ema"):
            PipelineConfig.from_dict({"offline_actor_ema": bad}).validate()
    parser = argparse.ArgumentParser()
    add_config_flags(parser, PipelineConfig)
    assert given_values(parser.parse_args(["--offline-actor-ema", "0.0005"]), PipelineConfig) == {
        "offline_actor_ema": 0.0005}
    assert given_values(parser.parse_args(["--offline-actor-ema", "auto"]), PipelineConfig) == {
        "offline_actor_ema": "auto"}
    cfg = PipelineConfig(env="Pendulum-v1", offline_steps=3_000)
    assert offline_config(cfg, tmp_path, meta=None).actor_ema == pytest.approx(1 / 120)
    cfg = PipelineConfig(env="Pendulum-v1", offline_actor_ema=0.0)
    assert offline_config(cfg, tmp_path, meta=None).actor_ema == 0.0


def test_offline_temperature_floor_reaches_the_learner_and_refuses_bad_values(tmp_path):
    from rllib_o2o.stages.offline import offline_config

    assert offline_config(PipelineConfig(env="Pendulum-v1"), tmp_path, meta=None).min_alpha == 0.0
    cfg = PipelineConfig(env="Pendulum-v1", offline_min_alpha=0.1)
    assert offline_config(cfg, tmp_path, meta=None).min_alpha == 0.1
    for bad in ("high", 1.0, -0.1, True):
        with pytest.raises(ValueError, match="offline_min_alpha"):
            PipelineConfig.from_dict({"offline_min_alpha": bad}).validate()
