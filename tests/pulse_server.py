"""A private PulseAudio server with null sinks, for the live-capture tests and benchmarks."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path


class Pulse:
    """A private PulseAudio daemon with null sinks, started and stopped by the tests."""

    def __init__(self, runtime: Path) -> None:
        self.runtime = runtime
        self.env = {
            "XDG_RUNTIME_DIR": str(runtime),
            "PULSE_RUNTIME_PATH": str(runtime / "pulse"),
            "PULSE_CLIENTCONFIG": str(runtime / "client.conf"),
        }

    def run(self, *args: str, check: bool = True) -> str:
        env = {**os.environ, **self.env}
        out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=30)
        if check and out.returncode:
            raise RuntimeError(f"{args}: {out.stderr}")
        return out.stdout

    def start(self, rate: int | None = None) -> None:
        (self.runtime / "client.conf").write_text("autospawn = no\n")
        self.run("pulseaudio", "-D", "--exit-idle-time=-1", "--log-target=stderr")
        for _ in range(100):
            if self.run("pactl", "info", check=False):
                break
            time.sleep(0.05)
        for sink, description in (
            ("speakers", "Speakers"),
            ("headphones", "Headphones"),
            ("micfeed", "MicFeed"),
        ):
            self.run(
                "pactl",
                "load-module",
                "module-null-sink",
                f"sink_name={sink}",
                f"sink_properties=device.description={description}",
                *([f"rate={rate}", "channels=2"] if rate else []),
            )
        # a microphone fed by playing into `micfeed`
        self.run(
            "pactl",
            "load-module",
            "module-remap-source",
            "master=micfeed.monitor",
            "source_name=testmic",
            "source_properties=device.description=TestMic",
        )
        self.reset()

    def reset(self) -> None:
        self.run("pactl", "set-default-sink", "speakers")
        self.run("pactl", "set-default-source", "testmic")

    def play(self, wav: Path, device: str | None = None) -> float:
        """Play a file (blocking); returns the wall-clock time when playing began."""
        began = time.time()
        self.run("paplay", *([f"--device={device}"] if device else []), str(wav))
        return began

    def stop(self) -> None:
        pid_file = self.runtime / "pulse" / "pid"
        if pid_file.exists():
            pid = int(pid_file.read_text().split()[0])
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
                for _ in range(100):  # gone, so its files can be removed
                    os.kill(pid, 0)
                    time.sleep(0.05)
