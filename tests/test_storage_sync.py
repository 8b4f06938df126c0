"""Run outputs mirrored to a storage path (--storage-path): uploads, markers last, resume on a fresh node."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from rllib_o2o.cli import main
from rllib_o2o.rundir.layout import RunDir
from rllib_o2o.rundir.stage import StageDir


class FakeAlgo:
    """Stands in for an RLlib algorithm: a constant file and one that changes every iteration."""

    def __init__(self, state: bytes = b"", big: bytes = b"B" * 100_000, extra: bytes | None = None):
        self.state, self.big, self.extra, self.restored = state, big, extra, None

    def save_to_path(self, path: str) -> None:
        Path(path).mkdir(parents=True)
        Path(path, "state.bin").write_bytes(self.state)
        Path(path, "big.bin").write_bytes(self.big)
        if self.extra is not None:
            Path(path, "extra.bin").write_bytes(self.extra)

    def restore_from_path(self, path: str) -> None:
        self.restored = Path(path, "state.bin").read_bytes()


@pytest.fixture(params=["dir", "file-uri"])
def store(request, tmp_path):
    """A storage path as a plain directory and as a file:// URI (pyarrow's code path for s3://, gs://)."""
    root = tmp_path / "store"
    return str(root) if request.param == "dir" else root.as_uri()


def store_dir(store: str) -> Path:
    return Path(store.removeprefix("file://"))


def node(tmp_path: Path, name: str, store: str) -> RunDir:
    """The run dir `run` on a (new) node `name`, mirrored to the storage."""
    run = tmp_path / name / "run"
    run.mkdir(parents=True, exist_ok=True)
    return RunDir.open(run, store)


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_checkpoints_round_trip_byte_identical_to_a_fresh_node(tmp_path, store):
    run = node(tmp_path, "a", store)
    for iteration in (1, 2):
        run.stage("offline").save_checkpoint(FakeAlgo(state=f"iteration {iteration}".encode()),
                                         {"iteration": iteration, "curve": []})
    slots = {slot: files(store_dir(store) / "run" / "offline" / slot) for slot in ("checkpoint-a", "checkpoint-b")}
    for slot, uploaded in slots.items():  # both uploads whole: 2 algo files, progress, manifest
        assert len(uploaded) == 4 and "manifest.json" in uploaded, (slot, sorted(uploaded))
    assert {json.loads(uploaded["progress.json"])["iteration"] for uploaded in slots.values()} == {1, 2}

    fresh = node(tmp_path, "b", store)
    fresh.sync()
    for name in ("checkpoint", "checkpoint.prev"):
        assert files(fresh.path / "offline" / name) == files(run.path / "offline" / name), name
    algo = FakeAlgo()
    assert fresh.stage("offline").restore_checkpoint(algo)["iteration"] == 2 and algo.restored == b"iteration 2"


def test_a_checkpoint_whose_manifest_was_not_uploaded_is_not_taken(tmp_path, store, capsys):
    run = node(tmp_path, "a", store)
    for iteration in (1, 2):
        run.stage("online").save_checkpoint(FakeAlgo(state=f"iteration {iteration}".encode()),
                                         {"iteration": iteration, "curve": []})
    newest = store_dir(store) / "run" / "online" / "checkpoint-b"
    (newest / "manifest.json").unlink()  # killed mid-upload: files sent, manifest (the marker) not yet
    (newest / "algo" / "state.bin").write_bytes(b"half")

    fresh = node(tmp_path, "b", store)
    fresh.sync()
    algo = FakeAlgo()
    assert fresh.stage("online").restore_checkpoint(algo)["iteration"] == 1 and algo.restored == b"iteration 1"
    assert not (fresh.path / "online" / "checkpoint.prev").exists()

    # The next upload reuses the incomplete slot (the complete one stays) and sends all of it.
    run.stage("online").save_checkpoint(FakeAlgo(state=b"iteration 3"), {"iteration": 3, "curve": []})
    assert "online/checkpoint-b (4 files" in capsys.readouterr().out
    assert json.loads((newest / "progress.json").read_text())["iteration"] == 3


def test_a_damaged_upload_is_skipped_with_a_warning(tmp_path, store, capsys):
    run = node(tmp_path, "a", store)
    for iteration in (1, 2):
        run.stage("offline").save_checkpoint(FakeAlgo(state=f"iteration {iteration}".encode()),
                                         {"iteration": iteration, "curve": []})
    (store_dir(store) / "run" / "offline" / "checkpoint-b" / "algo" / "state.bin").write_bytes(b"iteration X")

    fresh = node(tmp_path, "b", store)
    fresh.sync()
    assert "skipped the checkpoint" in capsys.readouterr().err
    assert fresh.stage("offline").restore_checkpoint(FakeAlgo())["iteration"] == 1
    assert not [p for p in (fresh.path / "offline").iterdir() if ".tmp-" in p.name]


def test_incremental_upload_sends_changed_files_and_drops_stale_ones(tmp_path, store, capsys):
    run = node(tmp_path, "a", store)
    run.stage("online").save_checkpoint(FakeAlgo(state=b"1", extra=b"only in 1"), {"iteration": 1})
    run.stage("online").save_checkpoint(FakeAlgo(state=b"2"), {"iteration": 2})
    slot_a = store_dir(store) / "run" / "online" / "checkpoint-a"
    big = slot_a / "algo" / "big.bin"
    before = big.stat().st_mtime_ns
    capsys.readouterr()
    run.stage("online").save_checkpoint(FakeAlgo(state=b"3"), {"iteration": 3})  # overwrites the older slot, a
    line = capsys.readouterr().out
    assert "online/checkpoint-a (3 files" in line and "1 unchanged" in line, line  # state, progress, manifest
    assert big.stat().st_mtime_ns == before
    assert not (slot_a / "algo" / "extra.bin").exists()
    assert files(slot_a) == files(run.path / "online" / "checkpoint")


def test_finished_stage_uploads_outputs_then_done_marker(tmp_path, store, capsys):
    run = node(tmp_path, "a", store)
    stage = run.path / "alignment"
    (stage / "module").mkdir(parents=True)
    (stage / "module" / "module.pt").write_bytes(b"weights")
    (stage / "module" / "meta.json").write_text("{}")
    run.stage("alignment").mark_done({"seconds": 1.0})
    assert "storage: uploaded alignment (outputs, DONE.json) -> " in capsys.readouterr().out

    remote = store_dir(store) / "run" / "alignment"
    (remote / "DONE.json").rename(remote / "DONE.later")  # as if killed before the marker went up
    fresh = node(tmp_path, "b", store)
    fresh.sync()
    assert fresh.stage("alignment").done() is None  # outputs without DONE.json: not a finished stage

    (remote / "DONE.later").rename(remote / "DONE.json")
    fresh.sync()
    assert fresh.stage("alignment").done() == {"seconds": 1.0}
    assert files(fresh.path / "alignment") == files(stage)


def test_start_of_run_uploads_what_storage_lacks(tmp_path, store):
    run = tmp_path / "a" / "run"
    StageDir(run / "offline").save_checkpoint(FakeAlgo(state=b"1"), {"iteration": 1})  # written before the crash,
    (run / "config.json").write_text('{"seed": 0}')                                    # never uploaded
    mirrored = RunDir.open(run, store)
    mirrored.sync()
    remote = store_dir(store) / "run"
    assert files(remote / "offline" / "checkpoint-a") == files(run / "offline" / "checkpoint")
    assert (remote / "config.json").read_text() == '{"seed": 0}'
    sent = {p: p.stat().st_mtime_ns for p in remote.rglob("*") if p.is_file()}
    mirrored.sync()
    assert {p: p.stat().st_mtime_ns for p in remote.rglob("*") if p.is_file()} == sent  # nothing changed: nothing sent


def test_run_without_a_mirror_writes_nothing_to_storage(tmp_path, store):
    run = RunDir(node(tmp_path, "a", store).path)  # the same directory, no mirror
    run.stage("offline").save_checkpoint(FakeAlgo(state=b"1"), {"iteration": 1})
    run.stage("offline").mark_done({"seconds": 1.0})
    run.push_file(run.path / "config.json")
    run.sync()
    assert not store_dir(store).exists()


# ---------------------------------------------------------------- preflight


@pytest.mark.parametrize("kind", ["scheme", "under-a-file", "parent-of-out", "parent-of-out-uri"])
def test_unusable_storage_path_exit_2_before_ray(kind, tmp_path, pendulum_dir, capsys, no_ray):
    (tmp_path / "afile").write_text("x")
    bad = {"scheme": "nosuchscheme://bucket/o2o", "under-a-file": str(tmp_path / "afile" / "o2o"),
           "parent-of-out": str(tmp_path), "parent-of-out-uri": tmp_path.as_uri()}[kind]
    out = tmp_path / "run"
    assert main(["run", "--dataset", str(pendulum_dir), "--out", str(out), "--storage-path", bad]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("rllib-o2o run: error: --storage-path"), err
    assert bad in err[0]
    assert not out.exists()


def test_storage_holding_another_run_is_refused(tmp_path, store, pendulum_dir):
    from rllib_o2o.context import RunContext
    from rllib_o2o.pipeline import PipelineConfig, open_run

    (store_dir(store) / "run").mkdir(parents=True)
    (store_dir(store) / "run" / "config.json").write_text(json.dumps({"seed": 123, "out": "elsewhere"}))
    cfg = PipelineConfig(dataset=str(pendulum_dir), env="Pendulum-v1", out=str(tmp_path / "run"), storage_path=store)
    with pytest.raises(ValueError, match=r"/run holds a run with a different config \(seed differ\)"):
        RunContext.open(cfg, open_run(cfg))
    assert not (store_dir(store) / "run" / "offline").exists()


def test_tune_experiment_defaults_to_the_runs_storage(tmp_path):
    from rllib_o2o.cli import build_parser
    from rllib_o2o.tune import TuneSettings, experiment_path, settings_from_args

    run = tmp_path / "hm"
    assert experiment_path(TuneSettings(name="x"), run) == str(run.resolve() / "tune" / "x")
    assert experiment_path(TuneSettings(name="x"), run, "s3://bucket/o2o/") == "s3://bucket/o2o/hm/tune/x"
    assert experiment_path(TuneSettings(name="x", storage_path="gs://b/t"), run, "s3://bucket/o2o") == "gs://b/t/x"
    args = build_parser().parse_args(["tune", "--storage-path", "s3://bucket/o2o", "--tune-storage-path", "gs://b/t"])
    assert args.storage_path == "s3://bucket/o2o"
    assert settings_from_args(args, None).storage_path == "gs://b/t"


# ---------------------------------------------------------------- end to end


@pytest.mark.slow
def test_run_resumes_from_storage_on_a_fresh_node(tmp_path, pendulum_dir):
    from tests.test_pipeline import TINY, command

    config_file = tmp_path / "tiny.json"
    config_file.write_text(json.dumps(TINY))
    out, store = tmp_path / "node-a" / "run", tmp_path / "store"
    aca = ["--method", "aca"]  # storage is what is tested: aca's stage names (online/, results.json)
    first = subprocess.run(command(pendulum_dir, out, config_file) + aca + ["--storage-path", str(store)],
                           capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    for path in ("config.json", "results.json", "offline/DONE.json", "offline/module/module.pt",
                 "alignment/DONE.json", "alignment/module/module.pt", "online/DONE.json",
                 "online/checkpoint-a/manifest.json"):
        assert (store / "run" / path).is_file(), path
    assert not (store / "run" / "datasets").exists()
    assert "storage: uploaded online/checkpoint -> " in first.stdout
    before = json.loads((store / "run" / "results.json").read_text())

    shutil.rmtree(out.parent)  # the driver lands on a fresh node: no local run dir
    fresh = tmp_path / "node-b" / "run"
    again = subprocess.run(command(pendulum_dir, fresh, config_file) + aca + ["--storage-path", store.as_uri()],
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    for stage in ("offline", "alignment", "online"):
        assert f"storage: downloaded {stage} (outputs, DONE.json)" in again.stdout, stage
    for line in ("offline stage: already complete", "alignment: already complete", "online stage: already complete"):
        assert line in again.stdout, line
    assert "online 0/500" not in again.stdout and "offline 100/" not in again.stdout  # no training
    after = json.loads((fresh / "results.json").read_text())
    for results in (before, after):
        results.pop("seconds_this_invocation")
    assert after == before


@pytest.mark.slow
def test_interrupted_stage_resumes_from_the_storage_checkpoint_on_a_fresh_node(tmp_path, pendulum_dir):
    from tests.test_pipeline import TINY, command, run_until

    config_file = tmp_path / "tiny.json"
    config_file.write_text(json.dumps(TINY))
    store = tmp_path / "store"
    aca = ["--method", "aca"]  # storage is what is tested: aca's stage names (online/, results.json)
    cmd = command(pendulum_dir, tmp_path / "node-a" / "run", config_file) + aca + ["--storage-path", str(store)]
    log = run_until(cmd, "online 200/500 env steps")  # SIGKILL in the online stage, after its first checkpoint
    assert "storage: uploaded online/checkpoint" in log, log[-3000:]
    shutil.rmtree(tmp_path / "node-a")

    fresh = tmp_path / "node-b" / "run"
    done = subprocess.run(command(pendulum_dir, fresh, config_file) + aca + ["--storage-path", str(store)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "storage: downloaded online/checkpoint <- " in done.stdout
    assert "online 200/500" not in done.stdout  # continued after the uploaded checkpoint, not restarted
    online = json.loads((store / "run" / "results.json").read_text())["online"]
    assert [p["env_steps"] for p in online["curve"]] == [0, 200, 400, 500]
    assert online["resumed_from"] and online["resumed_from"][-1] >= 200  # from node A's uploaded checkpoint
    assert json.loads((fresh / "offline" / "DONE.json").read_text())["resumed_from"] == []  # not run again


def test_a_run_is_not_continued_on_other_rows(tmp_path, store, pendulum_data):
    """Its data regenerated differently (another CPU) under the same path: refused, locally and from storage."""
    import numpy as np

    from rllib_o2o.context import RunContext
    from rllib_o2o.data.schema import write_dataset
    from rllib_o2o.pipeline import PipelineConfig, open_run

    tr, meta = pendulum_data
    data = write_dataset(tmp_path / "pendulum-medium", tr, meta)
    cfg = PipelineConfig(dataset=str(data), env="Pendulum-v1", out=str(tmp_path / "run"), storage_path=store)
    first = RunContext.open(cfg, open_run(cfg)).stats.fingerprint
    assert json.loads((tmp_path / "run" / "data-fingerprint.json").read_text()) == {"dataset_fingerprint": first}
    assert json.loads((store_dir(store) / "run" / "data-fingerprint.json").read_text())["dataset_fingerprint"] == first
    RunContext.open(cfg, open_run(cfg))  # the same rows: continued

    other = dict(tr, rewards=tr["rewards"] + np.float32(1.0))
    write_dataset(data, other, meta, overwrite=True)
    with pytest.raises(ValueError, match=rf"run/data-fingerprint.json: the run was trained on other data "
                                         rf"\(fingerprint {first}\) than .*pendulum-medium holds now"):
        RunContext.open(cfg, open_run(cfg))
    (tmp_path / "run" / "data-fingerprint.json").unlink()  # a fresh node: only storage remembers
    with pytest.raises(ValueError, match=rf"{first}"):
        RunContext.open(cfg, open_run(cfg))
