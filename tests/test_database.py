"""The archive's database: Alembic migrations (from a checkout and from a wheel), settings."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command

from pipeline import database
from pipeline.database import _alembic_config, current_revision, migrate, open_archive
from pipeline.errors import IndexerError
from pipeline.schema import time_key

from .conftest import archive_at

ROOT = Path(__file__).resolve().parent.parent
TABLES = {
    "sessions",
    "segments",
    "transcripts",
    "utterances",
    "words",
    "alternatives",
    "utterances_fts",
    "alembic_version",
}


def head() -> str:
    """The newest migration's revision."""
    from alembic.script import ScriptDirectory

    cfg = _alembic_config(database.create_engine("sqlite://"))
    return ScriptDirectory.from_config(cfg).get_current_head()


def tables(path: Path) -> set[str]:
    rows = sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type='table'")
    return {r[0] for r in rows}


def test_migrations_build_the_schema_with_wal_and_fts5(db, home):
    assert tables(home.db_path) >= TABLES
    with db.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == database.BUSY_TIMEOUT_MS
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    sql = (
        sqlite3.connect(home.db_path)
        .execute("SELECT sql FROM sqlite_master WHERE name='utterances_fts'")
        .fetchone()[0]
    )
    assert "fts5" in sql and "remove_diacritics" in sql


def test_migrating_twice_changes_nothing(db, home):
    before = sqlite3.connect(home.db_path).execute("SELECT sql FROM sqlite_master").fetchall()
    migrate(db)
    open_archive(home)
    after = sqlite3.connect(home.db_path).execute("SELECT sql FROM sqlite_master").fetchall()
    assert before == after and current_revision(db) == head()


def test_downgrade_to_empty_and_back(db, home):
    cfg = _alembic_config(db)
    with db.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    assert tables(home.db_path) == {"alembic_version"}
    migrate(db)
    assert tables(home.db_path) >= TABLES


def test_words_from_before_transcripts_become_each_sessions_first_transcript(home):
    """An archive written before migration 0004 keeps every word, searchable as before."""
    engine = archive_at(home, "0003")
    con = sqlite3.connect(home.db_path)
    con.executescript(
        "INSERT INTO sessions (id, key, source_kind, source, started_at, rate, channels, "
        "frames, status) VALUES (7, 'k', 'file', 'a.wav', '2026-01-05 09:00:00.000000', "
        "16000, 1, 160000, 'complete');"
        "INSERT INTO utterances (id, session_id, start, end, at, text, engine) VALUES "
        "(1, 7, 1.0, 2.0, '2026-01-05 09:00:01.000000', 'the budget review', 'vosk:x'), "
        "(2, 7, 3.0, 4.0, '2026-01-05 09:00:03.000000', 'see you monday', 'pocketsphinx:en-us');"
    )
    con.commit()
    migrate(engine)
    assert con.execute("SELECT id, session_id, engine FROM transcripts").fetchall() == [
        (1, 7, "vosk:x")  # named after the session's first utterance
    ]
    assert con.execute("SELECT transcript_id FROM sessions").fetchall() == [(1,)]
    assert con.execute("SELECT DISTINCT transcript_id FROM utterances").fetchall() == [(1,)]
    from pipeline.search import search

    assert [h.id for h in search(engine, "budget review")] == [1]
    assert [h.engine for h in search(engine, "see you")] == ["pocketsphinx:en-us"]
    engine.dispose()


def fts_sql(path: Path) -> str:
    row = (
        sqlite3.connect(path)
        .execute("SELECT sql FROM sqlite_master WHERE name = 'utterances_fts'")
        .fetchone()
    )
    return row[0]


# A session (id 7) with its default transcript (id 3), as raw SQL for old schemas
SESSION_7 = (
    "INSERT INTO sessions (id, key, source_kind, source, started_at, rate, channels, "
    "frames, status, transcript_id) VALUES (7, 'k', 'file', 'a.wav', "
    "'2026-01-05 09:00:00.000000', 16000, 1, 160000, 'complete', 3);"
    "INSERT INTO transcripts (id, session_id, engine, version, created_at) "
    "VALUES (3, 7, 'vosk:x', '', '2026-01-05 09:00:00.000000');"
)


def test_the_fts_index_is_rebuilt_with_prefix_indexes_and_keeps_every_word(home):
    """Migration 0005 rebuilds an archive's FTS5 table; old words, new words, deletes all work."""
    engine = archive_at(home, "0004")
    assert "prefix" not in fts_sql(home.db_path)
    con = sqlite3.connect(home.db_path)
    con.executescript(
        SESSION_7
        + "INSERT INTO utterances (id, session_id, start, end, at, text, engine, transcript_id) "
        "VALUES (1, 7, 1.0, 2.0, '2026-01-05 09:00:01.000000', 'the budget review', "
        "'vosk:x', 3), (2, 7, 3.0, 4.0, '2026-01-05 09:00:03.000000', 'see you monday', "
        "'vosk:x', 3);"
    )
    con.commit()
    migrate(engine)
    assert current_revision(engine) == head()
    sql = fts_sql(home.db_path)
    assert "prefix='2 3 4'" in sql and "remove_diacritics 2" in sql
    assert "content='utterances'" in sql and "content_rowid='time_key'" in sql  # 0007
    from pipeline.search import search

    assert [h.id for h in search(engine, "budget review")] == [1]
    assert [h.id for h in search(engine, "see you")] == [2]

    def prefix(stem: str) -> list[int]:  # each length has its own prefix index
        q = (
            "SELECT u.id FROM utterances_fts JOIN utterances AS u ON u.time_key = "
            "utterances_fts.rowid WHERE utterances_fts MATCH ? ORDER BY utterances_fts.rowid"
        )
        return [r[0] for r in con.execute(q, (stem,))]

    assert prefix("bu*") == prefix("bud*") == prefix("budg*") == prefix("budge*") == [1]
    # the triggers still keep the index in step with utterances
    con.execute(
        "INSERT INTO utterances (id, session_id, start, end, at, time_key, text, engine, "
        "transcript_id) VALUES (3, 7, 5.0, 6.0, '2026-01-05 09:00:05.000000', "
        f"{time_key(datetime(2026, 1, 5, 9, 0, 5, tzinfo=UTC))}, 'budget cuts', 'vosk:x', 3)"
    )
    con.execute("UPDATE utterances SET text = 'see you tuesday' WHERE id = 2")
    con.execute("DELETE FROM utterances WHERE id = 1")
    con.commit()
    assert prefix("budg*") == [3]
    # (one word: utterances_fts itself; phrases use the pairs the indexer writes)
    assert [h.id for h in search(engine, "tuesday")] == [2]
    assert search(engine, "monday") == []
    con.execute("INSERT INTO utterances_fts(utterances_fts) VALUES ('integrity-check')")
    con.commit()
    # and a downgrade gives back the table 0001 made, still complete
    cfg = _alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0004")
    assert "prefix" not in fts_sql(home.db_path)
    q = "SELECT rowid FROM utterances_fts WHERE utterances_fts MATCH ?"  # rowids are ids again
    assert [r[0] for r in con.execute(q, ('"budget cuts"',))] == [3]
    con.execute("INSERT INTO utterances_fts(utterances_fts) VALUES ('integrity-check')")
    engine.dispose()


def test_the_fts_index_is_rebuilt_in_time_order_and_keeps_every_word(home):
    """Migration 0007 gives every utterance a unique time key in the order they were said,
    and the FTS5 rowids follow it: newest first is newest said, not newest indexed."""
    engine = archive_at(home, "0006")
    con = sqlite3.connect(home.db_path)
    con.executescript(
        # ids against time: 1 was said last; 2 and 3 at the very same microsecond
        SESSION_7
        + "INSERT INTO utterances (id, session_id, start, end, at, text, engine, transcript_id) "
        "VALUES (1, 7, 9.0, 9.5, '2026-01-05 09:00:09.000000', 'budget review late', "
        "'vosk:x', 3), (2, 7, 3.0, 4.0, '2026-01-05 09:00:03.250000', 'budget review', "
        "'vosk:x', 3), (3, 7, 3.0, 4.0, '2026-01-05 09:00:03.250000', 'budget review', "
        "'vosk:x', 3);"
    )
    for utterance, text in con.execute("SELECT id, text FROM utterances").fetchall():
        add_words(con, utterance, text)
    con.commit()
    migrate(engine)
    keys = dict(con.execute("SELECT id, time_key FROM utterances").fetchall())
    said = time_key(datetime(2026, 1, 5, 9, 0, 3, 250000, tzinfo=UTC))
    assert keys == {2: said, 3: said + 1, 1: time_key(datetime(2026, 1, 5, 9, 0, 9, tzinfo=UTC))}
    from pipeline.search import search

    assert [h.id for h in search(engine, "budget review")] == [1, 3, 2]
    con.execute("INSERT INTO utterances_fts(utterances_fts) VALUES ('integrity-check')")
    # a deleted utterance's word pairs stay (contentless FTS5) but never make a hit
    con.execute("DELETE FROM utterances WHERE id = 1")
    con.execute(
        "INSERT INTO utterances (id, session_id, start, end, at, time_key, text, engine, "
        f"transcript_id) SELECT 4, 7, 9.0, 9.5, started_at, {keys[1]}, 'budget', 'vosk:x', 3 "
        "FROM sessions WHERE id = 7"
    )
    add_words(con, 4, "budget")
    con.commit()
    assert [h.id for h in search(engine, "budget review")] == [3, 2]
    assert [h.id for h in search(engine, "budget review", limit=1)] == [3]
    engine.dispose()


def add_words(con: sqlite3.Connection, utterance: int, text: str) -> None:
    """The words of an utterance written by hand, a second each."""
    start = con.execute("SELECT start FROM utterances WHERE id = ?", (utterance,)).fetchone()[0]
    con.executemany(
        "INSERT INTO words (utterance_id, idx, text, start, end, confidence) "
        "VALUES (?, ?, ?, ?, ?, 0.9)",
        [(utterance, i, w, start + i, start + i + 0.5) for i, w in enumerate(text.split())],
    )


def test_an_archive_from_a_newer_pipeline_is_refused(db, home):
    con = sqlite3.connect(home.db_path)
    con.execute("UPDATE alembic_version SET version_num = '9999'")
    con.commit()
    with pytest.raises(IndexerError, match="newer pipeline"):
        migrate(db)


def test_migrations_run_from_an_installed_wheel(tmp_path):
    """Build the wheel, install it apart from the checkout, migrate a fresh archive with it."""
    dist = tmp_path / "dist"
    subprocess.run(["uv", "build", "--wheel", "-o", str(dist), "-q"], cwd=ROOT, check=True)
    [wheel] = dist.glob("pipeline-*.whl")
    site = tmp_path / "site"
    subprocess.run(
        ["uv", "pip", "install", "--no-deps", "--target", str(site), str(wheel), "-q"],
        check=True,
        cwd=tmp_path,
    )
    assert (site / "pipeline" / "_alembic" / "env.py").is_file()
    script = textwrap.dedent("""
        import sys
        from pathlib import Path
        import pipeline
        from pipeline.config import Home
        from pipeline.database import migrations_dir, open_archive, current_revision
        site = Path(sys.argv[1])
        assert Path(pipeline.__file__).is_relative_to(site), pipeline.__file__
        assert migrations_dir().is_relative_to(site), migrations_dir()
        engine = open_archive(Home(Path(sys.argv[2])))
        print(current_revision(engine))
    """)
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run(
        [sys.executable, "-c", script, str(site), str(tmp_path / "home")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == head()
    assert tables(tmp_path / "home" / "db" / "pipeline.db") >= TABLES


def test_verbose_says_when_the_schema_changes_without_alembics_chatter(tmp_path):
    """-v shows what pipeline does (creating or upgrading a schema), not the dozen lines
    Alembic logs at INFO about setting itself up on every command; -vv shows those."""

    def run(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "pipeline", *args, "--home", str(tmp_path)],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        assert done.returncode == 0, done.stderr
        return done.stderr

    created = run("-v", "db", "upgrade")
    assert created.splitlines() == [
        f"INFO pipeline.database: creating the schema of {tmp_path / 'db' / 'pipeline.db'} "
        f"(revision {head()})"
    ]
    assert run("-v", "db", "upgrade") == ""  # nothing to do, nothing said
    db = database.create_engine(f"sqlite:///{tmp_path / 'db' / 'pipeline.db'}")
    cfg = _alembic_config(db)
    with db.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0009")
    db.dispose()
    upgraded = run("-v", "db", "upgrade")
    assert upgraded.splitlines() == [
        f"INFO pipeline.database: upgrading the schema of {tmp_path / 'db' / 'pipeline.db'} "
        f"from revision 0009 to {head()}"
    ]
    assert "alembic.runtime" in run("-vv", "sessions")
