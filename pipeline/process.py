"""What every child process does first: leave signals to the supervisor, take a name."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing as mp
import os
import queue
import signal
import sys
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

COMM = Path("/proc/self/comm")
JOIN_SECONDS = 10.0  # a child's time to finish on its own at the end of a run
TERMINATE_SECONDS = 3.0
# what a terminal sends its whole foreground process group: Ctrl+C, and its hanging up
TERMINAL_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGHUP") if hasattr(signal, name)
)
PR_SET_PDEATHSIG = 1  # prctl(2)


def become_child(name: str, log_q=None) -> None:
    """Ignore a terminal's signals (the supervisor decides when to stop), die with the
    supervisor, show ``name`` in ps/top, and send log records to ``log_q``.

    Linux limits the name to 15 bytes; elsewhere the name is only a label.
    """
    for signum in TERMINAL_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    _die_with_parent()
    if log_q is not None:
        from .logs import to_queue

        to_queue(log_q)
    with contextlib.suppress(OSError):
        COMM.write_text(name[:15])


def _die_with_parent() -> None:
    """Linux: be sent SIGTERM when the supervisor dies (killed, or crashed).

    Its children ignore the signals that would stop them with it, and nothing else
    would: a capture left alone records on forever, and the next run, finding the
    supervisor's lock stale, would start a second one beside it.
    """
    if sys.platform != "linux":
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    parent = mp.parent_process()
    if parent is not None and os.getppid() != parent.pid:  # it died before prctl took hold
        os.kill(os.getpid(), signal.SIGTERM)


def nonblocking(q) -> Callable[[object], None]:
    """A put for status messages: they are nice to have, so never wait for room."""

    def put(message: object) -> None:
        with contextlib.suppress(queue.Full):
            q.put_nowait(message)

    return put


def start_children(procs) -> None:
    """Start children with a terminal's signals ignored from their first instruction.

    A terminal's Ctrl+C, or its hanging up, reaches the whole process group; a
    child still importing would die of it. An ignored signal stays ignored across
    exec, so children are born deaf to them, and only the supervisor decides.
    """
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in TERMINAL_SIGNALS}
    try:
        for p in procs:
            p.start()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def shut_down(procs, *, join_seconds: float = JOIN_SECONDS) -> None:
    """Join with a timeout, then terminate, then kill: never hang on exit."""
    for p in procs:
        p.join(join_seconds if p.exitcode is None else 0)
    for p in procs:
        if p.is_alive():
            log.info("terminating %s", p.name)
            p.terminate()
            p.join(TERMINATE_SECONDS)
        if p.is_alive():
            p.kill()
            p.join()
