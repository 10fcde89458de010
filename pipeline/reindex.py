"""Re-transcribing the archive: `pipeline reindex` recognizes stored audio with another model.

Each run of a model over a session is a *transcript*; the old ones are kept
and the newest complete one is what search shows (``search --model`` asks
for another). Work is planned from the database: which sessions, which of
their audio is still on disk (the disk budget may have deleted some: it is
skipped, and the old words over it are carried into the new transcript),
and where an interrupted reindex of the same model stopped (it carries on
from its last committed word). Recognizers take whole sessions from one
queue; the indexer stays the single writer::

    plan ──Retranscribe──▶ recognizer × N ──Utterance / TranscriptDone──▶ indexer
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import queue
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from . import schema
from .config import Home
from .database import db_errors, open_archive
from .errors import Interrupted, ProcessDiedError
from .index import run_indexer
from .lock import hold
from .logs import collected
from .messages import ChildFailed, Retranscribe, Stop
from .process import shut_down, start_children
from .recognize import EngineSpec, recognizer_process

log = logging.getLogger(__name__)

REPORT_POLL_SECONDS = 0.2


@dataclass(frozen=True)
class Skipped:
    """A session the plan leaves alone, and why."""

    session_id: int
    key: str
    reason: str


@dataclass
class Plan:
    """What a reindex will do: the work, and the sessions it skips."""

    engine: str
    jobs: list[Retranscribe] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    deleted_seconds: float = 0.0  # audio the disk budget deleted, in the chosen sessions

    @property
    def seconds(self) -> float:
        """Audio left to recognize."""
        return sum(job_seconds(job) for job in self.jobs)


def job_seconds(job: Retranscribe) -> float:
    return sum(max(0, end - max(start, job.start)) for start, end in job.runs) / job.rate


def plan(
    home: Home,
    engine: str,
    *,
    session: str | None = None,
    since: datetime | None = None,
) -> Plan:
    """The work to recognize the chosen sessions (all by default) with ``engine``."""
    db_engine = open_archive(home)
    try:
        with db_errors(db_engine), DbSession(db_engine) as db:
            work = Plan(engine)
            for s in _chosen(db, session, since):
                _plan_session(db, home, s, work)
            return work
    finally:
        db_engine.dispose()


def _chosen(db: DbSession, session: str | None, since: datetime | None) -> list[schema.Session]:
    stmt = select(schema.Session).order_by(schema.Session.started_at)
    if session is not None:
        stmt = stmt.where(schema.Session.id == schema.find_session(db, session).id)
    if since is not None:
        stmt = stmt.where(schema.Session.started_at >= since)
    return list(db.scalars(stmt))


def _plan_session(db: DbSession, home: Home, s: schema.Session, work: Plan) -> None:
    def skip(reason: str) -> None:
        work.skipped.append(Skipped(s.id, s.key, reason))

    recordings = home.recordings
    if s.recorder != home.recorder_name and not (recordings / s.key).is_dir():
        skip(f"recorded by {s.recorder}, whose disk has its audio: reindex it there")
        return
    if s.status == "recording" or not s.frames:
        skip("still recording, or not repaired after a crash (run `pipeline repair`)")
        return
    done = db.scalar(
        select(schema.Transcript.id).where(
            schema.Transcript.session_id == s.id,
            schema.Transcript.engine == work.engine,
            schema.Transcript.finished_at.is_not(None),
        )
    )
    if done is not None:
        skip(f"already transcribed by {work.engine}")
        return
    runs, anchors, deleted = _audio_on_disk(recordings, s)
    work.deleted_seconds += deleted / s.rate
    if not runs:
        skip("its audio was deleted by the disk budget; its words are kept")
        return
    start = _resume_frame(db, s, work.engine)
    work.jobs.append(
        Retranscribe(s.key, s.rate, s.channels, s.frames, tuple(runs), tuple(anchors), start)
    )


def _audio_on_disk(recordings: Path, s: schema.Session):
    """Stretches [start, end) of the session whose files exist, their first files, and
    how many frames are gone."""
    runs: list[tuple[int, int]] = []
    anchors: list[tuple[str, int]] = []
    deleted = 0
    for seg in s.segments:
        if seg.deleted_at is not None or not (recordings / seg.path).exists():
            deleted += seg.frames
            continue
        if runs and runs[-1][1] == seg.offset:
            runs[-1] = (runs[-1][0], seg.offset + seg.frames)
        else:
            runs.append((seg.offset, seg.offset + seg.frames))
            anchors.append((seg.path, seg.offset))
    return runs, anchors, deleted


def _resume_frame(db: DbSession, s: schema.Session, engine: str) -> int:
    """Where an unfinished transcript by this engine ends: an interrupted reindex."""
    transcript = schema.open_transcript(s.id, engine).scalar_subquery()
    return round((db.scalar(schema.words_end(transcript)) or 0.0) * s.rate)


def run(
    home: Home,
    spec: EngineSpec,
    work: Plan,
    *,
    jobs: int = 1,
    on_event: Callable[[object], None] | None = None,
) -> None:
    """Recognize the plan's sessions with ``jobs`` recognizers; the caller holds the lock.

    A crash or Ctrl+C keeps what was committed; running the same reindex
    again carries on from there.
    """
    if not work.jobs:
        return
    notify = on_event or (lambda event: None)
    ctx = mp.get_context("spawn")
    work_q, index_q, report_q, log_q = ctx.Queue(), ctx.Queue(), ctx.Queue(), ctx.Queue()
    names = [f"recognizer-{k + 1}" for k in range(max(1, min(jobs, len(work.jobs))))]
    for job in work.jobs:
        work_q.put(job)
    for _ in names:
        work_q.put(Stop("plan"))
    procs = [
        recognizer_process(
            ctx,
            spec,
            work_q,
            index_q,
            name=name,
            home=home,
            report_q=report_q,
            log_q=log_q,
        )
        for name in names
    ]
    procs.append(
        ctx.Process(
            target=run_indexer,
            name="pipeline-indexer",
            args=(home, index_q, report_q, tuple(names)),
            kwargs={"log_q": log_q},
        )
    )
    with collected(home, log_q):
        start_children(procs)  # born deaf to Ctrl+C: this process decides
        try:
            _watch(procs, report_q, notify)
        except KeyboardInterrupt:
            raise Interrupted(
                "reindex interrupted; the words it committed are kept, "
                "and running it again carries on from there"
            ) from None
        finally:
            shut_down(procs)


def _watch(procs: list[mp.Process], report_q, notify) -> None:
    """Relay the children's reports until the indexer is done; a death ends the run."""
    while True:
        try:
            msg = report_q.get(timeout=REPORT_POLL_SECONDS)
        except queue.Empty:
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise ProcessDiedError(
                    f"reindex stopped: the {dead[0].name.removeprefix('pipeline-')} died "
                    f"(exit code {dead[0].exitcode}); run it again to carry on"
                ) from None
            continue
        if isinstance(msg, Stop):
            return
        if isinstance(msg, ChildFailed):
            raise ProcessDiedError(f"reindex stopped: {msg.stage} failed: {msg.message}")
        notify(msg)


def reindex(
    home: Home,
    spec: EngineSpec,
    *,
    session: str | None = None,
    since: datetime | None = None,
    jobs: int = 1,
    on_event: Callable[[object], None] | None = None,
    repair_spec: EngineSpec | None = None,
) -> Plan:
    """Plan and run a reindex under the home's lock; the plan is sent to ``on_event`` first."""
    from .repair import repair

    notify = on_event or (lambda event: None)
    with hold(home) as held:
        if held.stale_pid is not None:  # the last run died: finish its sessions first
            for action in repair(home, spec=repair_spec or EngineSpec()):
                notify(action)
        work = plan(home, spec.label, session=session, since=since)
        notify(work)
        run(home, spec, work, jobs=jobs, on_event=notify)
    return work
