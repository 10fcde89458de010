"""Capture: read a source, write rotating WAV segments, publish the frames.

A *source* yields blocks of interleaved int16 frames. :func:`record_session`
is shared by every source: it names the session, writes the frames into
segment files under ``recordings/<session>/`` (``*.wav.part`` while open,
renamed when closed, the file name carrying the segment's UTC start), and
publishes each block on the audio queue with its session-absolute offset.
Here the source is a file (anything libsndfile decodes); live sources plug
into the same function.
"""

from __future__ import annotations

import logging
import os
import queue
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import soundfile as sf

from .errors import CaptureError, SourceFileError
from .messages import (
    STOP,
    Audio,
    SegmentClosed,
    SessionEnded,
    SessionStarted,
    SourceFailed,
)
from .process import become_child

log = logging.getLogger(__name__)

PUT_POLL_SECONDS = 0.2
CHUNK_SECONDS = 0.5  # frames per Audio message: small enough for latency, big enough for IPC
PART_SUFFIX = ".part"


# --- sources ------------------------------------------------------------------


@dataclass
class FileSource:
    """An audio file decoded by libsndfile (WAV, FLAC, OGG/Vorbis, …) at any rate."""

    path: Path
    rate: int
    channels: int
    frames: int
    started_at: datetime
    kind: str = "file"

    @property
    def name(self) -> str:
        return str(self.path)

    def blocks(self, frames_per_block: int) -> Iterator[np.ndarray]:
        try:
            with sf.SoundFile(self.path) as f:
                yield from f.blocks(frames_per_block, dtype="int16", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, OSError) as exc:
            raise SourceFileError(
                f"{self.path}: unreadable after some audio ({exc}); what was read is kept"
            ) from exc


def open_file_source(path: str | Path, *, realtime: bool = False) -> FileSource:
    """Check a file is audio and describe it; every bad input is a SourceFileError.

    A file's session is dated so that it *ends* at the file's modification
    time (when a recorder last wrote it); with ``realtime`` it starts now,
    exactly as a live source would.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise SourceFileError(f"{p}: no such file; check the path")
    if p.is_dir():
        raise SourceFileError(f"{p} is a folder; give the audio files in it (e.g. {p}/*.wav)")
    try:
        size = p.stat().st_size
        if size == 0:
            raise SourceFileError(f"{p} is empty (0 bytes); nothing to ingest")
        info = sf.info(str(p))
    except sf.LibsndfileError as exc:
        raise SourceFileError(
            f"{p} is not audio that pipeline can read (WAV, FLAC, OGG, …): {exc.error_string}"
        ) from exc
    except PermissionError as exc:
        raise SourceFileError(f"{p}: permission denied; make it readable") from exc
    except OSError as exc:
        raise SourceFileError(f"{p}: cannot read it ({exc.strerror})") from exc
    if info.frames <= 0:
        raise SourceFileError(f"{p} holds no audio frames; nothing to ingest")
    duration = info.frames / info.samplerate
    if realtime:
        started = datetime.now(UTC)
    else:
        started = datetime.fromtimestamp(p.stat().st_mtime, UTC) - timedelta(seconds=duration)
    return FileSource(p.resolve(), info.samplerate, info.channels, info.frames, started)


# --- segments -------------------------------------------------------------------


def session_key(started_at: datetime) -> str:
    """A readable, sortable, unique session name: ``20261125T074512Z-3fa2c1``."""
    return f"{started_at:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def segment_name(started_at: datetime) -> str:
    return f"{started_at:%Y%m%dT%H%M%S}.{started_at.microsecond // 1000:03d}Z.wav"


class SegmentWriter:
    """Writes a session's frames into WAV files of ``segment_frames`` each.

    Files are written as ``*.wav.part`` and renamed when complete, so a
    reader never mistakes a file being written for a finished one;
    ``on_close`` hears about every finished segment.
    """

    def __init__(
        self,
        recordings: Path,
        session: SessionStarted,
        segment_frames: int,
        on_close: Callable[[SegmentClosed], None],
    ) -> None:
        self.folder = recordings / session.key
        self.recordings = recordings
        self.session = session
        self.segment_frames = segment_frames
        self.on_close = on_close
        self._file: sf.SoundFile | None = None
        self._path: Path | None = None
        self._offset = 0  # session frame where the open segment starts
        self._written = 0  # frames in the open segment

    def write(self, frames: np.ndarray, offset: int) -> None:
        """Append frames starting at session frame ``offset``, rotating at segment ends."""
        while len(frames):
            if self._file is None:
                self._open(offset)
            room = self.segment_frames - self._written
            part, frames = frames[:room], frames[room:]
            self._file.write(part)
            self._written += len(part)
            offset += len(part)
            if self._written >= self.segment_frames:
                self.close()

    def close(self) -> None:
        """Finish the open segment (if any): flush, fsync, rename, report."""
        if self._file is None:
            return
        f, part_path = self._file, self._path
        self._file = None
        f.close()
        _fsync(part_path)
        final = part_path.with_name(part_path.name.removesuffix(PART_SUFFIX))
        os.replace(part_path, final)
        self.on_close(
            SegmentClosed(
                session=self.session.key,
                path=str(final.relative_to(self.recordings)),
                offset=self._offset,
                frames=self._written,
                rate=self.session.rate,
                channels=self.session.channels,
                started_at=self._started_at(self._offset),
            )
        )

    def _started_at(self, offset: int) -> datetime:
        return self.session.started_at + timedelta(seconds=offset / self.session.rate)

    def _open(self, offset: int) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._offset, self._written = offset, 0
        self._path = self.folder / (segment_name(self._started_at(offset)) + PART_SUFFIX)
        try:
            self._file = sf.SoundFile(
                self._path,
                "w",
                samplerate=self.session.rate,
                channels=self.session.channels,
                subtype="PCM_16",
                format="WAV",
            )
        except (sf.LibsndfileError, OSError) as exc:
            raise CaptureError(f"cannot write {self._path} ({exc}); check the disk") from exc


def _fsync(path: Path) -> None:
    """Make a finished segment durable before it is announced as finished."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- the process ------------------------------------------------------------------


def record_session(
    source: FileSource,
    recordings: Path,
    audio_q,
    index_q,
    *,
    segment_seconds: float,
    realtime: bool = False,
    stop=None,
) -> str:
    """Capture one source to the end (or until ``stop`` is set); returns the session key."""
    started = SessionStarted(
        key=session_key(source.started_at),
        source_kind=source.kind,
        source=source.name,
        started_at=source.started_at,
        rate=source.rate,
        channels=source.channels,
    )
    index_q.put(started)
    audio_q.put(started)
    writer = SegmentWriter(recordings, started, round(segment_seconds * source.rate), index_q.put)
    offset = 0
    clock = time.monotonic()
    try:
        for block in source.blocks(max(1, round(CHUNK_SECONDS * source.rate))):
            writer.write(block, offset)  # on disk first: whatever happens next, it is kept
            audio = Audio(started.key, offset, source.rate, source.channels, block.tobytes())
            if not put_unless_stopped(audio_q, audio, stop):
                break
            offset += len(block)
            if realtime:  # pace at 1x: a file that behaves exactly like live audio
                ahead = clock + offset / source.rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            if stop is not None and stop.is_set():
                break
    except CaptureError as exc:
        index_q.put(SourceFailed(source.name, str(exc), started.key))
    finally:
        writer.close()
        put_unless_stopped(audio_q, SessionEnded(started.key, offset, source.rate), stop)
    return started.key


def put_unless_stopped(q, message, stop) -> bool:
    """Put on a bounded queue, waiting while it is full, but give up once ``stop`` is set.

    A full queue means the recognizer is behind; the frames are on disk
    already, so after a stop nothing is lost by not queueing them.
    """
    while True:
        try:
            q.put(message, timeout=PUT_POLL_SECONDS)
            return True
        except queue.Full:
            if stop is not None and stop.is_set():
                return False


def run_capture(
    paths: list[str],
    recordings: str,
    audio_q,
    index_q,
    stop,
    *,
    segment_seconds: float,
    realtime: bool = False,
) -> None:
    """Process body: capture each file in turn, then send STOP down both queues."""
    become_child("pipe-capture")
    try:
        for path in paths:
            if stop.is_set():
                break
            try:
                source = open_file_source(path, realtime=realtime)
            except CaptureError as exc:
                index_q.put(SourceFailed(str(path), str(exc)))
                continue
            record_session(
                source,
                Path(recordings),
                audio_q,
                index_q,
                segment_seconds=segment_seconds,
                realtime=realtime,
                stop=stop,
            )
    finally:
        put_unless_stopped(audio_q, STOP, stop)
        index_q.put(STOP)
