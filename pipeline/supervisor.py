"""The supervisor: starts capture, recognizer and indexer, and sees them through.

``ingest`` and ``record`` run here::

    capture ──audio_q──▶ recognizer ──┐
       └──────────────index_q─────────┴──▶ indexer ──report_q──▶ supervisor

Children are started with the ``spawn`` context, ignore SIGINT and SIGHUP,
and die with the supervisor: it owns signals. The first Ctrl+C (or SIGTERM, or
the terminal hanging up) asks capture to stop; STOP then travels down the chain
so everything captured is recognized and committed. A second Ctrl+C (not one
relayed within half a second: :class:`_Signals`), or a child that dies, ends the
run at once; finished segments and committed words are kept either way.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import math
import multiprocessing as mp
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from .capture import check_free_space, run_capture
from .compact import FORMATS
from .config import DEFAULT_SEGMENT_SECONDS, Home, check_segment_seconds
from .database import open_archive, open_database
from .errors import ArchiveUnreachableError, ConfigError, ProcessDiedError, SourceFileError
from .housekeeping import Housekeeper, Upkeep
from .index import Indexer, run_indexer
from .lock import hold
from .logs import collected
from .messages import (
    ArchiveState,
    Capturing,
    ChildFailed,
    Retranscribe,
    SessionIndexed,
    SourceFailed,
    Stop,
    Working,
)
from .objectstore import Bucket, ObjectStore, upload
from .process import TERMINAL_SIGNALS, TERMINATE_SECONDS, shut_down, start_children
from .recognize import EngineSpec, recognizer_process
from .repair import repair
from .retention import enforce
from .sources import SourceSpec, live_backend
from .sources.file import open_file_source
from .status import Beacon, RunFile

log = logging.getLogger(__name__)

DEFAULT_COMPACT_AFTER = 3600.0  # seconds after a segment is written
SAME_CTRL_C_SECONDS = 0.5  # SIGINTs closer than this are one (uv relays after 200 ms)
AUDIO_QUEUE_CHUNKS = 240  # half-second chunks: two minutes of audio in flight at most
REPORT_POLL_SECONDS = 0.2
ABORT_SECONDS = 1.5
MAX_RESTARTS = 5  # within RESTART_WINDOW_SECONDS; past it a dying child ends the run
RESTART_WINDOW_SECONDS = 60.0  # a recorder runs for days: only a burst of deaths ends it
RESTART_BACKOFF = (0.0, 1.0, 2.0, 4.0, 8.0)  # before the 1st, 2nd, … restart in the window
STALE_LOCK_SECONDS = 0.5
REPORT_QUEUE_MAX = 1000  # status messages beyond this are dropped, never waited for


@dataclass
class RunReport:
    """What a run did: sessions indexed, sources that failed, whether it was interrupted."""

    indexed: list[SessionIndexed] = field(default_factory=list)
    failed: list[SourceFailed] = field(default_factory=list)
    interrupted: bool = False
    restarts: int = 0
    archive: ArchiveState | None = None  # a shared archive's state at the end, if it was away


IngestReport = RunReport


@dataclass(frozen=True)
class Heartbeat:
    """Sent to ``on_event`` every poll: the audio queue's depth (chunks waiting)."""

    queue_depth: int


def ingest(
    paths: list[str | Path],
    home: Home,
    spec: EngineSpec | None = None,
    *,
    segment_seconds: float = DEFAULT_SEGMENT_SECONDS,
    realtime: bool = False,
    max_disk: int | None = None,
    compact: str | None = None,
    compact_after: float = DEFAULT_COMPACT_AFTER,
    upload_to: Bucket | None = None,
    on_event: Callable[[object], None] | None = None,
    queue_chunks: int = AUDIO_QUEUE_CHUNKS,
    jobs: int = 1,
    helpers: int = 0,
) -> RunReport:
    """Ingest audio files through the three processes; return what happened.

    Bad files are reported (in the report and through ``on_event``) and
    skipped; the others are captured, recognized and indexed, by ``jobs``
    capture/recognizer pairs in parallel (one indexer). ``helpers``:
    recognizers that share a backlog (as `record` has), for ``realtime``.
    ``upload_to``: a bucket the finished segments are copied to (see
    :mod:`pipeline.objectstore`).
    """
    check_segment_seconds(segment_seconds)
    notify = on_event or (lambda event: None)
    report = RunReport()
    _open_for_run(home, notify, report)  # migrate now: a locked or bad database fails fast
    check_free_space(home.recordings)
    good: list[SourceSpec] = []
    for path in paths:
        try:
            source = open_file_source(path)
        except SourceFileError as exc:
            failure = SourceFailed(str(path), str(exc))
            report.failed.append(failure)
            notify(failure)
        else:
            good.append(SourceSpec("file", str(source.path), realtime=realtime))
    if good:
        _run(
            good,
            home,
            spec or EngineSpec(),
            report,
            notify,
            segment_seconds=segment_seconds,
            upkeep=_upkeep(max_disk, compact, compact_after, upload_to),
            audio_queue_chunks=queue_chunks,
            jobs=max(1, min(jobs, len(good))),
            helpers=helpers,
        )
    return report


def record(
    source: SourceSpec,
    home: Home,
    spec: EngineSpec | None = None,
    *,
    segment_seconds: float = DEFAULT_SEGMENT_SECONDS,
    duration: float | None = None,
    on_event: Callable[[object], None] | None = None,
    partials: bool = False,
    max_disk: int | None = None,
    compact: str | None = None,
    compact_after: float = DEFAULT_COMPACT_AFTER,
    upload_to: Bucket | None = None,
    jobs: int = 1,
) -> RunReport:
    """Record a live source until Ctrl+C, SIGTERM or ``duration`` seconds.

    The sound server and device are checked here first, so a missing
    server or device is a one-line error before any process starts.
    ``jobs``: recognizers; past one, the others wait (without loading a model)
    to share a backlog if the first falls far behind. ``upload_to``: as for :func:`ingest`.
    """
    check_segment_seconds(segment_seconds)
    if duration is not None and duration <= 0:
        raise ConfigError(f"--duration must be positive (got {duration:g})")
    live_backend().check(source)
    report = RunReport()
    _open_for_run(home, on_event or (lambda event: None), report)
    check_free_space(home.recordings)
    _run(
        [source],
        home,
        spec or EngineSpec(),
        report,
        on_event or (lambda event: None),
        segment_seconds=segment_seconds,
        max_seconds=duration,
        partials=partials,
        upkeep=_upkeep(max_disk, compact, compact_after, upload_to),
        helpers=max(0, jobs - 1),
    )
    return report


def _open_for_run(home: Home, notify, report: RunReport) -> None:
    """Create or upgrade the archive before a run, so a bad database fails before any
    process starts; a shared one that is out of reach does not stop a run (its writes
    are spooled until it is back), it is only said."""
    try:
        open_archive(home.ensure()).dispose()
    except ArchiveUnreachableError as exc:
        if not home.shared:
            raise
        report.archive = ArchiveState(False, 0, str(exc), datetime.now(UTC))
        notify(report.archive)


def _run(sources, home, spec, report, notify, **options) -> None:
    """Hold the home's lock for the run; first repair what a crashed run left."""
    with hold(home) as held:
        if held.stale_pid is not None:
            notify(Repairing(held.stale_pid))
            try:
                for action in repair(home, spec=spec):
                    notify(action)
            except ArchiveUnreachableError as exc:  # the next run repairs, when it is back
                notify(ArchiveState(False, 0, str(exc), datetime.now(UTC)))
        run_file = RunFile(home, [s.describe() for s in sources])
        beacon = None
        if home.shared:  # other machines see this recorder in `pipeline status`
            live = any(s.kind != "file" for s in sources)
            beacon = Beacon(home, run_file, "recording" if live else "ingesting")
            beacon.start()

        def relay(msg: object) -> None:
            run_file.apply(msg, msg.queue_depth if isinstance(msg, Heartbeat) else None)
            notify(msg)

        try:
            _run_processes(sources, home, spec, report, relay, **options)
        finally:
            if beacon is not None:
                beacon.stop()
            run_file.close()
        upkeep = options["upkeep"]
        if upkeep.max_disk or upkeep.upload:  # the children are gone: this process may write
            with contextlib.suppress(ArchiveUnreachableError):  # the next run checks again
                _final_upkeep(home, upkeep)


NO_UPKEEP = Upkeep()


def _upkeep(
    max_disk: int | None, compact: str | None, after: float, upload: Bucket | None = None
) -> Upkeep:
    fmt = None if compact in (None, "off") else FORMATS[compact]
    return Upkeep(max_disk, fmt, timedelta(seconds=after), upload)


@dataclass(frozen=True)
class Repairing:
    """Sent to ``on_event`` when a run finds that the last one did not stop cleanly."""

    pid: int


def _run_processes(
    sources,
    home,
    spec,
    report,
    notify,
    *,
    segment_seconds,
    max_seconds=None,
    partials=False,
    upkeep=NO_UPKEEP,
    audio_queue_chunks=AUDIO_QUEUE_CHUNKS,
    jobs=1,
    helpers=0,
) -> None:
    ctx = mp.get_context("spawn")
    index_q = ctx.Queue()
    report_q = ctx.Queue(maxsize=REPORT_QUEUE_MAX)
    stop = ctx.Event()
    log_q = ctx.Queue()
    lanes = [Lane.make(ctx, k, jobs, audio_queue_chunks) for k in range(jobs)]
    work_q = None
    if jobs > 1:  # the lanes' captures take the next file from here when done with one
        work_q = ctx.Queue()
        for i in range(len(sources)):
            work_q.put(i)

    def capture(lane: Lane, resume: Capturing | None = None) -> mp.Process:
        return ctx.Process(
            target=run_capture,
            name=f"pipeline-{lane.capture}",
            args=(sources, str(home.recordings), lane.audio_q, index_q, stop),
            kwargs={
                "segment_seconds": segment_seconds,
                "max_seconds": max_seconds,
                "report_q": report_q,
                "log_q": log_q,
                "resume": resume,
                "work_q": work_q,
                "sender": lane.capture,
                "db": home.db,
            },
        )

    helper_names = [f"helper-{k + 1}" for k in range(helpers)]
    helpers_q = ctx.Queue() if helpers else None  # pieces of a backlog

    def recognizer(name: str, audio_q, **extra) -> mp.Process:
        return recognizer_process(
            ctx,
            spec,
            audio_q,
            index_q,
            name=name,
            home=home,
            report_q=report_q,
            log_q=log_q,
            **extra,
        )

    producers = (
        *(name for lane in lanes for name in (lane.capture, lane.recognizer)),
        *helper_names,
    )

    def indexer(waiting_for: tuple[str, ...] = producers) -> mp.Process:
        return ctx.Process(
            target=run_indexer,
            name="pipeline-indexer",
            args=(home, index_q, report_q, waiting_for),
            kwargs={"log_q": log_q, "spool": home.shared},
        )

    makers: dict[str, Callable[..., mp.Process]] = {}
    queues: dict[str, list] = {"indexer": [(index_q, "read"), (report_q, "write")]}
    for lane in lanes:  # captures start first: recording while the others load their models
        makers[lane.capture] = functools.partial(capture, lane)
        queues[lane.capture] = [(lane.audio_q, "write"), (index_q, "write"), (report_q, "write")]
    for lane in lanes:
        makers[lane.recognizer] = functools.partial(
            recognizer,
            lane.recognizer,
            lane.audio_q,
            partials=partials,
            helpers_q=helpers_q,
            helpers=helpers,
        )
        queues[lane.recognizer] = [(lane.audio_q, "read"), (index_q, "write"), (report_q, "write")]
    for name in helper_names:
        makers[name] = functools.partial(recognizer, name, helpers_q)
        queues[name] = [(helpers_q, "read"), (index_q, "write"), (report_q, "write")]
    makers["indexer"] = indexer
    children = Children(makers, notify, queues, stop, lanes, helper_names, helpers_q)
    with collected(home, log_q):
        keeper = Housekeeper(home, upkeep, index_q.put) if upkeep else None
        if keeper is not None:
            keeper.start()
        try:
            _supervise(children, stop, index_q, report_q, report, notify)
        finally:
            if keeper is not None:
                keeper.stop()
    report.restarts = children.restarts


@dataclass(frozen=True)
class Lane:
    """A capture and a recognizer joined by their own audio queue; the indexer is shared.

    ``--jobs N`` runs N lanes over a list of files; names stay "capture" and
    "recognizer" when there is one lane.
    """

    capture: str
    recognizer: str
    audio_q: object

    @classmethod
    def make(cls, ctx, k: int, jobs: int, chunks: int) -> Lane:
        suffix = f"-{k + 1}" if jobs > 1 else ""
        return cls(f"capture{suffix}", f"recognizer{suffix}", ctx.Queue(maxsize=chunks))


@dataclass(frozen=True)
class Restarted:
    """Sent to ``on_event`` when a crashed child was started again."""

    name: str
    exit_code: int
    restarts: int


class Children:
    """The three child processes, and bringing back one that died.

    A new capture carries on the session the dead one was recording (see
    :class:`~pipeline.messages.Capturing`), filling the time it was down with
    silence; the others keep going meanwhile. A new recognizer reads what it
    missed back from disk; a new indexer comes with a new recognizer, because
    the utterances the dead indexer held were lost with it, and the new
    recognizer makes them again from where the archive's words end.
    """

    def __init__(
        self,
        makers: dict[str, Callable[..., mp.Process]],
        notify,
        queues: dict[str, list],
        stop,
        lanes: list[Lane],
        helpers: list[str] | None = None,
        helpers_q=None,
    ) -> None:
        self.makers = makers
        self.lanes = lanes
        self.helpers = helpers or []  # recognizers that share a backlog
        self.helpers_q = helpers_q  # the pieces of backlog they take
        self.working: dict[str, tuple[int, Retranscribe]] = {}  # helper → (pid, its piece)
        self.finished: collections.deque[tuple[float, Retranscribe]] = collections.deque()
        self._dead_helpers: set[int] = set()  # pids of helpers that died and were replaced
        self.queues = queues  # name → (queue, "read" | "write") the child uses
        self.notify = notify
        self.stop = stop
        self.procs: dict[str, mp.Process] = {}
        self.restarts = 0  # in the whole run
        self._recent: collections.deque[float] = collections.deque()  # times, in the window
        self.capturing: dict[str, Capturing] = {}  # capture name → where it last said it was
        self._due: dict[str, float] = {}

    def start(self) -> None:
        self.procs = {name: make() for name, make in self.makers.items()}
        start_children(self.procs.values())
        log.info("started %s", ", ".join(f"{p.name} (pid {p.pid})" for p in self.procs.values()))

    def check(self) -> None:
        """Restart a dead child (with backoff); past MAX_RESTARTS, or a capture dying
        while the run stops, ends the run."""
        while self._recent and self._recent[0] < time.monotonic() - RESTART_WINDOW_SECONDS:
            self._recent.popleft()
        recent = len(self._recent)
        for name, p in list(self.procs.items()):
            if p.exitcode in (None, 0):
                continue
            dying_capture = name.startswith("capture") and self.stop.is_set()
            if recent >= MAX_RESTARTS or dying_capture:
                raise ProcessDiedError(
                    f"the {name} process died (exit code {p.exitcode})"
                    + (f" after {recent} restarts in a minute" if recent else "")
                    + "; finished segments and indexed words are kept; run `pipeline repair`"
                )
            due = self._due.setdefault(
                name,
                time.monotonic() + RESTART_BACKOFF[min(recent, len(RESTART_BACKOFF) - 1)],
            )
            if time.monotonic() >= due:
                self._restart(name, p.exitcode)

    @property
    def producers(self) -> list[str]:
        """Who sends the indexer a STOP."""
        lanes = [name for lane in self.lanes for name in (lane.capture, lane.recognizer)]
        return lanes + self.helpers

    def _restart(self, name: str, exit_code: int) -> None:
        for q, side in self.queues.get(name, []):
            _unstick(q, side)
        self.restarts += 1
        self._recent.append(time.monotonic())
        self._due.pop(name, None)
        log.warning(
            "the %s died (exit code %s); restarting it (restart %d)", name, exit_code, self.restarts
        )
        if name == "indexer":
            self._restart_indexer()
        elif name.startswith("capture"):
            self.procs[name] = self.makers[name](self.capturing.get(name))
            start_children([self.procs[name]])
        else:
            if name in self.working:  # its piece is given out again
                self.helpers_q.put(self.working.pop(name)[1])
            self._dead_helpers.add(self.procs[name].pid)
            self.procs[name] = self.makers[name]()
            start_children([self.procs[name]])
        self.notify(Restarted(name, exit_code, self.restarts))

    def track(self, msg: Working) -> None:
        """Which piece of backlog each helper is on, and which were finished lately.

        A helper may die before its report is read: a piece reported by a
        process already replaced is given out again at once.
        """
        if msg.job is not None:
            if msg.pid in self._dead_helpers:
                self.helpers_q.put(msg.job)
            else:
                self.working[msg.sender] = (msg.pid, msg.job)
            return
        pid, job = self.working.get(msg.sender, (None, None))
        now = time.monotonic()
        if pid == msg.pid:
            del self.working[msg.sender]
            self.finished.append((now, job))
        while self.finished and self.finished[0][0] < now - RESTART_WINDOW_SECONDS:
            self.finished.popleft()

    def _restart_indexer(self) -> None:
        """What the dead indexer held is lost: the recognizers make it again.

        A new indexer waits for a STOP from every producer except captures that
        have finished (theirs is already in); a recognizer whose capture has
        finished gets that STOP again on its audio queue, or it would wait forever.
        """
        for lane in self.lanes:
            old = self.procs[lane.recognizer]
            if old.is_alive():
                old.terminate()
                old.join(TERMINATE_SECONDS)
            for q, side in self.queues[lane.recognizer]:
                _unstick(q, side)
        # pieces of backlog whose words the dead indexer may have held: again (the
        # new indexer drops what it already has)
        for _, job in self.finished:
            self.helpers_q.put(job)
        for _, job in self.working.values():
            self.helpers_q.put(job)
        self.finished.clear()
        done = {lane.capture for lane in self.lanes if self.procs[lane.capture].exitcode == 0}
        self.procs["indexer"] = self.makers["indexer"](
            tuple(n for n in self.producers if n not in done)
        )
        for lane in self.lanes:
            self.procs[lane.recognizer] = self.makers[lane.recognizer]()
            if lane.capture in done:
                lane.audio_q.put(Stop(lane.capture))
        start_children(
            [self.procs["indexer"], *(self.procs[lane.recognizer] for lane in self.lanes)]
        )


def _unstick(q, side: str) -> None:
    """Free a queue lock that a killed child may have died holding.

    multiprocessing.Queue serialises readers with ``_rlock`` and writers with
    ``_wlock``. A child killed inside ``get`` (a recognizer waiting for audio,
    the usual place to be killed) leaves ``_rlock`` taken forever, and its
    replacement would wait on it forever. Nobody else reads that queue, so a
    taken read lock is stale. A live writer holds ``_wlock`` only while it
    sends one message, so one that stays taken for STALE_LOCK_SECONDS is stale.
    (A child killed in the middle of sending leaves half a message in the
    pipe; the reader then fails and, past MAX_RESTARTS, the run ends.)
    """
    lock = getattr(q, "_rlock" if side == "read" else "_wlock", None)
    if lock is None:
        return
    deadline = time.monotonic() + (0 if side == "read" else STALE_LOCK_SECONDS)
    while True:
        if lock.acquire(False):
            lock.release()
            return
        if time.monotonic() >= deadline:
            log.info("freeing a %s lock a dead child held", side)
            lock.release()
            return
        time.sleep(0.01)


def _final_upkeep(home: Home, upkeep: Upkeep) -> None:
    """After a run: upload what it recorded (an ingest may end before housekeeping's next
    round), then keep to the disk budget; written by an indexer of this process's own."""
    engine = open_database(home)
    try:
        indexer = Indexer(engine)
        send = lambda msg: indexer.write([msg])  # noqa: E731  (committed at once)
        if upkeep.upload is not None:
            later = upkeep.compact_after if upkeep.compact is not None else None
            store = ObjectStore(upkeep.upload.endpoint_url)
            upload(home, engine, upkeep.upload, store, send, compacting_after=later)
        if upkeep.max_disk is not None:
            enforce(home, engine, upkeep.max_disk, send)
    finally:
        engine.dispose()


def _supervise(children, stop, index_q, report_q, report, notify) -> None:
    signals = _Signals.install()  # before the start: no signal may raise outside the try
    try:
        children.start()
        _watch(children, report_q, stop, report, notify, signals)
    except BaseException:
        _abort(children, stop, index_q)
        raise
    finally:
        signals.restore()
    shut_down(children.procs.values())
    _check_alive(children.procs)  # a child that failed after sending its STOP still counts


class _Signals:
    """While a run lasts: SIGTERM, and the terminal hanging up (SIGHUP: its window
    closed, an ssh connection lost), stop it the way Ctrl+C does; SIGINTs closer
    together than :data:`SAME_CTRL_C_SECONDS` are one Ctrl+C. After a hang-up what
    is still printed goes to /dev/null: written to the lost terminal it would fail.

    The first stop only raises a flag that :func:`_watch` reads between reports. An
    exception raised from the handler would land wherever the main thread happened to
    be (relaying a report, restarting a child) and end the run as a second Ctrl+C does;
    nor may the handler set the stop event itself, whose lock the main thread may be
    holding. A second stop raises :class:`KeyboardInterrupt`: that one is meant to cut.

    ``uv run``, when not on a terminal, relays to its child, 200 ms later, the SIGINT
    that its process group got too (uv PRs 13925 and 13018). Taken for a second Ctrl+C,
    it would end the run at once; arriving after the run, it would interrupt the
    command's last words. So a Ctrl+C's handler stays until its window has passed. A
    person who wants to stop at once presses again. Only the main thread can set
    handlers; elsewhere this does nothing.
    """

    def __init__(self, previous: dict) -> None:
        self.previous = previous
        self.stops = 0  # stops asked for, by SIGINT, SIGTERM or SIGHUP
        self.why = ""  # the first stop's signal, for the log
        self.last = -math.inf  # the last SIGINT taken, monotonic seconds

    @classmethod
    def install(cls) -> _Signals:
        signals = cls({})
        if threading.current_thread() is threading.main_thread():
            signals.previous = {
                s: signal.signal(s, signals._interrupt) for s in (signal.SIGTERM, *TERMINAL_SIGNALS)
            }
        return signals

    def _interrupt(self, signum, frame) -> None:
        if signum == signal.SIGINT:
            now = time.monotonic()
            if now - self.last < SAME_CTRL_C_SECONDS:
                return  # the same Ctrl+C, relayed
            self.last = now
        elif signum == getattr(signal, "SIGHUP", None):
            _lose_the_terminal()
        self.stops += 1
        self.why = self.why or signal.Signals(signum).name
        if self.stops > 1:
            raise KeyboardInterrupt

    def restore(self) -> None:
        if not self.previous:
            return
        time.sleep(max(0.0, self.last + SAME_CTRL_C_SECONDS - time.monotonic()))
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def _lose_the_terminal() -> None:
    """Point stdout and stderr at /dev/null: the terminal they wrote to is gone."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in (1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def _watch(children, report_q, stop, report: RunReport, notify, signals: _Signals) -> None:
    """Relay the children's reports until the indexer finishes; fail fast if a child dies."""
    beat = time.monotonic()
    while True:
        if signals.stops and not report.interrupted:
            log.info("%s: stopping the run", signals.why)
            report.interrupted = True
            stop.set()  # capture closes its segment; STOP drains the chain
        try:
            msg = report_q.get(timeout=REPORT_POLL_SECONDS)
        except queue.Empty:
            msg = None
        if time.monotonic() - beat >= REPORT_POLL_SECONDS:  # even while messages flow
            beat = time.monotonic()
            children.check()
            notify(Heartbeat(sum(_depth(lane.audio_q) for lane in children.lanes)))
        if msg is None:
            continue
        if isinstance(msg, Stop):
            return
        if isinstance(msg, Capturing):
            children.capturing[msg.sender] = msg
            continue
        if isinstance(msg, Working):
            children.track(msg)
            continue
        if isinstance(msg, ChildFailed):
            raise ProcessDiedError(f"{msg.stage} failed: {msg.message}")
        if isinstance(msg, ArchiveState):
            report.archive = None if msg.online else msg
        if isinstance(msg, SessionIndexed):
            report.indexed.append(msg)
        elif isinstance(msg, SourceFailed):
            report.failed.append(msg)
        notify(msg)


def _depth(q) -> int:
    try:
        return q.qsize()
    except NotImplementedError:  # macOS has no sem_getvalue
        return -1


def _check_alive(procs: dict[str, mp.Process]) -> None:
    for name, p in procs.items():
        if p.exitcode not in (None, 0):
            raise ProcessDiedError(
                f"the {name} process died (exit code {p.exitcode}); finished segments and "
                "indexed words are kept; run the command again"
            )


def _abort(children: Children, stop, index_q) -> None:
    """Something failed: stop capture, let the indexer commit what it has, end the rest."""
    stop.set()
    started = {name: p for name, p in children.procs.items() if p.pid is not None}
    for lane in children.lanes:  # (the start itself may be what failed)
        if lane.capture in started:
            started[lane.capture].join(ABORT_SECONDS)
    for producer in children.producers:  # stand in for producers that will never send STOP
        index_q.put(Stop(producer))
    if "indexer" in started:
        started["indexer"].join(ABORT_SECONDS)
    shut_down(started.values(), join_seconds=0)
