"""The progress of `pipeline ingest`: files and hours done, and the real-time factor."""

from __future__ import annotations

import time

import soundfile as sf
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from .messages import Progress as Recognized
from .messages import SessionIndexed, SessionStarted


class IngestProgress:
    """Feeds a rich progress bar from the run's events (the recognizers' progress)."""

    def __init__(self, files, console) -> None:
        self.total = sum(_seconds(f) for f in files)
        self.files = len(files)
        self.done_files = 0
        self.at: dict[str, float] = {}  # session → seconds recognized
        self.finished = 0.0
        self.t0 = time.monotonic()
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        )
        self.task = self.bar.add_task("ingesting", total=self.total or None, stats="")

    def apply(self, event: object) -> None:
        if isinstance(event, Recognized):
            self.at[event.session] = event.seconds
        elif isinstance(event, SessionIndexed):
            self.at.pop(event.session, None)
            self.finished += event.seconds
            self.done_files += 1
        elif not isinstance(event, SessionStarted):
            return
        done = self.finished + sum(self.at.values())
        speed = done / max(1e-6, time.monotonic() - self.t0)
        stats = (
            f"files {self.done_files}/{self.files}  {done / 3600:.2f}/{self.total / 3600:.2f} h  "
            f"{speed:.1f}x real time"
        )
        self.bar.update(self.task, completed=done, stats=stats)


def _seconds(path) -> float:
    try:
        return sf.info(str(path)).duration
    except Exception:  # a bad file: the run reports it
        return 0.0
