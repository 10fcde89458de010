"""Sessions, segments, utterances, words, and the FTS5 index over utterance text.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

UTC_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("key", sa.String(64), nullable=False, unique=True),
        sa.Column("source_kind", sa.String(16), nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("started_at", UTC_TS, nullable=False),
        sa.Column("rate", sa.Integer, nullable=False),
        sa.Column("channels", sa.Integer, nullable=False),
        sa.Column("frames", sa.Integer, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
    )
    op.create_table(
        "segments",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "session_id",
            sa.Integer,
            sa.ForeignKey("sessions.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("path", sa.Text, nullable=False, unique=True),
        sa.Column("offset", sa.Integer, nullable=False),
        sa.Column("frames", sa.Integer, nullable=False),
        sa.Column("rate", sa.Integer, nullable=False),
        sa.Column("channels", sa.Integer, nullable=False),
        sa.Column("started_at", UTC_TS, nullable=False),
    )
    op.create_index("ix_segments_session_offset", "segments", ["session_id", "offset"])
    op.create_table(
        "utterances",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "session_id",
            sa.Integer,
            sa.ForeignKey("sessions.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("start", sa.Float, nullable=False),
        sa.Column("end", sa.Float, nullable=False),
        sa.Column("at", UTC_TS, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("engine", sa.String(128), nullable=False),
    )
    op.create_index("ix_utterances_at", "utterances", ["at"])
    op.create_index("ix_utterances_session_start", "utterances", ["session_id", "start"])
    op.create_table(
        "words",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "utterance_id",
            sa.Integer,
            sa.ForeignKey("utterances.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("idx", sa.Integer, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("start", sa.Float, nullable=False),
        sa.Column("end", sa.Float, nullable=False),
        sa.Column("confidence", sa.Float, nullable=False),
    )
    op.create_index("ix_words_utterance_idx", "words", ["utterance_id", "idx"])

    if op.get_bind().dialect.name == "sqlite":
        _create_sqlite_fts()


def _create_sqlite_fts() -> None:
    # External-content FTS5 table kept in step with `utterances` by triggers;
    # unicode61 with diacritics removed makes search case- and accent-blind.
    op.execute(
        "CREATE VIRTUAL TABLE utterances_fts USING fts5("
        "text, content='utterances', content_rowid='id', "
        'tokenize="unicode61 remove_diacritics 2")'
    )
    op.execute(
        "CREATE TRIGGER utterances_ai AFTER INSERT ON utterances BEGIN "
        "INSERT INTO utterances_fts(rowid, text) VALUES (new.id, new.text); END"
    )
    op.execute(
        "CREATE TRIGGER utterances_ad AFTER DELETE ON utterances BEGIN "
        "INSERT INTO utterances_fts(utterances_fts, rowid, text) "
        "VALUES ('delete', old.id, old.text); END"
    )
    op.execute(
        "CREATE TRIGGER utterances_au AFTER UPDATE OF text ON utterances BEGIN "
        "INSERT INTO utterances_fts(utterances_fts, rowid, text) "
        "VALUES ('delete', old.id, old.text); "
        "INSERT INTO utterances_fts(rowid, text) VALUES (new.id, new.text); END"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for trigger in ("utterances_ai", "utterances_ad", "utterances_au"):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        op.execute("DROP TABLE IF EXISTS utterances_fts")
    op.drop_table("words")
    op.drop_table("utterances")
    op.drop_table("segments")
    op.drop_table("sessions")
