"""Soak benchmark: a day of audio through the real pipeline, with processes killed at random.

Run from the project root::

    uv run python bench/soak.py                          # 24 h of audio, 100 kills
    uv run python bench/soak.py --hours 2 --kills 10     # a quicker look

It builds ``--hours`` of audio as one-hour WAV files (16 kHz mono: a day is
2.8 GB, written to a temporary folder): quiet room noise with speech clips
(the Festival meeting's sentences and the real speech of ``tests/data/corpus``)
every 20-120 s, so about a tenth of the day is speech. It ingests them all
in one run of the real supervisor (three processes, as ``pipeline ingest``;
not paced, so as fast as the recognizer goes) while a killer thread sends
SIGKILL to a random child (capture, recognizer or indexer) every 4-10 s,
waiting each time until all three are back. The supervisor's limit of
restarts per minute is lifted for the run (it exists to end a run whose child
keeps dying; here the deaths are deliberate); everything else is as shipped.

What it prints:

* **audio**: seconds fed vs seconds recorded (the sessions' frames, and the
  frames in the segment files on disk), and audio lost per kill;
* **words**: the same files are first ingested without kills (the control);
  the words indexed within each clip's time in the two archives are
  compared: words lost (in the control, not in the soak), words doubled
  (the other way round), and the clips' reference words for scale;
* **RSS** of each process over time (every child is a new process after a
  kill, so the figure is per role: the first vs the last tenth of the run);
* **restarts**, kills per process, wall time.

Goal: 100 random kills -> 0 indexed words lost, <= 1 s audio lost per kill,
RSS flat within 10 MB.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from live import children, proc_rss

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline import supervisor  # noqa: E402
from pipeline.config import Home  # noqa: E402

DATA = ROOT / "tests" / "data"
RATE = 16000
HOUR = 3600
ROLES = ("pipe-capture", "pipe-recognizer", "pipe-indexer")


@dataclass
class Clip:
    name: str
    audio: np.ndarray  # int16 mono at RATE
    reference: str  # what was said


@dataclass
class Placed:
    file: int
    start: float  # seconds into the file
    clip: Clip

    @property
    def end(self) -> float:
        return self.start + len(self.clip.audio) / RATE


def load_clips() -> list[Clip]:
    import soxr

    clips = []
    meeting, rate = sf.read(str(DATA / "festival" / "meeting.wav"), dtype="int16")
    for s in json.loads((DATA / "festival" / "meeting.json").read_text())["sentences"]:
        cut = meeting[round(s["start"] * rate) : round(s["end"] * rate)]
        clips.append(Clip(s["phrase"], cut, s["text"]))
    transcripts = json.loads((DATA / "corpus" / "transcripts.json").read_text())
    for rel, text in transcripts.items():
        data, rate = sf.read(str(DATA / "corpus" / rel), dtype="float32")
        if data.ndim > 1:
            data = data.mean(axis=1)
        mono = soxr.resample(data, rate, RATE) if rate != RATE else data
        clips.append(Clip(rel, (mono * 32767).astype(np.int16), text))
    return clips


def build_day(folder: Path, hours: int, clips: list[Clip], rng: random.Random) -> list[Placed]:
    """One WAV per hour: room noise, a clip every 20-120 s."""
    placed = []
    noise = np.random.default_rng(3)
    for h in range(hours):
        audio = noise.normal(0, 20, HOUR * RATE).astype(np.int16)
        at = rng.uniform(5, 60)
        while True:
            clip = rng.choice(clips)
            if at + len(clip.audio) / RATE > HOUR - 5:
                break
            i = round(at * RATE)
            audio[i : i + len(clip.audio)] += clip.audio
            placed.append(Placed(h, at, clip))
            at += len(clip.audio) / RATE + rng.uniform(20, 120)
        sf.write(folder / f"hour{h:02d}.wav", audio, RATE, subtype="PCM_16")
    return placed


class Killer(threading.Thread):
    """Kills a random child of this process every 4-10 s, once all three are running."""

    def __init__(self, kills: int, rng: random.Random) -> None:
        super().__init__(daemon=True)
        self.kills, self.rng = kills, rng
        self.done: list[tuple[float, str]] = []
        self.rss: dict[str, list[tuple[float, int]]] = collections.defaultdict(list)
        self.stop = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        next_kill = time.monotonic() + self.rng.uniform(4, 10)
        while not self.stop.wait(1.0):
            kids = children(os.getpid())
            for role in ROLES:
                if role in kids:
                    with contextlib.suppress(OSError):
                        self.rss[role].append((time.monotonic() - self.t0, proc_rss(kids[role])))
            self.rss["supervisor"].append((time.monotonic() - self.t0, proc_rss(os.getpid())))
            if len(self.done) >= self.kills or time.monotonic() < next_kill:
                continue
            if not all(role in kids for role in ROLES):
                continue  # one is being restarted: wait for it
            victim = self.rng.choice(ROLES)
            try:
                os.kill(kids[victim], signal.SIGKILL)
            except ProcessLookupError:
                continue
            self.done.append((time.monotonic() - self.t0, victim))
            next_kill = time.monotonic() + self.rng.uniform(4, 10)


def clip_words(home: Home, files: list[Path], placed: list[Placed]) -> list[collections.Counter]:
    """The words indexed within each placed clip's time (±0.5 s), per clip."""
    import sqlite3

    db = sqlite3.connect(home.db_path)
    ids = dict(db.execute("SELECT source, id FROM sessions"))
    sessions = {i: ids[str(f.resolve())] for i, f in enumerate(files)}
    return [
        collections.Counter(
            r[0]
            for r in db.execute(
                "SELECT w.text FROM words w JOIN utterances u ON u.id = w.utterance_id "
                "WHERE u.session_id = ? AND w.start >= ? AND w.start < ?",
                (sessions[p.file], p.start - 0.5, p.end + 0.5),
            )
        )
        for p in placed
    ]


def audio_seconds(home: Home) -> tuple[float, float, int]:
    """(seconds the sessions say, seconds in the segment files, complete sessions)."""
    import sqlite3

    db = sqlite3.connect(home.db_path)
    frames, complete = db.execute(
        "SELECT SUM(frames), SUM(status = 'complete') FROM sessions"
    ).fetchone()
    on_disk = sum(sf.info(str(f)).frames for f in home.recordings.glob("*/*.wav"))
    return frames / RATE, on_disk / RATE, complete


def rss_report(samples: dict[str, list[tuple[float, int]]]) -> None:
    print(f"{'RSS MB':14} {'first 10%':>10} {'last 10%':>10} {'change':>8} {'max':>8}")
    for role, series in samples.items():
        if len(series) < 20:
            continue
        tenth = max(1, len(series) // 10)
        first = statistics.median(r for _, r in series[:tenth]) / 1e6
        last = statistics.median(r for _, r in series[-tenth:]) / 1e6
        peak = max(r for _, r in series) / 1e6
        print(f"{role:14} {first:10.1f} {last:10.1f} {last - first:+8.1f} {peak:8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--keep", help="keep the home here for a look afterwards")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    supervisor.MAX_RESTARTS = 10**6  # the kills are deliberate (see the docstring)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        clips = load_clips()
        print(f"{len(clips)} clips; building {args.hours} h of audio …", flush=True)
        placed = build_day(folder, args.hours, clips, rng)
        files = sorted(folder.glob("hour*.wav"))
        fed = sum(sf.info(str(f)).frames for f in files) / RATE
        speech = sum(len(p.clip.audio) for p in placed) / RATE
        print(f"{fed / 3600:.1f} h of audio, {len(placed)} clips ({speech / fed:.1%} speech)")
        control = Home(Path(args.keep + "-control") if args.keep else folder / "control")
        t0 = time.monotonic()
        supervisor.ingest(files, control, segment_seconds=300)
        print(f"control run (no kills): {(time.monotonic() - t0) / 60:.1f} min", flush=True)

        home = Home(Path(args.keep) if args.keep else folder / "home")
        killer = Killer(args.kills, rng)
        killer.start()
        t0 = time.monotonic()
        report = supervisor.ingest(files, home, segment_seconds=300)
        wall = time.monotonic() - t0
        killer.stop.set()
        killer.join()

        recorded, on_disk, complete = audio_seconds(home)
        want, got = clip_words(control, files, placed), clip_words(home, files, placed)
        expected = sum(sum(c.values()) for c in want)
        lost = sum(sum((w - g).values()) for w, g in zip(want, got, strict=True))
        doubled = sum(sum((g - w).values()) for w, g in zip(want, got, strict=True))
        spoken = sum(len(p.clip.reference.split()) for p in placed)
        kills = len(killer.done)

        print(
            f"soak run: {wall / 60:.1f} min for {fed / 3600:.1f} h of audio "
            f"({fed / wall:.0f}x real time)"
        )
        print(
            f"kills: {kills} {dict(collections.Counter(v for _, v in killer.done))}; "
            f"restarts: {report.restarts}; sessions complete: {complete}/{len(files)}"
        )
        print(
            f"audio: fed {fed:.1f} s, recorded {recorded:.1f} s, on disk {on_disk:.1f} s; "
            f"lost {fed - recorded:.1f} s ({(fed - recorded) / max(1, kills):.3f} s per kill)"
        )
        print(
            f"words in the clips: {expected} indexed without kills ({spoken} spoken); "
            f"with kills: lost {lost}, doubled {doubled}"
        )
        for p, w, g in zip(placed, want, got, strict=True):
            if w != g:
                print(
                    f"  differs: hour {p.file} at {p.start:.1f} s: lost "
                    f"{dict(w - g)}, doubled {dict(g - w)}"
                )
        rss_report(killer.rss)


if __name__ == "__main__":
    main()
