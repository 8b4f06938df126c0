"""D4RL HDF5 import: episode boundaries and next observations hand-checked, and every bad input."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from rllib_o2o.cli import main
from rllib_o2o.data.d4rl import import_d4rl
from rllib_o2o.data.schema import DatasetError, read_dataset
from rllib_o2o.data.validate import validate_dataset
from tests.conftest import leftovers

# 12 rows, Pendulum-v1 dims (obs 3, action 1 in [-2, 2]). Episodes by row:
#   A 0-2 ends terminal | B 3-5 ends timeout | C 6 a lone timeout
#   D 7-8 ends terminal+timeout | E 9-11 cut by the end of the file
N = 12
TERMINALS = np.zeros(N, bool)
TERMINALS[[2, 8]] = True
TIMEOUTS = np.zeros(N, bool)
TIMEOUTS[[5, 6, 8]] = True


def d4rl_arrays(next_observations: bool = False) -> dict[str, np.ndarray]:
    rows = np.arange(N, dtype=np.float32)
    arrays = {
        "observations": np.stack([rows, rows + 0.5, -rows], axis=1),
        "actions": np.linspace(-2, 2, N, dtype=np.float32)[:, None],
        "rewards": rows * 10,
        "terminals": TERMINALS,
        "timeouts": TIMEOUTS,
    }
    if next_observations:
        arrays["next_observations"] = arrays["observations"] + 100
    return arrays


def write_h5(path, arrays, metadata=None):
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f[key] = value
        f["infos/qpos"] = np.zeros((len(arrays.get("observations", [])), 2))
        for key, value in (metadata or {}).items():
            f[f"metadata/{key}"] = value
    return path


def test_import_without_next_observations(tmp_path):
    src = write_h5(tmp_path / "data.hdf5", d4rl_arrays())
    out = import_d4rl(src, "Pendulum-v1", tmp_path / "ds")
    tr, meta = read_dataset(out)
    kept = [0, 1, 2, 3, 4, 7, 8, 9, 10]  # rows 5, 6 (timeouts) and 11 (end of file) dropped
    obs = d4rl_arrays()["observations"]
    np.testing.assert_array_equal(tr["obs"], obs[kept])
    np.testing.assert_array_equal(tr["new_obs"], obs[[1, 2, 2, 4, 5, 8, 8, 10, 11]])
    np.testing.assert_array_equal(tr["rewards"], np.array(kept, np.float32) * 10)
    np.testing.assert_array_equal(tr["eps_id"], [0, 0, 0, 1, 1, 2, 2, 3, 3])
    np.testing.assert_array_equal(tr["t"], [0, 1, 2, 0, 1, 0, 1, 0, 1])
    np.testing.assert_array_equal(tr["terminateds"], [0, 0, 1, 0, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(tr["truncateds"], [0, 0, 0, 0, 1, 0, 1, 0, 1])
    assert (meta.env_id, meta.source, meta.obs_shape, meta.action_shape) == (
        "Pendulum-v1", "d4rl", (3,), (1,))
    assert (meta.num_transitions, meta.num_episodes) == (9, 4)
    assert (meta.ref_min_score, meta.ref_max_score) == (-1230.0, -150.0)
    assert meta.generator["has_next_observations"] is False
    assert validate_dataset(out).num_transitions == 9


def test_import_with_next_observations(tmp_path):
    arrays = d4rl_arrays(next_observations=True)
    src = write_h5(tmp_path / "data.hdf5", arrays)
    tr, meta = read_dataset(import_d4rl(src, "Pendulum-v1", tmp_path / "ds"))
    np.testing.assert_array_equal(tr["obs"], arrays["observations"])
    np.testing.assert_array_equal(tr["new_obs"], arrays["next_observations"])
    np.testing.assert_array_equal(tr["eps_id"], [0, 0, 0, 1, 1, 1, 2, 3, 3, 4, 4, 4])
    np.testing.assert_array_equal(tr["t"], [0, 1, 2, 0, 1, 2, 0, 0, 1, 0, 1, 2])
    np.testing.assert_array_equal(tr["terminateds"], TERMINALS)
    expected_truncated = TIMEOUTS.copy()
    expected_truncated[-1] = True  # cut by the end of the file
    np.testing.assert_array_equal(tr["truncateds"], expected_truncated)
    assert meta.num_episodes == 5


def test_metadata_reference_scores_override(tmp_path):
    src = write_h5(tmp_path / "data.hdf5", d4rl_arrays(),
                   metadata={"ref_min_score": -1.0, "ref_max_score": 1.0, "algorithm": "SAC"})
    meta = read_dataset(import_d4rl(src, "Pendulum-v1", tmp_path / "ds"))[1]
    assert (meta.ref_min_score, meta.ref_max_score) == (-1.0, 1.0)
    assert meta.generator["metadata"]["algorithm"] == "SAC"


def test_d4rl_name_is_recorded_without_env_check(tmp_path):
    """A D4RL name is not a gymnasium env: kept for scoring, bounds taken from the data."""
    arrays = d4rl_arrays()
    arrays["observations"] = np.repeat(arrays["observations"], 4, axis=1)[:, :11]
    arrays["actions"] = np.repeat(arrays["actions"] / 2, 3, axis=1)
    src = write_h5(tmp_path / "data.hdf5", arrays)
    tr, meta = read_dataset(import_d4rl(src, "hopper-medium-v2", tmp_path / "ds"))
    assert (meta.env_id, meta.obs_shape, meta.action_shape) == ("hopper-medium-v2", (11,), (3,))
    assert (meta.ref_min_score, meta.ref_max_score) == (-20.272305, 3234.3)
    assert meta.action_low == tr["actions"].min(axis=0).tolist() == [-1.0] * 3
    assert meta.action_high == tr["actions"].max(axis=0).tolist()
    assert validate_dataset(tmp_path / "ds").env_checked is False


def test_import_d4rl_cli_success(tmp_path, capsys):
    src = write_h5(tmp_path / "data.hdf5", d4rl_arrays())
    out = tmp_path / "ds"
    assert main(["import-d4rl", str(src), "--env", "Pendulum-v1", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    assert main(["validate", str(out)]) == 0
    assert "transitions  9  episodes 4" in capsys.readouterr().out


def test_existing_output_refused_then_overwritten(tmp_path, capsys):
    src = write_h5(tmp_path / "data.hdf5", d4rl_arrays())
    args = ["import-d4rl", str(src), "--env", "Pendulum-v1", "--out", str(tmp_path / "ds")]
    assert main(args) == 0
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0


# --- bad inputs: message names file + problem, CLI exits 2, nothing written ----------

def _with(key, value):
    def make(path):
        arrays = d4rl_arrays()
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value(arrays[key])
        return write_h5(path, arrays)
    return make


def _nan(a):
    a = a.copy()
    a[4, 2] = np.nan
    return a


def _inf(a):
    a = a.copy()
    a[3] = -np.inf
    return a


def _text_file(path):
    path.write_text("observations,actions\n0.1,0.2\n")
    return path


def _truncated(path):
    write_h5(path, d4rl_arrays())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _empty(path):
    return write_h5(path, {k: v[:0] for k, v in d4rl_arrays().items()})


BAD_INPUTS = {
    "missing_key": (_with("timeouts", None), "missing HDF5 key(s) timeouts"),
    "obs_dim_vs_env": (_with("observations", lambda a: np.hstack([a, a[:, :1]])),
                       "observations have 4 dims per row, expected 3"),
    "action_dim_vs_env": (_with("actions", lambda a: np.hstack([a, a])),
                          "actions have 2 dims per row, expected 1"),
    "nan": (_with("observations", _nan), "observations has NaN values (1 entries, first at row 4)"),
    "inf": (_with("rewards", _inf), "rewards has inf values (1 entries, first at row 3)"),
    "actions_outside_space": (_with("actions", lambda a: a * 1.5),
                              "actions outside the action space [[-2.0], [2.0]]"),
    "empty": (_empty, "dataset is empty (0 rows)"),
    "not_hdf5": (_text_file, "not an HDF5 file"),
    "truncated_hdf5": (_truncated, "corrupt or truncated HDF5 file"),
    "mismatched_lengths": (_with("rewards", lambda a: a[:-2]),
                           "arrays have different lengths (observations=12, actions=12, "
                           "rewards=10"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_hdf5_input(tmp_path, capsys, case):
    make, problem = BAD_INPUTS[case]
    src = make(tmp_path / "data.hdf5")
    out = tmp_path / "out" / "ds"
    with pytest.raises(DatasetError) as err:
        import_d4rl(src, "Pendulum-v1", out)
    message = str(err.value)
    assert message.startswith(str(src)) and problem in message, message
    assert "\n" not in message

    code = main(["import-d4rl", str(src), "--env", "Pendulum-v1", "--out", str(out)])
    assert code == 2
    stderr = capsys.readouterr().err
    assert stderr == f"rllib-o2o import-d4rl: error: {message}\n"
    assert not out.parent.exists()  # not even the parent: nothing was written
    assert leftovers(tmp_path) == []


def test_missing_file(tmp_path, capsys):
    src = tmp_path / "nope.hdf5"
    out = tmp_path / "o"
    assert main(["import-d4rl", str(src), "--env", "Pendulum-v1", "--out", str(out)]) == 2
    assert f"{src}: no such file" in capsys.readouterr().err
