"""What every child process does first: leave signals to the supervisor, take a name."""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path

COMM = Path("/proc/self/comm")


def become_child(name: str) -> None:
    """Ignore SIGINT (the supervisor decides when to stop) and show ``name`` in ps/top.

    Linux limits the name to 15 bytes; elsewhere the name is only a label.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        COMM.write_text(name[:15])
