"""Compaction benchmark: how big a day of system audio is after compaction, and its cost.

Run from the project root::

    uv run python bench/compact.py              # 10 minutes of audio, extrapolated to a day
    uv run python bench/compact.py --minutes 30

It builds "system audio" the way a recorder captures it, 48 kHz stereo
16-bit WAV in 5-minute segments, from the repository's real and synthesized
speech (``tests/data``) with pauses between utterances (about a third of the
time is silence, as in a meeting or a lecture), and stereo that is not
merely a copy (the right channel is the left a few ms later, quieter, with
room noise). Each segment is compacted with ``pipeline.compact.encode``, as
the recorder does, to Opus and to FLAC.

Figures printed: bytes per day (a day = 86,400 s of such audio, extrapolated
linearly), the ratio to WAV, and encoding CPU seconds per audio hour. Goal:
a day of system audio in **<= 1 GB** with Opus.
"""

from __future__ import annotations

import argparse
import random
import resource
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from pipeline.compact import FORMATS, encode

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
RATE = 48000
SEGMENT_SECONDS = 300
DAY = 86400


def speech_clips() -> list[np.ndarray]:
    """Every speech fixture as 48 kHz float mono."""
    clips = []
    for path in sorted([*DATA.glob("corpus/**/*.wav"), DATA / "festival" / "meeting.wav"]):
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
        clips.append(soxr.resample(data.mean(axis=1), rate, RATE))
    return clips


def system_audio(seconds: float, rng: random.Random) -> np.ndarray:
    """int16 stereo: speech clips and pauses, with a little room noise."""
    clips = speech_clips()
    total = round(seconds * RATE)
    out = np.zeros(total, dtype=np.float32)
    at = 0
    while at < total:
        clip = rng.choice(clips)
        n = min(len(clip), total - at)
        out[at : at + n] = clip[:n] * rng.uniform(0.5, 1.0)
        at += n + round(rng.uniform(1.0, 8.0) * RATE)  # a pause
    noise = np.random.default_rng(1).normal(0, 0.002, (total, 2)).astype(np.float32)
    delay = round(0.004 * RATE)
    right = np.concatenate([np.zeros(delay, np.float32), out[:-delay]]) * 0.8
    stereo = np.stack([out, right], axis=1) + noise
    return (np.clip(stereo, -1, 1) * 32767).astype(np.int16)


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    args = parser.parse_args()
    audio = system_audio(args.minutes * 60, random.Random(7))
    seconds = len(audio) / RATE
    with tempfile.TemporaryDirectory() as tmp:
        wavs = []
        for i, start in enumerate(range(0, len(audio), SEGMENT_SECONDS * RATE)):
            path = Path(tmp) / f"segment{i:03d}.wav"
            sf.write(path, audio[start : start + SEGMENT_SECONDS * RATE], RATE, subtype="PCM_16")
            wavs.append(path)
        wav_bytes = sum(p.stat().st_size for p in wavs)
        print(f"audio: {seconds / 60:.1f} min, 48 kHz stereo, {len(wavs)} segments")
        print(f"{'format':8} {'GB/day':>8} {'kbit/s':>8} {'vs WAV':>8} {'CPU s/audio h':>14}")
        print(
            f"{'wav':8} {wav_bytes / seconds * DAY / 1e9:8.2f} {wav_bytes * 8 / seconds / 1e3:8.0f}"
        )
        for name, fmt in FORMATS.items():
            t0 = cpu()
            out = [encode(p, fmt) for p in wavs]
            spent = cpu() - t0
            size = sum(p.stat().st_size for p in out)
            print(
                f"{name:8} {size / seconds * DAY / 1e9:8.2f} {size * 8 / seconds / 1e3:8.0f} "
                f"{size / wav_bytes:8.3f} {spent / seconds * 3600:14.0f}"
            )


if __name__ == "__main__":
    main()
