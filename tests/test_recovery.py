"""Crash recovery: a kill -9 loses nothing that was recorded; repair makes the archive whole."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.archive import Archive
from pipeline.config import Home
from pipeline.errors import HomeLockedError
from pipeline.lock import hold, unclean
from pipeline.repair import repair
from pipeline.supervisor import ingest

from .conftest import MEETING, SHORT, sentences
from .test_record import (
    events,
    finish,
    found_at,
    heard_when_played,
    start_record,
    wait_until_recording,
)
from .test_supervisor import children, start_ingest, wait_for_children

PIPELINE = [sys.executable, "-m", "pipeline"]


def kill_everything(proc: subprocess.Popen, kids: dict[str, int]) -> None:
    """A power cut, as near as a test gets: every pipeline process killed at once."""
    for pid in [proc.pid, *(p for n, p in kids.items() if n.startswith("pipe-"))]:
        os.kill(pid, signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)


def recorded_seconds(home: Path) -> float:
    files = list((home / "recordings").glob("*/*.wav*"))
    return sum(sf.info(str(f)).frames for f in files) / 16000


def db_state(home: Path) -> list:
    con = sqlite3.connect(home / "db" / "pipeline.db")
    return [
        con.execute(f"SELECT * FROM {t}").fetchall()
        for t in ("sessions", "segments", "utterances", "words")
    ]


def test_kill_everything_then_repair_loses_no_word(tmp_path):
    proc = start_ingest(tmp_path)
    kids = wait_for_children(proc.pid)
    time.sleep(13)
    kill_everything(proc, kids)
    parts = list((tmp_path / "recordings").glob("*/*.wav.part"))
    assert len(parts) == 1 and sf.info(str(parts[0])).frames > 0  # readable after the crash
    recorded = recorded_seconds(tmp_path)
    assert recorded > 8

    before = db_state(tmp_path)
    planned = repair(Home(tmp_path), dry_run=True)
    assert {a.kind for a in planned} >= {"finalize", "add-segment", "recognize"}
    assert db_state(tmp_path) == before and parts[0].exists()  # a dry run changes nothing

    done = repair(Home(tmp_path))
    assert [str(a) for a in done] == [str(a) for a in planned]
    assert not list((tmp_path / "recordings").glob("*/*.part"))
    archive = Archive(tmp_path)
    [session] = archive.sessions()
    assert session.status == "complete" and session.seconds == recorded_seconds(tmp_path)
    for sentence in sentences(MEETING):
        if sentence["end"] <= recorded - 2.0:  # spoken more than 2 s before the crash
            assert archive.search(sentence["phrase"]), sentence["phrase"]
    bare = sqlite3.connect(tmp_path / "db" / "pipeline.db").execute(
        "SELECT count(*) FROM utterances AS u WHERE NOT EXISTS "
        "(SELECT 1 FROM alternatives AS a WHERE a.utterance_id = u.id)"
    )
    assert bare.fetchone()[0] == 0  # what repair recognized has its alternatives too
    assert repair(Home(tmp_path)) == []  # idempotent


def test_a_stale_lock_is_taken_over_and_the_home_repaired(tmp_path):
    proc = start_ingest(tmp_path)
    kids = wait_for_children(proc.pid)
    time.sleep(8)
    kill_everything(proc, kids)
    assert unclean(Home(tmp_path)) == proc.pid
    out = subprocess.run(
        [*PIPELINE, "ingest", str(SHORT), "--home", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert f"the last run (pid {proc.pid}) did not stop cleanly; repairing first" in out.stderr
    assert "finalize" in out.stderr and "recognize" in out.stderr
    assert {s.status for s in Archive(tmp_path).sessions()} == {"complete"}
    assert unclean(Home(tmp_path)) is None  # this run stopped cleanly


def test_a_live_lock_is_one_line(cli, home):
    with hold(home):
        result = cli("ingest", SHORT, "--home", home.root)
    assert result.exit_code == HomeLockedError.exit_code
    assert "another pipeline" in result.stderr and result.stderr.count("\n") == 1


def test_a_part_file_whose_header_is_behind_is_fixed(home):
    folder = home.recordings / "20261125T100000Z-abcdef"
    folder.mkdir(parents=True)
    data, rate = sf.read(str(SHORT), dtype="int16")
    part = folder / "20261125T100000.000Z.wav.part"
    sf.write(part, data[:8000], rate, subtype="PCM_16", format="WAV")  # header: 8000 frames
    with part.open("ab") as f:
        f.write(data[8000:].tobytes())  # the rest was written after the last header update
    actions = repair(home)
    assert [a.kind for a in actions] == ["finalize", "add-session", "add-segment", "recognize"]
    final = part.with_name(part.name.removesuffix(".part"))
    restored, _ = sf.read(str(final), dtype="int16")
    assert np.array_equal(restored, data)
    assert Archive(home).search("train to london")
    [session] = Archive(home).sessions()  # a folder without session.json: its source unknown
    assert (session.source_kind, session.source) == ("unknown", "(recovered by pipeline repair)")


def test_audio_from_another_home_is_adopted(home, tmp_path):
    other = Home(tmp_path / "other")
    ingest([SHORT], other)
    shutil.copytree(other.recordings, home.recordings, dirs_exist_ok=True)
    actions = repair(home)
    assert [a.kind for a in actions] == ["add-session", "add-segment", "recognize"]
    [theirs], [session] = Archive(other).sessions(), Archive(home).sessions()
    # as it was (its session.json): the source, and the time of the first frame, exactly
    assert (session.key, session.source_kind, session.source) == (theirs.key, "file", str(SHORT))
    assert (session.started_at, session.seconds) == (theirs.started_at, theirs.seconds)
    assert session.status == "complete"
    assert Archive(home).search("train to london")


def test_status_tells_of_an_unclean_stop_and_the_crash_gap(cli, tmp_path):
    proc = start_ingest(tmp_path)
    kids = wait_for_children(proc.pid)
    time.sleep(6)
    kill_everything(proc, kids)
    result = cli("status", "--home", tmp_path)
    assert result.exit_code == 0 and f"pid {proc.pid}) did not stop cleanly" in result.stdout
    cli("repair", "--home", tmp_path)
    import json

    doc = json.loads(cli("status", "--json", "--home", tmp_path).stdout)
    assert doc["unclean_stop_pid"] is None  # repaired: the home is clean again
    con = sqlite3.connect(tmp_path / "db" / "pipeline.db")
    [(kind, detail)] = con.execute("SELECT kind, detail FROM session_events").fetchall()
    assert kind == "crash" and "recovered by pipeline repair" in detail


# --- the same, while recording live from a real PulseAudio server --------------------


@pytest.mark.parametrize("victim", ["pipe-capture", "pipe-recognizer", "pipe-indexer"])
def test_a_process_killed_while_recording_live_is_restarted_and_loses_nothing(
    pulse, tmp_path, victim
):
    proc = start_record(tmp_path, "--duration", "30", "--segment-seconds", "10")
    wait_until_recording(pulse)
    first = pulse.play(SHORT)
    kids = wait_for_children(proc.pid)
    os.kill(kids[victim], signal.SIGKILL)
    killed = time.time()
    time.sleep(4)  # restarted within the backoff
    assert children(proc.pid)[victim] != kids[victim]
    second = pulse.play(SHORT)
    err = finish(proc, timeout=120)
    assert f"the {victim.removeprefix('pipe-')} died" in err

    [session] = Archive(tmp_path).sessions()  # one session: the recording went on
    assert session.status == "complete" and session.seconds == 30.0
    hits = found_at(tmp_path, "train to london")
    assert len(hits) == 2  # both found, neither twice
    for hit, began in zip(hits, (first, second), strict=True):
        assert heard_when_played(hit, began)
    crash_gaps = [e for e in events(tmp_path) if e[1].startswith("crash")]
    if victim == "pipe-capture":  # the time capture was down is silence, said so, ≤ a few s
        [gap] = crash_gaps
        started = session.started_at.timestamp()
        assert abs(gap[2] - (killed - started)) < 1.5 and gap[3] < 4.0
    else:
        assert crash_gaps == []


def test_a_power_cut_while_recording_live_loses_at_most_a_second(pulse, tmp_path):
    proc = start_record(tmp_path, "--duration", "60", "--segment-seconds", "10")
    wait_until_recording(pulse)
    pulse.play(SHORT)
    time.sleep(3)  # the phrase ended more than 2 s before the cut
    kids = wait_for_children(proc.pid)
    cut = time.time()
    kill_everything(proc, kids)
    done = repair(Home(tmp_path))
    assert {a.kind for a in done} >= {"finalize", "recognize"}
    [session] = Archive(tmp_path).sessions()
    assert session.status == "complete"
    lost = (cut - session.started_at.timestamp()) - session.seconds
    assert -0.5 < lost <= 1.0
    assert Archive(tmp_path).search("train to london")
    assert repair(Home(tmp_path)) == []


def test_repair_finishes_only_this_homes_sessions_in_a_shared_archive(tmp_path):
    """Another recorder's session, live as this one is repaired, is not this repair's to
    finish: its audio is on the other machine, and it is not over."""
    shared = f"sqlite:///{tmp_path / 'shared.db'}"
    office = Home(tmp_path / "office", shared, "office")
    studio = Home(tmp_path / "studio", shared, "studio")
    ingest([SHORT], office)
    con = sqlite3.connect(tmp_path / "shared.db")
    with con:  # the office is recording now
        con.execute("UPDATE sessions SET status = 'recording', frames = NULL")
    ingest([MEETING], studio)
    with con:  # and the studio crashed before its session's end was indexed
        con.execute("UPDATE sessions SET status = 'recording' WHERE recorder = 'studio'")
    actions = repair(studio)
    assert [a.kind for a in actions] == ["recognize"]
    assert con.execute("SELECT recorder, status FROM sessions ORDER BY recorder").fetchall() == [
        ("office", "recording"),
        ("studio", "complete"),
    ]
    events = con.execute(
        "SELECT s.recorder FROM session_events JOIN sessions AS s "
        "ON s.id = session_events.session_id WHERE kind = 'crash'"
    ).fetchall()
    assert events == [("studio",)]
