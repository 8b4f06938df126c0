"""The data and measurement helpers of benchmarks/startup.py, big_dataset.py and unit_times.py, without Ray.

The benchmarks' numbers live in docs/benchmarks.md; these tests only check that what they
measure on is what they say (a valid dataset of the stated size, memory of a process tree).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import big_dataset  # noqa: E402
import startup  # noqa: E402
import unit_times  # noqa: E402


def test_the_synthetic_big_dataset_is_a_valid_hopper_shaped_dataset_of_the_stated_size(tmp_path):
    from rllib_o2o.data.schema import read_dataset

    path, nbytes = big_dataset.write_synthetic(tmp_path / "big", 2_500)
    tr, meta = read_dataset(path)
    assert len(tr["obs"]) == 2_500 and meta.obs_dim == 11 and meta.act_dim == 3
    assert nbytes == sum(a.nbytes for a in tr.values())
    assert meta.num_episodes == 3 and tr["truncateds"].sum() == 3  # 1000 + 1000 + 500 steps
    np.testing.assert_array_equal(tr["new_obs"][:-1], tr["obs"][1:])


def test_the_memory_of_a_process_tree_counts_this_process():
    import os

    assert 0 < big_dataset.tree_pss_bytes(os.getpid()) < 2**40
    with big_dataset.PeakMemory(os.getpid(), interval=0.01) as mem:
        ballast = np.ones(64 * 2**20, np.uint8)  # 64 MiB, touched
    assert mem.peak >= ballast.nbytes


def test_the_startup_d4rl_file_imports_as_a_dataset(tmp_path):
    from rllib_o2o.data.d4rl import import_d4rl
    from rllib_o2o.data.schema import read_dataset

    path = startup.write_d4rl_file(tmp_path / "hopper.hdf5", 1_200, seed=0)
    tr, meta = read_dataset(import_d4rl(path, startup.ENV_ID, tmp_path / "ds"))
    assert len(tr["obs"]) == 1_200 and meta.obs_dim == 11
    assert tr["terminateds"].sum() + tr["truncateds"].sum() == meta.num_episodes


def test_sampling_contenders_parse_runners_by_envs():
    """benchmarks/sampling.py: 'RxE' is R EnvRunners with E envs each; 'default' leaves the run's defaults."""
    from benchmarks.sampling import parse_contender

    assert parse_contender("1x10") == {"num_env_runners": 1, "num_envs_per_env_runner": 10}
    assert parse_contender("0x1") == {"num_env_runners": 0, "num_envs_per_env_runner": 1}
    assert parse_contender("default") == {}
    for bad in ("1x0", "x8", "two", "1x"):
        with pytest.raises(ValueError, match="RUNNERSxENVS"):
            parse_contender(bad)


def test_the_critical_path_is_the_longest_chain_of_stages_through_their_needs():
    from rllib_o2o.bench_tasks import plan_tasks

    # naive: offline -> online-naive; aca: offline -> alignment -> online; cql-sac: offline-cql -> online-cql-sac
    tasks = plan_tasks(Path("/nonexistent"), ["hopper-medium"], [0], ["naive", "aca", "cql-sac"])
    hours = {"offline": 2.0, "online-naive": 1.0, "alignment": 0.5, "online": 4.0, "offline-cql": 5.0,
             "online-cql-sac": 1.0}
    assert {t.stage for t in tasks} == set(hours)
    # offline -> alignment -> online: 2 + 0.5 + 4 = 6.5 beats offline-cql -> online-cql-sac: 5 + 1 = 6
    assert unit_times.critical_path_hours(tasks, hours) == (6.5, ["offline", "alignment", "online"])
    hours["offline-cql"] = 6.0  # now 6 + 1 = 7
    assert unit_times.critical_path_hours(tasks, hours) == (7.0, ["offline-cql", "online-cql-sac"])
    assert unit_times.critical_path_hours([], {}) == (0.0, [])


def test_the_replayed_scheduler_starts_the_longest_chain_first_and_ends_sooner():
    from rllib_o2o.bench_tasks import plan_tasks, priorities

    # plan order: offline, online-naive, online-sac-scratch, offline-cql, online-cql-sac
    tasks = plan_tasks(Path("/nonexistent"), ["hopper-medium"], [0], ["naive", "sac-scratch", "cql-sac"])
    hours = {"offline": 1.0, "online-naive": 1.0, "online-sac-scratch": 2.0, "offline-cql": 4.0, "online-cql-sac": 4.0}
    # 2 slots, plan order: offline 0-1 and scratch 0-2; then offline-cql 1-5 (submitted before naive), naive 2-3,
    # cql-sac 5-9
    assert unit_times.simulated_wall_hours(tasks, hours, 2, tasks) == 9.0
    # longest chain first: offline-cql 0-4 and offline 0-1, scratch 1-3, naive 3-4, cql-sac 4-8
    level = priorities(tasks, {t.key: hours[t.stage] for t in tasks})
    by_level = sorted(tasks, key=lambda t: -level[t.key])
    assert unit_times.simulated_wall_hours(tasks, hours, 2, by_level) == 8.0
    assert unit_times.simulated_wall_hours(tasks, hours, 1, by_level) == sum(hours.values())
