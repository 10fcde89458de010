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
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session as DbSession

from . import schema
from .config import Home
from .database import db_errors, open_database, where
from .errors import ArchiveUnreachableError, PipelineError
from .lock import LOCK_NAME, unclean
from .messages import TIMELINE_BREAKS, ChildFailed, Indexed, Level, Progress, SourceFailed
from .retention import folder_bytes
from .spool import Spool

log = logging.getLogger(__name__)
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
    archive: str = ""  # the database: this home's file, or a shared server (no password)
    archive_error: str | None = None  # a shared archive out of reach: why
    recorders: list[RecorderInfo] = field(default_factory=list)  # a shared archive's
    spool_waiting: int = 0  # batches of index writes kept here while the archive was away
    spool_since: datetime | None = None

    def to_json(self) -> dict:
        doc = asdict(self)
        for key in ("window_start", "window_end", "spool_since"):
            if doc[key] is not None:
                doc[key] = doc[key].astimezone().isoformat(timespec="seconds")
        for gap in doc["gaps"]:
            gap["at"] = gap["at"].astimezone().isoformat(timespec="seconds")
        for r in doc["recorders"]:
            for key in ("heartbeat_at", "started_at"):
                if r[key] is not None:
                    r[key] = r[key].astimezone().isoformat(timespec="seconds")
        return doc


@dataclass
class RecorderInfo:
    """A recorder of a shared archive, as it last said (see ``schema.Recorder``)."""

    name: str
    host: str
    state: str
    started_at: datetime | None
    heartbeat_at: datetime | None
    lag_seconds: float
    serve_url: str | None
    sessions: int
    hours: float


def _sqlite_bytes(path: Path) -> int:
    """The SQLite archive's size on disk: the file and its write-ahead log and index."""
    files = (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm"))
    return sum(f.stat().st_size for f in files if f.exists())


def collect(home: Home, *, budget: int | None = None, now: datetime | None = None) -> Status:
    now = now or datetime.now(UTC)
    window_start = now - timedelta(hours=COVERAGE_HOURS)
    running = _running(home)
    totals = {"sessions": 0, "seconds": 0.0, "today": 0.0, "words": 0, "words_today": 0}
    expected = captured = 0.0
    gaps: list[Gap] = []
    recorders: list[RecorderInfo] = []
    archive, problem, database_bytes = str(home.db_path), None, _sqlite_bytes(home.db_path)
    if home.shared or home.db_path.exists():
        engine = open_database(home, readonly=True)
        archive = where(engine)
        try:
            with db_errors(engine), DbSession(engine) as db:
                totals = _totals(db, now)
                mine = home.recorder_name if home.shared else None
                expected, captured, gaps = _coverage(
                    db, window_start, now, running is not None, mine
                )
                if home.shared:
                    recorders = _recorders(db)
                    database_bytes = db.scalar(text("SELECT pg_database_size(current_database())"))
        except ArchiveUnreachableError as exc:
            problem = str(exc)
        finally:
            engine.dispose()
    waiting, since = Spool.of(home).count()
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
        database_bytes=database_bytes,
        disk_budget_bytes=budget,
        window_start=window_start,
        window_end=now,
        expected_seconds=expected,
        captured_seconds=captured,
        gaps=gaps,
        archive=archive,
        archive_error=problem,
        recorders=recorders,
        spool_waiting=waiting,
        spool_since=since,
    )


def _recorders(db: DbSession) -> list[RecorderInfo]:
    """Every recorder the archive knows: the table's rows, and the names its sessions carry."""
    s = schema.Session
    seconds = func.coalesce(func.sum(s.frames * 1.0 / s.rate), 0.0)
    counts = {
        name: (n, hours / 3600)
        for name, n, hours in db.execute(
            select(s.recorder, func.count(s.id), seconds).group_by(s.recorder)
        )
    }
    rows = {r.name: r for r in db.scalars(select(schema.Recorder))}
    out = []
    for name in sorted(set(counts) | set(rows)):
        r = rows.get(name)
        n, hours = counts.get(name, (0, 0.0))
        out.append(
            RecorderInfo(
                name=name,
                host=r.host if r else "",
                state=r.state if r else "unknown",
                started_at=r.started_at if r else None,
                heartbeat_at=r.heartbeat_at if r else None,
                lag_seconds=r.lag_seconds if r else 0.0,
                serve_url=r.serve_url if r else None,
                sessions=n,
                hours=hours,
            )
        )
    return out


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


def _coverage(
    db: DbSession, start: datetime, end: datetime, running: bool, recorder: str | None = None
):
    """Seconds sessions spanned in the window, seconds really captured, and the gaps
    (of this ``recorder``'s sessions, in a shared archive)."""
    mine = [] if recorder is None else [schema.Session.recorder == recorder]
    sessions = db.scalars(
        select(schema.Session)
        .where(schema.Session.source_kind != "file", *mine)
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


HEARTBEAT_SECONDS = 10.0


class Beacon(threading.Thread):
    """A recorder's row in a shared archive, kept current while it runs: a heartbeat
    every :data:`HEARTBEAT_SECONDS` with the recognizer's lag, "stopped" at the end.

    A thread of the supervisor's own, so a slow or absent server never holds up the
    run; while the archive is out of reach the heartbeats are simply skipped (the
    indexer's spool keeps the words, see :mod:`pipeline.spool`).
    """

    def __init__(self, home: Home, run: RunFile, state: str) -> None:
        super().__init__(name="beacon", daemon=True)
        self.home = home
        self.run_file = run
        self.state = state
        self.started = datetime.now(UTC)
        self.stopping = threading.Event()

    def run(self) -> None:
        engine = open_database(self.home)
        try:
            while True:
                self._say(engine, self.state)
                if self.stopping.wait(HEARTBEAT_SECONDS):
                    break
            self._say(engine, "stopped")
        finally:
            engine.dispose()

    def _say(self, engine, state: str) -> None:
        import socket

        try:
            with db_errors(engine), DbSession(engine) as db, db.begin():
                row = db.get(schema.Recorder, self.home.recorder_name)
                if row is None:
                    row = schema.Recorder(name=self.home.recorder_name)
                    db.add(row)
                row.host = socket.gethostname()
                row.pid = os.getpid()
                row.started_at = self.started
                row.heartbeat_at = datetime.now(UTC)
                row.state = state
                row.lag_seconds = float(self.run_file.state.get("lag_seconds") or 0.0)
        except PipelineError as exc:  # out of reach, or busy: the next beat tries again
            log.info("no heartbeat this time: %s", exc)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=15)
