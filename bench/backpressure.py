"""Backpressure benchmark: a recognizer at 0.3x real time behind a capture that never waits.

Run from the project root::

    uv run python bench/backpressure.py               # 6 minutes of speech, paced at 1x
    uv run python bench/backpressure.py --minutes 3 --speed 0.5
    uv run python bench/backpressure.py --helpers 1   # share the backlog (record --jobs 2)

It joins the Festival meeting (``tests/data/festival/meeting.wav``, eight
sentences, about 60 % speech) end to end into ``--minutes`` of audio and
ingests it paced at real time (``--realtime``: capture behaves as a live
source and never waits for the recognizer) with the recognizer held to
``--speed`` x real time on speech (``EngineSpec(speed=...)``) and the
shipped audio queue. The recognizer falls ever further behind and catches
up from the segments on disk; with ``--helpers N`` it hands pieces of a long
backlog to N helper recognizers (as ``record --jobs N+1`` does). The held
engine sleeps rather than computes, so with helpers this measures the
hand-off (words and timing kept, backlog shared), not a CPU speed-up.

It prints: audio captured vs fed (capture must miss no frame), the
sentences found vs played (each exactly once, at its time), how far the
recognizer fell behind, and the RSS of each process over the run (first vs
last tenth; memory must stay flat however far behind it is).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from live import children, proc_rss
from soak import rss_report

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.archive import Archive  # noqa: E402
from pipeline.config import Home  # noqa: E402
from pipeline.messages import HandedOff  # noqa: E402
from pipeline.recognize import EngineSpec  # noqa: E402
from pipeline.supervisor import ingest  # noqa: E402

MEETING = ROOT / "tests" / "data" / "festival" / "meeting.wav"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=6.0)
    parser.add_argument("--speed", type=float, default=0.3)
    parser.add_argument("--helpers", type=int, default=0)
    args = parser.parse_args()
    meeting, rate = sf.read(str(MEETING), dtype="int16")
    sentences = json.loads(MEETING.with_suffix(".json").read_text())["sentences"]
    copies = max(1, round(args.minutes * 60 / (len(meeting) / rate)))
    rss: dict[str, list[tuple[float, int]]] = collections.defaultdict(list)
    done = threading.Event()

    def sample() -> None:
        t0 = time.monotonic()
        while not done.wait(2.0):
            for role, pid in children(os.getpid()).items():
                if role.startswith("pipe-"):
                    rss[role].append((time.monotonic() - t0, proc_rss(pid)))

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "long.wav"
        sf.write(source, np.tile(meeting, copies), rate, subtype="PCM_16")
        fed = copies * len(meeting) / rate
        print(
            f"{fed / 60:.1f} min of audio ({copies} x meeting.wav), recognizer at "
            f"{args.speed}x real time on speech, {args.helpers} helpers",
            flush=True,
        )
        home = Home(Path(tmp) / "home")
        threading.Thread(target=sample, daemon=True).start()
        t0 = time.monotonic()
        pieces: list = []
        report = ingest(
            [source],
            home,
            EngineSpec(speed=args.speed),
            realtime=True,
            segment_seconds=60,
            helpers=args.helpers,
            on_event=lambda e: pieces.extend(e.pieces) if isinstance(e, HandedOff) else None,
        )
        wall = time.monotonic() - t0
        done.set()
        [session] = report.indexed
        archive = Archive(home.root)
        found = exact = 0
        for s in sentences:
            hits = archive.search(s["phrase"], limit=1000)
            found += len(hits)
            starts = sorted(h.start % (len(meeting) / rate) for h in hits)
            exact += len(hits) == copies and all(s["start"] - 1.0 <= t <= s["end"] for t in starts)
        print(
            f"wall {wall / 60:.1f} min; the recognizer finished "
            f"{(wall - fed) / 60:.1f} min after the audio ended"
        )
        shared = sum(end - start for start, end in pieces)
        print(f"backlog handed to helpers: {len(pieces)} pieces, {shared / 60:.1f} min of audio")
        print(
            f"audio: fed {fed:.1f} s, captured {session.seconds:.1f} s "
            f"(missed {fed - session.seconds:.1f} s)"
        )
        print(
            f"sentences: {found} found of {copies * len(sentences)} played; "
            f"{exact}/{len(sentences)} found exactly once per copy, at their time"
        )
        rss_report(rss)


if __name__ == "__main__":
    main()
