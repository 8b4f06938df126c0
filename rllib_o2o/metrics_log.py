"""Live training metrics: TensorBoard event files in each stage's directory, and W&B when asked for.

A stage writes STAGE_DIR/tensorboard/ as it trains, each iteration flushed, so
`tensorboard --logdir RUN_DIR` follows a run live. Each invocation adds its own event file;
its first event purges the steps after the checkpoint it resumed from, so the
iterations a resumed stage redoes appear once. The tags are the constants below. With a
W&B project the same scalars, prefixed by the stage directory's name, go to one W&B run
per run directory and method, which a resumed run appends to; wandb is imported only then.
"""

from __future__ import annotations

import importlib.util
import numbers
import os
import time
from pathlib import Path

TENSORBOARD_DIR = "tensorboard"
EVAL_RETURN = "eval/return"  # mean evaluation return (mean action)
EVAL_SCORE = "eval/score"  # its normalised score, when the run has reference scores
LEARNER_PREFIX = "learner/"  # + each numeric learner result: losses, alpha, w, the online diagnostics
Z_LOSS = "z_fit/z_loss"  # mean L_Z since the previous point
HELDOUT_RESIDUAL = "z_fit/heldout_residual"  # Z's Bellman residual on held-out transitions


def require_wandb(project: str | None) -> None:
    """Raises ValueError when a W&B project is asked for but wandb is not installed (nothing imported)."""
    if project and importlib.util.find_spec("wandb") is None:
        raise ValueError(f"wandb_project {project!r}: wandb is not installed; pip install wandb "
                         "(or rllib-o2o[wandb]), or run without --wandb-project")


def learner_scalars(learner: dict) -> dict[str, float]:
    """The learner's numeric results as `learner/<name>` scalars."""
    return {LEARNER_PREFIX + k: float(v) for k, v in learner.items()
            if isinstance(v, numbers.Real) and not isinstance(v, bool)}


class MetricsLog:
    """A run's metrics writers: `stage(stage_dir, resumed_at)` for each stage that trains, `close()` at the end."""

    def __init__(self, wandb_project: str | None = None, *, run_name: str | None = None, run_id: str | None = None,
                 run_dir: Path | None = None, config: dict | None = None):
        self._wandb = None
        if wandb_project:
            require_wandb(wandb_project)
            import wandb

            self._wandb = wandb.init(project=wandb_project, name=run_name, id=run_id, resume="allow",
                                     dir=None if run_dir is None else str(run_dir), config=config)

    def stage(self, stage_dir: Path, resumed_at: int | None) -> StageMetrics:
        """The writer of one stage; `resumed_at`: the last step of the checkpoint it resumed from
        (None: a fresh start, whose steps replace any an earlier, killed attempt wrote)."""
        if self._wandb is not None:
            self._wandb.define_metric(f"{stage_dir.name}/step")
            self._wandb.define_metric(f"{stage_dir.name}/*", step_metric=f"{stage_dir.name}/step")
        return StageMetrics(stage_dir, 0 if resumed_at is None else resumed_at + 1, self._wandb)

    def close(self) -> None:
        if self._wandb is not None:
            self._wandb.finish()


class StageMetrics:
    """Scalars of one stage against its own step (offline updates, Z steps, online env steps).

    Written with tensorboardX's synchronous EventsWriter (its SummaryWriter queues events
    for a thread, so a flush does not put them on disk), one event per `log`, flushed.
    """

    def __init__(self, stage_dir: Path, purge_step: int, wandb_run=None):
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto.event_pb2 import Event, SessionLog

        self.name = Path(stage_dir).name
        log_dir = Path(stage_dir) / TENSORBOARD_DIR
        log_dir.mkdir(parents=True, exist_ok=True)
        # tensorboardX names a file by the second it opened it: writers opened within one second would
        # share (truncate) it. Nanoseconds keep names unique and in order (TensorBoard reads by name).
        self._events = EventsWriter(str(log_dir / "events"), filename_suffix=f".{time.time_ns()}.{os.getpid()}")
        # TensorBoard drops what earlier files logged at steps >= purge_step (a resumed stage's redone steps).
        self._write(Event(step=purge_step, session_log=SessionLog(status=SessionLog.START)))
        self._wandb = wandb_run

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._events.close()

    def log(self, step: int, scalars: dict) -> None:
        """Writes the scalars that have a value (a score without reference scores is None)."""
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.proto.summary_pb2 import Summary

        values = {tag: float(value) for tag, value in scalars.items() if value is not None}
        self._write(Event(step=step, summary=Summary(value=[Summary.Value(tag=tag, simple_value=value)
                                                            for tag, value in values.items()])))
        if self._wandb is not None:
            self._wandb.log({f"{self.name}/step": step, **{f"{self.name}/{tag}": v for tag, v in values.items()}})

    def _write(self, event) -> None:
        event.wall_time = time.time()
        self._events.write_event(event)
        self._events.flush()
