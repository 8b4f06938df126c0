"""`validate` on Parquet datasets: stats, and every bad input through the CLI."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rllib_o2o.cli import main
from rllib_o2o.data.schema import DatasetError, write_dataset
from rllib_o2o.data.scores import normalized_score
from rllib_o2o.data.validate import format_stats, validate_dataset


def test_stats(pendulum_dir, pendulum_data):
    tr = pendulum_data[0]
    stats = validate_dataset(pendulum_dir)
    returns = [tr["rewards"][tr["eps_id"] == e].astype(np.float64).sum() for e in range(3)]
    assert (stats.env_id, stats.num_transitions, stats.num_episodes) == ("Pendulum-v1", 450, 3)
    assert (stats.obs_dim, stats.act_dim, stats.env_checked) == (3, 1, True)
    assert stats.return_mean == pytest.approx(np.mean(returns))
    assert stats.return_min == pytest.approx(min(returns))
    assert stats.return_std == pytest.approx(np.std(returns))
    assert stats.normalized_score_mean == pytest.approx(
        normalized_score(np.mean(returns), -1230.0, -150.0))
    assert stats.terminal_fraction == 0.0
    assert stats.truncated_fraction == pytest.approx(3 / 450)  # rows 199, 399, 449
    text = format_stats(stats)
    assert "transitions  450  episodes 3" in text and "Pendulum-v1" in text


def test_validate_cli_ok(pendulum_dir, capsys):
    assert main(["validate", str(pendulum_dir), "--env", "Pendulum-v1"]) == 0
    assert f"{pendulum_dir}: OK" in capsys.readouterr().out


def test_meta_reference_scores_take_precedence(tmp_path, pendulum_data):
    tr, meta = pendulum_data
    out = write_dataset(tmp_path / "ds", tr, dataclasses.replace(
        meta, ref_min_score=-2000.0, ref_max_score=0.0))
    stats = validate_dataset(out)
    assert stats.normalized_score_mean == pytest.approx(100 * (stats.return_mean + 2000) / 2000)


# --- bad inputs ---------------------------------------------------------------------

def _written(tmp_path, pendulum_data, variant=None):
    """A valid dataset whose dataset.json describes no env, so only --env can catch `variant`."""
    tr, meta = pendulum_data
    tr, meta = dict(tr), dataclasses.replace(meta, env_id=None)
    if variant == "obs4":
        tr["obs"] = tr["new_obs"] = np.hstack([tr["obs"], tr["obs"][:, :1]])
        meta.obs_shape = (4,)
    elif variant == "act2":
        tr["actions"] = np.hstack([tr["actions"], tr["actions"]])
        meta.action_shape, meta.action_low, meta.action_high = (2,), [-2, -2], [2, 2]
    elif variant == "wide_actions":
        tr["actions"] = tr["actions"] * 2
        meta.action_low, meta.action_high = [-4.0], [4.0]
    return write_dataset(tmp_path / "ds", tr, meta, rows_per_file=200)


def _damage(column, fn):
    """Rewrites part-00001's `column` through fn(numpy 2-D or 1-D array); the error then
    names the dataset directory and the row in the whole dataset."""
    def damage(path):
        part = path / "part-00001.parquet"
        table = pq.read_table(part)
        col = table[column].combine_chunks()
        if pa.types.is_fixed_size_list(col.type):
            values = fn(col.flatten().to_numpy().reshape(len(col), -1).copy())
            new = pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), values.shape[1])
        else:
            new = pa.array(fn(col.to_numpy().copy()))
        pq.write_table(table.set_column(table.column_names.index(column), column, new), part)
        return path
    return damage


def _set(index, value):
    def fn(a):
        a[index] = value
        return a
    return fn


def _drop_column(path):
    part = path / "part-00000.parquet"
    pq.write_table(pq.read_table(part).drop_columns(["rewards"]), part)
    return part


def _text_part(path):
    part = path / "part-00002.parquet"
    part.write_text("this is not parquet\n")
    return part


def _no_meta(path):
    (path / "dataset.json").unlink()
    return path


def _short_part(path):
    part = path / "part-00001.parquet"
    pq.write_table(pq.read_table(part).slice(0, 150), part)
    return path


def _empty(path):
    for part in path.glob("part-*.parquet"):
        pq.write_table(pq.read_table(part).slice(0, 0), part)
    return path


# case -> (variant written, damage(path) -> the file the message names, problem)
BAD_DATASETS = {
    "missing_column": (None, _drop_column, "missing column(s) rewards"),
    "obs_dim_vs_env": ("obs4", None, "observations have 4 dims per row, expected 3"),
    "action_dim_vs_env": ("act2", None, "actions have 2 dims per row, expected 1"),
    "actions_outside_space": ("wide_actions", None,
                              "actions outside the action space [[-2.0], [2.0]]"),
    "nan": (None, _damage("obs", _set((3, 1), np.nan)),
            "column obs has NaN values (1 entries, first at row 203)"),
    "inf": (None, _damage("rewards", _set(10, np.inf)),
            "column rewards has inf values (1 entries, first at row 210)"),
    "empty": (None, _empty, "dataset is empty"),
    "not_parquet": (None, _text_part, "not a readable Parquet file"),
    "no_dataset_json": (None, _no_meta, "no dataset.json"),
    "mismatched_lengths": (None, _short_part,
                           "dataset.json records 450 transitions but the part files hold 400"),
}


@pytest.mark.parametrize("case", sorted(BAD_DATASETS))
def test_bad_dataset(tmp_path, pendulum_data, capsys, case):
    variant, damage, problem = BAD_DATASETS[case]
    path = _written(tmp_path, pendulum_data, variant)
    named = damage(path) if damage else path
    with pytest.raises(DatasetError) as err:
        validate_dataset(path, env_id="Pendulum-v1")
    message = str(err.value)
    assert message.startswith(str(named)) and problem in message, message
    assert "\n" not in message
    assert main(["validate", str(path), "--env", "Pendulum-v1"]) == 2
    assert capsys.readouterr().err == f"rllib-o2o validate: error: {message}\n"


def test_unknown_env_is_an_error(pendulum_dir):
    with pytest.raises(DatasetError, match="--env Hoper-v5 is not a registered gymnasium env"):
        validate_dataset(pendulum_dir, env_id="Hoper-v5")


def test_not_a_directory(tmp_path, capsys):
    path = tmp_path / "file.parquet"
    path.write_text("x")
    assert main(["validate", str(path)]) == 2
    assert f"{path}: not a dataset directory" in capsys.readouterr().err
