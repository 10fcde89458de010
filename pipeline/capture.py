"""Capture: read a source, write rotating WAV segments, publish the frames.

A *source* (:mod:`pipeline.sources`: a file, system audio, a microphone)
yields blocks of interleaved int16 frames. :func:`record_session` is shared
by every source: it names the session, writes the frames into segment files
under ``recordings/<session>/`` (``*.wav.part`` while open, renamed when
closed, the file name carrying the segment's UTC start), and publishes each
block on the audio queue with its session-absolute offset. Live sessions
rotate segments on wall-clock boundaries (a 300 s segment starts at :00,
:05, …), so a segment's name says where it sits in the day. Beside them,
``session.json`` says what the session is (its source, device, format and
the time of its first frame), so that ``pipeline repair`` can give it back
whole if the database never heard of it or was lost.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import os
import queue
import secrets
import shutil
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import soundfile as sf

from .backfill import PART_SUFFIX, SessionOnDisk, known_anchor
from .config import Home
from .errors import CaptureError
from .messages import (
    TIMELINE_BREAKS,
    Audio,
    Capturing,
    Level,
    SegmentClosed,
    SessionEnded,
    SessionEvent,
    SessionStarted,
    SourceFailed,
    Stop,
)
from .process import become_child, nonblocking
from .sources import Source, SourceEvent, SourceSpec

log = logging.getLogger(__name__)

PUT_POLL_SECONDS = 0.2
CHUNK_SECONDS = 0.5  # frames per Audio message: small enough for latency, big enough for IPC
LEVEL_UPDATES_PER_SECOND = 10
SYNC_SECONDS = 1.0  # a power cut loses at most this much of the open segment
RESERVE_BYTES = 50_000_000  # free space kept for the database and logs: capture stops first
CHECK_FREE_EVERY_BYTES = 1_000_000


# --- segments -------------------------------------------------------------------


def session_key(started_at: datetime) -> str:
    """A readable, sortable, unique session name: ``20261125T074512Z-3fa2c1``."""
    return f"{started_at:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def segment_name(started_at: datetime) -> str:
    return f"{started_at:%Y%m%dT%H%M%S}.{started_at.microsecond // 1000:03d}Z.wav"


SESSION_FILE = "session.json"  # in the session's folder, beside its segments


def write_session_file(folder: Path, session: SessionStarted) -> None:
    """What the session is, beside its audio (written once, whole or not at all)."""
    path = folder / SESSION_FILE
    if path.exists():
        return
    doc = {**session.__dict__, "started_at": session.started_at.isoformat()}
    tmp = path.with_name(path.name + PART_SUFFIX)
    tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_session_file(folder: Path) -> SessionStarted | None:
    """The session a folder's ``session.json`` describes; None if it has none or it is
    not one (from before there were such files, or damaged: the caller guesses)."""
    try:
        doc = json.loads((folder / SESSION_FILE).read_text(encoding="utf-8"))
        session = SessionStarted(**{**doc, "started_at": datetime.fromisoformat(doc["started_at"])})
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if session.key != folder.name or session.started_at.tzinfo is None:
        return None
    return session


class SegmentWriter:
    """Writes a session's frames into WAV files of ``segment_frames`` each.

    Files are written as ``*.wav.part`` and renamed when complete, so a
    reader never mistakes a file being written for a finished one;
    ``on_close`` hears about every finished segment. A crash must leave the
    open file readable: its WAV header is rewritten with every write and its
    data is fsynced every ``SYNC_SECONDS``, so a kill or a power cut loses at
    most that much audio and ``pipeline repair`` finishes the file.
    """

    def __init__(
        self,
        recordings: Path,
        session: SessionStarted,
        segment_frames: int,
        on_close: Callable[[SegmentClosed], None],
        *,
        align_to_clock: bool = False,
    ) -> None:
        self.folder = recordings / session.key
        self.recordings = recordings
        self.session = session
        self.segment_frames = segment_frames
        self.on_close = on_close
        self._file: sf.SoundFile | None = None
        self._path: Path | None = None
        self._fd: int | None = None  # for fsync of the open segment
        self._synced = 0.0
        self._offset = 0  # session frame where the open segment starts
        self._written = 0  # frames in the open segment
        self._end = 0  # session frame where the open segment must end
        self.reached = 0  # session frame after the last one safely written
        self._unchecked = 0  # bytes written since free space was last looked at
        # live sessions cut at wall-clock multiples of the segment length: with 300 s
        # segments, at :00, :05, :10 … whenever the session started
        seconds = segment_frames / session.rate
        into = session.started_at.timestamp() % seconds if align_to_clock else 0.0
        self._phase = round(into * session.rate)

    def write(self, frames: np.ndarray, offset: int) -> tuple[str, int]:
        """Append frames starting at session frame ``offset``, rotating at segment ends.

        Returns where the first frame went: the segment's final path (relative
        to the recordings folder) and the session frame that segment starts at.
        """
        if self._file is None:
            self._open(offset)
        anchor = (self._final_name(), self._offset)
        frames_in = frames
        while len(frames):
            if self._file is None:
                self._open(offset)
            room = self._end - offset
            part, frames = frames[:room], frames[room:]
            try:
                self._file.write(part)
            except (sf.LibsndfileError, OSError, AssertionError) as exc:  # short write
                raise self._failed(exc) from exc
            self._written += len(part)
            offset += len(part)
            self.reached = offset
            if offset >= self._end:
                self.close()
        if self._fd is not None and time.monotonic() - self._synced >= SYNC_SECONDS:
            try:
                os.fsync(self._fd)
            except OSError as exc:
                raise self._failed(exc) from exc
            self._synced = time.monotonic()
        self._unchecked += len(frames_in) * self.session.channels * 2
        if self._unchecked >= CHECK_FREE_EVERY_BYTES:
            self._unchecked = 0
            self._check_free_space()
        return anchor

    def _check_free_space(self) -> None:
        """Stop while the database and the logs can still write (a full disk would stop them)."""
        try:
            check_free_space(self.folder)
        except CaptureError:
            self.close()
            raise

    def _failed(self, exc: Exception) -> CaptureError:
        """A write failed (a full disk): finish the segment with what was written before it."""
        path, written = self._path, self._written
        f, fd = self._file, self._fd
        self._file = self._fd = None
        with contextlib.suppress(Exception):
            f.close()
        os.close(fd)
        try:  # the failed write may have left part of a block: cut the file to what counts
            fix_wav_header(path, frames=written)
            self._file_done(path)
        except (sf.LibsndfileError, OSError) as again:
            log.warning("cannot finish %s (%s); pipeline repair will", path, again)
        return CaptureError(_write_failed(path, exc))

    def _final_name(self) -> str:
        final = self._path.with_name(self._path.name.removesuffix(PART_SUFFIX))
        return str(final.relative_to(self.recordings))

    def close(self) -> None:
        """Finish the open segment (if any): flush, fsync, rename, report."""
        if self._file is None:
            return
        try:
            self._file.close()
            os.fsync(self._fd)
        except (sf.LibsndfileError, OSError, AssertionError) as exc:
            raise self._failed(exc) from exc
        os.close(self._fd)
        self._file = self._fd = None
        self._file_done(self._path)

    def _file_done(self, part_path: Path) -> None:
        """Rename a finished segment to its final name and report it."""
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
        s = self.segment_frames
        self._end = ((offset + self._phase) // s + 1) * s - self._phase
        self._path = self.folder / (segment_name(self._started_at(offset)) + PART_SUFFIX)
        try:
            write_session_file(self.folder, self.session)
            self._file = sf.SoundFile(
                self._path,
                "w",
                samplerate=self.session.rate,
                channels=self.session.channels,
                subtype="PCM_16",
                format="WAV",
            )
            self._fd = os.open(self._path, os.O_RDONLY)
        except (sf.LibsndfileError, OSError) as exc:
            raise CaptureError(_write_failed(self._path, exc)) from exc
        _update_header_on_every_write(self._file)
        self._synced = time.monotonic()


SFC_SET_UPDATE_HEADER_AUTO = 0x1061  # libsndfile's sf_command for a header kept current


def _update_header_on_every_write(f: sf.SoundFile) -> None:
    """Keep the WAV header's length current, so a crash leaves a readable file.

    soundfile has no public call for libsndfile's SFC_SET_UPDATE_HEADER_AUTO;
    without it, ``pipeline repair`` still recovers the length from the file size.
    """
    try:
        sf._snd.sf_command(f._file, SFC_SET_UPDATE_HEADER_AUTO, sf._ffi.NULL, 1)
    except AttributeError:  # a soundfile without these internals
        log.debug("cannot ask libsndfile to keep WAV headers current")


def check_free_space(folder: Path) -> None:
    """A CaptureError if the disk holding ``folder`` has less than RESERVE_BYTES free."""
    free = shutil.disk_usage(folder).free
    if free < RESERVE_BYTES:
        raise CaptureError(
            f"the disk holding {folder} is nearly full ({free / 1e6:.0f} MB free); "
            "recording stopped; free space and start again (what was recorded is kept)"
        )


def fix_wav_header(path: Path, *, dry_run: bool = False, frames: int | None = None) -> int:
    """Make a WAV whose writer died say how long it is; returns its frames.

    The length is what the data on disk holds (whole frames), or ``frames``
    if given, in which case the file is cut to it. The header is patched in
    place and the file only ever shrinks, so this works on a full disk.
    """
    with sf.SoundFile(path) as f:
        channels, header_frames = f.channels, f.frames
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    data_at = head.find(b"data", 12)
    start = data_at + 8  # the samples follow the "data" chunk's header
    on_disk = (path.stat().st_size - start) // (2 * channels)
    length = on_disk if frames is None else min(frames, on_disk)
    if dry_run or (length == header_frames and frames is None):
        return length
    size = length * 2 * channels
    with open(path, "r+b") as f:
        f.truncate(start + size)
        f.seek(4)
        f.write((start + size - 8).to_bytes(4, "little"))  # the RIFF chunk's size
        f.seek(data_at + 4)
        f.write(size.to_bytes(4, "little"))  # the data chunk's size
        f.flush()
        os.fsync(f.fileno())
    return length


def finish_session_files(
    recordings: Path, started: SessionStarted, send, db: str | None = None
) -> int:
    """Finish what a dead capture left of a session; returns the session's last frame on disk.

    Its open ``*.wav.part`` is finished (header fixed, renamed, an empty one
    removed), and the last two segments are announced to the indexer, which
    ignores one it knows: a process killed just after closing a segment never
    sent its ``SegmentClosed``.
    """
    for part in sorted((recordings / started.key).glob(f"*{PART_SUFFIX}")):
        final = part.with_name(part.name.removesuffix(PART_SUFFIX))
        if fix_wav_header(part) == 0:
            part.unlink()
        else:
            os.replace(part, final)
    disk = SessionOnDisk(recordings, started.key, started.rate)
    placed = disk.placed(known_anchor(Home(recordings.parent, db), started.key))
    for path, offset, frames in placed[-2:]:
        send(
            SegmentClosed(
                session=started.key,
                path=str(path.relative_to(recordings)),
                offset=offset,
                frames=frames,
                rate=started.rate,
                channels=started.channels,
                started_at=started.started_at + timedelta(seconds=offset / started.rate),
            )
        )
    return placed[-1][1] + placed[-1][2] if placed else 0


def _write_failed(path: Path | None, exc: Exception) -> str:
    if _disk_full(path, exc):
        return (
            f"the disk holding {path.parent if path else 'the recordings'} is full; "
            "recording stopped; free space and start again (what was recorded is kept)"
        )
    return f"cannot write {path} ({exc}); check the disk"


FULL_BELOW_BYTES = 1 << 20  # libsndfile reports a full disk as a bare "System error."


def _disk_full(path: Path | None, exc: Exception) -> bool:
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    try:
        return path is not None and shutil.disk_usage(path.parent).free < FULL_BELOW_BYTES
    except OSError:
        return False


# --- the process ------------------------------------------------------------------


def record_session(
    source: Source,
    recordings: Path,
    audio_q,
    index_q,
    *,
    segment_seconds: float,
    stop=None,
    max_seconds: float | None = None,
    status: Callable[[object], None] | None = None,
    resume: SessionStarted | None = None,
    on_session: Callable[[SessionStarted | None], None] | None = None,
    db: str | None = None,
) -> str:
    """Capture one source to its end, ``stop``, or ``max_seconds``; returns the last session key.

    A live source that reports the machine slept or the wall clock jumped
    (:data:`TIMELINE_BREAKS`) ends the session there and starts a new one,
    so every session stays one true, continuous timeline. ``resume``: carry on
    a session whose capture process died (see :func:`_Recording.resume`).
    """
    announce = on_session or (lambda session: None)
    options = dict(
        recordings=recordings,
        audio_q=audio_q,
        index_q=index_q,
        segment_seconds=segment_seconds,
        status=status,
        db=db,  # the archive, if not the home's own file: where a resumed session stands
    )
    if resume is None:
        rec = _Recording.begin(source, **options)
    else:
        rec = _Recording.resume(source, resume, **options)
    announce(rec.started)
    limit = None if max_seconds is None else round(max_seconds * source.rate)
    live = source.kind != "file" or getattr(source, "realtime", False)
    try:
        for item in source.blocks(max(1, round(CHUNK_SECONDS * source.rate))):
            if isinstance(item, SourceEvent) and item.kind in TIMELINE_BREAKS:
                done = rec.offset
                rec.end()
                rec = _Recording.begin(source, **options, first_event=item)
                announce(rec.started)
                limit = None if limit is None else max(0, limit - done)
                continue
            if isinstance(item, SourceEvent):
                index_q.put(_event(rec.started, rec.offset, item))
                continue
            block = item if limit is None else item[: limit - rec.offset]
            if not rec.write(block, wait=not live, stop=stop):
                break
            if (stop is not None and stop.is_set()) or (limit is not None and rec.offset >= limit):
                break
    except CaptureError as exc:
        index_q.put(SourceFailed(source.name, str(exc), rec.started.key))
    finally:
        source.close()
        rec.end()
        announce(None)
    return rec.started.key


class _Recording:
    """One session being captured: its segment files, its offset, its messages."""

    def __init__(self, source: Source, started: SessionStarted, offset: int, **options) -> None:
        self.source = source
        self.started = started
        self.offset = offset
        self.audio_q = options["audio_q"]
        self.index_q = options["index_q"]
        self.skipped = 0
        self.writer = SegmentWriter(
            options["recordings"],
            started,
            round(options["segment_seconds"] * source.rate),
            self.index_q.put,
            align_to_clock=source.kind != "file",
        )
        self.meter = _Meter(started, options["status"], lambda: source.name)

    @classmethod
    def begin(cls, source: Source, *, first_event: SourceEvent | None = None, **options):
        """A new session, announced to the indexer and the recognizer."""
        started = SessionStarted(
            key=session_key(source.started_at),
            source_kind=source.kind,
            source=source.name,
            started_at=source.started_at,
            rate=source.rate,
            channels=source.channels,
        )
        options["index_q"].put(started)
        options["audio_q"].put(started)
        if first_event is not None:
            options["index_q"].put(_event(started, 0, first_event))
        return cls(source, started, 0, **options)

    @classmethod
    def resume(cls, source: Source, started: SessionStarted, **options):
        """Carry on a session after its capture process died, in a new process.

        The dead process's open segment is finished and announced; a file
        source carries on from the last frame on disk, and a live one writes
        silence for the time nobody was recording (a "gap", reason "crash"),
        so the session's timeline stays true to the wall clock.
        """
        recordings = options["recordings"]
        end = finish_session_files(recordings, started, options["index_q"].put, options.get("db"))
        rec = cls(source, started, end, **options)
        if source.kind == "file":
            source.seek(end)
        else:
            # the new stream's first frame was heard when it opened: place it there
            opened = (source.started_at - started.started_at).total_seconds()
            missing = max(0, round(opened * started.rate) - end)
            step = started.rate
            for n in range(0, missing, step):
                rec.write(np.zeros((min(step, missing - n), started.channels), np.int16))
            rec.index_q.put(
                SessionEvent(started.key, end, "gap", "crash: capture was restarted", missing)
            )
        log.info("%s: capture resumed at %.1f s", started.key, rec.offset / started.rate)
        return rec

    def write(self, block: np.ndarray, *, wait: bool = False, stop=None) -> bool:
        """Disk first, then the recognizer; False if a stop came while waiting for room."""
        segment, segment_offset = self.writer.write(block, self.offset)
        audio = Audio(
            self.started.key,
            self.offset,
            self.started.rate,
            self.started.channels,
            block.tobytes(),
            segment,
            segment_offset,
        )
        self.offset += len(block)
        self.meter.update(block, self.offset)
        if not wait:  # never wait for the recognizer: what it misses, it reads back from disk
            self.skipped += 0 if put_now(self.audio_q, audio) else len(block)
            return True
        return put_unless_stopped(self.audio_q, audio, stop)

    def end(self) -> None:
        """Close the open segment and tell the recognizer the session is over."""
        if self.skipped:
            log.info(
                "the recognizer fell behind: %.1f s of audio left for it on disk",
                self.skipped / self.started.rate,
            )
        try:
            self.writer.close()
        except CaptureError as exc:
            self.index_q.put(SourceFailed(self.source.name, str(exc), self.started.key))
        self.offset = max(self.offset, self.writer.reached)  # a write that stopped the session
        self.audio_q.put(SessionEnded(self.started.key, self.offset, self.started.rate))


def _event(session: SessionStarted, offset: int, event: SourceEvent) -> SessionEvent:
    """A source event placed in the session: a gap's silence has already been written."""
    at = offset - event.frames
    log.info(
        "%s at %.1f s: %s (%d frames)", event.kind, at / session.rate, event.detail, event.frames
    )
    return SessionEvent(session.key, at, event.kind, event.detail, event.frames)


class _Meter:
    """Sends the input level to the live view, a few times a second at most."""

    def __init__(self, session: SessionStarted, status, device) -> None:
        self.session = session
        self.status = status
        self.device = device
        self.every = session.rate // LEVEL_UPDATES_PER_SECOND
        self.next_at = 0

    def update(self, block: np.ndarray, offset: int) -> None:
        if self.status is None or offset < self.next_at or not len(block):
            return
        self.next_at = offset + self.every
        x = block.astype(np.float32) / 32768.0
        rms = float(np.sqrt(np.mean(x * x)))
        peak = float(np.max(np.abs(x)))
        self.status(
            Level(self.session.key, _db(rms), _db(peak), offset / self.session.rate, self.device())
        )


def _db(x: float) -> float:
    return 20 * float(np.log10(max(x, 1e-5)))


def put_now(q, message) -> bool:
    """Put if there is room; a full queue means the recognizer is behind."""
    try:
        q.put_nowait(message)
        return True
    except queue.Full:
        return False


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
    specs: list[SourceSpec],
    recordings: str,
    audio_q,
    index_q,
    stop,
    *,
    segment_seconds: float,
    max_seconds: float | None = None,
    report_q=None,
    log_q=None,
    resume: Capturing | None = None,
    work_q=None,
    sender: str = "capture",
    db: str | None = None,
) -> None:
    """Process body: capture each source in turn, then send STOP down both queues.

    ``resume``: where a capture process that died was (the supervisor's
    record of it); this one starts at that source and carries on its session.
    ``work_q``: sources are shared out between parallel lanes: take the index
    of the next one from here instead of going through them all.
    """
    become_child(f"pipe-{sender}", log_q)
    status = None if report_q is None else nonblocking(report_q)
    first = resume.source_index if resume is not None else 0
    try:
        for index in _source_order(len(specs), resume, work_q):
            if stop.is_set():
                break
            spec = specs[index]
            try:
                source = spec.open()
            except CaptureError as exc:
                index_q.put(SourceFailed(spec.describe(), str(exc)))
                continue
            record_session(
                source,
                Path(recordings),
                audio_q,
                index_q,
                segment_seconds=segment_seconds,
                stop=stop,
                max_seconds=max_seconds,
                status=status,
                resume=resume.session if resume is not None and index == first else None,
                on_session=functools.partial(_announce, status, index, sender),
                db=db,
            )
    finally:
        audio_q.put(Stop(sender))
        index_q.put(Stop(sender))


WORK_WAIT_SECONDS = 1.0


def _source_order(count: int, resume: Capturing | None, work_q):
    """The indices of the sources to capture, in order."""
    first = resume.source_index if resume is not None else 0
    if work_q is None:
        yield from range(first, count)
        return
    if resume is not None and resume.session is not None:
        yield first  # the file this lane was in the middle of
    while True:
        try:
            yield work_q.get(timeout=WORK_WAIT_SECONDS)
        except queue.Empty:
            return


def _announce(status, index: int, sender: str, session: SessionStarted | None) -> None:
    """Tell the supervisor where capture is; a finished source means the next one."""
    if status is not None:
        status(Capturing(index if session is not None else index + 1, session, sender))
