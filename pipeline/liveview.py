"""The live view of `pipeline record`: what is being heard, recognized and kept.

:class:`LiveState` folds the supervisor's messages into a state; rendering it
(``LiveState.__rich__``) is pure, so a test can render it into a
``Console(file=StringIO())``.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .messages import (
    ArchiveState,
    Indexed,
    Level,
    Partial,
    Progress,
    SessionEvent,
    SessionIndexed,
    SourceFailed,
)
from .retention import folder_bytes
from .status import lag
from .supervisor import Heartbeat

LAST_LINES = 5
DISK_EVERY_SECONDS = 2.0
METER_WIDTH = 30
METER_FLOOR_DB = -60.0


@dataclass
class LiveState:
    """Everything the live view shows, updated by :meth:`apply`."""

    source: str
    engine: str
    recordings: Path
    started: float = field(default_factory=time.monotonic)
    device: str = ""
    session: str = ""
    seconds: float = 0.0
    rms_db: float = METER_FLOOR_DB
    peak_db: float = METER_FLOOR_DB
    partial: str = ""
    words: int = 0
    queue_depth: int = 0
    recognized: tuple[str, float] | None = None  # (session, seconds) the recognizer is at
    disk_bytes: int = 0
    lines: deque = field(default_factory=lambda: deque(maxlen=LAST_LINES))
    events: deque = field(default_factory=lambda: deque(maxlen=3))
    done: list[SessionIndexed] = field(default_factory=list)
    archive: ArchiveState | None = None  # a shared archive out of reach: writes are spooled
    _disk_at: float = 0.0

    def apply(self, msg: object) -> None:
        if isinstance(msg, Level):
            self.session, self.device = msg.session, msg.device
            self.seconds, self.rms_db, self.peak_db = msg.seconds, msg.rms_db, msg.peak_db
        elif isinstance(msg, Progress):
            self.recognized = (msg.session, msg.seconds)
        elif isinstance(msg, Partial):
            self.partial = msg.text
        elif isinstance(msg, Indexed):
            self.partial = ""
            self.words += msg.words
            self.lines.append((msg.start, msg.text))
        elif isinstance(msg, SessionEvent):
            self.events.append(f"{msg.kind}: {msg.detail}")
        elif isinstance(msg, SourceFailed):
            self.events.append(f"error: {msg.message}")
        elif isinstance(msg, SessionIndexed):
            self.done.append(msg)
        elif isinstance(msg, Heartbeat):
            self.queue_depth = msg.queue_depth
            self._measure_disk()
        elif isinstance(msg, ArchiveState):
            self.archive = None if msg.online else msg

    def _measure_disk(self) -> None:
        now = time.monotonic()
        if not self.session or now - self._disk_at < DISK_EVERY_SECONDS:
            return
        self._disk_at = now
        self.disk_bytes = folder_bytes(self.recordings / self.session)

    def __rich__(self) -> Panel:
        head = Table.grid(padding=(0, 2))
        head.add_row(
            Text("● REC", style="bold red"),
            Text(f"{self.source}: {self.device or '…'}"),
            Text(_clock(self.seconds), style="bold"),
        )
        head.add_row(
            Text("level"), _meter(self.rms_db, self.peak_db), Text(f"{self.rms_db:.0f} dB")
        )
        stats = Text(
            f"words indexed {self.words:,}   disk {_size(self.disk_bytes)}   "
            f"recognizer lag {lag((self.session, self.seconds), self.recognized):.1f} s   "
            f"queue {self.queue_depth}   engine {self.engine}",
            style="dim",
        )
        body = [head, stats]
        if self.engine.startswith("assemblyai"):  # the one engine that sends audio away
            body.append(
                Text("engine assemblyai (cloud: speech is sent to AssemblyAI)", style="bold yellow")
            )
        for start, text in self.lines:
            body.append(Text.assemble((f"{_clock(start):>8}  ", "cyan"), text))
        if self.partial:
            body.append(Text(f"          {self.partial} …", style="italic yellow"))
        if self.archive is not None:
            since = (
                f" since {self.archive.since.astimezone():%H:%M:%S}" if self.archive.since else ""
            )
            body.append(
                Text(
                    f"archive out of reach{since}: {self.archive.waiting} index writes spooled "
                    "on this disk, written when it is back (recording goes on)",
                    style="bold yellow",
                )
            )
        for event in self.events:
            body.append(Text(event, style="magenta"))
        return Panel(
            Group(*body), title="pipeline record", subtitle="Ctrl+C to stop", border_style="red"
        )


def _meter(rms_db: float, peak_db: float) -> Text:
    def cells(db: float) -> int:
        return round(METER_WIDTH * min(1.0, max(0.0, (db - METER_FLOOR_DB) / -METER_FLOOR_DB)))

    filled, peak = cells(rms_db), cells(peak_db)
    bar = Text("█" * filled, style="green")
    bar.append("▏" * max(0, peak - filled), style="yellow")
    bar.append(" " * (METER_WIDTH - max(filled, peak)))
    return bar


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def counted(n: int, noun: str) -> str:
    """``n`` of a noun as said: "1 batch", "2 batches", "12,040 words"."""
    if n == 1:
        return f"1 {noun}"
    return f"{n:,} {noun}{'es' if noun.endswith(('ch', 'sh', 's', 'x')) else 's'}"


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"
