"""Does an utterance sound like the query? An approximate match of phonemes along a word graph.

An utterance is searched as a :class:`Graph`: its words in a row, or, where
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

:func:`distances` scores many graphs at once (numpy, vectorized over every
phoneme of every graph); :meth:`Scorer.path` then says which words matched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cache, lru_cache

import numpy as np

from . import lattice
from .messages import Alternative
from .phonetic import VOWELS, word_phonemes

PARTIAL_WORD_COST = 0.5
INDEL_COST = 1.0
NEAR_COST = 0.5  # a substitution between similar sounds (see _CLASSES)
DOUBT_COST = 0.1  # per nat of doubt (-ln weight) in a word the match goes through
# Extra heard phonemes may run on through this many word boundaries (a whole
# extra word and then some): longer runs cost more than any hit can.
INSERTION_WORDS = 2

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


@dataclass(frozen=True, eq=False)
class Graph:
    """What an utterance may have said: its words, in time order, each with its times,
    the recognizer's weight for it, and the words it may follow (``counts[k]`` of
    them for word k, listed in ``follows`` word after word). A match may begin only
    in the words ``opens`` (the others are its neighbours' words it may run into).
    """

    texts: tuple[str, ...]
    starts: np.ndarray
    ends: np.ndarray
    weights: np.ndarray
    counts: np.ndarray
    follows: np.ndarray
    opens: range

    @classmethod
    def of_words(cls, texts: Sequence[str], starts: Sequence[float], ends: Sequence[float]):
        """The transcript's words, one after another, each sure."""
        n = len(texts)
        counts = np.ones(n, dtype=np.intp)
        counts[:1] = 0
        return cls(
            tuple(texts),
            np.asarray(starts, dtype=np.float64),
            np.asarray(ends, dtype=np.float64),
            np.ones(n),
            counts,
            np.arange(max(n - 1, 0), dtype=np.intp),
            range(n),
        )

    @classmethod
    def of_alternatives(cls, alternatives: Sequence[Alternative]) -> Graph:
        return cls.of_columns(lattice.columns(alternatives))

    @classmethod
    def of_columns(cls, c: lattice.Columns) -> Graph:
        return cls(c.texts, c.starts, c.ends, c.weights, c.counts, c.follows, range(len(c.texts)))

    def __len__(self) -> int:
        return len(self.texts)

    def then(self, following: Graph, seconds: float = math.inf) -> Graph:
        """This graph, and the words of the following one that start within ``seconds``
        of its start (a phrase said across a pause). Its first words follow this one's
        last; a match still begins only where this one's may."""
        if not len(following) or not len(self):
            return self if len(self) else replace(following, opens=range(0))
        taken = int(np.searchsorted(following.starts, following.starts[0] + seconds))
        counts = following.counts[:taken]
        follows = following.follows[: int(counts.sum())] + len(self)
        unfollowed = np.ones(len(self), dtype=bool)
        unfollowed[self.follows] = False
        last = np.flatnonzero(unfollowed)  # this graph's ends: none follows them
        sources = counts == 0
        # each of the next one's beginnings follows each end, spliced in where its list
        # would be
        at = np.repeat((np.cumsum(counts) - counts)[sources], len(last))
        follows = np.insert(follows, at, np.tile(last, int(sources.sum())))
        return Graph(
            self.texts + following.texts[:taken],
            np.concatenate([self.starts, following.starts[:taken]]),
            np.concatenate([self.ends, following.ends[:taken]]),
            np.concatenate([self.weights, following.weights[:taken]]),
            np.concatenate([self.counts, np.where(sources, len(last), counts)]),
            np.concatenate([self.follows, follows]),
            self.opens,
        )

    def tail(self, seconds: float) -> Graph:
        """The words that start within ``seconds`` of this graph's end."""
        if not len(self):
            return self
        kept = self.starts >= self.ends.max() - seconds
        if kept.all():
            return self
        index = np.cumsum(kept) - 1  # old word → new word
        owner = np.repeat(np.arange(len(self)), self.counts)
        link = kept[owner] & kept[self.follows]
        return Graph(
            tuple(t for t, k in zip(self.texts, kept, strict=True) if k),
            self.starts[kept],
            self.ends[kept],
            self.weights[kept],
            np.bincount(index[owner[link]], minlength=int(kept.sum())),
            index[self.follows[link]],
            range(int(kept.sum())),
        )


@dataclass(frozen=True)
class Path:
    """Where a query matched in a graph: the nodes it went through, and how well."""

    nodes: tuple[int, ...]  # node indexes, in order
    distance: float
    score: float  # 1 - distance / query phonemes; 1.0 is an exact sound match


class Scorer:
    """The match of one query against many graphs, computed for all at once.

    Every phoneme of every graph is a position of one flat array; the edit
    distance is computed row by row over the query's phonemes, each row
    vectorized over all positions. A position's predecessor is the phoneme
    before it in its word, or for a word's first phoneme the last phonemes of
    the words it follows. Runs of extra heard phonemes (insertions) are a
    running minimum within each word, carried across :data:`INSERTION_WORDS`
    word boundaries.
    """

    def __init__(self, query: Sequence[str], graphs: Sequence[Graph]) -> None:
        self.query = list(query)
        self.graphs = list(graphs)
        self._flatten()
        self.rows = self._run()

    def _flatten(self) -> None:
        """The flat arrays: each graph's words' phonemes, then one that never matches (so
        no graph is empty), and per position what the recurrence needs."""
        graphs = self.graphs
        ids = [_ids(t) for g in graphs for t in g.texts]
        first_node = np.cumsum([0] + [len(g) + 1 for g in graphs])  # +1: the end's sentinel
        n = int(first_node[-1])
        real = np.ones(n, dtype=bool)
        real[first_node[1:] - 1] = False
        length = np.ones(n, dtype=np.intp)
        length[real] = [len(a) for a in ids]
        size = int(length.sum())
        sym = np.full(size, _PAD, dtype=np.intp)
        if ids:
            sym[np.repeat(real, length)] = np.concatenate(ids)
        start = np.cumsum(length) - length  # each node's first position
        node = np.repeat(np.arange(n), length)  # each position's node
        local = np.arange(size) - start[node]
        weights = np.ones(n)
        opens = np.zeros(n, dtype=bool)
        counts = np.zeros(n, dtype=np.intp)
        follows = []
        for g, graph in enumerate(graphs):
            weights[first_node[g] : first_node[g + 1] - 1] = graph.weights
            counts[first_node[g] : first_node[g + 1] - 1] = graph.counts
            opens[first_node[g] + graph.opens.start : first_node[g] + graph.opens.stop] = True
            follows.append(graph.follows + first_node[g])
        doubt = np.where(real, DOUBT_COST * -np.log(np.maximum(weights, 1e-6)), 0.0)
        word_first = local == 0
        self.begin = np.where(
            opens[node], doubt[node] + np.where(word_first, 0.0, PARTIAL_WORD_COST), math.inf
        )
        word_last = local == length[node] - 1
        self.end = np.where(real[node], np.where(word_last, 0.0, PARTIAL_WORD_COST), math.inf)
        self.entry = np.where(word_first, doubt[node], 0.0)
        self.sym, self.size, self.node = sym, size, node
        self.local, self.word = local.astype(np.float64), node.astype(np.float64)
        self.firsts = start
        # the predecessors of each node's first phoneme: the last phonemes of those it
        # follows; a node that follows none gets the sentinel (never reachable)
        slots = np.maximum(counts, 1)
        self.pred_start = np.cumsum(slots) - slots
        preds = np.full(int(slots.sum()), size, dtype=np.intp)
        flat = np.concatenate(follows) if follows else np.zeros(0, dtype=np.intp)
        owner = np.repeat(np.arange(n), counts)
        rank = np.arange(len(flat)) - (np.cumsum(counts) - counts)[owner]
        preds[self.pred_start[owner] + rank] = start[flat] + length[flat] - 1
        self.preds = preds
        self.first_node = first_node
        self.unit = start[first_node[:-1]]
        inner = np.arange(size) - 1
        inner[start] = size  # a first phoneme's predecessors are gathered instead
        self.inner = inner

    def _from_preds(self, values: np.ndarray) -> np.ndarray:
        """At each word's first phoneme: the best value among its predecessors."""
        return np.minimum.reduceat(values[self.preds], self.pred_start)

    def _runs(self, a: np.ndarray) -> np.ndarray:
        """v[j] = min over k <= j in j's word of a[k] + (j - k) * INDEL_COST, all words at once:
        a running minimum over the flat array, each word lifted below all before it."""
        big = 1e5  # more than any cost: a later word never sees an earlier one's values
        lifted = np.minimum(a, big / 2) - self.local * INDEL_COST - self.word * big
        out = np.minimum.accumulate(lifted) + self.word * big + self.local * INDEL_COST
        out[out >= big / 4] = math.inf
        return out

    def _run(self) -> list[np.ndarray]:
        """The rows of the edit distance: rows[i][j] is the cost of the query's first i
        phonemes matched along a path that ends with position j."""
        costs = _costs()
        size = self.size
        prev = np.full(size + 1, math.inf)  # the extra last cell: the sentinel
        rows = [prev]
        if not self.graphs:
            return rows
        for i, q in enumerate(self.query, start=1):
            before = prev[self.inner]
            before[self.firsts] = self._from_preds(prev) + self.entry[self.firsts]
            before = np.minimum(before, self.begin + (i - 1) * INDEL_COST)
            a = np.minimum(
                before + costs[_ID.get(q, _PAD)][self.sym],  # heard (maybe as another sound)
                prev[:size] + INDEL_COST,  # not heard
            )
            a = np.minimum(a, self.begin + (i + 1) * INDEL_COST)
            cur = np.append(self._runs(a), math.inf)
            for _ in range(INSERTION_WORDS):
                carried = self._from_preds(cur) + self.entry[self.firsts] + INDEL_COST
                a[self.firsts] = np.minimum(a[self.firsts], carried)
                cur = np.append(self._runs(a), math.inf)
            rows.append(cur)
            prev = cur
        return rows

    def distances(self) -> np.ndarray:
        """Each graph's best distance (inf for a graph with nothing to hear)."""
        if not self.query or not self.graphs:
            return np.full(len(self.graphs), math.inf)
        return np.minimum.reduceat(self.rows[-1][: self.size] + self.end, self.unit)

    def path(self, g: int) -> Path | None:
        """The best match in graph ``g``, traced back: which of its nodes it went through."""
        lo = self.unit[g]
        hi = self.unit[g + 1] if g + 1 < len(self.unit) else self.size
        last = self.rows[-1][lo:hi] + self.end[lo:hi]
        j = lo + int(np.argmin(last))
        distance = float(last[j - lo])
        if not math.isfinite(distance):
            return None
        heard = self._trace(len(self.query), j)
        base = self.first_node[g]
        nodes = tuple(dict.fromkeys(int(self.node[p] - base) for p in reversed(heard)))
        m = len(self.query)
        return Path(nodes, distance, max(0.0, 1.0 - distance / m))

    def _before(self, i: int, j: int) -> tuple[float, int | None]:
        """The cost of being just before position j at row i, and whence (None: a start)."""
        row = self.rows[i]
        best, whence = self.begin[j] + i * INDEL_COST, None
        if self.inner[j] < self.size:
            if row[j - 1] < best:
                best, whence = row[j - 1], j - 1
            return best, whence
        w = self.node[j]
        lo, hi = self.pred_start[w], self.pred_start[w + 1]
        for p in self.preds[lo:hi]:
            if p < self.size and row[p] + self.entry[j] < best:
                best, whence = row[p] + self.entry[j], int(p)
        return best, whence

    def _trace(self, i: int, j: int) -> list[int]:
        """The positions a match ending at (i, j) went through, last first."""
        costs = _costs()
        heard = []
        while True:
            value = self.rows[i][j]
            if i > 0:
                before, whence = self._before(i - 1, j)
                q = _ID.get(self.query[i - 1], _PAD)
                if math.isclose(value, before + costs[q][self.sym[j]], abs_tol=1e-9):
                    heard.append(j)
                    if whence is None:
                        return heard
                    i, j = i - 1, whence
                    continue
                if math.isclose(value, self.rows[i - 1][j] + INDEL_COST, abs_tol=1e-9):
                    i -= 1
                    continue
            before, whence = self._before(i, j)
            heard.append(j)  # an extra heard phoneme
            if whence is None:
                return heard
            j = whence


def distances(query: Sequence[str], graphs: Sequence[Graph]) -> np.ndarray:
    """Each graph's best match distance to the query's phonemes."""
    return Scorer(query, graphs).distances()


def best_match(query: Sequence[str], graph: Graph) -> Path | None:
    """The best match of the query's phonemes in one graph, and its nodes."""
    return Scorer(query, [graph]).path(0)
