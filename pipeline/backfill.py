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

import numpy as np
import soundfile as sf

log = logging.getLogger(__name__)

PART_SUFFIX = ".part"
READ_FRAMES = 1 << 15


class SessionOnDisk:
    """One session's segment files, placed on the session's timeline."""

    def __init__(self, recordings: Path, session: str) -> None:
        self.recordings = recordings
        self.folder = recordings / session

    def read(self, start: int, end: int, anchor: tuple[str, int]) -> Iterator[np.ndarray]:
        """Frames [start, end) in order; silence for any part no file holds (deleted)."""
        position = start
        for path, offset, frames in self._placed(anchor):
            lo, hi = max(position, offset), min(end, offset + frames)
            if lo >= hi:
                continue
            if lo > position:
                yield from _silence(lo - position, self._channels(path))
            yield from _frames(path, lo - offset, hi - lo)
            position = hi
        if position < end:
            log.info("no audio on disk for frames %d-%d of %s", position, end, self.folder.name)

    def _placed(self, anchor: tuple[str, int]) -> list[tuple[Path, int, int]]:
        """(file, session offset, frames) for every segment, placed from the anchor."""
        files = sorted(self.folder.glob("*.wav*"), key=lambda p: p.name.removesuffix(PART_SUFFIX))
        names = [f.name.removesuffix(PART_SUFFIX) for f in files]
        anchor_name = Path(anchor[0]).name
        if anchor_name not in names:  # no anchor yet: the first file starts the session
            anchor_name, anchor = names[0] if names else "", ("", 0)
        if not names:
            return []
        i = names.index(anchor_name)
        lengths = [_length(f) for f in files]
        offsets = [0] * len(files)
        offsets[i] = anchor[1]
        for j in range(i + 1, len(files)):
            offsets[j] = offsets[j - 1] + lengths[j - 1]
        for j in range(i - 1, -1, -1):
            offsets[j] = offsets[j + 1] - lengths[j]
        return list(zip(files, offsets, lengths, strict=True))

    @staticmethod
    def _channels(path: Path) -> int:
        return sf.info(str(path)).channels


def _length(path: Path) -> int:
    try:
        return sf.info(str(path)).frames
    except (sf.LibsndfileError, RuntimeError, OSError):
        return 0


def _frames(path: Path, skip: int, count: int) -> Iterator[np.ndarray]:
    if not path.exists() and path.name.endswith(PART_SUFFIX):  # finished in the meantime
        path = path.with_name(path.name.removesuffix(PART_SUFFIX))
    with sf.SoundFile(path) as f:
        f.seek(skip)
        while count > 0:
            data = f.read(min(READ_FRAMES, count), dtype="int16", always_2d=True)
            if not len(data):
                return
            count -= len(data)
            yield data


def _silence(frames: int, channels: int) -> Iterator[np.ndarray]:
    while frames > 0:
        n = min(READ_FRAMES, frames)
        frames -= n
        yield np.zeros((n, channels), dtype=np.int16)
