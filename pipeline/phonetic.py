"""How words sound: phonemes, and the phoneme-trigram index that ``search --fuzzy`` reads.

Recognizers mishear: "ill disposed young man" comes out as "until this blows
young man". The words differ but the sounds are close, so ``search --fuzzy``
compares sounds. A word's phonemes come from the CMU pronouncing dictionary
that ships with PocketSphinx (the same one the recognizer spells its words
with, so every word it can output is in it); a rough letter-to-sound table
covers the rest (words of another engine, names typed in a query).

Each utterance's phoneme stream (with its alternatives, every path of its
word graph) is indexed as phoneme trigrams (``AH_B_K``) in the FTS5 table
``utterances_phonetic``, so candidates come from the index, not from a scan;
:mod:`pipeline.soundalike` then checks them by an approximate match of
phonemes that maps back to whole words.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from functools import cache, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .messages import Alternative

TABLE = "utterances_phonetic"
VOWELS = frozenset("AA AE AH AO AW AY EH ER EY IH IY OW OY UH UW".split())  # noqa: SIM905


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


def index_trigrams(connection, rows: list[tuple[int, list[str]]]) -> None:
    """Add (utterance id, its trigrams) to the phonetic index (a SQLAlchemy connection)."""
    from sqlalchemy import text

    if rows:
        connection.execute(
            text(f"INSERT INTO {TABLE}(rowid, trigrams) VALUES (:id, :trigrams)"),
            [{"id": i, "trigrams": " ".join(terms)} for i, terms in rows],
        )


def index_utterances(connection, rows: list[tuple[int, list[str]]]) -> None:
    """Add (utterance id, its words) to the phonetic index (on a SQLAlchemy connection)."""
    index_trigrams(connection, [(i, index_text(words).split()) for i, words in rows])
