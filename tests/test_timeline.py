"""Sleep, a frozen recorder and wall-clock jumps break the timeline into a new session.

The machine cannot be suspended and the system clock must not be set in a
test, so :class:`TimelineWatch` is first tested on simulated clocks (the
tests say so in their names); a recorder really frozen with SIGSTOP, on a
real PulseAudio server, shows the whole path.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
import time

from pipeline.archive import Archive
from pipeline.capture import record_session
from pipeline.config import Home
from pipeline.database import open_archive, open_database
from pipeline.index import Indexer
from pipeline.messages import SessionEnded
from pipeline.sources import SourceSpec
from pipeline.sources.live import SLEEP_SECONDS, TimelineWatch, read_clocks
from pipeline.status import collect

from .conftest import SHORT
from .test_record import (
    events,
    finish,
    found_at,
    heard_when_played,
    start_record,
    wait_until_recording,
)
from .test_supervisor import wait_for_children


class SimulatedClocks:
    """(monotonic, suspend-counting, wall) clocks that a test moves by hand."""

    def __init__(self) -> None:
        self.mono, self.boot, self.wall = 100.0, 100.0, 1_800_000_000.0

    def __call__(self) -> tuple[float, float, float]:
        return self.mono, self.boot, self.wall

    def tick(self, seconds: float, *, asleep: float = 0.0, wall_step: float = 0.0) -> None:
        self.mono += seconds
        self.boot += seconds + asleep
        self.wall += seconds + asleep + wall_step


def test_simulated_clock_steady_ticks_break_nothing():
    clocks = SimulatedClocks()
    watch = TimelineWatch(clocks)
    for _ in range(50):
        clocks.tick(0.1)
        assert watch.check() is None


def test_simulated_clock_suspend_on_linux_is_sleep():
    clocks = SimulatedClocks()
    watch = TimelineWatch(clocks)
    clocks.tick(0.1, asleep=3600)  # the monotonic clock stood still for the hour
    event = watch.check()
    assert event.kind == "sleep" and "3600 s" in event.detail


def test_simulated_clock_stall_with_audio_missing_is_sleep():
    """Where monotonic counts sleep (Windows), or the process was stopped."""
    clocks = SimulatedClocks()
    watch = TimelineWatch(clocks)
    clocks.tick(SLEEP_SECONDS + 5)
    assert watch.check() is None and watch.stalled == SLEEP_SECONDS + 5
    assert watch.frozen(missing_seconds=SLEEP_SECONDS + 4.7).kind == "sleep"


def test_simulated_clock_stall_whose_audio_arrives_late_is_a_slow_loop_not_sleep():
    clocks = SimulatedClocks()
    watch = TimelineWatch(clocks)
    clocks.tick(SLEEP_SECONDS + 5)  # the sound server kept the audio meanwhile
    watch.check()
    assert watch.frozen(missing_seconds=0.4) is None
    clocks.tick(0.1)
    watch.check()
    assert watch.frozen(missing_seconds=SLEEP_SECONDS + 1) is None  # no stall: a silent device


def test_simulated_clock_wall_clock_steps_are_clock_breaks():
    clocks = SimulatedClocks()
    watch = TimelineWatch(clocks)
    clocks.tick(0.1, wall_step=300)
    assert watch.check().detail == "the wall clock jumped +300 s"
    clocks.tick(0.1, wall_step=-7)
    assert watch.check().kind == "clock"
    clocks.tick(0.1, wall_step=0.05)  # NTP slewing: not a break
    assert watch.check() is None


def test_a_frozen_capture_takes_what_the_sound_server_kept_and_keeps_times_true(pulse, tmp_path):
    """A stopped capture process is a stall, not sleep: PulseAudio keeps its audio meanwhile."""
    proc = start_record(tmp_path, "--duration", "24")
    wait_until_recording(pulse)
    first = pulse.play(SHORT)
    capture = wait_for_children(proc.pid)["pipe-capture"]
    os.kill(capture, signal.SIGSTOP)
    second = pulse.play(SHORT)  # played while capture is frozen
    time.sleep(SLEEP_SECONDS + 1)
    os.kill(capture, signal.SIGCONT)
    finish(proc, timeout=90)

    [session] = Archive(tmp_path).sessions()
    assert session.seconds == 24.0
    hits = found_at(tmp_path, "train to london")
    assert len(hits) == 2
    for hit, began in zip(hits, (first, second), strict=True):
        assert heard_when_played(hit, began)
    assert not [e for e in events(tmp_path) if e[2] > 1.0]  # no gap, no break


class SuspendableClocks:
    """The real clocks, plus suspend time a test adds (a machine cannot sleep in a test)."""

    def __init__(self) -> None:
        self.slept = 0.0

    def __call__(self) -> tuple[float, float, float]:
        mono, boot, wall = read_clocks()
        return mono, boot + self.slept, wall + self.slept


def test_simulated_clock_sleep_splits_a_real_recording_into_two_sessions(pulse, tmp_path):
    """A real PulseAudio stream and the real capture loop; only the suspend is simulated."""
    home = Home(tmp_path).ensure()
    open_archive(home).dispose()
    source = SourceSpec("system").open()
    clocks = SuspendableClocks()
    source.watch = TimelineWatch(clocks)
    audio_q, index_q = queue.Queue(), queue.Queue()
    threading.Timer(3.0, lambda: setattr(clocks, "slept", 3600.0)).start()
    record_session(source, home.recordings, audio_q, index_q, segment_seconds=300, max_seconds=6)
    engine = open_database(home)
    ended = [m for m in audio_q.queue if isinstance(m, SessionEnded)]  # (via a recognizer)
    Indexer(engine).write([*index_q.queue, *ended])
    engine.dispose()

    second, first = Archive(tmp_path).sessions()  # newest first
    assert first.status == second.status == "complete"
    assert 2.0 < first.seconds < 4.0 and first.seconds + second.seconds == 6.0
    [sleep] = [e for e in events(tmp_path) if e[0] == "sleep"]
    assert sleep[1] == "the machine slept for 3600 s" and sleep[2] == 0.0
    [gap] = [g for g in collect(home).gaps if g.reason.startswith("sleep")]
    assert gap.seconds < 1.0  # (the wall clock did not really move on an hour)
