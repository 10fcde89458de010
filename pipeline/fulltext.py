"""The full-text indexes: how text becomes tokens, what the indexes hold, how a phrase is asked.

Two FTS5 tables index each utterance, both with the utterance's time key as
rowid (migration 0007), so that matches come out newest first and a time
filter is a rowid range:

- ``utterances_fts``: its words, as the ``unicode61`` tokenizer makes them
  (case- and accent-folded letters and digits), kept in step with
  ``utterances`` by triggers. One-word searches, prefixes (``budg*``),
  ``--fts`` syntax and ``--rank`` use it.
- ``utterances_pairs``: each pair of adjacent tokens as one token
  (``budget_review``), written by the indexer with the utterance. A phrase
  of two or more words is the phrase of its pairs there: a pair is far rarer
  than either of its words, so a phrase of common words ("cusgri weet weet")
  no longer makes FTS5 check the position lists of thousands of utterances
  that hold the words apart (bench/search.py: 1000 h, phrase p95 6.7 → 0.5 ms).
  It is contentless (``content=''``): SQLite before 3.43 cannot delete from
  such a table, so a row of a deleted utterance would stay; every pairs
  match is therefore confirmed in ``utterances_fts`` for its rowid.
"""

from __future__ import annotations

import re
import unicodedata

from .errors import QueryError

FTS = "utterances_fts"
PAIRS = "utterances_pairs"
MAX_QUERY_WORDS = 64
MAX_QUERY_CHARS = 2000
# English words too common to find anything by: one of them alone is refused
# ("to be or not to be" is a phrase worth finding; "the" is not)
STOP_WORDS = frozenset(
    "a an and are as at be but by for from he her his i if in is it its me my no not of on or "  # noqa: SIM905
    "our she so that the their them they this to up us was we were what with you your".split()
)
_TOKEN = re.compile(r"[^\W_]+")


def tokens(text: str) -> list[str]:
    """Case- and accent-folded word tokens, as FTS5's unicode61 tokenizer sees them."""
    folded = unicodedata.normalize("NFKD", text.casefold())
    stripped = "".join(ch for ch in folded if not unicodedata.combining(ch))
    # composed again: NFKD splits Hangul syllables into jamo, which FTS5 keeps whole
    return _TOKEN.findall(unicodedata.normalize("NFC", stripped))


def check_length(query: str) -> None:
    if len(query) > MAX_QUERY_CHARS:
        raise QueryError(
            f"the query has {len(query)} characters; search for at most {MAX_QUERY_CHARS}"
        )


def phrase_words(query: str) -> list[str]:
    """The tokens of a phrase the user typed; QueryError if nothing is searchable."""
    check_length(query)
    words = tokens(query)
    if not words:
        raise QueryError(f"nothing to search for in {query[:40]!r}; type some words")
    if len(words) == 1 and words[0] in STOP_WORDS:
        raise QueryError(
            f"{query[:40]!r} is a common word, in nearly every utterance; "
            "search for a phrase with it, or add a rarer word"
        )
    if len(words) > MAX_QUERY_WORDS:
        raise QueryError(
            f"the query has {len(words)} words; search for a phrase of at most {MAX_QUERY_WORDS}"
        )
    return words


def phrase_match(words: list[str]) -> str:
    """The ``utterances_fts`` MATCH string for the words as an exact phrase."""
    return '"' + " ".join(words) + '"'


def pairs(words: list[str]) -> list[str]:
    """Adjacent tokens joined by ``_`` (never part of a token): one token each."""
    return [f"{a}_{b}" for a, b in zip(words, words[1:], strict=False)]


def pairs_match(words: list[str]) -> str:
    """The ``utterances_pairs`` MATCH string for a phrase of two or more words."""
    return '"' + " ".join(pairs(words)) + '"'


def index_pairs(connection, rows: list[tuple[int, str]]) -> None:
    """Add (time key, text) of utterances to ``utterances_pairs`` (a SQLAlchemy connection)."""
    from sqlalchemy import text

    values = [{"key": key, "pairs": " ".join(pairs(tokens(said)))} for key, said in rows]
    if values:
        connection.execute(text(f"INSERT INTO {PAIRS}(rowid, pairs) VALUES (:key, :pairs)"), values)
