"""SharedDataset: the dataset read once into Ray's object store, handed out without copies."""

import numpy as np
import pytest
import ray

from rllib_o2o.data.schema import COLUMNS, read_dataset
from rllib_o2o.data.shared import SharedDataset, resolve_columns


def test_read_once_shared_by_reference_and_released(ray_session, pendulum_dir):
    expected, meta = read_dataset(pendulum_dir)
    shared = SharedDataset(pendulum_dir)
    refs, got_meta = shared.refs()
    assert got_meta == meta and set(refs) == set(COLUMNS)
    assert all(isinstance(ref, ray.ObjectRef) for ref in refs.values())
    assert shared.refs()[0] is refs  # the second reader gets the same copy: nothing is read again
    arrays = shared.arrays()
    for name in COLUMNS:
        np.testing.assert_array_equal(arrays[name], expected[name])
        assert arrays[name].dtype == expected[name].dtype
        assert not arrays[name].flags.writeable  # a view of the object store's copy, not a copy
    # a task on any node resolves the refs to the same arrays
    remote = ray.get(ray.remote(lambda columns: resolve_columns(columns)["rewards"].sum()).remote(refs))
    assert remote == pytest.approx(float(expected["rewards"].sum()))
    shared.release()
    assert shared.refs()[0] is not refs  # released: the next reader reads it again


def test_resolve_columns_passes_arrays_through():
    column = np.arange(3.0)
    assert resolve_columns({"rewards": column})["rewards"] is column
