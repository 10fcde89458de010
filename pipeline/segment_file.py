"""Reading a segment file at its session's rate, whatever format it is in now.

Capture writes WAV at the source's rate. Compaction (:mod:`pipeline.compact`)
may re-encode a segment as FLAC, or as Opus, which has no 44.1 kHz: then the
file holds 48 kHz audio while the session, its offsets and the segment's row
count frames at 44.1 kHz. Everything that reads segments back (replay, the
recognizer catching up, repair) reads through here, in session frames.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

RESAMPLE_PAD = 64  # extra file frames read each side, so a resampled stretch has no edge


def frames_of(path: Path, rate: int | None = None) -> int:
    """A segment file's length in frames at ``rate`` (its own rate if None)."""
    info = sf.info(str(path))
    if rate is None or info.samplerate == rate:
        return info.frames
    return round(info.frames * rate / info.samplerate)


def read_frames(path: Path, start: int, count: int, rate: int | None = None) -> np.ndarray:
    """int16 frames [start, start + count) of a segment, counted at ``rate``.

    A file at another rate is read over the matching stretch and resampled;
    the result is exactly ``count`` frames long unless the file ends first.
    """
    with sf.SoundFile(path) as f:
        if rate is None or f.samplerate == rate:
            f.seek(start)
            return f.read(count, dtype="int16", always_2d=True)
        import soxr

        ratio = f.samplerate / rate
        lo = max(0, int(start * ratio) - RESAMPLE_PAD)
        f.seek(lo)
        data = f.read(int(count * ratio) + 2 * RESAMPLE_PAD, dtype="float32", always_2d=True)
    out = soxr.resample(data, f.samplerate, rate)
    skip = round(start - lo / ratio)
    out = out[skip : skip + count]
    return np.clip(np.round(out * 32768.0), -32768, 32767).astype(np.int16)
