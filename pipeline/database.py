"""Opening the archive's database: connection settings, migrations, errors.

The archive is the data home's SQLite file, or a PostgreSQL database that
many recorders share (``--db postgresql://…``). Every process opens it
through :func:`open_database`: for SQLite with WAL mode (readers never wait
for the single writer), a busy timeout and foreign keys; for PostgreSQL
through psycopg, with a connect timeout and a check of each pooled
connection before use (a server restart must not fail the next write).
:func:`migrate` runs Alembic's migrations, found inside the package when
installed from a wheel and in the repository's ``alembic/`` when run from a
checkout; on PostgreSQL under an advisory lock, so recorders starting
together upgrade it once. :func:`db_errors` turns the drivers' failures into
one-line :class:`~pipeline.errors.IndexerError`s where the database is used;
a server that cannot be reached, or refuses the login, is an
:class:`~pipeline.errors.ArchiveUnreachableError` (a recorder spools then).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from .config import Home, shown_url
from .errors import ArchiveUnreachableError, DatabaseLockedError, IndexerError

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # Alembic is imported where it is used: half a second no child needs
    from alembic.config import Config

BUSY_TIMEOUT_MS = 10_000
CONNECT_TIMEOUT_SECONDS = 5
MIGRATION_LOCK = 0x706970656C696E65  # "pipeline": recorders starting together migrate once
PACKAGE_DIR = Path(__file__).resolve().parent


def migrations_dir() -> Path:
    """The Alembic script folder: packaged copy first, then the checkout's."""
    for candidate in (PACKAGE_DIR / "_alembic", PACKAGE_DIR.parent / "alembic"):
        if (candidate / "env.py").is_file():
            return candidate
    raise IndexerError("pipeline's database migrations are missing; reinstall pipeline")


def _sqlite_pragmas(dbapi_conn: sqlite3.Connection, _record: object) -> None:
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_MS)}")
    cur.execute("PRAGMA foreign_keys = ON")
    cur.execute("PRAGMA synchronous = NORMAL")
    cur.close()


def open_database(home: Home, *, readonly: bool = False) -> Engine:
    """An engine on the home's archive, with the settings every process needs.

    ``readonly``: for reading (search, play, status): a shared archive is then read
    without transactions of its own (each statement sees what is committed), which
    spares a search two of its round trips to the server (BEGIN, ROLLBACK).
    """
    if home.shared:
        engine = _server_engine(home.db_url)
        return engine.execution_options(isolation_level="AUTOCOMMIT") if readonly else engine
    if readonly and not home.db_path.exists():
        raise IndexerError(
            f"no archive at {home.root} yet; run `pipeline ingest FILE` first or pass --home"
        )
    home.ensure()
    engine = create_engine(home.db_url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _server_engine(url: str) -> Engine:
    """PostgreSQL through psycopg 3; the password comes from the URL, ~/.pgpass or the
    environment (libpq reads the last two)."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return create_engine(
        parsed,
        pool_pre_ping=True,
        pool_size=2,
        connect_args={
            "connect_timeout": CONNECT_TIMEOUT_SECONDS,
            "application_name": "pipeline",
            # a search's best plan depends on its words (a rare pair: the GIN index; a
            # common word: newest first off the time index), so never a generic plan
            "prepare_threshold": None,
            "options": "-c plan_cache_mode=force_custom_plan",
        },
    )


def _alembic_config(engine: Engine) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return cfg


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with db_errors(engine), engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (a no-op when it is already there)."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    cfg = _alembic_config(engine)
    script = ScriptDirectory.from_config(cfg)
    found = _known(engine, script, current_revision(engine))
    if found == script.get_current_head():
        return
    head = script.get_current_head()
    if found is None:
        log.info("creating the schema of %s (revision %s)", where(engine), head)
    else:
        log.info("upgrading the schema of %s from revision %s to %s", where(engine), found, head)
    if engine.dialect.name == "postgresql":  # in one transaction, even from a reader
        engine = engine.execution_options(isolation_level="READ COMMITTED")
    with db_errors(engine), engine.begin() as conn:
        if conn.dialect.name == "postgresql":  # one recorder upgrades; the others wait
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            current = MigrationContext.configure(conn).get_current_revision()
            if _known(engine, script, current) == script.get_current_head():
                return
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def _known(engine: Engine, script, current: str | None) -> str | None:
    """The revision, if this pipeline knows it; an archive from a newer one is refused."""
    if current is not None and current not in {r.revision for r in script.walk_revisions()}:
        raise IndexerError(
            f"the archive {where(engine)} was written by a newer pipeline "
            f"(schema {current}); upgrade pipeline to use it"
        )
    return current


def open_archive(home: Home) -> Engine:
    """Open (creating and migrating if needed) the home's database for writing."""
    engine = open_database(home)
    migrate(engine)
    if engine.dialect.name == "sqlite":
        with db_errors(engine), engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA journal_mode = WAL")
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # can we write? fail now, not mid-run
            conn.exec_driver_sql("ROLLBACK")
    return engine


def where(engine: Engine | None) -> str:
    """The archive as a message names it: the SQLite file, or the server URL without password."""
    if engine is None:
        return "the archive"
    if engine.dialect.name == "sqlite":
        return str(engine.url.database)
    return shown_url(engine.url.set(drivername=engine.url.get_backend_name()))


@contextlib.contextmanager
def db_errors(engine: Engine | None = None) -> Iterator[None]:
    """Translate the database's errors into IndexerErrors that say what to do."""
    try:
        yield
    except (OperationalError, InterfaceError, DBAPIError, sqlite3.Error) as exc:
        raise _translate(exc, where(engine)) from exc


# what PostgreSQL and libpq say when the server is gone or will not let us in
_UNREACHABLE = (
    "connection refused",
    "could not connect",
    "connection failed",
    "timeout expired",
    "could not translate host name",
    "network is unreachable",
    "no route to host",
    "server closed the connection",
    "terminating connection",
    "connection is closed",
    "connection not open",
    "the database system is starting up",
    "the database system is shutting down",
    "consuming input failed",
    "server conn crashed",
)
_REFUSED_LOGIN = ("password authentication failed", "no password supplied", "pg_hba.conf")


def _translate(exc: Exception, where: str | None) -> IndexerError:
    text = str(getattr(exc, "orig", exc)).lower()
    if any(s in text for s in _REFUSED_LOGIN):
        return ArchiveUnreachableError(
            f"the archive {where} refused the login ({_first_line(exc)}); check the "
            "password (in the URL, ~/.pgpass or PGPASSWORD)"
        )
    if any(s in text for s in _UNREACHABLE):
        return ArchiveUnreachableError(
            f"cannot reach the archive {where} ({_first_line(exc)}); check that the server "
            "runs and the address in --db (or $PIPELINE_DB)"
        )
    if "does not exist" in text and "database" in text:
        return IndexerError(
            f"there is no such database at {where}; create it (createdb) or fix --db"
        )
    if "permission denied" in text:
        return IndexerError(
            f"the archive {where} refused: {_first_line(exc)}; grant the user what it needs"
        )
    if "locked" in text or "busy" in text:
        return DatabaseLockedError(
            f"the database {where} is locked by another program; close it and try again"
        )
    if "readonly" in text or "read-only" in text:
        return IndexerError(
            f"the database {where} is read-only; make it writable or pass another --home"
        )
    if "disk is full" in text or "database or disk is full" in text:
        return IndexerError(f"the disk holding {where} is full; free space and run again")
    if "not a database" in text or "malformed" in text:
        return IndexerError(
            f"{where} is not a pipeline database or is damaged; move it aside, and "
            "`pipeline repair` indexes the recordings again (or pass another --home)"
        )
    if "unable to open" in text:
        return IndexerError(
            f"cannot open the database {where}; check the folder exists and is writable"
        )
    return IndexerError(f"database error on {where}: {_first_line(exc)}")


def _first_line(exc: Exception) -> str:
    """The driver's own words, one line: libpq's messages run over several."""
    said = str(getattr(exc, "orig", exc)).strip()
    return " ".join(said.splitlines()[0].split()) if said else type(exc).__name__
