"""Many recorders, one archive: PostgreSQL as the shared archive, beside SQLite.

Every test here runs against a real PostgreSQL server: a private cluster on
127.0.0.1 that the tests start (tests/postgres_server.py; `.ci/run` installs
Debian's postgresql), with a fresh database per test. Recorders are real
`pipeline` runs with their own data homes; the outage tests stop and start
their own cluster in the middle of a run.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text

from pipeline import errors
from pipeline.archive import Archive
from pipeline.config import Home
from pipeline.database import _alembic_config, current_revision, migrate, open_archive
from pipeline.fulltext import index_pairs
from pipeline.index import Indexer
from pipeline.phonetic import index_utterances
from pipeline.schema import time_key
from pipeline.search import search
from pipeline.supervisor import ingest

from .conftest import (
    DATA,
    MEETING,
    SHORT,
    archive_at,
    assert_each_sentence_once_in_place,
    running_postgres,
    sentences,
)
from .test_database import head
from .test_errors import assert_one_line
from .test_search import T0, add_session

ROOT = Path(__file__).resolve().parent.parent
CORPUS_DIR = DATA / "corpus"


def pg_home(tmp_path: Path, url: str, name: str = "home", recorder: str | None = None) -> Home:
    return Home(tmp_path / name, url, recorder).ensure()


# --- the schema on both databases ----------------------------------------------------


def test_migrations_build_the_schema_on_postgresql_from_empty_and_back(pg_url, tmp_path):
    engine = open_archive(pg_home(tmp_path, pg_url))
    assert current_revision(engine) == head()
    with engine.connect() as conn:
        tables = set(
            conn.scalars(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))
        )
        # frame counts pass 2**31 after 12 h at 48 kHz
        kind = conn.scalar(
            text(
                "SELECT data_type FROM information_schema.columns "
                "WHERE table_name = 'segments' AND column_name = 'offset'"
            )
        )
    assert {"sessions", "utterances", "words", "utterances_fts", "utterances_phonetic"} <= tables
    assert {"recorders", "phonetic_terms"} <= tables and kind == "bigint"
    cfg = _alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    with engine.connect() as conn:
        left = set(conn.scalars(text("SELECT tablename FROM pg_tables WHERE schemaname='public'")))
    assert left == {"alembic_version"}
    migrate(engine)
    assert current_revision(engine) == head()
    engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_an_archive_at_the_previous_version_is_upgraded_with_every_word_searchable(
    backend, request, tmp_path
):
    """Words written at schema 0007 are found after 0008, by phrase and by sound, and
    belong to the machine that migrated them."""
    url = request.getfixturevalue("pg_url") if backend == "postgresql" else None
    home = Home(tmp_path / "home", url).ensure()
    engine = archive_at(home, "0007")
    said = ["the budget review is on monday", "see you then"]
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO sessions (id, key, source_kind, source, started_at, rate, "
                "channels, frames, status, transcript_id) VALUES (1, 'old', 'file', "
                "'old.wav', :t0, 16000, 1, 320000, 'complete', 1)"
            ),
            {"t0": T0.replace(tzinfo=None) if backend == "sqlite" else T0},
        )
        conn.execute(
            text(
                "INSERT INTO transcripts (id, session_id, engine, version, created_at) "
                "VALUES (1, 1, 'test', '', :t0)"
            ),
            {"t0": T0.replace(tzinfo=None) if backend == "sqlite" else T0},
        )
        for i, line in enumerate(said):
            at = T0 + timedelta(seconds=10 * i)
            conn.execute(
                text(
                    'INSERT INTO utterances (id, session_id, start, "end", at, time_key, '
                    "text, engine, transcript_id) VALUES (:i, 1, :s, :e, :at, :k, :said, "
                    "'test', 1)"
                ),
                {
                    "i": i + 1,
                    "s": 10.0 * i,
                    "e": 10.0 * i + 5,
                    "at": at.replace(tzinfo=None) if backend == "sqlite" else at,
                    "k": time_key(at),
                    "said": line,
                },
            )
            for j, word in enumerate(line.split()):
                conn.execute(
                    text(
                        'INSERT INTO words (utterance_id, idx, text, start, "end", '
                        "confidence) VALUES (:u, :j, :w, :s, :e, 0.9)"
                    ),
                    {"u": i + 1, "j": j, "w": word, "s": 10.0 * i + j, "e": 10.0 * i + j + 0.5},
                )
        if backend == "sqlite":  # what the indexer of 0007 added (FTS5 triggers: the words)
            index_pairs(
                conn, [(time_key(T0 + timedelta(seconds=10 * i)), x) for i, x in enumerate(said)]
            )
            index_utterances(conn, [(i + 1, x.split()) for i, x in enumerate(said)])
    migrate(engine)
    assert current_revision(engine) == head()
    assert [h.text for h in search(engine, "budget review")] == ["the budget review is on monday"]
    assert [h.text for h in search(engine, "budjet reviews", fuzzy=True, min_score=0.5)][:1] == [
        "the budget review is on monday"
    ]
    import socket

    assert {h.recorder for h in search(engine, "see you")} == {socket.gethostname()}
    engine.dispose()


# --- the same answers on both --------------------------------------------------------


@pytest.fixture(scope="module")
def both(tmp_path_factory, postgres):
    """The meeting and the real-speech corpus ingested through the real processes into a
    SQLite home and into a PostgreSQL one: two archives of the very same words."""
    root = tmp_path_factory.mktemp("both")
    files = [root / "meeting.wav", *(root / p.name for p in sorted(CORPUS_DIR.rglob("*.wav")))]
    shutil.copy(MEETING, files[0])
    for wav in sorted(CORPUS_DIR.rglob("*.wav")):
        shutil.copy(wav, root / wav.name)
    url = postgres.create_database(f"both_{os.getpid()}")
    homes = [Home(root / "lite").ensure(), Home(root / "pg", url, "parity-pc").ensure()]
    for home in homes:
        report = ingest(files, home, segment_seconds=10.0)
        assert not report.failed and len(report.indexed) == len(files)
    return [Archive(h) for h in homes]


QUERIES = [  # (query, options): phrases, one word, prefixes, FTS5 syntax, filters, sounds
    ("quarterly sales report", {}),
    ("finance team", {}),
    ("the", {"fts": True}),
    ("rather", {}),
    ("to be", {}),
    ("fin*", {"fts": True}),
    ("re*", {"fts": True}),
    ("sales NOT finance", {"fts": True}),
    ("budget OR charity OR laptop", {"fts": True}),
    ('"rather cold" OR "amiable woman"', {"fts": True}),
    ("NEAR(sales finance, 3)", {"fts": True}),
    ("NEAR(sales finance, 2)", {"fts": True}),
    ("(coffee OR laptop) AND the", {"fts": True}),
    ("text:amiable", {"fts": True}),
    ("he might", {"limit": 2}),
    ("he might", {"source": "file", "device": "0920"}),
    ("quartrly sails reprt", {"fuzzy": True}),
    ("ill disposed young man", {"fuzzy": True}),
    ("mister john dashwood", {"fuzzy": True, "min_score": 0.5}),
    ("ever tried ever failed", {"fuzzy": True, "min_score": 0.4}),
]


FIND_NOTHING = {"sales NOT finance", "NEAR(sales finance, 2)"}  # said, but not like that


@pytest.mark.parametrize(("query", "options"), QUERIES, ids=[q for q, _ in QUERIES])
def test_both_databases_give_the_same_hits(both, query, options):
    lite, pg = both
    a = lite.search(query, **options)
    b = pg.search(query, **options)
    shown = [(h.id, h.words, h.match, h.start, h.end, h.score, h.at) for h in a]
    assert shown == [(h.id, h.words, h.match, h.start, h.end, h.score, h.at) for h in b]
    assert bool(a) != (query in FIND_NOTHING)  # and a query that finds nothing proves little


def test_ranked_search_finds_the_same_utterances_on_both(both):
    lite, pg = both
    a = {h.id for h in lite.search("the", fts=True, rank=True, limit=100)}
    b = {h.id for h in pg.search("the", fts=True, rank=True, limit=100)}
    assert a == b and len(a) > 5


def test_sessions_exports_neighbours_and_context_are_the_same_on_both(both):
    lite, pg = both
    strip = lambda s: (s.key[:8], s.source_kind, s.seconds, s.utterances, s.words, s.segments)  # noqa: E731
    assert [strip(s) for s in lite.sessions()] == [strip(s) for s in pg.sessions()]
    hit = lite.search("quarterly sales report")[0]
    assert lite.around(hit.id) == pg.around(hit.id)
    assert lite.context(hit, 5) == pg.context(hit, 5)
    for fmt in ("srt", "vtt"):
        assert lite.export(hit.session_id, fmt) == pg.export(hit.session_id, fmt)
    [a], [b] = lite.transcripts(hit.session_id), pg.transcripts(hit.session_id)
    assert a.lines == b.lines  # (session keys differ: each archive made its own)


@pytest.mark.parametrize(
    "query", ['"unbalanced', "sales AND", "NEAR(a b", "nosuchcol:budget", "AND OR", "sales)"]
)
def test_a_bad_fts_query_is_the_same_one_line_on_both(both, query):
    said = []
    for archive in both:
        with pytest.raises(errors.QueryError, match="--fts query") as info:
            archive.search(query, fts=True)
        said.append(str(info.value))
    assert said[0] == said[1] and "\n" not in said[0]


# --- many recorders ------------------------------------------------------------------


def run_pipeline(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_four_recorders_write_into_one_archive_and_everyone_finds_everything(pg_url, tmp_path, cli):
    """Four machines (separate data homes) ingest at 1x, like live audio, at once into one
    server; a searcher searches all along; each one's words carry its name."""
    names = ["office-pc", "lab-1", "lab-2", "kitchen"]
    runs = [
        run_pipeline(
            "ingest",
            str(SHORT),
            "--realtime",
            "--home",
            str(tmp_path / n),
            "--db",
            pg_url,
            "--recorder",
            n,
            "--jobs",
            "1",
        )  # fmt: skip
        for n in names
    ]
    searched = []
    stop = threading.Event()

    def searcher() -> None:  # a reader never waits for the writers
        archive = None
        while not stop.is_set():
            try:
                archive = archive or Archive(Home(tmp_path / "reader", pg_url))
                t0 = time.perf_counter()
                archive.search("train to london")
                searched.append(time.perf_counter() - t0)
            except errors.IndexerError:
                pass  # the schema is being made by the first recorder
            time.sleep(0.05)

    reader = threading.Thread(target=searcher)
    reader.start()
    for run in runs:
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
    stop.set()
    reader.join()
    assert searched and max(searched) < 2.0
    archive = Archive(Home(tmp_path / "reader", pg_url))
    hits = archive.search("train to london")
    assert sorted(h.recorder for h in hits) == sorted(names)
    assert [h.recorder for h in archive.search("train to london", recorder="lab-2")] == ["lab-2"]
    result = cli("search", "train to london", "--db", pg_url, "--recorder", "kitchen", "--json")
    assert result.exit_code == 0 and '"recorder": "kitchen"' in result.stdout
    listing = cli("sessions", "--db", pg_url).stdout  # each session says which machine
    assert all(f"│ {n} " in listing for n in names), listing
    status = cli("status", "--db", pg_url, "--home", tmp_path / "office-pc", "--json")
    import json

    doc = json.loads(status.stdout)
    listed = {r["name"]: r for r in doc["recorders"]}
    assert set(names) <= set(listed)
    for n in names:
        assert listed[n]["state"] == "stopped" and listed[n]["heartbeat_at"]
        assert listed[n]["sessions"] == 1


# --- the network is not reliable -----------------------------------------------------


@pytest.fixture
def own_postgres():
    """A cluster of this test's own, to stop and start in the middle of a run."""
    yield from running_postgres()


def test_a_server_restart_in_the_middle_of_a_session_loses_and_doubles_nothing(
    own_postgres, tmp_path
):
    """The archive's server stops 8 s into a 43 s meeting recorded at 1x and comes back
    20 s later: recording goes on, the words wait in the spool, then go in, in order."""
    url = own_postgres.create_database("outage")
    home = pg_home(tmp_path, url, recorder="office-pc")
    source = tmp_path / "meeting.wav"
    shutil.copy(MEETING, source)
    seen = []

    def outage() -> None:
        time.sleep(8)
        own_postgres.stop("fast")
        time.sleep(20)
        own_postgres.start()

    cut = threading.Thread(target=outage)
    cut.start()
    report = ingest([source], home, realtime=True, on_event=seen.append)
    cut.join()
    from pipeline.messages import ArchiveState

    away = [m for m in seen if isinstance(m, ArchiveState) and not m.online]
    assert away and away[0].waiting >= 1, "the outage was not noticed"
    assert "cannot reach the archive" in away[0].reason
    assert own_postgres_password(url) not in away[0].reason
    assert any(isinstance(m, ArchiveState) and m.online for m in seen), "never came back"
    assert report.archive is None and not report.failed and len(report.indexed) == 1
    assert not (home.root / "spool.db").exists() or sqlite3.connect(home.root / "spool.db").execute(
        "SELECT count(*) FROM spool"
    ).fetchone() == (0,)
    assert_each_sentence_once_in_place(Archive(home))


def test_a_run_that_ends_while_the_server_is_down_keeps_the_words_for_the_next(
    own_postgres, tmp_path, cli
):
    url = own_postgres.create_database("down")
    home = pg_home(tmp_path, url)
    open_archive(home).dispose()
    own_postgres.stop("fast")
    result = cli("ingest", SHORT, "--home", home.root, "--db", url)
    assert_warned_then_one_line(result, "wait in", "spool.db", "db flush")
    assert "cannot reach the archive" in result.stderr and own_postgres_password(url) not in (
        result.stderr + result.stdout
    )
    status = cli("status", "--home", home.root, "--db", url, "--json")
    import json

    doc = json.loads(status.stdout)
    assert doc["spool_waiting"] >= 1 and "cannot reach" in doc["archive_error"]
    own_postgres.start()
    flushed = cli("db", "flush", "--home", home.root, "--db", url)
    assert flushed.exit_code == 0 and "wrote" in flushed.stdout
    [hit] = Archive(home).search(sentences(SHORT)[0]["phrase"])
    assert hit.recorder == home.recorder_name
    again = cli("db", "flush", "--home", home.root, "--db", url)
    assert "the spool is empty" in again.stdout


def assert_warned_then_one_line(result, *phrases: str) -> None:
    """A run whose archive went away: a warning when it did, then one error line at the end
    (the words are safe in the spool, not yet searchable: exit 5), no traceback."""
    lines = result.stderr.splitlines()
    assert result.exit_code == errors.ArchiveUnreachableError.exit_code, result.output
    assert [line.split(":")[0] for line in lines] == ["warning", "error"], result.stderr
    assert "recording goes on" in lines[0] and "Traceback" not in result.output
    for phrase in phrases:
        assert phrase in lines[1]


def own_postgres_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).password


def test_a_wrong_password_keeps_recording_and_the_spool_waits_for_the_right_one(
    postgres, pg_url, tmp_path, cli
):
    from sqlalchemy.engine import make_url

    wrong = make_url(pg_url).set(password="not-the-password").render_as_string(False)
    home = Home(tmp_path / "home").ensure()
    result = cli("ingest", SHORT, "--home", home.root, "--db", wrong)
    assert_warned_then_one_line(result, "spool.db", "refused the login", "db flush")
    assert "not-the-password" not in result.stdout + result.stderr
    assert list((home.recordings).rglob("*.wav")), "the audio is kept"
    flushed = cli("db", "flush", "--home", home.root, "--db", pg_url)
    assert flushed.exit_code == 0, flushed.output
    assert len(Archive(Home(home.root, pg_url)).search(sentences(SHORT)[0]["phrase"])) == 1


# --- moving an archive in, and upgrading it ----------------------------------------


def test_a_single_machine_archive_is_copied_into_the_shared_one_once(
    meeting_home, pg_url, tmp_path, cli
):
    home = tmp_path / "copy-home"
    shutil.copytree(meeting_home.root, home)
    # another recorder is there already: the copy gets ids of the archive's own
    other = Home(tmp_path / "other", pg_url, "other-pc").ensure()
    engine = open_archive(other)
    add_session(engine, "elsewhere", T0, ["nothing to do with the meeting"])
    engine.dispose()
    result = cli("db", "copy", "--from", "sqlite", "--to", pg_url, "--home", home)
    assert result.exit_code == 0, result.output
    assert "copied 1 session" in result.stdout and "***" in result.stdout
    shared, local = Archive(Home(home, pg_url)), Archive(Home(home))
    for s in sentences(MEETING):
        [a] = local.search(s["phrase"])
        [b] = shared.search(s["phrase"])
        assert (a.words, a.match, a.start, a.end, a.at) == (b.words, b.match, b.start, b.end, b.at)
        assert b.segment == a.segment  # the audio is where it was
    assert shared.search("quartrly sails reprt", fuzzy=True)
    again = cli("db", "copy", "--from", "sqlite", "--to", pg_url, "--home", home)
    assert again.exit_code == 0 and "copied 0 sessions" in again.stdout
    assert "1 already there" in again.stdout
    same = cli("db", "copy", "--from", "sqlite", "--to", "sqlite", "--home", home)
    assert_one_line(same, errors.ConfigError.exit_code, "the same archive")


def test_db_upgrade_says_what_it_did(pg_url, tmp_path, cli):
    first = cli("db", "upgrade", "--db", pg_url, "--home", tmp_path / "h")
    assert first.exit_code == 0 and f"schema none → {head()}" in first.stdout
    assert "***" in first.stdout and own_postgres_password(pg_url) not in first.stdout
    second = cli("db", "upgrade", "--db", pg_url, "--home", tmp_path / "h")
    assert f"already at {head()}" in second.stdout


# --- errors: one line, no password ----------------------------------------------------


def test_a_server_that_is_not_there_is_one_line(cli, tmp_path):
    from .postgres_server import free_port

    url = f"postgresql://someone:s3cret@127.0.0.1:{free_port()}/pipeline"
    result = cli("search", "budget", "--db", url, "--home", tmp_path / "h")
    assert_one_line(result, errors.IndexerError.exit_code, "cannot reach the archive")
    assert "s3cret" not in result.output and "***" in result.stderr


@pytest.mark.parametrize(
    ("url", "phrase"),
    [("mysql://x@y/z", "postgresql:// or sqlite:///"), ("postgresql://x@y", "name the database")],
)
def test_a_bad_database_url_is_one_line(cli, tmp_path, url, phrase):
    result = cli("search", "budget", "--db", url, "--home", tmp_path / "h")
    assert_one_line(result, errors.ConfigError.exit_code, "--db", phrase)


def test_the_database_url_comes_from_the_environment_and_its_password_is_never_shown(
    cli, monkeypatch, pg_url, tmp_path
):
    monkeypatch.setenv("PIPELINE_DB", pg_url)
    shown = cli("config", "show")
    assert "PIPELINE_DB" in shown.stdout and own_postgres_password(pg_url) not in shown.stdout
    assert cli("db", "upgrade", "--home", tmp_path / "h").exit_code == 0
    engine = open_archive(Home(tmp_path / "h", pg_url))
    Indexer(engine, recorder="env-pc").write([])
    assert current_revision(engine) == head()
    engine.dispose()


def test_the_password_can_come_from_a_pgpass_file(pg_url, tmp_path, monkeypatch):
    from sqlalchemy.engine import make_url

    url = make_url(pg_url)
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"{url.host}:{url.port}:{url.database}:{url.username}:{url.password}\n")
    pgpass.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(pgpass))
    bare = f"postgresql://{url.username}@{url.host}:{url.port}/{url.database}"
    assert "@" in bare and ":" + url.password not in bare
    engine = open_archive(Home(tmp_path / "h", bare))
    assert current_revision(engine) == head()
    engine.dispose()


def test_the_live_view_says_when_the_archive_is_away_and_when_it_is_back(tmp_path):
    from datetime import UTC, datetime
    from io import StringIO

    from rich.console import Console

    from pipeline.liveview import LiveState
    from pipeline.messages import ArchiveState

    state = LiveState(source="system", engine="pocketsphinx:en-us", recordings=tmp_path)

    def shown() -> str:
        console = Console(file=StringIO(), width=140)
        console.print(state)
        return console.file.getvalue()

    state.apply(ArchiveState(False, 3, "cannot reach the archive", datetime.now(UTC)))
    assert "archive out of reach since" in shown() and "3 index writes spooled" in shown()
    state.apply(ArchiveState(True, 0, "", None))
    assert "out of reach" not in shown()
