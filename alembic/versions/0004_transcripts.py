"""Transcripts: a session may be recognized again with another model; each run is kept.

Every utterance belongs to one transcript (a session recognized by one
engine and model); ``sessions.transcript_id`` is the one search shows by
default. The existing words become each session's first transcript, named
after the engine of its first utterance.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "transcripts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "session_id",
            sa.Integer,
            sa.ForeignKey("sessions.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("engine", sa.String(128), nullable=False),
        sa.Column("version", sa.String(64), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_transcripts_session_engine", "transcripts", ["session_id", "engine"])
    # A plain ADD COLUMN with no foreign-key constraint: on SQLite a constraint would
    # need a batch (copy-and-move) of `utterances`, which drops its FTS triggers, and
    # it would forbid DROP COLUMN on downgrade. Transcripts are only ever deleted
    # with their session, whose utterances cascade.
    op.add_column("utterances", sa.Column("transcript_id", sa.Integer, nullable=True))
    op.create_index("ix_utterances_transcript", "utterances", ["transcript_id", "start"])
    op.add_column("sessions", sa.Column("transcript_id", sa.Integer, nullable=True))
    op.execute(
        "INSERT INTO transcripts (session_id, engine, version, created_at, finished_at) "
        "SELECT s.id, (SELECT u.engine FROM utterances AS u WHERE u.session_id = s.id "
        "ORDER BY u.start LIMIT 1), '', s.started_at, "
        "CASE WHEN s.status = 'recording' THEN NULL ELSE s.started_at END "
        "FROM sessions AS s WHERE EXISTS (SELECT 1 FROM utterances AS u WHERE u.session_id = s.id)"
    )
    op.execute(
        "UPDATE utterances SET transcript_id = "
        "(SELECT t.id FROM transcripts AS t WHERE t.session_id = utterances.session_id)"
    )
    op.execute(
        "UPDATE sessions SET transcript_id = "
        "(SELECT t.id FROM transcripts AS t WHERE t.session_id = sessions.id)"
    )


def downgrade() -> None:
    # the newest words of each session survive a downgrade; the other transcripts go
    op.execute(
        "DELETE FROM utterances WHERE transcript_id IS NOT NULL AND transcript_id <> "
        "(SELECT s.transcript_id FROM sessions AS s WHERE s.id = utterances.session_id)"
    )
    op.drop_index("ix_utterances_transcript", "utterances")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("transcript_id")
    op.drop_column("utterances", "transcript_id")
    op.drop_table("transcripts")
