"""The disk budget: the oldest audio goes first, the words stay, nothing is deleted silently."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime

import numpy as np
import pytest
import soundfile as sf

from pipeline import capture
from pipeline.archive import Archive
from pipeline.capture import RESERVE_BYTES
from pipeline.config import Home
from pipeline.errors import CaptureError, ReplayError
from pipeline.messages import SessionStarted
from pipeline.repair import repair
from pipeline.retention import recordings_bytes
from pipeline.supervisor import ingest

from .conftest import MEETING, MEETING_FLAC, SHORT, segment_files
from .test_record import start_record, wait_until_recording


def test_past_the_budget_the_oldest_audio_goes_and_the_words_stay(home, tmp_path, caplog):
    old, new = tmp_path / "old.wav", tmp_path / "new.wav"
    shutil.copy(SHORT, old)
    yesterday = time.time() - 86400
    os.utime(old, (yesterday, yesterday))  # recorded yesterday: the oldest audio
    ingest([old], home, segment_seconds=1.0)
    shutil.copy(MEETING, new)
    one_meeting = MEETING.stat().st_size
    with caplog.at_level("INFO", logger="pipeline.retention"):
        ingest([new], home, segment_seconds=5.0, max_disk=one_meeting + 10_000)
    assert recordings_bytes(home) <= one_meeting + 10_000
    archive = Archive(home)
    old_hit = archive.search("train to london")[0]  # its words are kept
    with pytest.raises(ReplayError, match="deleted .* disk budget"):
        archive.moment(old_hit.id)
    assert old_hit.segment is None
    newest = archive.search("have a good weekend")[0]
    assert len(archive.moment(newest.id).frames)  # the newest audio is still there
    con = sqlite3.connect(home.db_path)
    deleted = con.execute("SELECT path FROM segments WHERE deleted_at IS NOT NULL").fetchall()
    events = con.execute("SELECT kind, detail FROM session_events").fetchall()
    assert deleted and len(events) == len(deleted)
    assert all(kind == "audio_deleted" and "disk budget" in d for kind, d in events)
    logged = [r.getMessage() for r in caplog.records if "deleted" in r.getMessage()]
    assert len(logged) == len(deleted)  # every deletion is logged
    for (path,) in deleted:
        assert not (home.recordings / path).exists()
    kept = [f for f in home.recordings.rglob("*.wav")]
    assert sum(sf.info(str(f)).frames for f in kept) > 0


def test_cli_takes_the_budget_from_the_option_or_the_config(cli, home, tmp_path):
    result = cli("ingest", SHORT, "--max-disk", "a lot", "--home", home.root)
    assert result.exit_code == 2 and "--max-disk" in result.stderr
    config = tmp_path / "config.toml"
    config.write_text('max_disk = "1kB"\n')
    result = cli("--config", config, "ingest", SHORT, "--home", home.root)
    assert result.exit_code == 0, result.output
    assert Archive(home).search("train to london")  # the words stay
    assert recordings_bytes(home) <= 1000
    status = cli("--config", config, "status", "--json", "--home", home.root)
    import json

    assert json.loads(status.stdout)["disk_budget_bytes"] == 1000


# --- a disk that fills up --------------------------------------------------------------

SMALL_DISK_MB = 64


@pytest.fixture
def small_disk(tmp_path):
    """A real 64 MB filesystem (tmpfs), nearly full: 3 MB above capture's reserve. Needs root."""
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SMALL_DISK_MB}m", "tmpfs", str(mount)],
        capture_output=True,
    )
    if made.returncode:
        pytest.skip(f"cannot mount a small filesystem here: {made.stderr.decode().strip()}")
    filler = shutil.disk_usage(mount).free - RESERVE_BYTES - 3_000_000
    with open(mount / "other-files", "wb") as f:
        f.truncate(0)
        f.write(b"\0" * filler)  # (tmpfs allocates what is written)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_nearly_full_disk_stops_recording_cleanly_and_keeps_what_was_recorded(pulse, small_disk):
    """The recordings folder on the small disk: 44.1 kHz stereo uses its 3 MB in about 17 s."""
    home = small_disk.parent / "home"
    home.mkdir()
    (home / "recordings").symlink_to(small_disk)  # the database stays on the big disk
    proc = start_record(home, "--duration", "60", "--segment-seconds", "5")
    wait_until_recording(pulse)
    pulse.play(SHORT)
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == CaptureError.exit_code
    assert err.count("\n") == 1 and "nearly full" in err and "free space" in err
    archive = Archive(home)
    [session] = archive.sessions()
    assert 10 < session.seconds < 20
    assert archive.search("train to london")  # everything up to the stop is searchable
    files = segment_files(small_disk / session.key)
    assert files and all(f.suffix == ".wav" for f in files)  # no .part left behind
    assert sum(sf.info(str(f)).frames for f in files) == round(session.seconds * session.rate)
    assert repair(Home(home)) == []  # nothing corrupt


def test_a_nearly_full_disk_under_the_whole_home_still_commits_every_word(small_disk):
    home = small_disk / "home"
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "ingest", "--home", str(home), str(MEETING_FLAC)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    [line] = proc.stderr.splitlines()
    assert "nearly full" in line
    [session] = Archive(home).sessions()
    assert 10 < session.seconds < 25
    assert Archive(home).search("budget meeting starts")
    assert repair(Home(home)) == []


def test_a_write_that_hits_a_full_disk_keeps_a_consistent_segment(small_disk, monkeypatch):
    """No reserve: the disk really fills; the segment is cut to the frames that count."""
    monkeypatch.setattr(capture, "RESERVE_BYTES", 0)
    closed = []
    session = SessionStarted("s", "file", "x", datetime.now(UTC), 44100, 2)
    writer = capture.SegmentWriter(small_disk, session, 44100 * 3600, closed.append)
    block = np.ones((22050, 2), dtype=np.int16)
    offset = 0
    with pytest.raises(CaptureError, match="is full"):
        while True:
            writer.write(block, offset)
            offset += len(block)
    [segment] = closed
    assert segment.frames == offset  # every block that was written whole, and nothing else
    path = small_disk / segment.path
    assert sf.info(str(path)).frames == offset
    assert path.stat().st_size == 44 + offset * 4


def test_no_recording_starts_on_a_nearly_full_disk(cli, small_disk):
    with open(small_disk / "other-files", "ab") as f:
        f.write(b"\0" * 4_000_000)  # now under the reserve
    result = cli("ingest", "--home", small_disk / "home", MEETING)
    assert result.exit_code == CaptureError.exit_code
    assert "nearly full" in result.stderr and result.stderr.count("\n") == 1
    assert not list((small_disk / "home" / "recordings").iterdir())


def test_a_budget_deletes_only_the_audio_on_its_own_disk(tmp_path):
    """Two recorders share one archive: the studio's budget, which its disk cannot meet
    (1 byte), deletes all the studio's audio and marks none of the office's deleted."""
    shared = f"sqlite:///{tmp_path / 'shared.db'}"
    office = Home(tmp_path / "office", shared, "office")
    studio = Home(tmp_path / "studio", shared, "studio")
    ingest([SHORT], office)
    ingest([MEETING], studio, segment_seconds=10.0, max_disk=1)
    con = sqlite3.connect(tmp_path / "shared.db")
    kept = con.execute(
        "SELECT s.recorder, count(*), count(g.deleted_at) FROM segments AS g "
        "JOIN sessions AS s ON s.id = g.session_id GROUP BY s.recorder ORDER BY s.recorder"
    ).fetchall()
    assert kept[0] == ("office", 1, 0)  # the office's audio: not deleted, not said to be
    assert kept[1][0] == "studio" and kept[1][1] == kept[1][2] >= 4  # the studio's: all gone
    hit = Archive(office).search("train to london")[0]
    assert len(Archive(office).moment(hit.id).frames)  # the office plays it
