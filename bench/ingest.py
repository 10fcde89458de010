"""Ingest benchmark: the pipeline against PocketSphinx used directly, on the same audio.

Run from the project root::

    uv run python bench/ingest.py               # ~10 minutes of speech in 4 WAV files
    uv run python bench/ingest.py --minutes 2   # a quicker, noisier run

It builds a benchmark set by cycling through the repository's real speech
(``tests/data/corpus/`` and the sentences of ``tests/data/festival/meeting.wav``),
joining the clips with ~1 s of silence into a few WAV files in a temporary
folder, and keeps the concatenated reference transcripts. Then, on those files:

* **raw**: what a user of the library would write with no pipeline: soundfile,
  down-mix, soxr (if needed), ``pocketsphinx.Endpointer`` to split utterances
  and one ``Decoder`` to decode each. Its wall time includes loading the
  decoder's model and reading the files.
* **pipeline**: ``pipeline.supervisor.ingest(paths, Home(tmp), EngineSpec())``:
  three processes, database migrations, recordings written to disk, words
  committed to SQLite. Its wall time includes process start-up and model load.
  The hypothesis of a file is the text of its session's utterances, read back
  from the archive with sqlite3, in time order.

It prints, per run, audio seconds, wall seconds, real-time factor (wall/audio)
and word error rate (jiwer), then two figures:

* ``rtf_ratio (pipeline/raw)``: pipeline RTF / raw RTF (goal <= 1.05);
* ``wer_delta (pipeline-raw)``: pipeline WER - raw WER in points (goal <= +0.5).

It always exits 0 when it could measure: it reports, it does not judge.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from _common import (
    CORPUS,
    MEETING_JSON,
    MEETING_WAV,
    RATE,
    corpus_wer,
    load_mono16k,
    normalize,
    pocketsphinx_utterances,
    read_archive,
)

# numpy, soundfile, soxr and jiwer are imported where they are used: the
# pipeline's children are spawned, and a spawned child re-imports this script,
# so anything imported here would be charged to the pipeline's start-up.
if TYPE_CHECKING:
    import numpy as np

try:
    import resource  # POSIX: the CPU time of joined child processes
except ImportError:  # Windows
    resource = None

GAP_SECONDS = 1.0  # silence between clips (and before the first one)
CLIP_PAD_SECONDS = 0.2  # kept around each sentence cut out of meeting.wav
RTF_GOAL = 1.05
WER_GOAL = 0.5  # points


# --- the benchmark set ----------------------------------------------------------


@dataclass
class Clip:
    name: str
    pcm: np.ndarray  # int16 mono at RATE
    text: str


@dataclass
class BenchFile:
    path: Path
    seconds: float
    reference: str
    clips: list[str] = field(default_factory=list)


def real_clips() -> list[Clip]:
    """Every real utterance in the repository: corpus files and meeting.wav's sentences."""
    clips: list[Clip] = []
    transcripts = json.loads((CORPUS / "transcripts.json").read_text())
    for rel, text in sorted(transcripts.items()):
        clips.append(Clip(rel, load_mono16k(CORPUS / rel), text))
    meeting = load_mono16k(MEETING_WAV)
    sentences = json.loads(MEETING_JSON.read_text())["sentences"]
    for i, s in enumerate(sentences):
        a = max(0, int((s["start"] - CLIP_PAD_SECONDS) * RATE))
        b = min(len(meeting), int(math.ceil((s["end"] + CLIP_PAD_SECONDS) * RATE)))
        clips.append(Clip(f"meeting#{i}", meeting[a:b].copy(), s["text"]))
    return clips


def build_set(folder: Path, minutes: float, nfiles: int) -> list[BenchFile]:
    """Cycle through the clips into ``nfiles`` WAVs of about ``minutes / nfiles`` each.

    Every pass uses every clip once, so the set is balanced; passes after the
    first are shuffled (seeded) so that the files are not copies of each other.
    """
    import numpy as np
    import soundfile as sf

    clips = real_clips()
    gap = np.zeros(int(GAP_SECONDS * RATE), dtype=np.int16)
    per_file = minutes * 60 / nfiles
    rng = random.Random(0)  # each pass over the clips in its own (reproducible) order
    order: list[Clip] = []
    files: list[BenchFile] = []
    for n in range(nfiles):
        parts, texts, names, samples = [gap], [], [], len(gap)
        while samples / RATE < per_file or not texts:
            if not order:  # the first pass keeps the repository's order
                order = list(clips) if not files and not texts else rng.sample(clips, len(clips))
            clip = order.pop(0)
            parts += [clip.pcm, gap]
            samples += len(clip.pcm) + len(gap)
            texts.append(clip.text)
            names.append(clip.name)
        path = folder / f"bench_{n + 1:02d}.wav"
        sf.write(str(path), np.concatenate(parts), RATE, subtype="PCM_16")
        files.append(BenchFile(path.resolve(), samples / RATE, " ".join(texts), names))
    return files


# --- the two runs ---------------------------------------------------------------


@dataclass
class Run:
    name: str
    wall: float
    cpu: float  # CPU seconds, all of the run's processes
    hypotheses: dict[Path, str]
    notes: list[str] = field(default_factory=list)


def run_raw(paths: list[Path]) -> Run:
    """PocketSphinx with no pipeline, timed from model load to the last word."""
    c0 = time.process_time()
    t0 = time.perf_counter()
    from pocketsphinx import Decoder

    decoder = Decoder(samprate=RATE, loglevel="FATAL")
    t_model = time.perf_counter() - t0
    hypotheses: dict[Path, str] = {}
    utterances = 0
    for path in paths:
        texts = pocketsphinx_utterances(decoder, load_mono16k(path).tobytes())
        utterances += len(texts)
        hypotheses[path] = " ".join(t for t in texts if t)
    wall = time.perf_counter() - t0
    return Run(
        "raw",
        wall,
        time.process_time() - c0,
        hypotheses,
        [f"model load {t_model:.2f} s (included)", f"{utterances} utterances"],
    )


def run_pipeline(paths: list[Path], home_root: Path) -> Run:
    """``pipeline.supervisor.ingest`` on the files into a fresh home, then read the words back."""
    from pipeline.config import Home
    from pipeline.recognize import EngineSpec
    from pipeline.supervisor import ingest

    home = Home(home_root)
    done: list[tuple[float, str]] = []
    c0 = time.process_time() + _children_cpu()
    t0 = time.perf_counter()

    def on_event(event) -> None:
        done.append((time.perf_counter() - t0, type(event).__name__))

    report = ingest([str(p) for p in paths], home, EngineSpec(), on_event=on_event)
    wall = time.perf_counter() - t0
    cpu = time.process_time() + _children_cpu() - c0  # children are joined: their time is in
    notes = []
    if report.failed:
        notes += [f"FAILED {f.source}: {f.message}" for f in report.failed]
    if len(report.indexed) != len(paths):
        notes.append(f"WARNING: {len(report.indexed)} of {len(paths)} files indexed")
    if report.interrupted:
        notes.append("WARNING: interrupted")
    indexed_at = [f"{t:.1f}" for t, kind in done if kind == "SessionIndexed"]
    notes.append("sessions committed at " + ", ".join(indexed_at) + " s")
    hypotheses, utterances = read_archive(home.db_path, paths)
    notes.append(f"{utterances} utterances in the archive")
    return Run("pipeline", wall, cpu, hypotheses, notes)


def _children_cpu() -> float:
    if resource is None:
        return math.nan
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


# --- report -----------------------------------------------------------------------


def warm_up() -> float:
    """Load the model once, untimed, so neither run pays for a cold file cache."""
    t0 = time.perf_counter()
    from pocketsphinx import Decoder

    Decoder(samprate=RATE, loglevel="FATAL")
    return time.perf_counter() - t0


def print_run(run: Run, files: list[BenchFile]) -> tuple[float, float]:
    audio = sum(f.seconds for f in files)
    print(f"\n[{run.name}]")
    print(f"  {'file':<14} {'audio s':>8} {'ref words':>9} {'hyp words':>9} {'WER %':>7}")
    for f in files:
        hyp = run.hypotheses.get(f.path, "")
        w = corpus_wer([f.reference], [hyp])
        print(
            f"  {f.path.name:<14} {f.seconds:8.1f} {len(normalize(f.reference).split()):9d} "
            f"{len(normalize(hyp).split()):9d} {100 * w:7.2f}"
        )
    wer = corpus_wer([f.reference for f in files], [run.hypotheses.get(f.path, "") for f in files])
    rtf = run.wall / audio
    print(
        f"  total: audio {audio:.1f} s, wall {run.wall:.2f} s, RTF {rtf:.4f}, WER {100 * wer:.2f} %"
        f" (CPU {run.cpu:.2f} s)"
    )
    for note in run.notes:
        print(f"  note: {note}")
    return rtf, wer


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--minutes", type=float, default=10.0, help="benchmark audio to build (default 10)"
    )
    ap.add_argument("--files", type=int, default=4, help="WAV files to split it into (default 4)")
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="time each engine this many times (alternating) and report each one's best run",
    )
    ap.add_argument(
        "--keep", type=Path, default=None, help="build the set and the archive here and keep them"
    )
    args = ap.parse_args(argv)
    if args.minutes <= 0 or args.files < 1 or args.repeat < 1:
        ap.error("--minutes must be > 0, --files and --repeat >= 1")

    with tempfile.TemporaryDirectory(prefix="pipeline-bench-") as tmp:
        work = args.keep.resolve() if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        t_build = time.perf_counter()
        files = build_set(work, args.minutes, args.files)
        t_build = time.perf_counter() - t_build
        paths = [f.path for f in files]
        audio = sum(f.seconds for f in files)
        n_clips = sum(len(f.clips) for f in files)
        print(
            f"benchmark set: {len(files)} files, {audio:.1f} s ({audio / 60:.1f} min) of audio, "
            f"{n_clips} clips with {GAP_SECONDS:g} s gaps, in {work} (built in {t_build:.1f} s)"
        )
        print(f"untimed warm-up model load: {warm_up():.2f} s")
        load_before = os.getloadavg()

        raws: list[Run] = []
        pipes: list[Run] = []
        for i in range(args.repeat):  # alternate who goes first, so drift hits both alike
            if i % 2 == 0:
                raws.append(run_raw(paths))
            pipes.append(run_pipeline(paths, work / f"home-{i + 1}"))
            if i % 2 == 1:
                raws.append(run_raw(paths))
            if args.repeat > 1:
                print(f"repeat {i + 1}: raw {raws[-1].wall:.2f} s, pipeline {pipes[-1].wall:.2f} s")
        raw = min(raws, key=lambda r: r.wall)
        pipe = min(pipes, key=lambda r: r.wall)
        if args.repeat > 1:
            for best, runs in ((raw, raws), (pipe, pipes)):
                walls = [r.wall for r in runs]
                best.notes.insert(
                    0,
                    f"best of {len(walls)} (median {statistics.median(walls):.2f} s, "
                    f"max {max(walls):.2f} s)",
                )

        raw_rtf, raw_wer = print_run(raw, files)
        pipe_rtf, pipe_wer = print_run(pipe, files)
        differ = sum(
            normalize(raw.hypotheses[p]) != normalize(pipe.hypotheses.get(p, "")) for p in paths
        )
        print(f"\nfiles whose pipeline words differ from raw's: {differ} of {len(paths)}")
        print(
            "(both times include loading the PocketSphinx model; the pipeline's also includes "
            "starting its three processes, migrating the database and writing recordings)"
        )
        load_after = os.getloadavg()
        print(
            f"load average (1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after, "
            f"on {os.cpu_count()} CPUs: other work on the machine skews wall times"
        )
        print(f"cpu_ratio (pipeline/raw): {pipe.cpu / raw.cpu:.3f}  [for information]")
        ratio = pipe_rtf / raw_rtf
        delta = 100 * (pipe_wer - raw_wer)
        print(f"rtf_ratio (pipeline/raw): {ratio:.3f}  [goal <= {RTF_GOAL:.2f}]")
        print(f"wer_delta (pipeline-raw): {delta:+.2f} points  [goal <= +{WER_GOAL:.1f}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
