"""Compaction: old segments re-encoded to FLAC or Opus; play, clip, search work on all."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import soundfile as sf

from pipeline.archive import Archive
from pipeline.compact import COMPACTING_SUFFIX
from pipeline.config import Home
from pipeline.repair import repair
from pipeline.supervisor import ingest

from .conftest import MEETING, MEETING_FLAC, sentences
from .conftest import segment_files as in_folder


def ingested(tmp_path: Path, source: Path = MEETING, **options) -> Home:
    home = Home(tmp_path / "home").ensure()
    report = ingest([source], home, segment_seconds=10.0, **options)
    assert len(report.indexed) == 1
    return home


def segment_files(home: Home) -> list[Path]:
    return [f for folder in sorted(home.recordings.iterdir()) for f in in_folder(folder)]


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(np.dot(a, b) / np.sqrt(np.dot(a, a) * np.dot(b, b)))


def moment(archive: Archive, phrase: str, tmp_path: Path) -> tuple[np.ndarray, int]:
    hit = archive.search(phrase)[0]
    tmp_path.mkdir(exist_ok=True)
    out = archive.clip(hit.id, tmp_path / f"{phrase}.wav", before=1.0, after=1.0)
    return sf.read(str(out), dtype="int16", always_2d=True)


def test_flac_compaction_is_lossless_and_keeps_everything_findable(cli, tmp_path):
    home = ingested(tmp_path)
    before = {p: moment(Archive(home.root), p, tmp_path / "a") for p in ("lecture on climate",)}
    wav_bytes = sum(f.stat().st_size for f in segment_files(home))

    result = cli("compact", "--home", home.root, "--format", "flac", "--older-than", "0")
    assert result.exit_code == 0, result.output
    assert "5 segments" in result.output
    files = segment_files(home)
    assert files and all(f.suffix == ".flac" for f in files)
    assert sum(f.stat().st_size for f in files) < wav_bytes * 0.8
    archive = Archive(home.root)
    for phrase, (data, rate) in before.items():
        again, rate_again = moment(archive, phrase, tmp_path / "b")
        assert rate_again == rate and np.array_equal(again, data)  # bit for bit
    for s in sentences(MEETING):
        assert archive.search(s["phrase"])
    assert repair(home) == []  # nothing left behind


def test_opus_of_a_44k_stereo_session_plays_back_at_the_sessions_rate(cli, tmp_path):
    home = ingested(tmp_path, MEETING_FLAC)
    archive = Archive(home.root)
    data, rate = moment(archive, "lecture on climate", tmp_path / "a")

    result = cli("compact", "--home", home.root, "--format", "opus", "--older-than", "0s")
    assert result.exit_code == 0, result.output
    files = segment_files(home)
    assert all(f.suffix == ".opus" and sf.info(str(f)).samplerate == 48000 for f in files)
    [session] = archive.sessions()
    assert session.rate == 44100 and session.seconds == sf.info(str(MEETING_FLAC)).duration
    again, rate_again = moment(archive, "lecture on climate", tmp_path / "b")
    assert rate_again == 44100 and again.shape == data.shape  # across a segment edge
    assert correlation(again, data) > 0.9  # lossy, but the same sound at the same time
    assert repair(home) == []


def test_only_segments_old_enough_are_compacted_and_a_dry_run_changes_nothing(cli, tmp_path):
    home = ingested(tmp_path)
    files = segment_files(home)
    result = cli("compact", "--home", home.root, "--format", "opus", "--older-than", "1h")
    assert "nothing to compact" in result.output and segment_files(home) == files
    result = cli("compact", "--home", home.root, "--older-than", "0", "--dry-run")
    assert result.output.count("would compact") == 5 and segment_files(home) == files


def test_a_recorder_compacts_as_it_goes(tmp_path):
    home = ingested(tmp_path, compact="flac", compact_after=0.0, realtime=True)
    files = segment_files(home)
    assert sum(f.suffix == ".flac" for f in files) >= 3  # the last ones may be too new
    archive = Archive(home.root)
    for s in sentences(MEETING):
        assert len(archive.search(s["phrase"])) == 1


def test_repair_removes_what_a_compaction_cut_short_left(tmp_path):
    home = ingested(tmp_path)
    first, second = segment_files(home)[:2]
    # a crash after the new file was renamed into place, before the archive pointed at it
    shutil.copy(first, first.with_suffix(".flac"))
    # a crash while the new file was being written
    tmp = second.with_name(second.stem + ".opus" + COMPACTING_SUFFIX)
    tmp.write_bytes(b"half an opus file")
    actions = repair(home, dry_run=True)
    assert [a.kind for a in actions] == ["clean", "clean"]
    assert tmp.exists()
    repair(home)
    assert not tmp.exists() and not first.with_suffix(".flac").exists() and first.exists()
    assert repair(home) == []
