"""The indexer: the single writer of the archive's database.

It receives sessions and segments from capture and utterances from the
recognizer, and writes them in short transactions (one per batch of
whatever is waiting), so searchers never wait long. Messages can arrive
out of causal order across the two queues' producers, so anything about a
session not yet known is held until the session's start arrives.
"""

from __future__ import annotations

import logging
import queue
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import selectinload

from . import indexes, lattice, schema
from .config import Home
from .database import db_errors, open_database
from .errors import PipelineError
from .messages import (
    Alternative,
    AudioDeleted,
    ChildFailed,
    Indexed,
    SegmentClosed,
    SegmentCompacted,
    SegmentUploaded,
    SessionEnded,
    SessionEvent,
    SessionIndexed,
    SessionStarted,
    SourceFailed,
    Stop,
    TranscriptDone,
    Utterance,
)
from .process import become_child, nonblocking

log = logging.getLogger(__name__)

BATCH_MAX = 200  # messages per transaction at most
# An utterance overlapping one already indexed by more than this is a repeat: a
# restarted recognizer re-recognizing what the dead one had sent. Utterances may
# arrive out of order (helpers recognize a backlog in pieces), so it is the
# overlap that counts, not the order.
UTTERANCE_OVERLAP_SECONDS = 0.05
LONGEST_UTTERANCE_SECONDS = 60.0  # bounds the overlap look-up (the recognizer cuts at 30)
QUEUE_POLL_SECONDS = 0.25


class Indexer:
    """Writes pipeline messages into the database; usable in-process by tests and tools."""

    def __init__(
        self,
        engine,
        report=None,
        status=None,
        recordings: Path | None = None,
        recorder: str | None = None,
    ) -> None:
        self.engine = engine
        self.recorder = recorder or default_recorder()  # the machine whose sessions these are
        self.recordings = recordings  # where compacted segments' old files are deleted
        self.report = report or (lambda message: None)  # must arrive: session done, failures
        self.status = status or (lambda message: None)  # nice to have: the live view
        self._ids: dict[str, int] = {}  # session key → row id
        self._started: dict[str, datetime] = {}  # session key → UTC wall-clock of frame 0
        self._rate: dict[str, int] = {}
        # (session key, reindexing engine or None) → (transcript id, end of its last utterance)
        self._transcripts: dict[tuple[str, str | None], tuple[int, float]] = {}
        self._waiting: dict[str, list] = defaultdict(list)
        self._counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # utterances, words
        # this transaction's utterances and their alternatives, for the search indexes
        self._added: list[tuple[schema.Utterance, Sequence[Alternative]]] = []
        self._keys: set[int] = set()  # time keys this transaction has given out

    def _known(self, db: DbSession, key: str) -> int | None:
        """A session this indexer did not see start (it was restarted): from the database."""
        row = db.scalar(select(schema.Session).where(schema.Session.key == key))
        if row is None:
            return None
        self.adopt(row)
        return row.id

    def adopt(self, session: schema.Session) -> None:
        """Write for a session already in the database (as repair does)."""
        self._ids[session.key] = session.id
        self._started[session.key] = session.started_at
        self._rate[session.key] = session.rate

    def write(self, messages: list) -> None:
        """Write a batch of messages in one transaction.

        If it fails, what this indexer remembers is put back as it was before the
        batch, so the same batch can be written again later (from the spool).
        """
        after: list = []
        before = self._remembered()
        try:
            with db_errors(self.engine), DbSession(self.engine) as db, db.begin():
                self._added, self._keys = [], set()
                for msg in messages:
                    self._write_one(db, msg, after)
                self._index_sounds(db)
        except BaseException:
            self._ids, self._transcripts, self._waiting, self._counts = before
            raise
        for item in after:
            if isinstance(item, SegmentCompacted):  # committed: the old file may go now
                if self.recordings is not None:
                    (self.recordings / item.old_path).unlink(missing_ok=True)
                continue
            (self.status if isinstance(item, Indexed | SessionEvent) else self.report)(item)

    def _remembered(self) -> tuple:
        """A copy of what the indexer keeps between batches (see :meth:`write`)."""
        waiting = defaultdict(list, {k: list(v) for k, v in self._waiting.items()})
        counts = defaultdict(lambda: [0, 0], {k: list(v) for k, v in self._counts.items()})
        return dict(self._ids), dict(self._transcripts), waiting, counts

    def reconnect(self) -> None:
        """Drop pooled connections (a restarted server's are dead) and check the schema."""
        from .database import migrate

        self.engine.dispose()
        migrate(self.engine)

    def _index_sounds(self, db: DbSession) -> None:
        """The search index rows of the utterances added that the database does not make
        itself (see pipeline.indexes): word pairs, sounds, and on PostgreSQL the words."""
        db.flush()
        rows = [
            indexes.Row(
                u.id,
                u.time_key,
                u.text,
                [w.text for w in u.words],
                u.session_id,
                u.transcript_id,
                alternatives,
            )
            for u, alternatives in self._added
        ]
        indexes.of(db).add(db.connection(), rows, self.recorder)
        self._added = []

    def _write_one(self, db: DbSession, msg, after: list) -> None:
        if isinstance(msg, SessionStarted):
            if self._known(db, msg.key) is not None:  # written before (a spool replayed)
                for held in self._waiting.pop(msg.key, []):
                    self._write_one(db, held, after)
                return
            row = session_row(msg, self.recorder)
            db.add(row)
            db.flush()
            self._ids[msg.key] = row.id
            self._started[msg.key] = msg.started_at
            self._rate[msg.key] = msg.rate
            for held in self._waiting.pop(msg.key, []):
                self._write_one(db, held, after)
            return
        if isinstance(msg, AudioDeleted):  # of any session, this run's or an older one
            self._delete_audio(db, msg, after)
            return
        if isinstance(msg, SegmentCompacted):
            self._compacted(db, msg, after)
            return
        if isinstance(msg, SegmentUploaded):
            self._uploaded(db, msg)
            return
        if isinstance(msg, SourceFailed):
            if msg.session in self._ids:
                db.get(schema.Session, self._ids[msg.session]).status = "failed"
            after.append(msg)
            return
        session_id = self._ids.get(msg.session) or self._known(db, msg.session)
        if session_id is None:
            self._waiting[msg.session].append(msg)
            return
        if isinstance(msg, SegmentClosed):
            if db.scalar(select(schema.Segment.id).where(schema.Segment.path == msg.path)):
                return  # announced again by a capture that carried on a session
            db.add(
                schema.Segment(
                    session_id=session_id,
                    path=msg.path,
                    offset=msg.offset,
                    frames=msg.frames,
                    rate=msg.rate,
                    channels=msg.channels,
                    started_at=msg.started_at,
                )
            )
        elif isinstance(msg, Utterance):
            key = (msg.session, msg.engine if msg.reindex else None)
            transcript, committed = self._transcript(db, session_id, key, msg.engine)
            if msg.start < committed - UTTERANCE_OVERLAP_SECONDS and _overlaps(db, transcript, msg):
                log.info(
                    "%s: skipping an utterance at %.2f s, already indexed (a restart)",
                    msg.session,
                    msg.start,
                )
                return
            self._add_utterance(db, session_id, transcript, msg)
            self._transcripts[key] = (transcript, max(committed, msg.end))
            after.append(Indexed(msg.session, msg.text, msg.start, len(msg.words)))
        elif isinstance(msg, TranscriptDone):
            self._transcript_done(db, session_id, msg)
            after.append(msg)
        elif isinstance(msg, SessionEvent):
            if _has_event(db, session_id, msg):
                return
            db.add(
                schema.SessionEvent(
                    session_id=session_id,
                    offset=msg.offset,
                    kind=msg.kind,
                    detail=msg.detail,
                    frames=msg.frames,
                    at=self._started[msg.session]
                    + timedelta(seconds=msg.offset / self._rate[msg.session]),
                )
            )
            after.append(msg)
        elif isinstance(msg, SessionEnded):
            row = db.get(schema.Session, session_id)
            row.frames = msg.frames
            if row.status == "recording":
                row.status = "complete"
            if row.transcript_id is not None:
                db.get(schema.Transcript, row.transcript_id).finished_at = datetime.now(UTC)
            utts, words = self._counts.pop(msg.session, [0, 0])
            after.append(
                SessionIndexed(
                    msg.session, session_id, row.source, msg.frames / msg.rate, utts, words
                )
            )

    def _compacted(self, db: DbSession, msg: SegmentCompacted, after: list) -> None:
        segment = db.scalar(select(schema.Segment).where(schema.Segment.path == msg.old_path))
        if segment is None and db.scalar(
            select(schema.Segment.id).where(schema.Segment.path == msg.new_path)
        ):
            after.append(msg)  # written before (a spool replayed): the old file may go
            return
        if segment is None or segment.deleted_at is not None:  # deleted meanwhile: drop the copy
            if self.recordings is not None:
                (self.recordings / msg.new_path).unlink(missing_ok=True)
            return
        segment.path = msg.new_path
        after.append(msg)

    def _uploaded(self, db: DbSession, msg: SegmentUploaded) -> None:
        segment = db.scalar(select(schema.Segment).where(schema.Segment.path == msg.path))
        if segment is None:  # compacted meanwhile: the new file is uploaded next time
            log.info("%s changed before its upload was recorded; it is uploaded again", msg.path)
            return
        segment.remote = msg.url

    def _delete_audio(self, db: DbSession, msg: AudioDeleted, after: list) -> None:
        segment = db.scalar(select(schema.Segment).where(schema.Segment.path == msg.path))
        if segment is None or segment.deleted_at is not None:
            return
        segment.deleted_at = datetime.now(UTC)
        detail = f"{Path(msg.path).name} ({msg.bytes / 1e6:.1f} MB): {msg.reason}"
        if segment.remote is not None:
            detail += f"; a copy stays at {segment.remote}"
        db.add(
            schema.SessionEvent(
                session_id=segment.session_id,
                offset=segment.offset,
                at=segment.started_at,
                kind="audio_deleted",
                detail=detail,
                frames=segment.frames,
            )
        )
        after.append(
            SessionEvent(msg.session, segment.offset, "audio_deleted", detail, segment.frames)
        )

    def _transcript(
        self, db: DbSession, session_id: int, key: tuple[str, str | None], engine: str
    ) -> tuple[int, float]:
        """The transcript an utterance goes to, and where its words end so far.

        Recognition as a session is recorded writes the session's own transcript
        (made with its first utterance); a reindex writes the unfinished
        transcript of its engine, made when its first words arrive, or
        carried on after a crash.
        """
        if key in self._transcripts:
            return self._transcripts[key]
        session = db.get(schema.Session, session_id)
        if key[1] is None:
            transcript_id = session.transcript_id
        else:
            transcript_id = db.scalar(schema.open_transcript(session_id, key[1]))
        if transcript_id is None:
            return self._new_transcript(db, session, key, engine)
        end = db.scalar(schema.words_end(transcript_id))
        self._transcripts[key] = (transcript_id, end or 0.0)
        return self._transcripts[key]

    def _new_transcript(
        self, db: DbSession, session: schema.Session, key: tuple[str, str | None], engine: str
    ) -> tuple[int, float]:
        row = schema.Transcript(
            session_id=session.id,
            engine=engine,
            version=engine_version(engine),
            created_at=datetime.now(UTC),
        )
        db.add(row)
        db.flush()
        if key[1] is None:
            session.transcript_id = row.id
        self._transcripts[key] = (row.id, 0.0)
        return self._transcripts[key]

    def _transcript_done(self, db: DbSession, session_id: int, msg: TranscriptDone) -> None:
        """The reindexed transcript becomes the default; words it could not hear stay."""
        key = (msg.session, msg.engine)
        transcript_id, _ = self._transcript(db, session_id, key, msg.engine)
        session = db.get(schema.Session, session_id)
        old = session.transcript_id
        if old is not None and old != transcript_id:
            for utt in db.scalars(
                select(schema.Utterance)
                .where(schema.Utterance.transcript_id == old)
                .options(
                    selectinload(schema.Utterance.words),
                    selectinload(schema.Utterance.alternatives),
                )
            ):
                if not _heard(utt, msg.runs, msg.rate):
                    copy = _copy(utt, transcript_id, self._time_key(db, utt.at))
                    db.add(copy)
                    self._added.append((copy, _alternatives_of(utt)))
        db.get(schema.Transcript, transcript_id).finished_at = datetime.now(UTC)
        session.transcript_id = transcript_id
        self._transcripts.pop(key, None)

    def _add_utterance(
        self, db: DbSession, session_id: int, transcript_id: int, msg: Utterance
    ) -> None:
        at = self._started[msg.session] + timedelta(seconds=msg.start)
        utt = _utterance_row(session_id, transcript_id, msg, at, self._time_key(db, at))
        if msg.alternatives:
            utt.alternatives = schema.Alternatives(graph=lattice.pack(msg.alternatives, msg.start))
        db.add(utt)
        self._added.append((utt, msg.alternatives))
        counts = self._counts[msg.session]
        counts[0] += 1
        counts[1] += len(msg.words)

    def _time_key(self, db: DbSession, at: datetime) -> int:
        """The utterance's :func:`~pipeline.schema.time_key`, or the next free one after it
        (a reindexed transcript has utterances at the very same times)."""
        key = schema.time_key(at)
        column = schema.Utterance.time_key
        with db.no_autoflush:
            while key in self._keys or db.scalar(select(column).where(column == key)) is not None:
                key += 1
        self._keys.add(key)
        return key


def default_recorder() -> str:
    """A recorder's name when none is given: the machine's host name."""
    import socket

    return socket.gethostname() or "localhost"


def engine_version(label: str) -> str:
    """The version of the package behind an engine label ("vosk 0.3.45"), for transcripts."""
    from importlib import metadata

    package = label.split(":", 1)[0]
    try:
        return f"{package} {metadata.version(package)}"
    except metadata.PackageNotFoundError:
        return ""


def _overlaps(db: DbSession, transcript: int, msg: Utterance) -> bool:
    """Whether the transcript already has an utterance overlapping this one."""
    u = schema.Utterance
    return (
        db.scalar(
            select(u.id)
            .where(
                u.transcript_id == transcript,
                u.start > msg.start - LONGEST_UTTERANCE_SECONDS,
                u.start < msg.end - UTTERANCE_OVERLAP_SECONDS,
                u.end > msg.start + UTTERANCE_OVERLAP_SECONDS,
            )
            .limit(1)
        )
        is not None
    )


def _has_event(db: DbSession, session_id: int, msg: SessionEvent) -> bool:
    """Whether the session has this event already (a batch written again from the spool)."""
    e = schema.SessionEvent
    return (
        db.scalar(
            select(e.id)
            .where(
                e.session_id == session_id,
                e.offset == msg.offset,
                e.kind == msg.kind,
                e.detail == msg.detail,
            )
            .limit(1)
        )
        is not None
    )


def session_row(started: SessionStarted, recorder: str = "") -> schema.Session:
    """The database's row for a session that began (the indexer's, or repair's from disk)."""
    return schema.Session(
        key=started.key,
        source_kind=started.source_kind,
        source=started.source,
        started_at=started.started_at,
        rate=started.rate,
        channels=started.channels,
        status="recording",
        recorder=recorder,
    )


def _alternatives_of(utt: schema.Utterance) -> list[Alternative]:
    """A stored utterance's alternatives (none if it has none)."""
    if utt.alternatives is None:
        return []
    return lattice.alternatives(lattice.unpack(utt.alternatives.graph, utt.start))


def _heard(utt: schema.Utterance, runs: tuple[tuple[int, int], ...], rate: int) -> bool:
    """Whether an utterance lies (mostly) in audio that a reindex recognized again."""
    middle = round((utt.start + utt.end) / 2 * rate)
    return any(start <= middle < end for start, end in runs)


def _copy(utt: schema.Utterance, transcript_id: int, time_key: int) -> schema.Utterance:
    """An utterance carried into a newer transcript; it keeps the engine that heard it,
    and what else that engine heard."""
    row = _utterance_row(utt.session_id, transcript_id, utt, utt.at, time_key)
    if utt.alternatives is not None:
        row.alternatives = schema.Alternatives(graph=utt.alternatives.graph)
    return row


def _utterance_row(
    session_id: int, transcript_id: int, utt, at: datetime, time_key: int
) -> schema.Utterance:
    """A new row from an utterance (a message or another row) and its words."""
    row = schema.Utterance(
        session_id=session_id,
        transcript_id=transcript_id,
        start=utt.start,
        end=utt.end,
        at=at,
        time_key=time_key,
        text=utt.text,
        engine=utt.engine,
    )
    row.words = [
        schema.Word(idx=i, text=w.text, start=w.start, end=w.end, confidence=w.confidence)
        for i, w in enumerate(utt.words)
    ]
    return row


def run_indexer(
    home: Home, index_q, report_q, producers: tuple[str, ...], log_q=None, spool: bool = False
) -> None:
    """Process body: write what arrives on ``index_q`` until every producer sent STOP.

    ``spool``: a shared archive that is out of reach does not end the run; the
    writes wait in the home's spool until it is back (see :mod:`pipeline.spool`).
    """
    from .database import where
    from .spool import SPOOL_GRACE_SECONDS, Spool, Writer

    become_child("pipe-indexer", log_q)
    try:
        engine = open_database(home)
        indexer = Indexer(
            engine, report_q.put, nonblocking(report_q), home.recordings, home.recorder_name
        )
        writer = (
            Writer(indexer, Spool.of(home), nonblocking(report_q), where(engine)) if spool else None
        )
        waiting_for = set(producers)
        while waiting_for:
            batch = _next_batch(index_q, QUEUE_POLL_SECONDS if writer and writer.offline else None)
            waiting_for -= {m.sender for m in batch if isinstance(m, Stop)}
            for failure in (m for m in batch if isinstance(m, ChildFailed)):
                report_q.put(failure)
            messages = [m for m in batch if not isinstance(m, Stop | ChildFailed)]
            if writer is None:
                indexer.write(messages)
            else:
                writer.write(messages)
                writer.tick()
        if writer is not None:
            writer.finish(SPOOL_GRACE_SECONDS)
            report_q.put(writer.state())  # must arrive: the run's last word on the archive
    except PipelineError as exc:
        report_q.put(ChildFailed("indexer", str(exc), type(exc).__name__))
        raise SystemExit(1) from exc
    report_q.put(Stop("indexer"))


def _next_batch(index_q, timeout: float | None) -> list:
    """What waits on the queue, up to BATCH_MAX messages (at least one, unless ``timeout``
    passes first: an offline indexer must look at the archive now and then)."""
    try:
        batch = [index_q.get(timeout=timeout)]
    except queue.Empty:
        return []
    while len(batch) < BATCH_MAX:
        try:
            batch.append(index_q.get_nowait())
        except queue.Empty:
            break
    return batch
