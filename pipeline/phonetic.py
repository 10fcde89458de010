"""How words sound: phonemes, phoneme trigrams, and approximate matching over them.

Recognizers mishear: "ill disposed young man" comes out as "until this blows
young man". The words differ but the sounds are close, so ``search --fuzzy``
compares sounds. A word's phonemes come from the CMU pronouncing dictionary
that ships with PocketSphinx (the same one the recognizer spells its words
with, so every word it can output is in it); a rough letter-to-sound table
covers the rest (words of another engine, names typed in a query).

Each utterance's phoneme stream is indexed as phoneme trigrams (``AH_B_K``)
in the FTS5 table ``utterances_phonetic``, so candidates come from the index,
not from a scan; :func:`distances` (all candidates at once) and
:func:`best_match` (the hits shown: which words) then check them by an
approximate substring match over phonemes that maps back to whole words.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .messages import Alternative

TABLE = "utterances_phonetic"
VOCAB = "utterances_phonetic_vocab"  # fts5vocab: how many utterances have each trigram
# A match may start or end inside a recognized word (the recognizer cut the
# words differently from the speaker), at this cost per end, in phonemes.
PARTIAL_WORD_COST = 0.5
INDEL_COST = 1.0
NEAR_COST = 0.5  # a substitution between similar sounds (see _CLASSES)

VOWELS = frozenset("AA AE AH AO AW AY EH ER EY IH IY OW OY UH UW".split())  # noqa: SIM905
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


def _dictionary_path() -> Path:
    import pocketsphinx

    return Path(pocketsphinx.__file__).parent / "model" / "en-us" / "cmudict-en-us.dict"


@cache
def dictionary() -> dict[str, str]:
    """word → phonemes of its first pronunciation, space-separated, stress digits dropped.

    Loaded once per process. Values are kept as one string each (split when a
    word is looked up): a tuple of phonemes per word would double its memory.
    """
    out: dict[str, str] = {}
    text = re.sub(r"(?<=[A-Z])\d", "", _dictionary_path().read_text(encoding="utf-8"))
    for line in text.splitlines():
        word, _, phones = line.partition(" ")
        if phones and not word.endswith(")"):  # "read(2)": another pronunciation
            out.setdefault(word, phones.strip())
    return out


@lru_cache(maxsize=200_000)
def word_phonemes(word: str) -> tuple[str, ...]:
    """A word's phonemes: from the dictionary, else spelled out by :func:`letter_to_sound`."""
    folded = _fold(word)
    known = dictionary()
    if folded in known:
        return tuple(known[folded].split())
    out: list[str] = []
    for part in re.findall(r"[a-z']+", folded):
        out.extend(known[part].split() if part in known else letter_to_sound(part))
    return tuple(out)


def _fold(word: str) -> str:
    decomposed = unicodedata.normalize("NFKD", word.casefold().replace("’", "'"))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).strip("'")


# letter groups → phonemes, longest first; only has to be roughly right
_RULES = {
    "tch": "CH", "sch": "S K", "igh": "AY", "tion": "SH AH N", "sion": "ZH AH N",
    "ph": "F", "sh": "SH", "ch": "CH", "th": "TH", "ng": "NG", "ck": "K", "qu": "K W",
    "wh": "W", "gh": "", "kn": "N", "wr": "R", "ee": "IY", "ea": "IY", "oo": "UW",
    "ou": "AW", "ow": "OW", "oi": "OY", "oy": "OY", "ai": "EY", "ay": "EY", "au": "AO",
    "aw": "AO", "ie": "IY", "ei": "EY", "ey": "IY", "er": "ER", "ur": "ER", "ir": "ER",
    "a": "AE", "b": "B", "c": "K", "d": "D", "e": "EH", "f": "F", "g": "G", "h": "HH",
    "i": "IH", "j": "JH", "k": "K", "l": "L", "m": "M", "n": "N", "o": "AA", "p": "P",
    "q": "K", "r": "R", "s": "S", "t": "T", "u": "AH", "v": "V", "w": "W", "x": "K S",
    "y": "IY", "z": "Z",
}  # fmt: skip
_LONGEST = max(len(k) for k in _RULES)


def letter_to_sound(word: str) -> tuple[str, ...]:
    """A guess at an unknown word's phonemes from its letters (greedy rule table)."""
    w = re.sub(r"[^a-z]", "", word.lower())
    if len(w) > 2 and w.endswith("e") and w[-2] not in "aeiou":
        w = w[:-1]  # a silent final e
    w = re.sub(r"([b-df-hj-np-tv-z])\1", r"\1", w)  # double consonants sound once
    out: list[str] = []
    i = 0
    while i < len(w):
        for size in range(min(_LONGEST, len(w) - i), 0, -1):
            chunk = w[i : i + size]
            if chunk in _RULES:
                sound = _RULES[chunk]
                if chunk == "c" and w[i + 1 : i + 2] in ("e", "i", "y"):
                    sound = "S"
                elif chunk == "y" and i == 0:
                    sound = "Y"
                out.extend(sound.split())
                i += size
                break
        else:
            i += 1
    return tuple(out)


def phonemes(words: list[str]) -> list[str]:
    """The phoneme stream of a run of words."""
    return [p for w in words for p in word_phonemes(w)]


def trigrams(phones: list[str]) -> list[str]:
    """Phoneme trigrams as FTS5 tokens (``AH_B_K``), in order, across word boundaries;
    then the same trigrams of sound classes (``xV_P_K``).

    The class trigrams let a phrase whose every trigram was misheard ("an ill
    disposed" heard as "until this blows") still reach its utterance: they
    share ``xV_S_P``. Exact trigrams are rarer, so bm25 ranks them higher.
    """
    exact = ["_".join(phones[i : i + 3]) for i in range(len(phones) - 2)]
    coarse = [_CLASS_OF.get(p, p) for p in phones]
    return exact + ["x" + "_".join(coarse[i : i + 3]) for i in range(len(coarse) - 2)]


# broad sound classes for the coarse trigrams: what recognizers swap most
_CLASS_OF = {
    **{v: "V" for v in VOWELS},
    "B": "P", "D": "T", "G": "K", "V": "F", "DH": "TH", "Z": "S", "SH": "S", "ZH": "S",
    "JH": "CH", "M": "N", "NG": "N", "R": "L", "Y": "W",
}  # fmt: skip


def graph_trigrams(words: Sequence[tuple[str, Sequence[int]]]) -> set[str]:
    """The trigrams (as :func:`trigrams`) along every path of a word graph: (word, the
    indexes of the words it follows), in time order."""
    phones: list[str] = []
    before: list[list[int]] = []  # per phoneme: the phonemes that may come just before it
    exits: list[list[int]] = []  # per word: the phonemes a path leaves it from
    for k, (word, follows) in enumerate(words):
        entering = sorted({p for f in follows if f < k for p in exits[f]})
        sounds = word_phonemes(word)
        if not sounds:  # nothing to hear: its followers follow what precedes it
            exits.append(entering)
            continue
        for i, sound in enumerate(sounds):
            before.append(entering if i == 0 else [len(phones) - 1])
            phones.append(sound)
        exits.append([len(phones) - 1])
    coarse = [_CLASS_OF.get(p, p) for p in phones]
    out: set[str] = set()
    for c in range(len(phones)):
        for b in before[c]:
            for a in before[b]:
                out.add(f"{phones[a]}_{phones[b]}_{phones[c]}")
                out.add(f"x{coarse[a]}_{coarse[b]}_{coarse[c]}")
    return out


def index_text(words: list[str], alternatives: Sequence[Alternative] = ()) -> str:
    """What ``utterances_phonetic`` holds for an utterance: its words' trigrams, and those
    along its alternatives (:mod:`pipeline.lattice`), which hold its words too."""
    if alternatives:
        return " ".join(sorted(graph_trigrams([(a.text, a.follows) for a in alternatives])))
    return " ".join(trigrams(phonemes(words)))


def index_utterances(
    connection,
    rows: list[tuple[int, list[str]]],
    alternatives: dict[int, Sequence[Alternative]] | None = None,
) -> None:
    """Add (utterance id, its words) to the phonetic index (on a SQLAlchemy connection),
    with the utterances' ``alternatives`` where they have some."""
    from sqlalchemy import text

    heard = alternatives or {}
    if rows:
        connection.execute(
            text(f"INSERT INTO {TABLE}(rowid, trigrams) VALUES (:id, :trigrams)"),
            [{"id": i, "trigrams": index_text(words, heard.get(i, ()))} for i, words in rows],
        )


@dataclass(frozen=True)
class Match:
    """Where a phoneme sequence best matches a run of words, and how well."""

    first: int  # word index range [first, last)
    last: int
    distance: float
    score: float  # 1 - distance / query phonemes; 1.0 is an exact sound match


def substitution_cost(a: str, b: str) -> float:
    if a == b:
        return 0.0
    return NEAR_COST if (a, b) in _NEAR else 1.0


def best_match(query: list[str], words: list[str]) -> Match | None:
    """The best approximate occurrence of ``query`` phonemes in the words' phoneme stream.

    A substring edit distance (Sellers) over phonemes: a word may be misheard
    (substituted phonemes), dropped, or split into two (inserted or deleted
    phonemes cost :data:`INDEL_COST`, similar sounds :data:`NEAR_COST`). The
    match starts and ends at word boundaries, or pays
    :data:`PARTIAL_WORD_COST` for cutting into a word, so it maps back to whole
    words with times.
    """
    owner: list[int] = []
    stream: list[str] = []
    for i, w in enumerate(words):
        for p in word_phonemes(w):
            stream.append(p)
            owner.append(i)
    n, m = len(stream), len(query)
    if n == 0 or m == 0:
        return None
    begins = [j == 0 or owner[j] != owner[j - 1] for j in range(n)] + [True]
    ends = [True] + [j == n or owner[j] != owner[j - 1] for j in range(1, n + 1)]
    # prev[j]: cost of matching query[:i] ending just before stream[j]; origin: where it began
    prev = [0.0 if begins[j] else PARTIAL_WORD_COST for j in range(n + 1)]
    origin = list(range(n + 1))
    for q in query:
        cur = [prev[0] + INDEL_COST] + [0.0] * n
        cur_origin = [origin[0]] + [0] * n
        for j in range(1, n + 1):
            best = prev[j - 1] + substitution_cost(q, stream[j - 1])
            came = origin[j - 1]
            if prev[j] + INDEL_COST < best:  # the query phoneme was not heard
                best, came = prev[j] + INDEL_COST, origin[j]
            if cur[j - 1] + INDEL_COST < best:  # an extra phoneme was heard
                best, came = cur[j - 1] + INDEL_COST, cur_origin[j - 1]
            cur[j], cur_origin[j] = best, came
        prev, origin = cur, cur_origin
    best_j = min(
        range(1, n + 1), key=lambda j: (prev[j] + (0 if ends[j] else PARTIAL_WORD_COST), -j)
    )
    distance = prev[best_j] + (0 if ends[best_j] else PARTIAL_WORD_COST)
    start = min(origin[best_j], n - 1)
    first, last = owner[start], owner[max(best_j - 1, start)] + 1
    return Match(first, last, distance, max(0.0, 1.0 - distance / m))


# --- many candidates at once --------------------------------------------------------

PHONEMES = sorted(
    VOWELS | set("B CH D DH F G HH JH K L M N NG P R S SH T TH V W Y Z ZH".split())  # noqa: SIM905
)
_ID = {p: i for i, p in enumerate(PHONEMES)}
_PAD = len(PHONEMES)  # after a stream's end: nothing matches it


@cache
def _costs() -> np.ndarray:
    """Substitution costs between phoneme ids (the last row and column: padding)."""
    size = len(PHONEMES) + 1
    out = np.full((size, size), np.inf)
    for a in PHONEMES:
        for b in PHONEMES:
            out[_ID[a], _ID[b]] = substitution_cost(a, b)
    return out


def distances(query: list[str], streams: list[list[list[str]]]) -> np.ndarray:
    """:func:`best_match`'s distance for each candidate (a list of words' phonemes), all
    at once: the same recurrence, row by row over the query, vectorized over
    candidates and stream positions (insertions along a row by a running minimum).
    """
    count, width = len(streams), max((sum(map(len, s)) for s in streams), default=0)
    if count == 0 or width == 0 or not query:
        return np.full(count, np.inf)
    ids = np.full((count, width), _PAD)
    begin = np.full((count, width + 1), np.inf)  # cost of starting before position j
    end = np.full((count, width + 1), np.inf)  # cost of ending after position j - 1
    for k, words in enumerate(streams):
        j = 0
        for phones in words:
            if not phones:
                continue
            begin[k, j : j + len(phones)] = PARTIAL_WORD_COST
            begin[k, j] = 0.0
            end[k, j + 1 : j + len(phones) + 1] = PARTIAL_WORD_COST
            end[k, j + len(phones)] = 0.0
            ids[k, j : j + len(phones)] = [_ID.get(p, _PAD) for p in phones]
            j += len(phones)
        begin[k, j] = 0.0
    costs = _costs()
    steps = np.arange(width + 1) * INDEL_COST
    prev = begin
    for q in query:
        row = costs[_ID.get(q, _PAD)][ids]  # substitution cost at each position
        cur = np.empty_like(prev)
        cur[:, 0] = prev[:, 0] + INDEL_COST
        cur[:, 1:] = np.minimum(prev[:, :-1] + row, prev[:, 1:] + INDEL_COST)
        cur = np.minimum.accumulate(cur - steps, axis=1) + steps  # extra heard phonemes
        prev = cur
    return (prev + end).min(axis=1)
