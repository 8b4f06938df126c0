"""D4RL-style generation on a real MuJoCo env at a small size (behaviour SAC on RLlib)."""

from __future__ import annotations

import pytest

from rllib_o2o.stages.collect import CollectSettings, collect
from rllib_o2o.data.schema import DatasetError, episode_returns, read_dataset
from rllib_o2o.data.validate import validate_dataset


@pytest.mark.slow
def test_hopper_random_medium_medium_replay(tmp_path):
    settings = CollectSettings(
        env_id="Hopper-v5", kinds=("random", "medium", "medium-replay"), num_transitions=2_000,
        medium_target_score=5.0, train_env_steps=6_000, env_steps_per_iteration=1_000,
        random_warmup_steps=1_000, eval_episodes=3, hidden=(64, 64), seed=0,
    )
    paths = collect(settings, tmp_path)
    stats = {kind: validate_dataset(path, env_id="Hopper-v5") for kind, path in paths.items()}
    assert stats["random"].num_transitions == stats["medium"].num_transitions == 2_000
    # medium is a trained policy: clearly better than uniform random actions
    assert stats["medium"].return_mean > 2 * stats["random"].return_mean + 50
    replay, meta = read_dataset(paths["medium-replay"])
    assert meta.generator["kind"] == "medium-replay" and meta.generator["target_reached"]
    assert meta.generator["behaviour_env_steps"] == len(replay["rewards"])  # every step SAC saw
    assert (replay["t"][replay["eps_id"] == 0] == range((replay["eps_id"] == 0).sum())).all()
    assert len(episode_returns(replay)) == stats["medium-replay"].num_episodes
    assert meta.ref_min_score == pytest.approx(-20.272305) and meta.ref_max_score == pytest.approx(3234.3)

    # same settings again: reused, not regenerated (no file of the three datasets is written again)
    written = {p: p.stat().st_mtime_ns for path in paths.values() for p in path.rglob("*") if p.is_file()}
    again = collect(settings, tmp_path, progress=print)
    assert again == paths
    assert {p: p.stat().st_mtime_ns for p in written} == written


def test_collect_refuses_unknown_kind_and_unscored_env(tmp_path):
    with pytest.raises(DatasetError, match="unknown dataset kind"):
        collect(CollectSettings(env_id="Hopper-v5", kinds=("bogus",)), tmp_path)
    with pytest.raises(DatasetError, match="no reference scores"):
        collect(CollectSettings(env_id="MountainCarContinuous-v0", kinds=("random",)), tmp_path)
    assert list(tmp_path.iterdir()) == []
