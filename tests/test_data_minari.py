"""Minari import from a local dataset (optional extra: skipped when minari is not installed)."""

from __future__ import annotations

import sys

import gymnasium as gym
import numpy as np
import pytest

from rllib_o2o.cli import main
from rllib_o2o.data.minari_import import import_minari
from rllib_o2o.data.schema import DatasetError, read_dataset
from rllib_o2o.data.validate import validate_dataset
from tests.conftest import leftovers

NEEDS_MINARI = "optional extra: pip install 'rllib-o2o[minari]'"
# Minari nags about unset author/description/... when creating the test datasets.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:minari.utils")


@pytest.fixture
def minari(tmp_path, monkeypatch):
    module = pytest.importorskip("minari", reason=NEEDS_MINARI)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    return module


def _buffers(minari):
    """Episode 0: 4 steps ending terminated; episode 1: 3 steps ending truncated."""
    from minari.data_collector import EpisodeBuffer

    def episode(i, steps, terminated):
        obs = [np.array([i, t, -t], np.float32) for t in range(steps + 1)]
        return EpisodeBuffer(
            id=i, observations=obs, actions=[np.array([0.5 * t - 1], np.float32)
                                             for t in range(steps)],
            rewards=[float(10 * i + t) for t in range(steps)],
            terminations=[False] * (steps - 1) + [terminated],
            truncations=[False] * (steps - 1) + [not terminated], infos={})

    return [episode(0, 4, True), episode(1, 3, False)]


def test_import_from_buffers(minari, tmp_path):
    minari.create_dataset_from_buffers("pendulum/handmade-v0", _buffers(minari), env="Pendulum-v1",
                                       ref_min_score=-10.0, ref_max_score=10.0)
    out = import_minari("pendulum/handmade-v0", tmp_path / "ds")
    tr, meta = read_dataset(out)
    np.testing.assert_array_equal(tr["obs"][:, 1], [0, 1, 2, 3, 0, 1, 2])
    np.testing.assert_array_equal(tr["new_obs"][:, 1], [1, 2, 3, 4, 1, 2, 3])
    np.testing.assert_array_equal(tr["obs"][:, 0], [0, 0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(tr["rewards"], [0, 1, 2, 3, 10, 11, 12])
    np.testing.assert_array_equal(tr["eps_id"], [0, 0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(tr["t"], [0, 1, 2, 3, 0, 1, 2])
    np.testing.assert_array_equal(tr["terminateds"], [0, 0, 0, 1, 0, 0, 0])
    np.testing.assert_array_equal(tr["truncateds"], [0, 0, 0, 0, 0, 0, 1])
    assert (meta.env_id, meta.source, meta.num_episodes) == ("Pendulum-v1", "minari", 2)
    assert (meta.ref_min_score, meta.ref_max_score) == (-10.0, 10.0)  # from Minari's metadata
    assert meta.generator["minari_dataset_id"] == "pendulum/handmade-v0"


def test_import_by_path_and_cli(minari, tmp_path, capsys):
    minari.create_dataset_from_buffers("pendulum/handmade-v0", _buffers(minari), env="Pendulum-v1")
    src = tmp_path / "minari" / "pendulum" / "handmade-v0"
    out = tmp_path / "ds"
    assert main(["import-minari", str(src), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    meta = read_dataset(out)[1]
    assert (meta.ref_min_score, meta.ref_max_score) == (-1230.0, -150.0)  # project Pendulum refs


def test_data_collector_dataset(minari, tmp_path):
    """A dataset written by Minari's own DataCollector (needs minari[create], i.e. jax)."""
    pytest.importorskip("jax", reason="minari's DataCollector needs `pip install minari[create]`")
    env = minari.DataCollector(gym.make("Pendulum-v1", max_episode_steps=20))
    env.reset(seed=0)
    env.action_space.seed(0)
    for _ in range(45):  # two full episodes and 5 steps of a third
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
    env.create_dataset("pendulum/random-v0", algorithm_name="random",
                       ref_min_score=-1000.0, ref_max_score=-100.0)
    env.close()
    out = import_minari("pendulum/random-v0", tmp_path / "ds")
    stats = validate_dataset(out)
    assert (stats.num_transitions, stats.num_episodes, stats.env_checked) == (45, 3, True)
    tr, meta = read_dataset(out)
    np.testing.assert_array_equal(np.flatnonzero(tr["truncateds"]), [19, 39, 44])
    assert (meta.ref_min_score, meta.ref_max_score) == (-1000.0, -100.0)


def test_env_override_is_checked(minari, tmp_path, capsys):
    minari.create_dataset_from_buffers("pendulum/handmade-v0", _buffers(minari), env="Pendulum-v1")
    out = tmp_path / "ds"
    code = main(["import-minari", "pendulum/handmade-v0", "--out", str(out),
                 "--env", "MountainCarContinuous-v0"])
    assert code == 2
    err = capsys.readouterr().err
    assert "checked against MountainCarContinuous-v0): observations have 3 dims per row, " \
           "expected 2" in err
    assert not out.exists() and leftovers(tmp_path) == []


def test_unknown_dataset_id(minari, tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(["import-minari", "nope/missing-v0", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "nope/missing-v0: no such Minari dataset directory" in err
    assert not out.exists()


def test_not_a_minari_directory(minari, tmp_path):
    bogus = tmp_path / "bogus"
    bogus.mkdir()
    with pytest.raises(DatasetError, match=f"^{bogus}: not a Minari dataset"):
        import_minari(bogus, tmp_path / "ds")


def test_corrupt_minari_metadata(minari, tmp_path, capsys):
    data = tmp_path / "broken" / "data"
    data.mkdir(parents=True)
    (data / "metadata.json").write_text("{truncated")
    assert main(["import-minari", str(tmp_path / "broken"), "--out", str(tmp_path / "ds")]) == 2
    assert f"{data}: cannot read Minari dataset" in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()


def test_minari_not_installed(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "minari", None)  # makes `import minari` raise ImportError
    with pytest.raises(DatasetError, match=r"pip install 'rllib-o2o\[minari\]'"):
        import_minari("anything", tmp_path / "ds")
