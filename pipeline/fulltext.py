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
  such a table, so a row of a deleted utterance would stay; every phrase hit
  is therefore confirmed by its utterance's words (``pipeline.search``), which
  costs nothing, where asking ``utterances_fts`` about each match cost up to
  3 ms a search at 1000 h.
"""

from __future__ import annotations

import functools
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


@functools.lru_cache(maxsize=1 << 16)
def word_tokens(word: str) -> tuple[str, ...]:
    """:func:`tokens` of one word as the recognizer wrote it, remembered: every search
    checks its hits word by word, and speech says the same words again and again."""
    return tuple(tokens(word))


# control characters other than whitespace, the lone surrogates that stand for bytes a
# command line could not decode, and the replacement character that stands for a URL's:
# never typed, so the query is junk (a pasted binary)
_NOT_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffd]")


def check_query(query: str) -> None:
    """QueryError unless the query is text a person could have typed, of a sane length."""
    if len(query) > MAX_QUERY_CHARS:
        raise QueryError(
            f"the query has {len(query)} characters; search for at most {MAX_QUERY_CHARS}"
        )
    if (junk := _NOT_TEXT.search(query)) is not None:
        raise QueryError(
            f"the query is not text: character {junk.start() + 1} is a control character "
            "or an undecodable byte; type the words to search for"
        )


def query_words(query: str) -> list[str]:
    """The tokens of what the user typed; QueryError unless there are some, and not too many."""
    check_query(query)
    words = tokens(query)
    if not words:
        raise QueryError(f"nothing to search for in {query[:40]!r}; type some words")
    if len(words) > MAX_QUERY_WORDS:
        raise QueryError(
            f"the query has {len(words)} words; search for a phrase of at most {MAX_QUERY_WORDS}"
        )
    return words


def phrase_words(query: str) -> list[str]:
    """The tokens of a phrase the user typed; QueryError if nothing is searchable (a common
    word alone is in nearly every utterance)."""
    words = query_words(query)
    if len(words) == 1 and words[0] in STOP_WORDS:
        raise QueryError(
            f"{query[:40]!r} is a common word, in nearly every utterance; "
            "search for a phrase with it, or add a rarer word"
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


# --- PostgreSQL: tsvector and tsquery --------------------------------------------------
#
# PostgreSQL's text search is given exactly pipeline's tokens: each utterance's
# tsvector is written as a literal (never parsed by a text search configuration), and
# queries are tsquery literals built here, so both databases see the same words.


def _lexeme(token: str) -> str:
    """A token quoted as a tsvector/tsquery lexeme (tokens are letters and digits only)."""
    return "'" + token + "'"


def tsvector_literal(said: str) -> str:
    """An utterance's ``utterances_fts.words`` on PostgreSQL: each token with its positions
    (phrases need them), then each pair of adjacent tokens as one lexeme, without."""
    words = tokens(said)
    positions: dict[str, list[int]] = {}
    for i, w in enumerate(words[:MAX_POSITION], start=1):
        positions.setdefault(w, []).append(i)
    parts = [f"{_lexeme(w)}:{','.join(map(str, p[:MAX_POSITIONS]))}" for w, p in positions.items()]
    parts += [_lexeme(pair) for pair in dict.fromkeys(pairs(words))]
    return " ".join(parts)


MAX_POSITION = 16_383  # tsvector positions stop there
MAX_POSITIONS = 256  # and a lexeme keeps at most this many


def phrase_tsquery(words: list[str]) -> tuple[str, str | None]:
    """The tsqueries for an exact phrase: what the GIN index looks up (the word, or the
    phrase's pairs: rare, so it finds few utterances, and never the posting list of a
    common word), and the phrase itself to check on those (None: the pairs say it all,
    as for two words)."""
    if len(words) == 1:
        return _lexeme(words[0]), None
    lookup = " & ".join(dict.fromkeys(_lexeme(p) for p in pairs(words)))
    return lookup, (" <-> ".join(_lexeme(w) for w in words) if len(words) > 2 else None)


def fts_error(query: str, problem: str) -> QueryError:
    """One line for an ``--fts`` query its parser refused: SQLite's (or PostgreSQL's
    translator's) words for the problem, its end said as such, and where the syntax is."""
    problem = problem.replace('near ""', "at the end of the query")
    return QueryError(
        f"--fts query {query[:60]!r}: {problem}; see "
        "https://sqlite.org/fts5.html#full_text_query_syntax (or search without --fts)"
    )


class _Parser:
    """FTS5's query syntax, read into a tsquery, so ``--fts`` means the same on both
    databases: ``a b`` and ``a AND b``, ``a OR b``, ``a NOT b``, ``"a phrase"``,
    ``pre*``, ``NEAR(a b, N)``, parentheses and ``text:`` column filters.

    Precedence as FTS5's: NOT binds tightest, then AND, then OR. NEAR(a b, N) is
    a and b at most N tokens apart, in either order (default 10).
    """

    _TOKEN = re.compile(
        r'\s*(?:(?P<string>"(?:[^"]|"")*")|(?P<open>\()|(?P<close>\))|(?P<comma>,)'
        r"|(?P<star>\*)|(?P<plus>\+)|(?P<colon>:)|(?P<caret>\^)|(?P<word>[^\s\"()*,+:^]+))"
    )

    def __init__(self, query: str) -> None:
        self.query = query
        self.items: list[tuple[str, str, int]] = []
        at = 0
        while at < len(query):
            m = self._TOKEN.match(query, at)
            if m is None or m.end() == at:
                if query[at:].strip():
                    raise self.error("unterminated string")
                break
            kind = m.lastgroup
            if kind is None:
                break
            self.items.append((kind, m.group(kind), m.start(kind)))
            at = m.end()
        self.at = 0

    def error(self, problem: str) -> QueryError:
        return fts_error(self.query, problem)

    def syntax_error(self) -> QueryError:
        """SQLite's words for a token that cannot come here (or a query that ends early),
        so that a query is refused alike by both archives."""
        item = self.peek()
        return self.error(f'syntax error near "{item[1]}"' if item else 'syntax error near ""')

    def peek(self) -> tuple[str, str, int] | None:
        return self.items[self.at] if self.at < len(self.items) else None

    def take(self, kind: str) -> str:
        item = self.peek()
        if item is None or item[0] != kind:
            raise self.syntax_error()
        self.at += 1
        return item[1]

    def keyword(self, word: str) -> bool:
        item = self.peek()
        return item is not None and item[0] == "word" and item[1] == word

    def parse(self) -> str:
        if not self.items:
            raise self.syntax_error()
        out = self.or_()
        if self.peek() is not None:
            raise self.syntax_error()
        return out

    def or_(self) -> str:
        parts = [self.and_()]
        while self.keyword("OR"):
            self.at += 1
            parts.append(self.and_())
        return parts[0] if len(parts) == 1 else "(" + " | ".join(parts) + ")"

    def and_(self) -> str:
        parts = [self.not_()]
        while (item := self.peek()) is not None and item[0] != "close" and not self.keyword("OR"):
            if self.keyword("AND"):
                self.at += 1
            parts.append(self.not_())
        return parts[0] if len(parts) == 1 else "(" + " & ".join(parts) + ")"

    def not_(self) -> str:
        out = self.primary()
        while self.keyword("NOT"):
            self.at += 1
            out = f"({out} & !{self.primary()})"
        return out

    def primary(self) -> str:
        item = self.peek()
        if item is None:
            raise self.syntax_error()
        kind, value, _ = item
        if kind == "open":
            self.at += 1
            inner = self.or_()
            self.take("close")
            return inner
        if kind == "word" and value == "NEAR" and self._next_is("open"):
            return self.near()
        if kind == "word" and value in ("AND", "OR", "NOT"):
            raise self.syntax_error()
        if kind == "word" and self._next_is("colon"):  # a column filter: there is one column
            if value.lower() != "text":
                raise self.error(f"no such column: {value}")
            self.at += 2
            return self.primary()
        if kind == "caret":
            raise self.error("^ (first token) is not supported by this archive")
        return self.phrase()

    def _next_is(self, kind: str) -> bool:
        return self.at + 1 < len(self.items) and self.items[self.at + 1][0] == kind

    def phrase_words(self) -> tuple[list[str], bool]:
        """A phrase: strings joined by ``+``, maybe ending in ``*``; its tokens and prefix."""
        words = self._string()
        while (item := self.peek()) is not None and item[0] == "plus":
            self.at += 1
            words += self._string()
        prefix = (item := self.peek()) is not None and item[0] == "star"
        if prefix:
            self.at += 1
        if not words:
            raise self.error("syntax error: a phrase with no words")
        return words, prefix

    def _string(self) -> list[str]:
        kind, value, _ = self.peek() or ("end", "", 0)
        if kind == "string":
            self.at += 1
            return tokens(value[1:-1].replace('""', '"'))
        if kind == "word":
            self.at += 1
            return tokens(value)
        raise self.syntax_error()

    def phrase(self) -> str:
        words, prefix = self.phrase_words()
        lexemes = [_lexeme(w) for w in words]
        if prefix:
            lexemes[-1] += ":*"
        return lexemes[0] if len(lexemes) == 1 else "(" + " <-> ".join(lexemes) + ")"

    def near(self) -> str:
        self.at += 2  # NEAR (
        phrases: list[str] = []
        distance = 10
        while (item := self.peek()) is not None and item[0] not in ("close", "comma"):
            words, prefix = self.phrase_words()
            lexemes = [_lexeme(w) for w in words]
            if prefix:
                lexemes[-1] += ":*"
            phrases.append(" <-> ".join(lexemes))
        if self.peek() is not None and self.peek()[0] == "comma":
            self.at += 1
            number = self.take("word")
            if not number.isdigit():
                raise self.error(f"NEAR distance {number!r} is not a number")
            distance = int(number)
        self.take("close")
        if len(phrases) < 2:
            return phrases[0] if phrases else "''"
        if len(phrases) > 2 or distance > MAX_NEAR:
            raise self.error(f"NEAR of two phrases at most {MAX_NEAR} apart is supported here")
        a, b = (f"({p})" for p in phrases)
        spans = [f"{x} <{d}> {y}" for d in range(1, distance + 2) for x, y in ((a, b), (b, a))]
        return "(" + " | ".join(spans) + ")"


MAX_NEAR = 50


def fts_to_tsquery(query: str) -> str:
    """An FTS5 query (``--fts``) as the tsquery literal that means the same; QueryError
    naming the problem if it is not valid FTS5 syntax (or not supported here)."""
    return _Parser(query).parse()
