"""Reading a session's audio back from its segment files, for a recognizer that missed it.

Capture never waits for the recognizer: when the audio queue is full it
skips the message (the frames are on disk already), and a restarted
recognizer starts with nothing in hand. Either way the recognizer sees a
jump in offsets and reads the missing stretch here. Segments of a session
are contiguous, so from one file whose session offset is known (the
*anchor*, which every Audio message carries) the offsets of the others
follow from their lengths; a file still being written (``*.wav.part``) is
readable because capture keeps its header current.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf

from .segment_file import frames_of, read_frames

if TYPE_CHECKING:
    from .config import Home

log = logging.getLogger(__name__)

PART_SUFFIX = ".part"
SUFFIXES = (".wav", ".flac", ".opus")  # as recorded, and as compacted
READ_FRAMES = 1 << 15


class SessionOnDisk:
    """One session's segment files, placed on the session's timeline."""

    def __init__(self, recordings: Path, session: str, rate: int | None = None) -> None:
        self.recordings = recordings
        self.folder = recordings / session
        self.rate = rate  # the session's: a compacted file may be at another

    def read(self, start: int, end: int, anchor: tuple[str, int]) -> Iterator[np.ndarray]:
        """Frames [start, end) in order; silence for any part no file holds (deleted)."""
        position = start
        for path, offset, frames in self.placed(anchor):
            lo, hi = max(position, offset), min(end, offset + frames)
            if lo >= hi:
                continue
            if lo > position:
                yield from _silence(lo - position, self._channels(path))
            yield from _frames(path, lo - offset, hi - lo, self.rate)
            position = hi
        if position < end:
            log.info("no audio on disk for frames %d-%d of %s", position, end, self.folder.name)

    def placed(self, anchor: tuple[str, int] | None) -> list[tuple[Path, int, int]]:
        """(file, session offset, frames) for every segment, placed from the anchor.

        Without an anchor the first file starts the session (nothing deleted yet).
        """
        files = segment_files(self.folder)
        stems = [_stem(f) for f in files]
        anchor_stem = _stem(Path(anchor[0])) if anchor else ""
        if anchor_stem not in stems:  # no anchor yet: the first file starts the session
            anchor_stem, anchor = stems[0] if stems else "", ("", 0)
        if not stems:
            return []
        i = stems.index(anchor_stem)
        lengths = [_length(f, self.rate) for f in files]
        offsets = [0] * len(files)
        offsets[i] = anchor[1]
        for j in range(i + 1, len(files)):
            offsets[j] = offsets[j - 1] + lengths[j - 1]
        for j in range(i - 1, -1, -1):
            offsets[j] = offsets[j + 1] - lengths[j]
        return list(zip(files, offsets, lengths, strict=True))

    def recorded_until(self, anchor: tuple[str, int]) -> int:
        """The session frame capture has written up to: how far a recognizer could read."""
        files = segment_files(self.folder)
        stem = _stem(Path(anchor[0]))
        later = [f for f in files if _stem(f) >= stem]
        if not later or _stem(later[0]) != stem:
            return anchor[1]
        return anchor[1] + sum(_length(f, self.rate) for f in later)

    @staticmethod
    def _channels(path: Path) -> int:
        return sf.info(str(path)).channels


def segment_files(folder: Path) -> list[Path]:
    """A session folder's segment files (any format, finished or open), in time order."""
    files = [f for f in folder.glob("*Z.*") if f.name.removesuffix(PART_SUFFIX).endswith(SUFFIXES)]
    by_stem: dict[str, Path] = {}
    for f in sorted(files):  # a compaction cut short leaves two files of one segment
        by_stem.setdefault(_stem(f), f)
    return [by_stem[stem] for stem in sorted(by_stem)]


def _stem(path: Path) -> str:
    """A segment's name without format or ``.part``: its start time."""
    return path.name.removesuffix(PART_SUFFIX).rsplit(".", 1)[0]


def known_anchor(home: Home, session: str) -> tuple[str, int] | None:
    """The archive's newest segment of a session: (path, session offset), or None (also
    when a shared archive cannot be reached: the files on disk are placed by themselves)."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session as DbSession

    from . import schema
    from .database import db_errors, open_database
    from .errors import ArchiveUnreachableError

    if not home.shared and not home.db_path.exists():
        return None
    engine = open_database(home)
    try:
        with db_errors(engine), DbSession(engine) as db:
            row = db.execute(
                select(schema.Segment.path, schema.Segment.offset)
                .join(schema.Segment.session)
                .where(schema.Session.key == session)
                .order_by(schema.Segment.offset.desc())
                .limit(1)
            ).first()
    except ArchiveUnreachableError as exc:
        log.warning("%s; placing session %s's segments by their files", exc, session)
        return None
    finally:
        engine.dispose()
    return None if row is None else (row.path, row.offset)


def _length(path: Path, rate: int | None) -> int:
    try:
        return frames_of(path, rate)
    except (sf.LibsndfileError, RuntimeError, OSError):
        return 0


def _frames(path: Path, skip: int, count: int, rate: int | None) -> Iterator[np.ndarray]:
    while count > 0:
        try:
            data = read_frames(path, skip, min(READ_FRAMES, count), rate)
        except (sf.LibsndfileError, OSError):
            if not path.name.endswith(PART_SUFFIX):
                raise
            # capture finished the file (renamed it) since it was listed: read it there
            path = path.with_name(path.name.removesuffix(PART_SUFFIX))
            continue
        if not len(data):
            return
        count -= len(data)
        skip += len(data)
        yield data


def _silence(frames: int, channels: int) -> Iterator[np.ndarray]:
    while frames > 0:
        n = min(READ_FRAMES, frames)
        frames -= n
        yield np.zeros((n, channels), dtype=np.int16)
