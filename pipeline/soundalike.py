"""Does an utterance sound like the query? An approximate match of phonemes along a word graph.

An utterance is searched as a :class:`~pipeline.lattice.Graph`: its words in a row, or, where
the recognizer gave them, its alternatives (:mod:`pipeline.lattice`), which
hold those words and the others it weighed. The query's phonemes are
matched along any path of the graph by a substring edit distance (Sellers):
a word may be misheard (similar sounds cost :data:`NEAR_COST`, others 1),
dropped or split (an inserted or deleted phoneme costs :data:`INDEL_COST`).
A match begins and ends at word boundaries, or pays :data:`PARTIAL_WORD_COST`
for cutting into a word, so it maps back to whole words with times. Using a
word the recognizer doubted costs :data:`DOUBT_COST` per nat of its weight
(``-ln weight``): the transcript's words cost about nothing, a word it gave
1 % of its belief costs 0.46 phonemes.

A phrase may be said across a pause, which ends one utterance and begins
the next: a :class:`Candidate` is its utterance's graph with the last words
of the one before (where a match may begin too) and the first words of the
one after (where it may only go on).

:class:`Scorer` matches a query against many candidates at once (numpy,
vectorized over every phoneme of every candidate), then traces the best
matches back to the words they went through.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, lru_cache

import numpy as np

from .lattice import Graph
from .phonetic import VOWELS, word_phonemes

PARTIAL_WORD_COST = 0.5
INDEL_COST = 1.0
NEAR_COST = 0.5  # a substitution between similar sounds (see _CLASSES)
DOUBT_COST = 0.2  # per nat of doubt (-ln weight) in a word the match goes through
# Extra heard phonemes may run on across this many word boundaries: one lets a whole
# extra word be heard between two of the query's ("made the amiable"); each costs a
# pass over every position per query phoneme.
INSERTION_WORDS = 1
NEIGHBOUR_SECONDS = 2.0  # how much of the utterances before and after a candidate is matched

# sounds that recognizers confuse most: voiced/unvoiced pairs and manner classes
_CLASSES = [
    VOWELS,
    {"P", "B"},
    {"T", "D"},
    {"K", "G"},
    {"F", "V"},
    {"TH", "DH"},
    {"S", "Z"},
    {"SH", "ZH"},
    {"CH", "JH"},
    {"M", "N", "NG"},
    {"L", "R"},
    {"W", "Y"},
    {"TH", "F"},
    {"DH", "D"},
]
_NEAR = frozenset((a, b) for c in _CLASSES for a in c for b in c if a != b)


def substitution_cost(a: str, b: str) -> float:
    if a == b:
        return 0.0
    return NEAR_COST if (a, b) in _NEAR else 1.0


PHONEMES = sorted(
    VOWELS | set("B CH D DH F G HH JH K L M N NG P R S SH T TH V W Y Z ZH".split())  # noqa: SIM905
)
_ID = {p: i for i, p in enumerate(PHONEMES)}
_PAD = len(PHONEMES)  # nothing matches it


@cache
def _costs() -> np.ndarray:
    """Substitution costs between phoneme ids (the last row and column: padding)."""
    size = len(PHONEMES) + 1
    out = np.full((size, size), np.inf)
    for a in PHONEMES:
        for b in PHONEMES:
            out[_ID[a], _ID[b]] = substitution_cost(a, b)
    return out


@lru_cache(maxsize=200_000)
def _ids(word: str) -> np.ndarray:
    """A word's phonemes as ids; a word with none (not English) is one that matches nothing."""
    return np.array([_ID.get(p, _PAD) for p in word_phonemes(word)] or [_PAD], dtype=np.intp)


@dataclass(frozen=True)
class Candidate:
    """An utterance's graph as matched: with the last :data:`NEIGHBOUR_SECONDS` of the
    utterance before (``before``), where a match may begin if ``may_begin_before``,
    and the first of the one after (``after``), where it may only go on."""

    own: Graph
    before: Graph | None = None
    after: Graph | None = None
    may_begin_before: bool = True


@dataclass(frozen=True)
class Match:
    """Where a query matched in a candidate: the words it went through, and how well."""

    words: tuple[str, ...]
    start: float  # the first word's start, the last word's end
    end: float
    in_before: bool  # it begins in the utterance before the candidate's
    distance: float
    score: float  # 1 - distance / query phonemes; 1.0 is an exact sound match


_BEFORE, _OWN, _AFTER, _END = 0, 1, 2, 3  # the parts of a candidate, and its end mark


class Scorer:
    """The match of one query against many candidates, computed for all at once.

    Every phoneme of every candidate is a position of one flat array; the edit
    distance is computed row by row over the query's phonemes, each row
    vectorized over all positions. A position's predecessor is the phoneme
    before it in its word, or for a word's first phoneme the last phonemes of
    the words it follows. Runs of extra heard phonemes (insertions) are a
    running minimum within each word, carried across :data:`INSERTION_WORDS`
    word boundaries.
    """

    def __init__(self, query: Sequence[str], candidates: Sequence[Candidate]) -> None:
        self.query = list(query)
        self.count = len(candidates)
        self._assemble(candidates or [Candidate(Graph.of_words([], [], []))])
        self._flatten()
        self.rows = self._run()

    # --- the candidates' words, as one graph ------------------------------------------

    def _assemble(self, candidates: Sequence[Candidate]) -> None:
        """All candidates' words in one list: for each, the words of the one before and
        after near its own (:func:`_near`), the parts joined (:func:`_links`), then a
        word that never matches (so no candidate is empty)."""
        parts = _parts(candidates)
        sizes = np.array([len(g) for g, _ in parts], dtype=np.intp)
        part = np.repeat(np.arange(len(parts)), sizes)  # each word's part
        roles = np.array([r for _, r in parts], dtype=np.intp)
        part_unit = np.cumsum(roles == _END) - (roles == _END)  # each part's candidate
        starts = np.concatenate([g.starts for g, _ in parts])
        ends = np.concatenate([g.ends for g, _ in parts])
        keep = _near(roles[part], part, sizes, starts, ends)
        owner, follows = _links(parts, sizes, keep, part, roles, part_unit)
        number = np.cumsum(keep) - 1  # the words kept, numbered again
        kept = np.flatnonzero(keep)
        texts = [t for g, _ in parts for t in g.texts]
        self.texts = [texts[k] for k in kept]
        self.starts, self.ends = starts[kept], ends[kept]
        self.weights = np.concatenate([g.weights for g, _ in parts])[kept]
        self.role, self.unit = roles[part][kept], part_unit[part][kept]
        self.counts = np.bincount(number[owner], minlength=len(kept))
        self.follows = number[follows]
        may = np.array([c.may_begin_before for c in candidates] or [False], dtype=bool)
        self.opens = (self.role == _OWN) | ((self.role == _BEFORE) & may[self.unit])
        self.real = self.role != _END

    # --- positions -----------------------------------------------------------------------

    def _flatten(self) -> None:
        """Per phoneme position, what the recurrence needs."""
        ids = [_ids(t) for t in self.texts]
        n = len(ids)
        length = np.array([len(a) for a in ids], dtype=np.intp)
        size = int(length.sum())
        sym = np.concatenate(ids) if ids else np.zeros(0, dtype=np.intp)
        start = np.cumsum(length) - length  # each word's first position
        node = np.repeat(np.arange(n), length)  # each position's word
        local = np.arange(size) - start[node]
        doubt = np.where(self.real, DOUBT_COST * -np.log(np.maximum(self.weights, 1e-6)), 0.0)
        word_first = local == 0
        word_last = local == length[node] - 1
        self.begin = np.where(
            self.opens[node], doubt[node] + np.where(word_first, 0.0, PARTIAL_WORD_COST), math.inf
        )
        self.end = np.where(self.real[node], np.where(word_last, 0.0, PARTIAL_WORD_COST), math.inf)
        self.entry = np.where(word_first, doubt[node], 0.0)
        self.sym, self.size, self.node, self.firsts = sym, size, node, start
        # v - lift is compared across the flat array by a running minimum: each word's
        # values are lifted below all earlier words' (see _runs)
        self._lift = local * INDEL_COST + node * _BIG
        # the predecessors of each word's first phoneme: the last phonemes of those it
        # follows; a word that follows none gets the sentinel (never reachable)
        slots = np.maximum(self.counts, 1)
        self.pred_start = np.cumsum(slots) - slots
        preds = np.full(int(slots.sum()), size, dtype=np.intp)
        owner = np.repeat(np.arange(n), self.counts)
        rank = np.arange(len(self.follows)) - (np.cumsum(self.counts) - self.counts)[owner]
        preds[self.pred_start[owner] + rank] = start[self.follows] + length[self.follows] - 1
        self.preds = preds
        inner = np.arange(size) - 1
        inner[start] = size  # a first phoneme's predecessors are gathered instead
        self.inner = inner
        marks = start[~self.real]  # each candidate's end mark: where the next begins
        self.unit_start = np.concatenate([[0], marks[:-1] + 1]).astype(np.intp)

    def _from_preds(self, values: np.ndarray) -> np.ndarray:
        """At each word's first phoneme: the best value among its predecessors."""
        return np.minimum.reduceat(values[self.preds], self.pred_start)

    def _runs(self, a: np.ndarray, out: np.ndarray) -> None:
        """out[j] = min over k <= j in j's word of a[k] + (j - k) * INDEL_COST, all words
        at once: a running minimum over the flat array, each word lifted below all before."""
        lifted = np.minimum(a, _BIG / 2) - self._lift
        np.minimum.accumulate(lifted, out=out[: self.size])
        out[: self.size] += self._lift
        out[: self.size][out[: self.size] >= _BIG / 4] = math.inf

    def _run(self) -> np.ndarray:
        """The rows of the edit distance: rows[i, j] is the cost of the query's first i
        phonemes matched along a path that ends with position j (the last column: the
        sentinel, never reached)."""
        costs = _costs()
        size = self.size
        rows = np.full((len(self.query) + 1, size + 1), math.inf)
        if not self.count:
            return rows
        entry = self.entry[self.firsts]
        for i, q in enumerate(self.query, start=1):
            prev, cur = rows[i - 1], rows[i]
            before = prev[self.inner]
            before[self.firsts] = self._from_preds(prev) + entry
            np.minimum(before, self.begin + (i - 1) * INDEL_COST, out=before)
            a = before + costs[_ID.get(q, _PAD)][self.sym]  # heard (maybe as another sound)
            np.minimum(a, prev[:size] + INDEL_COST, out=a)  # not heard
            np.minimum(a, self.begin + (i + 1) * INDEL_COST, out=a)
            self._runs(a, cur)
            for _ in range(INSERTION_WORDS):  # extra heard phonemes across word boundaries
                carried = self._from_preds(cur) + entry + INDEL_COST
                a[self.firsts] = np.minimum(a[self.firsts], carried)
                self._runs(a, cur)
        return rows

    # --- results ----------------------------------------------------------------------

    def distances(self) -> np.ndarray:
        """Each candidate's best distance (inf where nothing is heard)."""
        if not self.query or not self.count:
            return np.full(self.count, math.inf)
        return np.minimum.reduceat(self.rows[-1, : self.size] + self.end, self.unit_start)

    def match(self, k: int) -> Match | None:
        """Candidate ``k``'s best match, traced back to the words it went through."""
        lo = self.unit_start[k]
        hi = self.unit_start[k + 1] if k + 1 < self.count else self.size
        last = self.rows[-1, lo:hi] + self.end[lo:hi]
        j = lo + int(np.argmin(last))
        distance = float(last[j - lo])
        if not math.isfinite(distance):
            return None
        words = list(dict.fromkeys(int(self.node[p]) for p in reversed(self._trace(j))))
        return Match(
            tuple(self.texts[w] for w in words),
            round(float(self.starts[words[0]]), 3),
            round(float(self.ends[words[-1]]), 3),
            bool(self.role[words[0]] == _BEFORE),
            distance,
            max(0.0, 1.0 - distance / len(self.query)),
        )

    def _before(self, i: int, j: int) -> tuple[float, int | None]:
        """The cost of being just before position j at row i, and whence (None: a start)."""
        row = self.rows[i]
        best, whence = self.begin[j] + i * INDEL_COST, None
        if self.inner[j] < self.size:
            if row[j - 1] < best:
                best, whence = row[j - 1], j - 1
            return best, whence
        w = self.node[j]
        for p in self.preds[self.pred_start[w] : self.pred_start[w + 1]]:
            if p < self.size and row[p] + self.entry[j] < best:
                best, whence = row[p] + self.entry[j], int(p)
        return best, whence

    def _trace(self, j: int) -> list[int]:
        """The positions the match ending at position j went through, last first."""
        costs = _costs()
        i, heard = len(self.query), []
        while True:
            value = self.rows[i, j]
            if i > 0:
                before, whence = self._before(i - 1, j)
                q = _ID.get(self.query[i - 1], _PAD)
                if math.isclose(value, before + costs[q][self.sym[j]], abs_tol=1e-9):
                    heard.append(j)
                    if whence is None:
                        return heard
                    i, j = i - 1, whence
                    continue
                if math.isclose(value, self.rows[i - 1, j] + INDEL_COST, abs_tol=1e-9):
                    i -= 1
                    continue
            before, whence = self._before(i, j)
            heard.append(j)  # an extra heard phoneme
            if whence is None:
                return heard
            j = whence


_BIG = 1e5  # more than any cost: lifts each word's values below all earlier words'
_END_MARK = Graph(("",), np.zeros(1), np.zeros(1), np.ones(1), np.zeros(1, np.intp), np.zeros(0))


def _parts(candidates: Sequence[Candidate]) -> list[tuple[Graph, int]]:
    """Each candidate's graphs, in order, with their role; each ends with the end mark."""
    parts: list[tuple[Graph, int]] = []
    for c in candidates:
        if c.before is not None and len(c.before):
            parts.append((c.before, _BEFORE))
        parts.append((c.own, _OWN))
        if c.after is not None and len(c.after):
            parts.append((c.after, _AFTER))
        parts.append((_END_MARK, _END))
    return parts


def _near(
    role: np.ndarray, part: np.ndarray, sizes: np.ndarray, starts: np.ndarray, ends: np.ndarray
) -> np.ndarray:
    """Which words to keep: all of a candidate's own, the utterance before's that start
    in its last :data:`NEIGHBOUR_SECONDS`, the one after's that start in its first."""
    first = np.cumsum(sizes) - sizes  # each part's first word
    last_end = np.maximum.reduceat(ends, first)[part]
    first_start = starts[first][part]
    return (
        ((role == _BEFORE) & (starts >= last_end - NEIGHBOUR_SECONDS))
        | ((role == _AFTER) & (starts < first_start + NEIGHBOUR_SECONDS))
        | (role == _OWN)
        | (role == _END)
    )


def _links(
    parts: list[tuple[Graph, int]],
    sizes: np.ndarray,
    keep: np.ndarray,
    part: np.ndarray,
    roles: np.ndarray,
    part_unit: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Which kept word follows which, as (word, word it follows) arrays sorted by word:
    each part's own links between kept words, and a candidate's words that follow
    none (its own first, the one after's first) following the last words of the part
    before it (those no kept word of that part follows)."""
    first = np.cumsum(sizes) - sizes
    counts = np.concatenate([g.counts for g, _ in parts]).astype(np.intp)
    follows = np.concatenate(
        [g.follows.astype(np.intp) + f for (g, _), f in zip(parts, first, strict=True)]
    )
    owner = np.repeat(np.arange(len(part)), counts)
    link = keep[owner] & keep[follows]
    owner, follows = owner[link], follows[link]
    role = roles[part]
    followed = np.zeros(len(part), dtype=bool)
    followed[follows] = True
    sinks = np.flatnonzero(keep & ~followed & (role != _END))
    source = keep & (np.bincount(owner, minlength=len(part)) == 0)
    source &= (role == _OWN) | (role == _AFTER)
    same = part_unit[np.maximum(part - 1, 0)] == part_unit[part]  # the part before is its
    joining = np.flatnonzero(source & (part > 0) & same)
    lo = np.searchsorted(part[sinks], part[joining] - 1)  # the part before's: [lo, hi)
    many = np.searchsorted(part[sinks], part[joining] - 1, side="right") - lo
    step = np.arange(int(many.sum())) - np.repeat(np.cumsum(many) - many, many)
    owner = np.concatenate([owner, np.repeat(joining, many)])
    follows = np.concatenate([follows, sinks[np.repeat(lo, many) + step]])
    order = np.argsort(owner, kind="stable")
    return owner[order], follows[order]


_BREAK = np.array([-1], dtype=np.intp)  # between transcripts: no phoneme is heard there


def longest_runs(query: Sequence[str], transcripts: Sequence[Sequence[str]]) -> np.ndarray:
    """For each transcript (its words), the longest run of the query's phonemes said one
    after another in it, exactly: a cheap measure of order, for many utterances at
    once, where :class:`Scorer` would cost too much."""
    if not transcripts:
        return np.zeros(0, dtype=np.intp)
    ids = [[_ids(w) for w in words] for words in transcripts]
    sizes = np.array([sum(len(a) for a in row) + 1 for row in ids], dtype=np.intp)
    flat = np.concatenate([a for row in ids for a in (*row, _BREAK)])
    run = np.zeros(len(flat) + 1, dtype=np.intp)  # run[j + 1]: the run ending at j
    best = np.zeros(len(flat), dtype=np.intp)
    for q in query:
        heard = flat == _ID.get(q, -2)
        run[1:] = np.where(heard, run[:-1] + 1, 0)
        np.maximum(best, run[1:], out=best)
    return np.maximum.reduceat(best, np.cumsum(sizes) - sizes)


def best_match(query: Sequence[str], candidate: Candidate | Graph) -> Match | None:
    """The best match of the query's phonemes in one candidate (or one graph)."""
    if isinstance(candidate, Graph):
        candidate = Candidate(candidate)
    return Scorer(query, [candidate]).match(0)
