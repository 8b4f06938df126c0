"""Cluster: configs parse; a real 2-node Ray cluster on this machine runs the pipeline as a Ray job.

The slow tests start a head node and one worker node with cluster/local_cluster.sh
(distinct custom resources: head_node / worker_node, token auth on), submit
cluster/placement_job.py through the Jobs API with the online EnvRunners pinned to
the worker node, SIGKILL one EnvRunner process during online training, and check
that the job succeeds with its results, that every EnvRunner ran on the worker node
(from the node ids the runners report) and that the killed runner was replaced.
The cluster, and every process it started (job driver included), is stopped by PID.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "cluster" / "local_cluster.sh"
TINY = {"batch_size": 64, "offline_eval_every": 100, "hidden": [32, 32], "replay_capacity": 10_000}
ONLINE_STEPS, EVAL_EVERY = 1000, 200


# ---------------------------------------------------------------- configs


def test_cluster_launcher_yaml_parses_and_keeps_token_auth():
    config = yaml.safe_load((REPO / "cluster" / "aws.yaml").read_text())
    for key in ("cluster_name", "provider", "auth", "available_node_types", "head_node_type", "file_mounts",
                "setup_commands", "head_start_ray_commands", "worker_start_ray_commands"):
        assert key in config, key
    assert config["provider"]["type"] == "aws" and config["provider"]["region"]
    assert config["head_node_type"] in config["available_node_types"]
    for node_type in config["available_node_types"].values():
        assert "node_config" in node_type and "resources" in node_type
    assert config["available_node_types"]["head"]["resources"]["CPU"] == 0  # the head keeps its cores for drivers
    assert "2.60" in config["docker"]["image"]
    # the token reaches every node, and every `ray start` enforces it
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    for command in (c for c in config["head_start_ray_commands"] + config["worker_start_ray_commands"]
                    if "ray start" in c):
        assert "RAY_AUTH_MODE=token" in command, command
    assert "RAY_AUTH_MODE=disabled" not in json.dumps(config)
    assert any("pip install" in c and "[cluster]" in c for c in config["setup_commands"])

    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(config))  # Ray's own cluster-launcher schema


def test_rayjob_manifest_parses_and_runs_the_pipeline():
    job = yaml.safe_load((REPO / "cluster" / "rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob" and job["metadata"]["name"]
    spec = job["spec"]
    assert spec["entrypoint"].startswith("python pipelines/run_o2o.py")
    assert "--out /mnt/efs/" in spec["entrypoint"]
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"].startswith("2.60")
    assert cluster["authOptions"]["mode"] == "token" and "disabled" not in json.dumps(job)
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert head["template"]["spec"]["containers"][0]["image"]
    workers = cluster["workerGroupSpecs"]
    assert workers and all(w["groupName"] and w["template"]["spec"]["containers"] for w in workers)
    assert "worker_node" in workers[0]["rayStartParams"]["resources"]
    # the same shared volume in every pod, for datasets and run directories
    for template in [head["template"]] + [w["template"] for w in workers]:
        mounts = template["spec"]["containers"][0]["volumeMounts"]
        assert {"name": "shared", "mountPath": "/mnt/efs"} in mounts
    assert yaml.safe_load(spec["runtimeEnvYAML"])["working_dir"]


def test_local_cluster_script_syntax_and_help():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
    res = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0 and "start" in res.stdout and "stop" in res.stdout
    res = subprocess.run(["bash", str(SCRIPT), "frobnicate"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 2


# ---------------------------------------------------------------- a real 2-node cluster


def _script(*args, env=None, timeout=180):
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHON": sys.executable, **(env or {})})


def _cluster_pids(state_dir: str) -> set[int]:
    out = _script("pids", "--dir", state_dir).stdout
    return {int(p) for p in out.split()}


def _processes_naming(text: str) -> dict[int, str]:
    """Live processes whose command line contains `text` (e.g. the cluster's GCS address)."""
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if proc.name.isdigit() and text in cmdline and "State:\tZ" not in (proc / "status").read_text():
                found[int(proc.name)] = cmdline
        except OSError:
            continue
    return found


@pytest.fixture(scope="module")
def loopback_cluster():
    """Head (1 CPU, head_node) + 1 worker node (2 CPUs, worker_node) on this machine."""
    pytest.importorskip("ray.dashboard.optional_deps",
                        reason="Ray Jobs and the dashboard need ray[default]: pip install -e '.[cluster]'")
    pytest.importorskip("ray.job_submission", reason="needs ray[default]")
    state_dir = tempfile.mkdtemp(prefix="o2oc", dir="/tmp")  # short: Ray's unix socket paths
    gcs_port = None
    try:
        started = _script("start", "--dir", state_dir, "--workers", "1", "--head-cpus", "1", "--worker-cpus", "2")
        if Path(state_dir, "gcs_port").exists():
            gcs_port = Path(state_dir, "gcs_port").read_text().strip()
        assert started.returncode == 0, started.stdout + started.stderr
        env = dict(line.removeprefix("export ").split("=", 1)
                   for line in Path(state_dir, "cluster.env").read_text().splitlines())
        token = Path(env["RAY_AUTH_TOKEN_PATH"]).read_text().strip()
        yield {"dir": state_dir, "env": env, "token": token, "dashboard": env["RAY_API_SERVER_ADDRESS"]}
    finally:
        stopped = _script("stop", "--dir", state_dir)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert _cluster_pids(state_dir) == set(), "processes of the test cluster survived `stop`"
        # also those that name only the GCS address (the head's Ray Client server)
        if gcs_port:
            assert _processes_naming(f":{gcs_port} ") == {}, "processes of the test cluster survived `stop`"
        shutil.rmtree(state_dir, ignore_errors=True)


def _submit(cluster: dict, entrypoint: str):
    """`entrypoint` submitted as a Ray job of the loopback cluster (token auth); (client, job id)."""
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(cluster["dashboard"], headers={"Authorization": f"Bearer {cluster['token']}"})
    return client, client.submit_job(entrypoint=entrypoint, runtime_env={"working_dir": str(REPO)})


@pytest.fixture(scope="module")
def pipeline_job(loopback_cluster, pendulum_data, tmp_path_factory):
    """Submits the pipeline as a Ray job; SIGKILLs one EnvRunner after the first online iteration."""
    from ray.job_submission import JobStatus

    from rllib_o2o.data.schema import write_dataset

    work = tmp_path_factory.mktemp("cluster_job")
    dataset = write_dataset(work / "pendulum", *pendulum_data, rows_per_file=200)
    (work / "tiny.json").write_text(json.dumps(TINY))
    out = work / "run"
    client, job_id = _submit(loopback_cluster, (
        f"{sys.executable} cluster/placement_job.py --runner-resource worker_node "
        f"--dataset {dataset} --env Pendulum-v1 --out {out} --config {work / 'tiny.json'} "
        f"--offline-steps 200 --align-steps 100 --online-steps {ONLINE_STEPS} --eval-every {EVAL_EVERY} "
        f"--eval-episodes 1 --num-env-runners 2"))
    placement, killed, deadline = out / "placement.json", None, time.time() + 420
    status = client.get_job_status(job_id)
    while time.time() < deadline:
        status = client.get_job_status(job_id)
        if status.is_terminal():
            break
        if killed is None and placement.exists():
            entries = json.loads(placement.read_text())
            if any(e["event"] == "online_train_result" for e in entries):
                victim = entries[-1]["runners"][0]
                cmdline = Path(f"/proc/{victim['pid']}/cmdline").read_bytes().decode(errors="replace")
                assert cmdline.startswith("ray::O2OEnvRunner"), cmdline
                assert victim["pid"] in _cluster_pids(loopback_cluster["dir"])  # ours, not another Ray's
                os.kill(victim["pid"], signal.SIGKILL)
                killed = {**victim, "at_env_steps": entries[-1]["env_steps"], "at": time.time()}
        time.sleep(0.5)
    else:
        client.stop_job(job_id)
    logs = client.get_job_logs(job_id)
    return {"status": status, "succeeded": status == JobStatus.SUCCEEDED, "logs": logs, "out": out,
            "killed": killed, "client": client, "job_id": job_id}


@pytest.mark.slow
def test_pipeline_job_runs_its_env_runners_on_the_worker_node(pipeline_job, loopback_cluster):
    assert pipeline_job["succeeded"], f"job {pipeline_job['status']}:\n{pipeline_job['logs'][-4000:]}"
    info = pipeline_job["client"].get_job_info(pipeline_job["job_id"])
    assert info.entrypoint.startswith(sys.executable)

    from rllib_o2o.methods import DEFAULT_METHOD
    from rllib_o2o.rundir.layout import RunDir

    results = json.loads(RunDir(pipeline_job["out"]).results_path(DEFAULT_METHOD).read_text())
    steps = [p["env_steps"] for p in results["online"]["curve"]]
    assert steps == list(range(0, ONLINE_STEPS + 1, EVAL_EVERY))
    assert results["alignment"]["surgery_max_abs_error"] == 0.0

    # node ids of the two nodes, from the cluster itself (token from the cluster's own file)
    nodes = subprocess.run(
        [sys.executable, "-c", "import json, ray; ray.init(address='auto', logging_level='ERROR'); "
         "print(json.dumps({n['NodeID']: n['Resources'] for n in ray.nodes() if n['Alive']}))"],
        capture_output=True, text=True, timeout=120, env={**os.environ, **loopback_cluster["env"]})
    assert nodes.returncode == 0, nodes.stderr
    resources = json.loads(nodes.stdout.strip().splitlines()[-1])
    worker_nodes = {n for n, r in resources.items() if "worker_node" in r}
    head_nodes = {n for n, r in resources.items() if "head_node" in r}
    assert len(worker_nodes) == 1 and len(head_nodes) == 1 and worker_nodes != head_nodes

    entries = json.loads((pipeline_job["out"] / "placement.json").read_text())
    assert entries[0]["event"] == "online_algorithm_init" and entries[0]["num_runners"] == 2
    runner_nodes = {r["node_id"] for e in entries for r in e["runners"]}
    assert runner_nodes == worker_nodes, (runner_nodes, resources)
    assert {e["driver_node_id"] for e in entries} == head_nodes  # the job driver (and learner) on the head
    # driver and EnvRunners run the test's Python environment (the nodes were started with its `ray`)
    assert {e["driver_python_prefix"] for e in entries} == {sys.prefix}
    assert {r["python_prefix"] for e in entries for r in e["runners"]} == {sys.prefix}


@pytest.mark.slow
def test_killing_an_env_runner_during_online_training_does_not_stop_the_run(pipeline_job):
    killed = pipeline_job["killed"]
    assert killed is not None, "the test never saw an online iteration to kill an EnvRunner in"
    assert killed["at_env_steps"] < ONLINE_STEPS
    assert pipeline_job["succeeded"], pipeline_job["logs"][-4000:]
    entries = json.loads((pipeline_job["out"] / "placement.json").read_text())
    # entries whose runners were asked after the kill (one asked just before may still list the victim)
    after = [e for e in entries if e["asked_at"] > killed["at"]]
    assert after and after[-1]["env_steps"] >= ONLINE_STEPS  # training went on to the end
    pids_after = {r["pid"] for e in after for r in e["runners"]}
    assert killed["pid"] not in pids_after
    # RLlib noticed the failure (a runner missing from the healthy set) and/or brought a new process back
    replaced = any(r["worker_index"] == killed["worker_index"] and r["pid"] != killed["pid"]
                   for e in after for r in e["runners"])
    degraded = any(e["num_healthy_runners"] < e["num_runners"] or len(e["runners"]) < 2 for e in after)
    assert replaced or degraded


# ---------------------------------------------------------------- the benchmark across the two nodes

BENCH_METHODS = ("naive", "cql-sac", "sac-scratch")
BENCH_SEEDS = (0, 1)
BENCH_ONLINE_STEPS = 1500
VICTIM = ("seed1", "online-sac-scratch")  # the task SIGKILLed once its stage has a checkpoint


@pytest.fixture(scope="module")
def bench_job(loopback_cluster, pendulum_data, tmp_path_factory):
    """`benchmarks/o2o.py` (rllib-o2o bench) submitted as a Ray job: its stage tasks spread over both nodes;
    one online task's process is SIGKILLed mid-stage."""
    from ray.job_submission import JobStatus

    from rllib_o2o.data.schema import write_dataset

    work = tmp_path_factory.mktemp("cluster_bench")
    dataset = write_dataset(work / "pendulum", *pendulum_data, rows_per_file=200)
    config = {**TINY, "offline_steps": 200, "online_steps": BENCH_ONLINE_STEPS, "eval_every": 100,
              "eval_episodes": 1}
    (work / "tiny.json").write_text(json.dumps(config))
    out = work / "bench"
    client, job_id = _submit(loopback_cluster, (
        f"{sys.executable} benchmarks/o2o.py --profile smoke --out {out} --data-dir {work / 'data'} "
        f"--dataset-path pendulum-medium={dataset} --methods {' '.join(BENCH_METHODS)} "
        f"--seeds {' '.join(map(str, BENCH_SEEDS))} --config {work / 'tiny.json'} --max-retries 2"))
    run = out / "pendulum-medium" / VICTIM[0]
    record, checkpoint = run / f"bench-task-{VICTIM[1]}.json", run / VICTIM[1] / "checkpoint"
    killed, deadline = None, time.time() + 480
    status = client.get_job_status(job_id)
    while time.time() < deadline:
        status = client.get_job_status(job_id)
        if status.is_terminal():
            break
        if killed is None and record.exists() and checkpoint.exists():
            victim = json.loads(record.read_text())["attempts"][-1]
            assert victim["pid"] in _cluster_pids(loopback_cluster["dir"])  # a worker of this cluster
            os.kill(victim["pid"], signal.SIGKILL)
            killed = victim
        time.sleep(0.2)
    else:
        client.stop_job(job_id)
    return {"status": status, "logs": client.get_job_logs(job_id), "out": out, "killed": killed,
            "succeeded": status == JobStatus.SUCCEEDED}


@pytest.mark.slow
def test_bench_runs_its_units_on_both_nodes_and_retries_a_killed_one(bench_job, loopback_cluster):
    assert bench_job["succeeded"], f"job {bench_job['status']}:\n{bench_job['logs'][-4000:]}"
    out = bench_job["out"]
    tasks = json.loads((out / "bench-tasks.json").read_text())["tasks"]
    # per seed: offline, offline-cql and the three online stages, once each
    assert len(tasks) == len(BENCH_SEEDS) * (2 + len(BENCH_METHODS)) and {t["status"] for t in tasks} == {"done"}
    assert len({t["node_id"] for t in tasks}) == 2  # units ran on both nodes (head and worker)
    for seed in BENCH_SEEDS:
        for method in BENCH_METHODS:
            results = json.loads((out / "pendulum-medium" / f"seed{seed}" / f"results-{method}.json").read_text())
            assert results["online"]["curve"][-1]["env_steps"] == BENCH_ONLINE_STEPS
    # the killed task ran again (Ray's retry) and resumed its stage from the checkpoint it had written
    killed = bench_job["killed"]
    assert killed is not None, "the test never saw the victim's checkpoint to kill its task"
    victim = next(t for t in tasks if f"seed{t['seed']}" == VICTIM[0] and t["stage"] == VICTIM[1])
    assert victim["attempts"] == 2 and victim["pid"] != killed["pid"]
    done = json.loads((out / "pendulum-medium" / VICTIM[0] / VICTIM[1] / "DONE.json").read_text())
    assert done["resumed_from"] and 0 < done["resumed_from"][0] < BENCH_ONLINE_STEPS
    assert (out / "report" / "report.md").exists()
