"""Copying an archive into another: a single machine's SQLite file into the shared server.

``pipeline db copy --from sqlite --to postgresql://…`` moves what one machine
recorded into the archive that many share (or back, or between any two).
Both are first brought to the newest schema. Each session is copied whole in
one transaction of the destination, with its transcripts, segments, events,
utterances and words, and the destination's search indexes are written as
its indexer would (:mod:`pipeline.indexes`). Ids are the destination's own
(other recorders' sessions are already there); session keys are global, so a
session the destination already has is skipped: a copy that was interrupted
carries on where it stopped when run again, and running it twice copies
nothing the second time. The audio stays where it is: the sessions keep the
name of the recorder whose disk has it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from sqlalchemy import Engine, insert, select
from sqlalchemy.orm import Session as DbSession

from . import indexes, lattice, schema
from .database import db_errors, migrate, where

BATCH_ROWS = 5000


@dataclass
class Copied:
    """What a copy did."""

    sessions: int = 0
    skipped: int = 0
    utterances: int = 0
    words: int = 0


def copy_archive(
    source: Engine,
    target: Engine,
    *,
    recorder: str,
    progress: Callable[[Copied, int], None] | None = None,
) -> Copied:
    """Copy every session of ``source`` that ``target`` does not have; ``recorder`` names
    the machine of sessions that name none. ``progress(done, total sessions)``."""
    if where(source) == where(target):
        from .errors import ConfigError

        raise ConfigError(f"--from and --to are the same archive ({where(source)})")
    migrate(source)
    migrate(target)
    done = Copied()
    with db_errors(source), DbSession(source) as src:
        keys = list(src.execute(select(schema.Session.id, schema.Session.key).order_by("id")))
    with db_errors(target), DbSession(target) as dst:
        have = set(dst.scalars(select(schema.Session.key)))
    for session_id, key in keys:
        if key in have:
            done.skipped += 1
        else:
            with db_errors(source), db_errors(target):
                _copy_session(source, target, session_id, recorder, done)
            done.sessions += 1
        if progress is not None:
            progress(done, len(keys))
    return done


def _rows(db: DbSession, table, *where) -> list[dict]:
    return [dict(r._mapping) for r in db.execute(select(table).where(*where))]


def _copy_session(source: Engine, target: Engine, session_id: int, recorder: str, done) -> None:
    """One session, whole, in one transaction of the target."""
    t = schema.Base.metadata.tables
    with DbSession(source) as src, DbSession(target) as dst, dst.begin():
        [session] = _rows(src, t["sessions"], t["sessions"].c.id == session_id)
        old_default = session.pop("transcript_id")
        session.pop("id")
        session["recorder"] = session.get("recorder") or recorder
        new_id = dst.execute(
            insert(t["sessions"]).returning(t["sessions"].c.id), session
        ).scalar_one()
        transcripts = {}
        for row in _rows(src, t["transcripts"], t["transcripts"].c.session_id == session_id):
            old = row.pop("id")
            row["session_id"] = new_id
            transcripts[old] = dst.execute(
                insert(t["transcripts"]).returning(t["transcripts"].c.id), row
            ).scalar_one()
        dst.execute(
            t["sessions"].update().where(t["sessions"].c.id == new_id),
            {"transcript_id": transcripts.get(old_default)},
        )
        for name in ("segments", "session_events"):
            rows = _rows(src, t[name], t[name].c.session_id == session_id)
            for row in rows:
                row.pop("id")
                row["session_id"] = new_id
            if rows:
                dst.execute(insert(t[name]), rows)
        for batch in _utterance_batches(src, session_id):
            moved = _copy_utterances(src, dst, batch, new_id, transcripts)
            indexes.of(dst).add(dst.connection(), moved, session["recorder"])
            done.utterances += len(moved)
            done.words += sum(len(r.words) for r in moved)


def _utterance_batches(src: DbSession, session_id: int) -> Iterator[list[dict]]:
    u = schema.Base.metadata.tables["utterances"]
    after = 0
    while True:
        rows = [
            dict(r._mapping)
            for r in src.execute(
                select(u)
                .where(u.c.session_id == session_id, u.c.id > after)
                .order_by(u.c.id)
                .limit(BATCH_ROWS)
            )
        ]
        if not rows:
            return
        yield rows
        after = rows[-1]["id"]


def _copy_utterances(
    src: DbSession, dst: DbSession, rows: list[dict], session_id: int, transcripts: dict
) -> list[indexes.Row]:
    """Utterances and their words into the target; what its indexes need of them."""
    u, w = schema.Base.metadata.tables["utterances"], schema.Base.metadata.tables["words"]
    keys = _free_keys(dst, [r["time_key"] for r in rows])
    new_rows = [
        {
            **{k: v for k, v in row.items() if k != "id"},
            "session_id": session_id,
            "transcript_id": transcripts.get(row["transcript_id"]),
            "time_key": key,
        }
        for row, key in zip(rows, keys, strict=True)
    ]
    new_ids = list(dst.scalars(insert(u).returning(u.c.id, sort_by_parameter_order=True), new_rows))
    new_id = dict(zip((r["id"] for r in rows), new_ids, strict=True))
    words = [
        dict(r._mapping)
        for r in src.execute(
            select(w).where(w.c.utterance_id.in_(list(new_id))).order_by(w.c.utterance_id, w.c.idx)
        )
    ]
    said: dict[int, list[str]] = {i: [] for i in new_id}
    for word in words:
        said[word["utterance_id"]].append(word["text"])
        word.pop("id")
        word["utterance_id"] = new_id[word["utterance_id"]]
    for k in range(0, len(words), BATCH_ROWS):
        dst.execute(insert(w), words[k : k + BATCH_ROWS])
    heard = _copy_alternatives(src, dst, new_id)
    return [
        indexes.Row(
            new_id[r["id"]],
            key,
            r["text"],
            said[r["id"]],
            session_id,
            transcripts.get(r["transcript_id"]),
            lattice.alternatives(lattice.unpack(heard[r["id"]], r["start"]))
            if r["id"] in heard
            else (),
        )
        for r, key in zip(rows, keys, strict=True)
    ]


def _copy_alternatives(src: DbSession, dst: DbSession, new_id: dict[int, int]) -> dict:
    """The utterances' word graphs, as they are (packed); source id → graph."""
    a = schema.Base.metadata.tables["alternatives"]
    graphs = dict(
        src.execute(
            select(a.c.utterance_id, a.c.graph).where(a.c.utterance_id.in_(list(new_id)))
        ).all()
    )
    if graphs:
        dst.execute(insert(a), [{"utterance_id": new_id[i], "graph": g} for i, g in graphs.items()])
    return graphs


def _free_keys(dst: DbSession, keys: list[int]) -> list[int]:
    """The time keys, each moved on to the next free microsecond where the target has it
    (SQLite's full-text index needs them unique; see migration 0007)."""
    if not keys:
        return []
    column = schema.Utterance.time_key
    reach = max(keys) + len(keys)
    taken = set(dst.scalars(select(column).where(column >= min(keys), column <= reach)))
    out = []
    for key in keys:
        while key in taken:
            key += 1
        taken.add(key)
        out.append(key)
    return out
