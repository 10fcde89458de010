"""The supervisor and its real child processes: stopping, signals, a child that dies."""

from __future__ import annotations

import contextlib
import os
import pty
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import soundfile as sf

from pipeline.archive import Archive
from pipeline.errors import Interrupted, ProcessDiedError

from .conftest import MEETING, assert_each_sentence_once_in_place, segment_files, sentences

PIPELINE = [sys.executable, "-m", "pipeline"]


INGEST_ARGS = ["ingest", "--realtime", "--segment-seconds", "5", str(MEETING)]


def start_ingest(home: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*PIPELINE, *INGEST_ARGS, "--home", str(home), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def children(pid: int) -> dict[str, int]:
    """The pipeline children of ``pid`` by the name each gives itself."""
    out = subprocess.run(
        ["ps", "-o", "pid=,comm=", "--ppid", str(pid)], capture_output=True, text=True
    ).stdout
    return {name: int(p) for p, name in (line.split() for line in out.splitlines())}


def wait_for_children(pid: int, timeout: float = 20.0) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = children(pid)
        if {"pipe-capture", "pipe-recognizer", "pipe-indexer"} <= found.keys():
            return found
        time.sleep(0.1)
    raise AssertionError(f"children never started: {children(pid)}")


def test_children_are_three_named_processes_that_exit_with_the_run(tmp_path):
    proc = start_ingest(tmp_path)
    kids = wait_for_children(proc.pid)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == Interrupted.exit_code
    for name in ("pipe-capture", "pipe-recognizer", "pipe-indexer"):
        assert not Path(f"/proc/{kids[name]}").exists(), name


def test_ctrl_c_stops_capture_and_indexes_everything_captured(tmp_path):
    proc = start_ingest(tmp_path)
    wait_for_children(proc.pid)
    time.sleep(7)  # the first sentence (2.0–4.6 s) has been played
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == Interrupted.exit_code
    assert err.count("\n") == 1 and "what was captured before the interrupt is indexed" in err
    archive = Archive(tmp_path)
    [session] = archive.sessions()
    assert 5 < session.seconds < 20
    assert archive.search("budget meeting starts")
    files = segment_files(tmp_path / "recordings" / session.key)
    assert files and all(f.suffix == ".wav" for f in files)  # the open segment was closed
    assert sum(sf.info(str(f)).frames for f in files) == round(session.seconds * 16000)


def test_sigterm_stops_like_ctrl_c(tmp_path):
    proc = start_ingest(tmp_path)
    wait_for_children(proc.pid)
    time.sleep(6)
    proc.terminate()
    proc.communicate(timeout=60)
    assert proc.returncode == Interrupted.exit_code
    assert Archive(tmp_path).search("budget meeting starts")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_a_report_is_relayed_still_stops_cleanly(tmp_path, sig):
    """The signal lands inside ``on_event``, where the supervisor relays a report (CI once
    caught a SIGINT there: it ended the run as a second Ctrl+C does, exit 130)."""
    from pipeline.config import Home
    from pipeline.messages import Level
    from pipeline.supervisor import ingest

    sent = []

    def signal_mid_report(event) -> None:
        if isinstance(event, Level) and event.seconds > 6 and not sent:
            sent.append(event.seconds)
            os.kill(os.getpid(), sig)
            time.sleep(0.05)  # the handler runs here, inside the relaying of a report

    report = ingest([MEETING], Home(tmp_path), realtime=True, on_event=signal_mid_report)
    assert sent and report.interrupted
    [session] = Archive(tmp_path).sessions()
    assert session.status == "complete" and sent[0] < session.seconds < 20
    assert Archive(tmp_path).search("budget meeting starts")


def test_closing_the_terminal_stops_like_ctrl_c(tmp_path):
    """The terminal hangs up (its window closed, ssh lost): SIGHUP reaches the whole
    process group. The run stops cleanly, and what it still prints goes nowhere."""
    pid, terminal = pty.fork()
    if pid == 0:  # the child: pipeline on the terminal, as its session leader
        os.execv(sys.executable, [*PIPELINE, *INGEST_ARGS, "--home", str(tmp_path)])
    shown = threading.Event()
    reading = threading.Thread(target=read_until_set, args=(terminal, shown), daemon=True)
    reading.start()
    wait_for_children(pid)
    time.sleep(7)  # the first sentence (2.0–4.6 s) has been played
    shown.set()
    reading.join()
    os.close(terminal)  # the hang-up
    assert exit_code(pid, timeout=60) == Interrupted.exit_code
    [session] = Archive(tmp_path).sessions()
    assert session.status == "complete" and 5 < session.seconds < 20
    assert Archive(tmp_path).search("budget meeting starts")
    assert not list((tmp_path / "recordings").glob("*/*.part"))
    assert "SIGHUP: stopping the run" in (tmp_path / "logs" / "pipeline.log").read_text()


def test_children_die_with_a_killed_supervisor(tmp_path):
    """Left alone, a capture would record on for ever, beside the next run's."""
    proc = start_ingest(tmp_path)
    kids = wait_for_children(proc.pid)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in kids.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [name for name, pid in kids.items() if alive(pid)]


def read_until_set(fd: int, done: threading.Event) -> None:
    """Keep a terminal's output flowing (a full one would block its writer)."""
    while not done.is_set():
        if select.select([fd], [], [], 0.1)[0]:
            with contextlib.suppress(OSError):
                os.read(fd, 65536)


def exit_code(pid: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    raise AssertionError(f"pid {pid} did not exit within {timeout} s")


def alive(pid: int) -> bool:
    """Running: neither gone nor a zombie waiting for init to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
    except FileNotFoundError:
        return False


def test_a_killed_recognizer_is_restarted_and_no_word_is_lost(tmp_path):
    proc = start_ingest(tmp_path)
    kids = wait_for_children(proc.pid)
    time.sleep(7)  # mid-sentence: the dead recognizer takes audio with it
    os.kill(kids["pipe-recognizer"], signal.SIGKILL)
    time.sleep(3)
    again = children(proc.pid)
    assert again["pipe-recognizer"] != kids["pipe-recognizer"]  # a new one
    assert again["pipe-capture"] == kids["pipe-capture"]  # capture never stopped
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "restarted the recognizer" in err
    archive = Archive(tmp_path)
    assert_each_sentence_once_in_place(archive)


def test_a_killed_capture_is_restarted_and_carries_on_the_same_session(tmp_path):
    proc = start_ingest(tmp_path)
    kids = wait_for_children(proc.pid)
    time.sleep(9)
    os.kill(kids["pipe-capture"], signal.SIGKILL)
    time.sleep(3)
    again = children(proc.pid)
    assert again["pipe-capture"] != kids["pipe-capture"]
    assert again["pipe-recognizer"] == kids["pipe-recognizer"]
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "restarted the capture" in err
    archive = Archive(tmp_path)
    [session] = archive.sessions()  # one session, not two
    assert session.status == "complete"
    assert session.seconds == sf.info(str(MEETING)).duration  # every frame, once
    assert not list((tmp_path / "recordings").glob("*/*.part"))
    assert_each_sentence_once_in_place(archive)


def test_a_killed_indexer_is_restarted_and_no_word_is_lost(tmp_path):
    proc = start_ingest(tmp_path)
    kids = wait_for_children(proc.pid)
    time.sleep(12)
    os.kill(kids["pipe-indexer"], signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    archive = Archive(tmp_path)
    for sentence in sentences(MEETING):
        assert len(archive.search(sentence["phrase"])) == 1, sentence["phrase"]
    [session] = archive.sessions()
    assert session.status == "complete" and session.segments == 9


def test_a_child_that_keeps_dying_ends_the_run(tmp_path, monkeypatch):
    from pipeline import supervisor
    from pipeline.config import Home

    monkeypatch.setattr(supervisor, "MAX_RESTARTS", 0)

    def kill_the_recognizer() -> None:
        kids = wait_for_children(os.getpid())
        time.sleep(2)
        os.kill(kids["pipe-recognizer"], signal.SIGKILL)

    threading.Thread(target=kill_the_recognizer, daemon=True).start()
    with pytest.raises(ProcessDiedError, match="the recognizer process died"):
        supervisor.ingest([MEETING], Home(tmp_path), realtime=True)
    [session] = Archive(tmp_path).sessions()  # what was recorded is kept
    assert session.segments >= 1


def test_a_slow_recognizer_never_holds_capture_back_and_catches_up_from_disk(tmp_path, caplog):
    """A recognizer at 0.3x real time and a tiny queue: capture skips, nothing is lost.

    (Several minutes of it, with memory over time, is ``bench/backpressure.py``.)
    """
    from pipeline.config import Home
    from pipeline.messages import Level, Progress
    from pipeline.recognize import EngineSpec
    from pipeline.status import lag
    from pipeline.supervisor import ingest

    seen = {"captured": None, "lag": 0.0}

    def watch(event) -> None:
        if isinstance(event, Level):
            seen["captured"] = (event.session, event.seconds)
        elif isinstance(event, Progress):
            seen["lag"] = max(seen["lag"], lag(seen["captured"], (event.session, event.seconds)))

    t0 = time.monotonic()
    with caplog.at_level("INFO"):
        report = ingest(
            [MEETING],
            Home(tmp_path),
            EngineSpec(speed=0.3),
            realtime=True,
            segment_seconds=5,
            queue_chunks=4,
            on_event=watch,
        )
    assert time.monotonic() - t0 > 43 / 0.3 * 0.5  # the recognizer really was slow
    assert any("fell behind" in r.getMessage() for r in caplog.records)
    assert any("back from disk" in r.getMessage() for r in caplog.records)
    assert seen["lag"] > 10  # the lag was measured, as status and the live view show it
    [session] = report.indexed
    assert session.seconds == sf.info(str(MEETING)).duration  # capture missed no frame
    archive = Archive(tmp_path)
    assert_each_sentence_once_in_place(archive)


def test_a_long_backlog_is_shared_with_helper_recognizers_cut_where_nobody_speaks(tmp_path):
    """The 0.3x recognizer again, with two helpers: they take pieces of its backlog.

    Both helpers are killed a second after the hand-off, in the middle of the
    longer piece: their pieces are given out again and nothing is lost.
    """
    from pipeline.config import Home
    from pipeline.messages import HandedOff
    from pipeline.recognize import EngineSpec
    from pipeline.supervisor import Restarted, ingest

    handed: list[HandedOff] = []
    restarted: list[str] = []

    def kill_the_helpers() -> None:
        time.sleep(1.0)
        for name, pid in children(os.getpid()).items():
            if name.startswith("pipe-helper"):
                os.kill(pid, signal.SIGKILL)

    def watch(event) -> None:
        if isinstance(event, HandedOff):
            if not handed:
                threading.Thread(target=kill_the_helpers, daemon=True).start()
            handed.append(event)
        elif isinstance(event, Restarted):
            restarted.append(event.name)

    report = ingest(
        [MEETING],
        Home(tmp_path),
        EngineSpec(speed=0.3),
        realtime=True,
        segment_seconds=5,
        queue_chunks=4,
        helpers=2,
        on_event=watch,
    )
    pieces = [p for h in handed for p in h.pieces]
    assert len(pieces) >= 2, handed
    assert sorted(restarted) == ["helper-1", "helper-2"]
    spoken = [(s["start"], s["end"]) for s in sentences(MEETING)]
    for start, end in pieces:  # cut in the pauses between sentences, not in words
        for edge in (start, end):
            assert not any(a + 0.05 < edge < b - 0.05 for a, b in spoken), (edge, spoken)
    [session] = report.indexed
    assert session.seconds == sf.info(str(MEETING)).duration
    assert_each_sentence_once_in_place(Archive(tmp_path))
    inside = [s for s in sentences(MEETING) if any(a <= s["start"] < b for a, b in pieces)]
    assert inside  # some sentences were heard by the helpers, and are found in place
