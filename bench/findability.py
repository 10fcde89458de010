"""Findability: how many spoken phrases `search` and `search --fuzzy` find, at the right time.

Run from the project root::

    uv run python bench/findability.py                 # ../shared/corpus, else tests/data/corpus
    uv run python bench/findability.py --corpus DIR    # a folder with transcripts.json
    uv run python bench/findability.py -v              # also each phrase and its best hit
    uv run python bench/findability.py --without-alternatives  # the words alone, to compare

Each clip of the corpus (real human speech with a reference transcript) is
ingested through the real pipeline (``pipeline.supervisor.ingest``, the
bundled PocketSphinx), one session per clip.

* **Spoken phrases**: every run of 3 words of each reference. Its true time is
  that of its first word in a forced alignment of the reference with
  PocketSphinx (``Decoder.set_align_text``, then ``seg()``). A phrase is
  *found* if one of its first 50 hits (fuzzy: scoring at least the cut-off)
  is in its clip's session and starts within ±1.5 s of it.
* **Unspoken phrases**: every run of 3 words of other texts, never said in
  the corpus: the opening of *A Tale of Two Cities* and the sentences of
  ``tests/data/festival/meeting.json``. One is *rejected* if fuzzy search
  answers nothing at or above the cut-off.

It prints the found rate of exact and fuzzy search, the rejected rate, the
same for a range of cut-offs (``FUZZY_MIN_SCORE`` is chosen on other speech,
``bench/tune_fuzzy.py``), and fuzzy query latency. ``--without-alternatives``
forgets the recognizer's alternatives once the corpus is ingested, so fuzzy
search matches the transcripts' words alone (as before there were any).
Goals: fuzzy finds >= 90 % of spoken phrases, rejects >= 90 % of unspoken ones.
It reports, it does not judge (exit 0 when it could measure).

At scale (``--distractor-hours N``): N hours of synthetic transcripts (one
session an hour, ~150 words a minute, utterances of 6-14 words) are first
written through the real indexer (``pipeline.index.Indexer``), older than the
corpus. Their words are drawn by their unigram frequency in PocketSphinx's own
English language model (no word order: a bag of likely words), and each has
alternatives like those of a PocketSphinx lattice (:func:`alternatives_for`:
competitors that begin with the same sound, weights as measured on the
corpus), unless ``--plain-distractors``. It then also prints the top-3 rate
(the right hit among the first three) and fuzzy latency on that archive.
There the unspoken phrases are no fair test: made of common words, they are
(nearly) said somewhere in the distractors.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import CORPUS, MEETING_JSON, ROOT, load_mono16k, normalize  # noqa: E402

SHARED = ROOT.parent / "shared" / "corpus"
PHRASE_WORDS = 3
TOLERANCE_SECONDS = 1.5
FRAMES_PER_SECOND = 100  # PocketSphinx's default frame rate
CUTOFFS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)
# Never said in the corpus: the opening of A Tale of Two Cities (public domain)
UNSPOKEN_TEXT = (
    "it was the best of times it was the worst of times it was the age of wisdom "
    "it was the age of foolishness it was the epoch of belief it was the epoch of "
    "incredulity it was the season of light it was the season of darkness it was the "
    "spring of hope it was the winter of despair we had everything before us we had "
    "nothing before us we were all going direct to heaven we were all going direct "
    "the other way"
)


def aligned_starts(wav: Path, reference: str) -> list[float]:
    """Each reference word's start (seconds), by forced alignment with PocketSphinx."""
    from pocketsphinx import Decoder

    decoder = Decoder(samprate=16000, loglevel="FATAL")
    decoder.set_align_text(reference)
    decoder.start_utt()
    decoder.process_raw(load_mono16k(wav).tobytes(), full_utt=True)
    decoder.end_utt()
    words = [
        (re.sub(r"\(\d+\)$", "", s.word), s.start_frame / FRAMES_PER_SECOND)
        for s in decoder.seg()
        if not re.match(r"^[<\[].*[>\]]$", s.word)
    ]
    expected = reference.split()
    if [w for w, _ in words] != expected:
        raise SystemExit(f"alignment of {wav.name} lost words: {[w for w, _ in words]}")
    return [t for _, t in words]


WORDS_PER_SECOND = 2.5
SESSION_SECONDS = 3600.0


def word_sampler(seed: int = 7):
    """Sentences of words drawn by their frequency in PocketSphinx's English model, and
    words that sound a little like a given one (its competitors in a lattice).

    Each word of the pronouncing dictionary is drawn with its unigram probability
    (``NGramModel.prob``; its ARPA export crashes here, so the bigrams are not
    used): the words, and how common each is, that the recognizer outputs. A
    competitor is drawn the same way among the words that begin with the same
    sound.
    """
    import itertools
    import random
    from collections import defaultdict

    from pocketsphinx import Config, LogMath, NGramModel, get_model_path

    from pipeline.phonetic import dictionary

    config, logmath = Config(), LogMath()  # kept alive while the model is used
    model = NGramModel(config, logmath, str(Path(get_model_path()) / "en-us" / "en-us.lm.bin"))
    words, weights = [], []
    by_sound: dict[str, tuple[list[str], list[float]]] = defaultdict(lambda: ([], []))
    for word, phones in dictionary().items():
        log = model.prob([word])
        if log > -10_000_000 and word.isalpha():  # the model knows it
            words.append(word)
            weights.append(1.0001**log)  # LogMath's default base
            by_sound[phones.split()[0]][0].append(word)
            by_sound[phones.split()[0]][1].append(1.0001**log)
    cumulative = list(itertools.accumulate(weights))
    alike = {k: (w, list(itertools.accumulate(p))) for k, (w, p) in by_sound.items()}
    first_sound = {w: p.split()[0] for w, p in dictionary().items()}
    rng = random.Random(seed)

    def sentence(length: int) -> list[str]:
        return rng.choices(words, cum_weights=cumulative, k=length)

    def competitors(word: str, k: int) -> list[str]:
        pool, cum = alike[first_sound[word]]
        return rng.choices(pool, cum_weights=cum, k=k)

    return sentence, competitors, rng


# What a PocketSphinx lattice holds per word it outputs (the corpus's utterances,
# pruned as the recognizer prunes them): the posterior of the word output, by quantile
# (a quarter of them below 0.21: it was unsure), and about 3.7 competitors sharing
# the rest of the belief, most of them given a few percent.
BEST_WEIGHT_QUANTILES = (
    (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0),
    (0.01, 0.06, 0.21, 0.87, 0.99, 1.0, 1.0),
)
COMPETITORS_PER_WORD = 3.7


def alternatives_for(words, competitors, rng):
    """A word graph like a PocketSphinx lattice's around these words: each word with
    competitors that sound a little like it, at about its times, sharing the belief
    the word did not get; each follows all of the word before's."""
    import numpy as np

    from pipeline.lattice import MIN_WEIGHT
    from pipeline.messages import Alternative

    out: list[Alternative] = []
    before: tuple[int, ...] = ()
    for w in words:
        best = float(np.interp(rng.random(), *BEST_WEIGHT_QUANTILES))
        k = int(np.random.default_rng(rng.randrange(2**32)).poisson(COMPETITORS_PER_WORD))
        shares = np.random.default_rng(rng.randrange(2**32)).dirichlet([0.5] * k) if k else []
        slot = [(w.text, w.start, w.end, best)] + [
            (other, w.start + rng.choice((-0.02, -0.01, 0, 0.01, 0.02)), w.end, (1 - best) * share)
            for other, share in zip(competitors(w.text, k), shares, strict=True)
        ]
        here = []
        for text, start, end, weight in sorted(slot, key=lambda s: s[1]):
            if weight >= MIN_WEIGHT or text == w.text:
                here.append(len(out))
                out.append(Alternative(text, round(start, 2), end, round(weight, 3), before))
        before = tuple(here)
    return tuple(out)


def add_distractors(home, hours: float, *, plain: bool = False, seed: int = 7) -> int:
    """Write ``hours`` of synthetic transcripts through the real indexer; their count.

    Each utterance has alternatives like a PocketSphinx lattice's
    (:func:`alternatives_for`), unless ``plain``. Another ``seed``, other words.
    """
    from datetime import UTC, datetime, timedelta

    from pipeline.database import open_archive
    from pipeline.index import BATCH_MAX, Indexer
    from pipeline.messages import SessionEnded, SessionStarted, Utterance, Word

    sentence, competitors, rng = word_sampler(seed)
    engine = open_archive(home)
    indexer = Indexer(engine)
    first = datetime.now(UTC) - timedelta(days=400)
    count = 0
    for h in range(int(hours + 0.999)):
        key = f"distractor-{h}"
        seconds = SESSION_SECONDS * min(1.0, hours - h)
        begun = first + timedelta(hours=h)
        batch: list = [SessionStarted(key, "file", f"/distractors/{h}.wav", begun, 16000, 1)]
        at = 0.5
        while at < seconds:
            words = []
            for text in sentence(rng.randint(6, 14)):
                words.append(Word(text, round(at, 2), round(at + 0.3, 2), 0.9))
                at += 1 / WORDS_PER_SECOND
            heard = () if plain else alternatives_for(words, competitors, rng)
            batch.append(
                Utterance(
                    key,
                    words[0].start,
                    words[-1].end,
                    tuple(words),
                    "synthetic",
                    alternatives=heard,
                )
            )
            count += 1
            at += rng.uniform(0.3, 2.0)
            if len(batch) >= BATCH_MAX:
                indexer.write(batch)
                batch = []
        indexer.write([*batch, SessionEnded(key, int(seconds * 16000), 16000)])
    engine.dispose()
    return count


def in_top3(hits: list[tuple[float, bool]], cut: float) -> bool:
    """Whether one of the first three hits, as (score, at the right place), is right and
    scores at least ``cut``: the at-scale goal's test of one phrase."""
    return any(s >= cut and ok for s, ok in hits[:3])


def windows(words: list[str]) -> list[tuple[int, str]]:
    return [(i, " ".join(words[i : i + PHRASE_WORDS])) for i in range(len(words) - 2)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=SHARED if SHARED.is_dir() else CORPUS)
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument(
        "--distractor-hours", type=float, default=0.0, help="synthetic transcripts to add"
    )
    parser.add_argument(
        "--plain-distractors", action="store_true", help="distractors without alternatives"
    )
    parser.add_argument(
        "--without-alternatives",
        action="store_true",
        help="forget the corpus's alternatives once ingested: fuzzy search on the words alone",
    )
    args = parser.parse_args()

    from pipeline.archive import Archive
    from pipeline.config import Home
    from pipeline.errors import QueryError
    from pipeline.fuzzy import FUZZY_MIN_SCORE
    from pipeline.supervisor import ingest

    refs = json.loads((args.corpus / "transcripts.json").read_text())
    clips = {(args.corpus / rel).resolve(): normalize(text) for rel, text in refs.items()}
    print(f"corpus: {args.corpus} ({len(clips)} clips)")
    truth = {wav: aligned_starts(wav, ref) for wav, ref in clips.items()}

    tmp = Path(tempfile.mkdtemp(prefix="findability-"))
    try:
        home = Home(tmp / "home").ensure()
        report = ingest(sorted(clips), home)
        if report.failed:
            raise SystemExit(f"ingest failed: {report.failed}")
        if args.without_alternatives:  # (their trigrams stay in the phonetic index)
            with contextlib.closing(sqlite3.connect(home.db_path)) as con, con:
                con.execute("DELETE FROM alternatives")
        if args.distractor_hours > 0:
            t0 = time.perf_counter()
            utterances = add_distractors(home, args.distractor_hours, plain=args.plain_distractors)
            print(
                f"distractors: {args.distractor_hours:g} h, {utterances} utterances, "
                f"written in {time.perf_counter() - t0:.0f} s"
            )
        archive = Archive(home)
        sessions = {s.source: s.id for s in archive.sessions()}
        archive.search("warm up the dictionary", fuzzy=True)

        def best_fuzzy(phrase: str) -> list:
            try:
                return archive.search(phrase, fuzzy=True, min_score=0.0, limit=50)
            except QueryError:
                return []

        exact_found = top3_exact = 0
        spoken: list[list[tuple[float, bool]]] = []  # per phrase: (score, right place) per hit
        latencies: list[float] = []
        for wav, ref in clips.items():
            words = ref.split()
            for i, phrase in windows(words):
                at, sid = truth[wav][i], sessions[str(wav)]

                def right(h, at=at, sid=sid) -> bool:
                    return h.session_id == sid and abs(h.start - at) <= TOLERANCE_SECONDS

                exact = any(right(h) for h in archive.search(phrase, limit=50))
                exact_found += exact
                top3_exact += any(right(h) for h in archive.search(phrase, limit=3))
                t0 = time.perf_counter()
                with contextlib.suppress(QueryError):
                    archive.search(phrase, fuzzy=True)  # as the CLI asks
                latencies.append(time.perf_counter() - t0)
                hits = best_fuzzy(phrase)
                spoken.append([(h.score, right(h)) for h in hits])
                if args.verbose:
                    top = hits[0] if hits else None
                    said = " ".join(top.words[top.match[0] : top.match[1]]) if top else "-"
                    print(
                        f"  {phrase!r:40} @{at:5.1f}s exact={'yes' if exact else 'no ':3} "
                        f"fuzzy: {said!r} {top.score if top else 0:.2f}"
                        f" {'right' if top and right(top) else 'WRONG'}"
                    )
        others = [UNSPOKEN_TEXT] + [
            s["text"] for s in json.loads(MEETING_JSON.read_text())["sentences"]
        ]
        unspoken = [
            max((h.score for h in best_fuzzy(p)), default=0.0)
            for text in others
            for _, p in windows(normalize(text).split())
        ]
        n, u = len(spoken), len(unspoken)

        def found_at(cut: float) -> int:
            return sum(any(s >= cut and ok for s, ok in hits) for hits in spoken)

        def top3_at(cut: float) -> int:
            return sum(in_top3(hits, cut) for hits in spoken)

        def rejected_at(cut: float) -> int:
            return sum(best < cut for best in unspoken)

        print(f"spoken phrases: {n} (3 words each); unspoken: {u}")
        print(f"exact search finds at the right time:  {exact_found / n:6.1%}")
        print(
            f"fuzzy search (cut-off {FUZZY_MIN_SCORE}) finds: {found_at(FUZZY_MIN_SCORE) / n:6.1%}"
            "   (goal >= 90 %)"
        )
        print(
            f"unspoken phrases answered with nothing: {rejected_at(FUZZY_MIN_SCORE) / u:6.1%}"
            "   (goal >= 90 %)"
        )
        print(
            f"in the top 3 hits: exact {top3_exact / n:.1%} (newest first), "
            f"fuzzy {top3_at(FUZZY_MIN_SCORE) / n:.1%} (best first)"
        )
        print("cut-off  fuzzy found  fuzzy top-3  unspoken rejected")
        for cut in CUTOFFS:
            print(
                f"  {cut:4.2f}     {found_at(cut) / n:6.1%}      {top3_at(cut) / n:6.1%}"
                f"       {rejected_at(cut) / u:6.1%}"
            )
        ms = sorted(x * 1000 for x in latencies)
        p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
        print(
            f"fuzzy latency: median {statistics.median(ms):.1f} ms, p95 {p95:.1f} ms "
            f"(the corpus + {args.distractor_hours:g} h of distractors)"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
