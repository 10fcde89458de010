"""Opening the archive's database: connection settings, migrations, errors.

Every process opens the database through :func:`open_database`, which sets
WAL mode (readers never wait for the single writer), a busy timeout, and
foreign keys. :func:`migrate` runs Alembic's migrations, found inside the
package when installed from a wheel and in the repository's ``alembic/``
when run from a checkout. :func:`db_errors` turns ``sqlite3`` failures into
one-line :class:`~pipeline.errors.IndexerError`s where the database is used.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, OperationalError

from .config import Home
from .errors import DatabaseLockedError, IndexerError

if TYPE_CHECKING:  # Alembic is imported where it is used: half a second no child needs
    from alembic.config import Config

BUSY_TIMEOUT_MS = 10_000
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
    """An engine on the home's SQLite file, with the settings every process needs."""
    if readonly and not home.db_path.exists():
        raise IndexerError(
            f"no archive at {home.root} yet; run `pipeline ingest FILE` first or pass --home"
        )
    home.ensure()
    engine = create_engine(home.db_url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


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
    from alembic.script import ScriptDirectory

    cfg = _alembic_config(engine)
    script = ScriptDirectory.from_config(cfg)
    current = current_revision(engine)
    if current is not None and current not in {r.revision for r in script.walk_revisions()}:
        raise IndexerError(
            f"the archive {engine.url.database} was written by a newer pipeline "
            f"(schema {current}); upgrade pipeline to use it"
        )
    if current == script.get_current_head():
        return
    with db_errors(engine), engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def open_archive(home: Home) -> Engine:
    """Open (creating and migrating if needed) the home's database for writing."""
    engine = open_database(home)
    migrate(engine)
    with db_errors(engine), engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA journal_mode = WAL")
        conn.exec_driver_sql("BEGIN IMMEDIATE")  # can we write? fail now, not mid-run
        conn.exec_driver_sql("ROLLBACK")
    return engine


@contextlib.contextmanager
def db_errors(engine: Engine | None = None) -> Iterator[None]:
    """Translate SQLite's errors into IndexerErrors that say what to do."""
    where = engine.url.database if engine is not None else "the archive"
    try:
        yield
    except (OperationalError, DBAPIError, sqlite3.Error) as exc:
        raise _translate(exc, where) from exc


def _translate(exc: Exception, where: str | None) -> IndexerError:
    text = str(getattr(exc, "orig", exc)).lower()
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
            f"{where} is not a pipeline database or is damaged; move it aside or pass --home"
        )
    if "unable to open" in text:
        return IndexerError(
            f"cannot open the database {where}; check the folder exists and is writable"
        )
    return IndexerError(f"database error on {where}: {getattr(exc, 'orig', exc)}")
