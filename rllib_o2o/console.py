"""What a run prints: one progress bar per stage, one line per saved output, Ray's own logs when asked.

On a terminal a stage is a rich progress bar (done/total, rate, ETA, the latest metrics).
Elsewhere (`ray job submit` logs, CI) the same information is a plain line at the first
update, at each tenth of the stage, at least once a minute while updates come, and at the
end. Ray, Ray Data, RLlib and Tune are quietened with their own switches (`quiet_libraries`,
`ray_init_options`): their INFO and WARNING output is off, errors still show; `verbose`
leaves them as the libraries set them.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import TextIO

# Where the noise comes from: Ray's start-up notices, Ray Data's execution plans and progress
# logs, RLlib's "You are running SAC on the new API stack!", Tune's "Install gputil".
RAY_LOGGERS = ("ray", "ray.data", "ray.rllib", "ray.tune")
PLAIN_FRACTION = 0.1  # without a terminal: a line per tenth of a stage...
PLAIN_EVERY_S = 60.0  # ...and at least one a minute while updates come


def ray_init_options(verbose: bool) -> dict:
    """`ray.init` arguments: unless `verbose`, the driver's "ray" logger at ERROR and the workers'
    output not forwarded (their errors still reach the driver, as the exceptions they raise)."""
    return {} if verbose else {"logging_level": logging.ERROR, "log_to_driver": False}


def quiet_libraries(verbose: bool) -> None:
    """Ray Data's progress bars and execution logs off, and Ray's, Ray Data's, RLlib's and Tune's
    loggers at ERROR, in this process; nothing changes when `verbose`."""
    if verbose:
        return
    import ray.data  # applies Ray Data's logging config: the levels below must come after it

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    for name in RAY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


class Console:
    """Where a run's messages go: `line` for one-off messages, `saved` once an output is written,
    `progress` for a stage's bar (plain lines when `stream` is not a terminal)."""

    def __init__(self, stream: TextIO | None = None, *, interactive: bool | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.stream = stream or sys.stdout
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.clock = clock
        self._live = None  # the rich Progress on screen, which other output must go above

    def line(self, text: str) -> None:
        if self._live is not None:
            self._live.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            print(text, file=self.stream, flush=True)

    def saved(self, what: str, path, detail: str = "") -> None:
        self.line(f"{what}: saved {path}" + (f" ({detail})" if detail else ""))

    def progress(self, label: str, total: int, unit: str) -> StageProgress:
        return StageProgress(self, label, total, unit)


class StageProgress:
    """One stage's progress, a context manager (the bar lives inside it). `start(done)` marks where
    this invocation begins (a resumed stage is part done: rate and ETA count from there);
    `update(done, info)` after each piece of work."""

    def __init__(self, console: Console, label: str, total: int, unit: str):
        self.console, self.label, self.total, self.unit = console, label, total, unit
        self._origin = (console.clock(), 0)
        self._last_line: tuple[float, int] | None = None  # (time, done) of the last plain line
        self._bar = self._task = None

    def __enter__(self):
        if self.console.interactive:
            from rich.console import Console as RichConsole
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
            )
            from rich.table import Column

            def fixed(text: str) -> TextColumn:
                return TextColumn(text, table_column=Column(no_wrap=True))

            # The metrics take what the terminal has left, cut with an ellipsis; the rest keeps its width.
            self._bar = Progress(
                fixed("{task.description}"), BarColumn(bar_width=20), MofNCompleteColumn(),
                fixed("{task.fields[unit]} {task.fields[rate]} {task.fields[eta]}"),
                TextColumn("{task.fields[info]}", table_column=Column(ratio=1, no_wrap=True, overflow="ellipsis")),
                console=RichConsole(file=self.console.stream), refresh_per_second=2, expand=True)
            self._task = self._bar.add_task(self.label, total=self.total, unit=self.unit, rate="", eta="", info="")
            self._bar.start()
            self.console._live = self._bar
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()
            self.console._live = None

    def start(self, done: int) -> None:
        self._origin = (self.console.clock(), done)
        if self._bar is not None:
            self._bar.update(self._task, completed=done)

    def update(self, done: int, info: str = "") -> None:
        now = self.console.clock()
        rate, eta = self._rate_and_eta(now, done)
        if self._bar is not None:
            self._bar.update(self._task, completed=done, rate=rate, eta=eta and f"ETA {eta}", info=info)
        elif self._plain_line_due(now, done):
            timing = f" ({rate}, ETA {eta})" if rate else ""
            self.console.line(f"{self.label} {done}/{self.total} {self.unit}{timing}" + (f": {info}" if info else ""))
            self._last_line = (now, done)

    def _rate_and_eta(self, now: float, done: int) -> tuple[str, str]:
        """This invocation's mean rate and the time left at that rate ("" before any progress)."""
        start, first = self._origin
        if done <= first or now <= start:
            return "", ""
        rate = (done - first) / (now - start)
        seconds = int(max(self.total - done, 0) / rate)
        return f"{rate:.1f}/s", f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"

    def _plain_line_due(self, now: float, done: int) -> bool:
        if self._last_line is None or done >= self.total:
            return True
        last_time, last_done = self._last_line
        step = max(self.total * PLAIN_FRACTION, 1)
        return done // step > last_done // step or now - last_time >= PLAIN_EVERY_S
