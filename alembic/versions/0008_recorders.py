"""Many recorders, one archive: sessions name their recorder; PostgreSQL gets its search tables.

Every session now carries the name of the machine that recorded it
(``sessions.recorder``; ``--recorder``, default the host name): its audio is
on that machine's disk. Sessions already in the archive were recorded by the
machine that runs this migration, which names them after its host name. The
``recorders`` table holds what each recorder last said of itself (a
heartbeat, its recognizer's lag, where its ``pipeline serve`` answers).
``phonetic_terms`` counts how many utterances have each phoneme trigram, one
row per recorder and trigram (so that recorders writing at once never wait
for each other's counts): sounds-like search asks for the rarest, and
counting them in SQLite's index (``fts5vocab``) read their whole posting
lists, 10 ms for a common one at 1000 h. It is filled here from that index.

On PostgreSQL, which many recorders share:

- frame counts and offsets become 64-bit (they pass 2**31 after 12 h at
  48 kHz; SQLite's integers always are), and so do word ids;
- ``utterances_fts`` holds each utterance's words as a ``tsvector`` (the
  ``simple`` configuration's idea of a token: the word as the recognizer wrote
  it, folded by pipeline's own tokenizer; plus each pair of adjacent words as
  one lexeme, as SQLite's ``utterances_pairs``), with the utterance's time
  key: a GIN index finds the words, a b-tree on the time key gives newest
  first;
- ``utterances_phonetic`` holds each utterance's phoneme trigrams as a
  ``tsvector`` with a GIN index.

SQLite keeps its FTS5 tables (migrations 0005-0007).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29
"""

import socket

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

WIDE = [  # (table, column): 64-bit on PostgreSQL
    ("sessions", "frames"),
    ("segments", "offset"),
    ("segments", "frames"),
    ("session_events", "offset"),
    ("session_events", "frames"),
    ("words", "id"),
]


def upgrade() -> None:
    op.add_column(
        "sessions", sa.Column("recorder", sa.String(128), nullable=False, server_default="")
    )
    op.execute(
        sa.text("UPDATE sessions SET recorder = :host").bindparams(host=socket.gethostname())
    )
    op.create_index("ix_sessions_recorder", "sessions", ["recorder", "started_at"])
    op.create_table(
        "recorders",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False, server_default=""),
        sa.Column("pid", sa.Integer, nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("state", sa.String(32), nullable=False, server_default="stopped"),
        sa.Column("lag_seconds", sa.Float, nullable=False, server_default="0"),
        sa.Column("serve_url", sa.Text, nullable=True),
    )
    # how many utterances have each phoneme trigram, per recorder (sounds-like search
    # reads the rarest; counting them in the index read whole posting lists)
    op.create_table(
        "phonetic_terms",
        sa.Column("recorder", sa.String(128), primary_key=True),
        sa.Column("term", sa.Text, primary_key=True),
        sa.Column("docs", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_phonetic_terms_term", "phonetic_terms", ["term"])
    if op.get_bind().dialect.name == "sqlite":  # what the FTS5 index has so far
        op.execute(
            sa.text(
                "INSERT INTO phonetic_terms (recorder, term, docs) "
                "SELECT :host, term, doc FROM utterances_phonetic_vocab"
            ).bindparams(host=socket.gethostname())
        )
    if op.get_bind().dialect.name == "postgresql":
        _postgres_upgrade()


def _postgres_upgrade() -> None:
    for table, column in WIDE:
        op.alter_column(table, column, type_=sa.BigInteger, existing_type=sa.Integer)
    op.create_table(
        "utterances_fts",
        sa.Column(
            "utterance_id",
            sa.Integer,
            sa.ForeignKey("utterances.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        # the utterance's session and transcript, so a search needs no join to filter
        sa.Column("session_id", sa.Integer, nullable=False),
        sa.Column("transcript_id", sa.Integer, nullable=True),
        sa.Column("time_key", sa.BigInteger, nullable=False),
        sa.Column("words", postgresql.TSVECTOR, nullable=False),
    )
    # newest first, ties by id: search's order read straight off the index
    op.create_index("ix_utterances_fts_time_key", "utterances_fts", ["time_key", "utterance_id"])
    # fastupdate off: no pending list that every search must read through until the
    # next vacuum merges it; a recorder writes a few utterances a second, not thousands
    op.create_index(
        "ix_utterances_fts_words",
        "utterances_fts",
        ["words"],
        postgresql_using="gin",
        postgresql_with={"fastupdate": "off"},
    )
    op.create_table(
        "utterances_phonetic",
        sa.Column(
            "utterance_id",
            sa.Integer,
            sa.ForeignKey("utterances.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("trigrams", postgresql.TSVECTOR, nullable=False),
    )
    op.create_index(
        "ix_utterances_phonetic_trigrams",
        "utterances_phonetic",
        ["trigrams"],
        postgresql_using="gin",
        postgresql_with={"fastupdate": "off"},
    )
    _index_existing(op.get_bind())


BATCH = 5000


def _index_existing(bind) -> None:
    """The search rows of the utterances already in the archive, as the indexer writes them."""
    from pipeline.indexes import PostgresIndexes, Row

    after = 0
    while True:
        rows = bind.execute(
            sa.text(
                "SELECT u.id, u.time_key, u.text, s.recorder, u.session_id, u.transcript_id "
                "FROM utterances AS u "
                "JOIN sessions AS s ON s.id = u.session_id WHERE u.id > :after "
                "ORDER BY u.id LIMIT :n"
            ),
            {"after": after, "n": BATCH},
        ).all()
        if not rows:
            return
        words: dict[int, list[str]] = {r.id: [] for r in rows}
        for utterance_id, word in bind.execute(
            sa.text(
                "SELECT utterance_id, text FROM words WHERE utterance_id BETWEEN :lo AND :hi "
                "ORDER BY utterance_id, idx"
            ),
            {"lo": rows[0].id, "hi": rows[-1].id},
        ):
            if utterance_id in words:
                words[utterance_id].append(word)
        for recorder in {r.recorder for r in rows}:
            PostgresIndexes().add(
                bind,
                [
                    Row(r.id, r.time_key, r.text, words[r.id], r.session_id, r.transcript_id)
                    for r in rows
                    if r.recorder == recorder
                ],
                recorder,
            )
        after = rows[-1].id


def downgrade() -> None:
    op.drop_table("phonetic_terms")
    if op.get_bind().dialect.name == "postgresql":
        op.drop_table("utterances_phonetic")
        op.drop_table("utterances_fts")
        for table, column in WIDE:
            op.alter_column(table, column, type_=sa.Integer, existing_type=sa.BigInteger)
    op.drop_table("recorders")
    op.drop_index("ix_sessions_recorder", "sessions")
    # ALTER TABLE … DROP COLUMN (SQLite >= 3.35), not a batch copy: dropping the old
    # `sessions` would delete every utterance through the foreign keys' cascade
    op.drop_column("sessions", "recorder")
