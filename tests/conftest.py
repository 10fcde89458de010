"""Shared fixtures: a fresh data home, a migrated database, real speech, an ingested archive."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.config import Home
from pipeline.database import open_archive
from pipeline.supervisor import ingest

from .pulse_server import Pulse

DATA = Path(__file__).parent / "data"
MEETING = DATA / "festival" / "meeting.wav"
MEETING_FLAC = DATA / "festival" / "meeting_44k_stereo.flac"
SHORT = DATA / "festival" / "short.wav"
KOREAN = DATA / "korean" / "ko.wav"
BAD = DATA / "bad"


def sentences(wav: Path) -> list[dict]:
    """The fixture's sentences with their exact start/end seconds and key phrase."""
    return json.loads(wav.with_suffix(".json").read_text())["sentences"]


def segment_files(folder: Path) -> list[Path]:
    """A session folder's audio files in time order (any left ``.part`` too), without its
    ``session.json``."""
    from pipeline.capture import SESSION_FILE

    return sorted(f for f in folder.iterdir() if f.name != SESSION_FILE)


def archive_at(home: Home, revision: str):
    """An engine on a database the real migrations brought only to ``revision``: an
    archive written by an older pipeline."""
    from alembic import command

    from pipeline.database import _alembic_config, open_database

    engine = open_database(home)
    cfg = _alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    return engine


def assert_each_sentence_once_in_place(archive, model: str | None = None) -> None:
    """Every sentence of the meeting found exactly once (none lost, none doubled), in place."""
    for sentence in sentences(MEETING):
        hits = archive.search(sentence["phrase"], model=model)
        assert len(hits) == 1, sentence["phrase"]
        assert sentence["start"] - 1.0 <= hits[0].start <= sentence["end"]


@pytest.fixture
def home(tmp_path: Path) -> Home:
    """A fresh, empty data home."""
    return Home(tmp_path / "home").ensure()


@pytest.fixture
def db(home: Home):
    """An engine on a database that the real Alembic migrations built."""
    engine = open_archive(home)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def meeting_home(tmp_path_factory) -> Home:
    """An archive with meeting.wav ingested through the real three processes.

    Segments are 10 s long so that moments cross segment edges. Tests only read it.
    """
    home = Home(tmp_path_factory.mktemp("meeting") / "home").ensure()
    source = home.root.parent / "meeting.wav"
    shutil.copy(MEETING, source)
    report = ingest([source], home, segment_seconds=10.0)
    assert not report.failed and len(report.indexed) == 1
    return home


@pytest.fixture(scope="session")
def two_meetings_home(tmp_path_factory) -> Home:
    """An archive with meeting.wav ingested twice, as two sessions exactly an hour apart.

    Every phrase of the meeting is found twice. Tests only read it.
    """
    home = Home(tmp_path_factory.mktemp("two_meetings") / "home").ensure()
    copies = [home.root.parent / "earlier.wav", home.root.parent / "later.wav"]
    for copy, age in zip(copies, (3600, 0), strict=True):
        shutil.copy(MEETING, copy)
        when = MEETING.stat().st_mtime - age  # a session ends at its file's mtime
        os.utime(copy, (when, when))
    report = ingest(copies, home, segment_seconds=10.0)
    assert not report.failed and len(report.indexed) == 2
    return home


@pytest.fixture
def cli():
    """Invoke the CLI in-process; stderr is kept apart from stdout."""
    from pipeline import cli as module
    from pipeline.cli import app

    module.out.width = module.err.width = 200  # a wide terminal: table cells do not wrap
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args])

    return invoke


# --- a real PulseAudio server for live capture ------------------------------------


@pytest.fixture(scope="session")
def pulse(tmp_path_factory) -> Pulse:
    """A real PulseAudio server (null sinks `speakers`, `headphones`, mic `testmic`)."""
    yield from running_pulse(tmp_path_factory.mktemp("xdg"))


@pytest.fixture
def own_pulse(tmp_path_factory) -> Pulse:
    """A server of this test's own, to stop and start in the middle of a recording."""
    yield from running_pulse(tmp_path_factory.mktemp("xdg"))


def running_pulse(runtime: Path):
    """Start a private PulseAudio daemon in ``runtime``, point clients at it, yield it."""
    if shutil.which("pulseaudio") is None:
        pytest.skip("PulseAudio is not installed here (.ci/run installs it)")
    runtime.chmod(0o700)
    server = Pulse(runtime)
    patch = pytest.MonkeyPatch()
    for key, value in server.env.items():
        patch.setenv(key, value)
    patch.delenv("PULSE_SERVER", raising=False)
    server.start()
    yield server
    server.stop()
    patch.undo()


# --- a real PostgreSQL server for the shared archive --------------------------------


def running_postgres():
    """Start a private PostgreSQL cluster on 127.0.0.1 (Debian's server programs, our own
    data directory and port); yield it, then stop it by its pid and remove it."""
    from .postgres_server import Postgres, server_bin

    found = server_bin()
    if found is None:
        pytest.skip("PostgreSQL is not installed here (.ci/run installs it)")
    server = Postgres(found)
    server.init()
    server.start()
    yield server
    server.destroy()


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL cluster the session's tests share (each makes its own database)."""
    yield from running_postgres()


@pytest.fixture
def pg_url(postgres, request) -> str:
    """A fresh, empty database in the private cluster; its URL (with the password)."""
    name = "t_" + "".join(ch if ch.isalnum() else "_" for ch in request.node.name)[:50].lower()
    name += "_" + os.urandom(3).hex()
    return postgres.create_database(name)
