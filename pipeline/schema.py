"""The archive's tables, as SQLAlchemy 2.0 models.

Alembic's migrations in ``alembic/versions`` create and upgrade these tables;
the models are what the code reads and writes. Times inside a session are
seconds from the session's first frame (``start``/``end``); ``started_at``
columns are UTC wall-clock times, and ``utterances.at`` denormalises the
utterance's wall-clock start so "newest first" and date filters need no join.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    func,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, aliased, mapped_column, relationship
from sqlalchemy.orm import Session as DbSession

from .errors import NotFoundError


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive text in UTC;
    PostgreSQL's timestamptz is given the offset, so its session time zone never matters)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        utc = value.astimezone(UTC)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        return None if value is None else as_utc(value)


def as_utc(value: datetime) -> datetime:
    """A time as read from either database, aware in UTC: SQLite's naive UTC, or
    PostgreSQL's with its session's offset."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class Session(Base):
    """One continuous recording: an ingested file, later a live source."""

    __tablename__ = "sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    source_kind: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    rate: Mapped[int] = mapped_column(Integer)
    channels: Mapped[int] = mapped_column(Integer)
    # frame counts and offsets pass 2**31 after 12 h at 48 kHz: 64-bit (migration 0008)
    frames: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="recording")
    # the transcript search shows by default: the first one, until a reindex finishes
    transcript_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # the machine that recorded it (`--recorder`, default its host name), whose disk has
    # the audio; sessions from before migration 0008 belong to the machine that migrated
    recorder: Mapped[str] = mapped_column(String(128), default="")

    segments: Mapped[list[Segment]] = relationship(
        back_populates="session", order_by="Segment.offset"
    )

    @property
    def seconds(self) -> float:
        return (self.frames or 0) / self.rate


class Segment(Base):
    """One audio file of a session; ``offset`` is its first frame in the session."""

    __tablename__ = "segments"
    __table_args__ = (Index("ix_segments_session_offset", "session_id", "offset"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(Text, unique=True)
    offset: Mapped[int] = mapped_column(BigInteger)
    frames: Mapped[int] = mapped_column(BigInteger)
    rate: Mapped[int] = mapped_column(Integer)
    channels: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # a copy in object storage (``s3://bucket/key``, migration 0009): where the audio is
    # read from once the file is not on this machine's disk
    remote: Mapped[str | None] = mapped_column(Text, nullable=True)

    session: Mapped[Session] = relationship(back_populates="segments")

    @property
    def start(self) -> float:
        return self.offset / self.rate

    @property
    def end(self) -> float:
        return (self.offset + self.frames) / self.rate


class Transcript(Base):
    """A session recognized by one engine and model; a reindex adds another, and both stay."""

    __tablename__ = "transcripts"
    __table_args__ = (Index("ix_transcripts_session_engine", "session_id", "engine"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    engine: Mapped[str] = mapped_column(String(128))  # "vosk:vosk-model-small-en-us-0.15"
    version: Mapped[str] = mapped_column(String(64), default="")  # the engine's package
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Utterance(Base):
    """Speech between two pauses; its text is what the FTS5 index searches."""

    __tablename__ = "utterances"
    __table_args__ = (
        Index("ix_utterances_at", "at"),
        Index("ix_utterances_session_start", "session_id", "start"),
        Index("ix_utterances_transcript", "transcript_id", "start"),
        # unique on SQLite, where it is the full-text index's rowid (migration 0007)
        Index("ix_utterances_time_key", "time_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    start: Mapped[float] = mapped_column(Float)
    end: Mapped[float] = mapped_column(Float)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    # ``at`` in microseconds since 1970, unique: search's "newest first" order
    time_key: Mapped[int] = mapped_column(BigInteger)
    text: Mapped[str] = mapped_column(Text)
    engine: Mapped[str] = mapped_column(String(128))
    # no database constraint (see migration 0004); deleted with the session
    transcript_id: Mapped[int | None] = mapped_column(ForeignKey("transcripts.id"), nullable=True)

    words: Mapped[list[Word]] = relationship(back_populates="utterance", order_by="Word.idx")
    session: Mapped[Session] = relationship()
    # what else the recognizer heard (None: it gave nothing, or the utterance is older)
    alternatives: Mapped[Alternatives | None] = relationship(
        cascade="all, delete-orphan", passive_deletes=True
    )


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def time_key(at: datetime) -> int:
    """An utterance's place in time as an integer: microseconds since 1970 (UTC).

    The full-text index uses it as its rowid, so matches come out in time order
    (migration 0007); the indexer makes it unique by taking the next free
    microsecond when two utterances start at the same one.
    """
    return (at - EPOCH) // timedelta(microseconds=1)


def session_named(text: str | int):
    """Where-clause: the session a user named, by its id (all digits) or its key."""
    text = str(text).strip()
    return Session.id == int(text) if text.isdigit() else Session.key == text


def find_session(db: DbSession, text: str | int) -> Session:
    """The session a user named (an id or a key); one that is not there is an error that
    says where the names are, so that a mistyped one never reads as "nothing found"."""
    found = db.scalar(select(Session).where(session_named(text)))
    if found is None:
        raise NotFoundError(
            f"no session {str(text).strip()[:70]!r}; `pipeline sessions` lists them"
        )
    return found


def open_transcript(session_id, engine: str):
    """Select: the session's newest unfinished transcript by ``engine`` (a reindex under
    way, or one that was interrupted)."""
    return (
        select(Transcript.id)
        .where(
            Transcript.session_id == session_id,
            Transcript.engine == engine,
            Transcript.finished_at.is_(None),
        )
        .order_by(Transcript.id.desc())
        .limit(1)
    )


def words_end(transcript_id):
    """Select: where a transcript's words end, in session seconds (None if it has none)."""
    return select(func.max(Utterance.end)).where(Utterance.transcript_id == transcript_id)


def in_current_transcript():
    """Where-clause: the utterance belongs to its session's default transcript."""
    owner = aliased(Session)  # never correlated with a Session the outer query joins
    return Utterance.transcript_id == (
        select(owner.transcript_id).where(owner.id == Utterance.session_id).scalar_subquery()
    )


class Word(Base):
    """One recognized word with its session-absolute times and confidence."""

    __tablename__ = "words"
    __table_args__ = (Index("ix_words_utterance_idx", "utterance_id", "idx"),)

    # 64-bit on PostgreSQL, where many recorders share one table (SQLite's always are)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    utterance_id: Mapped[int] = mapped_column(ForeignKey("utterances.id", ondelete="CASCADE"))
    idx: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    start: Mapped[float] = mapped_column(Float)
    end: Mapped[float] = mapped_column(Float)
    confidence: Mapped[float] = mapped_column(Float)

    utterance: Mapped[Utterance] = relationship(back_populates="words")


class Recorder(Base):
    """A machine that records into the archive, as it last said: a heartbeat every few
    seconds while it runs, how far behind its recognizer is, and where its `pipeline
    serve` answers other machines' requests for audio."""

    __tablename__ = "recorders"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    host: Mapped[str] = mapped_column(String(255), default="")
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    state: Mapped[str] = mapped_column(String(32), default="stopped")  # recording, stopped
    lag_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    serve_url: Mapped[str | None] = mapped_column(Text, nullable=True)


class Alternatives(Base):
    """An utterance's word graph: the words the recognizer weighed, its own among them.

    One row per utterance, packed by :func:`pipeline.lattice.pack` (a few
    hundred bytes): ``search --fuzzy`` reads them for its candidates only, and
    a row per word would take three times the space.
    """

    __tablename__ = "alternatives"

    utterance_id: Mapped[int] = mapped_column(
        ForeignKey("utterances.id", ondelete="CASCADE"), primary_key=True
    )
    graph: Mapped[bytes] = mapped_column(LargeBinary)


class SessionEvent(Base):
    """A gap, device switch or overflow in a live session, at a session frame."""

    __tablename__ = "session_events"
    __table_args__ = (Index("ix_session_events_session", "session_id", "offset"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    offset: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    kind: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text)
    frames: Mapped[int] = mapped_column(BigInteger, default=0)
