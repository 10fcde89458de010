"""Search speed at scale: phrase, prefix, filtered and sounds-like queries on N hours.

Run from the project root (the archive goes to a temporary folder, never the repository)::

    uv run python bench/search.py --hours 50        # quick, ~1 min
    nice uv run python bench/search.py              # 1000 h ≈ 9.5 M words, ~15 min
    uv run python bench/search.py --baseline 0006   # measure at 0006, migrate to head, again

The archive is built through the real schema: the project's Alembic migrations
create the database (up to ``--baseline``, default: the newest), then sessions,
transcripts, segments, utterances and words are bulk-inserted with raw SQL in
one transaction per session, so the real FTS5 triggers fill ``utterances_fts``,
and the phonetic index gets each utterance's trigrams as the indexer writes
them (``pipeline.phonetic.index_text``), and so does the word-pairs index
(``pipeline.fulltext``). Text is drawn from a Zipf vocabulary
(``--vocab`` pseudo-words, exponent 1); utterances have 3-30 words at about
2.5 words/s; sessions last 1-8 h and start at random times over a year.

Queries go through ``pipeline.search`` itself, 20 hits, newest first:

- ``phrase``: a 2-3 word phrase cut from a random utterance;
- ``prefix``: ``abcd*`` (``--fts``), the first 4 letters of a word of >= 5 letters;
- ``phrase+time``: a phrase and ``--since``/``--until`` a 30-day window around it;
- ``phrase+session``: a phrase and ``--session`` of the session it came from;
- ``fuzzy``: ``--fuzzy`` with a 3-word phrase of a random utterance, best first.

Each is timed two ways: ``ids`` is :func:`pipeline.search.matching_ids` (the
query alone; not for fuzzy, whose scoring is the query), ``search()`` the
whole call that also loads the hits' words, session and segment (what the CLI
and the web page wait for). Warm: the database file read once into the OS
cache, one connection, distinct queries, each its best of 3. Cold: before each
query the engine's connections are closed and the file is dropped from the OS
page cache with ``posix_fadvise(DONTNEED)`` (no root needed). It prints
p50/p95/max in ms, then the database size per hour of audio.

With a baseline older than the newest schema it measures, migrates the archive
to the newest schema with :func:`pipeline.database.migrate` (timed) and
measures again. It exits 0 whatever the figures are.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import shutil
import sqlite3
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from alembic import command
from sqlalchemy import Engine
from sqlalchemy.orm import Session as DbSession

from pipeline import fulltext, phonetic
from pipeline.config import Home
from pipeline.database import _alembic_config, current_revision, migrate, open_database
from pipeline.schema import time_key
from pipeline.search import Filters, matching_ids, search

ENGINE = "vosk:vosk-model-small-en-us-0.15"
RATE = 16000
SEGMENT_SECONDS = 300  # the recorder's default
YEAR = timedelta(days=365)
EPOCH = datetime(2025, 11, 1, tzinfo=UTC)
WORD_SLOT = (0.25, 0.45)  # seconds per word in an utterance: ~2.8 words/s while speaking
PAUSE = (0.1, 0.9)  # seconds between utterances: ~2.5 words/s overall
UTTERANCE_WORDS = (3, 30)
SESSION_HOURS = (1.0, 8.0)
TIME_WINDOW = timedelta(days=30)
LIMIT = 20  # search()'s default
WARM_RUNS = 3
PREFIX_CHARS = 4
FUZZY_WORDS = 3


# --- a synthetic archive -----------------------------------------------------------


def vocabulary(size: int, rng: random.Random) -> list[str]:
    """Distinct pseudo-words, most frequent first; frequent words are short, as in speech."""
    clusters = ["br", "ch", "cl", "dr", "fl", "gr", "pl", "sh", "st", "th", "tr"]
    onsets = [*"bcdfghjklmnprstvwz", *clusters]
    vowels = [*"aeiou", "ai", "ea", "ee", "oo", "ou"]
    codas = ["", "", "", *"nrstlmkd", "ng", "st", "nd"]
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < size:
        rank = len(words)
        syllables = 1 + min(3, int(math.log10(rank + 1) * rng.uniform(0.6, 1.0)))
        word = "".join(
            rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas) for _ in range(syllables)
        )
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


@dataclass
class Built:
    hours: float
    sessions: int
    utterances: int
    words: int
    seconds: float


def to_db(at: datetime) -> str:
    """A UTC datetime as SQLAlchemy stores it in SQLite (what `UTCDateTime` writes)."""
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def session_plan(hours: float, rng: random.Random) -> list[tuple[datetime, float]]:
    """(start, seconds) of each session: 1-8 h each, starting anywhere in a year, by start."""
    plan: list[float] = []
    left = hours * 3600
    while left > 0:
        seconds = min(left, rng.uniform(*SESSION_HOURS) * 3600)
        plan.append(seconds)
        left -= seconds
    starts = sorted(EPOCH + rng.random() * YEAR for _ in plan)
    return list(zip(starts, plan, strict=True))


@dataclass
class Schema:
    """What the archive's revision has, so the same filler serves old baselines."""

    time_keys: bool
    phonetic: bool
    pairs: bool
    counts: bool
    used_keys: set[int] = field(default_factory=set)

    @classmethod
    def of(cls, con: sqlite3.Connection) -> Schema:
        columns = {r[1] for r in con.execute("PRAGMA table_info(utterances)")}
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
        return cls(
            "time_key" in columns,
            phonetic.TABLE in tables,
            fulltext.PAIRS in tables,
            "phonetic_terms" in tables,
        )

    def key(self, at: datetime) -> int:
        """The indexer's rule: the utterance's microsecond, or the next free one."""
        key = time_key(at)
        while key in self.used_keys:
            key += 1
        self.used_keys.add(key)
        return key


def fill(db_path: Path, hours: float, vocab_size: int, seed: int) -> Built:
    """Bulk-insert sessions with their transcript, segments, utterances and words."""
    rng = random.Random(seed)
    vocab = vocabulary(vocab_size, rng)
    cum = list(_cumulative(1.0 / (r + 1) for r in range(vocab_size)))
    con = sqlite3.connect(db_path, isolation_level=None)
    con.execute("PRAGMA synchronous = OFF")
    schema = Schema.of(con)
    t0 = time.perf_counter()
    utt_id = word_id = 0
    plan = session_plan(hours, rng)
    for sid, (started, seconds) in enumerate(plan, start=1):
        con.execute("BEGIN")
        _session_rows(con, sid, started, seconds)
        utts, words, sounds, pairs = [], [], [], []
        counts: Counter[str] = Counter()
        t = rng.uniform(*PAUSE)
        while t < seconds:
            n = rng.randint(*UTTERANCE_WORDS)
            texts = rng.choices(vocab, cum_weights=cum, k=n)
            utt_id += 1
            start = t
            for idx, w in enumerate(texts):
                slot = rng.uniform(*WORD_SLOT)
                word_id += 1
                words.append((word_id, utt_id, idx, w, t, t + 0.85 * slot, 0.5 + rng.random() / 2))
                t += slot
            at = started + timedelta(seconds=start)
            row = (utt_id, sid, start, t, to_db(at), " ".join(texts), ENGINE, sid)
            if schema.time_keys:
                utts.append((*row, schema.key(at)))
            else:
                utts.append(row)
            if schema.pairs:
                pairs.append((utts[-1][-1], " ".join(fulltext.pairs(texts))))
            if schema.phonetic:
                terms = sorted({t.casefold() for t in phonetic.index_text(texts).split()})
                sounds.append((utt_id, " ".join(terms)))
                counts.update(terms)
            t += rng.uniform(*PAUSE)
        columns = "id, session_id, start, end, at, text, engine, transcript_id"
        if schema.time_keys:
            columns += ", time_key"
        marks = ", ".join("?" * len(utts[0])) if utts else ""
        con.executemany(f"INSERT INTO utterances ({columns}) VALUES ({marks})", utts)
        con.executemany(
            "INSERT INTO words (id, utterance_id, idx, text, start, end, confidence) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            words,
        )
        con.executemany(f"INSERT INTO {phonetic.TABLE}(rowid, trigrams) VALUES (?, ?)", sounds)
        if schema.counts:  # what the indexer counts as it writes (pipeline.indexes)
            con.executemany(
                "INSERT INTO phonetic_terms (recorder, term, docs) VALUES ('bench', ?, ?) "
                "ON CONFLICT (recorder, term) DO UPDATE SET docs = docs + excluded.docs",
                sorted(counts.items()),
            )
            counts.clear()
        con.executemany(f"INSERT INTO {fulltext.PAIRS}(rowid, pairs) VALUES (?, ?)", pairs)
        con.execute("COMMIT")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return Built(hours, len(plan), utt_id, word_id, time.perf_counter() - t0)


def _cumulative(weights: Iterator[float]) -> Iterator[float]:
    total = 0.0
    for w in weights:
        total += w
        yield total


def _session_rows(con: sqlite3.Connection, sid: int, started: datetime, seconds: float) -> None:
    """The session, its one (finished, default) transcript and its 5-minute segments."""
    key = started.strftime("%Y%m%dT%H%M%S") + f"-{sid}"
    con.execute(
        "INSERT INTO sessions (id, key, source_kind, source, started_at, rate, channels, "
        "frames, status, transcript_id) VALUES (?, ?, 'system', 'pulse:default', ?, ?, 1, ?, "
        "'complete', ?)",
        (sid, key, to_db(started), RATE, round(seconds * RATE), sid),
    )
    con.execute(
        "INSERT INTO transcripts (id, session_id, engine, version, created_at, finished_at) "
        "VALUES (?, ?, ?, '', ?, ?)",
        (sid, sid, ENGINE, to_db(started), to_db(started + timedelta(seconds=seconds))),
    )
    frames = SEGMENT_SECONDS * RATE
    con.executemany(
        "INSERT INTO segments (session_id, path, offset, frames, rate, channels, started_at) "
        "VALUES (?, ?, ?, ?, ?, 1, ?)",
        [
            (sid, f"{key}/{i:05d}.opus", i * frames, frames, RATE, to_db(started))
            for i in range(math.ceil(seconds / SEGMENT_SECONDS))
        ],
    )


def build(home: Home, revision: str | None, hours: float, vocab: int, seed: int) -> Built:
    """The archive's schema from the real migrations (to ``revision``, or head), then data."""
    engine = open_database(home)
    if revision is None:
        migrate(engine)
    else:
        cfg = _alembic_config(engine)
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA journal_mode = WAL")
    engine.dispose()
    return fill(home.db_path, hours, vocab, seed)


# --- queries -------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    text: str  # what the user types
    fts: bool = False
    fuzzy: bool = False
    filters: Filters = Filters()


def sample_queries(db_path: Path, n: int, seed: int) -> dict[str, list[Query]]:
    """n queries of each kind, cut from random utterances of the archive."""
    rng = random.Random(seed + 1)
    con = sqlite3.connect(db_path)
    top = con.execute("SELECT max(id) FROM utterances").fetchone()[0]
    kinds: dict[str, list[Query]] = {k: [] for k in ("phrase", "prefix", "time", "session")}
    kinds["fuzzy"] = []
    while min(len(v) for v in kinds.values()) < n:
        uid = rng.randint(1, top)
        text, sid, at = con.execute(
            "SELECT text, session_id, at FROM utterances WHERE id = ?", (uid,)
        ).fetchone()
        words = text.split()
        k = rng.choice((2, 3))
        i = rng.randint(0, len(words) - k)
        phrase = " ".join(words[i : i + k])
        long = [w for w in words if len(w) > PREFIX_CHARS]
        if len(kinds["phrase"]) < n:
            kinds["phrase"].append(Query(phrase))
        if long and len(kinds["prefix"]) < n:
            kinds["prefix"].append(Query(f"{rng.choice(long)[:PREFIX_CHARS]}*", fts=True))
        if len(kinds["time"]) < n:
            since = datetime.fromisoformat(at).replace(tzinfo=UTC) - rng.random() * TIME_WINDOW
            window = Filters(since=since, until=since + TIME_WINDOW)
            kinds["time"].append(Query(phrase, filters=window))
        if len(kinds["session"]) < n:
            kinds["session"].append(Query(phrase, filters=Filters(session=str(sid))))
        j = rng.randint(0, max(0, len(words) - FUZZY_WORDS))
        spoken = words[j : j + FUZZY_WORDS]
        if len(kinds["fuzzy"]) < n and len(phonetic.phonemes(spoken)) >= 6:
            kinds["fuzzy"].append(Query(" ".join(spoken), fuzzy=True))
    con.close()
    return kinds


def run_ids(engine: Engine, q: Query) -> int:
    """The query alone: the ids search() would show, without loading the hits."""
    with DbSession(engine) as db:
        return len(matching_ids(db, q.text, limit=LIMIT, fts=q.fts, rank=False, filters=q.filters))


def run_search(engine: Engine, q: Query) -> int:
    """What the CLI runs: the hits with their words, session and segment."""
    return len(search(engine, q.text, limit=LIMIT, fts=q.fts, fuzzy=q.fuzzy, filters=q.filters))


def drop_os_cache(db_path: Path) -> None:
    """Evict the database's pages from the OS page cache (clean pages only: checkpointed)."""
    for path in (db_path, db_path.with_name(db_path.name + "-wal")):
        if path.exists():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def read_into_os_cache(db_path: Path) -> None:
    with open(db_path, "rb") as f:
        while f.read(1 << 20):
            pass


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def warm(engine: Engine, db_path: Path, queries: list[Query], run) -> list[float]:
    """Distinct queries on the pool's one connection, with the file in the OS cache.

    Each query's best of WARM_RUNS: the machine is shared, and one run of a
    query is often slowed by another job.
    """
    read_into_os_cache(db_path)
    run(engine, queries[0])  # the pool's connection, opened once
    return [min(timed(lambda q=q: run(engine, q)) for _ in range(WARM_RUNS)) for q in queries]


def cold(engine: Engine, db_path: Path, queries: list[Query], run) -> list[float]:
    """Each query on a fresh connection (pragmas included), the file dropped from the cache."""
    out = []
    for q in queries:
        engine.dispose()
        drop_os_cache(db_path)
        out.append(timed(lambda q=q: run(engine, q)))
    engine.dispose()
    return out


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def measure(home: Home, kinds: dict[str, list[Query]], n_cold: int) -> None:
    engine = open_database(home, readonly=True)
    phonetic.dictionary()  # loaded once per process, as in the CLI
    print(f"schema {current_revision(engine)}:")
    print(f"  {'query':<16} {'':<10} {'':<5} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}  n")
    names = {"time": "phrase+time", "session": "phrase+session"}
    for kind, queries in kinds.items():
        runs = [("ids", run_ids)] if kind != "fuzzy" else []  # fuzzy: scoring is the query
        for what, run in [*runs, ("search()", run_search)]:
            for label, fn, qs in (("warm", warm, queries), ("cold", cold, queries[:n_cold])):
                ms = fn(engine, home.db_path, qs, run)
                print(
                    f"  {names.get(kind, kind):<16} {what:<10} {label:<5} {pct(ms, 50):8.2f} "
                    f"{pct(ms, 95):8.2f} {max(ms):8.2f}  {len(ms)}",
                    flush=True,
                )
    engine.dispose()
    sizes(home.db_path)


def sizes(db_path: Path) -> None:
    con = sqlite3.connect(db_path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    hours = con.execute("SELECT sum(frames) FROM sessions").fetchone()[0] / RATE / 3600
    by_name = dict(con.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall())
    con.close()
    fts = sum(v for k, v in by_name.items() if k.startswith("utterances_fts"))
    sounds = sum(v for k, v in by_name.items() if k.startswith(phonetic.TABLE))
    used = sum(by_name.values())
    total = db_path.stat().st_size
    mb = 1 << 20
    print(
        f"  size: {used / mb:.1f} MB used = {used / mb / hours:.2f} MB per audio hour "
        f"(file {total / mb:.1f} MB with free pages; "
        f"FTS5 index {fts / mb / hours:.3f} MB/h; phonetic index {sounds / mb / hours:.3f} MB/h; "
        f"words table {by_name.get('words', 0) / mb / hours:.2f} MB/h)",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hours", type=float, default=1000.0, help="audio hours (default 1000)")
    ap.add_argument("--vocab", type=int, default=50_000, help="distinct words (default 50000)")
    ap.add_argument("--queries", type=int, default=200, help="warm queries per kind")
    ap.add_argument("--cold", type=int, default=20, help="cold queries per kind")
    ap.add_argument(
        "--baseline",
        default=None,
        help="schema revision to build and measure before migrating to head (default: head)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, help="build the archive in this folder and keep it")
    ap.add_argument("--reuse", action="store_true", help="measure the archive kept in --keep")
    args = ap.parse_args()

    root = args.keep or Path(tempfile.mkdtemp(prefix="searchbench-"))
    home = Home(root / "home").ensure()
    try:
        if not args.reuse:
            built = build(home, args.baseline, args.hours, args.vocab, args.seed)
            print(
                f"built {built.hours:g} h: {built.sessions} sessions, {built.utterances:,} "
                f"utterances, {built.words:,} words "
                f"({built.words / built.hours / 3600:.2f} words/s) in {built.seconds:.0f} s; "
                f"load average {os.getloadavg()[0]:.2f}",
                flush=True,
            )
        kinds = sample_queries(home.db_path, args.queries, args.seed)
        measure(home, kinds, args.cold)
        if args.baseline is not None:
            engine = open_database(home)
            t0 = time.perf_counter()
            migrate(engine)
            engine.dispose()
            print(f"migrated to head in {time.perf_counter() - t0:.1f} s", flush=True)
            measure(home, kinds, args.cold)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
