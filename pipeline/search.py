"""Finding spoken phrases: user text → a safe FTS5 phrase → hits with times.

User text is never handed to FTS5 as syntax. It is split into the same
tokens FTS5's ``unicode61`` tokenizer makes (letters and digits; everything
else separates), and those tokens become one quoted phrase. So quotes,
``AND OR NOT``, ``NEAR(``, ``budg*`` and emoji are searched literally or, if
nothing searchable is left, rejected with a one-line message.
"""

from __future__ import annotations

import heapq
import math
import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, Integer, bindparam, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import selectinload

from . import phonetic, schema
from .database import db_errors
from .errors import QueryError

MAX_QUERY_WORDS = 64
MAX_QUERY_CHARS = 2000
# English words too common to find anything by: one of them alone is refused
# ("to be or not to be" is a phrase worth finding; "the" is not)
STOP_WORDS = frozenset(
    "a an and are as at be but by for from he her his i if in is it its me my no not of on or "  # noqa: SIM905
    "our she so that the their them they this to up us was we were what with you your".split()
)
_TOKEN = re.compile(r"[^\W_]+")


def tokens(text_: str) -> list[str]:
    """Case- and accent-folded word tokens, as FTS5's unicode61 tokenizer sees them."""
    folded = unicodedata.normalize("NFKD", text_.casefold())
    stripped = "".join(ch for ch in folded if not unicodedata.combining(ch))
    # composed again: NFKD splits Hangul syllables into jamo, which FTS5 keeps whole
    return _TOKEN.findall(unicodedata.normalize("NFC", stripped))


def phrase_query(query: str) -> str:
    """The FTS5 MATCH string for an exact phrase; QueryError if nothing is searchable."""
    _check_length(query)
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
    return '"' + " ".join(words) + '"'


@dataclass(frozen=True)
class Hit:
    """One utterance that contains the phrase, and where the phrase is in it."""

    id: int  # the utterance id: what `play ID` and `clip ID` take
    session_id: int
    session_key: str
    source: str
    words: tuple[str, ...]
    match: tuple[int, int]  # word index range [first, last) of the phrase
    start: float  # session seconds where the phrase starts
    end: float
    utterance_start: float
    utterance_end: float
    at: datetime  # UTC wall-clock time where the phrase starts
    segment: str | None  # the segment file holding the phrase start (relative path)
    segment_offset: float | None  # seconds into that segment
    engine: str  # the engine and model that heard it
    score: float | None = None  # --fuzzy: how closely the words sound like the query (0..1)

    @property
    def text(self) -> str:
        return " ".join(self.words)


@dataclass(frozen=True)
class Filters:
    """What narrows a search besides the words (all optional)."""

    since: datetime | None = None  # aware datetimes; compared in UTC
    until: datetime | None = None
    session: str | None = None  # an id or a key
    source: str | None = None  # file, system or mic (system+mic sessions are both)
    device: str | None = None  # part of the device's name or the file's path
    model: str | None = None  # transcripts by this model instead of the default ones


def search(
    engine: Engine,
    query: str,
    *,
    limit: int = 20,
    fts: bool = False,
    rank: bool = False,
    fuzzy: bool = False,
    min_score: float | None = None,
    filters: Filters | None = None,
    **options,
) -> list[Hit]:
    """Utterances containing the phrase, newest first (``rank``: best first).

    Each session is searched in its default transcript (the newest complete
    one); ``model`` searches each session's newest transcript by that model
    instead (a name from `pipeline models list`, an engine label such as
    ``vosk:vosk-model-small-en-us-0.15``, or an engine such as ``vosk``).
    ``fts``: the query is FTS5 syntax (AND, OR, NOT, NEAR, prefix*), not a
    phrase. ``fuzzy``: find what sounds like the phrase (see :func:`fuzzy_search`).
    ``options`` are :class:`Filters` fields, as keywords.
    """
    if limit < 1:
        raise QueryError("--limit must be at least 1")
    filters = filters or Filters(**options)
    if fuzzy:
        if fts:
            raise QueryError("--fuzzy and --fts do not combine; use one")
        cut = FUZZY_MIN_SCORE if min_score is None else min_score
        return fuzzy_search(engine, query, limit=limit, min_score=cut, filters=filters)
    match = fts_query(query) if fts else phrase_query(query)
    wanted = [t for t in tokens(query) if not fts or t.upper() not in FTS_WORDS]
    with db_errors(engine), DbSession(engine) as db:
        where, params = _where(db, filters)
        order = "utterances_fts.rank" if rank else "u.at DESC, u.id DESC"
        sql = text(
            "SELECT u.id FROM utterances_fts JOIN utterances AS u ON u.id = utterances_fts.rowid "
            "JOIN sessions AS s ON s.id = u.session_id "
            f"WHERE utterances_fts MATCH :match AND {' AND '.join(where)} "
            f"ORDER BY {order} LIMIT :limit"
        ).bindparams(*_typed(params))
        ids = _run(db, sql, {"match": match, "limit": limit, **params}, fts)
        rows = db.scalars(
            select(schema.Utterance)
            .where(schema.Utterance.id.in_(ids))
            .options(
                selectinload(schema.Utterance.words),
                selectinload(schema.Utterance.session).selectinload(schema.Session.segments),
            )
        ).all()
        by_id = {u.id: u for u in rows}
        return [_hit(by_id[i], wanted, fts) for i in ids if i in by_id]


FTS_WORDS = {"AND", "OR", "NOT", "NEAR"}
# what SQLite says of a bad FTS5 query (not of a locked or broken database)
_FTS_ERROR = re.compile(
    r"fts5: (.*)|(unterminated string)|(unknown special query.*)|(no such column.*)"
)


def fts_query(query: str) -> str:
    """The user's FTS5 query, checked only for being searchable at all."""
    _check_length(query)
    if not tokens(query):
        raise QueryError(f"nothing to search for in {query[:40]!r}; type some words")
    return query


def _check_length(query: str) -> None:
    if len(query) > MAX_QUERY_CHARS:
        raise QueryError(
            f"the query has {len(query)} characters; search for at most {MAX_QUERY_CHARS}"
        )


def _run(db: DbSession, sql, params: dict, fts: bool) -> list[int]:
    """Run the search; an FTS5 syntax error becomes one line pointing at the problem."""
    try:
        return list(db.scalars(sql, params))
    except OperationalError as exc:
        found = _FTS_ERROR.search(str(exc.orig)) if fts else None
        if found is None:
            raise
        problem = next(g for g in found.groups() if g)
        raise QueryError(
            f"--fts query {params['match'][:60]!r}: {problem}; see "
            "https://sqlite.org/fts5.html#full_text_query_syntax (or search without --fts)"
        ) from None


def _where(db: DbSession, f: Filters) -> tuple[list[str], dict]:
    """SQL conditions (on ``u`` utterances and ``s`` sessions) and their parameters."""
    params: dict = {}
    if f.model is None:
        where = ["u.transcript_id = s.transcript_id"]
    else:
        where = [
            "u.transcript_id IN (SELECT max(t.id) FROM transcripts AS t "
            "WHERE t.engine IN :labels GROUP BY t.session_id)"
        ]
        params["labels"] = transcript_engines(db, f.model)
    if f.since is not None:
        where.append("u.at >= :since")
        params["since"] = f.since
    if f.until is not None:
        where.append("u.at < :until")
        params["until"] = f.until
    if f.session is not None:
        where.append("s.id = :session" if f.session.isdigit() else "s.key = :session")
        params["session"] = int(f.session) if f.session.isdigit() else f.session
    if f.source is not None:
        kinds = [k for k in SOURCE_KINDS if f.source in k.split("+")]
        if not kinds:
            raise QueryError(f"--source must be one of file, system, mic (got {f.source!r})")
        where.append("s.source_kind IN :kinds")
        params["kinds"] = kinds
    if f.device is not None:
        where.append("lower(s.source) LIKE :device ESCAPE '\\'")
        escaped = re.sub(r"([\\%_])", r"\\\1", f.device.lower())
        params["device"] = f"%{escaped}%"
    return where, params


SOURCE_KINDS = ("file", "system", "mic", "system+mic")


def _typed(params: dict) -> list:
    """Bind parameters that need a type: times as the archive stores them, lists expanded."""
    out = []
    for name, value in params.items():
        if isinstance(value, datetime):
            out.append(bindparam(name, type_=schema.UTCDateTime()))
        elif isinstance(value, list):
            out.append(bindparam(name, expanding=True))
    return out


def transcript_engines(db: DbSession, model: str) -> list[str]:
    """The engine labels of the archive's transcripts that ``model`` names; QueryError if none."""
    known = list(db.scalars(select(schema.Transcript.engine).distinct()))
    labels = [e for e in known if model in _names(e)]
    if not labels:
        have = ", ".join(sorted(known)) or "none yet"
        raise QueryError(f"no transcripts by model {model!r} in the archive (it has: {have})")
    return labels


def _names(label: str) -> set[str]:
    """What a user may call an engine label: "vosk:x" is also "x" and "vosk"."""
    kind, _, name = label.partition(":")
    return {label, kind, name, label.replace(":", "-")}


def _hit(utt: schema.Utterance, wanted: list[str], any_word: bool = False) -> Hit:
    first, last = locate_any(utt.words, wanted) if any_word else locate(utt.words, wanted)
    return _hit_at(utt, first, last)


def _hit_at(utt: schema.Utterance, first: int, last: int, score: float | None = None) -> Hit:
    words = utt.words
    start = words[first].start if words else utt.start
    end = words[last - 1].end if words else utt.end
    session = utt.session
    segment, seg_offset = _segment_at(session, start)
    return Hit(
        id=utt.id,
        session_id=session.id,
        session_key=session.key,
        source=session.source,
        words=tuple(w.text for w in words),
        match=(first, last),
        start=start,
        end=end,
        utterance_start=utt.start,
        utterance_end=utt.end,
        at=session.started_at + timedelta(seconds=start),
        segment=segment,
        segment_offset=seg_offset,
        engine=utt.engine,
        score=score,
    )


def locate(words: list[schema.Word], wanted: list[str]) -> tuple[int, int]:
    """The word range whose tokens spell ``wanted``; the whole utterance if not found."""
    flat: list[tuple[str, int]] = [(t, i) for i, w in enumerate(words) for t in tokens(w.text)]
    n = len(wanted)
    for k in range(len(flat) - n + 1):
        if [t for t, _ in flat[k : k + n]] == wanted:
            return flat[k][1], flat[k + n - 1][1] + 1
    return 0, len(words)


def locate_any(words: list[schema.Word], wanted: list[str]) -> tuple[int, int]:
    """The first word that is (or, for a prefix query, starts like) one of ``wanted``."""
    for i, w in enumerate(words):
        if any(t.startswith(x) for t in tokens(w.text) for x in wanted):
            return i, i + 1
    return 0, len(words)


# --fuzzy: matching by sound (pipeline.phonetic)
FUZZY_MIN_SCORE = 0.65  # the knee on the real-speech corpus (bench/findability.py)
FUZZY_CANDIDATES = 200  # utterances checked by edit distance: those sharing the most trigrams
FUZZY_MIN_PHONEMES = 6  # shorter queries sound like half the archive
# Utterance-trigram pairs a query reads at most: its rarest trigrams are asked for
# until their utterances add up to this, so a query costs about the same in an
# archive of any size (a common trigram is in a good share of all utterances).
FUZZY_POSTINGS = 20_000
FUZZY_MIN_TRIGRAMS = 3  # asked for even if they are common


def fuzzy_search(
    engine: Engine, query: str, *, limit: int, min_score: float, filters: Filters
) -> list[Hit]:
    """Utterances whose words sound like the phrase, best score first (then newest).

    Candidates are the utterances sharing the most of the phrase's rarer
    phoneme trigrams (:func:`_candidates`). All are scored at once
    (:func:`phonetic.distances`); those scoring at least ``min_score`` are
    hits, and the best ``limit`` are located (:func:`phonetic.best_match`):
    the words that matched, their times.
    """
    if not 0.0 <= min_score <= 1.0:
        raise QueryError("--min-score must be between 0 and 1")
    phones = _query_phonemes(query)
    with db_errors(engine), DbSession(engine) as db:
        found = _candidates(db, phonetic.trigrams(phones), filters)
        said = _words_of(db, [i for i, _ in found])
        streams = [[phonetic.word_phonemes(w) for w in said.get(i, [])] for i, _ in found]
        scores = 1.0 - phonetic.distances(phones, streams) / len(phones)
        ranked = sorted(
            ((float(score), at, i) for (i, at), score in zip(found, scores, strict=True)),
            key=lambda sai: (-sai[0], -sai[1].timestamp(), -sai[2]),
        )
        best = [(score, i) for score, _, i in ranked if score >= min_score][:limit]
        rows = db.scalars(
            select(schema.Utterance)
            .where(schema.Utterance.id.in_([i for _, i in best]))
            .options(
                selectinload(schema.Utterance.words),
                selectinload(schema.Utterance.session).selectinload(schema.Session.segments),
            )
        ).all()
        by_id = {u.id: u for u in rows}
        hits = []
        for score, i in best:
            utt = by_id[i]
            span = phonetic.best_match(phones, [w.text for w in utt.words])
            hits.append(_hit_at(utt, span.first, span.last, round(score, 3)))
        return hits


def _candidates(db: DbSession, trigrams: list[str], filters: Filters) -> list[tuple[int, datetime]]:
    """(id, time) of the utterances, within the filters, sharing the most of the rarest
    trigrams, each weighted by its rarity (idf); at most :data:`FUZZY_CANDIDATES`.

    Not FTS5's bm25: ranking every match in SQL cost 100 ms per 10 000 matches,
    counting them here a few. Only the rarest trigrams are asked for
    (:func:`_rarest`), so a query reads about as much in a large archive as in
    a small one.
    """
    where, params = _where(db, filters)
    sql = text(
        f"SELECT p.rowid FROM {phonetic.TABLE} AS p JOIN utterances AS u ON u.id = p.rowid "
        "JOIN sessions AS s ON s.id = u.session_id "
        f"WHERE {phonetic.TABLE} MATCH :match AND {' AND '.join(where)}"
    ).bindparams(*_typed(params))
    everyone = (db.scalar(text("SELECT max(id) FROM utterances")) or 0) + 1
    votes: dict[int, float] = defaultdict(float)
    for term, count in _rarest(db, trigrams):
        weight = math.log(everyone / count)
        # plain rows: thousands of ids, and SQLAlchemy's result rows cost more than the query
        for (i,) in db.execute(sql, {"match": f'"{term}"', **params}).cursor.fetchall():
            votes[i] += weight
    top = heapq.nlargest(FUZZY_CANDIDATES, votes, key=lambda i: (votes[i], i))
    if not top:
        return []
    at = dict(
        db.execute(
            text("SELECT id, at FROM utterances WHERE id IN :ids")
            .bindparams(bindparam("ids", expanding=True))
            .columns(id=Integer(), at=schema.UTCDateTime()),
            {"ids": top},
        ).all()
    )
    return [(i, at[i]) for i in top]


def _rarest(db: DbSession, trigrams: list[str]) -> list[tuple[str, int]]:
    """The query's rarest trigrams that the archive has, with how many utterances have
    each, until those add up to :data:`FUZZY_POSTINGS` (at least :data:`FUZZY_MIN_TRIGRAMS`)."""
    counts = dict(
        db.execute(
            text(f"SELECT term, doc FROM {phonetic.VOCAB} WHERE term IN :terms").bindparams(
                bindparam("terms", expanding=True)
            ),
            {"terms": sorted({t.casefold() for t in trigrams})},
        ).all()
    )
    asked, total = [], 0
    for term, count in sorted(counts.items(), key=lambda tc: tc[1]):
        if len(asked) >= FUZZY_MIN_TRIGRAMS and total + count > FUZZY_POSTINGS:
            break
        asked.append((term, count))
        total += count
    return asked


def _words_of(db: DbSession, ids: list[int]) -> dict[int, list[str]]:
    """Each utterance's words, in order (plain rows: ORM objects cost more than matching)."""
    out: dict[int, list[str]] = {i: [] for i in ids}
    if ids:
        rows = db.execute(
            text(
                "SELECT utterance_id, text FROM words WHERE utterance_id IN :ids "
                "ORDER BY utterance_id, idx"
            ).bindparams(bindparam("ids", expanding=True)),
            {"ids": ids},
        )
        for utterance_id, word in rows:
            out[utterance_id].append(word)
    return out


def _query_phonemes(query: str) -> list[str]:
    """The phrase's phonemes; QueryError if it has too little sound to search by."""
    _check_length(query)
    words = tokens(query)
    if not words:
        raise QueryError(f"nothing to search for in {query[:40]!r}; type some words")
    if len(words) > MAX_QUERY_WORDS:
        raise QueryError(
            f"the query has {len(words)} words; search for a phrase of at most {MAX_QUERY_WORDS}"
        )
    phones = phonetic.phonemes(words)
    if len(phones) < FUZZY_MIN_PHONEMES:
        raise QueryError(f"{query[:40]!r} is too short to search by sound; give two or three words")
    return phones


def _segment_at(session: schema.Session, seconds: float) -> tuple[str | None, float | None]:
    frame = round(seconds * session.rate)
    for seg in session.segments:
        if seg.offset <= frame < seg.offset + seg.frames and seg.deleted_at is None:
            return seg.path, (frame - seg.offset) / seg.rate
    return None, None
