"""Live metrics: TensorBoard event files per stage (live, resumable), W&B only when asked for."""

from __future__ import annotations

import importlib.abc
import sys
import types

import pytest

from rllib_o2o.metrics_log import (
    EVAL_RETURN,
    LEARNER_PREFIX,
    TENSORBOARD_DIR,
    Z_LOSS,
    MetricsLog,
    learner_scalars,
    require_wandb,
)
from tests.tensorboard_events import scalars


class _RecordsImports(importlib.abc.MetaPathFinder):
    """Records every attempt to import a top-level module (and lets the normal finders do the rest)."""

    def __init__(self):
        self.names = []

    def find_spec(self, name, path=None, target=None):  # no spec: the next finders decide
        self.names.append(name.split(".")[0])


def test_stage_metrics_are_on_disk_as_they_are_logged(tmp_path):
    finder = _RecordsImports()
    sys.meta_path.insert(0, finder)
    try:
        metrics = MetricsLog()  # no W&B project
        with metrics.stage(tmp_path / "online", None) as log:
            log.log(0, {EVAL_RETURN: -1053.0, "eval/score": None})  # a score without reference scores: left out
            log.log(200, {EVAL_RETURN: -1026.0, **learner_scalars({"alpha": 0.9, "kl_to_reference": 0.01,
                                                                   "num_updates_lifetime": 144, "ok": True})})
            live = scalars(tmp_path / "online" / TENSORBOARD_DIR)  # before the writer is closed
        metrics.close()
    finally:
        sys.meta_path.remove(finder)
    assert live[EVAL_RETURN] == [(0, -1053.0), (200, -1026.0)]
    assert set(live) == {EVAL_RETURN, LEARNER_PREFIX + "alpha", LEARNER_PREFIX + "kl_to_reference",
                         LEARNER_PREFIX + "num_updates_lifetime"}
    assert "wandb" not in finder.names and "wandb" not in sys.modules


def test_a_resumed_stage_appends_and_its_redone_steps_appear_once(tmp_path):
    stage = tmp_path / "offline"
    with MetricsLog().stage(stage, None) as log:  # killed after logging 300, its checkpoint holds 200
        for step, value in ((100, 1.0), (200, 2.0), (300, 3.0)):
            log.log(step, {EVAL_RETURN: value})
    with MetricsLog().stage(stage, 200) as log:  # resumed from that checkpoint: 300 is redone
        for step, value in ((300, 3.5), (400, 4.0)):
            log.log(step, {EVAL_RETURN: value})
    assert len(list((stage / TENSORBOARD_DIR).glob("events.out.tfevents.*"))) == 2
    assert scalars(stage / TENSORBOARD_DIR)[EVAL_RETURN] == [(100, 1.0), (200, 2.0), (300, 3.5), (400, 4.0)]


def test_asking_for_wandb_without_it_fails_before_anything_starts(tmp_path, pendulum_dir, no_ray, capsys):
    if "wandb" in sys.modules or importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    from rllib_o2o.cli import main

    with pytest.raises(ValueError, match="wandb is not installed; pip install wandb"):
        require_wandb("o2o")
    require_wandb(None)  # nothing asked for: nothing checked
    out = tmp_path / "run"
    assert main(["run", "--dataset", str(pendulum_dir), "--out", str(out), "--wandb-project", "o2o"]) == 2
    err = capsys.readouterr().err
    assert "rllib-o2o run: error: wandb_project 'o2o': wandb is not installed" in err, err
    assert not out.exists()


def test_wandb_gets_the_same_scalars_per_stage(tmp_path, monkeypatch):
    """With a (fake) wandb: one run, resumable by id, each stage's scalars against its own step."""
    calls = []

    class Run:
        def define_metric(self, name, **kwargs):
            calls.append(("define_metric", name, kwargs))

        def log(self, data):
            calls.append(("log", data))

        def finish(self):
            calls.append(("finish",))

    def init(**kwargs):
        calls.append(("init", kwargs))
        return Run()

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init, __spec__=object()))
    metrics = MetricsLog("o2o", run_name="run-aca", run_id="abc", run_dir=tmp_path, config={"seed": 0})
    with metrics.stage(tmp_path / "alignment", None) as log:
        log.log(500, {Z_LOSS: 2.0})
    metrics.close()
    assert calls[0] == ("init", {"project": "o2o", "name": "run-aca", "id": "abc", "resume": "allow",
                                 "dir": str(tmp_path), "config": {"seed": 0}})
    assert ("define_metric", "alignment/*", {"step_metric": "alignment/step"}) in calls
    assert ("log", {"alignment/step": 500, "alignment/z_fit/z_loss": 2.0}) in calls
    assert calls[-1] == ("finish",)
