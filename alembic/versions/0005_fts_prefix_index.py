"""The FTS5 index gets prefix indexes for 2-, 3- and 4-letter prefixes, and is merged.

A prefix query (``budg*``) without a prefix index makes FTS5 merge the
doclists of every term starting with those letters; with ``prefix='2 3 4'``
FTS5 keeps one ready-made doclist per 2-, 3- and 4-letter prefix (a query
uses one only when its prefix has exactly that length; longer prefixes
match few terms and need none). It roughly triples the FTS5 part of the
database (about +0.08 MB per hour of speech, bench/search.py), still small
next to the words table. ``detail`` stays ``full``: phrase queries need
token positions, which ``detail=column`` and ``detail=none`` drop.

The table is dropped, created with the new options and rebuilt from
``utterances`` (it is external-content, so nothing is lost), then merged
into one b-tree ('optimize'); the triggers are created again unchanged.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TOKENIZE = 'tokenize="unicode61 remove_diacritics 2"'
OPTIONS_0001 = f"content='utterances', content_rowid='id', {TOKENIZE}"
OPTIONS = f"content='utterances', content_rowid='id', prefix='2 3 4', {TOKENIZE}"
TRIGGERS = {
    "utterances_ai": "AFTER INSERT ON utterances BEGIN "
    "INSERT INTO utterances_fts(rowid, text) VALUES (new.id, new.text); END",
    "utterances_ad": "AFTER DELETE ON utterances BEGIN "
    "INSERT INTO utterances_fts(utterances_fts, rowid, text) "
    "VALUES ('delete', old.id, old.text); END",
    "utterances_au": "AFTER UPDATE OF text ON utterances BEGIN "
    "INSERT INTO utterances_fts(utterances_fts, rowid, text) "
    "VALUES ('delete', old.id, old.text); "
    "INSERT INTO utterances_fts(rowid, text) VALUES (new.id, new.text); END",
}


def _rebuild_fts(options: str) -> None:
    """utterances_fts again with ``options``, filled from utterances; triggers as before."""
    for name in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.execute("DROP TABLE IF EXISTS utterances_fts")
    op.execute(f"CREATE VIRTUAL TABLE utterances_fts USING fts5(text, {options})")
    op.execute("INSERT INTO utterances_fts(utterances_fts) VALUES ('rebuild')")
    op.execute("INSERT INTO utterances_fts(utterances_fts) VALUES ('optimize')")
    for name, body in TRIGGERS.items():
        op.execute(f"CREATE TRIGGER {name} {body}")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_fts(OPTIONS)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_fts(OPTIONS_0001)
