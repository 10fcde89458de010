"""The phonetic index: each utterance's phoneme trigrams, for ``search --fuzzy``.

A contentless FTS5 table (rowid = the utterance id; ``content=''``: the
trigrams themselves are not stored, which would be 85 % of its size) whose
tokens are phoneme trigrams such as ``AH_B_K`` (``_`` is a token character),
with an ``fts5vocab`` table that tells how many utterances have each.
Phonemes need the pronouncing dictionary, which SQL cannot reach, so the
indexer writes each row with its utterance; existing utterances are indexed
here. SQLite before 3.43 cannot delete from a contentless table, so a deleted
utterance's row stays: search joins the index with ``utterances`` and checks
every candidate's real words, so such a row can never make a hit.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

BATCH = 5000


def upgrade() -> None:
    from pipeline.phonetic import index_utterances

    if op.get_bind().dialect.name != "sqlite":
        return  # PostgreSQL's sounds-like index is made by migration 0008
    op.execute(
        "CREATE VIRTUAL TABLE utterances_phonetic USING fts5(trigrams, "
        "tokenize = \"unicode61 tokenchars '_'\", detail = none, content = '', columnsize = 0)"
    )
    # how many utterances have each trigram: search reads the rarest ones
    op.execute(
        "CREATE VIRTUAL TABLE utterances_phonetic_vocab USING fts5vocab(utterances_phonetic, 'row')"
    )
    bind = op.get_bind()
    after = 0
    while True:
        ids = [
            r[0]
            for r in bind.execute(
                sa.text("SELECT id FROM utterances WHERE id > :after ORDER BY id LIMIT :n"),
                {"after": after, "n": BATCH},
            )
        ]
        if not ids:
            break
        words: dict[int, list[str]] = {i: [] for i in ids}
        for utterance_id, word in bind.execute(
            sa.text(
                "SELECT utterance_id, text FROM words WHERE utterance_id BETWEEN :lo AND :hi "
                "ORDER BY utterance_id, idx"
            ),
            {"lo": ids[0], "hi": ids[-1]},
        ):
            if utterance_id in words:
                words[utterance_id].append(word)
        index_utterances(bind, list(words.items()))
        after = ids[-1]


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute("DROP TABLE IF EXISTS utterances_phonetic_vocab")
    op.execute("DROP TABLE IF EXISTS utterances_phonetic")
