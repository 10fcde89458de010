"""The supervisor and its real child processes: stopping, signals, a child that dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import soundfile as sf

from pipeline.archive import Archive
from pipeline.errors import Interrupted, ProcessDiedError

from .conftest import MEETING

PIPELINE = [sys.executable, "-m", "pipeline"]


def start_ingest(home: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            *PIPELINE,
            "ingest",
            "--realtime",
            "--segment-seconds",
            "5",
            "--home",
            str(home),
            str(MEETING),
            *extra,
        ],
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
    files = list((tmp_path / "recordings" / session.key).iterdir())
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


def test_a_dead_recognizer_is_reported_in_one_line_and_nothing_hangs(tmp_path):
    proc = start_ingest(tmp_path)
    kids = wait_for_children(proc.pid)
    time.sleep(6)
    os.kill(kids["pipe-recognizer"], signal.SIGKILL)
    t0 = time.monotonic()
    _, err = proc.communicate(timeout=60)
    assert time.monotonic() - t0 < 15
    assert proc.returncode == ProcessDiedError.exit_code
    assert err.count("\n") == 1 and "recognizer process died" in err
    [session] = Archive(tmp_path).sessions()
    assert session.segments >= 1  # finished segments are kept and known
    folder = tmp_path / "recordings" / session.key
    assert all(f.suffix == ".wav" for f in folder.iterdir())
