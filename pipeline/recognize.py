"""Speech recognition: engines behind one small interface, and the recognizer process.

An :class:`Engine` turns one utterance of 16-bit mono PCM at ``engine.rate``
into words with times relative to that utterance. Everything around it is
shared by all engines and lives in :class:`Transcriber`: down-mixing,
resampling to the engine's rate with soxr (the engine's rate must equal the
audio's), splitting the stream into utterances with PocketSphinx's voice
activity :class:`~pocketsphinx.Endpointer`, and turning utterance-relative
times into session-absolute ones by integer sample counting, so times stay
exact however long a session runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import queue
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import soxr

from . import lattice
from .backfill import SessionOnDisk
from .errors import EngineUnavailable, ModelError, PipelineError
from .messages import (
    Alternative,
    Audio,
    ChildFailed,
    HandedOff,
    Partial,
    Progress,
    Retranscribe,
    SessionEnded,
    SessionStarted,
    Stop,
    TranscriptDone,
    Utterance,
    Word,
    Working,
)
from .process import become_child, nonblocking

if TYPE_CHECKING:
    from .assemblyai import AssemblyAISettings
    from .config import Home

log = logging.getLogger(__name__)

QUEUE_POLL_SECONDS = 0.5
MAX_UTTERANCE_SECONDS = 30.0  # force a cut in endless speech (music, TV) to keep latency low
PARTIAL_EVERY_SECONDS = 0.5  # how often the live view gets a new guess
PROGRESS_SECONDS = 1.0  # how often the recognizer says how far it has got
HANDOFF_SECONDS = 15  # a backlog this long is shared with the helper recognizers
LOOK_BEHIND_SECONDS = 5.0  # how often a recognizer with helpers measures its backlog
HEAD_SECONDS = 3  # a hand-off keeps about this much at each end, to cut where it is quiet
MIN_PIECE_SECONDS = 3
QUIET_SECONDS = 0.3
QUIET_SEARCH_SECONDS = 2.5
RETRANSCRIBE_STEP_SECONDS = 30  # a reindex reports its progress this often (audio time)
GAP_CHUNK_SECONDS = 10  # silence for a gap is fed in pieces of this length
ENDPOINTER_WINDOW = 0.3
ENDPOINTER_RATIO = 0.9
# Audio before the endpointer's start of speech that an utterance begins with: its voice
# activity detector misses a word's soft onset ("and" in "and mister john" is lost, the
# decoder starting cold at "mister"), so each utterance starts this much earlier (never
# before the last one ended).
PRE_ROLL_SECONDS = 0.2
FAILURE_GRACE_SECONDS = 5.0  # a failed recognizer waits this long for the run to end it

RawWord = tuple[str, float, float, float]  # text, start, end, confidence (utterance-relative)


class Engine(Protocol):
    """What the pipeline needs of a speech recognizer.

    An engine may also have ``alternatives()``: the word graph it weighed for
    the utterance it last transcribed (:mod:`pipeline.lattice`, times as its
    words'), which ``search --fuzzy`` searches too; engines without it give none.
    And ``new_stream()``: forget what earlier audio taught it, as a transcriber
    begins a stream (a session, or a piece of one), so that the same audio gives
    the same words whatever the process decoded before.
    """

    name: str
    rate: int

    def transcribe(self, pcm: bytes) -> list[RawWord]:
        """Words of one utterance of int16 mono PCM, times relative to its start."""
        ...

    def partial(self, pcm: bytes) -> str:
        """A running guess at the utterance so far, given its audio piece by piece.

        Only the live view asks for it; ``transcribe`` ends the running guess.
        """
        ...


# --- engines ---------------------------------------------------------------

_FILLER = re.compile(r"^[<\[].*[>\]]$")  # <s>, </s>, <sil>, [NOISE], [SPEECH]
_ALT_PRON = re.compile(r"\(\d+\)$")  # "the(2)": an alternative pronunciation


class PocketSphinxEngine:
    """PocketSphinx with its bundled US-English model: offline, nothing to download."""

    rate = 16000
    frames_per_second = 100

    def __init__(self) -> None:
        from pocketsphinx import Decoder

        self._decoder = Decoder(samprate=self.rate, loglevel="FATAL")
        self.name = "pocketsphinx:en-us"
        self._guessing = False
        self._heard: list[Alternative] = []

    def partial(self, pcm: bytes) -> str:
        d = self._decoder
        if not self._guessing:
            d.start_utt()
            self._guessing = True
        d.process_raw(pcm)
        hyp = d.hyp()
        return hyp.hypstr if hyp is not None else ""

    def transcribe(self, pcm: bytes) -> list[RawWord]:
        # the final pass sees the whole utterance at once (full_utt: better
        # normalisation), so a running guess on the same decoder is dropped first
        d = self._decoder
        if self._guessing:
            d.end_utt()
            self._guessing = False
        d.start_utt()
        d.process_raw(pcm, full_utt=True)
        d.end_utt()
        logmath = d.logmath
        words: list[RawWord] = []
        for seg in d.seg():
            if _FILLER.match(seg.word):
                continue
            text = _ALT_PRON.sub("", seg.word)
            start = seg.start_frame / self.frames_per_second
            end = (seg.end_frame + 1) / self.frames_per_second
            words.append((text, start, end, min(1.0, logmath.exp(seg.prob))))
        self._heard = self._lattice(words, len(pcm) / 2 / self.rate)
        return words

    def alternatives(self) -> list[Alternative]:
        return self._heard

    def new_stream(self) -> None:
        # its noise filter (remove_noise) carries its estimate over from the audio
        # before: without this the words of a file depended on which file the
        # process had decoded last (parallel ingest lanes disagreed with one)
        self._decoder.reinit_feat()

    def _lattice(self, words: list[RawWord], duration: float) -> list[Alternative]:
        """The word graph of the utterance just decoded (its posteriors were computed
        with its best path, so this costs only writing and reading it)."""
        if not words:
            return []
        graph = self._decoder.get_lattice()
        if graph is None:
            return []
        slf = _written(graph)
        best = [(text, start) for text, start, _, _ in words]
        return lattice.from_htk(slf, duration, best)


def _written(graph) -> str:
    """A PocketSphinx lattice as HTK SLF text: written to a file and read back, as its
    Python object has no nodes to walk. The file is removed at once: a recognizer that
    is killed (by its supervisor, or with the machine) cleans nothing up, so a folder
    kept for its life was left in the temp folder by each one."""
    fd, name = tempfile.mkstemp(prefix="pipeline-lattice-", suffix=".slf")
    os.close(fd)
    try:
        graph.write_htk(name)
        return Path(name).read_text(encoding="utf-8")
    finally:
        os.unlink(name)


# Vosk gives this many best paths of an utterance, which make its word graph. It then
# outputs the best path's words, not its default minimum-Bayes-risk ones (Vosk gives
# one or the other); 0 turns the alternatives off.
VOSK_ALTERNATIVES = 10


class VoskEngine:
    """Vosk (Kaldi) with a model folder; a fresh recognizer per utterance keeps memory flat."""

    def __init__(self, model_path: str | Path) -> None:
        import vosk

        path = Path(model_path)
        check_vosk_model(path)
        vosk.SetLogLevel(-1)
        try:
            self._model = vosk.Model(str(path))
        except Exception as exc:  # vosk raises a bare Exception on a bad model
            raise ModelError(f"Vosk could not load the model at {path}: {exc}") from exc
        self._recognizer_class = vosk.KaldiRecognizer
        self.rate = _vosk_model_rate(path)
        self.name = f"vosk:{path.name}"
        self._guess = None
        self._heard: list[Alternative] = []

    def partial(self, pcm: bytes) -> str:
        if self._guess is None:
            self._guess = self._recognizer_class(self._model, self.rate)
        self._guess.AcceptWaveform(pcm)
        return json.loads(self._guess.PartialResult()).get("partial", "")

    def transcribe(self, pcm: bytes) -> list[RawWord]:
        self._guess = None
        rec = self._recognizer_class(self._model, self.rate)
        rec.SetWords(True)
        if VOSK_ALTERNATIVES:
            rec.SetMaxAlternatives(VOSK_ALTERNATIVES)
        results = []
        step = self.rate // 4 * 2  # a quarter second of bytes
        for i in range(0, len(pcm), step):
            if rec.AcceptWaveform(pcm[i : i + step]):
                results.append(json.loads(rec.Result()))
        results.append(json.loads(rec.FinalResult()))
        if not VOSK_ALTERNATIVES:
            self._heard = []
            return [
                (w["word"], float(w["start"]), float(w["end"]), float(w.get("conf", 1.0)))
                for r in results
                for w in r.get("result", [])
                if not _FILLER.match(w["word"])
            ]
        return self._best_paths(results)

    def alternatives(self) -> list[Alternative]:
        return self._heard

    def _best_paths(self, results: list[dict]) -> list[RawWord]:
        """The words of each result's best path, each as sure as the share of the n best
        paths that have it there; the paths' word graph becomes the alternatives."""
        graphs, words = [], []
        for result in results:
            paths = [
                (
                    float(alt.get("confidence", 0.0)),
                    [
                        (w["word"], float(w["start"]), float(w["end"]))
                        for w in alt.get("result", [])
                        if not _FILLER.match(w["word"])
                    ],
                )
                for alt in result.get("alternatives", [])
            ]
            graph = lattice.from_paths([p for p in paths if p[1]])
            sure = {(a.text, a.start, a.end): a.weight for a in graph}
            for text, start, end in paths[0][1] if paths else []:
                key = (text, round(start, 3), round(end, 3))
                words.append((text, start, end, sure.get(key, 1.0)))
            graphs.append(graph)
        self._heard = lattice.joined(graphs)
        return words


def check_vosk_model(path: Path) -> None:
    """A Vosk model is a folder with ``am/`` (or ``final.mdl``) and ``conf/``."""
    if not path.exists():
        raise ModelError(f"no Vosk model at {path}; give the folder of an unpacked Vosk model")
    if not path.is_dir():
        raise ModelError(f"{path} is a file; --model wants the folder of an unpacked Vosk model")
    if not (path / "conf").is_dir() or not (
        (path / "am").is_dir() or (path / "final.mdl").exists()
    ):
        raise ModelError(
            f"{path} does not look like a Vosk model (no conf/ and am/ inside); "
            "give the folder that contains them"
        )


def _vosk_model_rate(path: Path) -> int:
    """The model's sample rate from conf/mfcc.conf (Kaldi's default is 16 kHz)."""
    mfcc = path / "conf" / "mfcc.conf"
    if mfcc.exists():
        m = re.search(r"--sample-frequency=(\d+)", mfcc.read_text())
        if m:
            return int(m.group(1))
    return 16000


@dataclass(frozen=True)
class EngineSpec:
    """Which engine to build; picklable so the recognizer process can build it.

    ``kind`` "assemblyai" is the optional cloud engine; ``cloud`` holds its key
    and endpoint (else they come from the environment when it is built).
    """

    kind: str = "pocketsphinx"
    model: str | None = None
    speed: float | None = None  # tests and benchmarks: hold the engine to this × real time
    cloud: AssemblyAISettings | None = None

    @classmethod
    def from_options(cls, model: str | Path | None) -> EngineSpec:
        if model is None:
            return cls()
        path = Path(model).expanduser().resolve()
        check_vosk_model(path)
        return cls("vosk", str(path))

    @property
    def label(self) -> str:
        if self.kind == "assemblyai":
            from .assemblyai import LABEL

            return LABEL
        return f"vosk:{Path(self.model).name}" if self.kind == "vosk" else "pocketsphinx:en-us"

    def build(self) -> Engine:
        engine: Engine
        if self.kind == "assemblyai":
            from .assemblyai import AssemblyAIEngine

            engine = AssemblyAIEngine(self.cloud)
        elif self.kind == "vosk":
            engine = VoskEngine(self.model or "")
        else:
            engine = PocketSphinxEngine()
        return Throttled(engine, self.speed) if self.speed else engine


class Throttled:
    """An engine held to ``speed`` × real time: a slow machine or a big model, on demand."""

    def __init__(self, engine: Engine, speed: float) -> None:
        self.engine, self.speed = engine, speed
        self.name, self.rate = engine.name, engine.rate

    def transcribe(self, pcm: bytes) -> list[RawWord]:
        t0 = time.monotonic()
        words = self.engine.transcribe(pcm)
        due = len(pcm) / 2 / self.rate / self.speed
        time.sleep(max(0.0, t0 + due - time.monotonic()))
        return words

    def partial(self, pcm: bytes) -> str:
        return self.engine.partial(pcm)

    def alternatives(self) -> list[Alternative]:
        return alternatives_of(self.engine)

    def new_stream(self) -> None:
        new_stream(self.engine)


def alternatives_of(engine: Engine) -> list[Alternative]:
    """The word graph the engine weighed for its last utterance (none if it gives none)."""
    give = getattr(engine, "alternatives", None)
    return list(give()) if give is not None else []


def new_stream(engine: Engine) -> None:
    """Tell the engine a stream begins, if it keeps anything from the audio before."""
    begin = getattr(engine, "new_stream", None)
    if begin is not None:
        begin()


# --- utterances ---------------------------------------------------------------


class Transcriber:
    """One session's stream → utterances with session-absolute word times.

    Feed it the session's raw frames in order; it returns the utterances
    that ended in them. Gaps in the frame offsets are filled with silence so
    the engine's clock and the session's stay one.
    """

    def __init__(
        self,
        engine: Engine,
        session: str,
        rate: int,
        channels: int,
        *,
        on_partial: Callable[[str], None] | None = None,
        start: int = 0,
        disk: SessionOnDisk | None = None,
        anchor: tuple[str, int] = ("", 0),
    ) -> None:
        """``start``: the session frame this stream begins at (repair resumes mid-session);
        ``disk``: where to read audio this transcriber did not receive (else silence);
        ``anchor``: a segment file of the session and its offset, to place the files."""
        self.engine = engine
        self.session = session
        self.source_rate = rate
        self.channels = channels
        self._disk = disk
        self._anchor = anchor  # a segment file and its session offset
        self._max_samples = int(MAX_UTTERANCE_SECONDS * engine.rate)
        self._on_partial = on_partial
        self._guess_every = int(PARTIAL_EVERY_SECONDS * engine.rate) * 2
        self._reset(start)

    def _reset(self, start: int) -> None:
        """A fresh stream that begins at session frame ``start``."""
        from pocketsphinx import Endpointer

        rate, engine = self.source_rate, self.engine
        new_stream(engine)
        self._next_offset = start  # next expected source frame
        self._base = round(start * engine.rate / rate)  # engine samples before this stream
        self._resampler = (
            soxr.ResampleStream(rate, engine.rate, 1, dtype="int16")
            if rate != engine.rate
            else None
        )
        self._ep = Endpointer(
            window=ENDPOINTER_WINDOW, ratio=ENDPOINTER_RATIO, sample_rate=engine.rate
        )
        self._frame_samples = self._ep.frame_bytes // 2
        self._pending = np.zeros(0, dtype=np.int16)  # resampled, not yet a whole VAD frame
        self._speech: list[bytes] = []
        self._speech_samples = 0
        self._speech_start = 0  # engine-rate sample where the current utterance began
        self._last_end = self._base  # engine-rate sample where the last utterance ended
        # the latest audio given to the endpointer (engine rate), ending at sample _fed:
        # an utterance's pre-roll is taken from it
        self._recent = np.zeros(0, dtype=np.int16)
        self._fed = self._base
        self._cut = False  # the last utterance was cut short in the middle of speech
        self._unguessed: list[bytes] = []  # speech not yet given to engine.partial

    @property
    def position(self) -> float:
        """Seconds of the session recognized so far."""
        return self._next_offset / self.source_rate

    def feed(self, audio: Audio) -> list[Utterance]:
        if audio.segment:
            self._anchor = (audio.segment, audio.segment_offset)
        out = self._catch_up(audio.offset)
        frames = np.frombuffer(audio.pcm, dtype=np.int16).reshape(-1, audio.channels)
        if audio.offset < self._next_offset:  # overlap (a restarted source): skip what we had
            frames = frames[self._next_offset - audio.offset :]
        self._next_offset += len(frames)
        return out + self._feed_mono(_downmix(frames))

    def read_back(self, offset: int) -> list[Utterance]:
        """Recognize the session up to ``offset`` from its files (a reindex)."""
        return self._catch_up(offset)

    def _catch_up(self, offset: int) -> list[Utterance]:
        """Audio up to ``offset`` that never arrived: read from disk, or silence."""
        out: list[Utterance] = []
        if offset <= self._next_offset:
            return out
        if self._disk is not None:
            log.info(
                "%s: reading %.1f s back from disk",
                self.session,
                (offset - self._next_offset) / self.source_rate,
            )
            for frames in self._disk.read(self._next_offset, offset, self._anchor):
                self._next_offset += len(frames)
                out += self._feed_mono(_downmix(frames))
        while offset > self._next_offset:  # a gap: silence keeps the clock true
            gap = min(offset - self._next_offset, GAP_CHUNK_SECONDS * self.source_rate)
            self._next_offset += gap
            out += self._feed_mono(np.zeros(gap, dtype=np.int16))
        return out

    def finish(self, end: int | None = None) -> list[Utterance]:
        """Flush the resampler and the endpointer: the session's last utterance.

        ``end``: the session's last frame, so audio that never arrived is read first.
        """
        out: list[Utterance] = self._catch_up(end) if end is not None else []
        return out + self._flush()

    @property
    def anchor(self) -> tuple[str, int]:
        return self._anchor

    def behind(self, audio: Audio) -> int:
        """How many frames before this audio were never received (a backlog)."""
        return audio.offset - self._next_offset

    def hand_off(
        self, audio: Audio, pieces: int, at_least: int
    ) -> tuple[list[Utterance], list[tuple[int, int]]]:
        """Split the backlog on disk, if ``at_least`` frames long, so others recognize most of it.

        The backlog runs from here to what capture has written (``audio`` may
        be stale: it waited in a full queue). This transcriber reads a few
        seconds on, to the quietest moment there, and jumps to a quiet moment
        a few seconds before the end; the stretch between, cut at quiet
        moments into ``pieces``, is for other recognizers. Cutting where
        nobody speaks keeps words whole. Returns the utterances read on the
        way, and the pieces (none if there is no backlog worth sharing).
        """
        if audio.segment:
            self._anchor = (audio.segment, audio.segment_offset)
        if self._disk is None:
            return [], []
        offset = max(audio.offset, self._disk.recorded_until(self._anchor))
        if offset - self._next_offset < at_least:
            return [], []
        head = self._quiet_near(self._next_offset + HEAD_SECONDS * self.source_rate, offset)
        tail = self._quiet_near(offset - HEAD_SECONDS * self.source_rate, offset)
        if tail - head < pieces * MIN_PIECE_SECONDS * self.source_rate:
            return [], []
        cuts = [head]
        for k in range(1, pieces):
            cuts.append(self._quiet_near(head + (tail - head) * k // pieces, offset))
        cuts.append(tail)
        out = self._catch_up(head) + self._flush()
        self._reset(tail)
        return out, list(zip(cuts, cuts[1:], strict=False))

    def _quiet_near(self, target: int, limit: int) -> int:
        """The middle of the quietest QUIET_SECONDS within QUIET_SEARCH_SECONDS of
        ``target`` (a session frame), between here and ``limit``."""
        rate = self.source_rate
        reach = int(QUIET_SEARCH_SECONDS * rate)
        lo, hi = max(self._next_offset, target - reach), min(limit, target + reach)
        if hi - lo < QUIET_SECONDS * rate:
            return min(max(target, self._next_offset), limit)
        mono = np.concatenate(
            [_downmix(f) for f in self._disk.read(lo, hi, self._anchor)] or [np.zeros(0, np.int16)]
        ).astype(np.float64)
        hop = rate // 100  # 10 ms
        frames = len(mono) // hop
        width = int(QUIET_SECONDS * 100)
        if frames <= width:
            return min(max(target, self._next_offset), limit)
        energy = (mono[: frames * hop].reshape(frames, hop) ** 2).sum(axis=1)
        window = np.convolve(energy, np.ones(width), mode="valid")
        return lo + (int(np.argmin(window)) + width // 2) * hop

    def _flush(self) -> list[Utterance]:
        """The end of this stream: what the resampler and the endpointer still hold."""
        out: list[Utterance] = []
        if self._resampler is not None:
            out += self._to_endpointer(
                self._resampler.resample_chunk(np.zeros(0, np.int16), last=True)
            )
        rest, self._pending = self._pending.tobytes(), np.zeros(0, dtype=np.int16)
        speech = self._ep.end_stream(rest or b"\0\0")  # it refuses an empty buffer
        if speech is not None:
            self._take(speech)
        if self._speech:
            out += self._emit()
        return out

    def _feed_mono(self, mono: np.ndarray) -> list[Utterance]:
        if self._resampler is not None:
            mono = self._resampler.resample_chunk(mono)
        return self._to_endpointer(mono)

    def _to_endpointer(self, samples: np.ndarray) -> list[Utterance]:
        buf = np.concatenate([self._pending, samples]) if len(self._pending) else samples
        n = len(buf) // self._frame_samples * self._frame_samples
        self._pending = buf[n:].copy()
        self._remember(buf[:n])
        out: list[Utterance] = []
        for i in range(0, n, self._frame_samples):
            frame = buf[i : i + self._frame_samples].tobytes()
            speech = self._ep.process(frame)
            if speech is None:
                continue
            self._take(speech)
            too_long = self._speech_samples >= self._max_samples
            if not self._ep.in_speech or too_long:
                out += self._emit()
        return out

    def _remember(self, samples: np.ndarray) -> None:
        """Keep what the endpointer is given, as far back as a pre-roll may reach: it
        hands speech back up to a window late."""
        keep = int((ENDPOINTER_WINDOW + PRE_ROLL_SECONDS) * self.engine.rate) + len(samples)
        self._recent = np.concatenate([self._recent, samples])[-keep:]
        self._fed += len(samples)

    def _pre_roll(self, start: int) -> bytes:
        """The audio just before engine sample ``start``: up to :data:`PRE_ROLL_SECONDS`,
        not before the last utterance's end."""
        first = self._fed - len(self._recent)  # the engine sample _recent begins with
        lo = max(start - int(PRE_ROLL_SECONDS * self.engine.rate), self._last_end, first)
        return self._recent[lo - first : max(0, start - first)].tobytes()

    def _take(self, speech: bytes) -> None:
        """Collect speech; its first frame dates the utterance.

        The endpointer hands frames back a window late, so the utterance's
        start is its ``speech_start``, counted from this session's first
        frame, less the pre-roll; after a forced cut the next piece starts
        where the last ended.
        """
        if not self._speech and not self._cut:
            start = self._base + round(self._ep.speech_start * self.engine.rate)
            pre = self._pre_roll(start)
            self._speech_start = start - len(pre) // 2
            speech = pre + speech
        self._speech.append(speech)
        self._speech_samples += len(speech) // 2
        if self._on_partial is not None:
            self._unguessed.append(speech)
            if sum(map(len, self._unguessed)) >= self._guess_every:
                guess = self.engine.partial(b"".join(self._unguessed))
                self._unguessed = []
                if guess:
                    self._on_partial(guess)

    def _emit(self) -> list[Utterance]:
        pcm = b"".join(self._speech)
        offset = self._speech_start / self.engine.rate
        duration = len(pcm) / 2 / self.engine.rate
        self._speech, self._speech_samples, self._unguessed = [], 0, []
        self._cut = self._ep.in_speech  # cut mid-speech: the next piece follows on
        self._speech_start += len(pcm) // 2
        self._last_end = self._speech_start
        raw = self.engine.transcribe(pcm)
        if not raw:
            return []

        def at(t: float) -> float:  # utterance-relative → session-absolute
            return round(offset + min(duration, max(0.0, t)), 3)

        words = tuple(Word(text, at(s), at(e), c) for text, s, e, c in raw)
        heard = tuple(
            dataclasses.replace(a, start=at(a.start), end=at(a.end))
            for a in alternatives_of(self.engine)
        )
        return [
            Utterance(
                self.session,
                round(offset, 3),
                round(offset + duration, 3),
                words,
                self.engine.name,
                alternatives=heard,
            )
        ]


def _downmix(frames: np.ndarray) -> np.ndarray:
    if frames.shape[1] == 1:
        return frames[:, 0]
    return frames.mean(axis=1).astype(np.int16)


# --- the process ------------------------------------------------------------


def run_recognizer(
    spec: EngineSpec,
    audio_q,
    index_q,
    *,
    home: Home | None = None,
    report_q=None,
    log_q=None,
    sender: str = "recognizer",
    partials: bool = False,
    helpers_q=None,
    helpers: int = 0,
) -> None:
    """Process body: Audio from ``audio_q`` → Utterances on ``index_q`` until STOP.

    Runs until the STOP sentinel arrives, so every captured frame is
    recognized before it exits; the supervisor, not SIGINT, decides when.
    Audio it did not receive (a full queue, a restart) is read back from the
    segments in ``home``; a long backlog is shared with ``helpers``
    recognizers that take :class:`Retranscribe` pieces from ``helpers_q``
    (helpers build their engine when their first piece comes). With
    ``report_q``, its progress (and with ``partials``, running guesses) go
    there for the live view and status.
    """
    lane = sender.removeprefix("recognizer")  # "-2" with --jobs; /proc names stop at 15
    name = sender if not sender.startswith("recognizer") else f"recog{lane}" if lane else sender
    become_child(f"pipe-{name}", log_q)
    status = nonblocking(report_q) if report_q is not None else None
    loop = None
    try:
        loop = _RecognizerLoop(
            spec,
            index_q,
            home,
            status,
            partials=partials,
            sender=sender,
            report=report_q.put if report_q is not None else None,
            helpers_q=helpers_q if helpers > 0 else None,
            helpers=helpers if helpers_q is not None else 0,
        )
        if not sender.startswith("helper"):
            loop.engine  # noqa: B018 - load the model now, before audio piles up
        while loop.handle(audio_q.get()):
            pass
    except EngineUnavailable as exc:
        # for now only: exit without ChildFailed, and the supervisor starts a new
        # recognizer, which reads the audio this one did not finish from disk
        log.warning("%s; the recognizer exits to be restarted", exc)
        raise SystemExit(exc.exit_code) from exc
    except PipelineError as exc:
        index_q.put(ChildFailed("recognizer", str(exc), type(exc).__name__))
        _linger(audio_q)
        raise SystemExit(1) from exc
    finally:
        engine = loop._engine if loop is not None else None
        if hasattr(engine, "close"):  # a cloud engine ends its session (and its billing)
            engine.close()
    index_q.put(Stop(sender))


def recognizer_process(
    ctx, spec: EngineSpec, audio_q, index_q, *, name: str, home: Home, report_q, log_q, **extra
):
    """A (not yet started) recognizer child; ``extra`` are :func:`run_recognizer` options."""
    return ctx.Process(
        target=run_recognizer,
        name=f"pipeline-{name}",
        args=(spec, audio_q, index_q),
        kwargs={
            "home": home,
            "report_q": report_q,
            "log_q": log_q,
            "sender": name,
            **extra,
        },
    )


def _linger(audio_q) -> None:
    """Give a reported failure time to reach the supervisor before exiting.

    The report travels through the indexer; a recognizer that died at once
    would be restarted (and fail again) before the supervisor hears why and
    ends the run, which stops this process. The queue is drained meanwhile
    so that capture never blocks on it.
    """
    deadline = time.monotonic() + FAILURE_GRACE_SECONDS
    while (left := deadline - time.monotonic()) > 0:
        with contextlib.suppress(queue.Empty):
            audio_q.get(timeout=left)


class _RecognizerLoop:
    """The recognizer process's state: one Transcriber per session in flight."""

    def __init__(
        self,
        spec: EngineSpec,
        index_q,
        home: Home | None,
        status,
        *,
        partials: bool = True,
        sender: str = "recognizer",
        report=None,
        helpers_q=None,
        helpers: int = 0,
    ) -> None:
        """``report``: must arrive (what a helper works on); ``helpers_q``: where pieces
        of a long backlog go for ``helpers`` helper recognizers."""
        self.spec = spec
        self._engine: Engine | None = None
        self.helpers_q = helpers_q
        self.helpers = helpers
        self.sender = sender
        self.report = report
        self.index_q = index_q
        self.home = home
        self.status = status
        self.partials = partials
        self.transcribers: dict[str, Transcriber] = {}
        self._told = 0.0  # when progress was last sent
        self._looked = time.monotonic()  # when the backlog on disk was last measured

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = self.spec.build()
        return self._engine

    def handle(self, msg) -> bool:
        """Process one message; False once STOP has been handled."""
        if isinstance(msg, Stop):
            for t in self.transcribers.values():
                self._send(t.finish())
            for _ in range(self.helpers):  # after the last piece, in queue order
                self.helpers_q.put(Stop(msg.sender))
            return False
        if isinstance(msg, SessionStarted):
            self.transcribers[msg.key] = self._transcriber(msg.key, msg.rate, msg.channels, 0)
        elif isinstance(msg, Audio):
            t = self._for(msg.session, msg.rate, msg.channels)
            if self.helpers and (t.behind(msg) > 0 or self._due_to_look_behind()):
                self._hand_off(t, msg)  # a gap, or a while since: how far behind is it?
            self._send(t.feed(msg))
            if self.status is not None and time.monotonic() - self._told >= PROGRESS_SECONDS:
                self._told = time.monotonic()
                self.status(Progress(msg.session, t.position))
        elif isinstance(msg, Retranscribe):
            self._retranscribe(msg)
        elif isinstance(msg, SessionEnded):
            t = self.transcribers.pop(msg.session, None)
            if t is None and self.home is not None:  # restarted after its last audio
                t = self._for(msg.session, msg.rate, None)
                self.transcribers.pop(msg.session)
            if t is not None:
                self._send(t.finish(msg.frames))
            self.index_q.put(msg)  # after its last utterance: the session is complete
        return True

    def _retranscribe(self, job: Retranscribe) -> None:
        """Recognize a stored session again, run by run of audio still on disk.

        Its words go to a new transcript (``reindex``); progress is reported as
        it goes, and the end of the job makes the new transcript the default.
        """
        if job.catch_up and self.report is not None:
            self.report(Working(self.sender, os.getpid(), job))
        disk = SessionOnDisk(self.home.recordings, job.session, job.rate)
        step = RETRANSCRIBE_STEP_SECONDS * job.rate
        for (first, end), anchor in zip(job.runs, job.anchors, strict=True):
            start = max(first, job.start)
            if start >= end:
                continue
            t = Transcriber(
                self.engine,
                job.session,
                job.rate,
                job.channels,
                start=start,
                disk=disk,
                anchor=anchor,
            )
            for position in range(start + step, end + step, step):
                self._send(t.read_back(min(position, end)), reindex=not job.catch_up)
                if self.status is not None and not job.catch_up:
                    self.status(Progress(job.session, min(position, end) / job.rate))
            self._send(t.finish(), reindex=not job.catch_up)
        if job.catch_up:
            if self.report is not None:
                self.report(Working(self.sender, os.getpid(), None))
            log.info(
                "%s: recognized %.1f-%.1f s for a recognizer behind",
                job.session,
                job.runs[0][0] / job.rate,
                job.runs[-1][1] / job.rate,
            )
        else:
            self.index_q.put(
                TranscriptDone(job.session, self.engine.name, job.frames, job.rate, job.runs)
            )

    def _due_to_look_behind(self) -> bool:
        """Time to compare with what capture wrote? (A backlog may sit in the queue.)"""
        if time.monotonic() - self._looked < LOOK_BEHIND_SECONDS:
            return False
        self._looked = time.monotonic()
        return True

    def _hand_off(self, t: Transcriber, msg: Audio) -> None:
        """Fallen far behind what is on disk: give the middle of the backlog to the helpers."""
        utterances, pieces = t.hand_off(msg, self.helpers, HANDOFF_SECONDS * msg.rate)
        self._send(utterances)
        for start, end in pieces:
            self.helpers_q.put(
                Retranscribe(
                    msg.session,
                    msg.rate,
                    t.channels,
                    0,
                    ((start, end),),
                    (t.anchor,),
                    catch_up=True,
                )
            )
        if pieces:
            log.info(
                "%s: far behind; %.1f-%.1f s of the backlog goes to the helpers in %d pieces",
                msg.session,
                pieces[0][0] / msg.rate,
                pieces[-1][1] / msg.rate,
                len(pieces),
            )
            if self.status is not None:
                self.status(
                    HandedOff(msg.session, tuple((a / msg.rate, b / msg.rate) for a, b in pieces))
                )

    def _for(self, session: str, rate: int, channels: int | None) -> Transcriber:
        """The session's transcriber; one this process never saw start resumes where
        the archive's words end (a restarted recognizer)."""
        if session not in self.transcribers:
            start = committed_frames(self.home, session, rate) if self.home else 0
            if channels is None:
                channels = _channels_on_disk(self.home.recordings / session)
            log.info("%s: resuming recognition at %.1f s", session, start / rate)
            self.transcribers[session] = self._transcriber(session, rate, channels, start)
        return self.transcribers[session]

    def _transcriber(self, session: str, rate: int, channels: int, start: int) -> Transcriber:
        on_partial = None
        if self.status is not None and self.partials:
            on_partial = functools.partial(_guess, self.status, session)
        disk = SessionOnDisk(self.home.recordings, session, rate) if self.home else None
        return Transcriber(
            self.engine, session, rate, channels, on_partial=on_partial, start=start, disk=disk
        )

    def _send(self, utterances: list[Utterance], *, reindex: bool = False) -> None:
        for u in utterances:
            self.index_q.put(dataclasses.replace(u, reindex=True) if reindex else u)


def committed_frames(home: Home, session: str, rate: int) -> int:
    """Where the archive's words for a session end, in session frames (0 if none, or if a
    shared archive cannot be reached: the session is recognized again from its start,
    and the indexer drops what it has already)."""
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session as DbSession

    from . import schema
    from .database import db_errors, open_database
    from .errors import ArchiveUnreachableError

    engine = open_database(home)
    try:
        with db_errors(engine), DbSession(engine) as db:
            end = db.scalar(
                select(func.max(schema.Utterance.end))
                .join(schema.Utterance.session)
                .where(schema.Session.key == session, schema.in_current_transcript())
            )
    except ArchiveUnreachableError as exc:
        log.warning("%s; recognizing session %s again from its start", exc, session)
        end = None
    finally:
        engine.dispose()
    return round((end or 0.0) * rate)


def _channels_on_disk(folder: Path) -> int:
    import soundfile as sf

    for f in sorted(folder.glob("*.wav*")):
        return sf.info(str(f)).channels
    return 1


def _guess(status, session: str, text: str) -> None:
    status(Partial(session, text))
