"""Hearing a moment again: read a stretch of a session across its segments.

A session's audio is a row of segment files; a moment may straddle two.
:func:`read_span` stitches the frames of every segment that overlaps the
stretch (silence where a segment is missing from the row, an error where
its file is gone), and :func:`write_clip` / :func:`play` use it. A segment
whose file is not here but that has a copy in object storage is read from
that copy, through ``fetch`` (see :mod:`pipeline.objectstore`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

from . import schema
from .errors import ReplayError
from .segment_file import read_frames

DEFAULT_PADDING_SECONDS = 1.5


def frame_span(session: schema.Session, start: float, end: float) -> tuple[int, int]:
    """Seconds [start, end) of a session as frames [first, last), within the session."""
    first = max(0, round(start * session.rate))
    last = max(first, round(end * session.rate))
    if session.frames is not None:
        last = max(first, min(last, session.frames))
    return first, last


def overlapping(session: schema.Session, start: float, end: float) -> list[schema.Segment]:
    """The segments holding some of seconds [start, end) of a session."""
    first, last = frame_span(session, start, end)
    return [s for s in session.segments if max(first, s.offset) < min(last, s.offset + s.frames)]


def read_span(
    recordings: Path,
    session: schema.Session,
    start: float,
    end: float,
    fetch: Callable[[str], Path] | None = None,
) -> np.ndarray:
    """Frames [start, end) seconds of a session as int16 (frames × channels);
    ``fetch`` gives a local file for a segment's copy (its ``remote`` URL), for those
    whose own file is not here."""
    first, last = frame_span(session, start, end)
    out = np.zeros((last - first, session.channels), dtype=np.int16)
    for seg in overlapping(session, start, end):
        lo, hi = max(first, seg.offset), min(last, seg.offset + seg.frames)
        path = recordings / seg.path
        gone = seg.deleted_at is not None or not path.exists()
        if gone and seg.remote is not None and fetch is not None:
            path = fetch(seg.remote)
        elif seg.deleted_at is not None:
            raise ReplayError(
                f"the audio of this moment was deleted on {seg.deleted_at:%Y-%m-%d %H:%M} to keep "
                "the archive under its disk budget; its words are kept (`pipeline search`)"
            )
        try:
            data = read_frames(path, lo - seg.offset, hi - lo, session.rate)
        except (sf.LibsndfileError, OSError) as exc:
            raise ReplayError(
                f"the audio file {path} is missing or unreadable ({exc}); "
                "this moment's audio cannot be played"
            ) from exc
        out[lo - first : lo - first + len(data)] = data
    return out


def write_clip(frames: np.ndarray, rate: int, out: Path) -> Path:
    """Write frames to ``out``; the format follows the extension (.wav, .flac, .ogg)."""
    out = Path(out).expanduser()
    fmt = sf.check_format
    ext = out.suffix.lstrip(".").upper()
    if not ext or not fmt(ext):
        raise ReplayError(f"cannot tell the audio format of {out}; end it in .wav, .flac or .ogg")
    if out.is_dir():
        raise ReplayError(f"{out} is a folder; give a file name such as {out}/moment.wav")
    try:
        sf.write(out, frames, rate, format=ext)
    except (sf.LibsndfileError, OSError) as exc:
        raise ReplayError(
            f"cannot write {out} ({exc}); check the folder exists and is writable"
        ) from exc
    return out


def play(frames: np.ndarray, rate: int) -> None:
    """Play frames on the default output device and wait until they are done."""
    try:
        import sounddevice as sd  # OSError when libportaudio is missing
    except OSError as exc:
        raise _cannot_play(exc) from exc
    try:
        sd.play(frames, rate)
        sd.wait()
    except (OSError, sd.PortAudioError) as exc:  # no sound server, no output device
        raise _cannot_play(exc) from exc


def _cannot_play(exc: Exception) -> ReplayError:
    return ReplayError(
        f"cannot play audio here ({exc}); save the moment with `pipeline clip ID -o FILE.wav`"
    )
