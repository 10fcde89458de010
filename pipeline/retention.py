"""The disk budget: past it, the oldest audio goes first; the words stay forever.

:func:`over_budget` picks the oldest finished segments whose deletion brings
the recordings folder under the budget (those with a copy in object storage
first: deleting them loses nothing); the supervisor deletes them and
tells the indexer, which marks each segment deleted and records a session
event, so `sessions`, `status`, `play` and `clip` can say which audio is gone
and why. Every deletion is logged: retention never deletes silently.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from . import schema
from .config import Home
from .database import db_errors
from .messages import AudioDeleted

log = logging.getLogger(__name__)

CHECK_EVERY_SECONDS = 10.0


def folder_bytes(path: Path) -> int:
    """Bytes of every file under ``path`` (0 if it does not exist)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def recordings_bytes(home: Home) -> int:
    return folder_bytes(home.recordings)


def over_budget(
    home: Home, engine, budget: int, copied: frozenset[str] = frozenset()
) -> list[tuple[str, str, int]]:
    """Finished segments on this disk to delete to fit ``budget``: (session key, path,
    bytes); those with a copy in object storage (or in ``copied``: uploaded, not yet
    recorded) first, each kind oldest first. Rows whose file is not here (another
    recorder's, in a shared archive) are never chosen: deleting them frees nothing here,
    and marking them deleted would lose their audio for everyone."""
    excess = recordings_bytes(home) - budget
    if excess <= 0:
        return []
    chosen = []
    with db_errors(engine), DbSession(engine) as db:
        rows = db.execute(
            select(schema.Session.key, schema.Segment.path, schema.Segment.remote)
            .join(schema.Segment.session)
            .where(schema.Segment.deleted_at.is_(None))
            .order_by(schema.Segment.started_at)
        ).all()
    rows.sort(key=lambda r: r.remote is None and r.path not in copied)  # stable: by age
    for key, path, _ in rows:
        try:
            size = (home.recordings / path).stat().st_size
        except FileNotFoundError:  # another recorder's, in a shared archive: not on this disk
            continue
        chosen.append((key, path, size))
        excess -= size
        if excess <= 0:
            break
    return chosen


def enforce(
    home: Home, engine, budget: int, send, copied: frozenset[str] = frozenset()
) -> list[AudioDeleted]:
    """Delete what :func:`over_budget` picks; ``send`` tells the indexer of each."""
    done = []
    for key, path, size in over_budget(home, engine, budget, copied):
        Path(home.recordings / path).unlink(missing_ok=True)
        msg = AudioDeleted(key, path, size, f"disk budget {budget / 1e6:.1f} MB reached")
        log.info("deleted %s (%d bytes): %s; its words are kept", path, size, msg.reason)
        send(msg)
        done.append(msg)
    return done
