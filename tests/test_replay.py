"""FlatReplayBuffer: shapes, ring wrap-around, the protected seed segment, state, action normalisation;
RowSampler: the same batches without the copy."""

import numpy as np
import pytest

from rllib_o2o.replay import (
    BATCH_KEYS,
    BalancedReplayBuffer,
    FlatReplayBuffer,
    RowSampler,
    SumTree,
    SymmetricReplayBuffer,
    normalize_actions,
)

OBS_DIM, ACT_DIM = 3, 2


def _rows(start: int, n: int) -> dict[str, np.ndarray]:
    """n transitions whose every column encodes the row id start..start+n-1 (recoverable after sampling)."""
    ids = np.arange(start, start + n, dtype=np.float32)
    return {
        "obs": np.repeat(ids[:, None], OBS_DIM, 1),
        "actions": np.repeat(ids[:, None], ACT_DIM, 1) / 1000.0,
        "rewards": ids.copy(),
        "new_obs": np.repeat(ids[:, None], OBS_DIM, 1) + 0.5,
        "terminateds": (ids % 2).astype(np.float32),
    }


def _add(buf: FlatReplayBuffer, rows: dict, protected: bool = False) -> None:
    add = buf.add_protected if protected else buf.add
    add(rows["obs"], rows["actions"], rows["rewards"], rows["new_obs"], rows["terminateds"])


def _stored_ids(buf: FlatReplayBuffer) -> set[int]:
    return set(buf.rewards[: buf.size].astype(int).tolist())


def test_add_and_sample_shapes_and_row_consistency():
    buf = FlatReplayBuffer(100, OBS_DIM, ACT_DIM, seed=0)
    assert len(buf) == 0
    with pytest.raises(RuntimeError):
        buf.sample(1, 4)
    _add(buf, _rows(0, 10))
    _add(buf, _rows(10, 7))
    assert len(buf) == 17
    batch = buf.sample(5, 8)
    assert set(batch) == set(BATCH_KEYS)
    assert batch["obs"].shape == (5, 8, OBS_DIM)
    assert batch["new_obs"].shape == (5, 8, OBS_DIM)
    assert batch["actions"].shape == (5, 8, ACT_DIM)
    assert batch["rewards"].shape == (5, 8)
    assert batch["terminateds"].shape == (5, 8)
    assert all(v.dtype == np.float32 for v in batch.values())
    # Every sampled row is one whole transition (columns are indexed together) and exists.
    ids = batch["rewards"]
    assert set(ids.astype(int).ravel()) <= set(range(17))
    np.testing.assert_array_equal(batch["obs"], np.repeat(ids[..., None], OBS_DIM, -1))
    np.testing.assert_array_equal(batch["new_obs"], np.repeat(ids[..., None], OBS_DIM, -1) + 0.5)
    np.testing.assert_allclose(batch["actions"], np.repeat(ids[..., None], ACT_DIM, -1) / 1000.0)
    np.testing.assert_array_equal(batch["terminateds"], ids % 2)


def test_sampling_is_uniform_over_stored_rows():
    buf = FlatReplayBuffer(10, OBS_DIM, ACT_DIM, seed=1)
    _add(buf, _rows(0, 10))
    ids = buf.sample(100, 100)["rewards"].astype(int).ravel()
    counts = np.bincount(ids, minlength=10)
    assert counts.sum() == 10_000
    assert counts.min() > 800 and counts.max() < 1200  # 1000 expected each, sd ~30


def test_ring_wraps_and_overwrites_the_oldest_rows():
    buf = FlatReplayBuffer(10, OBS_DIM, ACT_DIM, seed=0)
    _add(buf, _rows(0, 8))
    _add(buf, _rows(8, 5))  # 13 rows into 10 slots: rows 0, 1, 2 are the oldest and go
    assert len(buf) == 10
    assert _stored_ids(buf) == set(range(3, 13))
    _add(buf, _rows(13, 4))  # the next oldest: 3, 4, 5, 6
    assert len(buf) == 10
    assert _stored_ids(buf) == set(range(7, 17))
    assert set(buf.sample(50, 50)["rewards"].astype(int).ravel()) == set(range(7, 17))
    with pytest.raises(ValueError):
        _add(buf, _rows(100, 11))  # more than the whole ring at once


def test_protected_rows_survive_wraparound_and_are_sampled():
    buf = FlatReplayBuffer(10, OBS_DIM, ACT_DIM, seed=0)
    _add(buf, _rows(1000, 4), protected=True)
    assert buf.num_protected == 4 and len(buf) == 4
    for start in range(0, 40, 3):  # wraps the 6 free slots many times over
        _add(buf, _rows(start, 3))
    assert len(buf) == 10
    assert buf.num_protected == 4
    np.testing.assert_array_equal(buf.rewards[:4], [1000, 1001, 1002, 1003])
    np.testing.assert_array_equal(buf.obs[:4], np.repeat(np.arange(1000, 1004, dtype=np.float32)[:, None], 3, 1))
    # Rows 0..41 went through the 6 free slots: only the 6 newest remain beside the protected ones.
    assert _stored_ids(buf) == {1000, 1001, 1002, 1003, 36, 37, 38, 39, 40, 41}
    sampled = set(buf.sample(40, 64)["rewards"].astype(int).ravel())
    assert {1000, 1001, 1002, 1003} <= sampled
    assert sampled == _stored_ids(buf)
    with pytest.raises(ValueError):
        _add(buf, _rows(0, 7))  # only 6 unprotected slots exist


def test_protected_rows_must_come_first():
    buf = FlatReplayBuffer(10, OBS_DIM, ACT_DIM, seed=0)
    _add(buf, _rows(0, 2))
    with pytest.raises(RuntimeError):
        _add(buf, _rows(100, 2), protected=True)
    # Several protected chunks in a row are fine while nothing else was added.
    buf = FlatReplayBuffer(10, OBS_DIM, ACT_DIM, seed=0)
    _add(buf, _rows(100, 2), protected=True)
    _add(buf, _rows(102, 3), protected=True)
    assert buf.num_protected == 5
    _add(buf, _rows(0, 1))
    with pytest.raises(RuntimeError):
        _add(buf, _rows(200, 1), protected=True)


def test_state_round_trip_reproduces_samples_and_adds():
    buf = FlatReplayBuffer(12, OBS_DIM, ACT_DIM, seed=3)
    _add(buf, _rows(500, 3), protected=True)
    _add(buf, _rows(0, 7))
    _add(buf, _rows(7, 5))  # wrapped
    buf.sample(2, 5)  # advance the generator so the state is not the seed's
    state = buf.get_state()

    other = FlatReplayBuffer(12, OBS_DIM, ACT_DIM, seed=99)
    other.set_state(state)
    assert (len(other), other.num_protected) == (len(buf), buf.num_protected)
    for key in BATCH_KEYS:
        np.testing.assert_array_equal(getattr(other, key)[: len(buf)], getattr(buf, key)[: len(buf)])
    for a, b in [(buf.sample(3, 16), other.sample(3, 16)), (buf.sample(1, 7), other.sample(1, 7))]:
        for key in BATCH_KEYS:
            np.testing.assert_array_equal(a[key], b[key])
    # The cursor came along too: the next add overwrites the same slots in both.
    _add(buf, _rows(50, 4))
    _add(other, _rows(50, 4))
    for key in BATCH_KEYS:
        np.testing.assert_array_equal(getattr(other, key), getattr(buf, key))
    # The saved state is a snapshot, not a view of the live arrays.
    assert 50 not in state["arrays"]["rewards"].astype(int)


def test_normalize_actions_by_hand():
    low = np.array([-2.0, 0.0, 1.0], np.float32)
    high = np.array([2.0, 10.0, 3.0], np.float32)
    actions = np.array([
        [-2.0, 0.0, 1.0],    # low
        [2.0, 10.0, 3.0],    # high
        [0.0, 5.0, 2.0],     # mid
        [1.0, 2.5, 1.5],     # three quarters / one quarter
        [5.0, -1.0, 3.5],    # out of bounds -> clipped
    ], np.float32)
    expected = np.array([
        [-1.0, -1.0, -1.0],
        [1.0, 1.0, 1.0],
        [0.0, 0.0, 0.0],
        [0.5, -0.5, -0.5],
        [1.0, -1.0, 1.0],
    ], np.float32)
    out = normalize_actions(actions, low, high)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-7)


def test_add_transitions_normalises_env_unit_actions():
    low = np.array([-2.0, 0.0], np.float32)
    high = np.array([2.0, 4.0], np.float32)
    tr = _rows(0, 3)
    tr["actions"] = np.array([[-2.0, 0.0], [2.0, 4.0], [0.0, 1.0]], np.float32)
    tr["terminateds"] = np.array([False, True, False])
    buf = FlatReplayBuffer(8, OBS_DIM, ACT_DIM, seed=0)
    buf.add_transitions(tr, low, high)
    assert len(buf) == 3 and buf.num_protected == 0
    np.testing.assert_allclose(buf.actions[:3], [[-1.0, -1.0], [1.0, 1.0], [0.0, -0.5]], atol=1e-7)
    np.testing.assert_array_equal(buf.terminateds[:3], [0.0, 1.0, 0.0])
    np.testing.assert_array_equal(buf.obs[:3], tr["obs"])
    np.testing.assert_array_equal(buf.new_obs[:3], tr["new_obs"])
    np.testing.assert_array_equal(buf.rewards[:3], tr["rewards"])
    # protected=True seeds the protected segment with the same normalisation.
    seeded = FlatReplayBuffer(8, OBS_DIM, ACT_DIM, seed=0)
    seeded.add_transitions(tr, low, high, protected=True)
    assert seeded.num_protected == 3
    np.testing.assert_array_equal(seeded.actions[:3], buf.actions[:3])


def test_row_sampler_draws_what_a_buffer_filled_with_its_rows_draws_without_copying_them():
    low = np.array([-2.0, 0.0], np.float32)
    high = np.array([2.0, 4.0], np.float32)
    tr = _rows(0, 50)
    tr["actions"] = np.random.default_rng(1).uniform(low, high, (50, ACT_DIM)).astype(np.float32)
    tr["terminateds"] = np.arange(50) % 3 == 0
    for column in tr.values():
        column.flags.writeable = False  # as the object store hands them out
    rows = np.random.default_rng(2).permutation(50)[:30]
    buffer = FlatReplayBuffer(30, OBS_DIM, ACT_DIM, seed=7)
    buffer.add_transitions({k: v[rows] for k, v in tr.items()}, low, high)
    sampler = RowSampler(tr, rows, low, high, seed=7)
    assert len(sampler) == 30
    for num_batches, batch_size in ((3, 8), (1, 64)):
        expected, got = buffer.sample(num_batches, batch_size), sampler.sample(num_batches, batch_size)
        assert set(got) == set(BATCH_KEYS)
        for key in BATCH_KEYS:
            assert got[key].dtype == np.float32
            np.testing.assert_array_equal(got[key], expected[key])
    # gather(positions) is the buffer's row at each position: position 4 holds dataset row rows[4]
    np.testing.assert_array_equal(sampler.gather(np.array([4]))["rewards"], [rows[4]])
    with pytest.raises(ValueError, match="at least one row"):
        RowSampler(tr, np.array([], np.int64), low, high)


def test_invalid_capacity():
    with pytest.raises(ValueError):
        FlatReplayBuffer(0, OBS_DIM, ACT_DIM)


# -- Balanced Replay ------------------------------------------------------------------------------

def test_sum_tree_find_matches_cumulative_sums():
    rng = np.random.default_rng(0)
    tree = SumTree(13)  # not a power of two: 16 leaves, 3 unused
    priorities = rng.uniform(0.1, 5.0, size=13)
    tree.update(np.arange(13), priorities)
    assert tree.total == pytest.approx(priorities.sum())
    mass = rng.uniform(0, priorities.sum(), size=1000)
    expected = np.searchsorted(np.cumsum(priorities), mass, side="right")
    np.testing.assert_array_equal(tree.find(mass), expected)
    tree.update(np.array([3, 3, 7]), np.array([0.0, 0.0, 2.5]))  # repeated index, zero priority
    priorities[3], priorities[7] = 0.0, 2.5
    assert tree.total == pytest.approx(priorities.sum())
    assert 3 not in set(tree.find(rng.uniform(0, tree.total, size=2000)).tolist())


def _balanced(offline: int = 300, online: int = 100, **kwargs) -> BalancedReplayBuffer:
    buf = BalancedReplayBuffer(1000, OBS_DIM, ACT_DIM, seed=0, **kwargs)
    _add(buf, _rows(0, offline), protected=True)
    if online:
        _add(buf, _rows(offline, online))
    return buf


def test_balanced_replay_initial_priorities_give_the_online_fraction():
    # M = 300 offline rows at priority 1; online rows enter at M f / ((1 - f) N) = 300 * 0.5 / (0.5 * 100) = 3
    buf = _balanced(offline=300, online=100, initial_online_fraction=0.5, online_rows_per_fraction=100)
    assert buf.max_priority == pytest.approx(3.0)
    np.testing.assert_allclose(buf.tree.values(np.arange(300)), 1.0)
    np.testing.assert_allclose(buf.tree.values(np.arange(300, 400)), 3.0)
    batch = buf.sample(40, 250)
    online_share = (batch["rewards"] >= 300).mean()
    assert online_share == pytest.approx(0.5, abs=0.02)  # 100 * 3 of 600 total mass
    # rows and indices agree, and the density batches come from the right halves
    np.testing.assert_array_equal(batch["rewards"].astype(int), batch["indices"])
    assert batch["offline_obs"].max() < 300 <= batch["online_obs"].min()
    assert batch["offline_obs"].shape == batch["online_obs"].shape == (40, 250, OBS_DIM)


def test_balanced_replay_samples_in_proportion_to_updated_priorities():
    buf = _balanced(offline=300, online=100)
    priorities = np.full(400, 1e-3)
    priorities[[5, 350]] = [2.0, 6.0]
    buf.update_priorities(np.arange(400), priorities)
    assert buf.max_priority == pytest.approx(6.0)
    batch = buf.sample(50, 200)
    ids = batch["rewards"].astype(int).ravel()
    total = priorities.sum()
    assert (ids == 350).mean() == pytest.approx(6.0 / total, abs=0.01)
    assert (ids == 5).mean() == pytest.approx(2.0 / total, abs=0.01)
    _add(buf, _rows(400, 1))  # a new online row enters at the largest priority seen
    assert buf.tree.values(np.array([400]))[0] == pytest.approx(6.0)


def test_balanced_replay_ring_overwrite_resets_priority_and_state_round_trips():
    buf = BalancedReplayBuffer(310, OBS_DIM, ACT_DIM, seed=0, online_rows_per_fraction=300)
    _add(buf, _rows(0, 300), protected=True)
    _add(buf, _rows(300, 10))
    buf.update_priorities(np.array([300]), np.array([0.01]))
    _add(buf, _rows(310, 1))  # overwrites row 300's slot with max priority
    assert buf.rewards[300] == 310 and buf.tree.values(np.array([300]))[0] == pytest.approx(buf.max_priority)
    clone = BalancedReplayBuffer(310, OBS_DIM, ACT_DIM, seed=1)
    clone.set_state(buf.get_state())
    np.testing.assert_array_equal(clone.tree.values(np.arange(310)), buf.tree.values(np.arange(310)))
    assert clone.max_priority == buf.max_priority and clone.tree.total == pytest.approx(buf.tree.total)
    np.testing.assert_array_equal(clone.sample(3, 16)["indices"], buf.sample(3, 16)["indices"])


def test_balanced_replay_needs_offline_and_online_rows():
    with pytest.raises(RuntimeError, match="offline and online"):
        _balanced(online=0).sample(1, 8)
    with pytest.raises(ValueError, match="initial_online_fraction"):
        BalancedReplayBuffer(10, OBS_DIM, ACT_DIM, initial_online_fraction=1.0)


def test_symmetric_replay_takes_half_of_each_batch_from_the_offline_rows_whatever_their_counts():
    # 1000 offline rows (ids 0..999) and 10 online rows (ids 1000..1009): uniform sampling over all would
    # give ~1% online rows; symmetric sampling gives 4 of each 8
    buf = SymmetricReplayBuffer(2000, OBS_DIM, ACT_DIM, seed=0, offline_fraction=0.5)
    _add(buf, _rows(0, 1000), protected=True)
    _add(buf, _rows(1000, 10))
    batch = buf.sample(50, 8)
    ids = batch["rewards"].astype(int)
    assert ids.shape == (50, 8)
    assert (ids[:, :4] < 1000).all() and (ids[:, 4:] >= 1000).all()
    assert set(ids[:, 4:].ravel().tolist()) == set(range(1000, 1010))  # every online row, uniformly
    np.testing.assert_array_equal(batch["obs"][..., 0], batch["rewards"])  # rows stay whole
    # the ring wraps over the online rows only; the offline ones stay
    _add(buf, _rows(2000, 600))
    _add(buf, _rows(2600, 600))
    ids = buf.sample(20, 8)["rewards"].astype(int)
    assert (ids[:, :4] < 1000).all() and (ids[:, 4:] >= 1010).all()
    assert not (set(range(1000, 1010)) <= _stored_ids(buf))  # the oldest online rows were overwritten


def test_symmetric_replay_needs_offline_and_online_rows_and_a_fraction_below_one():
    buf = SymmetricReplayBuffer(100, OBS_DIM, ACT_DIM)
    _add(buf, _rows(0, 10), protected=True)
    with pytest.raises(RuntimeError, match="offline and online"):
        buf.sample(1, 8)
    with pytest.raises(ValueError, match="offline_fraction"):
        SymmetricReplayBuffer(100, OBS_DIM, ACT_DIM, offline_fraction=1.0)
