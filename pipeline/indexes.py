"""The search indexes beside the archive's tables, one implementation per database.

Search and the indexer speak to one interface, :func:`of` (a dialect's
:class:`SqliteIndexes` or :class:`PostgresIndexes`); what they hold is the same:

- words: SQLite's ``utterances_fts`` (FTS5, rowid = time key, kept by
  triggers); PostgreSQL's ``utterances_fts`` (a ``tsvector`` with a GIN index,
  and the time key with a b-tree), written here.
- word pairs: SQLite's ``utterances_pairs`` (FTS5, contentless); on
  PostgreSQL, lexemes ``a_b`` in the same ``tsvector``.
- sounds: ``utterances_phonetic`` on both (FTS5, contentless; a ``tsvector``
  with a GIN index); how many utterances have each trigram in
  ``phonetic_terms`` on both (one row per recorder and trigram).

Both give matches newest first by time key and the same words for the same
query: tokens come from :func:`pipeline.fulltext.tokens` on both (PostgreSQL
is given literals, never its own parser), ``--fts`` syntax is FTS5's on both
(:func:`pipeline.fulltext.fts_to_tsquery`), and sounds-like search counts and
reads the same trigrams. Only ``--rank`` differs: FTS5's bm25 against
PostgreSQL's ``ts_rank``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, text

from . import fulltext, phonetic
from .fulltext import fts_to_tsquery, phrase_tsquery, tsvector_literal

if TYPE_CHECKING:
    from .messages import Alternative


@dataclass(frozen=True)
class Row:
    """What the indexes need of a new utterance."""

    utterance_id: int
    time_key: int
    text: str
    words: list[str]
    session_id: int
    transcript_id: int | None
    alternatives: Sequence[Alternative] = ()  # what else the recognizer heard (lattice)


@dataclass(frozen=True)
class WordsQuery:
    """The FROM, match condition and order of a full-text search, for search's SQL.

    ``source`` is the index (with ``utterances AS u`` if it needs it); ``id`` and
    ``session`` name the utterance's and its session's id in it; ``key`` is its time
    key column (for time ranges); ``conditions`` come with their ``params``;
    ``filters`` tell search's filters how to speak of the utterance there.
    """

    source: str
    id: str
    session: str
    conditions: list[str]
    params: dict
    key: str
    order: str
    filters: dict = field(default_factory=dict)


class _Sounds:
    """What both databases do alike for sounds-like search: each utterance's trigrams, and
    how many utterances have each, counted as they are written (``phonetic_terms``, a row
    per recorder and trigram, so recorders writing at once never wait for each other).

    Counted, not asked of the index: FTS5's ``fts5vocab`` reads a trigram's whole posting
    list to count it (10 ms for a common one at 1000 h; a query asks for 30).
    """

    @staticmethod
    def trigrams(row: Row) -> list[str]:
        """The utterance's trigrams, as ``phonetic.index_text`` makes them, case-folded
        (as FTS5's tokenizer folds them), each once."""
        return sorted(
            {t.casefold() for t in phonetic.index_text(row.words, row.alternatives).split()}
        )

    @staticmethod
    def count(connection, sounds: list[list[str]], recorder: str) -> None:
        counts = Counter(t for terms in sounds for t in terms)
        if counts:
            connection.execute(
                text(
                    "INSERT INTO phonetic_terms (recorder, term, docs) VALUES (:r, :t, :n) "
                    "ON CONFLICT (recorder, term) DO UPDATE "
                    "SET docs = phonetic_terms.docs + excluded.docs"
                ),
                [{"r": recorder, "t": t, "n": n} for t, n in sorted(counts.items())],
            )

    def sound_counts(self, db, terms: list[str]) -> dict[str, int]:
        """How many utterances have each trigram: the recorders' counts added up."""
        return {
            term: int(n)
            for term, n in db.execute(
                text(
                    "SELECT term, sum(docs) FROM phonetic_terms WHERE term IN :terms GROUP BY term"
                ).bindparams(bindparam("terms", expanding=True)),
                {"terms": terms},
            ).all()
        }


class SqliteIndexes(_Sounds):
    """FTS5 tables (see the module's table)."""

    dialect = "sqlite"
    # Sounds-like postings a query may read (fuzzy._rarest): about 20 ms of reading.
    # FTS5 hands a trigram's posting list over whole, 0.35 µs a posting at 1000 h.
    most_sound_postings = 60_000

    def add(self, connection, rows: list[Row], recorder: str) -> None:
        """Index new utterances: word pairs, sounds and their counts (FTS5 triggers do
        the words)."""
        fulltext.index_pairs(connection, [(r.time_key, r.text) for r in rows])
        sounds = [self.trigrams(r) for r in rows]
        phonetic.index_trigrams(
            connection, [(r.utterance_id, t) for r, t in zip(rows, sounds, strict=True)]
        )
        self.count(connection, sounds, recorder)

    def words(self, words: list[str] | None, fts: str | None, rank: bool) -> WordsQuery:
        """Utterances with the phrase ``words``, or matching the FTS5 query ``fts``."""
        fts_table, pairs_table = fulltext.FTS, fulltext.PAIRS
        table = fts_table
        params = {"match": fulltext.phrase_match(words) if words is not None else fts}
        conditions = [f"{fts_table} MATCH :match"]
        if words is not None and len(words) > 1 and not rank:  # a phrase: by its word pairs
            table = pairs_table
            params = {"match": fulltext.pairs_match(words)}
            conditions = [f"{pairs_table} MATCH :match"]
        return WordsQuery(
            source=f"{table} JOIN utterances AS u ON u.time_key = {table}.rowid",
            id="u.id",
            session="u.session_id",
            conditions=conditions,
            params=params,
            key=f"{table}.rowid",
            order=f"{table}.rank" if rank else f"{table}.rowid DESC",
        )

    def sound_postings(self):
        """The ids of the utterances with one trigram (``:term``), comma-separated in one
        value: bare postings (no join) and one value are what make them cheap to read."""
        return text(
            f"SELECT group_concat(rowid) FROM {phonetic.TABLE} WHERE {phonetic.TABLE} MATCH :term"
        )

    @staticmethod
    def sound_term(term: str) -> str:
        return f'"{term}"'


class PostgresIndexes(_Sounds):
    """Tables with ``tsvector`` columns and GIN indexes (see the module's table)."""

    dialect = "postgresql"
    # A GIN index gives only row locations, so each posting is a heap visit (1.3 µs
    # cached at 1000 h): 20,000 keep sounds-like search under 100 ms (bench/backends.py).
    most_sound_postings = 20_000

    def add(self, connection, rows: list[Row], recorder: str) -> None:
        """Index new utterances: words and pairs, sounds, and this recorder's trigram counts."""
        if not rows:
            return
        connection.execute(
            text(
                "INSERT INTO utterances_fts (utterance_id, session_id, transcript_id, time_key, "
                "words) VALUES (:id, :session, :transcript, :key, CAST(:words AS tsvector))"
            ),
            [
                {
                    "id": r.utterance_id,
                    "session": r.session_id,
                    "transcript": r.transcript_id,
                    "key": r.time_key,
                    "words": tsvector_literal(r.text),
                }
                for r in rows
            ],
        )
        sounds = [self.trigrams(r) for r in rows]
        connection.execute(
            text(
                "INSERT INTO utterances_phonetic (utterance_id, trigrams) "
                "VALUES (:id, CAST(:trigrams AS tsvector))"
            ),
            [
                {"id": r.utterance_id, "trigrams": " ".join(f"'{t}'" for t in terms)}
                for r, terms in zip(rows, sounds, strict=True)
            ],
        )
        self.count(connection, sounds, recorder)

    def words(self, words: list[str] | None, fts: str | None, rank: bool) -> WordsQuery:
        """Utterances with the phrase ``words``, or matching the FTS5 query ``fts``."""
        match, phrase = phrase_tsquery(words) if words is not None else (fts_to_tsquery(fts), None)
        conditions = ["f.words @@ CAST(:match AS tsquery)"]
        if phrase is not None:  # checked row by row: ts_match_vq is @@ the index cannot use
            conditions.append("ts_match_vq(f.words, CAST(:phrase AS tsquery))")
        return WordsQuery(
            source="utterances_fts AS f",
            id="f.utterance_id",
            session="f.session_id",
            conditions=conditions,
            params={"match": match, **({"phrase": phrase} if phrase else {})},
            key="f.time_key",
            order=(
                "ts_rank(f.words, CAST(:match AS tsquery)) DESC, f.time_key DESC"
                if rank
                else "f.time_key DESC, f.utterance_id DESC"
            ),
            # the index row carries its session and transcript; "default transcript" is
            # a semi-join, which the planner estimates well (not a second join column)
            filters={
                "u": "f",
                "at": False,
                "default": "f.transcript_id IN (SELECT s2.transcript_id FROM sessions AS s2)",
            },
        )

    def sound_postings(self):
        return text(
            "SELECT string_agg(utterance_id::text, ',') FROM utterances_phonetic "
            "WHERE trigrams @@ CAST(:term AS tsquery)"
        )

    @staticmethod
    def sound_term(term: str) -> str:
        return f"'{term}'"


_BY_DIALECT = {"sqlite": SqliteIndexes(), "postgresql": PostgresIndexes()}


def of(bind) -> SqliteIndexes | PostgresIndexes:
    """The indexes of the database behind an engine, connection or ORM session."""
    dialect = bind.get_bind().dialect.name if hasattr(bind, "get_bind") else bind.dialect.name
    return _BY_DIALECT[dialect]
