"""The `rllib-o2o` command line: help, and `run`'s user errors (exit 2, one clear line, nothing trained)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from rllib_o2o.cli import main
from tests.conftest import ray_started

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


def test_run_config_value_of_the_wrong_type(pendulum_dir, tmp_path, capsys, no_ray):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"dataset": str(pendulum_dir), "offline_steps": "many"}))
    assert main(["run", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    assert "offline_steps" in _error_line(capsys.readouterr().err)


def test_run_reports_bad_values_before_starting_ray(pendulum_dir, tmp_path, capsys, no_ray):
    out = tmp_path / "run"
    assert main(["run", "--dataset", str(pendulum_dir), "--offline-steps", "-5", "--out", str(out)]) == 2
    assert "offline_steps" in _error_line(capsys.readouterr().err)


@pytest.fixture
def ray_for_one_test():
    """conftest's Ray for one test, not the module, shut down after it: the no_ray tests later in this
    module need none running."""
    yield from ray_started()


@pytest.mark.slow
def test_run_negative_steps_exit_2_before_any_training(ray_for_one_test, pendulum_dir, tmp_path, capsys):
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


# ---------------------------------------------------------------- options: one flag per config field


def _run_actions() -> dict:
    """dest -> argparse action of `rllib-o2o run`'s parser."""
    from rllib_o2o.cli import build_parser

    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    return {a.dest: a for a in subparsers.choices["run"]._actions}


def test_every_config_field_is_a_run_flag_with_its_help_and_default():
    from dataclasses import MISSING, fields

    from rllib_o2o.config import PipelineConfig
    from rllib_o2o.flags import _shown

    actions = _run_actions()
    for f in fields(PipelineConfig):
        assert f.name in actions, f"no flag for config field {f.name}"
        action = actions[f.name]
        assert action.option_strings[0] == "--" + f.name.replace("_", "-")  # a bool also has --no-NAME
        assert action.default is None  # unset flags leave a --config file's values alone
        default = f.default_factory() if f.default is MISSING else f.default
        assert f"default: {_shown(default)}" in action.help, (f.name, action.help)
        assert f.metadata.get("help"), f"config field {f.name} has no help text where it is declared"


def test_run_help_shows_every_flag(capsys):
    from dataclasses import fields

    from rllib_o2o.config import PipelineConfig

    with pytest.raises(SystemExit) as exc:
        main(["run", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for f in fields(PipelineConfig):
        assert "--" + f.name.replace("_", "-") in out, f.name


def test_pipeline_entry_point_shares_the_run_flags():
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "pipelines" / "run_o2o.py"
    proc = subprocess.run([sys.executable, str(script), "--help"], check=False, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--align-plateau-patience" in proc.stdout and "--custom-resources-per-env-runner" in proc.stdout


def test_flag_values_are_parsed_by_the_field_type():
    from rllib_o2o.cli import build_parser

    args = build_parser().parse_args([
        "run", "--hidden", "[64, 64]", "--custom-resources-per-env-runner", "{worker_node: 0.1}",
        "--w-schedule", '[1.0, 40, 0.5]', "--torch-threads", "3", "--num-gpus-per-learner", "1",
        "--offline-steps", "7", "--method", "naive", "--preset", "expert"])
    assert args.hidden == [64, 64]
    assert args.custom_resources_per_env_runner == {"worker_node": 0.1}
    assert args.w_schedule == [1.0, 40, 0.5]
    assert args.torch_threads == 3 and args.num_gpus_per_learner == 1.0 and args.offline_steps == 7
    assert (args.method, args.preset) == ("naive", "expert")
    assert build_parser().parse_args(["run", "--torch-threads", "auto"]).torch_threads == "auto"
    assert build_parser().parse_args(["run"]).offline_steps is None


@pytest.mark.parametrize("flags", [["--hidden", "wide"], ["--custom-resources-per-env-runner", "[1]"],
                                   ["--offline-steps", "many"]])
def test_flag_values_of_the_wrong_type_are_usage_errors(flags, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", *flags])
    assert exc.value.code == 2
    assert flags[0] in capsys.readouterr().err


def test_an_unknown_method_is_refused_before_anything_runs(tmp_path, capsys):
    # --method also takes the variants a --config names, so the name is checked once the config is read
    assert main(["run", "--method", "td3", "--out", str(tmp_path / "run")]) == 2
    assert not (tmp_path / "run").exists()
    variants = tmp_path / "variants.yaml"
    variants.write_text("variants: {aca-no-bonus: {base: aca, keep_offline_entropy_bonus: false}}\n")
    assert main(["run", "--method", "aca-no-bonus", "--out", str(tmp_path / "run")]) == 2  # not without them
    assert main(["run", "--config", str(variants), "--method", "aca-no-bonus", "--offline-steps", "0",
                 "--out", str(tmp_path / "run")]) == 2  # known with them: refused for the bad budget instead
    assert "offline_steps must be > 0" in capsys.readouterr().err


def test_version_exits_0_with_the_installed_version(capsys):
    from importlib import metadata

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert metadata.version("rllib-o2o") in capsys.readouterr().out


@pytest.fixture
def captured_run(monkeypatch):
    """Replaces rllib_o2o.run with a recorder: the config `rllib-o2o run` would run, no Ray, no training."""
    import rllib_o2o.api

    configs = []

    def record(cfg):
        configs.append(cfg)
        return {"env_id": cfg.env, "dataset": str(cfg.dataset), "method": cfg.method, "offline_score": None,
                "dip": None, "final_score": None, "offline": None, "alignment": None, "online": None}

    monkeypatch.setattr(rllib_o2o.api, "run", record)
    return configs


def test_flags_override_the_config_file(pendulum_dir, tmp_path, captured_run):
    config = tmp_path / "config.yaml"
    config.write_text(f"dataset: {pendulum_dir}\noffline_steps: 100\nseed: 3\nhidden: [32, 32]\n")
    assert main(["run", "--config", str(config), "--offline-steps", "7", "--out", str(tmp_path / "run")]) == 0
    (cfg,) = captured_run
    assert (cfg.offline_steps, cfg.seed, cfg.hidden, cfg.dataset) == (7, 3, [32, 32], str(pendulum_dir))


def test_without_a_dataset_flags_and_config_files_both_start_from_the_embedded_default(tmp_path, captured_run):
    from dataclasses import asdict, replace

    from rllib_o2o.config import embedded_default_config

    config = tmp_path / "config.yaml"
    config.write_text("offline_steps: 100\n")
    assert main(["run"]) == 0
    assert main(["run", "--config", str(config)]) == 0
    assert main(["run", "--offline-steps", "100"]) == 0
    assert main(["run", "--env", "Pendulum-v1", "--offline-steps", "100"]) == 0
    embedded = embedded_default_config()
    assert [asdict(c) for c in captured_run] == [asdict(embedded)] + 3 * [asdict(replace(embedded, offline_steps=100))]


@pytest.mark.parametrize("source", ["flag", "config"])
def test_env_without_a_dataset_is_refused_before_ray(source, tmp_path, capsys, no_ray):
    out = tmp_path / "run"
    args = ["--env", "Hopper-v5"]
    if source == "config":
        config = tmp_path / "config.yaml"
        config.write_text("env: Hopper-v5\n")
        args = ["--config", str(config)]
    assert main(["run", *args, "--out", str(out)]) == 2
    line = _error_line(capsys.readouterr().err)
    assert "Hopper-v5" in line and "--dataset" in line
    assert not out.exists()


def test_a_dataset_path_that_does_not_exist_is_reported_as_missing_before_ray(tmp_path, capsys, no_ray):
    missing = tmp_path / "data" / "hopper-medium"
    out = tmp_path / "run"
    assert main(["run", "--dataset", str(missing), "--out", str(out)]) == 2
    line = _error_line(capsys.readouterr().err)
    assert str(missing) in line and "Minari" not in line
    assert not out.exists()


def test_unknown_config_file_key_names_the_near_key(pendulum_dir, tmp_path, capsys, no_ray):
    config = tmp_path / "config.yaml"
    config.write_text(f"dataset: {pendulum_dir}\nalign_stepz: 5\n")
    assert main(["run", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    line = _error_line(capsys.readouterr().err)
    assert "'align_stepz'" in line and "'align_steps'" in line


def test_unknown_method_in_a_config_file_names_the_near_method(pendulum_dir, tmp_path, capsys, no_ray):
    config = tmp_path / "config.yaml"
    config.write_text(f"dataset: {pendulum_dir}\nmethod: aca-papr\n")
    assert main(["run", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    assert "'aca-paper'" in _error_line(capsys.readouterr().err)
