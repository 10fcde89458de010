"""The progress bars of `pipeline ingest` and `pipeline reindex`: items and hours done, speed."""

from __future__ import annotations

import time

import soundfile as sf
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from .messages import Progress as Recognized
from .messages import SessionIndexed, SessionStarted, TranscriptDone


class WorkProgress:
    """A rich progress bar over hours of audio, fed by the recognizers' progress."""

    def __init__(self, total_seconds: float, items: int, noun: str, verb: str, console) -> None:
        self.total = total_seconds
        self.items = items
        self.noun = noun
        self.done_items = 0
        self.at: dict[str, float] = {}  # session → seconds recognized in it so far
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
        self.task = self.bar.add_task(verb, total=self.total or None, stats="")

    def advance(self, session: str, seconds: float) -> None:
        self.at[session] = seconds
        self.show()

    def finish(self, session: str, seconds: float) -> None:
        self.at.pop(session, None)
        self.finished += seconds
        self.done_items += 1
        self.show()

    def show(self) -> None:
        done = self.finished + sum(self.at.values())
        speed = done / max(1e-6, time.monotonic() - self.t0)
        stats = (
            f"{self.noun} {self.done_items}/{self.items}  "
            f"{done / 3600:.2f}/{self.total / 3600:.2f} h  {speed:.1f}x real time"
        )
        self.bar.update(self.task, completed=done, stats=stats)


class IngestProgress(WorkProgress):
    """`pipeline ingest`: files."""

    def __init__(self, files, console) -> None:
        super().__init__(sum(_seconds(f) for f in files), len(files), "files", "ingesting", console)

    def apply(self, event: object) -> None:
        if isinstance(event, Recognized):
            self.advance(event.session, event.seconds)
        elif isinstance(event, SessionIndexed):
            self.finish(event.session, event.seconds)
        elif isinstance(event, SessionStarted):
            self.show()


class ReindexProgress(WorkProgress):
    """`pipeline reindex`: sessions of a plan (see :mod:`pipeline.reindex`)."""

    def __init__(self, work, console) -> None:
        from .reindex import job_seconds

        super().__init__(work.seconds, len(work.jobs), "sessions", "reindexing", console)
        self.sizes = {job.session: job_seconds(job) for job in work.jobs}
        self.begins = {job.session: max(job.start, job.runs[0][0]) / job.rate for job in work.jobs}

    def apply(self, event: object) -> None:
        if isinstance(event, Recognized) and event.session in self.sizes:
            done = event.seconds - self.begins[event.session]
            self.advance(event.session, min(self.sizes[event.session], max(0.0, done)))
        elif isinstance(event, TranscriptDone) and event.session in self.sizes:
            self.finish(event.session, self.sizes[event.session])


def _seconds(path) -> float:
    try:
        return sf.info(str(path)).duration
    except Exception:  # a bad file: the run reports it
        return 0.0


class CopyProgress:
    """`pipeline db copy`: sessions copied (or already there) of all, words so far."""

    def __init__(self, console) -> None:
        self.bar = Progress(
            TextColumn("copying"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} sessions, {task.fields[words]} words"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        )
        self.task = self.bar.add_task("copying", total=None, words=0)

    def __enter__(self) -> CopyProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.stop()

    def update(self, done, total: int) -> None:
        self.bar.update(
            self.task, completed=done.sessions + done.skipped, total=total, words=done.words
        )
