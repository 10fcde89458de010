"""Bad input: one line on stderr that says what to do, a non-zero exit, nothing lost."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
from pathlib import Path

import pytest

import pipeline
from pipeline import database, errors
from pipeline.archive import Archive
from pipeline.supervisor import ingest

from .conftest import BAD, SHORT


def assert_one_line(result, exit_code: int, *phrases: str) -> None:
    assert result.exit_code == exit_code, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output
    for phrase in phrases:
        assert phrase in result.stderr


def test_every_error_class_is_exported_from_the_package():
    for name in errors.__all__:
        assert getattr(pipeline, name) is getattr(errors, name)
        assert issubclass(getattr(errors, name), pipeline.PipelineError)
    codes = {getattr(errors, n).exit_code for n in errors.__all__}
    assert 0 not in codes


@pytest.mark.parametrize(
    ("name", "phrase"),
    [
        ("missing.wav", "no such file"),
        ("not_audio.wav", "is not audio"),
        ("empty.wav", "is empty"),
        ("no_frames.wav", "holds no audio frames"),
    ],
)
def test_a_bad_file_is_one_line(cli, home, name, phrase):
    result = cli("ingest", BAD / name, "--home", home.root)
    assert_one_line(result, errors.CaptureError.exit_code, phrase, name)


def test_a_directory_is_one_line(cli, home):
    result = cli("ingest", BAD, "--home", home.root)
    assert_one_line(result, errors.CaptureError.exit_code, "is a folder")


def test_one_bad_file_among_good_ones_indexes_the_good_ones(cli, home):
    result = cli("ingest", SHORT, BAD / "not_audio.wav", SHORT, "--home", home.root)
    assert result.exit_code == errors.PartialFailure.exit_code
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and "not_audio.wav" in lines[0] and "1 of 3 files" in lines[1]
    assert result.stdout.count("indexed") == 2
    assert len(Archive(home).search("train to london")) == 2


def test_a_truncated_wav_keeps_what_can_be_read(home):
    report = ingest([BAD / "truncated.wav"], home)
    assert not report.failed
    assert 0 < report.indexed[0].seconds < 0.2


def test_a_missing_model_path_is_one_line(cli, home, tmp_path):
    result = cli("ingest", SHORT, "--model", tmp_path / "nope", "--home", home.root)
    assert_one_line(result, errors.ModelError.exit_code, "no Vosk model at")
    result = cli("ingest", SHORT, "--model", SHORT, "--home", home.root)
    assert_one_line(result, errors.ModelError.exit_code, "is a file")
    result = cli("ingest", SHORT, "--model", tmp_path, "--home", home.root)
    assert_one_line(result, errors.ModelError.exit_code, "does not look like a Vosk model")


def test_unknown_id_is_one_line(cli, meeting_home, tmp_path):
    for command in (["play", "424242"], ["clip", "424242", "-o", tmp_path / "x.wav"]):
        result = cli(*command, "--home", meeting_home.root)
        assert_one_line(result, errors.NotFoundError.exit_code, "no hit with id 424242")


def test_search_before_anything_was_ingested_is_one_line(cli, home):
    result = cli("search", "anything", "--home", home.root)
    assert_one_line(result, errors.IndexerError.exit_code, "pipeline ingest")


def test_a_locked_database_is_one_line_and_loses_nothing(cli, home, monkeypatch):
    ingest([SHORT], home)
    monkeypatch.setattr(database, "BUSY_TIMEOUT_MS", 300)
    holder = sqlite3.connect(home.db_path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        result = cli("ingest", SHORT, "--home", home.root)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert_one_line(result, errors.IndexerError.exit_code, "is locked", "try again")
    assert len(Archive(home).search("train to london")) == 1


@contextlib.contextmanager
def immutable(*paths: Path):
    """chattr +i: read-only even for root (who ignores permission bits)."""
    done = []
    try:
        for p in paths:
            if subprocess.run(["chattr", "+i", str(p)], capture_output=True).returncode:
                pytest.skip("chattr +i is not available on this filesystem")
            done.append(p)
        yield
    finally:
        for p in done:
            subprocess.run(["chattr", "-i", str(p)], check=True)


def test_a_read_only_database_is_one_line_and_loses_nothing(cli, home):
    ingest([SHORT], home)
    con = sqlite3.connect(home.db_path)
    con.execute("PRAGMA journal_mode = DELETE")  # fold the WAL in; no side files needed
    con.close()
    with immutable(home.db_path, home.db_path.parent):
        result = cli("ingest", SHORT, "--home", home.root)
        assert_one_line(result, errors.IndexerError.exit_code, "read-only")
        found = cli("search", "train to london", "--home", home.root)
    assert found.exit_code == 0 and "london" in found.stdout
    assert len(Archive(home).search("train to london")) == 1


def test_a_file_that_is_not_a_database_is_one_line(cli, home):
    home.db_path.write_text("this is not sqlite " * 100)
    result = cli("search", "anything", "--home", home.root)
    assert_one_line(result, errors.IndexerError.exit_code, "not a pipeline database")


def test_a_damaged_database_is_rebuilt_as_its_error_says(cli, home):
    """The advice works: moved aside, `repair` gives back every word from the recordings,
    and each session what it was (its source, and the time of its first frame)."""
    ingest([SHORT], home)
    archive = Archive(home)
    [before] = archive.sessions()
    archive.engine.dispose()  # its connections closed, so the file can leave WAL mode
    con = sqlite3.connect(home.db_path)
    con.execute("PRAGMA journal_mode = DELETE")  # one file, no WAL beside it
    con.close()
    with home.db_path.open("r+b") as f:  # a disk error: the schema pages are zeros
        f.write(b"\0" * 8192)
    result = cli("search", "train to london", "--home", home.root)
    assert_one_line(result, errors.IndexerError.exit_code, "move it aside, and `pipeline repair`")
    home.db_path.rename(home.db_path.with_suffix(".damaged"))
    assert cli("repair", "--home", home.root).exit_code == 0
    [hit] = Archive(home).search("train to london", source="file", device="short.wav")
    assert hit.text == "the next train to london leaves at noon today"
    [after] = Archive(home).sessions()
    assert (after.key, after.source_kind, after.source) == (before.key, "file", str(SHORT))
    assert (after.started_at, after.seconds) == (before.started_at, before.seconds)


def test_a_home_that_is_a_file_is_one_line(cli, tmp_path):
    (tmp_path / "file").write_text("x")
    result = cli("search", "anything", "--home", tmp_path / "file")
    assert_one_line(result, errors.ConfigError.exit_code, "is a file")


def test_a_tiny_segment_length_is_refused(cli, home):
    result = cli("ingest", SHORT, "--segment-seconds", "0.01", "--home", home.root)
    assert_one_line(result, errors.ConfigError.exit_code, "--segment-seconds")
