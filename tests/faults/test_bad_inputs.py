"""`rllib-o2o run` refuses bad input before Ray starts or anything is written: one line, exit code 2.

Bad dataset files (those of the data-layer tests, plus truncated Parquet and bad
dataset.json), bad D4RL files, unusable output paths, and offline checkpoints
that do not fit the run.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile

import pytest
import ray  # noqa: F401 - at collection: Ray's log handler keeps the stderr it is first imported under (capsys's closes)

from rllib_o2o.checkpoints import save_module_checkpoint
from rllib_o2o.cli import main
from rllib_o2o.data.schema import write_dataset
from tests.test_data_d4rl import BAD_INPUTS as BAD_HDF5
from tests.test_data_validate import BAD_DATASETS, _written

pytestmark = pytest.mark.faults


def _run_error(capsys, args: list[str]) -> str:
    """Runs `rllib-o2o run ARGS`; asserts exit 2 and a single error line, returns the message."""
    assert main(["run", *args]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("rllib-o2o run: error: "), lines[0]
    return lines[0][len("rllib-o2o run: error: "):]


# ---------------------------------------------------------------- dataset files


def _truncated_parquet(path):
    part = path / "part-00001.parquet"
    data = part.read_bytes()
    part.write_bytes(data[: len(data) // 2])
    return part


def _bad_json(path):
    (path / "dataset.json").write_text('{"env_id": "Pendulum-v1", ')
    return path / "dataset.json"


def _json_without_shapes(path):
    meta = json.loads((path / "dataset.json").read_text())
    del meta["obs_shape"]
    (path / "dataset.json").write_text(json.dumps(meta))
    return path / "dataset.json"


def _no_parts(path):
    for part in path.glob("part-*.parquet"):
        part.unlink()
    return path


def _stray_text_file_named_parquet(path):
    (path / "part-00009.parquet").write_text("id,obs\n1,0.5\n")
    return path / "part-00009.parquet"


# case -> (variant of tests/test_data_validate._written, damage(path) -> file named, problem)
MORE_BAD_DATASETS = {
    "truncated_parquet": (None, _truncated_parquet, "not a readable Parquet file"),
    "bad_dataset_json": (None, _bad_json, "not valid JSON"),
    "dataset_json_missing_field": (None, _json_without_shapes, "missing field(s) obs_shape"),
    "no_part_files": (None, _no_parts, "no part-*.parquet files"),
    "extra_text_part": (None, _stray_text_file_named_parquet, "not a readable Parquet file"),
}
ALL_BAD_DATASETS = {**BAD_DATASETS, **MORE_BAD_DATASETS}


@pytest.mark.parametrize("case", sorted(ALL_BAD_DATASETS))
def test_run_rejects_bad_dataset_file(tmp_path, pendulum_data, capsys, no_ray, case):
    variant, damage, problem = ALL_BAD_DATASETS[case]
    path = _written(tmp_path, pendulum_data, variant)
    named = damage(path) if damage else path
    out = tmp_path / "run"
    message = _run_error(capsys, ["--dataset", str(path), "--env", "Pendulum-v1", "--out", str(out)])
    assert message.startswith(str(named)) and problem in message, message
    assert not out.exists()  # no run directory, config.json, dataset copy or checkpoint
    # `validate` gives the same message.
    assert main(["validate", str(path), "--env", "Pendulum-v1"]) == 2
    assert capsys.readouterr().err == f"rllib-o2o validate: error: {message}\n"


@pytest.mark.parametrize("case", sorted(BAD_HDF5))
def test_run_rejects_bad_d4rl_file(tmp_path, capsys, no_ray, case):
    make, problem = BAD_HDF5[case]
    src = make(tmp_path / "data.hdf5")
    out = tmp_path / "run"
    message = _run_error(capsys, ["--dataset", str(src), "--env", "Pendulum-v1", "--out", str(out)])
    assert message.startswith(str(src)) and problem in message, message
    assert not out.exists()


@pytest.mark.parametrize("kind", ["missing", "empty_dir", "regular_file"])
def test_run_rejects_a_dataset_path_that_is_not_a_dataset(tmp_path, capsys, no_ray, kind):
    path = tmp_path / "data"
    if kind == "empty_dir":
        path.mkdir()
    elif kind == "regular_file":
        path.write_text("obs,actions\n")
    out = tmp_path / "run"
    message = _run_error(capsys, ["--dataset", str(path), "--env", "Pendulum-v1", "--out", str(out)])
    expected = {"missing": "no such file or directory", "empty_dir": "no dataset.json",
                "regular_file": "not a dataset directory, a D4RL .hdf5/.h5 file or a Minari dataset"}[kind]
    assert message.startswith(str(path)) and expected in message, message
    assert not out.exists()


def test_run_rejects_an_unknown_env(pendulum_dir, tmp_path, capsys, no_ray):
    out = tmp_path / "run"
    message = _run_error(capsys, ["--dataset", str(pendulum_dir), "--env", "Pendulum-v9", "--out", str(out)])
    assert "Pendulum-v9 is not a registered gymnasium env" in message
    assert not out.exists()


# ---------------------------------------------------------------- output path


def test_out_under_a_regular_file(pendulum_dir, tmp_path, capsys, no_ray):
    blocker = tmp_path / "results.txt"
    blocker.write_text("not a directory")
    out = blocker / "run"
    message = _run_error(capsys, ["--dataset", str(pendulum_dir), "--out", str(out)])
    assert message == f"--out {out}: cannot create it, {blocker} is a file, not a directory"
    assert blocker.read_text() == "not a directory"


def test_out_is_a_regular_file(pendulum_dir, tmp_path, capsys, no_ray):
    out = tmp_path / "run"
    out.write_text("x")
    message = _run_error(capsys, ["--dataset", str(pendulum_dir), "--out", str(out)])
    assert message == f"--out {out}: is a file, not a directory"


def _writable(directory) -> bool:
    try:
        fd, probe = tempfile.mkstemp(dir=directory)
    except OSError:
        return False
    os.close(fd)
    os.unlink(probe)
    return True


def test_out_in_a_read_only_directory(pendulum_dir, tmp_path, capsys, no_ray):
    """chmod 555: refused, unless the tests run as root (root writes anyway; then the next test covers it)."""
    parent = tmp_path / "locked"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        if _writable(parent):
            pytest.skip("permission bits do not stop this user (root): see test_out_on_a_read_only_filesystem")
        out = parent / "run"
        message = _run_error(capsys, ["--dataset", str(pendulum_dir), "--out", str(out)])
        assert message.startswith(f"--out {out}: not writable (cannot create it in {parent})")
        assert not out.exists()
        # An existing run directory that became read-only.
        parent.chmod(0o755)
        out.mkdir()
        out.chmod(0o555)
        message = _run_error(capsys, ["--dataset", str(pendulum_dir), "--out", str(out)])
        assert message.startswith(f"--out {out}: not writable: ")
    finally:
        parent.chmod(0o755)
        if (parent / "run").exists():
            (parent / "run").chmod(0o755)


def test_out_on_a_read_only_filesystem(pendulum_dir, capsys, no_ray):
    """/sys refuses new files even to root: the check tries a write instead of trusting permission bits."""
    root = "/sys"
    if not os.path.isdir(root) or _writable(root):
        pytest.skip(f"{root} is not a read-only location here")
    out = os.path.join(root, "rllib-o2o-run")
    message = _run_error(capsys, ["--dataset", str(pendulum_dir), "--out", out])
    assert message.startswith(f"--out {out}: not writable (cannot create it in {root})"), message
    assert not os.path.exists(out)


# ---------------------------------------------------------------- --offline-checkpoint compatibility


def _checkpoint(path, obs_dim=3, act_dim=1, hidden=(32, 32), **meta):
    import torch

    from rllib_o2o.networks import TanhGaussianActor

    torch.manual_seed(0)
    actor = TanhGaussianActor(obs_dim, act_dim, hidden)
    values = {"stage": "offline", "algorithm": "O2OSAC/sacml", "env_id": "Pendulum-v1", "obs_dim": obs_dim,
              "act_dim": act_dim, "hidden": list(hidden), "alpha_off": 0.2, "actor_activation": "relu", **meta}
    return save_module_checkpoint(path, {f"actor.{k}": v.numpy() for k, v in actor.state_dict().items()},
                                  values)


class _Payload:
    """A pickle that would run code on load (writes a marker file)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _malicious(path, marker):
    _checkpoint(path)
    with open(path / "module.pt", "wb") as fh:
        pickle.dump({"actor.head.weight": _Payload(str(marker))}, fh, protocol=2)
    return path


CHECKPOINT_CASES = {
    "obs_dim": (lambda p, m: _checkpoint(p, obs_dim=4), "checkpoint is for obs/act dims 4/1, the dataset has 3/1"),
    "act_dim": (lambda p, m: _checkpoint(p, act_dim=2), "checkpoint is for obs/act dims 3/2, the dataset has 3/1"),
    "env": (lambda p, m: _checkpoint(p, env_id="Hopper-v5"),
            "checkpoint was trained on env Hopper-v5, the run uses Pendulum-v1"),
    "stage": (lambda p, m: _checkpoint(p, stage="online"),
              "checkpoint has stage='online', expected one of ['offline', 'aligned']"),
    "hidden": (lambda p, m: _checkpoint(p, hidden=(64, 64)),
               "its policy has hidden sizes [64, 64], the run uses [32, 32]"),
    "garbage_weights": (lambda p, m: (_checkpoint(p), (p / "module.pt").write_bytes(b"\x00" * 64))[0],
                        "unreadable checkpoint"),
    "bad_meta_json": (lambda p, m: (_checkpoint(p), (p / "meta.json").write_text("{"))[0],
                      "unreadable checkpoint (JSONDecodeError"),
    "pickle_that_runs_code": (_malicious, "unreadable checkpoint (UnpicklingError"),
    "missing": (lambda p, m: p, "no such checkpoint"),
    "not_a_checkpoint": (lambda p, m: (p.mkdir(), p)[1], "not a loadable RLlib checkpoint"),
}


@pytest.mark.parametrize("case", sorted(CHECKPOINT_CASES))
def test_run_refuses_an_incompatible_offline_checkpoint(pendulum_dir, tmp_path, capsys, no_ray, case):
    make, problem = CHECKPOINT_CASES[case]
    marker = tmp_path / "code-ran"
    checkpoint = make(tmp_path / "ckpt", marker)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"hidden": [32, 32]}))
    out = tmp_path / "run"
    message = _run_error(capsys, ["--dataset", str(pendulum_dir), "--env", "Pendulum-v1", "--out", str(out),
                                  "--offline-checkpoint", str(checkpoint), "--config", str(config)])
    assert message.startswith(str(checkpoint)) and problem in message, message
    assert not out.exists()
    assert not marker.exists()  # weights_only loading never ran the pickle's code


def test_a_matching_checkpoint_passes_the_checks(pendulum_dir, tmp_path):
    from rllib_o2o.pipeline import PipelineConfig
    from rllib_o2o.preflight import check_before_training

    checkpoint = _checkpoint(tmp_path / "ckpt")
    cfg = PipelineConfig(dataset=str(pendulum_dir), env="Pendulum-v1", out=str(tmp_path / "run"),
                         offline_checkpoint=str(checkpoint), hidden=[32, 32])
    check_before_training(cfg)
    assert not (tmp_path / "run").exists()


def test_checks_write_nothing_even_on_success(tmp_path, pendulum_data):
    from rllib_o2o.pipeline import PipelineConfig
    from rllib_o2o.preflight import check_before_training

    dataset = write_dataset(tmp_path / "ds", *pendulum_data)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    check_before_training(PipelineConfig(dataset=str(dataset), out=str(tmp_path / "a" / "b" / "run")))
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


JOB_ENV = json.dumps({"runtime_env": {"working_dir": "gcs://_ray_pkg_0123.zip"}, "metadata": {}})


@pytest.mark.parametrize("args, refused", [
    (["--out", "runs/hm"], "out"),                                     # would vanish with the job
    (["--out", "ABS", "--dataset", "data/hopper-medium"], "dataset"),  # git-ignored: never uploaded
    (["--out", "ABS"], None),
    (["--out", "runs/hm", "--storage-path", "ABS/storage"], None),     # mirrored: a relative --out is fine
])
def test_a_working_dir_job_refuses_paths_it_would_lose(tmp_path, monkeypatch, args, refused):
    from rllib_o2o.config import PipelineConfig
    from rllib_o2o.preflight import check_job_paths, in_uploaded_working_dir

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", JOB_ENV)
    assert in_uploaded_working_dir()
    values = dict(zip((a[2:].replace("-", "_") for a in args[::2]),
                      (v.replace("ABS", str(tmp_path)) for v in args[1::2])))
    cfg = PipelineConfig(**values)
    if refused is None:
        check_job_paths(cfg)
    else:
        with pytest.raises(ValueError, match=f"^--{refused} "):
            check_job_paths(cfg)


def test_outside_a_job_relative_paths_are_fine(monkeypatch):
    from rllib_o2o.config import PipelineConfig
    from rllib_o2o.preflight import check_job_paths, in_uploaded_working_dir

    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert not in_uploaded_working_dir()
    check_job_paths(PipelineConfig(out="runs/hm", dataset="data/missing"))
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"runtime_env": {}}))  # a job without upload
    assert not in_uploaded_working_dir()
