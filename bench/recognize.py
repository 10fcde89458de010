"""Parallel recognizers: ingest a backlog of files with 1 and with N recognizer lanes.

Run from the project root::

    uv run python bench/recognize.py               # 6 files of ~2 minutes, --jobs 1 vs 2
    uv run python bench/recognize.py --files 8 --jobs 4

It builds a backlog of WAV files from the repository's speech (the Festival
meeting and the corpus, joined with short pauses: mostly speech, the costly
case), then ingests all of them through the real pipeline (``ingest``, not
paced) into a fresh home, once with one capture/recognizer lane and once with
``--jobs`` lanes, and checks that both archives hold the same words.

Figures: wall time of each, speed-up (1 lane / N lanes; goal >= 1.8 with 2
lanes on 2 cores), and throughput in hours of audio per hour of wall time.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.config import Home  # noqa: E402
from pipeline.supervisor import ingest  # noqa: E402

DATA = ROOT / "tests" / "data"
RATE = 16000


def backlog(folder: Path, files: int, seconds: float, rng: random.Random) -> list[Path]:
    clips = []
    for path in sorted([DATA / "festival" / "meeting.wav", *DATA.glob("corpus/**/*.wav")]):
        data, rate = sf.read(str(path), dtype="float32")
        clips.append(soxr.resample(data, rate, RATE) if rate != RATE else data)
    out = []
    for i in range(files):
        parts, total = [], 0
        while total < seconds * RATE:
            clip = rng.choice(clips)
            pause = np.zeros(round(rng.uniform(0.5, 2.0) * RATE), np.float32)
            parts += [clip, pause]
            total += len(clip) + len(pause)
        path = folder / f"backlog{i}.wav"
        sf.write(path, (np.concatenate(parts) * 32767).astype(np.int16), RATE, subtype="PCM_16")
        out.append(path)
    return out


def words(home: Home) -> list[tuple]:
    db = sqlite3.connect(home.db_path)
    return db.execute(
        "SELECT s.source, w.text, w.start FROM words w JOIN utterances u ON u.id = w.utterance_id"
        " JOIN sessions s ON s.id = u.session_id ORDER BY s.source, w.start"
    ).fetchall()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=120.0, help="length of each file")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = backlog(Path(tmp), args.files, args.seconds, random.Random(5))
        audio = sum(sf.info(str(f)).duration for f in files)
        print(f"backlog: {len(files)} files, {audio / 60:.1f} min of audio")
        walls, homes = {}, {}
        for jobs in (1, args.jobs):
            homes[jobs] = Home(Path(tmp) / f"jobs{jobs}")
            t0 = time.monotonic()
            ingest(files, homes[jobs], jobs=jobs)
            walls[jobs] = time.monotonic() - t0
            print(
                f"--jobs {jobs}: {walls[jobs]:.1f} s, {audio / walls[jobs]:.1f} h of audio per hour"
            )
        same = words(homes[1]) == words(homes[args.jobs])
        print(
            f"speed-up ({args.jobs} lanes over 1): {walls[1] / walls[args.jobs]:.2f}x; "
            f"same words: {same}"
        )


if __name__ == "__main__":
    main()
