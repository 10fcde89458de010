"""Finding spoken phrases: user text → a safe FTS5 phrase → hits with times.

User text is never handed to FTS5 as syntax. It is split into the same
tokens FTS5's ``unicode61`` tokenizer makes (letters and digits; everything
else separates), and those tokens become one quoted phrase. So quotes,
``AND OR NOT``, ``NEAR(``, ``budg*`` and emoji are searched literally or, if
nothing searchable is left, rejected with a one-line message.

Search by sound (``fuzzy=True``) is :mod:`pipeline.fuzzy`; its hits are loaded
and located here too (:func:`load_hits`), so both kinds are the same :class:`Hit`.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import Engine, bindparam, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session as DbSession

from . import indexes, schema
from .database import db_errors
from .errors import QueryError
from .fulltext import (
    check_query,
    fts_error,
    phrase_match,
    phrase_words,
    tokens,
    word_tokens,
)


def phrase_query(query: str) -> str:
    """The FTS5 MATCH string for an exact phrase; QueryError if nothing is searchable."""
    return phrase_match(phrase_words(query))


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
    recorder: str = ""  # the machine that recorded it, whose disk has the audio
    # --fuzzy: the words the match went through, which may be ones the recognizer
    # weighed and did not output (its alternatives)
    heard: tuple[str, ...] | None = None

    @property
    def text(self) -> str:
        return " ".join(self.words)

    @property
    def matched(self) -> str:
        """The transcript's words where the phrase was found."""
        return " ".join(self.words[self.match[0] : self.match[1]])

    def as_json(self) -> dict:
        """What the CLI's ``--json`` and the web page's API both send of a hit, as JSON
        values (each adds what its reader needs: paths and context, or words and a clip)."""
        return {
            "id": self.id,
            "at": self.at.astimezone().isoformat(timespec="milliseconds"),
            "session_id": self.session_id,
            "session": self.session_key,
            "source": self.source,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "text": self.text,
            "engine": self.engine,
            **({} if self.score is None else {"score": self.score}),
            **({} if self.heard is None else {"heard": " ".join(self.heard)}),
        }


@dataclass(frozen=True)
class Filters:
    """What narrows a search besides the words (all optional)."""

    since: datetime | None = None  # aware datetimes; compared in UTC
    until: datetime | None = None
    session: str | None = None  # an id or a key
    source: str | None = None  # file, system or mic (system+mic sessions are both)
    device: str | None = None  # part of the device's name or the file's path
    model: str | None = None  # transcripts by this model instead of the default ones
    recorder: str | None = None  # the machine that recorded it (a shared archive)


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
    phrase. ``fuzzy``: find what sounds like the phrase (see :mod:`pipeline.fuzzy`).
    ``options`` are :class:`Filters` fields, as keywords.
    """
    if limit < 1:
        raise QueryError("--limit must be at least 1")
    filters = filters or Filters(**options)
    if fuzzy:
        if fts:
            raise QueryError("--fuzzy and --fts do not combine; use one")
        from .fuzzy import FUZZY_MIN_SCORE, fuzzy_search  # (it builds on this module)

        cut = FUZZY_MIN_SCORE if min_score is None else min_score
        hits = fuzzy_search(engine, query, limit=limit, min_score=cut, filters=filters)
    else:
        hits = _phrase_search(engine, query, limit=limit, fts=fts, rank=rank, filters=filters)
    if not hits and filters.session is not None:
        # a mistyped session is named as such, not answered with "no match"
        with db_errors(engine), DbSession(engine) as db:
            schema.find_session(db, filters.session)
    return hits


def _phrase_search(
    engine: Engine, query: str, *, limit: int, fts: bool, rank: bool, filters: Filters
) -> list[Hit]:
    """Utterances with the phrase (``fts``: matching the FTS5 query), each confirmed by
    its words."""
    wanted = [t for t in tokens(query) if not fts or t.upper() not in FTS_WORDS]
    hits: list[Hit] = []
    seen = 0
    with db_errors(engine), DbSession(engine) as db:
        # a row the index kept of a deleted utterance is not confirmed: it is left
        # out, and the next ones asked for
        while len(hits) < limit:
            ids = matching_ids(
                db, query, limit=limit, fts=fts, rank=rank, filters=filters, skip=seen
            )
            seen += len(ids)
            hits += load_hits(db, [(i, None) for i in ids], lambda utt, _: _span(utt, wanted, fts))
            if len(ids) < limit:
                break
        return hits[:limit]


def matching_ids(
    db: DbSession,
    query: str,
    *,
    limit: int,
    fts: bool,
    rank: bool,
    filters: Filters,
    skip: int = 0,
) -> list[int]:
    """The ids of the utterances :func:`search` shows (exact or ``fts``), in its order;
    ``skip``: after the first so many."""
    found = indexes.of(db).words(
        None if fts else phrase_words(query), fts_query(query) if fts else None, rank
    )
    where, params = filter_sql(db, filters, **found.filters)
    # Newest first is the index's own order (time keys, migration 0007): SQLite's FTS5
    # streams matches from the newest and stops at the limit.
    bounds = _time_range(db, filters, params, found.key, exact=not found.filters.get("at", True))
    conditions = [*found.conditions, *where, *bounds]
    sql = text(
        f"SELECT {found.id} FROM {found.source} JOIN sessions AS s ON s.id = {found.session} "
        f"WHERE {' AND '.join(conditions)} ORDER BY {found.order} LIMIT :limit OFFSET :skip"
    ).bindparams(*typed_binds(params))
    return _run(db, sql, {"limit": limit, "skip": skip, **params, **found.params}, fts)


def _time_range(db: DbSession, f: Filters, params: dict, key: str, exact: bool) -> list[str]:
    """Time key bounds for the full-text index from the time filters and the session's
    span, so that the index seeks to them instead of reading every match outside them;
    ``exact``: they are the time filters (else ``u.at`` is, and the bounds stay wide)."""
    lo, hi = [], []
    if f.since is not None:
        lo.append(schema.time_key(f.since))
    if f.until is not None:
        hi.append(schema.time_key(f.until))
    if f.session is not None:
        row = db.execute(
            select(schema.Session.started_at, schema.Session.frames, schema.Session.rate).where(
                schema.session_named(f.session)
            )
        ).first()
        if row is not None:
            started, frames, rate = row
            lo.append(schema.time_key(started))
            if frames is not None:  # a session still recording has no end yet
                hi.append(schema.time_key(started + timedelta(seconds=frames / rate + 1)))
    where = []
    if lo:
        where.append(f"{key} >= :key_lo")
        params["key_lo"] = max(lo)
    if hi:
        # keys are made unique by moving on a few microseconds: stay a second wide
        where.append(f"{key} < :key_hi")
        params["key_hi"] = min(hi) + (0 if exact and f.until is not None else 1_000_000)
    return where


FTS_WORDS = {"AND", "OR", "NOT", "NEAR"}
# what SQLite says of a bad FTS5 query (not of a locked or broken database)
_FTS_ERROR = re.compile(
    r"fts5: (.*)|(unterminated string)|(unknown special query.*)|(no such column.*)"
)


def fts_query(query: str) -> str:
    """The user's FTS5 query, checked only for being searchable at all."""
    check_query(query)
    if not tokens(query):
        raise QueryError(f"nothing to search for in {query[:40]!r}; type some words")
    return query


def _run(db: DbSession, sql, params: dict, fts: bool) -> list[int]:
    """Run the search; an FTS5 syntax error becomes one line pointing at the problem."""
    try:
        return list(db.scalars(sql, params))
    except OperationalError as exc:
        found = _FTS_ERROR.search(str(exc.orig)) if fts else None
        if found is None:
            raise
        problem = next(g for g in found.groups() if g)
        raise fts_error(params["match"], problem) from None


def filter_sql(
    db: DbSession, f: Filters, u: str = "u", at: bool = True, default: str | None = None
) -> tuple[list[str], dict]:
    """SQL conditions (on the utterance ``u``, which has ``transcript_id`` and, if ``at``,
    ``at``, and on sessions ``s``) and their parameters; ``default``: how the index says
    "in its session's default transcript", if not by comparing with ``s``."""
    params: dict = {}
    if f.model is None:
        where = [default or f"{u}.transcript_id = s.transcript_id"]
    else:
        where = [
            f"{u}.transcript_id IN (SELECT max(t.id) FROM transcripts AS t "
            "WHERE t.engine IN :labels GROUP BY t.session_id)"
        ]
        params["labels"] = transcript_engines(db, f.model)
    if f.since is not None and at:
        where.append(f"{u}.at >= :since")
        params["since"] = f.since
    if f.until is not None and at:
        where.append(f"{u}.at < :until")
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
    if f.recorder is not None:
        where.append("s.recorder = :recorder")
        params["recorder"] = f.recorder
    if f.device is not None:
        where.append("lower(s.source) LIKE :device ESCAPE '\\'")
        escaped = re.sub(r"([\\%_])", r"\\\1", f.device.lower())
        params["device"] = f"%{escaped}%"
    return where, params


SOURCE_KINDS = ("file", "system", "mic", "system+mic")


def typed_binds(params: dict) -> list:
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


class SaidWord(NamedTuple):
    text: str
    start: float
    end: float


@dataclass(frozen=True)
class Found:
    """An utterance a search found, as plain values: ORM objects cost more than the search."""

    id: int
    start: float
    end: float
    engine: str
    session_id: int
    session_key: str
    source: str
    started_at: datetime
    rate: int
    recorder: str
    # the segment holding the utterance's start (None if its audio is gone): path,
    # first frame, frames, rate
    segment: tuple[str, int, int, int] | None
    words: list[SaidWord]


def _latest_segment(session: str, frame: str) -> str:
    """SQL for the id of a session's latest segment starting at or before a frame, of
    those whose audio is here or has a copy in object storage (the index on session and
    offset finds it)."""
    return (
        f'(SELECT x.id FROM segments AS x WHERE x.session_id = {session} AND x."offset" <= '
        f"{frame} AND (x.deleted_at IS NULL OR x.remote IS NOT NULL) "
        'ORDER BY x."offset" DESC LIMIT 1)'
    )


def _into(segment: tuple[str, int, int, int] | None, frame: int) -> tuple[str, float] | None:
    """The segment file (path, first frame, frames, rate) and seconds into it of a frame,
    if the segment holds that frame; else None."""
    if segment is None:
        return None
    path, offset, frames, rate = segment
    return (path, (frame - offset) / rate) if offset <= frame < offset + frames else None


# The utterances with their sessions and the segment holding each one's start (the
# latest starting at or before it, found by the index on session and offset)
_FOUND = (
    text(
        'SELECT u.id, u.start, u."end", u.engine, s.id AS session_id, s.key, s.source, '
        's.started_at, s.rate, s.recorder, g.path, g."offset", g.frames, g.rate '
        "FROM utterances AS u JOIN sessions AS s ON s.id = u.session_id "
        "LEFT JOIN segments AS g ON g.id = "
        + _latest_segment("u.session_id", "CAST(u.start * s.rate AS BIGINT)")
        + " WHERE u.id IN :ids"
    )
    .bindparams(bindparam("ids", expanding=True))
    .columns(started_at=schema.UTCDateTime())
)
_WORDS = text(
    'SELECT utterance_id, text, start, "end" FROM words WHERE utterance_id IN :ids '
    "ORDER BY utterance_id, idx"
).bindparams(bindparam("ids", expanding=True))


def load_hits(db: DbSession, found: list[tuple[int, object]], make) -> list[Hit]:
    """The hits for (utterance id, what was found in it), in that order; ``make(utterance,
    what)`` makes each (see :func:`hit_at`).

    Two plain queries for all of them: utterances with sessions and segments, and
    words; a third only for matches past the end of their utterance's first segment
    or whose audio is gone.
    """
    ids = sorted({i for i, _ in found})
    if not ids:
        return []
    words = words_of(db, ids)
    said = {}
    for *row, path, offset, frames, rate in db.execute(_FOUND, {"ids": ids}).all():
        segment = None if path is None else (path, offset, frames, rate)
        texts, starts, ends = words[row[0]]
        said_words = [SaidWord(*w) for w in zip(texts, starts, ends, strict=True)]
        said[row[0]] = Found(*row, segment, said_words)
    made = (make(said[i], what) for i, what in found if i in said)
    hits = [h for h in made if h is not None]
    frames = [round(h.start * said[h.id].rate) for h in hits]
    heard = [_into(said[h.id].segment, frame) for h, frame in zip(hits, frames, strict=True)]
    missing = [k for k, x in enumerate(heard) if x is None]
    later = _segments_at(db, [(hits[k].session_id, frames[k]) for k in missing])
    for k, at in zip(missing, later, strict=True):
        heard[k] = at
    return [
        dataclasses.replace(h, segment=at[0], segment_offset=at[1])
        for h, at in zip(hits, heard, strict=True)
    ]


def _span(utt: Found, wanted: list[str], any_word: bool) -> Hit | None:
    """The hit on the words that spell the query (any of them, for FTS5 syntax); None if
    the utterance does not have the phrase (a stale index row, see pipeline.fulltext)."""
    if not utt.words:  # nothing to check it by (rows written without words)
        return hit_at(utt, 0, 0, None)
    span = locate_any(utt.words, wanted) if any_word else locate(utt.words, wanted)
    return None if span is None else hit_at(utt, *span, None)


def hit_at(utt: Found, first: int, last: int, score: float | None) -> Hit:
    """A hit on words [first, last) of the utterance (its segment is found afterwards)."""
    words = utt.words
    start = words[first].start if words else utt.start
    end = words[last - 1].end if words else utt.end
    return Hit(
        id=utt.id,
        session_id=utt.session_id,
        session_key=utt.session_key,
        source=utt.source,
        words=tuple(w.text for w in words),
        match=(first, last),
        start=start,
        end=end,
        utterance_start=utt.start,
        utterance_end=utt.end,
        at=utt.started_at + timedelta(seconds=start),
        segment=None,
        segment_offset=None,
        engine=utt.engine,
        score=score,
        recorder=utt.recorder,
    )


def _segments_at(
    db: DbSession, moments: list[tuple[int, int]]
) -> list[tuple[str | None, float | None]]:
    """For (session id, session frame) pairs: the segment file (relative path) holding
    each, and seconds into it; (None, None) where its audio was deleted (and has no copy
    in object storage). One query: each
    moment's latest segment starting at or before it (the index on session and offset
    finds it), then whether it reaches that far."""
    if not moments:
        return []
    rows = ", ".join(f"(:i{k}, :s{k}, :f{k})" for k in range(len(moments)))
    params = {}
    for k, (session, frame) in enumerate(moments):
        params.update({f"i{k}": k, f"s{k}": session, f"f{k}": frame})
    sql = text(
        f"WITH m(i, session, frame) AS (VALUES {rows}) "
        'SELECT m.i, m.frame, g.path, g."offset", g.frames, g.rate FROM m JOIN segments AS g '
        f"ON g.id = {_latest_segment('m.session', 'm.frame')}"
    )
    out: list[tuple[str | None, float | None]] = [(None, None)] * len(moments)
    for i, frame, *segment in db.execute(sql, params).all():
        out[i] = _into(tuple(segment), frame) or (None, None)
    return out


def locate(words: list[SaidWord], wanted: list[str]) -> tuple[int, int] | None:
    """The word range whose tokens spell ``wanted``; None if they do not."""
    flat = [(t, i) for i, w in enumerate(words) for t in word_tokens(w.text)]
    n = len(wanted)
    for k in range(len(flat) - n + 1):
        if [t for t, _ in flat[k : k + n]] == wanted:
            return flat[k][1], flat[k + n - 1][1] + 1
    return None


def locate_any(words: list[SaidWord], wanted: list[str]) -> tuple[int, int]:
    """The first word that is (or, for a prefix query, starts like) one of ``wanted``."""
    for i, w in enumerate(words):
        if any(t.startswith(x) for t in word_tokens(w.text) for x in wanted):
            return i, i + 1
    return 0, len(words)


def words_of(db: DbSession, ids: list[int]) -> dict[int, tuple[list, list, list]]:
    """Each utterance's words, column by column: their texts, starts and ends, in order
    (plain rows: fuzzy search reads thousands)."""
    out: dict[int, tuple[list, list, list]] = {i: ([], [], []) for i in ids}
    if ids:
        for utterance_id, word, start, end in db.execute(_WORDS, {"ids": ids}).cursor.fetchall():
            texts, starts, ends = out[utterance_id]
            texts.append(word)
            starts.append(start)
            ends.append(end)
    return out
