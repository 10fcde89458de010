"""Finding spoken phrases: user text → a safe FTS5 phrase → hits with times.

User text is never handed to FTS5 as syntax. It is split into the same
tokens FTS5's ``unicode61`` tokenizer makes (letters and digits; everything
else separates), and those tokens become one quoted phrase. So quotes,
``AND OR NOT``, ``NEAR(``, ``budg*`` and emoji are searched literally or, if
nothing searchable is left, rejected with a one-line message.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

import numpy as np
from sqlalchemy import Engine, bindparam, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session as DbSession

from . import indexes, lattice, phonetic, schema, soundalike
from .database import db_errors
from .errors import QueryError
from .fulltext import (
    MAX_QUERY_WORDS,
    check_length,
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
            hits += _hits(db, [(i, None) for i in ids], lambda utt, _: _span(utt, wanted, fts))
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
    where, params = _where(db, filters, **found.filters)
    # Newest first is the index's own order (time keys, migration 0007): SQLite's FTS5
    # streams matches from the newest and stops at the limit.
    bounds = _time_range(db, filters, params, found.key, exact=not found.filters.get("at", True))
    conditions = [*found.conditions, *where, *bounds]
    sql = text(
        f"SELECT {found.id} FROM {found.source} JOIN sessions AS s ON s.id = {found.session} "
        f"WHERE {' AND '.join(conditions)} ORDER BY {found.order} LIMIT :limit OFFSET :skip"
    ).bindparams(*_typed(params))
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
    check_length(query)
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
        raise QueryError(
            f"--fts query {params['match'][:60]!r}: {problem}; see "
            "https://sqlite.org/fts5.html#full_text_query_syntax (or search without --fts)"
        ) from None


def _where(
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


class SaidWord(NamedTuple):
    text: str
    start: float
    end: float


@dataclass(frozen=True)
class _Found:
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


def _hits(db: DbSession, found: list[tuple[int, object]], make) -> list[Hit]:
    """The hits for (utterance id, what was found in it), in that order; ``make(utterance,
    what)`` makes each (see :func:`_hit_at`).

    Two plain queries for all of them: utterances with sessions and segments, and
    words; a third only for matches past the end of their utterance's first segment
    or whose audio is gone.
    """
    ids = sorted({i for i, _ in found})
    if not ids:
        return []
    words = _words_of(db, ids)
    said = {}
    for *row, path, offset, frames, rate in db.execute(_FOUND, {"ids": ids}).all():
        segment = None if path is None else (path, offset, frames, rate)
        texts, starts, ends = words[row[0]]
        said_words = [SaidWord(*w) for w in zip(texts, starts, ends, strict=True)]
        said[row[0]] = _Found(*row, segment, said_words)
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


def _span(utt: _Found, wanted: list[str], any_word: bool) -> Hit | None:
    """The hit on the words that spell the query (any of them, for FTS5 syntax); None if
    the utterance does not have the phrase (a stale index row, see pipeline.fulltext)."""
    if not utt.words:  # nothing to check it by (rows written without words)
        return _hit_at(utt, 0, 0, None)
    span = locate_any(utt.words, wanted) if any_word else locate(utt.words, wanted)
    return None if span is None else _hit_at(utt, *span, None)


def _hit_at(utt: _Found, first: int, last: int, score: float | None) -> Hit:
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


# --fuzzy: matching by sound (pipeline.phonetic, pipeline.soundalike)
FUZZY_MIN_SCORE = 0.70  # rejects 90 % of phrases never said in bench/tune_fuzzy.py
FUZZY_CANDIDATES = 100  # utterances checked by edit distance: those sharing the most trigrams
FUZZY_MIN_PHONEMES = 6  # shorter queries sound like half the archive
# Utterance-trigram pairs a query reads (postings): its rarest trigrams are asked for
# until their utterances add up to a budget (_budget), a share of the archive's
# utterances, so that as the archive grows the same trigrams are asked for and the
# right utterance stays among the candidates; at least FUZZY_POSTINGS, at most what
# the database reads in about 20 ms (indexes' most_sound_postings), so a query's time
# grows with the archive up to that. In bench/findability.py at 1000 h, 20,000
# postings put 53.5 % of the spoken phrases in the top 3, 60,000 70.4 %; at 100 h,
# 60,000 did worse than 20,000 (85.9 against 87.3 %): common trigrams vote too.
FUZZY_POSTINGS = 20_000
FUZZY_POSTINGS_SHARE = 0.3  # of the utterances: 21,000 postings at 100 h (70,000 of them)
FUZZY_MIN_TRIGRAMS = 3  # asked for even if they are common,
FUZZY_CAP = 2  # unless that reads more than this many budgets
FUZZY_TIE_LOOKUPS = 300  # utterances tied at the last candidate's votes, put in order
# (in bench/findability.py at 1000 h: 80.3 % in the top 3; 500: 81.7 %, 3-7 ms more
# on PostgreSQL, whose smaller budget makes larger ties)
# A phrase said across a pause: a candidate is matched with the end of the utterance
# before it and the start of the one after (soundalike.Candidate) if the pause is this
# long at most
FUZZY_PAUSE_SECONDS = 2.0
_LONGEST_UTTERANCE_SECONDS = 60.0  # the recognizer cuts at 30 s


@dataclass(frozen=True)
class _Said:
    """What fuzzy search needs of an utterance: its time, word graph and neighbours."""

    id: int
    at: datetime
    graph: soundalike.Graph
    next: int | None  # the next utterance of its transcript, if within a pause
    previous: int | None


def fuzzy_search(
    engine: Engine, query: str, *, limit: int, min_score: float, filters: Filters
) -> list[Hit]:
    """Utterances that sound like the phrase, best score first (then newest).

    Candidates are the utterances sharing the most of the phrase's rarer
    phoneme trigrams (:func:`_candidates`). Each is matched along its word
    graph (its words, or what else the recognizer heard: its alternatives)
    with the end of the utterance before and the start of the one after (a
    phrase said across a pause), all at once (:class:`soundalike.Scorer`).
    Those scoring at least ``min_score`` are hits, each in the utterance
    where its match begins; the best ``limit`` are traced back to the words
    that matched.
    """
    if not 0.0 <= min_score <= 1.0:
        raise QueryError("--min-score must be between 0 and 1")
    phones = _query_phonemes(query)
    with db_errors(engine), DbSession(engine) as db:
        found = _candidates(db, phones, filters)
        said = _said(db, found)
        candidates = [_candidate(said, i, filters) for i in found]
        scorer = soundalike.Scorer(phones, candidates)
        best = _best(scorer, [said[i] for i in found], limit=limit, min_score=min_score)
        return _hits(db, [(i, match) for (i, _), match in best.items()], _fuzzy_hit)


def _best(
    scorer: soundalike.Scorer, found: list[_Said], *, limit: int, min_score: float
) -> dict[tuple[int, float], soundalike.Match]:
    """The best ``limit`` matches scoring at least ``min_score`` (then the newest), by
    the utterance where each begins and its start: a moment may be matched from two
    candidates (its own, and the one after), and counts once."""
    scores = 1.0 - scorer.distances() / len(scorer.query)
    ranked = sorted(
        (k for k in range(len(found)) if scores[k] >= min_score),
        key=lambda k: (-scores[k], -found[k].at.timestamp(), -found[k].id),
    )
    best: dict[tuple[int, float], soundalike.Match] = {}
    for k in ranked:
        if len(best) >= limit:
            break
        match = scorer.match(k)
        begins = found[k].previous if match.in_before else found[k].id
        best.setdefault((begins, match.start), match)
    return best


def _candidate(said: dict[int, _Said], i: int, filters: Filters) -> soundalike.Candidate:
    """Utterance ``i`` as matched, with its neighbours within a pause; a match may begin in
    the one before if that passes the filters' times."""
    utterance = said[i]
    before = said.get(utterance.previous) if utterance.previous is not None else None
    after = said.get(utterance.next) if utterance.next is not None else None
    return soundalike.Candidate(
        utterance.graph,
        before.graph if before is not None else None,
        after.graph if after is not None else None,
        before is not None and _within(before.at, filters),
    )


def _within(at: datetime, f: Filters) -> bool:
    """Whether a time passes the filters' --since and --until."""
    return (f.since is None or at >= f.since) and (f.until is None or at < f.until)


def _fuzzy_hit(utt: _Found, match: soundalike.Match) -> Hit:
    """A hit at the words the match went through: its times are theirs, its ``match``
    the transcript's words said then, ``heard`` the words matched."""
    start, end = match.start, match.end
    said = [k for k, w in enumerate(utt.words) if w.end > start and w.start < end]
    if not said and utt.words:  # the words matched lie between the transcript's
        said = [min(range(len(utt.words)), key=lambda k: abs(utt.words[k].start - start))]
    first, last = (said[0], said[-1] + 1) if said else (0, 0)
    hit = _hit_at(utt, first, last, round(match.score, 3))
    return dataclasses.replace(
        hit,
        start=start,
        end=end,
        at=utt.started_at + timedelta(seconds=start),
        heard=match.words,
    )


def _candidates(db: DbSession, phones: list[str], filters: Filters) -> list[int]:
    """The utterances, within the filters, sharing the most of the phrase's rarest
    trigrams, each weighted by its rarity (idf), most first; at most
    :data:`FUZZY_CANDIDATES`.

    Not FTS5's bm25: ranking every match in SQL cost 100 ms per 10 000 matches,
    counting them here a few. Only the rarest trigrams are asked for
    (:func:`_rarest`), within a budget that grows with the archive up to what
    the database reads in time (:func:`_budget`). The postings are read bare
    (joining each with its utterance for the filters cost three times as much);
    the best are then checked against the filters, best first, until enough pass.
    """
    everyone = (db.scalar(text("SELECT max(id) FROM utterances")) or 0) + 1
    index = indexes.of(db)
    ids, weights = [], []
    trigrams = phonetic.trigrams(phones)
    for term, count in _rarest(db, trigrams, _budget(everyone, index.most_sound_postings)):
        listed = db.execute(index.sound_postings(), {"term": index.sound_term(term)}).scalar()
        found = np.fromstring(listed or "", dtype=np.int64, sep=",")  # (C: 6x np.array(split))
        ids.append(found)
        weights.append(np.full(len(found), math.log(everyone / count)))
    if not ids:
        return []
    voted, which = np.unique(np.concatenate(ids), return_inverse=True)
    votes = np.bincount(which, weights=np.concatenate(weights))
    voted, votes = _with_next(voted, votes)
    order = np.lexsort((-voted, -votes))  # most votes first, then newest
    order = _said_in_order_in_the_tie(db, phones, voted, votes, order)
    return _passing(db, voted[order], filters)


def _said_in_order_in_the_tie(
    db: DbSession, phones: list[str], voted: np.ndarray, votes: np.ndarray, order: np.ndarray
) -> np.ndarray:
    """``order`` with the utterances that tie with the last candidate's votes ordered by
    the longest run of the phrase's phonemes said in order in their transcript, then
    shortest first, then newest, if more tie than there is room for.

    In a large archive a phrase of common sounds ("more respectable than") has every
    trigram asked for in hundreds of utterances, and their votes tie: the trigrams
    are a set, not in order. An utterance that has them by chance, scattered over
    other words, has a short run of the phrase's sounds in a row; one where it was
    said, a long one (:func:`soundalike.longest_runs`, on the transcript's words;
    the edit distance hits are scored by, on the same words, added 13 ms to a
    query's median at 1000 h and found fewer). Among equals, a shorter one is less
    likely to have them by chance. In ``bench/findability.py`` at 1000 h this puts
    80.3 % of the spoken phrases in the top 3, against 74.6 % by length alone. Only
    the tie is looked up, at most :data:`FUZZY_TIE_LOOKUPS` of it (by their newest).
    """
    if len(order) <= FUZZY_CANDIDATES:
        return order
    tie = int(np.count_nonzero(votes[order] >= votes[order[FUZZY_CANDIDATES - 1]]))
    tie = min(tie, FUZZY_TIE_LOOKUPS)
    if tie <= FUZZY_CANDIDATES:
        return order
    head = order[:tie]
    words, lengths = _transcripts(db, voted[head])
    runs = soundalike.longest_runs(phones, words)
    head = head[np.lexsort((-voted[head], lengths, -runs, -votes[head]))]
    return np.concatenate([head, order[tie:]])


def _transcripts(db: DbSession, ids: np.ndarray) -> tuple[list[list[str]], np.ndarray]:
    """Each utterance's words and its length in seconds (none and infinite if it is gone)."""
    found = {
        i: (words, length)
        for i, words, length in db.execute(
            text('SELECT id, text, "end" - start FROM utterances WHERE id IN :ids').bindparams(
                bindparam("ids", expanding=True)
            ),
            {"ids": [int(i) for i in ids]},
        ).all()
    }
    rows = [found.get(int(i), ("", math.inf)) for i in ids]
    return [t.split() for t, _ in rows], np.array([length for _, length in rows], dtype=float)


def _with_next(voted: np.ndarray, votes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each utterance's votes with those of the next one: a phrase said across a pause
    has half its trigrams in each, and is matched from the first (see
    :func:`fuzzy_search`). The next one is taken to be the next id, as the indexer
    writes a session's utterances in order (where two sessions' interleave, a
    candidate is chosen by its own votes, with some noise); an utterance with no
    votes of its own before one that has some joins them with those.
    """
    later = np.searchsorted(voted, voted + 1)
    has = later < len(voted)
    has[has] = voted[later[has]] == voted[has] + 1
    paired = votes + np.where(has, votes[np.minimum(later, len(votes) - 1)], 0.0)
    earlier = voted - 1
    lone = ~np.isin(earlier, voted) & (earlier > 0)
    return np.concatenate([voted, earlier[lone]]), np.concatenate([paired, votes[lone]])


def _passing(db: DbSession, ranked: np.ndarray, filters: Filters) -> list[int]:
    """The first :data:`FUZZY_CANDIDATES` of ``ranked`` that pass the filters (and are in
    their session's transcript searched), checked a batch at a time (made Python ints a
    batch at a time too: all of them, 100,000 at 1000 h, cost 10 ms)."""
    where, params = _where(db, filters)
    sql = text(
        "SELECT u.id FROM utterances AS u JOIN sessions AS s ON s.id = u.session_id "
        f"WHERE u.id IN :ids AND {' AND '.join(where)}"
    ).bindparams(bindparam("ids", expanding=True), *_typed(params))
    out: list[int] = []
    batch = 4 * FUZZY_CANDIDATES
    for lo in range(0, len(ranked), batch):
        chunk = ranked[lo : lo + batch].tolist()
        passed = {i for (i,) in db.execute(sql, {"ids": chunk, **params}).cursor.fetchall()}
        out += [i for i in chunk if i in passed][: FUZZY_CANDIDATES - len(out)]
        if len(out) >= FUZZY_CANDIDATES:
            break
    return out


def _budget(utterances: int, most: int) -> int:
    """How many postings a query reads in an archive of this many utterances, with a
    database that reads at most ``most`` in time (see :data:`FUZZY_POSTINGS_SHARE`)."""
    return min(most, max(FUZZY_POSTINGS, round(FUZZY_POSTINGS_SHARE * utterances)))


def _rarest(db: DbSession, trigrams: list[str], budget: int) -> list[tuple[str, int]]:
    """The query's rarest trigrams that the archive has, with how many utterances have
    each, until those add up to ``budget`` (at least :data:`FUZZY_MIN_TRIGRAMS` of them
    while they add up to :data:`FUZZY_CAP` budgets; at least one)."""
    counts = indexes.of(db).sound_counts(db, sorted({t.casefold() for t in trigrams}))
    asked, total = [], 0
    for term, count in sorted(counts.items(), key=lambda tc: (tc[1], tc[0])):
        enough = len(asked) >= FUZZY_MIN_TRIGRAMS or total + count > FUZZY_CAP * budget
        if asked and enough and total + count > budget:
            break
        asked.append((term, count))
        total += count
    return asked


def _said(db: DbSession, ids: list[int], *, neighbours: bool = True) -> dict[int, _Said]:
    """The utterances' words as graphs (their alternatives where they have some), with
    the next and the previous utterance of each (``neighbours``: fetched too).

    Plain rows: ORM objects cost more than the matching.
    """
    if not ids:
        return {}
    rows = db.execute(
        text(
            "SELECT u.id, u.start, u.at, u.text, a.graph, "
            "(SELECT n.id FROM utterances AS n WHERE n.transcript_id = u.transcript_id "
            ' AND n.start >= u."end" - 0.05 AND n.start <= u."end" + :pause AND n.id != u.id '
            " ORDER BY n.start LIMIT 1), "
            "(SELECT p.id FROM utterances AS p WHERE p.transcript_id = u.transcript_id "
            " AND p.start < u.start AND p.start > u.start - :reach AND p.id != u.id "
            ' AND p."end" >= u.start - :pause ORDER BY p.start DESC LIMIT 1) '
            "FROM utterances AS u LEFT JOIN alternatives AS a ON a.utterance_id = u.id "
            "WHERE u.id IN :ids"
        ).bindparams(bindparam("ids", expanding=True)),
        {"ids": ids, "pause": FUZZY_PAUSE_SECONDS, "reach": _LONGEST_UTTERANCE_SECONDS},
    ).cursor.fetchall()
    words = _words_of(db, [r[0] for r in rows if r[4] is None])
    out: dict[int, _Said] = {}
    for i, start, at, _, packed, following, previous in rows:
        if packed is not None:
            graph = lattice.unpack(packed, start)
        else:
            graph = soundalike.Graph.of_words(*words[i])
        when = _utc(at)
        out[i] = _Said(i, when, graph, following, previous)
    if neighbours:
        near = {n for s in out.values() for n in (s.next, s.previous)} - {None} - set(out)
        out = _said(db, sorted(near), neighbours=False) | out
    return out


def _utc(at) -> datetime:
    """A time read as a plain row: SQLite's naive UTC text, or PostgreSQL's timestamptz."""
    return schema.as_utc(datetime.fromisoformat(at) if isinstance(at, str) else at)


def _words_of(db: DbSession, ids: list[int]) -> dict[int, tuple[list, list, list]]:
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


def _query_phonemes(query: str) -> list[str]:
    """The phrase's phonemes; QueryError if it has too little sound to search by."""
    check_length(query)
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
