"""The console: a stage's progress as plain periodic lines off a terminal, a rich bar on one; Ray's switches."""

from __future__ import annotations

import io
import logging

from rllib_o2o.console import Console, ray_init_options


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_off_a_terminal_progress_is_a_line_per_tenth_a_minute_and_the_end():
    stream, clock = io.StringIO(), Clock()
    console = Console(stream, clock=clock)
    assert not console.interactive  # a StringIO is no terminal, like the log of `ray job submit`
    with console.progress("online", 1000, "env steps") as bar:
        bar.start(200)  # resumed: rate and ETA count this invocation's steps only
        for done in range(250, 951, 50):
            clock.now += 1.0
            bar.update(done, f"return {done}")
        clock.now += 60.0  # a slow update is shown whatever its step
        bar.update(960, "slow")
        bar.update(1000, "done")
    console.saved("online", "/run/online", "aca")
    lines = stream.getvalue().splitlines()
    assert [line.split(" ", 2)[1] for line in lines[:-1]] == [
        "250/1000", "300/1000", "400/1000", "500/1000", "600/1000", "700/1000", "800/1000", "900/1000",
        "960/1000", "1000/1000"]
    assert lines[0] == "online 250/1000 env steps (50.0/s, ETA 0:00:15): return 250"
    assert lines[-2].startswith("online 1000/1000 env steps (") and lines[-2].endswith("ETA 0:00:00): done")
    assert lines[-1] == "online: saved /run/online (aca)"


def test_a_first_update_without_progress_has_no_rate_and_a_line_goes_above_a_live_bar():
    stream = io.StringIO()
    console = Console(stream, interactive=True)  # rich, as on a terminal
    with console.progress("offline", 200, "updates") as bar:
        bar.start(0)
        bar.update(0, "starting")
        console.line("offline stage: resumed at iteration 0")
        bar.update(200, "q 1")
    text = stream.getvalue()
    assert text.startswith("offline stage: resumed at iteration 0\n")  # above the bar, which stays at the end
    assert "200/200 updates" in text and "ETA 0:00:00 q 1" in text
    plain = io.StringIO()
    with Console(plain).progress("online", 600, "env steps") as bar:
        bar.start(0)
        bar.update(0, "return -1053.0 (aca, aligned start)")
    assert plain.getvalue() == "online 0/600 env steps: return -1053.0 (aca, aligned start)\n"


def test_ray_is_quiet_unless_verbose():
    assert ray_init_options(verbose=False) == {"logging_level": logging.ERROR, "log_to_driver": False}
    assert ray_init_options(verbose=True) == {}
