"""The disk budget: the oldest audio goes first, the words stay, nothing is deleted silently."""

from __future__ import annotations

import os
import shutil
import sqlite3
import time

import pytest
import soundfile as sf

from pipeline.archive import Archive
from pipeline.errors import ReplayError
from pipeline.retention import recordings_bytes
from pipeline.supervisor import ingest

from .conftest import MEETING, SHORT


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
