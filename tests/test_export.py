"""Exporting a run's actor, loading it back and evaluating it: files, values, errors; no Ray, no training.

The run directory is built the way the stages write it: module checkpoints with
`save_module_checkpoint`, the online checkpoint as RLlib's pickled module state
under `algo/` plus progress.json and the manifest.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import subprocess
import sys
from collections import OrderedDict
from dataclasses import asdict

import numpy as np
import pytest
import torch

from rllib_o2o.checkpoints import (
    CheckpointError,
    save_module_checkpoint,
    write_json_atomic,
    write_manifest,
)
from rllib_o2o.cli import main
from rllib_o2o.export import (
    ACTOR_FILE,
    POLICY_FILE,
    RLLIB_STATE_FILE,
    evaluate,
    export_policy,
    load_policy,
)
from rllib_o2o.networks import TanhGaussianActor
from rllib_o2o.pipeline import PipelineConfig
from rllib_o2o.policy import ActorPolicy
from rllib_o2o.policy_import import RLLIB_MODULE_SUBDIR
from rllib_o2o.rundir.names import (
    ALGO_DIR,
    CHECKPOINT_DIR,
    DONE_FILE,
    PREVIOUS_DIR,
    PROGRESS_FILE,
)

ENV, OBS, ACT, HIDDEN = "Pendulum-v1", 3, 1, [16, 8]
LOW, HIGH = -2.0, 2.0  # Pendulum-v1's torque bounds
ACTIVATION = "tanh"  # not the default, so the export must carry it from the run's modules
ONLINE_STEPS, OFFLINE_UPDATES = 2_000, 300


def _actor_weights(seed: int) -> dict:
    """A TanhGaussianActor's state as module weights (`actor.*`), with a head big enough to saturate."""
    torch.manual_seed(seed)
    actor = TanhGaussianActor(OBS, ACT, HIDDEN, ACTIVATION)
    return {f"actor.{k}": v.numpy() * 3 for k, v in actor.state_dict().items()}


def _write_online_checkpoint(path, weights: dict, env_steps: int) -> None:
    """What `StageDir.save_checkpoint` commits: RLlib's pickled RLModule state under algo/, progress, manifest."""
    state_dir = path / ALGO_DIR / RLLIB_MODULE_SUBDIR
    state_dir.mkdir(parents=True)
    pi0 = {f"ref_{k}": v for k, v in weights.items()}
    state = OrderedDict(log_alpha=0.1, num_updates=env_steps, **weights, **pi0)
    (state_dir / RLLIB_STATE_FILE).write_bytes(pickle.dumps(state))  # as RLlib's save_to_path pickles it
    (path / PROGRESS_FILE).write_text(json.dumps({"iteration": 2, "curve": [], "env_steps": env_steps}))
    write_manifest(path)


@pytest.fixture
def run_dir(tmp_path):
    """A finished aca run: offline module, aligned module (pi0 unchanged), online checkpoints."""
    run = tmp_path / "run"
    cfg = PipelineConfig(env=ENV, out=str(run), hidden=HIDDEN, ref_min_score=-1230.0, ref_max_score=-150.0,
                         max_episode_steps=20, method="aca")
    write_json_atomic(run / "config.json", asdict(cfg))
    offline = _actor_weights(0)
    critic = {"critic.weights.0": np.zeros((2, OBS + ACT, 4), np.float32), "log_alpha": np.zeros((), np.float32),
              "target_critic.weights.0": np.zeros((2, OBS + ACT, 4), np.float32), "num_updates": np.array(300)}
    meta = {"env_id": ENV, "obs_dim": OBS, "act_dim": ACT, "hidden": HIDDEN, "actor_activation": ACTIVATION}
    save_module_checkpoint(run / "offline" / "module", {**offline, **critic},
                           {**meta, "stage": "offline", "alpha_off": 0.2})
    write_json_atomic(run / "offline" / DONE_FILE, {"updates": OFFLINE_UPDATES})
    save_module_checkpoint(run / "alignment" / "module", offline, {**meta, "stage": "aligned"})
    _write_online_checkpoint(run / "online" / PREVIOUS_DIR, _actor_weights(1), ONLINE_STEPS // 2)
    _write_online_checkpoint(run / "online" / CHECKPOINT_DIR, _actor_weights(2), ONLINE_STEPS)
    return run


def _mean_action_by_hand(weights: dict, obs: np.ndarray) -> np.ndarray:
    """tanh MLP -> head -> mean half -> tanh -> env units, in numpy."""
    h = obs.astype(np.float64)
    for i in range(len(HIDDEN)):
        h = np.tanh(h @ weights[f"actor.trunk.{2 * i}.weight"].T + weights[f"actor.trunk.{2 * i}.bias"])
    mean = (h @ weights["actor.head.weight"].T + weights["actor.head.bias"])[..., :ACT]
    return LOW + (np.tanh(mean) + 1.0) * 0.5 * (HIGH - LOW)


# ---------------------------------------------------------------- export


def test_export_writes_the_newest_online_actor_and_its_config(run_dir, tmp_path, no_ray):
    out = tmp_path / "policy"
    spec = export_policy(run_dir, out)

    assert sorted(p.name for p in out.iterdir()) == sorted([ACTOR_FILE, POLICY_FILE])
    tensors = torch.load(out / ACTOR_FILE, weights_only=True)
    expected = {k[len("actor."):]: v for k, v in _actor_weights(2).items()}
    assert sorted(tensors) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(tensors[key].numpy(), value)
    written = json.loads((out / POLICY_FILE).read_text())
    assert written == asdict(spec)
    assert written | {"source_run": None, "source_checkpoint": None} == {
        "obs_dim": OBS, "act_dim": ACT, "hidden": HIDDEN, "activation": ACTIVATION, "action_low": [LOW],
        "action_high": [HIGH], "env_id": ENV, "max_episode_steps": 20, "reference_scores": [-1230.0, -150.0],
        "source_run": None, "source_stage": "online", "source_method": "aca", "source_checkpoint": None,
        "step": ONLINE_STEPS, "step_unit": "env_steps", "format_version": 1}
    assert written["source_checkpoint"] == str((run_dir / "online" / CHECKPOINT_DIR).resolve())


def test_export_offline_stage_and_the_default_without_an_online_checkpoint(run_dir, tmp_path):
    spec = export_policy(run_dir, tmp_path / "pi0", stage="offline")
    assert (spec.source_stage, spec.step, spec.step_unit) == ("offline", OFFLINE_UPDATES, "updates")
    tensors = torch.load(tmp_path / "pi0" / ACTOR_FILE, weights_only=True)
    np.testing.assert_array_equal(tensors["head.weight"].numpy(), _actor_weights(0)["actor.head.weight"])

    for name in (CHECKPOINT_DIR, PREVIOUS_DIR):  # online stage not started yet: pi0 is what there is
        shutil.rmtree(run_dir / "online" / name)
    assert export_policy(run_dir, tmp_path / "default").source_stage == "offline"
    with pytest.raises(ValueError, match="no committed checkpoint to export"):
        export_policy(run_dir, tmp_path / "online", stage="online")


def test_export_falls_back_to_the_previous_checkpoint_when_the_newest_is_damaged(run_dir, tmp_path, capsys):
    state = run_dir / "online" / CHECKPOINT_DIR / ALGO_DIR / RLLIB_MODULE_SUBDIR / RLLIB_STATE_FILE
    state.write_bytes(state.read_bytes()[:-10])
    spec = export_policy(run_dir, tmp_path / "policy")
    assert spec.step == ONLINE_STEPS // 2
    assert spec.source_checkpoint.endswith(PREVIOUS_DIR)
    assert "WARNING" in capsys.readouterr().err


def test_export_another_method_of_the_run_dir(run_dir, tmp_path):
    _write_online_checkpoint(run_dir / "online-naive" / CHECKPOINT_DIR, _actor_weights(3), 500)
    spec = export_policy(run_dir, tmp_path / "naive", method="naive")
    assert (spec.source_method, spec.step) == ("naive", 500)
    assert spec.activation == ACTIVATION  # naive starts from the offline module as is
    with pytest.raises(ValueError, match="unknown method"):
        export_policy(run_dir, tmp_path / "nope", method="nope")


# ---------------------------------------------------------------- load_policy


def test_loaded_policy_acts_as_the_actor_by_hand_and_as_actor_policy(run_dir, tmp_path):
    export_policy(run_dir, tmp_path / "policy")
    policy = load_policy(tmp_path / "policy")
    weights = _actor_weights(2)
    obs = np.random.default_rng(0).normal(size=(5, OBS)).astype(np.float32)

    batch = policy.act(obs)
    assert batch.shape == (5, ACT)
    np.testing.assert_allclose(batch, _mean_action_by_hand(weights, obs), atol=1e-5)
    reference = ActorPolicy.from_module_weights(weights, obs_dim=OBS, act_dim=ACT, hidden=HIDDEN, low=[LOW],
                                                high=[HIGH], activation=ACTIVATION)
    np.testing.assert_array_equal(batch, reference(obs))
    single = policy.act(obs[0])
    assert single.shape == (ACT,)
    np.testing.assert_allclose(single, batch[0], atol=1e-6)
    assert policy(obs[0]).shape == (ACT,)  # callable: a Policy for rllib_o2o.data.rollouts
    with pytest.raises(ValueError, match=r"expected observations of shape \[3\] or \[B, 3\]"):
        policy.act(np.zeros(OBS + 1))


def test_actions_stay_inside_the_env_bounds_and_sampling_is_seeded(run_dir, tmp_path):
    export_policy(run_dir, tmp_path / "policy")
    obs = np.random.default_rng(1).normal(scale=50.0, size=(200, OBS))  # far outside the data: saturates
    for policy in (load_policy(tmp_path / "policy"), load_policy(tmp_path / "policy", stochastic=True, seed=3)):
        actions = policy.act(obs)
        assert actions.min() >= LOW and actions.max() <= HIGH
    first = load_policy(tmp_path / "policy", stochastic=True, seed=3).act(obs[:20])
    again = load_policy(tmp_path / "policy", stochastic=True, seed=3).act(obs[:20])
    np.testing.assert_array_equal(first, again)
    mean = load_policy(tmp_path / "policy").act(obs[:20])
    assert not np.allclose(first, mean)


def test_evaluate_one_short_pendulum_episode(run_dir, tmp_path):
    export_policy(run_dir, tmp_path / "policy")
    result = evaluate(load_policy(tmp_path / "policy"), episodes=1, seed=0)
    assert result["env_id"] == ENV and result["max_episode_steps"] == 20  # the run's time limit
    assert len(result["returns"]) == 1 and math.isfinite(result["mean_return"])
    assert result["std_return"] == 0.0
    assert result["reference_scores"] == [-1230.0, -150.0]
    assert result["score"] == pytest.approx(100 * (result["mean_return"] + 1230.0) / 1080.0)


# ---------------------------------------------------------------- the command line


def test_cli_export_then_evaluate_without_ray(run_dir, tmp_path, capsys, no_ray):
    out, report = tmp_path / "policy", tmp_path / "eval.json"
    assert main(["export", str(run_dir), "--out", str(out)]) == 0
    assert "exported the aca online actor (2000 env_steps" in capsys.readouterr().out
    assert main(["export", str(run_dir), "--out", str(out), "--stage", "offline", "--overwrite"]) == 0
    assert json.loads((out / POLICY_FILE).read_text())["source_stage"] == "offline"

    code = ("import sys; from rllib_o2o.cli import main; rc = main(sys.argv[1:]); "
            "assert 'ray' not in sys.modules, 'evaluate imported Ray'; sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, "evaluate", str(out), "--episodes", "1",
                           "--max-episode-steps", "10", "--json", str(report)],
                          check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Pendulum-v1: 1 episode(s), return" in proc.stdout and "normalised score" in proc.stdout
    written = json.loads(report.read_text())
    assert written["max_episode_steps"] == 10 and math.isfinite(written["mean_return"])


def test_help_lists_export_and_evaluate(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "export" in out and "evaluate" in out


# ---------------------------------------------------------------- errors


def test_not_a_run_and_nothing_to_export(tmp_path):
    with pytest.raises(ValueError, match="not a run directory .*expected config.json"):
        export_policy(tmp_path / "missing", tmp_path / "out")
    empty = tmp_path / "bench" / "pendulum-medium" / "seed0"  # a run whose stages have not written anything yet
    write_json_atomic(empty / "config.json", asdict(PipelineConfig(env=ENV, out=str(empty))))
    with pytest.raises(ValueError, match="benchmark directory: pass one of its runs, e.g. .*seed0"):
        export_policy(tmp_path / "bench", tmp_path / "out")
    with pytest.raises(ValueError, match="nothing to export"):
        export_policy(empty, tmp_path / "out")
    with pytest.raises(ValueError, match="method 'sac-scratch' has no offline stage"):
        export_policy(empty, tmp_path / "out", method="sac-scratch", stage="offline")
    with pytest.raises(ValueError, match="online-sac-scratch: no committed checkpoint"):
        export_policy(empty, tmp_path / "out", method="sac-scratch")
    assert not (tmp_path / "out").exists()


def test_damaged_checkpoints_are_refused(run_dir, tmp_path):
    shutil.rmtree(run_dir / "online" / PREVIOUS_DIR)
    ckpt = run_dir / "online" / CHECKPOINT_DIR
    state = ckpt / ALGO_DIR / RLLIB_MODULE_SUBDIR / RLLIB_STATE_FILE
    original = state.read_bytes()
    state.write_bytes(original[:100])
    with pytest.raises(CheckpointError, match="truncated or damaged"):
        export_policy(run_dir, tmp_path / "out")

    class Exploit:  # a state file that would run code when unpickled: refused even with a matching manifest
        def __reduce__(self):  # os.getcwd, not print: Ray replaces builtins.print once tqdm_ray is imported
            return (os.getcwd, ())

    state.write_bytes(pickle.dumps({"actor.head.weight": Exploit()}))
    write_manifest(ckpt)
    with pytest.raises(CheckpointError, match=f"refused {os.getcwd.__module__}.getcwd"):
        export_policy(run_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_corrupt_or_foreign_exports_are_refused(run_dir, tmp_path):
    with pytest.raises(ValueError, match="not an exported policy"):
        load_policy(run_dir)
    out = tmp_path / "policy"
    export_policy(run_dir, out)
    actor = (out / ACTOR_FILE).read_bytes()
    (out / ACTOR_FILE).write_bytes(actor[: len(actor) // 2])
    with pytest.raises(ValueError, match="unreadable or not the actor"):
        load_policy(out)
    torch.save({"head.weight": torch.zeros(2, 2)}, out / ACTOR_FILE)  # a tensor file of another network
    with pytest.raises(ValueError, match="unreadable or not the actor"):
        load_policy(out)
    spec = json.loads((out / POLICY_FILE).read_text())
    (out / POLICY_FILE).write_text(json.dumps({**spec, "format_version": 99}))
    with pytest.raises(ValueError, match="format_version 99"):
        load_policy(out)


def test_export_never_replaces_what_is_not_an_export(run_dir, tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="already exists"):
        export_policy(run_dir, taken)
    with pytest.raises(ValueError, match="is not an exported policy"):
        export_policy(run_dir, taken, overwrite=True)
    assert (taken / "notes.txt").read_text() == "mine"
    assert main(["export", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("rllib-o2o export: error: ") and "not a run directory" in err[0]
