"""`pipeline status`: is it recording, how much, how well — at a glance.

Two sources: ``home/status.json``, which a running recorder rewrites every
few seconds (pid, source, device, queue, words, last error), and the
archive itself (hours and words, gaps and their reasons). The coverage of
the last 24 hours compares the time sessions spanned with the time audio
was really captured, and lists every gap: silence filled in for a device
that sent nothing, device switches, crashes, and the time between sessions.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session as DbSession

from . import schema
from .config import Home
from .database import db_errors, open_database
from .lock import LOCK_NAME, unclean
from .messages import TIMELINE_BREAKS, ChildFailed, Indexed, Level, Progress, SourceFailed
from .retention import folder_bytes

STATUS_NAME = "status.json"
WRITE_EVERY_SECONDS = 2.0
COVERAGE_HOURS = 24


# --- written by a running recorder ----------------------------------------------------


class RunFile:
    """Keeps ``home/status.json`` current while a run lasts (atomic rewrites)."""

    def __init__(self, home: Home, sources: list[str]) -> None:
        self.path = home.root / STATUS_NAME
        self.state = {
            "pid": os.getpid(),
            "since": datetime.now(UTC).isoformat(),
            "sources": sources,
            "device": None,
            "queue_depth": 0,
            "lag_seconds": 0.0,
            "words": 0,
            "last_error": None,
            "restarts": 0,
            "updated_at": None,
        }
        self._written = 0.0
        self._captured: tuple[str, float] | None = None  # (session, seconds) from capture
        self._recognized: tuple[str, float] | None = None  # … and from the recognizer
        self.write()

    def apply(self, msg: object, queue_depth: int | None = None) -> None:
        if isinstance(msg, Level):
            self.state["device"] = msg.device
            self._captured = (msg.session, msg.seconds)
        elif isinstance(msg, Progress):
            self._recognized = (msg.session, msg.seconds)
        elif isinstance(msg, Indexed):
            self.state["words"] += msg.words
        elif isinstance(msg, SourceFailed | ChildFailed):
            self.state["last_error"] = msg.message
        if queue_depth is not None and queue_depth >= 0:
            self.state["queue_depth"] = queue_depth
        self.state["lag_seconds"] = lag(self._captured, self._recognized)
        if time.monotonic() - self._written >= WRITE_EVERY_SECONDS:
            self.write()

    def write(self) -> None:
        self.state["updated_at"] = datetime.now(UTC).isoformat()
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=1))
        os.replace(tmp, self.path)
        self._written = time.monotonic()

    def close(self) -> None:
        self.path.unlink(missing_ok=True)


def lag(captured: tuple[str, float] | None, recognized: tuple[str, float] | None) -> float:
    """Seconds the recognizer is behind capture (in capture's session), 0 if unknown."""
    if captured is None or recognized is None or captured[0] != recognized[0]:
        return 0.0
    return max(0.0, captured[1] - recognized[1])


# --- read by `pipeline status` ------------------------------------------------------------


@dataclass
class Gap:
    at: datetime
    seconds: float
    reason: str


@dataclass
class Status:
    home: str
    running: dict | None
    unclean_stop_pid: int | None
    sessions: int
    hours_total: float
    hours_today: float
    words_total: int
    words_today: int
    recordings_bytes: int
    database_bytes: int
    disk_budget_bytes: int | None
    window_start: datetime
    window_end: datetime
    expected_seconds: float
    captured_seconds: float
    gaps: list[Gap] = field(default_factory=list)

    def to_json(self) -> dict:
        doc = asdict(self)
        for key in ("window_start", "window_end"):
            doc[key] = doc[key].astimezone().isoformat(timespec="seconds")
        for gap in doc["gaps"]:
            gap["at"] = gap["at"].astimezone().isoformat(timespec="seconds")
        return doc


def collect(home: Home, *, budget: int | None = None, now: datetime | None = None) -> Status:
    now = now or datetime.now(UTC)
    window_start = now - timedelta(hours=COVERAGE_HOURS)
    running = _running(home)
    totals = {"sessions": 0, "seconds": 0.0, "today": 0.0, "words": 0, "words_today": 0}
    expected = captured = 0.0
    gaps: list[Gap] = []
    if home.db_path.exists():
        engine = open_database(home, readonly=True)
        try:
            with db_errors(engine), DbSession(engine) as db:
                totals = _totals(db, now)
                expected, captured, gaps = _coverage(db, window_start, now, running is not None)
        finally:
            engine.dispose()
    return Status(
        home=str(home.root),
        running=running,
        unclean_stop_pid=unclean(home),
        sessions=totals["sessions"],
        hours_total=totals["seconds"] / 3600,
        hours_today=totals["today"] / 3600,
        words_total=totals["words"],
        words_today=totals["words_today"],
        recordings_bytes=folder_bytes(home.recordings),
        database_bytes=folder_bytes(home.db_path.parent),
        disk_budget_bytes=budget,
        window_start=window_start,
        window_end=now,
        expected_seconds=expected,
        captured_seconds=captured,
        gaps=gaps,
    )


def _running(home: Home) -> dict | None:
    """The recorder's status file, if a live process holds the home's lock."""
    path = home.root / STATUS_NAME
    if not path.exists() or not (home.root / LOCK_NAME).exists():
        return None
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    try:
        os.kill(int(state["pid"]), 0)
    except (ProcessLookupError, KeyError, ValueError):
        return None
    except PermissionError:
        pass
    return state


def _totals(db: DbSession, now: datetime) -> dict:
    midnight = now.astimezone().replace(hour=0, minute=0, second=0, microsecond=0)
    seconds = func.coalesce(func.sum(schema.Segment.frames * 1.0 / schema.Segment.rate), 0.0)
    words = (
        select(func.count(schema.Word.id))
        .join(schema.Utterance)
        .where(schema.in_current_transcript())
    )
    return {
        "sessions": db.scalar(select(func.count(schema.Session.id))),
        "seconds": db.scalar(select(seconds)),
        "today": db.scalar(select(seconds).where(schema.Segment.started_at >= midnight)),
        "words": db.scalar(words),
        "words_today": db.scalar(words.where(schema.Utterance.at >= midnight)),
    }


def _coverage(db: DbSession, start: datetime, end: datetime, running: bool):
    """Seconds sessions spanned in the window, seconds really captured, and the gaps."""
    sessions = db.scalars(
        select(schema.Session)
        .where(schema.Session.source_kind != "file")
        .order_by(schema.Session.started_at)
    ).all()
    expected = captured = 0.0
    gaps: list[Gap] = []
    previous_end: datetime | None = None
    for s in sessions:
        s_end = s.started_at + timedelta(seconds=s.seconds or _segment_seconds(s))
        if s.status == "recording" and running:
            s_end = end
        lo, hi = max(s.started_at, start), min(s_end, end)
        if lo >= hi:
            previous_end = s_end
            continue
        expected += (hi - lo).total_seconds()
        captured += (hi - lo).total_seconds()
        events = _events(db, s)
        # a session that began because the timeline broke: the recorder was meant to run
        # (shown even when the clocks put no time between the sessions)
        cause = next((e for e in events if e.kind in TIMELINE_BREAKS and e.offset == 0), None)
        later = previous_end is not None and (s.started_at > previous_end or cause is not None)
        if later and previous_end >= start:
            between = max(0.0, (s.started_at - previous_end).total_seconds())
            if cause is not None:
                expected += between
            reason = "not recording" if cause is None else f"{cause.kind}: {cause.detail}"
            gaps.append(Gap(previous_end, between, reason))
        for e in events:
            if e.kind in {"gap", "crash", "device_switch", "device_lost"} and start <= e.at <= end:
                seconds = e.frames / s.rate
                if e.kind == "gap":
                    captured -= seconds
                gaps.append(
                    Gap(
                        e.at,
                        seconds,
                        e.detail if e.kind == "gap" else f"{e.kind.replace('_', ' ')}: {e.detail}",
                    )
                )
        previous_end = s_end
    return expected, max(0.0, captured), sorted(gaps, key=lambda g: g.at)


def _events(db: DbSession, session: schema.Session) -> list[schema.SessionEvent]:
    return list(
        db.scalars(
            select(schema.SessionEvent)
            .where(schema.SessionEvent.session_id == session.id)
            .order_by(schema.SessionEvent.offset)
        )
    )


def _segment_seconds(session: schema.Session) -> float:
    return max((seg.offset + seg.frames for seg in session.segments), default=0) / session.rate
