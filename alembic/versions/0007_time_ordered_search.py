"""Search in time order: the full-text index's rowids follow the time each utterance was said.

"Newest first" used to be ``ORDER BY u.at DESC``, which makes SQLite fetch
and sort every match before it can return the first 20: tens of thousands
of rows for a phrase of common words, hundreds of thousands for a prefix.
Now each utterance has a ``time_key``, the microseconds since 1970 of its
``at`` (made unique by the indexer: a clash takes the next free microsecond),
and ``utterances_fts`` uses it as its rowid (``content_rowid``). FTS5 hands
out matches in rowid order, so ``ORDER BY rowid DESC LIMIT 20`` streams the
newest matches and stops after 20, and a time filter (``--since``) is a
rowid range that FTS5 seeks to.

A second FTS5 table, ``utterances_pairs``, holds each pair of adjacent
tokens as one token (``budget_review``), with the same rowids: a phrase is
looked up by its pairs, which are far rarer than its words (see
``pipeline.fulltext``). It is contentless, written by the indexer; here it is
filled for the existing utterances.

``time_key`` is filled for existing utterances here (in time order, clashes
resolved as the indexer does), the FTS5 table is rebuilt on it and merged,
and its triggers follow ``time_key``. On other databases the column gets a
plain (not unique) index; their search index is theirs.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

BATCH = 20_000
TOKENIZE = 'tokenize="unicode61 remove_diacritics 2"'
OPTIONS_0005 = f"content='utterances', content_rowid='id', prefix='2 3 4', {TOKENIZE}"
OPTIONS = f"content='utterances', content_rowid='time_key', prefix='2 3 4', {TOKENIZE}"


def _triggers(rowid: str) -> dict[str, str]:
    return {
        "utterances_ai": "AFTER INSERT ON utterances BEGIN "
        f"INSERT INTO utterances_fts(rowid, text) VALUES (new.{rowid}, new.text); END",
        "utterances_ad": "AFTER DELETE ON utterances BEGIN "
        "INSERT INTO utterances_fts(utterances_fts, rowid, text) "
        f"VALUES ('delete', old.{rowid}, old.text); END",
        "utterances_au": "AFTER UPDATE OF text ON utterances BEGIN "
        "INSERT INTO utterances_fts(utterances_fts, rowid, text) "
        f"VALUES ('delete', old.{rowid}, old.text); "
        f"INSERT INTO utterances_fts(rowid, text) VALUES (new.{rowid}, new.text); END",
    }


def _rebuild_fts(options: str, rowid: str) -> None:
    """utterances_fts again with ``options``, filled from utterances, merged; triggers."""
    for name in _triggers(rowid):
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.execute("DROP TABLE IF EXISTS utterances_fts")
    op.execute(f"CREATE VIRTUAL TABLE utterances_fts USING fts5(text, {options})")
    op.execute("INSERT INTO utterances_fts(utterances_fts) VALUES ('rebuild')")
    op.execute("INSERT INTO utterances_fts(utterances_fts) VALUES ('optimize')")
    for name, body in _triggers(rowid).items():
        op.execute(f"CREATE TRIGGER {name} {body}")


def _microseconds(at) -> int:
    """What ``pipeline.schema.time_key`` computes, from a value as the database returns it."""
    if isinstance(at, str):  # SQLite stores naive UTC text
        at = datetime.fromisoformat(at)
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return (at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def _fill_time_keys(bind) -> None:
    """Every utterance's key, in (at, id) order; a clash takes the next free microsecond."""
    last = None
    after_at, after_id = None, 0
    while True:
        where = "" if after_at is None else "WHERE (at > :at OR (at = :at AND id > :id)) "
        rows = bind.execute(
            sa.text(f"SELECT id, at FROM utterances {where}ORDER BY at, id LIMIT :n"),
            {"at": after_at, "id": after_id, "n": BATCH},
        ).all()
        if not rows:
            return
        updates = []
        for utterance_id, at in rows:
            key = _microseconds(at)
            if last is not None and key <= last:
                key = last + 1
            updates.append({"id": utterance_id, "key": key})
            last = key
        bind.execute(sa.text("UPDATE utterances SET time_key = :key WHERE id = :id"), updates)
        after_id, after_at = rows[-1][0], rows[-1][1]


def _fill_pairs(bind) -> None:
    from pipeline.fulltext import index_pairs

    op.execute(
        "CREATE VIRTUAL TABLE utterances_pairs USING fts5(pairs, "
        "tokenize = \"unicode61 tokenchars '_'\", content = '', columnsize = 0)"
    )
    after = None
    while True:
        where = "" if after is None else "WHERE time_key > :after "
        rows = bind.execute(
            sa.text(f"SELECT time_key, text FROM utterances {where}ORDER BY time_key LIMIT :n"),
            {"after": after, "n": BATCH},
        ).all()
        if not rows:
            break
        index_pairs(bind, [tuple(r) for r in rows])
        after = rows[-1][0]
    op.execute("INSERT INTO utterances_pairs(utterances_pairs) VALUES ('optimize')")


def upgrade() -> None:
    bind = op.get_bind()
    op.add_column("utterances", sa.Column("time_key", sa.BigInteger, nullable=True))
    _fill_time_keys(bind)
    sqlite = bind.dialect.name == "sqlite"
    op.create_index("ix_utterances_time_key", "utterances", ["time_key"], unique=sqlite)
    if sqlite:
        _rebuild_fts(OPTIONS, "time_key")
        _fill_pairs(bind)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE IF EXISTS utterances_pairs")
        _rebuild_fts(OPTIONS_0005, "id")
    op.drop_index("ix_utterances_time_key", "utterances")
    op.drop_column("utterances", "time_key")
