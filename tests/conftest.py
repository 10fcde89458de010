"""Shared fixtures: a fresh data home, a migrated database, real speech, an ingested archive."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.config import Home
from pipeline.database import open_archive
from pipeline.supervisor import ingest

DATA = Path(__file__).parent / "data"
MEETING = DATA / "festival" / "meeting.wav"
MEETING_FLAC = DATA / "festival" / "meeting_44k_stereo.flac"
SHORT = DATA / "festival" / "short.wav"
KOREAN = DATA / "korean" / "ko.wav"
BAD = DATA / "bad"


def sentences(wav: Path) -> list[dict]:
    """The fixture's sentences with their exact start/end seconds and key phrase."""
    return json.loads(wav.with_suffix(".json").read_text())["sentences"]


@pytest.fixture
def home(tmp_path: Path) -> Home:
    """A fresh, empty data home."""
    return Home(tmp_path / "home").ensure()


@pytest.fixture
def db(home: Home):
    """An engine on a database that the real Alembic migrations built."""
    engine = open_archive(home)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def meeting_home(tmp_path_factory) -> Home:
    """An archive with meeting.wav ingested through the real three processes.

    Segments are 10 s long so that moments cross segment edges. Tests only read it.
    """
    home = Home(tmp_path_factory.mktemp("meeting") / "home").ensure()
    source = home.root.parent / "meeting.wav"
    shutil.copy(MEETING, source)
    report = ingest([source], home, segment_seconds=10.0)
    assert not report.failed and len(report.indexed) == 1
    return home


@pytest.fixture
def cli():
    """Invoke the CLI in-process; stderr is kept apart from stdout."""
    from pipeline import cli as module
    from pipeline.cli import app

    module.out.width = module.err.width = 200  # a wide terminal: table cells do not wrap
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args])

    return invoke


# --- a real PulseAudio server for live capture ------------------------------------


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

    def start(self) -> None:
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


@pytest.fixture(scope="session")
def pulse(tmp_path_factory) -> Pulse:
    """A real PulseAudio server (null sinks `speakers`, `headphones`, mic `testmic`)."""
    if shutil.which("pulseaudio") is None:
        pytest.skip("PulseAudio is not installed here (.ci/run installs it)")
    runtime = tmp_path_factory.mktemp("xdg")
    runtime.chmod(0o700)
    server = Pulse(runtime)
    patch = pytest.MonkeyPatch()
    for key, value in server.env.items():
        patch.setenv(key, value)
    patch.delenv("PULSE_SERVER", raising=False)
    server.start()
    yield server
    server.stop()
    patch.undo()
