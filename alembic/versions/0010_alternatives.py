"""Alternatives: each utterance's word graph, what the recognizer also heard (search --fuzzy).

One row per utterance (``utterance_id`` is its key), the graph packed by
``pipeline.lattice.pack``. Utterances recognized before this revision have
none: their audio would have to be recognized again, which is what
``pipeline reindex`` does (its new transcript has them); until then fuzzy
search matches their words alone, as before.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alternatives",
        sa.Column(
            "utterance_id",
            sa.Integer,
            sa.ForeignKey("utterances.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("graph", sa.LargeBinary, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("alternatives")
