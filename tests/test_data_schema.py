"""The Parquet schema: round trip, atomic writes, and every read/validation error."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rllib_o2o.data import schema
from rllib_o2o.data.schema import (
    COLUMNS,
    DatasetError,
    DatasetMeta,
    check_transitions,
    dataset_files,
    episode_returns,
    read_dataset,
    read_meta,
    top_k_episodes,
    write_dataset,
)
from tests.conftest import leftovers


def copy_of(tr):
    return {k: v.copy() for k, v in tr.items()}


def test_round_trip(tmp_path, pendulum_data):
    tr, meta = pendulum_data
    meta = dataclasses.replace(meta, seed=3, generator={"policy": "random"},
                               ref_min_score=-1230.0, ref_max_score=-150.0)
    out = write_dataset(tmp_path / "ds", tr, meta, rows_per_file=200)
    assert [p.rsplit("/", 1)[1] for p in dataset_files(out)] == [
        "part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    back, back_meta = read_dataset(out)
    for name in COLUMNS:
        assert back[name].dtype == tr[name].dtype, name
        np.testing.assert_array_equal(back[name], tr[name])
    assert back_meta == dataclasses.replace(meta, num_transitions=450, num_episodes=3)
    assert read_meta(out) == back_meta
    assert leftovers(tmp_path) == []


def test_parquet_columns_are_fixed_size_lists(pendulum_dir):
    table = pq.read_table(dataset_files(pendulum_dir)[0])
    assert table.schema.field("obs").type == pa.list_(pa.float32(), 3)
    assert table.schema.field("actions").type == pa.list_(pa.float32(), 1)
    assert table.schema.field("eps_id").type == pa.int64()


def test_write_casts_float64_and_fills_counts(tmp_path, pendulum_data):
    tr, meta = pendulum_data
    wide = copy_of(tr)
    wide["rewards"] = wide["rewards"].astype(np.float64)
    wide["obs"] = wide["obs"].astype(np.float64)
    read_back, got = read_dataset(write_dataset(tmp_path / "ds", wide, meta))
    assert read_back["rewards"].dtype == np.float32 and read_back["obs"].dtype == np.float32
    assert (got.num_transitions, got.num_episodes) == (450, 3)


def test_existing_dir_refused_without_overwrite(pendulum_dir, pendulum_data):
    with pytest.raises(DatasetError, match="already exists"):
        write_dataset(pendulum_dir, *pendulum_data)


def test_overwrite_replaces_complete_dataset(pendulum_dir, pendulum_data):
    tr, meta = pendulum_data
    small = {k: v[:200] for k, v in tr.items()}
    write_dataset(pendulum_dir, small, meta, overwrite=True)
    assert read_meta(pendulum_dir).num_transitions == 200
    assert len(dataset_files(pendulum_dir)) == 1
    assert leftovers(pendulum_dir.parent) == []


def test_overwrite_refuses_a_non_dataset_directory(tmp_path, pendulum_data):
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(DatasetError, match="not a dataset directory"):
        write_dataset(precious, *pendulum_data, overwrite=True)
    assert (precious / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("overwrite", [False, True])
def test_failed_write_leaves_nothing(tmp_path, pendulum_data, monkeypatch, overwrite):
    """A crash after the first part file leaves no temp dir and no new or changed out_dir."""
    tr, meta = pendulum_data
    out = tmp_path / "ds"
    if overwrite:
        write_dataset(out, {k: v[:10] for k, v in tr.items()}, meta)
    real_write = pq.write_table
    calls = []

    def write_then_fail(table, where, **kwargs):
        calls.append(where)
        if len(calls) > 1:
            raise OSError("disk full")
        real_write(table, where, **kwargs)

    monkeypatch.setattr(schema.pq, "write_table", write_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_dataset(out, tr, meta, rows_per_file=200, overwrite=overwrite)
    assert len(calls) == 2
    assert leftovers(tmp_path) == []
    if overwrite:
        assert read_meta(out).num_transitions == 10
    else:
        assert not out.exists()


def test_failed_final_rename_restores_the_old_dataset(tmp_path, pendulum_data, monkeypatch):
    tr, meta = pendulum_data
    out = write_dataset(tmp_path / "ds", {k: v[:10] for k, v in tr.items()}, meta)
    real_rename = schema.os.rename

    def rename(src, dst):
        if ".tmp-" in str(src) and not str(src).endswith(".old") and dst == out:
            raise OSError("rename failed")
        real_rename(src, dst)

    monkeypatch.setattr(schema.os, "rename", rename)
    with pytest.raises(OSError, match="rename failed"):
        write_dataset(out, tr, meta, overwrite=True)
    assert read_meta(out).num_transitions == 10
    assert leftovers(tmp_path) == []


def test_meta_json_round_trip(pendulum_data):
    meta = pendulum_data[1]
    assert DatasetMeta.from_json(meta.to_json()) == meta


@pytest.mark.parametrize("text, problem", [
    ("{not json", "not valid JSON"),
    ('{"env_id": "x"}', "missing field(s)"),
])
def test_bad_meta_json(text, problem):
    with pytest.raises(DatasetError, match="^" + re.escape(f"dataset.json: {problem}")):
        DatasetMeta.from_json(text)


# --- check_transitions: each bad input names the source and the problem -------------

def _bad(tr, name):
    bad = copy_of(tr)
    if name == "missing":
        del bad["new_obs"]
    elif name == "lengths":
        bad["rewards"] = bad["rewards"][:-1]
    elif name == "empty":
        bad = {k: v[:0] for k, v in bad.items()}
    elif name == "nan":
        bad["obs"][5, 1] = np.nan
    elif name == "inf":
        bad["rewards"][7] = np.inf
    elif name == "ndim":
        bad["obs"] = bad["obs"][:, 0]
    elif name == "dtype":
        bad["terminateds"] = bad["terminateds"].astype(np.int64)
    elif name == "new_obs_shape":
        bad["new_obs"] = bad["new_obs"][:, :2]
    return bad


@pytest.mark.parametrize("case, problem", [
    ("missing", "missing column(s) new_obs"),
    ("lengths", "columns have different lengths"),
    ("empty", "dataset is empty"),
    ("nan", "column obs has NaN values (1 entries, first at row 5)"),
    ("inf", "column rewards has inf values (1 entries, first at row 7)"),
    ("ndim", "column obs has shape (450,), expected 2-D"),
    ("dtype", "column terminateds has dtype int64, expected bool"),
    ("new_obs_shape", "new_obs shape (450, 2) differs from obs shape (450, 3)"),
])
def test_check_transitions_rejects(pendulum_data, case, problem):
    with pytest.raises(DatasetError) as err:
        check_transitions(_bad(pendulum_data[0], case), source="my.parquet")
    assert str(err.value).startswith(f"my.parquet: {problem}")


@pytest.mark.parametrize("change, problem", [
    ({"obs_shape": (4,)}, "observations have 3 dims per row, expected 4"),
    ({"action_shape": (2,), "action_low": [-2, -2], "action_high": [2, 2]},
     "actions have 1 dims per row, expected 2"),
    ({"action_low": [-0.5], "action_high": [0.5]}, "actions outside the action space"),
])
def test_check_transitions_against_meta(pendulum_data, change, problem):
    tr, meta = pendulum_data
    with pytest.raises(DatasetError, match="^" + re.escape(f"src: {problem}")):
        check_transitions(tr, dataclasses.replace(meta, **change), source="src")


def test_action_bound_tolerance(pendulum_data):
    tr, meta = pendulum_data
    edge = copy_of(tr)
    edge["actions"][0] = 2.0 + 5e-6
    check_transitions(edge, meta)
    edge["actions"][0] = 2.0 + 1e-4
    with pytest.raises(DatasetError, match="row 0, dim 0"):
        check_transitions(edge, meta)


def test_invalid_data_writes_nothing(tmp_path, pendulum_data):
    with pytest.raises(DatasetError, match="NaN"):
        write_dataset(tmp_path / "ds", _bad(pendulum_data[0], "nan"), pendulum_data[1])
    assert list(tmp_path.iterdir()) == []


# --- reading damaged directories ---------------------------------------------------

def test_read_dir_without_meta(pendulum_dir):
    (pendulum_dir / "dataset.json").unlink()
    with pytest.raises(DatasetError, match=f"^{pendulum_dir}: no dataset.json"):
        read_dataset(pendulum_dir)


def test_read_non_parquet_part(pendulum_dir):
    part = pendulum_dir / "part-00001.parquet"
    part.write_text("obs,actions\n1,2\n")
    with pytest.raises(DatasetError, match=f"^{part}: not a readable Parquet file"):
        read_dataset(pendulum_dir)


def test_read_part_missing_column(pendulum_dir):
    part = pendulum_dir / "part-00000.parquet"
    pq.write_table(pq.read_table(part).drop_columns(["truncateds"]), part)
    with pytest.raises(DatasetError, match=f"^{part}: missing column\\(s\\) truncateds"):
        read_dataset(pendulum_dir)


def test_read_missing_part_file(pendulum_dir):
    (pendulum_dir / "part-00002.parquet").unlink()
    with pytest.raises(DatasetError, match="records 450 transitions but the part files hold 400"):
        read_dataset(pendulum_dir)


def test_read_variable_length_lists(tmp_path, pendulum_dir):
    """Plain list<float> columns (e.g. written by other tools) read as long as rows agree."""
    part = pendulum_dir / "part-00000.parquet"
    table = pq.read_table(part)
    obs = pa.array(table["obs"].to_pylist(), type=pa.list_(pa.float64()))
    pq.write_table(table.set_column(0, "obs", obs), part)
    tr, _ = read_dataset(pendulum_dir)
    assert tr["obs"].shape == (450, 3) and tr["obs"].dtype == np.float32


def test_read_ragged_lists(pendulum_dir):
    part = pendulum_dir / "part-00000.parquet"
    table = pq.read_table(part)
    rows = table["obs"].to_pylist()
    rows[3] = rows[3][:2]
    pq.write_table(table.set_column(0, "obs", pa.array(rows)), part)
    with pytest.raises(DatasetError, match=f"^{part}: column obs has rows of different lengths"):
        read_dataset(pendulum_dir)


# --- episode helpers ----------------------------------------------------------------

def _toy():
    """Episodes 7 (return 3), 2 (return -1), 5 (return 10), in that row order."""
    eps = np.array([7, 7, 2, 5, 5, 5])
    return {
        "obs": np.zeros((6, 1), np.float32), "actions": np.zeros((6, 1), np.float32),
        "rewards": np.array([1, 2, -1, 3, 3, 4], np.float32),
        "new_obs": np.zeros((6, 1), np.float32),
        "terminateds": np.zeros(6, bool), "truncateds": np.zeros(6, bool),
        "eps_id": eps, "t": np.array([0, 1, 0, 0, 1, 2]),
    }


def test_episode_returns_in_first_appearance_order():
    np.testing.assert_allclose(episode_returns(_toy()), [3.0, -1.0, 10.0])


def test_top_k_episodes():
    top = top_k_episodes(_toy(), 2)
    np.testing.assert_array_equal(top["eps_id"], [7, 7, 5, 5, 5])
    np.testing.assert_array_equal(top["t"], [0, 1, 0, 1, 2])
    assert set(top) == set(COLUMNS)
    assert len(top_k_episodes(_toy(), 10)["eps_id"]) == 6
