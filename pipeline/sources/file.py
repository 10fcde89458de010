"""The file source: anything libsndfile decodes (WAV, FLAC, OGG/Vorbis, …) at any rate."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import soundfile as sf

from ..errors import SourceFileError


@dataclass
class FileSource:
    """An audio file; with ``realtime`` it is paced at 1×, exactly like live audio."""

    path: Path
    rate: int
    channels: int
    frames: int
    started_at: datetime
    realtime: bool = False
    kind: str = "file"
    start: int = 0  # the first frame to read: a restarted capture carries on from here

    @property
    def name(self) -> str:
        return str(self.path)

    def blocks(self, frames_per_block: int) -> Iterator[np.ndarray]:
        clock, done = time.monotonic(), 0
        try:
            with sf.SoundFile(self.path) as f:
                f.seek(min(self.start, self.frames))
                for block in f.blocks(frames_per_block, dtype="int16", always_2d=True):
                    yield block
                    done += len(block)
                    if self.realtime:
                        ahead = clock + done / self.rate - time.monotonic()
                        if ahead > 0:
                            time.sleep(ahead)
        except (sf.LibsndfileError, RuntimeError, OSError) as exc:
            raise SourceFileError(
                f"{self.path}: unreadable after some audio ({exc}); what was read is kept"
            ) from exc

    def seek(self, frame: int) -> None:
        """Start reading at ``frame`` (before :meth:`blocks`)."""
        self.start = frame

    def close(self) -> None:
        pass


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
    return FileSource(
        p.resolve(), info.samplerate, info.channels, info.frames, started, realtime=realtime
    )
