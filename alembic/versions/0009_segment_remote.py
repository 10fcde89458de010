"""Segments can have a copy in object storage: ``segments.remote`` (``s3://bucket/key``).

A recorder configured with ``s3_url`` uploads its finished segments; the
indexer then records where each went, and any machine with the bucket's
credentials reads a segment from there once its file is not on its own disk
(recorded elsewhere, or deleted by the disk budget). NULL: no copy.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("segments", sa.Column("remote", sa.Text, nullable=True))


def downgrade() -> None:
    # ALTER TABLE … DROP COLUMN (SQLite >= 3.35), not a batch copy: dropping the old
    # `segments` would cascade through the foreign keys of what refers to it
    op.drop_column("segments", "remote")
