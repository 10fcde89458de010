"""What every live source shares: a reader thread, a true clock, following the device.

Devices misbehave in ways that would bend a naive timeline: WASAPI loopback
delivers *no frames* while nothing plays, a device can vanish, the default
output can change under us, and the OS can drop frames. :class:`LiveSource`
keeps the stream's frame count equal to wall-clock time since it started:
when audio stops arriving it inserts silence (and says why, as a
:class:`~pipeline.sources.SourceEvent`), so a frame's session offset is when
it was heard. Reading happens on a thread, so the capture loop never
blocks on a device and always gets to check its stop flag.

A backend supplies only an :class:`Opener`: how to open a stream on a
device and what the default device is now.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Protocol

import numpy as np

from ..errors import CaptureError
from . import SourceEvent

log = logging.getLogger(__name__)

POLL_SECONDS = 0.1  # how often the loop looks at the clock when nothing arrives
HOLD_SECONDS = 0.25  # audio is passed on in blocks held at most this long
GAP_TOLERANCE_SECONDS = 0.5  # lateness allowed before silence stands in for audio
FOLLOW_POLL_SECONDS = 0.5  # how often the default device is checked
REOPEN_SECONDS = 1.0  # retry interval after a device is lost
MAX_FILL_SECONDS = 1.0  # silence is yielded in blocks of at most this
SLEEP_SECONDS = 5.0  # time asleep (or frozen) past which the timeline breaks
CLOCK_JUMP_SECONDS = 2.0  # a wall-clock step past which the timeline breaks
SETTLE_SECONDS = 1.0  # after a stall, how long the stream gets to deliver what it kept


class Stream(Protocol):
    """One open connection to a device."""

    device: str

    def read(self) -> bytes:
        """Interleaved int16 frames in the session's format; b"" once the device is gone."""
        ...

    def pending(self) -> bool:
        """Has the device delivered audio that has not been read yet?"""
        ...

    def close(self) -> None: ...


class Opener(Protocol):
    def open_stream(self, device: str) -> Stream: ...

    def default_device(self) -> str | None:
        """The device to follow now (cheap: called every FOLLOW_POLL_SECONDS)."""
        ...

    def close(self) -> None: ...


class LiveClock:
    """Counts frames against wall-clock time since the stream began."""

    def __init__(self, rate: int, tolerance: float = GAP_TOLERANCE_SECONDS) -> None:
        self.rate = rate
        self.tolerance = round(tolerance * rate)
        self.t0 = time.monotonic()
        self.produced = 0

    def expected(self, now: float | None = None) -> int:
        return round(((now if now is not None else time.monotonic()) - self.t0) * self.rate)

    def behind(self, held: int = 0, now: float | None = None) -> int:
        """Frames the stream is behind the clock, if more than the tolerance (else 0).

        Only meaningful when everything the device sent has been read: late
        audio still in a pipe is not lost audio. ``held``: frames read, not yet passed on.
        """
        lag = self.expected(now) - self.produced - held
        return lag if lag > self.tolerance else 0


def read_clocks() -> tuple[float, float, float]:
    """(monotonic, monotonic counting suspend, wall clock), in seconds.

    Linux's monotonic clock stops while the machine sleeps and CLOCK_BOOTTIME
    does not; elsewhere (Windows) the monotonic clock counts sleep already.
    """
    mono = time.monotonic()
    boot = time.clock_gettime(time.CLOCK_BOOTTIME) if hasattr(time, "CLOCK_BOOTTIME") else mono
    return mono, boot, time.time()


class TimelineWatch:
    """Notices the machine sleeping, the recorder being frozen, and the wall clock jumping.

    Each breaks the timeline: frames counted on the monotonic clock would no
    longer say when they were heard. Sleep shows as the suspend-counting clock
    running ahead of the monotonic one (Linux); a wall-clock step (NTP, the
    user) as the wall clock moving unlike the others. Where the monotonic
    clock counts sleep (Windows), or the process was stopped, sleep shows only
    as the capture loop not having run for a while: a *stall*, which
    :meth:`frozen` judges once the stream has had a moment to deliver what it
    buffered meanwhile (a sound server keeps a few seconds for a slow client).
    """

    def __init__(self, clocks=read_clocks) -> None:
        self.clocks = clocks
        self.last = clocks()
        self.stalled = 0.0  # seconds the loop did not run, as of the last check (if long)

    def check(self) -> SourceEvent | None:
        """The break since the last check, if the clocks alone show one."""
        now = self.clocks()
        d_mono, d_boot, d_wall = (b - a for a, b in zip(self.last, now, strict=True))
        self.last = now
        self.stalled = d_mono if d_mono > SLEEP_SECONDS else 0.0
        if d_boot - d_mono > SLEEP_SECONDS:
            return SourceEvent("sleep", f"the machine slept for {d_boot - d_mono:.0f} s")
        if abs(d_wall - d_boot) > CLOCK_JUMP_SECONDS:
            return SourceEvent("clock", f"the wall clock jumped {d_wall - d_boot:+.0f} s")
        return None

    def frozen(self, missing_seconds: float) -> SourceEvent | None:
        """After a stall, and the stream's moment to catch up: was it sleep?"""
        if self.stalled and missing_seconds > SLEEP_SECONDS:
            return SourceEvent(
                "sleep", f"the recorder was frozen or asleep for {self.stalled:.0f} s"
            )
        return None


_ENDED = object()


class LiveSource:
    """A live device as a :class:`~pipeline.sources.Source` with a true timeline."""

    def __init__(
        self,
        *,
        kind: str,
        opener: Opener,
        device: str | None,
        rate: int,
        channels: int,
    ) -> None:
        self.kind = kind
        self.opener = opener
        self.follow = device is None  # no --device: follow the default as it changes
        self.rate = rate
        self.channels = channels
        self._frame_bytes = 2 * channels
        self._q: queue.Queue = queue.Queue()
        self._stream: Stream | None = None
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()
        first = device if device is not None else opener.default_device()
        if first is None:
            raise CaptureError(f"there is no default {kind} device; pass --device")
        self._open(first, initial=True)
        self.name = first or "(none)"
        self.started_at = datetime.now(UTC)
        self.clock = LiveClock(rate)
        self.watch = TimelineWatch()

    # --- the stream and its reader thread ---

    def _open(self, device: str | None, *, initial: bool = False) -> bool:
        if device is None:
            return False
        try:
            stream = self.opener.open_stream(device)
        except Exception as exc:  # a device that vanished between listing and opening
            if initial:
                self.opener.close()
                raise CaptureError(f"cannot record from {device}: {exc}") from exc
            log.info("cannot open %s: %s", device, exc)
            return False
        self._stream = stream
        self._q = queue.Queue()
        self._thread = threading.Thread(
            target=self._read_loop, args=(stream, self._q), daemon=True, name=f"read {device}"
        )
        self._thread.start()
        return True

    def _read_loop(self, stream: Stream, q: queue.Queue) -> None:
        try:
            while not self._closed.is_set():
                data = stream.read()
                if not data:
                    break
                q.put(data)
        except Exception as exc:  # the device failed: the main loop reopens or follows
            log.info("reading %s failed: %s", stream.device, exc)
        q.put(_ENDED)

    def _drop_stream(self) -> None:
        if self._stream is not None:
            self._stream.close()
        self._stream = None

    # --- the Source interface ---

    def blocks(self, frames_per_block: int) -> Iterator[np.ndarray | SourceEvent]:
        """Blocks of about ``frames_per_block`` frames, held at most HOLD_SECONDS.

        Devices deliver every few tens of milliseconds; passing each delivery on
        would cost a file write and a queue message each, so they are gathered.
        """
        gap_reason, gap_frames = "", 0
        pending, held_since = b"", 0.0
        block_bytes = frames_per_block * self._frame_bytes
        last_follow = last_reopen = time.monotonic()
        while not self._closed.is_set():
            now = time.monotonic()
            if now - last_follow >= FOLLOW_POLL_SECONDS:
                last_follow = now
                yield from self._flush_all(pending)
                pending = b""
                yield from self._follow()
            if self._stream is None and now - last_reopen >= REOPEN_SECONDS:
                last_reopen = now
                target = self.opener.default_device() if self.follow else self.name
                if self._open(target):
                    yield SourceEvent("device_switch", f"reconnected to {target}")
            # with audio held, wait only until it is due; else until the next clock check
            wait = POLL_SECONDS if not pending else held_since + HOLD_SECONDS - time.monotonic()
            data = self._take(max(0.0, min(POLL_SECONDS, wait)))
            broken = self._timeline_broken(data, len(pending))
            if broken is not None:  # what was heard before it belongs to the old timeline
                yield from self._flush_all(pending + self._drain(data))
                pending, gap_reason, gap_frames = b"", "", 0
                self.started_at, self.clock = datetime.now(UTC), LiveClock(self.rate)
                log.info("%s: a new session starts", broken.detail)
                yield broken
                continue
            if data is _ENDED:
                yield from self._flush_all(pending)
                pending = b""
                yield SourceEvent("device_lost", f"{self.name} stopped delivering audio")
                self._drop_stream()
                continue
            if data:
                if gap_frames:  # audio again: the gap before it is complete
                    yield SourceEvent("gap", gap_reason, gap_frames)
                    gap_reason, gap_frames = "", 0
                if not pending:
                    held_since = time.monotonic()
                pending += data
            if len(pending) >= block_bytes or (
                pending and time.monotonic() - held_since >= HOLD_SECONDS
            ):
                block, pending = self._frames(pending)
                if len(block):
                    yield block
            if self._q.empty() and not (self._stream is not None and self._stream.pending()):
                # everything the device sent is read: if the clock is still ahead, the
                # device is silent (WASAPI loopback), gone, or dropped frames
                missing = self.clock.behind(len(pending) // self._frame_bytes)
                if missing:
                    yield from self._flush_all(pending)
                    pending = b""
                    if self._stream is None:
                        reason = "device lost"
                    elif not data:
                        reason = "no audio"
                    else:  # audio came, all of it is read, and still some is missing
                        reason = "overflow"
                    gap_reason = gap_reason or reason
                    gap_frames += missing
                    yield from self._silence(missing)
        yield from self._flush_all(pending)
        if gap_frames:
            yield SourceEvent("gap", gap_reason, gap_frames)

    def _take(self, wait: float) -> bytes | object | None:
        """What the reader thread has delivered, waiting up to ``wait`` seconds for it."""
        chunks = []
        try:
            chunks.append(self._q.get(timeout=wait) if wait > 0 else self._q.get_nowait())
            while True:
                chunks.append(self._q.get_nowait())
        except queue.Empty:
            pass
        if not chunks:
            return None
        if _ENDED in chunks:  # the device ended: what came before it still counts
            data = b"".join(c for c in chunks[: chunks.index(_ENDED)])
            if data:
                self._q.put(_ENDED)
                return data
            return _ENDED
        return b"".join(chunks)

    def _drain(self, data) -> bytes:
        """``data`` and all the reader thread has delivered (a device's end stays queued)."""
        more = self._take(0)
        if more is _ENDED or data is _ENDED:
            self._q.put(_ENDED)
        return b"".join(x for x in (data, more) if isinstance(x, bytes))

    def _timeline_broken(self, data, held_bytes: int) -> SourceEvent | None:
        """A sleep or clock jump since the last look; after a stall, first settle.

        A stalled loop may only have been slow: then the sound server kept the
        audio and delivers it now. What it delivers within SETTLE_SECONDS is
        added to ``data`` (kept in the queue); only if much is still missing was it sleep.
        """
        broken = self.watch.check()
        if broken is not None or not self.watch.stalled or data is _ENDED:
            return broken
        time.sleep(SETTLE_SECONDS)
        queued = sum(len(c) for c in list(self._q.queue) if c is not _ENDED)
        arrived = held_bytes + len(data or b"") + queued
        missing = self.clock.behind(arrived // self._frame_bytes) / self.rate
        return self.watch.frozen(missing)

    def _frames(self, pending: bytes) -> tuple[np.ndarray, bytes]:
        """The whole frames in ``pending`` (counted on the clock) and the leftover bytes."""
        usable = len(pending) // self._frame_bytes * self._frame_bytes
        block = np.frombuffer(pending[:usable], dtype=np.int16).reshape(-1, self.channels)
        self.clock.produced += len(block)
        return block, pending[usable:]

    def _flush_all(self, pending: bytes) -> Iterator[np.ndarray]:
        if pending:
            block, _ = self._frames(pending)
            if len(block):
                yield block

    def _follow(self) -> Iterator[SourceEvent]:
        if not self.follow:
            return
        default = self.opener.default_device()
        if default is None or default == self.name:
            return
        old = self.name
        self._drop_stream()
        self.name = default
        if self._open(default):
            yield SourceEvent("device_switch", f"{old} → {default}")

    def _silence(self, frames: int) -> Iterator[np.ndarray]:
        step = round(MAX_FILL_SECONDS * self.rate)
        while frames > 0:
            n = min(frames, step)
            frames -= n
            self.clock.produced += n
            yield np.zeros((n, self.channels), dtype=np.int16)

    def close(self) -> None:
        self._closed.set()
        self._drop_stream()
        self.opener.close()
