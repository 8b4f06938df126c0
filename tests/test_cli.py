"""The `rllib-o2o` command line: help, and `run`'s user errors (exit 2, one clear line, nothing trained)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from rllib_o2o.cli import main

SUBCOMMANDS = ("validate", "import-d4rl", "import-minari", "run", "collect")


def _error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line, got:\n{err}"
    assert "Traceback" not in err
    return lines[0]


# ---------------------------------------------------------------- help


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "rllib-o2o" in out
    for name in SUBCOMMANDS:
        assert name in out, name


def test_no_subcommand_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert name in out, name


def test_run_help_lists_the_pipeline_flags(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--dataset", "--config", "--offline-steps", "--align-steps", "--online-steps", "--out",
                 "--preset", "--seed"):
        assert flag in out, flag


def test_help_as_a_module_and_as_the_console_script():
    commands = [[sys.executable, "-m", "rllib_o2o.cli", "--help"]]
    if shutil.which("rllib-o2o"):
        commands.append(["rllib-o2o", "--help"])
    for command in commands:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        for name in SUBCOMMANDS:
            assert name in proc.stdout, (command, name)


def test_unknown_subcommand_and_bad_preset_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["run", "--preset", "hopper"])
    assert exc.value.code == 2
    assert "--preset" in capsys.readouterr().err


def test_help_does_not_import_torch_or_ray():
    code = ("import sys\nfrom rllib_o2o.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'ray') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


# ---------------------------------------------------------------- validate


def test_validate_a_dataset_and_a_bad_path(pendulum_dir, tmp_path, capsys):
    assert main(["validate", str(pendulum_dir)]) == 0
    assert "450" in capsys.readouterr().out  # the fixture's number of transitions
    assert main(["validate", str(tmp_path / "missing")]) == 2
    assert "missing" in _error_line(capsys.readouterr().err)


# ---------------------------------------------------------------- run: config errors


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_run_config_file_with_an_unknown_key(pendulum_dir, tmp_path, capsys, no_ray, suffix):
    config = tmp_path / f"config{suffix}"
    values = {"dataset": str(pendulum_dir), "offline_stepz": 100, "online_steps": 10}
    config.write_text(json.dumps(values) if suffix == ".json" else
                      "".join(f"{k}: {v}\n" for k, v in values.items()))
    out = tmp_path / "run"
    assert main(["run", "--config", str(config), "--out", str(out)]) == 2
    line = _error_line(capsys.readouterr().err)
    assert line.startswith("rllib-o2o run: error:")
    assert "offline_stepz" in line
    assert "online_steps" not in line.split("known")[0]  # names only the bad key as unknown
    assert not out.exists()


def test_run_config_file_must_be_a_mapping(tmp_path, capsys, no_ray):
    config = tmp_path / "config.yaml"
    config.write_text("- dataset\n- out\n")
    assert main(["run", "--config", str(config)]) == 2
    assert "mapping" in _error_line(capsys.readouterr().err)


def test_run_missing_config_file(tmp_path, capsys, no_ray):
    missing = tmp_path / "nope.yaml"
    assert main(["run", "--config", str(missing)]) == 2
    assert "nope.yaml" in _error_line(capsys.readouterr().err)


def test_run_malformed_config_file(tmp_path, capsys, no_ray):
    config = tmp_path / "config.json"
    config.write_text('{"dataset": "x",')
    assert main(["run", "--config", str(config)]) == 2
    assert "config.json" in _error_line(capsys.readouterr().err)


def test_run_config_value_of_the_wrong_type(pendulum_dir, tmp_path, capsys, monkeypatch, no_ray):
    import rllib_o2o.cli as cli

    monkeypatch.setattr(cli, "_init_ray", lambda: None)  # isolates the type check from the Ray ordering bug
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"dataset": str(pendulum_dir), "offline_steps": "many"}))
    assert main(["run", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    assert "offline_steps" in _error_line(capsys.readouterr().err)


def test_run_reports_bad_values_before_starting_ray(pendulum_dir, tmp_path, capsys, no_ray):
    out = tmp_path / "run"
    assert main(["run", "--dataset", str(pendulum_dir), "--offline-steps", "-5", "--out", str(out)]) == 2
    assert "offline_steps" in _error_line(capsys.readouterr().err)


@pytest.fixture(scope="module")
def ray_session():
    import ray

    owns = not ray.is_initialized()  # reuse a session another module left running
    if owns:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if owns:
        ray.shutdown()


@pytest.mark.slow
def test_run_negative_steps_exit_2_before_any_training(ray_session, pendulum_dir, tmp_path, capsys):
    cases = [
        (["--dataset", str(pendulum_dir), "--offline-steps", "-5"], "offline_steps", "-5"),
        (["--dataset", str(pendulum_dir), "--online-steps", "0"], "online_steps", "0"),
        (["--offline-steps", "-5"], "offline_steps", "-5"),  # the embedded default: no data generated
    ]
    for i, (flags, key, value) in enumerate(cases):
        out = tmp_path / f"run{i}"
        assert main(["run", *flags, "--out", str(out)]) == 2, flags
        line = _error_line(capsys.readouterr().err)
        assert line.startswith("rllib-o2o run: error:")
        assert key in line and value in line, line
        # Nothing was written: no run directory, so no config.json, dataset or checkpoint.
        assert not out.exists() or not any(out.iterdir()), sorted(p.name for p in out.rglob("*"))
    # The same value from a config file.
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"dataset": str(pendulum_dir), "align_steps": -1}))
    out = tmp_path / "run-config"
    assert main(["run", "--config", str(config), "--out", str(out)]) == 2
    assert "align_steps" in _error_line(capsys.readouterr().err)
    assert not out.exists() or not any(out.iterdir())
