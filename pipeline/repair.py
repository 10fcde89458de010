"""Repair: make the archive whole again after a crash, a kill or a power cut.

What an unclean stop can leave behind, and what repair does about it:

- ``*.wav.part`` files (a segment being written): the header is made to
  match the data (capture keeps it current, so this is rarely needed) and
  the file is renamed to ``*.wav``;
- segment files the database does not know (their ``SegmentClosed`` never
  reached the indexer): added, placed in the session by their start time;
  a session folder the database does not know at all becomes a session;
- audio that was recorded but never indexed: every session still marked
  "recording" (its end never reached the indexer) is recognized again from
  the end of its last indexed utterance to the end of its audio, then
  marked complete.

Each step looks at the state first, so running repair twice changes nothing
the second time; ``dry_run`` only says what would be done.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import soundfile as sf
from sqlalchemy import func, select
from sqlalchemy.orm import Session as DbSession

from . import schema
from .capture import CHUNK_SECONDS, PART_SUFFIX, fix_wav_header, read_session_file
from .compact import COMPACTING_SUFFIX
from .config import Home
from .database import db_errors, open_archive
from .index import Indexer, session_row
from .messages import Audio, SessionStarted
from .recognize import EngineSpec, Transcriber
from .segment_file import read_frames

log = logging.getLogger(__name__)

_SEGMENT_NAME = re.compile(r"^(\d{8}T\d{6})\.(\d{3})Z\.(wav|flac|opus)$")


@dataclass(frozen=True)
class Action:
    """One thing repair did (or, with --dry-run, would do)."""

    kind: str  # "finalize", "add-session", "add-segment", "recognize"
    target: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind:12} {self.target}: {self.detail}"


def repair(
    home: Home,
    *,
    dry_run: bool = False,
    spec: EngineSpec | None = None,
    on_action: Callable[[Action], None] | None = None,
) -> list[Action]:
    """Repair the home's recordings and archive; returns the actions taken (or planned)."""
    done: list[Action] = []

    def act(action: Action) -> None:
        done.append(action)
        log.info("repair: %s", action)
        if on_action:
            on_action(action)

    for part in sorted(home.recordings.glob(f"*/*.wav{PART_SUFFIX}")):
        _finalize(part, dry_run, act)
    engine = open_archive(home)
    try:
        with db_errors(engine), DbSession(engine) as db:
            db.begin()
            removed = _clean_compaction(home, db, dry_run, act)
            _add_unknown(home, db, dry_run, act, removed)
            if dry_run:  # plan the recognition as if the segments were added, then forget
                _plan_recognition(db, home, act)
                db.rollback()
                return done
            db.commit()
        _recognize_unfinished(home, engine, spec or EngineSpec(), act)
    finally:
        engine.dispose()
    return done


# --- part files ---------------------------------------------------------------


def _finalize(part: Path, dry_run: bool, act) -> None:
    final = part.with_name(part.name.removesuffix(PART_SUFFIX))
    if final.exists():
        act(Action("finalize", str(part), f"skipped: {final.name} exists already"))
        return
    frames = fix_wav_header(part, dry_run=dry_run)
    act(Action("finalize", str(part), f"{frames} frames, renamed to {final.name}"))
    if not dry_run:
        os.replace(part, final)


# --- compactions cut short ----------------------------------------------------------


def _clean_compaction(home: Home, db: DbSession, dry_run: bool, act) -> set[Path]:
    """Remove what a compaction cut short left: its temporary file, or a second copy.

    A segment is compacted by writing the new file, pointing the archive at it,
    then deleting the old one; a crash in between leaves two files of one
    segment, and the one the archive does not point at goes. Returns what
    was (or, in a dry run, would be) removed.
    """
    removed: set[Path] = set()
    for tmp in sorted(home.recordings.glob(f"*/*{COMPACTING_SUFFIX}")):
        act(Action("clean", str(tmp), "an unfinished compaction's temporary file, removed"))
        if not dry_run:
            tmp.unlink()
    known = set(db.scalars(select(schema.Segment.path)))
    for folder in sorted(p for p in home.recordings.iterdir() if p.is_dir()):
        by_stem: dict[str, list[Path]] = {}
        for f in sorted(folder.iterdir()):
            if _SEGMENT_NAME.match(f.name):
                by_stem.setdefault(f.name.rsplit(".", 1)[0], []).append(f)
        for copies in (c for c in by_stem.values() if len(c) > 1):
            keep = next((c for c in copies if str(c.relative_to(home.recordings)) in known), None)
            for f in copies:
                if f != (keep or copies[0]):
                    act(Action("clean", str(f), "a second copy of a compacted segment, removed"))
                    removed.add(f)
                    if not dry_run:
                        f.unlink()
    return removed


# --- segments and sessions the database does not know ------------------------------


def _add_unknown(home: Home, db: DbSession, dry_run: bool, act, removed: set[Path]) -> None:
    known_paths = set(db.scalars(select(schema.Segment.path)))
    for folder in sorted(p for p in home.recordings.iterdir() if p.is_dir()):
        files = sorted(f for f in _segment_files(folder, dry_run) if _SEGMENT_NAME.match(f.name))
        files = [f for f in files if f not in removed]
        new = [f for f in files if str(f.relative_to(home.recordings)) not in known_paths]
        if not new:
            continue
        session = db.scalar(select(schema.Session).where(schema.Session.key == folder.name))
        if session is None:
            session = _new_session(home, folder, files[0], db, act)
        for f in new:
            _add_segment(home, f, session, db, act)


def _segment_files(folder: Path, dry_run: bool) -> list[Path]:
    """The folder's segments; in a dry run, ``*.wav.part`` files count as finalized."""
    files = [f for f in folder.iterdir() if _SEGMENT_NAME.match(f.name)]
    if dry_run:
        files += [
            p.with_name(p.name.removesuffix(PART_SUFFIX))
            for p in folder.glob(f"*.wav{PART_SUFFIX}")
        ]
    return files


def _info(path: Path):
    """sf.info of a segment, or of its ``.part`` while a dry run leaves it unrenamed."""
    part = path.with_name(path.name + PART_SUFFIX)
    return sf.info(str(path if path.exists() or not part.exists() else part))


def _new_session(home: Home, folder: Path, first: Path, db: DbSession, act):
    """A session the database does not know, as its ``session.json`` describes it (a folder
    from before there were such files: its first segment's time and format, source unknown)."""
    said = read_session_file(folder)
    if said is None:
        info = _info(first)
        said = SessionStarted(
            key=folder.name,
            source_kind="unknown",
            source="(recovered by pipeline repair)",
            started_at=_segment_start(first),
            rate=info.samplerate,
            channels=info.channels,
        )
    session = session_row(said, home.recorder_name)
    act(
        Action(
            "add-session",
            folder.name,
            f"found on disk, started {session.started_at}, source {session.source}",
        )
    )
    db.add(session)
    db.flush()
    return session


def _add_segment(home: Home, f: Path, session, db: DbSession, act) -> None:
    info = _info(f)
    started = _segment_start(f)
    # a file's name keeps whole milliseconds, so the first one's time can be a fraction
    # of one before the session's exact start (from session.json): that is frame 0
    offset = max(0, round((started - session.started_at).total_seconds() * session.rate))
    before = [s for s in session.segments if s.offset <= offset]
    if before:  # contiguous with the segment before it: place it exactly
        prev = max(before, key=lambda s: s.offset)
        if abs(prev.offset + prev.frames - offset) < session.rate // 100:
            offset = prev.offset + prev.frames
    act(
        Action(
            "add-segment",
            str(f.relative_to(home.recordings)),
            f"{info.frames} frames at {offset / session.rate:.2f} s",
        )
    )
    segment = schema.Segment(
        session_id=session.id,
        path=str(f.relative_to(home.recordings)),
        offset=offset,
        frames=info.frames,
        rate=info.samplerate,
        channels=info.channels,
        started_at=started,
    )
    db.add(segment)
    session.segments.append(segment)
    if session.status == "complete":  # audio it did not know of: recognize it too
        session.status = "recording"


def _segment_start(path: Path) -> datetime:
    m = _SEGMENT_NAME.match(path.name)
    stamp = datetime.strptime(m.group(1), "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    return stamp.replace(microsecond=int(m.group(2)) * 1000)


# --- audio never indexed --------------------------------------------------------------


def _unfinished(db: DbSession, home: Home) -> list[tuple[schema.Session, int, int]]:
    """This home's sessions whose end never reached the indexer: (session, indexed up to,
    audio end). In a shared archive another recorder's session is "recording" while it
    records; it is not ours to finish: ours have their folder here (or, if none, our name
    and no audio)."""
    work = []
    for s in db.scalars(select(schema.Session).where(schema.Session.status == "recording")):
        here = (home.recordings / s.key).is_dir()
        if not here and (s.recorder != home.recorder_name or s.segments):
            continue
        indexed_to = (
            db.scalar(
                select(func.max(schema.Utterance.end)).where(
                    schema.Utterance.session_id == s.id, schema.in_current_transcript()
                )
            )
            or 0.0
        )
        end = max((seg.offset + seg.frames for seg in s.segments), default=0)
        work.append((s, round(indexed_to * s.rate), end))
    return work


def _recognize_action(session: schema.Session, start: int, end: int) -> Action:
    seconds = max(0, end - start) / session.rate
    return Action(
        "recognize",
        session.key,
        f"{seconds:.1f} s never indexed, from {start / session.rate:.1f} s",
    )


def _plan_recognition(db: DbSession, home: Home, act) -> None:
    for session, start, end in _unfinished(db, home):
        act(_recognize_action(session, start, end))


def _recognize_unfinished(home: Home, engine, spec: EngineSpec, act) -> None:
    with db_errors(engine), DbSession(engine) as db:
        work = _unfinished(db, home)
        db.expunge_all()
    recognizer = None
    for session, start, end in work:
        act(_recognize_action(session, start, end))
        recognizer = recognizer or spec.build()
        indexer = Indexer(engine, recorder=home.recorder_name)
        indexer.adopt(session)
        transcriber = Transcriber(
            recognizer, session.key, session.rate, session.channels, start=start
        )
        for audio in _audio(home, session, start, end):
            indexer.write(transcriber.feed(audio))
        indexer.write(transcriber.finish())
        with db_errors(engine), DbSession(engine) as db, db.begin():
            row = db.get(schema.Session, session.id)
            row.frames, row.status = end, "complete"
            db.add(
                schema.SessionEvent(
                    session_id=row.id,
                    offset=end,
                    kind="crash",
                    frames=0,
                    at=row.started_at + timedelta(seconds=end / row.rate),
                    detail="the recorder stopped uncleanly here; recovered by pipeline repair",
                )
            )


def _audio(home: Home, session, start: int, end: int) -> Iterator[Audio]:
    """The session's audio from frame ``start`` to ``end``, read from its segments."""
    chunk = round(CHUNK_SECONDS * session.rate)
    for seg in sorted(session.segments, key=lambda s: s.offset):
        lo, hi = max(start, seg.offset), min(end, seg.offset + seg.frames)
        if lo >= hi:
            continue
        for offset in range(lo, hi, chunk):
            path = home.recordings / seg.path
            data = read_frames(path, offset - seg.offset, min(chunk, hi - offset), session.rate)
            if not len(data):
                break
            yield Audio(
                session.key,
                offset,
                session.rate,
                session.channels,
                np.ascontiguousarray(data).tobytes(),
            )
