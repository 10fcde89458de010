"""Finding spoken phrases: user text → a safe FTS5 phrase → hits with times.

User text is never handed to FTS5 as syntax. It is split into the same
tokens FTS5's ``unicode61`` tokenizer makes (letters and digits; everything
else separates), and those tokens become one quoted phrase. So quotes,
``AND OR NOT``, ``NEAR(``, ``budg*`` and emoji are searched literally or, if
nothing searchable is left, rejected with a one-line message.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import numpy as np
from sqlalchemy import Engine, bindparam, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import selectinload

from . import lattice, phonetic, schema, soundalike
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
    # --fuzzy: the words the match went through, which may be ones the recognizer
    # weighed and did not output (its alternatives)
    heard: tuple[str, ...] | None = None

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


# --fuzzy: matching by sound (pipeline.phonetic, pipeline.soundalike)
FUZZY_MIN_SCORE = 0.70  # rejects 90 % of phrases never said in bench/tune_fuzzy.py
FUZZY_CANDIDATES = 100  # utterances checked by edit distance: those sharing the most trigrams
FUZZY_MIN_PHONEMES = 6  # shorter queries sound like half the archive
# Utterance-trigram pairs a query reads at most: its rarest trigrams are asked for
# until their utterances add up to this, so a query costs about the same in an
# archive of any size (a common trigram is in a good share of all utterances).
FUZZY_POSTINGS = 20_000
FUZZY_MIN_TRIGRAMS = 3  # asked for even if they are common
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
        found = _candidates(db, phonetic.trigrams(phones), filters)
        said = _said(db, found)
        candidates = [_candidate(said, i, filters) for i in found]
        scorer = soundalike.Scorer(phones, candidates)
        best = _best(scorer, [said[i] for i in found], limit=limit, min_score=min_score)
        rows = db.scalars(
            select(schema.Utterance)
            .where(schema.Utterance.id.in_([i for i, _ in best]))
            .options(
                selectinload(schema.Utterance.words),
                selectinload(schema.Utterance.session).selectinload(schema.Session.segments),
            )
        ).all()
        by_id = {u.id: u for u in rows}
        return [_fuzzy_hit(by_id[i], match) for (i, _), match in best.items()]


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


def _fuzzy_hit(utt: schema.Utterance, match: soundalike.Match) -> Hit:
    """A hit at the words the match went through: its times are theirs, its ``match``
    the transcript's words said then, ``heard`` the words matched."""
    start, end = match.start, match.end
    said = [k for k, w in enumerate(utt.words) if w.end > start and w.start < end]
    if not said and utt.words:  # the words matched lie between the transcript's
        said = [min(range(len(utt.words)), key=lambda k: abs(utt.words[k].start - start))]
    first, last = (said[0], said[-1] + 1) if said else (0, 0)
    hit = _hit_at(utt, first, last, round(match.score, 3))
    segment, offset = _segment_at(utt.session, start)
    return replace(
        hit,
        start=start,
        end=end,
        at=utt.session.started_at + timedelta(seconds=start),
        segment=segment,
        segment_offset=offset,
        heard=match.words,
    )


def _candidates(db: DbSession, trigrams: list[str], filters: Filters) -> list[int]:
    """The utterances, within the filters, sharing the most of the rarest trigrams, each
    weighted by its rarity (idf), most first; at most :data:`FUZZY_CANDIDATES`.

    Not FTS5's bm25: ranking every match in SQL cost 100 ms per 10 000 matches,
    counting them here a few. Only the rarest trigrams are asked for
    (:func:`_rarest`), so a query reads about as much in a large archive as in
    a small one. The postings are read bare (joining each with its utterance for
    the filters cost three times as much); the best are then checked against
    the filters, best first, until enough pass.
    """
    everyone = (db.scalar(text("SELECT max(id) FROM utterances")) or 0) + 1
    postings = text(
        f"SELECT group_concat(rowid) FROM {phonetic.TABLE} WHERE {phonetic.TABLE} MATCH :m"
    )
    ids, weights = [], []
    for term, count in _rarest(db, trigrams):
        listed = db.execute(postings, {"m": f'"{term}"'}).scalar()
        found = np.array(listed.split(","), dtype=np.int64) if listed else np.zeros(0, np.int64)
        ids.append(found)
        weights.append(np.full(len(found), math.log(everyone / count)))
    if not ids:
        return []
    voted, which = np.unique(np.concatenate(ids), return_inverse=True)
    votes = np.bincount(which, weights=np.concatenate(weights))
    voted, votes = _with_next(voted, votes)
    order = np.lexsort((-voted, -votes))  # most votes first, then newest
    return _passing(db, [int(i) for i in voted[order]], filters)


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


def _passing(db: DbSession, ranked: list[int], filters: Filters) -> list[int]:
    """The first :data:`FUZZY_CANDIDATES` of ``ranked`` that pass the filters (and are in
    their session's transcript searched), checked a batch at a time."""
    where, params = _where(db, filters)
    sql = text(
        "SELECT u.id FROM utterances AS u JOIN sessions AS s ON s.id = u.session_id "
        f"WHERE u.id IN :ids AND {' AND '.join(where)}"
    ).bindparams(bindparam("ids", expanding=True), *_typed(params))
    out: list[int] = []
    batch = 4 * FUZZY_CANDIDATES
    for lo in range(0, len(ranked), batch):
        chunk = ranked[lo : lo + batch]
        passed = {i for (i,) in db.execute(sql, {"ids": chunk, **params}).cursor.fetchall()}
        out += [i for i in chunk if i in passed][: FUZZY_CANDIDATES - len(out)]
        if len(out) >= FUZZY_CANDIDATES:
            break
    return out


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
            " AND n.start >= u.end - 0.05 AND n.start <= u.end + :pause AND n.id != u.id "
            " ORDER BY n.start LIMIT 1), "
            "(SELECT p.id FROM utterances AS p WHERE p.transcript_id = u.transcript_id "
            " AND p.start < u.start AND p.start > u.start - :reach AND p.id != u.id "
            " AND p.end >= u.start - :pause ORDER BY p.start DESC LIMIT 1) "
            "FROM utterances AS u LEFT JOIN alternatives AS a ON a.utterance_id = u.id "
            "WHERE u.id IN :ids"
        ).bindparams(bindparam("ids", expanding=True)),
        {"ids": ids, "pause": FUZZY_PAUSE_SECONDS, "reach": _LONGEST_UTTERANCE_SECONDS},
    ).cursor.fetchall()
    words = _words_of(db, [r[0] for r in rows if r[4] is None])
    out: dict[int, _Said] = {}
    for i, start, at, _, packed, following, previous in rows:
        if packed is not None:
            graph = soundalike.Graph(*lattice.unpack(packed, start))
        else:
            graph = soundalike.Graph.of_words(*words[i])
        when = datetime.fromisoformat(at).replace(tzinfo=UTC)  # stored as naive UTC text
        out[i] = _Said(i, when, graph, following, previous)
    if neighbours:
        near = {n for s in out.values() for n in (s.next, s.previous)} - {None} - set(out)
        out = _said(db, sorted(near), neighbours=False) | out
    return out


def _words_of(db: DbSession, ids: list[int]) -> dict[int, tuple[list, list, list]]:
    """Each utterance's words: their texts, starts and ends, in order."""
    out: dict[int, tuple[list, list, list]] = {i: ([], [], []) for i in ids}
    if ids:
        rows = db.execute(
            text(
                "SELECT utterance_id, text, start, end FROM words WHERE utterance_id IN :ids "
                "ORDER BY utterance_id, idx"
            ).bindparams(bindparam("ids", expanding=True)),
            {"ids": ids},
        ).cursor.fetchall()
        for utterance_id, word, start, end in rows:
            texts, starts, ends = out[utterance_id]
            texts.append(word)
            starts.append(start)
            ends.append(end)
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
