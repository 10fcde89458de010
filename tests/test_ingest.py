"""Ingest: files go through capture, recognizer and indexer processes into the archive."""

from __future__ import annotations

import shutil
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

import soundfile as sf

from pipeline.archive import Archive
from pipeline.messages import Indexed, SessionIndexed, SourceFailed
from pipeline.supervisor import ingest

from .conftest import BAD, MEETING, MEETING_FLAC, SHORT, segment_files, sentences


def test_every_spoken_phrase_is_found_at_the_right_offset(meeting_home):
    archive = Archive(meeting_home)
    for sentence in sentences(MEETING):
        hits = archive.search(sentence["phrase"])
        assert len(hits) == 1, sentence["phrase"]
        hit = hits[0]
        assert hit.words[hit.match[0] : hit.match[1]] == tuple(sentence["phrase"].split())
        # the phrase lies inside its sentence, whose exact place in the file is known
        assert sentence["start"] - 1.0 <= hit.start <= sentence["end"]
        assert hit.end <= sentence["end"] + 1.0


def test_segments_rotate_and_cover_the_whole_file(meeting_home):
    session = Archive(meeting_home).sessions()[0]
    info = sf.info(str(MEETING))
    assert session.status == "complete"
    assert round(session.seconds * info.samplerate) == info.frames
    folder = meeting_home.recordings / session.key
    files = segment_files(folder)
    assert [f.suffix for f in files] == [".wav"] * 5  # 43 s in 10 s segments, no .part left
    assert files[0].name.endswith("Z.wav") and files[0].name.startswith(session.key[:8])
    lengths = [sf.info(str(f)).frames for f in files]
    assert lengths[:4] == [10 * info.samplerate] * 4
    assert sum(lengths) == info.frames
    rows = (
        sqlite3.connect(meeting_home.db_path)
        .execute("SELECT path, offset, frames FROM segments ORDER BY offset")
        .fetchall()
    )
    assert [Path(p).name for p, _, _ in rows] == [f.name for f in files]
    assert [o for _, o, _ in rows] == [i * 10 * info.samplerate for i in range(5)]


def test_the_segments_hold_exactly_the_source_audio(meeting_home):
    session = Archive(meeting_home).sessions()[0]
    files = segment_files(meeting_home.recordings / session.key)
    joined = [x for f in files for x in sf.read(str(f), dtype="int16")[0]]
    original, _ = sf.read(str(MEETING), dtype="int16")
    assert joined == list(original)


def test_word_times_are_session_absolute_and_monotonic(meeting_home):
    rows = (
        sqlite3.connect(meeting_home.db_path)
        .execute(
            "SELECT w.start, w.end FROM words w JOIN utterances u ON u.id = w.utterance_id "
            "ORDER BY u.start, w.idx"
        )
        .fetchall()
    )
    assert len(rows) > 50
    starts = [s for s, _ in rows]
    assert starts == sorted(starts)
    assert all(0 <= s <= e <= 43.0 for s, e in rows)


def test_a_resampled_stereo_flac_gives_the_same_moments(home):
    source = home.root.parent / "meeting_44k_stereo.flac"
    shutil.copy(MEETING_FLAC, source)
    report = ingest([source], home)
    assert report.indexed[0].seconds == sf.info(str(MEETING_FLAC)).duration
    archive = Archive(home)
    for sentence in sentences(MEETING):
        hits = archive.search(sentence["phrase"])
        assert len(hits) == 1, sentence["phrase"]
        assert sentence["start"] - 1.0 <= hits[0].start <= sentence["end"]
    session = archive.sessions()[0]
    assert (session.rate, session.source) == (44100, str(source.resolve()))


def test_a_file_is_dated_so_that_it_ends_at_its_modification_time(home, tmp_path):
    source = tmp_path / "short.wav"
    shutil.copy(SHORT, source)
    ended = datetime(2025, 3, 14, 15, 9, 26, tzinfo=UTC)
    import os

    os.utime(source, (ended.timestamp(), ended.timestamp()))
    ingest([source], home)
    session = Archive(home).sessions()[0]
    assert abs((session.started_at - ended).total_seconds() + session.seconds) < 0.01
    hit = Archive(home).search("train to london")[0]
    assert hit.at.year == 2025 and hit.at < ended


def test_realtime_paces_the_file_like_live_audio(home):
    t0 = time.monotonic()
    began = datetime.now(UTC)
    ingest([SHORT], home, realtime=True)
    assert time.monotonic() - t0 >= sf.info(str(SHORT)).duration
    session = Archive(home).sessions()[0]
    assert abs((session.started_at - began).total_seconds()) < 5


def test_bad_files_are_reported_and_the_good_ones_indexed(home):
    events = []
    report = ingest([SHORT, BAD / "not_audio.wav", MEETING], home, on_event=events.append)
    assert [Path(f.source).name for f in report.failed] == ["not_audio.wav"]
    assert sorted(Path(s.source).name for s in report.indexed) == ["meeting.wav", "short.wav"]
    assert len([e for e in events if isinstance(e, SessionIndexed | SourceFailed)]) == 3
    indexed = [e for e in events if isinstance(e, Indexed)]
    assert sum(e.words for e in indexed) == sum(s.words for s in report.indexed)
    assert Archive(home).search("train to london")


def test_ingesting_into_an_existing_archive_keeps_what_was_there(home):
    ingest([SHORT], home)
    ingest([SHORT], home)
    archive = Archive(home)
    assert len(archive.sessions()) == 2
    assert len(archive.search("train to london")) == 2


def test_cli_ingest_prints_one_line_per_file(cli, home):
    result = cli("ingest", SHORT, "--home", home.root)
    assert result.exit_code == 0, result.output
    assert "indexed" in result.stdout and "short.wav" in result.stdout
    assert "1 utterance, 9 words (session 1)" in result.stdout  # short.wav: one sentence
    status = cli("status", "--home", home.root).stdout
    assert "1 session, 0.00 h, 9 words" in status  # counted as said, here too


def test_sessions_lists_each_file_with_its_counts(cli, home, tmp_path):
    lecture = tmp_path / "2026-11-03 Introduction to Linear Algebra, lecture 4.wav"
    shutil.copy(SHORT, lecture)
    ingest([lecture], home)
    wide = cli("sessions", "--home", home.root)
    assert wide.exit_code == 0, wide.output
    lines = wide.stdout.splitlines()
    header, row = lines[1].split("┃")[1:-1], lines[3].split("│")[1:-1]
    cells = dict(zip((h.strip() for h in header), (c.strip() for c in row), strict=True))
    assert cells["source"] == lecture.name  # the file's name, not its folder
    assert (cells["utts"], cells["words"], cells["segs"], cells["status"]) == (
        "1",
        "9",
        "1",
        "complete",
    )
    assert "recorder" not in cells  # one machine: no need to say which

    from pipeline import cli as module

    module.out.width = 80  # the counts that matter less make room for the file's name
    narrow = cli("sessions", "--home", home.root).stdout
    assert "utts" not in narrow and "segs" not in narrow and "words" in narrow
    assert "Introduction to" in narrow and "Linear Algebra," in narrow


# --- several files at once ---------------------------------------------------------


def transcripts(home: Path) -> dict[str, list]:
    """source file name → its utterances (start, end, text, words with times)."""
    db = sqlite3.connect(home / "db" / "pipeline.db")
    out: dict[str, list] = {}
    for sid, source in db.execute("SELECT id, source FROM sessions"):
        utts = db.execute(
            "SELECT id, start, end, text FROM utterances WHERE session_id = ? ORDER BY start",
            (sid,),
        ).fetchall()
        out[Path(source).name] = [
            (
                s,
                e,
                text,
                db.execute(
                    "SELECT text, start, end FROM words WHERE utterance_id = ? ORDER BY idx", (uid,)
                ).fetchall(),
            )
            for uid, s, e, text in utts
        ]
    return out


def test_parallel_recognizers_give_exactly_what_one_gives(tmp_path, cli):
    files = [MEETING, SHORT, *sorted((MEETING.parent.parent / "corpus").rglob("*.wav"))]
    one = cli("ingest", "--jobs", "1", "--home", tmp_path / "one", *files)
    two = cli("ingest", "--jobs", "2", "--home", tmp_path / "two", *files)
    assert one.exit_code == two.exit_code == 0, (one.output, two.output)
    assert len(transcripts(tmp_path / "one")) == len(files)
    a, b = transcripts(tmp_path / "one"), transcripts(tmp_path / "two")
    differ = [(name, a[name], b.get(name)) for name in a if a[name] != b.get(name)]
    assert not differ, differ[:1]


def test_a_killed_lane_is_restarted_and_no_file_is_lost_or_doubled(tmp_path):
    import os
    import signal
    import threading

    from pipeline.config import Home

    from .test_supervisor import children

    files = [MEETING, MEETING_FLAC, SHORT, MEETING]
    copies = []
    for i, f in enumerate(files):
        copies.append(tmp_path / f"{i}{f.suffix}")
        shutil.copy(f, copies[-1])

    def kill_a_lane() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            kids = children(os.getpid())
            if {"pipe-capture-2", "pipe-recog-2"} <= kids.keys():
                time.sleep(1.0)
                os.kill(kids["pipe-capture-2"], signal.SIGKILL)
                time.sleep(2.0)
                os.kill(children(os.getpid())["pipe-recog-2"], signal.SIGKILL)
                return
            time.sleep(0.1)

    threading.Thread(target=kill_a_lane, daemon=True).start()
    report = ingest(copies, Home(tmp_path / "home"), jobs=2, realtime=True)
    assert report.restarts == 2
    archive = Archive(tmp_path / "home")
    assert sorted(Path(s.source).name for s in archive.sessions()) == sorted(c.name for c in copies)
    assert all(s.status == "complete" for s in archive.sessions())
    assert len(archive.search("budget meeting starts")) == 3
    assert len(archive.search("train to london")) == 1
