"""The messages that travel between pipeline's processes.

Small frozen dataclasses, pickled through ``multiprocessing`` queues::

    capture ──Audio──▶ recognizer ──Utterance──▶ indexer
       └──SessionStarted / SegmentClosed / SessionEnded──▶ indexer

Every stage forwards a :class:`Stop` naming itself when its input ends, so whatever was in
flight is finished before the processes exit. Times inside a session are
*session-absolute*: sample offsets (``offset``) counted at the source's rate
from the session's first frame, or seconds from that frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

TIMELINE_BREAKS = ("sleep", "clock")  # session events after which a new session begins


@dataclass(frozen=True)
class Stop:
    """The end of a producer's stream; ``sender`` names who sent it."""

    sender: str = ""


@dataclass(frozen=True)
class SessionStarted:
    """A source began: the session's identity and audio format."""

    key: str
    source_kind: str  # "file", later "system", "mic"
    source: str  # path or device name
    started_at: datetime  # UTC wall-clock time of frame 0
    rate: int
    channels: int


@dataclass(frozen=True)
class Capturing:
    """Capture's progress, for the supervisor: which source it is on, in which session.

    If capture dies, the supervisor starts a new one at the same source that
    resumes the same session (``session`` None: between sessions).
    """

    source_index: int
    session: SessionStarted | None
    sender: str = "capture"  # which capture (one per lane with --jobs)


@dataclass(frozen=True)
class Audio:
    """Raw interleaved int16 frames at the source's rate, starting at ``offset``.

    ``segment``/``segment_offset`` say where on disk the first frame is (the
    segment file, relative to the recordings folder, and the session frame
    that file starts at), so a recognizer that missed audio can read it back.
    """

    session: str
    offset: int  # session-absolute frame index of the first frame
    rate: int
    channels: int
    pcm: bytes
    segment: str = ""
    segment_offset: int = 0

    @property
    def frames(self) -> int:
        return len(self.pcm) // (2 * self.channels)


@dataclass(frozen=True)
class SegmentClosed:
    """A finished audio segment file, renamed from ``*.wav.part``."""

    session: str
    path: str  # relative to the recordings folder
    offset: int  # session-absolute frame index of its first frame
    frames: int
    rate: int
    channels: int
    started_at: datetime


@dataclass(frozen=True)
class SessionEnded:
    """A source ended normally after ``frames`` frames."""

    session: str
    frames: int
    rate: int


@dataclass(frozen=True)
class SourceFailed:
    """A source could not be read; ``message`` is the one-line reason."""

    source: str
    message: str
    session: str | None = None


@dataclass(frozen=True)
class Word:
    """One recognized word; times in seconds, session-absolute."""

    text: str
    start: float
    end: float
    confidence: float


@dataclass(frozen=True)
class Alternative:
    """A word the recognizer weighed for a stretch of an utterance: a node of its word graph.

    The words it output are one path through the graph; the others are what
    it also heard, which ``search --fuzzy`` searches too. ``weight`` is the
    share of the recognizer's belief that went to this word here (a posterior,
    0..1); ``follows`` are the indexes, in the utterance's alternatives, of
    the words that may come just before it (none: it may begin a path).
    Times are seconds, session-absolute like a :class:`Word`'s.
    """

    text: str
    start: float
    end: float
    weight: float
    follows: tuple[int, ...] = ()


@dataclass(frozen=True)
class Utterance:
    """One stretch of speech between two pauses, with its words."""

    session: str
    start: float
    end: float
    words: tuple[Word, ...]
    engine: str
    # False: the session's own transcript, as it is recorded or ingested;
    # True: a new transcript by ``engine``, made by `pipeline reindex`
    reindex: bool = False
    # the recognizer's word graph, its words among them (engines that give none: empty)
    alternatives: tuple[Alternative, ...] = ()

    @property
    def text(self) -> str:
        return " ".join(w.text for w in self.words)


@dataclass(frozen=True)
class Retranscribe:
    """Work for a recognizer: recognize a stored session again, from its files.

    ``runs`` are the stretches [start, end) of session frames whose audio is
    still on disk (the disk budget may have deleted some), and ``anchors`` a
    segment file for each with its session offset; ``start`` is where an
    interrupted reindex of the same model stopped. ``catch_up``: not a reindex
    but a piece of a live recognizer's backlog, whose words go to the
    session's own transcript.
    """

    session: str
    rate: int
    channels: int
    frames: int
    runs: tuple[tuple[int, int], ...]
    anchors: tuple[tuple[str, int], ...]
    start: int = 0
    catch_up: bool = False


@dataclass(frozen=True)
class Working:
    """A helper recognizer took a piece of backlog (``job``), or finished it (None).

    The supervisor keeps track, so a helper that dies mid-piece has its piece
    given out again.
    """

    sender: str
    pid: int  # which process: a restarted helper has the same name
    job: Retranscribe | None


@dataclass(frozen=True)
class HandedOff:
    """A recognizer that fell behind gave pieces of its backlog to the helpers (seconds)."""

    session: str
    pieces: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class TranscriptDone:
    """A reindex of a session is complete: its new transcript becomes the default.

    ``runs`` are the stretches it heard; the old transcript's words outside
    them (audio deleted before the reindex) are carried over.
    """

    session: str
    engine: str
    frames: int
    rate: int
    runs: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class SessionIndexed:
    """Sent by the indexer to the supervisor once a session is fully committed."""

    session: str
    session_id: int
    source: str
    seconds: float
    utterances: int
    words: int


@dataclass(frozen=True)
class ChildFailed:
    """A child process is about to exit because of an error it could not handle."""

    stage: str
    message: str
    error_type: str = "PipelineError"
    details: dict = field(default_factory=dict)


@dataclass(frozen=True)
class SessionEvent:
    """Something that happened to a live source: a gap, a device switch, an overflow."""

    session: str
    offset: int  # session frame where it happened
    kind: str  # "gap", "device_switch", "overflow", "device_lost"
    detail: str
    frames: int = 0  # for gaps: how many frames of silence stand in for lost audio


@dataclass(frozen=True)
class AudioDeleted:
    """The disk budget deleted a finished segment's file; its words are kept."""

    session: str
    path: str  # relative to the recordings folder
    bytes: int
    reason: str


# --- status for the live view (never needed for correctness; may be dropped) ----


@dataclass(frozen=True)
class Progress:
    """How far the recognizer has got in a session (seconds), about once a second."""

    session: str
    seconds: float


@dataclass(frozen=True)
class Level:
    """Input level of the latest audio, for the meter; dBFS."""

    session: str
    rms_db: float
    peak_db: float
    seconds: float  # session time captured so far
    device: str


@dataclass(frozen=True)
class Partial:
    """The recognizer's guess at the utterance still being spoken."""

    session: str
    text: str


@dataclass(frozen=True)
class Indexed:
    """A final utterance committed by the indexer (for the live view's last lines)."""

    session: str
    text: str
    start: float
    words: int


@dataclass(frozen=True)
class SegmentCompacted:
    """A segment re-encoded (see :mod:`pipeline.compact`): point its row at the new file.

    The indexer deletes the old file once the change is committed.
    """

    session: str
    old_path: str  # relative to the recordings folder
    new_path: str
    bytes_before: int
    bytes_after: int


@dataclass(frozen=True)
class SegmentUploaded:
    """A segment copied to object storage (see :mod:`pipeline.objectstore`): its row
    records where, so the audio can be read from there once the file is not at hand."""

    session: str
    path: str  # relative to the recordings folder, as the segment's row has it
    url: str  # s3://bucket/key


@dataclass(frozen=True)
class ArchiveState:
    """From the indexer: whether the shared archive takes its writes, or they are spooled
    (how many batches wait, why, since when); for the live view and `status`."""

    online: bool
    waiting: int
    reason: str
    since: datetime | None
