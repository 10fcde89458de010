"""PostgreSQL next to SQLite: search latency on one archive, four recorders writing, a spool.

Run from the project root (needs Debian's postgresql server programs; the
cluster is a private one in a temporary folder, on a free port)::

    uv run python bench/backends.py --hours 50          # quick (~3 min)
    nice uv run python bench/backends.py                # 1000 h (~40 min)

1. **Search.** The synthetic archive of ``bench/search.py`` (``--hours`` of
   Zipf pseudo-speech through the real schema, SQLite) is copied into a fresh
   PostgreSQL database with ``pipeline db copy``'s code
   (:func:`pipeline.dbcopy.copy_archive`, timed: it also writes PostgreSQL's
   search tables), analyzed, and the same queries run on both: phrase,
   prefix (``--fts``), phrase with a 30-day window and with ``--session``, and
   sounds-like (``--fuzzy``), each through ``pipeline.search.search()`` (the
   hits with their words, session and segment; warm, best of 3 per query).
   p50/p95/max in ms, side by side. Then the size of each database per hour.
2. **Four recorders.** Four processes, each an :class:`~pipeline.index.Indexer`
   of its own recorder, write sessions of synthetic speech into one
   PostgreSQL archive at once, while a fifth searches: first as fast as they
   can (``--burst`` seconds: utterances and words per second, all four
   together, and the slowest commit), then at ``--pace``× the speed of
   speech for ``--paced`` seconds, with the lag of each utterance: from when
   it was "said" (its place in the paced stream) to its commit. Goal: never
   more than 2 s behind.
3. **Spool replay.** ``--offline-hours`` of one recorder's speech is spooled
   as the indexer spools it when the archive is away (batches of 20
   messages), then replayed into PostgreSQL by :class:`pipeline.spool.Writer`:
   time to write an hour offline.

The cluster runs as a team's server would (``tests.postgres_server.SERVER_SETTINGS``):
durable commits (``fsync``, ``synchronous_commit`` on, unlike the tests' cluster) and
``shared_buffers=2GB`` (PostgreSQL's default, 128 MB, holds not even the sounds-like
index of 1000 h). It prints figures and exits 0 whatever they are.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import search as sb  # noqa: E402

LIMIT = 20
WORDS_PER_SECOND = 2.6  # speech, as bench/search.py makes it
BATCH = 20  # messages per indexer batch in the write tests (the real one takes what waits)


# --- 1. search ------------------------------------------------------------------------


def search_both(root: Path, pg, hours: float, queries: int, seed: int, only: set[str]) -> None:
    """Build (or, kept from an earlier run, reuse) both archives and time the queries."""
    from sqlalchemy import text

    from pipeline.config import Home
    from pipeline.database import open_database
    from pipeline.dbcopy import copy_archive

    lite = Home(root / "lite").ensure()
    url = pg.url("archive")
    shared = Home(root / "pg", url).ensure()
    if not lite.db_path.exists():
        built = sb.build(lite, None, hours, 50_000, seed)
        print(
            f"archive: {hours:g} h, {built.utterances:,} utterances, {built.words:,} words "
            f"(SQLite built in {built.seconds:.0f} s)",
            flush=True,
        )
        pg.create_database("archive")
        source, target = open_database(lite), open_database(shared)
        t0 = time.perf_counter()
        copy_archive(source, target, recorder="bench")
        with target.begin() as conn:
            conn.execute(text("ANALYZE"))
        took = time.perf_counter() - t0
        print(f"copied into PostgreSQL in {took:.0f} s (db copy, then ANALYZE)", flush=True)
        source.dispose()
        target.dispose()
    kinds = sb.sample_queries(lite.db_path, queries, seed)
    names = {"time": "phrase+time", "session": "phrase+session"}
    print(f"  {'query':<16} {'SQLite p50':>10} {'p95':>8} {'max':>8}   {'PostgreSQL p50':>14} "
          f"{'p95':>8} {'max':>8}  ms, search() warm")  # fmt: skip
    engines = [open_database(h, readonly=True) for h in (lite, shared)]
    from pipeline import phonetic

    phonetic.dictionary()
    sb.read_into_os_cache(lite.db_path)
    results = {}
    for kind, qs in kinds.items():
        if kind not in only:
            continue
        row = []
        for engine in engines:
            sb.run_search(engine, qs[0])
            row.append([best_of_3(engine, q) for q in qs])
        results[kind] = row
        (a, b) = row
        print(
            f"  {names.get(kind, kind):<16} {sb.pct(a, 50):10.2f} {sb.pct(a, 95):8.2f} "
            f"{max(a):8.2f}   {sb.pct(b, 50):14.2f} {sb.pct(b, 95):8.2f} {max(b):8.2f}",
            flush=True,
        )
    with engines[1].connect() as conn:
        size = conn.scalar(text("SELECT pg_database_size(current_database())"))
    lite_size = lite.db_path.stat().st_size
    print(
        f"  size: SQLite {lite_size / 2**20 / hours:.2f} MB per audio hour, "
        f"PostgreSQL {size / 2**20 / hours:.2f} MB per audio hour"
    )
    for engine in engines:
        engine.dispose()


def best_of_3(engine, query) -> float:
    return min(sb.timed(lambda: sb.run_search(engine, query)) for _ in range(3))


# --- 2. four recorders ------------------------------------------------------------------


def speech(rng: random.Random, vocab: list[str], cum: list[float], seconds: float):
    """(start, end, words) of utterances filling ``seconds`` of a session."""
    t = rng.uniform(*sb.PAUSE)
    while t < seconds:
        n = rng.randint(*sb.UTTERANCE_WORDS)
        texts = rng.choices(vocab, cum_weights=cum, k=n)
        start = t
        words = []
        for w in texts:
            slot = rng.uniform(*sb.WORD_SLOT)
            words.append((w, t, t + 0.85 * slot))
            t += slot
        yield start, t, words
        t += rng.uniform(*sb.PAUSE)


def recorder(url: str, name: str, seconds: float, pace: float | None, out) -> None:
    """One recorder's indexer writing a session: flat out (``pace`` None) or at ``pace``×
    speech; puts (utterances, words, slowest commit, lags) on ``out``."""
    from pipeline.config import Home
    from pipeline.database import open_database
    from pipeline.index import Indexer
    from pipeline.messages import SessionEnded, SessionStarted, Utterance, Word

    rng = random.Random(name)
    vocab = sb.vocabulary(50_000, random.Random(0))
    cum = list(sb._cumulative(1.0 / (r + 1) for r in range(len(vocab))))
    engine = open_database(Home(Path(tempfile.gettempdir()), url))
    indexer = Indexer(engine, recorder=name)
    key = f"{name}-{time.time_ns()}"
    began = datetime.now(UTC)
    indexer.write([SessionStarted(key, "system", f"{name}.monitor", began, 16000, 1)])
    t0 = time.monotonic()
    utterances = words = 0
    slowest = 0.0
    lags: list[float] = []
    batch: list = []
    said_at: list[float] = []
    horizon = seconds * (pace or 1.0) if pace else 10**9
    for start, end, ws in speech(rng, vocab, cum, horizon):
        if pace:
            due = t0 + end / pace  # the utterance is over (said) then
            time.sleep(max(0.0, due - time.monotonic()))
        elif time.monotonic() - t0 > seconds:
            break
        batch.append(
            Utterance(key, start, end, tuple(Word(w, a, b, 0.9) for w, a, b in ws), "bench")
        )
        said_at.append(time.monotonic())
        if len(batch) >= (1 if pace else BATCH):
            c0 = time.monotonic()
            indexer.write(batch)
            done = time.monotonic()
            slowest = max(slowest, done - c0)
            lags += [done - s for s in said_at]
            utterances += len(batch)
            words += sum(len(u.words) for u in batch)
            batch, said_at = [], []
        if pace and time.monotonic() - t0 > seconds:
            break
    indexer.write([*batch, SessionEnded(key, round((time.monotonic() - t0) * 16000), 16000)])
    engine.dispose()
    out.put((name, utterances, words, slowest, lags, time.monotonic() - t0))


def searcher(url: str, seconds: float, out) -> None:
    from pipeline.config import Home
    from pipeline.database import open_database
    from pipeline.search import search

    engine = open_database(Home(Path(tempfile.gettempdir()), url))
    rng = random.Random(1)
    vocab = sb.vocabulary(50_000, random.Random(0))
    t0 = time.monotonic()
    times = []
    while time.monotonic() - t0 < seconds:
        phrase = " ".join(rng.choices(vocab[:300], k=2))
        s = time.perf_counter()
        search(engine, phrase)
        times.append(time.perf_counter() - s)
        time.sleep(0.05)
    engine.dispose()
    out.put(("searcher", times))


def four_recorders(pg, burst: float, paced: float, pace: float) -> None:
    from pipeline.config import Home
    from pipeline.database import open_archive

    url = fresh_database(pg, "recorders")
    open_archive(Home(Path(tempfile.mkdtemp()), url)).dispose()
    ctx = mp.get_context("spawn")
    for label, seconds, speed in (("flat out", burst, None), (f"at {pace:g}x speech", paced, pace)):
        out = ctx.Queue()
        names = [f"recorder-{k}" for k in range(4)]
        procs = [ctx.Process(target=recorder, args=(url, n, seconds, speed, out)) for n in names]
        procs.append(ctx.Process(target=searcher, args=(url, seconds, out)))
        for p in procs:
            p.start()
        got = [out.get(timeout=seconds * 3 + 120) for _ in procs]
        for p in procs:
            p.join()
        writers = [g for g in got if g[0] != "searcher"]
        [(_, searches)] = [g for g in got if g[0] == "searcher"]
        utts = sum(g[1] for g in writers)
        words = sum(g[2] for g in writers)
        took = max(g[5] for g in writers)
        lags = sorted(x for g in writers for x in g[4])
        print(
            f"  4 recorders {label}: {utts / took:,.0f} utterances/s, {words / took:,.0f} words/s "
            f"together (= {words / took / WORDS_PER_SECOND / 4:,.0f}x speech each); slowest "
            f"commit {max(g[3] for g in writers) * 1000:.0f} ms; lag p50 "
            f"{statistics.median(lags):.3f} s, p99 {sb.pct(lags, 99):.3f} s, "
            f"max {max(lags):.3f} s; "
            f"a searcher meanwhile: p95 {sb.pct(searches, 95) * 1000:.1f} ms, "
            f"max {max(searches) * 1000:.1f} ms ({len(searches)} searches)",
            flush=True,
        )


# --- 3. spool replay --------------------------------------------------------------------


def spool_replay(root: Path, pg, hours: float) -> None:
    from pipeline.config import Home
    from pipeline.database import open_archive, open_database, where
    from pipeline.index import Indexer
    from pipeline.messages import SessionEnded, SessionStarted, Utterance, Word
    from pipeline.spool import Spool, Writer

    url = fresh_database(pg, "spool")
    home = Home(root / "offline", url, "laptop").ensure()
    (home.root / "spool.db").unlink(missing_ok=True)
    open_archive(home).dispose()
    rng = random.Random(7)
    vocab = sb.vocabulary(50_000, random.Random(0))
    cum = list(sb._cumulative(1.0 / (r + 1) for r in range(len(vocab))))
    spool = Spool.of(home)
    key = "offline-session"
    batch: list = [SessionStarted(key, "system", "laptop.monitor", datetime.now(UTC), 16000, 1)]
    utterances = words = 0
    for start, end, ws in speech(rng, vocab, cum, hours * 3600):
        batch.append(
            Utterance(key, start, end, tuple(Word(w, a, b, 0.9) for w, a, b in ws), "bench")
        )
        utterances += 1
        words += len(ws)
        if len(batch) >= BATCH:
            spool.append(batch)
            batch = []
    spool.append([*batch, SessionEnded(key, round(hours * 3600 * 16000), 16000)])
    waiting, _ = spool.count()
    engine = open_database(home)
    writer = Writer(Indexer(engine, recorder="laptop"), spool, lambda m: None, where(engine))
    t0 = time.perf_counter()
    while writer.offline:
        writer.tick()
    took = time.perf_counter() - t0
    engine.dispose()
    print(
        f"  spool replay: {hours:g} h offline = {waiting} batches, {utterances:,} utterances, "
        f"{words:,} words written in {took:.1f} s ({utterances / took:,.0f} utterances/s; "
        f"an hour offline in {took / hours:.1f} s)"
    )


def fresh_database(pg, name: str) -> str:
    """An empty database of that name (a kept cluster has the last run's)."""
    pg.psql(f'DROP DATABASE IF EXISTS "{name}"')
    return pg.create_database(name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hours", type=float, default=1000.0, help="archive hours (default 1000)")
    ap.add_argument("--queries", type=int, default=200, help="queries per kind")
    ap.add_argument("--burst", type=float, default=20.0, help="seconds of flat-out writing")
    ap.add_argument("--paced", type=float, default=60.0, help="seconds of paced writing")
    ap.add_argument("--pace", type=float, default=10.0, help="speech speed-up when paced")
    ap.add_argument("--offline-hours", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-search", action="store_true")
    ap.add_argument(
        "--keep",
        type=Path,
        help="build in this folder and keep it (the cluster too: stopped, not removed); "
        "run again with the same --keep to measure the same archives without building",
    )
    ap.add_argument(
        "--kinds", default="phrase,prefix,time,session,fuzzy", help="query kinds to time"
    )
    args = ap.parse_args()

    if args.keep:  # the kept cluster must take the same password the next time
        os.environ.setdefault("PIPELINE_TEST_PG_PASSWORD", "pipeline-bench")
    from tests.postgres_server import SERVER_SETTINGS, Postgres, server_bin

    found = server_bin()
    if found is None:
        raise SystemExit("PostgreSQL's server programs are not installed (apt install postgresql)")
    root = args.keep or Path(tempfile.mkdtemp(prefix="backends-"))
    root.mkdir(parents=True, exist_ok=True)
    built = args.keep is not None and (root / "cluster" / "data").is_dir()
    if args.keep is not None and os.geteuid() == 0:
        shutil.chown(root, "postgres")  # the server runs as postgres under root
    pg = Postgres(found, root / "cluster" if args.keep else None, SERVER_SETTINGS)
    if not built:
        if args.keep:
            (root / "cluster").mkdir(exist_ok=True)
        pg.init()
    pg.start()
    print(f"PostgreSQL {pg.psql('SHOW server_version').strip()}, SQLite {_sqlite_version()}")
    try:
        if not args.skip_search:
            search_both(root, pg, args.hours, args.queries, args.seed, set(args.kinds.split(",")))
        four_recorders(pg, args.burst, args.paced, args.pace)
        spool_replay(root, pg, args.offline_hours)
    finally:
        if args.keep:
            pg.stop()
        else:
            pg.destroy()
            shutil.rmtree(root, ignore_errors=True)


def _sqlite_version() -> str:
    import sqlite3

    return sqlite3.sqlite_version


if __name__ == "__main__":
    main()
