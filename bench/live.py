"""Live recording on a real PulseAudio server: capture CPU, sound→searchable latency, RSS.

    uv run python bench/live.py                  # all three, the long run 60 minutes
    uv run python bench/live.py --minutes 5      # a shorter long run
    uv run python bench/live.py --skip-long      # CPU and latency only

It starts a private PulseAudio server (null sinks at 48 kHz stereo, as in
tests/pulse_server.py), runs the real `pipeline record` against it, and prints:

1. CPU of the capture process (and of its `parec` child) while recording
   48 kHz stereo with speech playing, as % of one core; next to it, for
   reference, a PortAudio stream (sounddevice through ALSA's pulse plugin)
   reading the same monitor in the same format. Goal: capture ≤ 1 %.
2. Latency from the end of a spoken phrase (paplay returns) to the moment
   `Archive.search` finds it, over ≥ 20 phrases: p50/p95/max. Goal: p95 ≤ 2 s.
3. Through a long recording (speech every ~10 s, the output silent with no
   frames at all for 30 s every 5 minutes): RSS of every pipeline process
   (first, last, max, growth per hour), and how far each heard utterance's
   start is from when its file began to play, in the last 10 minutes. Goals:
   RSS flat, timeline within 0.5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
GAP_SECONDS = 30
GAP_EVERY_SECONDS = 300
PAGE = os.sysconf("SC_PAGE_SIZE")


def proc_times(pid: int) -> float:
    """User+system CPU seconds of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def proc_rss(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


def children(pid: int) -> dict[str, int]:
    out = subprocess.run(
        ["ps", "-o", "pid=,comm=", "--ppid", str(pid)], capture_output=True, text=True
    ).stdout
    return {name: int(p) for p, name in (line.split() for line in out.splitlines())}


def family(supervisor: int) -> dict[str, int]:
    """The supervisor, its pipeline children, and capture's parec."""
    procs = {"supervisor": supervisor}
    kids = children(supervisor)
    for name in ("pipe-capture", "pipe-recognizer", "pipe-indexer"):
        if name in kids:
            procs[name] = kids[name]
    if "pipe-capture" in procs:
        parec = children(procs["pipe-capture"]).get("parec")
        if parec:
            procs["parec"] = parec
    return procs


def start_record(pulse, home: Path, *args: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "record", "--quiet", "--home", str(home), *args],
        env={**os.environ, **pulse.env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if 'application.name = "pipeline"' in pulse.run("pactl", "list", "source-outputs"):
            time.sleep(2.5)  # a new record stream may take a second or two to deliver audio
            return proc
        time.sleep(0.1)
    raise SystemExit("the recorder never connected")


def stop_record(proc: subprocess.Popen) -> None:
    proc.send_signal(2)
    proc.wait(timeout=120)


def phrases(tmp: Path) -> list[tuple[Path, str]]:
    """Each meeting sentence (and short.wav) as its own file, with its key phrase."""
    import soundfile as sf

    data = ROOT / "tests" / "data" / "festival"
    audio, rate = sf.read(str(data / "meeting.wav"), dtype="int16")
    out = []
    for i, s in enumerate(json.loads((data / "meeting.json").read_text())["sentences"]):
        path = tmp / f"sentence{i}.wav"
        sf.write(path, audio[round(s["start"] * rate) : round(s["end"] * rate) + rate // 4], rate)
        out.append((path, s["phrase"]))
    short = json.loads((data / "short.json").read_text())["sentences"][0]
    out.append((data / "short.wav", short["phrase"]))
    return out


def keep_playing(pulse, files: list[Path], stop_at: float, pause: float) -> None:
    while time.monotonic() < stop_at:
        for f in files:
            if time.monotonic() >= stop_at:
                return
            pulse.play(f)
            time.sleep(pause)


# --- 1. CPU ---------------------------------------------------------------------


def bench_cpu(pulse, tmp: Path, seconds: float, files) -> None:
    print(f"\n[1] capture CPU, 48 kHz stereo, {seconds:.0f} s with speech playing")
    rec = start_record(pulse, tmp / "cpu")
    procs = family(rec.pid)
    before = {n: proc_times(p) for n, p in procs.items()}
    t0 = time.monotonic()
    keep_playing(pulse, [f for f, _ in files], t0 + seconds, 0.5)
    wall = time.monotonic() - t0
    after = {n: proc_times(p) for n, p in procs.items()}
    stop_record(rec)
    for name in procs:
        print(f"  {name:16} {100 * (after[name] - before[name]) / wall:6.2f} % of a core")
    capture = 100 * (after["pipe-capture"] - before["pipe-capture"]) / wall
    parec = 100 * (after.get("parec", 0) - before.get("parec", 0)) / wall
    print(
        f"capture_cpu: {capture:.2f} % of a core (+ parec {parec:.2f} % = "
        f"{capture + parec:.2f} %)  [goal <= 1 %]"
    )
    ref = _sounddevice_cpu(pulse, min(seconds, 20.0))
    if ref is not None:
        print(
            f"reference: sounddevice (PortAudio via ALSA's pulse plugin) reading the same "
            f"monitor: {ref:.2f} % of a core"
        )


def _sounddevice_cpu(pulse, seconds: float) -> float | None:
    code = f"""
import os, time, sounddevice as sd
frames = 0
def cb(data, n, t, status):
    global frames; frames += n
with sd.InputStream(samplerate=48000, channels=2, dtype='int16', device='pulse', callback=cb):
    c0 = os.times(); t0 = time.monotonic(); time.sleep({seconds})
    c1 = os.times(); t1 = time.monotonic()
print(100 * ((c1.user - c0.user) + (c1.system - c0.system)) / (t1 - t0))
"""
    env = {**os.environ, **pulse.env, "PULSE_SOURCE": "speakers.monitor"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if out.returncode:
        print(f"  (sounddevice reference unavailable: {out.stderr.strip().splitlines()[-1:]})")
        return None
    return float(out.stdout.strip())


# --- 2. latency -------------------------------------------------------------------


def bench_latency(pulse, tmp: Path, rounds: int, files) -> None:
    from pipeline.archive import Archive

    count = rounds * len(files)
    print(f"\n[2] sound → searchable latency over {count} phrases")
    home = tmp / "latency"
    rec = start_record(pulse, home)
    archive = None
    latencies, missed = [], []
    for _ in range(rounds):
        for path, phrase in files:
            before = len(archive.search(phrase, limit=1000)) if archive else 0
            pulse.play(path)
            ended = time.monotonic()
            while time.monotonic() - ended < 10:
                if archive is None and (home / "db" / "pipeline.db").exists():
                    archive = Archive(home)
                if archive and len(archive.search(phrase, limit=1000)) > before:
                    latencies.append(time.monotonic() - ended)
                    break
                time.sleep(0.05)
            else:
                missed.append(phrase)
            time.sleep(0.5)
    stop_record(rec)
    latencies.sort()
    p95 = latencies[max(0, round(0.95 * len(latencies)) - 1)] if latencies else float("nan")
    print(f"  found {len(latencies)} of {count}; missed: {missed or 'none'}")
    for phrase in dict.fromkeys(missed):
        first = phrase.split()[0]
        heard = {h.text for h in archive.search(first, limit=50)} if archive else set()
        print(f"    {phrase!r}: heard instead {sorted(heard) or 'nothing with ' + repr(first)}")
    if latencies:
        print(f"  p50 {statistics.median(latencies):.2f} s, max {latencies[-1]:.2f} s")
    print(f"latency_p95: {p95:.2f} s  [goal <= 2 s]")


# --- 3. RSS -------------------------------------------------------------------------


def bench_long_run(pulse, tmp: Path, minutes: float, files) -> None:
    """RSS of every process, and whether heard times stay true, over a long recording.

    Speech plays every ~10 s; every GAP_EVERY_SECONDS the output is suspended
    for GAP_SECONDS, so its monitor sends nothing at all (as WASAPI loopback
    does in silence) and the recorder must fill the time.
    """
    from pipeline.archive import Archive

    print(
        f"\n[3] {minutes:g} minutes of recording: speech every ~10 s, the output silent "
        f"(no frames) for {GAP_SECONDS} s every {GAP_EVERY_SECONDS // 60} min"
    )
    home = tmp / "long"
    rec = start_record(pulse, home)
    procs = family(rec.pid)
    samples: dict[str, list[tuple[float, int]]] = {n: [] for n in procs}
    restarts: dict[str, int] = dict.fromkeys(procs, 0)
    plays: list[tuple[float, str]] = []  # (wall-clock time playing began, phrase)
    t0 = time.monotonic()
    end = t0 + minutes * 60
    next_sample, next_gap, i = t0, t0 + GAP_EVERY_SECONDS, 0
    while time.monotonic() < end:
        if time.monotonic() >= next_sample:
            now = family(rec.pid)
            for name in procs:
                if name not in now:
                    log = (home / "record.log").read_text()[-2000:]
                    raise SystemExit(
                        f"{name} is gone after {(time.monotonic() - t0) / 60:.1f} "
                        f"min; the recorder's log ends:\n{log}"
                    )
                if now[name] != procs[name]:
                    restarts[name] += 1
                samples[name].append((time.monotonic() - t0, proc_rss(now[name])))
            procs = now
            next_sample += 10
        if time.monotonic() >= next_gap:
            pulse.run("pactl", "suspend-sink", "speakers", "1")
            time.sleep(GAP_SECONDS)
            pulse.run("pactl", "suspend-sink", "speakers", "0")
            time.sleep(1.0)
            next_gap += GAP_EVERY_SECONDS
        path, phrase = files[i % len(files)]
        plays.append((pulse.play(path), phrase))
        i += 1
        time.sleep(7)
    stop_record(rec)
    print(f"  {'process':16} {'first MB':>9} {'last MB':>9} {'max MB':>9} {'MB/hour':>9}")
    for name, points in samples.items():
        mb = [r / 1e6 for _, r in points]
        skip = len(points) // 5  # after warm-up: the slope of the last 80 %
        slope = _slope([t / 3600 for t, _ in points[skip:]], mb[skip:])
        print(
            f"  {name:16} {mb[0]:9.1f} {mb[-1]:9.1f} {max(mb):9.1f} {slope:9.2f}"
            + (f"  ({restarts[name]} restarts)" if restarts[name] else "")
        )
    _timeline(Archive(home), plays, t0_wall=plays[0][0] if plays else 0.0)


def _timeline(archive, plays: list[tuple[float, str]], t0_wall: float) -> None:
    """How far each heard utterance's start is from when its file began playing."""
    errors: list[tuple[float, float]] = []  # (minutes into the run, error s)
    found = 0
    for began, phrase in plays:
        hits = archive.search(phrase, limit=10_000)
        near = [h for h in hits if abs(h.at.timestamp() - began) < 5]
        if not near:
            continue
        found += 1
        hit = min(near, key=lambda h: abs(h.at.timestamp() - began))
        start = hit.at.timestamp() - (hit.start - hit.utterance_start)
        errors.append(((began - t0_wall) / 60, start - began))
    late = [e for m, e in errors if m >= (errors[-1][0] - 10 if errors else 0)]
    worst = max((abs(e) for _, e in errors), default=float("nan"))
    print(f"  phrases found at their time: {found} of {len(plays)}")
    median = statistics.median(e for _, e in errors)
    print(
        f"  utterance start − playback start: median {median:+.2f} s, "
        f"last 10 min median {statistics.median(late):+.2f} s, worst {worst:.2f} s"
    )
    print(f"timeline_error_last_10min: {max(abs(e) for e in late):.2f} s  [goal <= 0.5 s]")


def _slope(xs: list[float], ys: list[float]) -> float:
    if len(xs) < 2:
        return 0.0
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-seconds", type=float, default=60)
    parser.add_argument("--latency-rounds", type=int, default=3)
    parser.add_argument("--minutes", type=float, default=60, help="length of the long run")
    parser.add_argument("--skip-long", action="store_true")
    parser.add_argument("--skip-short", action="store_true", help="only the long run")
    args = parser.parse_args()

    from tests.pulse_server import Pulse

    with tempfile.TemporaryDirectory(prefix="pipeline-live-") as d:
        tmp = Path(d)
        runtime = tmp / "xdg"
        runtime.mkdir(mode=0o700)
        pulse = Pulse(runtime)
        pulse.start(rate=48000)
        try:
            files = phrases(tmp)
            print(
                f"PulseAudio {pulse.run('pactl', 'info').split('Server Version: ')[1].split()[0]}"
                f", null sink 48000 Hz 2 ch; load average {os.getloadavg()[0]:.2f}"
            )
            if not args.skip_short:
                bench_cpu(pulse, tmp, args.cpu_seconds, files)
                bench_latency(pulse, tmp, args.latency_rounds, files)
            if not args.skip_long:
                bench_long_run(pulse, tmp, args.minutes, files)
        finally:
            pulse.stop()


if __name__ == "__main__":
    main()
