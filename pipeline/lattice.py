"""What else the recognizer heard: each utterance's word graph, for ``search --fuzzy``.

A recognizer weighs many words for every stretch of speech and outputs one
path through them. When it mishears ("tried ever failed" output as "try it at
the files"), the words said are often among those it weighed: PocketSphinx
keeps them in its lattice, with a posterior for each (how much of its belief
went to that word there); Vosk gives its n best paths. Those words, pruned to
the likely ones, become the utterance's :class:`~pipeline.messages.Alternative`s:
a small word graph whose nodes say which words may come just before them.

Fuzzy search matches the query's sounds along any path of that graph, so it
finds what the recognizer nearly said; a word the recognizer doubted costs
more to match (:data:`pipeline.phonetic.DOUBT_COST`), so a graph full of
unlikely words does not sound like everything.

The graph is stored with its utterance, packed (:func:`pack`).
"""

from __future__ import annotations

import math
import re
import struct
import zlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .messages import Alternative

# Words the recognizer gave less than this share of its belief are dropped: below
# about 1 %, a PocketSphinx lattice holds 2-3 times as many words again, mostly
# variants of the same words a frame apart, and matches in them are mostly chance.
MIN_WEIGHT = 0.01

# --- PocketSphinx: the lattice, written as HTK SLF text -------------------------------

_NODE = re.compile(r"^I=(\d+)\s+t=([\d.]+)\s+W=(\S+)", re.MULTILINE)
_LINK = re.compile(r"^J=\d+\s+S=(\d+)\s+E=(\d+)\s+a=\S+\s+p=(\S+)", re.MULTILINE)


def from_htk(
    slf: str,
    duration: float,
    best: Iterable[tuple[str, float]] = (),
    *,
    min_weight: float | None = None,
) -> list[Alternative]:
    """The word graph of a PocketSphinx lattice in HTK SLF text (``Lattice.write_htk``).

    A node is a word starting at a frame; its weight is the summed posterior
    of the links leaving it (``p=``, which PocketSphinx fills once it has
    found its best path), its end the time of its likeliest link's end (the
    lattice's last node: ``duration``). Silences and noises (``!NULL``) and
    sentence marks are not words: a word after them follows the words before
    them. ``best`` are the (word, start) of the words the recognizer output,
    kept whatever their weight, so the graph always holds the transcript.
    Times are the lattice's (seconds from the utterance's start). ``min_weight``:
    :data:`MIN_WEIGHT` unless given.
    """
    least = MIN_WEIGHT if min_weight is None else min_weight
    nodes = {int(i): (w, float(t)) for i, t, w in _NODE.findall(slf)}
    into: dict[int, list[int]] = defaultdict(list)
    weight_out: dict[int, float] = defaultdict(float)
    weight_in: dict[int, float] = defaultdict(float)
    likeliest: dict[int, tuple[float, float]] = {}  # node → (posterior, end) of its best link
    for s, e, p in _LINK.findall(slf):
        start, stop, posterior = int(s), int(e), float(p)
        into[stop].append(start)
        weight_out[start] += posterior
        weight_in[stop] += posterior
        if posterior >= likeliest.get(start, (-1.0, 0.0))[0]:
            likeliest[start] = (posterior, nodes[stop][1])

    def weight(i: int) -> float:  # the last node has no links out
        return weight_out[i] if i in likeliest else weight_in[i]

    said = {(w, round(t, 2)) for w, t in best}
    # a word's pronunciations are separate nodes: one node per word and start
    same: dict[tuple[str, float], list[int]] = defaultdict(list)
    for i, (w, t) in nodes.items():
        if not w.startswith("!"):
            same[(w, t)].append(i)
    kept = {}  # representative node → its pronunciations
    for (w, t), variants in same.items():
        if sum(map(weight, variants)) >= least or (w, round(t, 2)) in said:
            kept[max(variants, key=weight)] = variants
    owner = {v: rep for rep, variants in kept.items() for v in variants}
    before = _words_before(nodes, into, owner)
    order = sorted(kept, key=lambda i: (nodes[i][1], nodes[i][0]))
    index = {node: k for k, node in enumerate(order)}
    return [
        Alternative(
            nodes[i][0],
            nodes[i][1],
            max(likeliest.get(i, (0.0, duration))[1], nodes[i][1]),
            round(min(1.0, sum(map(weight, kept[i]))), 3),
            tuple(sorted({index[p] for v in kept[i] for p in before(v)})),
        )
        for i in order
    ]


def _words_before(nodes: dict[int, tuple[str, float]], into: dict[int, list[int]], owner: dict):
    """A function: the kept word nodes just before a node (as their ``owner``, the node
    that stands for all of a word's pronunciations), looking through non-words."""

    def before(node: int) -> set[int]:
        found: set[int] = set()
        stack, seen = list(into.get(node, ())), set()
        while stack:
            p = stack.pop()
            if p in seen:
                continue
            seen.add(p)
            if not nodes[p][0].startswith("!"):
                if p in owner:
                    found.add(owner[p])
            else:  # a silence, a noise, a sentence mark: the words before it
                stack.extend(into.get(p, ()))
        return found

    return before


# --- Vosk: its n best paths -------------------------------------------------------------


def from_paths(
    paths: Sequence[tuple[float, Sequence[tuple[str, float, float]]]],
    *,
    min_weight: float | None = None,
) -> list[Alternative]:
    """The word graph of n-best paths, each (log-likelihood, its words with start and end).

    A path's weight is its share of the paths' likelihood (a softmax of the
    scores); a word's weight is the sum over the paths that have it at the
    same times. Words of the first (best) path are always kept.
    """
    if not paths:
        return []
    least = MIN_WEIGHT if min_weight is None else min_weight
    top = max(score for score, _ in paths)
    shares = [math.exp(score - top) for score, _ in paths]
    total = sum(shares)
    weight: dict[tuple[str, float, float], float] = defaultdict(float)
    links: dict[tuple[str, float, float], set[tuple[str, float, float]]] = defaultdict(set)
    for (_, words), share in zip(paths, shares, strict=True):
        keys = [(w, round(s, 3), round(e, 3)) for w, s, e in words]
        for k, key in enumerate(keys):
            weight[key] += share / total
            if k:
                links[key].add(keys[k - 1])
    best = {(w, round(s, 3), round(e, 3)) for w, s, e in paths[0][1]}
    kept = sorted(
        (key for key in weight if weight[key] >= least or key in best),
        key=lambda key: (key[1], key[2], key[0]),
    )
    index = {key: k for k, key in enumerate(kept)}
    return [
        Alternative(
            w,
            s,
            e,
            round(min(1.0, weight[(w, s, e)]), 3),
            tuple(sorted(index[p] for p in links[(w, s, e)] if p in index)),
        )
        for w, s, e in kept
    ]


def joined(graphs: Sequence[Sequence[Alternative]]) -> list[Alternative]:
    """Graphs of successive stretches as one: each one's first words follow the last
    words of the one before (those no word follows)."""
    out: list[Alternative] = []
    last: tuple[int, ...] = ()
    for graph in graphs:
        if not graph:
            continue
        base = len(out)
        for a in graph:
            follows = tuple(f + base for f in a.follows) if a.follows else last
            out.append(Alternative(a.text, a.start, a.end, a.weight, follows))
        followed = {f for a in graph for f in a.follows}
        last = tuple(base + k for k in range(len(graph)) if k not in followed)
    return out


def pruned(
    alternatives: Sequence[Alternative], min_weight: float, keep: Iterable[tuple[str, float]] = ()
) -> list[Alternative]:
    """The graph without the words weighted below ``min_weight`` (but those ``keep`` names,
    by word and start), as if the recognizer had pruned it so."""
    kept = {(w, round(t, 2)) for w, t in keep}
    index: dict[int, int] = {}
    out: list[Alternative] = []
    for k, a in enumerate(alternatives):
        if a.weight >= min_weight or (a.text, round(a.start, 2)) in kept:
            index[k] = len(out)
            follows = tuple(index[f] for f in a.follows if f in index)
            out.append(Alternative(a.text, a.start, a.end, a.weight, follows))
    return out


# --- stored with the utterance ---------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Graph:
    """What an utterance may have said, column by column as search reads it: its words,
    in time order, each with its times, the recognizer's weight for it, and the words
    it may follow (``counts[k]`` of them for word k, listed in ``follows`` word after
    word)."""

    texts: tuple[str, ...]
    starts: np.ndarray
    ends: np.ndarray
    weights: np.ndarray
    counts: np.ndarray
    follows: np.ndarray

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
        )

    @classmethod
    def of_alternatives(cls, alternatives: Sequence[Alternative]) -> Graph:
        return cls(
            tuple(a.text for a in alternatives),
            np.array([a.start for a in alternatives], dtype=np.float64),
            np.array([a.end for a in alternatives], dtype=np.float64),
            np.array([a.weight for a in alternatives], dtype=np.float64),
            np.array([len(a.follows) for a in alternatives], dtype=np.intp),
            np.array([f for a in alternatives for f in a.follows], dtype=np.intp),
        )

    def __len__(self) -> int:
        return len(self.texts)


_VERSION = 1
_CENTI = 100  # times are stored in hundredths of a second from the utterance's start
# a word as stored: start and end (centiseconds after the utterance's start), weight
# (thousandths), and how many words it follows
_WORD = np.dtype([("start", "<i4"), ("end", "<i4"), ("weight", "<u2"), ("count", "<u2")])


def pack(alternatives: Sequence[Alternative], origin: float) -> bytes:
    """The graph as stored, zlib-compressed: a version byte; the number of words and of
    links (uint32); each word (:data:`_WORD`; times from ``origin``, the utterance's
    start); the links (uint32: the word indexes each follows, word after word); the
    words' text, one per line."""
    c = Graph.of_alternatives(alternatives)
    words = np.zeros(len(c.texts), dtype=_WORD)
    words["start"] = np.round((c.starts - origin) * _CENTI)
    words["end"] = np.round((c.ends - origin) * _CENTI)
    words["weight"] = np.round(c.weights * 1000)
    words["count"] = c.counts
    parts = [
        struct.pack("<BII", _VERSION, len(c.texts), len(c.follows)),
        words.tobytes(),
        c.follows.astype("<u4").tobytes(),
        "\n".join(re.sub(r"\s", "_", t) for t in c.texts).encode("utf-8"),
    ]
    return zlib.compress(b"".join(parts), 9)


def unpack(graph: bytes, origin: float) -> Graph:
    """What :func:`pack` stored, with session-absolute times again."""
    raw = zlib.decompress(graph)
    version, n, f = struct.unpack_from("<BII", raw)
    if version != _VERSION:
        raise ValueError(f"a word graph of an unknown version ({version})")
    at = struct.calcsize("<BII")
    words = np.frombuffer(raw, dtype=_WORD, count=n, offset=at)
    at += words.nbytes
    follows = np.frombuffer(raw, dtype="<u4", count=f, offset=at)
    texts = tuple(raw[at + follows.nbytes :].decode("utf-8").split("\n")) if n else ()
    return Graph(
        texts,
        origin + words["start"] / _CENTI,
        origin + words["end"] / _CENTI,
        words["weight"] / 1000,
        words["count"].astype(np.intp),
        follows.astype(np.intp),
    )


def alternatives(c: Graph) -> list[Alternative]:
    """The graph's words as messages again (what the phonetic index reads)."""
    ends = np.cumsum(c.counts)
    return [
        Alternative(
            c.texts[k],
            float(c.starts[k]),
            float(c.ends[k]),
            float(c.weights[k]),
            tuple(int(x) for x in c.follows[ends[k] - c.counts[k] : ends[k]]),
        )
        for k in range(len(c.texts))
    ]
