"""Live recording from a real PulseAudio server: what is played is found when it was played."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from rich.console import Console

from pipeline.archive import Archive
from pipeline.errors import CaptureError, ConfigError
from pipeline.liveview import LiveState
from pipeline.messages import Indexed, Level, Partial, SessionEvent

from .conftest import SHORT, segment_files, sentences

SHORT_START = sentences(SHORT)[0]["start"]


def start_record(home: Path, *args: str) -> subprocess.Popen:
    """A recorder in a process group of its own, as a shell starts a command."""
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", "record", "--quiet", "--home", str(home), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        process_group=0,
    )


def wait_until_recording(pulse, streams: int = 1, timeout: float = 30.0) -> None:
    """Until the recorder's parec streams (client name "pipeline") are connected."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        outputs = pulse.run("pactl", "list", "source-outputs")
        if outputs.count('application.name = "pipeline"') >= streams:
            time.sleep(1.5)  # a new record stream may take a second to deliver its first audio
            return
        time.sleep(0.1)
    raise AssertionError("the recorder never connected to PulseAudio")


def finish(proc: subprocess.Popen, timeout: float = 60) -> str:
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return err


def events(home: Path) -> list[tuple[str, str, float]]:
    import sqlite3

    rows = sqlite3.connect(Path(home) / "db" / "pipeline.db").execute(
        "SELECT e.kind, e.detail, e.offset * 1.0 / s.rate, e.frames * 1.0 / s.rate "
        "FROM session_events e "
        "JOIN sessions s ON s.id = e.session_id ORDER BY e.offset"
    )
    return list(rows)


def heard_when_played(at: datetime, began: float) -> bool:
    """Is a phrase of SHORT found at the time its playing began (±1 s)?"""
    return abs((at - datetime.fromtimestamp(began + SHORT_START, UTC)).total_seconds()) < 1.0


def found_at(home: Path, phrase: str) -> list[datetime]:
    return sorted(h.at for h in Archive(home).search(phrase))


def test_speech_played_to_the_default_output_is_found_when_it_was_played(pulse, tmp_path):
    proc = start_record(tmp_path, "--duration", "12")
    wait_until_recording(pulse)
    time.sleep(1.0)
    began = pulse.play(SHORT)
    finish(proc)
    [hit] = Archive(tmp_path).search("train to london")
    assert heard_when_played(hit.at, began)
    [session] = Archive(tmp_path).sessions()
    assert session.source_kind == "system" and session.source == "speakers.monitor"
    assert session.seconds == pytest.approx(12.0, abs=0.01)


def test_a_silence_in_the_middle_keeps_the_timeline_true(pulse, tmp_path):
    """A suspended output's monitor sends *nothing* (as WASAPI loopback does in silence)."""
    proc = start_record(tmp_path, "--duration", "20")
    wait_until_recording(pulse)
    first = pulse.play(SHORT)
    pulse.run("pactl", "suspend-sink", "speakers", "1")
    time.sleep(6)
    pulse.run("pactl", "suspend-sink", "speakers", "0")
    time.sleep(0.5)
    second = pulse.play(SHORT)
    finish(proc)
    hits = found_at(tmp_path, "train to london")
    assert len(hits) == 2
    for hit, began in zip(hits, (first, second), strict=True):
        assert heard_when_played(hit, began)
    [session] = Archive(tmp_path).sessions()
    files = segment_files(tmp_path / "recordings" / session.key)
    assert sum(sf.info(str(f)).frames for f in files) == round(20 * session.rate)
    # (a record stream's first audio may come a second late: a gap at 0 s is fine too)
    [gap] = [e for e in events(tmp_path) if e[0] == "gap" and e[2] > 2.0]
    assert gap[1] == "no audio" and 3.0 < gap[3] < 7.0


def test_capture_follows_a_switch_of_the_default_output(pulse, tmp_path):
    proc = start_record(tmp_path, "--duration", "16")
    wait_until_recording(pulse)
    try:
        pulse.play(SHORT, "speakers")
        switched = time.time()
        pulse.run("pactl", "set-default-sink", "headphones")
        time.sleep(2.0)
        began = pulse.play(SHORT, "headphones")
    finally:
        pulse.reset()
    finish(proc)
    hits = found_at(tmp_path, "train to london")
    assert len(hits) == 2  # heard on the speakers, then on the headphones
    assert heard_when_played(hits[1], began)
    [session] = Archive(tmp_path).sessions()
    switch = [e for e in events(tmp_path) if e[0] == "device_switch"]
    assert switch and "headphones.monitor" in switch[0][1]
    assert session.started_at.timestamp() + switch[0][2] - switched < 2.0


def test_capture_comes_back_after_the_sound_server_restarts_and_follows_it_again(
    own_pulse, tmp_path
):
    """A restart of the server (an update, a crash) ends parec and the watch on its
    defaults; both come back, and an output chosen after it is followed."""
    # 30 s: ~18 s of steps below, and room for a slow machine's server restart
    proc = start_record(tmp_path, "--duration", "30")
    wait_until_recording(own_pulse)
    own_pulse.stop()
    time.sleep(2.0)
    own_pulse.start()
    own_pulse.run("pactl", "set-default-sink", "headphones")
    wait_until_recording(own_pulse)
    time.sleep(2.0)
    began = own_pulse.play(SHORT, "headphones")
    finish(proc)
    [hit] = Archive(tmp_path).search("train to london")
    assert heard_when_played(hit.at, began)
    kinds = [(kind, detail) for kind, detail, _, _ in events(tmp_path)]
    assert ("device_lost", "speakers.monitor stopped delivering audio") in kinds
    assert any(k == "device_switch" and d.endswith("headphones.monitor") for k, d in kinds)
    [session] = Archive(tmp_path).sessions()
    assert session.seconds == pytest.approx(30.0, abs=0.01)  # the outage is a gap in it


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_cleanly_and_keeps_everything(pulse, tmp_path, sig):
    proc = start_record(tmp_path)
    wait_until_recording(pulse)
    pulse.play(SHORT)
    time.sleep(1.0)
    if sig == signal.SIGINT:  # a terminal's Ctrl+C: to the whole process group
        os.killpg(proc.pid, sig)
    else:  # `kill`, or systemd stopping the service (KillMode=mixed)
        proc.send_signal(sig)
    finish(proc)
    # parec, which exits on SIGINT, was not in the group: no device lost at the stop
    assert not [e for e in events(tmp_path) if e[0] in ("device_lost", "device_switch")]
    assert Archive(tmp_path).search("train to london")
    [session] = Archive(tmp_path).sessions()
    assert session.status == "complete"
    files = segment_files(tmp_path / "recordings" / session.key)
    assert files and all(f.suffix == ".wav" for f in files)  # the open segment was closed
    assert sum(sf.info(str(f)).frames for f in files) == round(session.seconds * session.rate)


def test_a_microphone_is_recorded(pulse, tmp_path):
    proc = start_record(tmp_path, "--source", "mic", "--duration", "10")
    wait_until_recording(pulse)
    began = pulse.play(SHORT, "micfeed")
    finish(proc)
    [hit] = Archive(tmp_path).search("train to london")
    assert heard_when_played(hit.at, began)
    assert Archive(tmp_path).sessions()[0].source == "testmic"


def test_system_and_mic_are_two_channels_of_one_session(pulse, tmp_path):
    # 20 s: two plays of 3.3 s and a pause, each paplay's start-up, the recorder's own
    proc = start_record(tmp_path, "--source", "system+mic", "--duration", "20")
    wait_until_recording(pulse, streams=2)
    system = pulse.play(SHORT, "speakers")
    time.sleep(1.5)  # a pause: one utterance each (a search hit is an utterance)
    mic = pulse.play(SHORT, "micfeed")
    finish(proc)
    [session] = Archive(tmp_path).sessions()
    assert session.channels == 2 and session.source_kind == "system+mic"
    hits = found_at(tmp_path, "train to london")
    assert len(hits) == 2
    for hit, began in zip(hits, (system, mic), strict=True):
        assert heard_when_played(hit, began)
    # (the session may straddle a wall-clock rotation boundary: read every segment in order)
    segments = segment_files(tmp_path / "recordings" / session.key)
    data = np.concatenate([sf.read(str(s), dtype="int16")[0] for s in segments])
    rate = session.rate
    loud = abs(data) > 1000
    system_at = (loud[:, 0].argmax() / rate, loud[:, 1].argmax() / rate)
    assert system_at[0] < system_at[1]  # the system spoke first, then the microphone


def test_devices_lists_monitors_and_microphones_with_defaults(pulse, cli):
    result = cli("devices", "--json")
    assert result.exit_code == 0, result.output
    devices = {d["name"]: d for d in json.loads(result.stdout)}
    assert (
        devices["speakers.monitor"]["kind"] == "system" and devices["speakers.monitor"]["default"]
    )
    assert devices["headphones.monitor"]["kind"] == "system"
    assert not devices["headphones.monitor"]["default"]
    assert devices["testmic"]["kind"] == "mic" and devices["testmic"]["default"]


def test_an_unknown_device_is_one_line(pulse, cli, home):
    result = cli("record", "--device", "no such thing", "--home", home.root)
    assert result.exit_code == CaptureError.exit_code
    assert "pipeline devices" in result.stderr and result.stderr.count("\n") == 1


def test_a_bad_source_or_duration_is_one_line(cli, home):
    for args in (
        ["--source", "radio"],
        ["--duration", "-5"],
        ["--source", "system+mic", "--device", "x"],
    ):
        result = cli("record", *args, "--home", home.root)
        assert result.exit_code == ConfigError.exit_code, args
        assert result.stderr.count("\n") == 1


def test_no_sound_server_is_one_line(cli, home, tmp_path, monkeypatch):
    empty = tmp_path / "xdg"
    empty.mkdir(mode=0o700)
    (empty / "client.conf").write_text("autospawn = no\n")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(empty))
    monkeypatch.setenv("PULSE_RUNTIME_PATH", str(empty / "pulse"))
    monkeypatch.setenv("PULSE_CLIENTCONFIG", str(empty / "client.conf"))
    monkeypatch.setenv("PULSE_SERVER", f"unix:{empty}/nothing-here")
    result = cli("record", "--home", home.root)
    assert result.exit_code == CaptureError.exit_code
    assert "no PulseAudio/PipeWire server" in result.stderr and result.stderr.count("\n") == 1
    assert result.stdout == ""  # no "● REC" panel of a recording that never began
    assert not (home.recordings).exists() or not any(home.recordings.iterdir())


def test_the_live_view_shows_level_partial_lines_and_events(tmp_path):
    state = LiveState(source="system", engine="pocketsphinx:en-us", recordings=tmp_path)
    state.apply(Level("s", -20.0, -6.0, 75.0, "speakers.monitor"))
    state.apply(Indexed("s", "the budget meeting starts at nine", 61.2, 6))
    state.apply(Partial("s", "please send the"))
    state.apply(SessionEvent("s", 0, "device_switch", "speakers.monitor → headphones.monitor"))
    console = Console(file=StringIO(), width=100)
    console.print(state)
    text = console.file.getvalue()
    for expected in (
        "speakers.monitor",
        "0:01:15",
        "-20 dB",
        "words indexed 6",
        "0:01:01  the budget meeting starts at nine",
        "please send the …",
        "device_switch: speakers.monitor → headphones.monitor",
    ):
        assert expected in text, expected


def test_a_device_can_be_chosen_by_its_number(pulse, cli, tmp_path):
    listed = json.loads(cli("devices", "--json").stdout)
    [headphones] = [d for d in listed if d["name"] == "headphones.monitor"]
    proc = start_record(tmp_path, "--device", str(headphones["index"]), "--duration", "9")
    wait_until_recording(pulse)
    pulse.play(SHORT, "speakers")  # not the chosen device: not recorded
    began = pulse.play(SHORT, "headphones")
    finish(proc)
    [hit] = Archive(tmp_path).search("train to london")
    assert heard_when_played(hit.at, began)
    assert Archive(tmp_path).sessions()[0].source == "headphones.monitor"


def test_a_second_ctrl_c_stops_at_once_and_keeps_finished_segments(pulse, tmp_path):
    proc = start_record(tmp_path, "--segment-seconds", "2")
    wait_until_recording(pulse)
    pulse.play(SHORT)  # speech just ended: the first Ctrl+C has words to finish
    proc.send_signal(signal.SIGINT)
    time.sleep(1.0)  # a second Ctrl+C; closer ones are one (the next test)
    proc.send_signal(signal.SIGINT)
    t0 = time.monotonic()
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - t0 < 10, err
    # the second Ctrl+C cuts the stop short, unless the first had already finished it
    assert proc.returncode in (0, 130), err
    if proc.returncode == 130:
        assert err.count("\n") == 1 and "kept" in err, err
    assert "Traceback" not in err
    finished = list((tmp_path / "recordings").glob("*/*.wav"))
    assert len(finished) >= 2
    for f in finished:
        assert sf.info(str(f)).frames > 0


def test_a_ctrl_c_relayed_by_uv_run_counts_once_and_the_run_stops_cleanly(pulse, tmp_path):
    """`uv run`, when not on a terminal, relays to its child the SIGINT that its process
    group got too, 200 ms later: the two are one Ctrl+C, not a second one."""
    proc = start_record(tmp_path, "--segment-seconds", "2")
    wait_until_recording(pulse)
    pulse.play(SHORT)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert Archive(tmp_path).search("train to london")


def test_live_segments_rotate_on_wall_clock_boundaries(tmp_path):
    from pipeline.capture import SegmentWriter
    from pipeline.messages import SessionStarted

    started = datetime(2026, 11, 25, 12, 3, 17, 500000, tzinfo=UTC)
    session = SessionStarted("k", "system", "speakers.monitor", started, 1000, 1)
    closed = []
    writer = SegmentWriter(tmp_path, session, 60 * 1000, closed.append, align_to_clock=True)
    writer.write(np.zeros((150 * 1000, 1), np.int16), 0)
    writer.close()
    assert [c.frames for c in closed] == [42500, 60000, 47500]
    assert [c.started_at.strftime("%H:%M:%S.%f") for c in closed] == [
        "12:03:17.500000",
        "12:04:00.000000",
        "12:05:00.000000",
    ]
    assert [Path(c.path).name for c in closed][1] == "20261125T120400.000Z.wav"


def test_parec_that_cannot_record_is_one_line(pulse):
    from pipeline.sources.pulse import ParecStream

    with pytest.raises(CaptureError, match="parec cannot record no-such-source"):
        ParecStream("no-such-source", 48000, 2)


def test_status_and_search_while_recording(pulse, cli, tmp_path):
    """Readers never wait for the recorder: status and search answer while it records."""
    proc = start_record(tmp_path, "--duration", "14")
    wait_until_recording(pulse)
    began = pulse.play(SHORT)
    deadline = time.monotonic() + 6
    hits = []
    while not hits and time.monotonic() < deadline:
        t0 = time.monotonic()
        hits = Archive(tmp_path).search("train to london")
        assert time.monotonic() - t0 < 1.0
        time.sleep(0.2)
    assert hits and heard_when_played(hits[0].at, began)  # found while still recording
    time.sleep(2.5)  # the status file is rewritten every 2 s
    running = json.loads(cli("status", "--json", "--home", tmp_path).stdout)
    assert running["running"]["pid"] == proc.pid
    assert running["running"]["device"] == "speakers.monitor"
    assert running["running"]["words"] >= 6 and running["running"]["lag_seconds"] < 2
    finish(proc)
    after = json.loads(cli("status", "--json", "--home", tmp_path).stdout)
    assert after["running"] is None and after["sessions"] == 1
    assert after["expected_seconds"] == pytest.approx(14, abs=0.1)
    assert 0 < after["captured_seconds"] <= after["expected_seconds"]
    assert after["words_total"] >= 6


def test_the_disk_budget_applies_while_recording(pulse, tmp_path):
    proc = start_record(
        tmp_path, "--duration", "14", "--segment-seconds", "2", "--max-disk", "700kB"
    )
    wait_until_recording(pulse)
    began = pulse.play(SHORT)
    finish(proc)
    from pipeline.config import Home
    from pipeline.retention import recordings_bytes

    assert recordings_bytes(Home(tmp_path)) <= 700_000
    [hit] = Archive(tmp_path).search("train to london")  # the words outlive the audio
    assert heard_when_played(hit.at, began)
    kinds = [e[0] for e in events(tmp_path)]
    assert kinds.count("audio_deleted") >= 3
