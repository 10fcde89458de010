"""``search --fuzzy``: the utterances that sound like a phrase, best first.

Recognizers mishear, so exact search finds about half of what was said. This
finds the rest by sound, in two steps:

1. **Candidates** (:func:`_candidates`): the utterances sharing the most of the
   phrase's rarer phoneme trigrams, read from the phonetic index
   (:mod:`pipeline.phonetic`) within a budget of postings that grows with the
   archive; ties are broken by how much of the phrase each says in order.
2. **Scoring** (:mod:`pipeline.soundalike`): each candidate's word graph (its
   words, or its alternatives), with the end of the utterance before and the
   start of the one after, is matched against the phrase's phonemes by an edit
   distance; those scoring at least the cut-off are hits, loaded as
   :mod:`pipeline.search` loads its own.

The constants were chosen on ``bench/tune_fuzzy.py``'s speech and are measured
by ``bench/findability.py``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import Engine, bindparam, text
from sqlalchemy.orm import Session as DbSession

from . import indexes, lattice, phonetic, schema, soundalike
from .database import db_errors
from .errors import QueryError
from .fulltext import query_words
from .search import Filters, Found, Hit, filter_sql, hit_at, load_hits, typed_binds, words_of

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
        return load_hits(db, [(i, match) for (i, _), match in best.items()], _fuzzy_hit)


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


def _fuzzy_hit(utt: Found, match: soundalike.Match) -> Hit:
    """A hit at the words the match went through: its times are theirs, its ``match``
    the transcript's words said then, ``heard`` the words matched."""
    start, end = match.start, match.end
    said = [k for k, w in enumerate(utt.words) if w.end > start and w.start < end]
    if not said and utt.words:  # the words matched lie between the transcript's
        said = [min(range(len(utt.words)), key=lambda k: abs(utt.words[k].start - start))]
    first, last = (said[0], said[-1] + 1) if said else (0, 0)
    hit = hit_at(utt, first, last, round(match.score, 3))
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
    where, params = filter_sql(db, filters)
    sql = text(
        "SELECT u.id FROM utterances AS u JOIN sessions AS s ON s.id = u.session_id "
        f"WHERE u.id IN :ids AND {' AND '.join(where)}"
    ).bindparams(bindparam("ids", expanding=True), *typed_binds(params))
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
    words = words_of(db, [r[0] for r in rows if r[4] is None])
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


def _query_phonemes(query: str) -> list[str]:
    """The phrase's phonemes; QueryError if it has too little sound to search by."""
    phones = phonetic.phonemes(query_words(query))
    if len(phones) < FUZZY_MIN_PHONEMES:
        raise QueryError(f"{query[:40]!r} is too short to search by sound; give two or three words")
    return phones
