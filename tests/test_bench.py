"""`rllib-o2o bench`: every profile runs end to end at a tiny scale, resumes, and feeds the report."""

from __future__ import annotations

import json

import pytest
import ray

from rllib_o2o.bench import run_benchmark
from rllib_o2o.bench_profiles import ALL_METHODS, PROFILES, split_dataset_name
from rllib_o2o.cli import main
from rllib_o2o.report import load_runs

TINY_PIPELINE = dict(offline_steps=100, offline_eval_every=100, align_steps=50, online_steps=200, eval_every=100,
                     eval_episodes=1, batch_size=32, hidden=[32, 32], replay_capacity=5_000, max_episode_steps=100,
                     online_warmup_steps=50)
TINY_COLLECT = dict(num_transitions=300, train_env_steps=200, env_steps_per_iteration=100, random_warmup_steps=100,
                    eval_episodes=1, max_episode_steps=100)


def test_profiles_name_known_datasets_and_methods():
    for name, profile in PROFILES.items():
        assert profile.seeds and profile.methods and profile.datasets, name
        for dataset in profile.datasets:
            split_dataset_name(dataset)
    assert set(PROFILES["small"].methods) == set(ALL_METHODS) and len(PROFILES["small"].seeds) >= 3
    assert PROFILES["paper"].pipeline["offline_steps"] == 500_000
    assert PROFILES["paper"].pipeline["online_steps"] == 100_000 and len(PROFILES["paper"].datasets) == 9
    with pytest.raises(ValueError, match="<task>-<kind>"):
        split_dataset_name("cartpole-medium")


def test_bench_rejects_bad_arguments_before_any_work(tmp_path, capsys):
    assert main(["bench", "--out", str(tmp_path / "b"), "--datasets", "cartpole-medium"]) == 2
    assert "cartpole-medium" in capsys.readouterr().err
    assert main(["bench", "--out", str(tmp_path / "b"), "--dataset-path", "no-equals-sign"]) == 2
    assert "NAME=PATH" in capsys.readouterr().err
    ray.shutdown()


@pytest.fixture
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def test_ray_grants_waiting_placement_groups_in_the_order_they_were_made(local_ray):
    """The premise of run_tasks' longest-chain-first submission: with no room, groups wait and are then
    granted first made, first served (a Ray upgrade that broke this would quietly undo the order)."""
    import time

    from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group

    groups = [placement_group([{"CPU": 2}]) for _ in range(5)]  # room for one at a time
    ray.get(groups[0].ready())
    granted, pending = [0], [1, 2, 3, 4]
    while pending:
        remove_placement_group(groups[granted[-1]])
        deadline = time.monotonic() + 60
        created = []
        while not created and time.monotonic() < deadline:
            created = [i for i in pending if placement_group_table(groups[i])["state"] == "CREATED"]
            time.sleep(0.05)
        assert len(created) == 1, created
        granted.append(created[0])
        pending.remove(created[0])
    remove_placement_group(groups[granted[-1]])
    assert granted == [0, 1, 2, 3, 4]


@pytest.mark.slow
def test_paper_profile_runs_every_method_at_tiny_scale_and_resumes(tmp_path, local_ray):
    kwargs = dict(datasets=["hopper-medium"], seeds=[0], overrides=TINY_PIPELINE, collect_overrides=TINY_COLLECT)
    files = run_benchmark("paper", tmp_path / "bench", tmp_path / "data", **kwargs)
    assert len(files) == len(ALL_METHODS) and all(f.exists() for f in files)
    runs = load_runs(tmp_path / "bench")
    assert sorted(r["method"] for r in runs) == sorted(ALL_METHODS)
    assert all([p["env_steps"] for p in r["curve"]] == [0, 100, 200] for r in runs)
    saved = json.loads((tmp_path / "bench" / "bench.json").read_text())
    assert saved["profile"] == "paper" and saved["pipeline"]["online_steps"] == 200
    tasks = json.loads((tmp_path / "bench" / "bench-tasks.json").read_text())["tasks"]
    assert {t["status"] for t in tasks} == {"done"} and all(t["attempts"] == 1 for t in tasks)
    # longest chain first (stage_work at these budgets): rlpd 200 x 20 x 10 = 40,000; WSRL's CQL ensemble
    # 100 x 10 x 31 + its online 200 x 4 x 10 = 39,000; CQL 100 x 2 x 31 + 500 = 6,700; the plan lists SAC+ML first
    first = sorted(tasks, key=lambda t: t["submitted"])
    assert [t["stage"] for t in first[:3]] == ["online-rlpd", "offline-cql-ensemble", "offline-cql"]
    assert sorted(t["submitted"] for t in tasks) == list(range(len(tasks)))
    # each shared stage ran once: SAC+ML, CQL, WSRL's CQL ensemble, the alignments; then one online stage per method
    assert sum(t["role"] == "online" for t in tasks) == len(ALL_METHODS)
    assert sorted(t["stage"] for t in tasks if t["role"] == "offline") == ["offline", "offline-cql",
                                                                           "offline-cql-ensemble"]
    written = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (tmp_path / "bench").rglob("*.json")}
    data = {p: p.stat().st_mtime_ns for p in (tmp_path / "data").rglob("*") if p.is_file()}

    run_benchmark("paper", tmp_path / "bench", tmp_path / "data", **kwargs)  # all done: nothing is redone
    unchanged = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in written}
    changed = sorted(str(p.relative_to(tmp_path)) for p in written
                     if unchanged[p] != written[p] and p.name not in ("bench.json", "bench-tasks.json"))
    assert not changed, changed  # bench.json (the settings) and bench-tasks.json (this invocation's tasks) rewritten
    assert json.loads((tmp_path / "bench" / "bench-tasks.json").read_text())["tasks"] == []
    assert {p: p.stat().st_mtime_ns for p in data} == data  # the dataset was reused, not generated again


@pytest.mark.slow
def test_bench_command_runs_the_smoke_profile_and_writes_the_report(tmp_path, local_ray, capsys):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({**TINY_PIPELINE, "collect": TINY_COLLECT}))
    assert main(["bench", "--profile", "smoke", "--out", str(tmp_path / "b"), "--data-dir", str(tmp_path / "d"),
                 "--methods", "aca", "sac-scratch", "--config", str(config)]) == 0
    report = (tmp_path / "b" / "report" / "report.md").read_text()
    assert "| pendulum-medium | aca | 1 |" in report and "| pendulum-medium | sac-scratch | 1 |" in report
    assert (tmp_path / "b" / "report" / "pendulum-medium.png").exists()


@pytest.mark.slow
def test_ctrl_c_stops_the_running_tasks_records_them_and_exits_130(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    config = tmp_path / "long.json"  # an online stage that outlasts the test
    config.write_text(json.dumps({**TINY_PIPELINE, "online_steps": 1_000_000, "eval_every": 1_000,
                                  "collect": TINY_COLLECT}))
    out = tmp_path / "b"
    record = out / "pendulum-medium" / "seed0" / "bench-task-online-sac-scratch.json"
    proc = subprocess.Popen([sys.executable, "-m", "rllib_o2o.cli", "bench", "--profile", "smoke", "--out", str(out),
                             "--data-dir", str(tmp_path / "d"), "--methods", "sac-scratch", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # as from a terminal: a suite started in the background (`pytest &`) ignores
                            # SIGINT, and a child would inherit that and never see the Ctrl-C
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 240
        while not record.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert record.exists(), proc.communicate(timeout=60)
        time.sleep(3)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    [row] = json.loads((out / "bench-tasks.json").read_text())["tasks"]
    assert (row["stage"], row["status"], row["attempts"], row["submitted"]) == ("online-sac-scratch", "interrupted", 1, 0)
    pid = json.loads(record.read_text())["attempts"][0]["pid"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the task's worker was stopped with the benchmark
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"the stage task's worker {pid} outlived the interrupted benchmark")


def test_plan_runs_each_shared_stage_once_before_the_stages_that_start_from_it(tmp_path):
    from rllib_o2o.bench_tasks import plan_tasks

    tasks = plan_tasks(tmp_path, ["pendulum-medium"], [0, 1], ["aca", "naive", "cql-sac", "wsrl", "rlpd"])
    seed0 = {t.stage: t for t in tasks if t.seed == 0}
    run = tmp_path / "pendulum-medium" / "seed0"
    assert sorted(seed0) == ["alignment", "offline", "offline-cql", "offline-cql-ensemble", "online", "online-cql-sac",
                             "online-naive", "online-rlpd", "online-wsrl"]  # offline and offline-cql: once each
    assert len(tasks) == 2 * len(seed0)
    assert seed0["online"].needs == ((run, "offline"), (run, "alignment"))
    assert seed0["alignment"].needs == ((run, "offline"),)
    assert seed0["online-naive"].needs == ((run, "offline"),) and seed0["online-rlpd"].needs == ()
    assert seed0["online-wsrl"].needs == ((run, "offline-cql-ensemble"),)
    order = [t.key for t in tasks]  # every task after those it needs: the order they are submitted in
    assert all(order.index(need) < order.index(t.key) for t in tasks for need in t.needs)
    # a re-run plans only what is not done: done stages, and online stages with results, drop out
    (run / "offline").mkdir(parents=True)
    (run / "offline" / "DONE.json").write_text("{}")
    (run / "results-naive.json").write_text("{}")
    again = {t.stage: t for t in plan_tasks(tmp_path, ["pendulum-medium"], [0], ["aca", "naive"])}
    assert sorted(again) == ["alignment", "online"] and again["online"].needs == ((run, "alignment"),)


def test_a_variant_is_planned_beside_the_catalogue_methods_sharing_the_stages_it_can(tmp_path):
    from rllib_o2o.bench_tasks import plan_tasks, stage_work

    variants = {"aca-ten": {"base": "aca", "num_critics": 10, "critic_target_members": 2},  # its own alignment
                "aca-no-bonus": {"base": "aca", "keep_offline_entropy_bonus": False}}  # aca's alignment
    tasks = {t.stage: t for t in plan_tasks(tmp_path, ["pendulum-medium"], [0], ["aca", *variants], variants)}
    run = tmp_path / "pendulum-medium" / "seed0"
    assert sorted(tasks) == ["alignment", "alignment-10-members", "offline", "online", "online-aca-no-bonus",
                             "online-aca-ten"]
    assert tasks["online-aca-no-bonus"].needs == ((run, "offline"), (run, "alignment"))
    assert stage_work(tasks["alignment-10-members"], {"align_steps": 10, "variants": variants}) == 10 * 10
    with pytest.raises(ValueError, match="unknown method 'aca-ten'"):
        plan_tasks(tmp_path, ["pendulum-medium"], [0], ["aca-ten"])  # a variant needs its definition


def test_ready_tasks_go_longest_chain_first_by_their_work(tmp_path):
    from rllib_o2o.bench_tasks import plan_tasks, priorities, stage_work

    tasks = plan_tasks(tmp_path, ["pendulum-medium"], [0], ["aca", "naive", "wsrl", "rlpd"])
    values = {"offline_steps": 100, "align_steps": 10, "online_steps": 50, "utd": None}
    work = {t.stage: stage_work(t, values) for t in tasks}
    # offline: steps x critics x (1 + CQL's 3 x 10 sampled actions per state); alignment: steps x critics;
    # online: env steps x updates per env step x critics
    assert work == {"offline": 100 * 2, "offline-cql-ensemble": 100 * 10 * 31, "alignment": 10 * 2,
                    "online": 50 * 1 * 2, "online-naive": 50 * 1 * 2, "online-wsrl": 50 * 4 * 10,
                    "online-rlpd": 50 * 20 * 10}
    assert stage_work(next(t for t in tasks if t.stage == "online-rlpd"), {**values, "utd": 2}) == 50 * 2 * 10
    level = {key[1]: v for key, v in priorities(tasks, {t.key: work[t.stage] for t in tasks}).items()}
    # bottom levels: offline 200 + max(alignment 20 + online 100, naive 100); the ensemble 31000 + wsrl 2000
    assert level == {"offline": 320, "alignment": 120, "online": 100, "online-naive": 100,
                     "offline-cql-ensemble": 33_000, "online-wsrl": 2000, "online-rlpd": 10_000}


def test_each_stage_task_holds_its_bundle_and_its_stage_asks_for_no_more(tmp_path):
    """The alignment task's child fits Z with the bundle's GPU (its parent holds none), the learners share it,
    EnvRunners add their CPUs; an override asking for more than the bundle is refused before any work."""
    from rllib_o2o.bench_tasks import plan_tasks, stage_resources, task_resources

    tasks = {t.role: t for t in plan_tasks(tmp_path, ["pendulum-medium"], [0], ["aca"])}
    assert task_resources(tasks["offline"], 2, 0.5, 3) == ({"CPU": 2, "GPU": 0.5}, 0.5)
    assert task_resources(tasks["alignment"], 2, 0.5, 3) == ({"CPU": 2, "GPU": 0.5}, 0)
    assert task_resources(tasks["online"], 2, 0.5, 3) == ({"CPU": 5, "GPU": 0.5}, 0.5)
    assert task_resources(tasks["online"], 1, 0, 0) == ({"CPU": 1}, 0)
    values = {"torch_threads": "auto", "offline_steps": 7}
    assert stage_resources(values, {}, 2, 0.5) == {"torch_threads": 2, "offline_steps": 7, "align_num_cpus": 2,
                                                   "align_num_gpus": 0.5, "num_gpus_per_learner": 0.5}
    assert stage_resources({"torch_threads": 4}, {"align_num_cpus": 0.5}, 1.5, 0) == {
        "torch_threads": 4, "align_num_cpus": 0.5, "align_num_gpus": 0, "num_gpus_per_learner": 0}
    with pytest.raises(ValueError, match="align_num_gpus=1 asks for more.*--unit-gpus 0"):
        stage_resources(values, {"align_num_gpus": 1}, 1, 0)
    with pytest.raises(ValueError, match="--unit-cpus"):
        run_benchmark("smoke", tmp_path / "out", tmp_path / "data", overrides={"align_num_cpus": 2}, unit_cpus=1)
    assert not (tmp_path / "data").exists()


def test_given_datasets_resolve_as_the_run_command_does(tmp_path, pendulum_dir):
    from rllib_o2o.bench import resolve_datasets

    profile = PROFILES["smoke"]
    given = resolve_datasets(profile, ["pendulum-medium"], tmp_path / "d", {"pendulum-medium": str(pendulum_dir)})
    assert given == {"pendulum-medium": pendulum_dir}  # a dataset directory is used in place
    uri = pendulum_dir.resolve().as_uri()
    fetched = resolve_datasets(profile, ["pendulum-medium"], tmp_path / "d", {"pendulum-medium": uri})
    assert (fetched["pendulum-medium"] / "dataset.json").exists()
    assert fetched["pendulum-medium"].is_relative_to(tmp_path / "d" / "given" / "pendulum-medium")


def test_a_profile_with_committed_data_uses_the_committed_rows_and_never_generates(tmp_path, pendulum_dir):
    import shutil
    from dataclasses import replace

    from rllib_o2o.bench import resolve_datasets

    profile = replace(PROFILES["smoke"], committed_data=True)
    committed = tmp_path / "committed"
    shutil.copytree(pendulum_dir, committed / "pendulum-medium")
    resolved = resolve_datasets(profile, ["pendulum-medium"], tmp_path / "d", {}, committed_dir=committed)
    assert resolved == {"pendulum-medium": committed / "pendulum-medium"}
    with pytest.raises(ValueError, match="committed dataset .* is missing"):
        resolve_datasets(profile, ["pendulum-medium"], tmp_path / "d", {}, committed_dir=tmp_path / "none")
    assert not (tmp_path / "d").exists()  # nothing generated


def test_the_medium_profile_runs_on_the_committed_datasets():
    from rllib_o2o.bench_profiles import COMMITTED_DATASETS_DIR
    from rllib_o2o.data.schema import read_meta

    profile = PROFILES["medium"]
    assert profile.committed_data
    for name in profile.datasets:
        meta = read_meta(COMMITTED_DATASETS_DIR / name)
        assert meta.num_transitions == profile.collect["num_transitions"]
        assert meta.env_id == split_dataset_name(name)[0]
