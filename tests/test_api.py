"""The Python API: `from rllib_o2o import run, PipelineConfig, load_policy`, and docs/api.md's example, run as written."""

from __future__ import annotations

import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

import rllib_o2o
from rllib_o2o import PipelineConfig, run
from rllib_o2o.data.schema import DatasetError, read_dataset, write_dataset
from rllib_o2o.methods import DEFAULT_METHOD
from rllib_o2o.rundir.names import results_file_name
from rllib_o2o.suggest import UnknownNameError

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def test_import_stays_cheap_and_the_names_resolve_lazily():
    code = ("import sys\nimport rllib_o2o\nfrom rllib_o2o import PipelineConfig, run\n"
            "print(sorted(m for m in ('torch', 'ray') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    from rllib_o2o.export import export_policy, load_policy

    assert (rllib_o2o.load_policy, rllib_o2o.export_policy) == (load_policy, export_policy)
    with pytest.raises(AttributeError):
        rllib_o2o.no_such_name  # noqa: B018


@pytest.mark.parametrize("call, error", [
    (lambda tmp: run(dataset=str(tmp / "data" / "hopper-medium"), out=str(tmp / "run")), DatasetError),
    (lambda tmp: run(env="Hopper-v5", out=str(tmp / "run")), ValueError),
    (lambda tmp: run({"offline_stepz": 5, "out": str(tmp / "run")}), UnknownNameError),
    (lambda tmp: run(PipelineConfig(out=str(tmp / "run"), online_steps=0)), ValueError),
])
def test_run_checks_before_ray_starts_or_anything_is_written(tmp_path, no_ray, call, error):
    with pytest.raises(error):
        call(tmp_path)
    assert not (tmp_path / "run").exists()


def test_run_copies_the_config_applies_options_and_starts_ray_after_the_checks(pendulum_dir, tmp_path,
                                                                               monkeypatch):
    import rllib_o2o.api
    import rllib_o2o.pipeline

    calls = []
    monkeypatch.setattr(rllib_o2o.api, "init_ray", lambda **_: calls.append("init_ray") or False)

    def pipeline(cfg, validated=None):
        calls.append(cfg)
        calls.append(validated)
        cfg.env = "changed by the pipeline"
        return {"final_score": 1.0}

    monkeypatch.setattr(rllib_o2o.pipeline, "run_pipeline", pipeline)
    cfg = PipelineConfig(dataset=str(pendulum_dir), out=str(tmp_path / "run"), offline_steps=9)
    assert run(cfg, seed=5) == {"final_score": 1.0}
    assert calls[0] == "init_ray" and (calls[1].offline_steps, calls[1].seed) == (9, 5)
    # the checks' validation of the dataset goes to the pipeline, which then does not read it again
    assert Path(calls[2].path) == pendulum_dir and calls[2].num_transitions == len(read_dataset(pendulum_dir)[0]["obs"])
    assert (cfg.env, cfg.seed) == (None, 0)  # the caller's config is left as it was
    with pytest.raises(ValueError):
        run(cfg, offline_steps=-1)
    assert len(calls) == 3  # a refused config neither starts Ray nor runs


def _example() -> str:
    """The Python block under docs/api.md's "## Example"."""
    section = DOC.read_text().split("## Example", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


@pytest.mark.slow
def test_the_documented_example_runs(tmp_path, monkeypatch, pendulum_data, capsys):
    import ray

    write_dataset(tmp_path / "data" / "pendulum-medium", *pendulum_data)  # what `rllib-o2o collect` would make
    (tmp_path / "example.py").write_text(_example())
    monkeypatch.chdir(tmp_path)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)  # private, never shared
    try:
        runpy.run_path("example.py", run_name="__main__")
    finally:
        ray.shutdown()
    assert (tmp_path / "runs" / "demo" / results_file_name(DEFAULT_METHOD)).is_file()
    assert (tmp_path / "runs" / "demo" / "policy" / "policy.json").is_file()
    assert "[" in capsys.readouterr().out.splitlines()[-1]  # the action printed last
