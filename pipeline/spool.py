"""When the shared archive is out of reach: index writes wait in a local spool, in order.

A recorder writing into a PostgreSQL archive keeps recording and recognizing
when the server restarts, the network drops or the password changes. Its
indexer then appends each batch of messages it could not write to
``home/spool.db`` (a local SQLite file, committed before anything else
happens) and tries the server again every few seconds; once it answers, the
spooled batches are written in the order they came, each in its own
transaction and removed from the spool only after it committed, and then
new batches go straight to the server again. Every message's write is
idempotent (a session, segment, event or utterance already there is not
added twice), so a batch written but not yet removed when the process died
is written again harmlessly: nothing is lost, nothing doubled.
"""

from __future__ import annotations

import logging
import pickle
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from .config import Home
from .errors import ArchiveUnreachableError, IndexerError
from .messages import ArchiveState

log = logging.getLogger(__name__)

SPOOL_NAME = "spool.db"
RETRY_SECONDS = (1.0, 2.0, 5.0, 10.0)  # between tries to reach the archive, then the last
REPLAY_BATCHES = 50  # spooled batches written between two looks at the queue
SPOOL_GRACE_SECONDS = 10.0  # at the end of a run, how long to try to empty the spool


class Spool:
    """Batches of indexer messages waiting for the archive, oldest first (a SQLite file)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._con: sqlite3.Connection | None = None

    @classmethod
    def of(cls, home: Home) -> Spool:
        return cls(home.root / SPOOL_NAME)

    @property
    def con(self) -> sqlite3.Connection:
        if self._con is None:
            try:
                self._con = sqlite3.connect(self.path, isolation_level=None, timeout=10)
                self._con.execute("PRAGMA journal_mode = WAL")
                self._con.execute("PRAGMA synchronous = FULL")  # what is here is nowhere else
                self._con.execute(
                    "CREATE TABLE IF NOT EXISTS spool (id INTEGER PRIMARY KEY, "
                    "at TEXT NOT NULL, messages BLOB NOT NULL)"
                )
            except sqlite3.Error as exc:
                raise IndexerError(
                    f"cannot keep index writes in {self.path} while the archive is out of "
                    f"reach ({exc}); free space or fix the data home"
                ) from exc
        return self._con

    def append(self, messages: list) -> None:
        try:
            self.con.execute(
                "INSERT INTO spool (at, messages) VALUES (?, ?)",
                (datetime.now(UTC).isoformat(), pickle.dumps(messages)),
            )
        except sqlite3.Error as exc:
            raise IndexerError(
                f"cannot keep index writes in {self.path} ({exc}); free space on its disk"
            ) from exc

    def oldest(self, n: int) -> list[tuple[int, list]]:
        rows = self.con.execute("SELECT id, messages FROM spool ORDER BY id LIMIT ?", (n,))
        return [(i, pickle.loads(blob)) for i, blob in rows]

    def remove(self, batch_id: int) -> None:
        self.con.execute("DELETE FROM spool WHERE id = ?", (batch_id,))

    def count(self) -> tuple[int, datetime | None]:
        """Batches waiting, and when the oldest was spooled (without creating the file)."""
        if self._con is None and not self.path.exists():
            return 0, None
        n, at = self.con.execute("SELECT count(*), min(at) FROM spool").fetchone()
        return n, datetime.fromisoformat(at) if at else None

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None


class Writer:
    """The indexer's writes, straight to the archive or, while it is out of reach, spooled.

    ``write`` never raises for an unreachable archive: the batch is spooled and
    ``status`` is told (:class:`~pipeline.messages.ArchiveState`); ``tick`` tries
    the archive again when it is time and replays the spool.
    """

    def __init__(self, indexer, spool: Spool, status: Callable[[object], None], where: str):
        self.indexer = indexer
        self.spool = spool
        self.status = status
        self.where = where
        self.waiting, since = spool.count()
        self.offline_since: datetime | None = since
        self.reason = "batches from an earlier run wait in the spool" if self.waiting else ""
        self._tries = 0
        self._next_try = 0.0

    @property
    def offline(self) -> bool:
        return self.waiting > 0

    def state(self) -> ArchiveState:
        return ArchiveState(not self.offline, self.waiting, self.reason, self.offline_since)

    def write(self, messages: list) -> None:
        if not messages:
            return
        if self.offline:
            self._spool(messages)
            return
        try:
            self.indexer.write(messages)
        except ArchiveUnreachableError as exc:
            self._went_away(exc)
            self._spool(messages)

    def tick(self) -> None:
        """If the archive was out of reach and it is time, try it: replay the spool."""
        if not self.offline or time.monotonic() < self._next_try:
            return
        try:
            self.indexer.reconnect()
            for _ in range(REPLAY_BATCHES):
                batch = self.spool.oldest(1)
                if not batch:
                    break
                batch_id, messages = batch[0]
                self.indexer.write(messages)
                self.spool.remove(batch_id)
                self.waiting -= 1
        except ArchiveUnreachableError as exc:
            self._went_away(exc)
            return
        self.waiting, _ = self.spool.count()
        if not self.waiting:
            log.info("the archive %s is back; the spool is written", self.where)
            self.offline_since, self.reason, self._tries = None, "", 0
            self.status(self.state())
        else:
            self._next_try = 0.0  # more to replay: on the next tick

    def finish(self, grace_seconds: float) -> None:
        """At the end of a run: try for a while to empty the spool; what stays is written
        by the next run."""
        deadline = time.monotonic() + grace_seconds
        while self.offline and time.monotonic() < deadline:
            self._next_try = 0.0
            self.tick()
            if self.offline:
                time.sleep(min(RETRY_SECONDS[0], max(0.0, deadline - time.monotonic())))
        self.spool.close()

    def _went_away(self, exc: ArchiveUnreachableError) -> None:
        if self.offline_since is None:
            self.offline_since = datetime.now(UTC)
            log.info("%s; index writes are spooled in %s", exc, self.spool.path)
        self.reason = str(exc)
        self._next_try = time.monotonic() + RETRY_SECONDS[min(self._tries, len(RETRY_SECONDS) - 1)]
        self._tries += 1

    def _spool(self, messages: list) -> None:
        self.spool.append(messages)
        self.waiting += 1
        self.status(self.state())


def flush(home: Home) -> tuple[int, int]:
    """Write the home's spool into its archive now (`pipeline db flush`), holding the
    home's lock: (batches written, batches still waiting)."""
    from .database import open_archive, where
    from .index import Indexer
    from .lock import hold

    spool = Spool.of(home)
    waiting, _ = spool.count()
    if not waiting:
        return 0, 0
    with hold(home):
        engine = open_archive(home)
        writer = Writer(Indexer(engine, recorder=home.recorder_name), spool, lambda m: None, "")
        writer.where = where(engine)
        while writer.offline:
            before = writer.waiting
            writer._next_try = 0.0
            writer.tick()
            if writer.offline and writer.waiting == before:  # it went away again
                spool.close()
                raise ArchiveUnreachableError(writer.reason)
        spool.close()
        return waiting, 0
