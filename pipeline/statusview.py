"""How `pipeline status` looks on a terminal (a rich renderable, testable in a StringIO)."""

from __future__ import annotations

from datetime import datetime

from rich.console import Group
from rich.table import Table
from rich.text import Text

from .liveview import _size, counted
from .status import Status

MAX_GAPS_SHOWN = 20


def render_status(st: Status) -> Group:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("home", st.home)
    if st.recorders or st.archive_error:  # a shared archive
        grid.add_row("archive", st.archive)
    if st.archive_error:
        grid.add_row("archive", Text(f"out of reach: {st.archive_error}", style="red"))
    if st.spool_waiting:
        since = f" (since {_local(st.spool_since)})" if st.spool_since else ""
        grid.add_row(
            "spool",
            Text(
                f"{counted(st.spool_waiting, 'batch')} of index writes wait here "
                f"for the archive{since}",
                style="yellow",
            ),
        )
    grid.add_row("recorder", _recorder(st))
    grid.add_row("today", f"{st.hours_today:.2f} h recorded, {counted(st.words_today, 'word')}")
    grid.add_row(
        "total",
        f"{counted(st.sessions, 'session')}, {st.hours_total:.2f} h, "
        f"{counted(st.words_total, 'word')}",
    )
    budget = f" of {_size(st.disk_budget_bytes)}" if st.disk_budget_bytes else " (no budget)"
    grid.add_row(
        "disk",
        f"recordings {_size(st.recordings_bytes)}{budget}, database {_size(st.database_bytes)}",
    )
    grid.add_row("coverage", _coverage(st))
    if st.running and st.running.get("last_error"):
        grid.add_row("last error", Text(st.running["last_error"], style="red"))
    parts: list = [grid]
    if st.recorders:
        parts.append(_recorders_table(st))
    if st.gaps:
        gaps = Table(
            "when",
            "seconds",
            "reason",
            title="gaps in the last 24 h",
            title_justify="left",
            header_style="bold",
        )
        for g in st.gaps[-MAX_GAPS_SHOWN:]:
            gaps.add_row(_local(g.at), f"{g.seconds:.1f}", g.reason)
        parts.append(gaps)
    return Group(*parts)


def _recorders_table(st: Status) -> Table:
    table = Table(
        "recorder",
        "state",
        "last heartbeat",
        "lag",
        "sessions",
        "hours",
        "audio served at",
        title="recorders of the shared archive",
        title_justify="left",
        header_style="bold",
    )
    for r in st.recorders:
        beat = _local(r.heartbeat_at) if r.heartbeat_at else "never"
        table.add_row(
            r.name,
            r.state,
            beat,
            f"{r.lag_seconds:.1f} s",
            str(r.sessions),
            f"{r.hours:.2f}",
            r.serve_url or "-",
        )
    return table


def _recorder(st: Status) -> Text:
    r = st.running
    if r:
        since = _local(datetime.fromisoformat(r["since"]))
        return Text(
            f"recording, pid {r['pid']} since {since} ({', '.join(r['sources'])}: "
            f"{r.get('device') or '…'}), recognizer lag {r['lag_seconds']:.1f} s, "
            f"{counted(r['words'], 'word')} this run, {counted(r['restarts'], 'restart')}",
            style="green",
        )
    if st.unclean_stop_pid:
        return Text(
            f"not running; the last run (pid {st.unclean_stop_pid}) did not stop "
            "cleanly: run `pipeline repair`",
            style="yellow",
        )
    return Text("not running")


def _coverage(st: Status) -> str:
    if not st.expected_seconds:
        return "no live recording in the last 24 h"
    share = 100 * st.captured_seconds / st.expected_seconds
    return (
        f"last 24 h: {st.captured_seconds / 3600:.2f} h captured of "
        f"{st.expected_seconds / 3600:.2f} h recording ({share:.0f} %)"
    )


def _local(at: datetime) -> str:
    return at.astimezone().strftime("%Y-%m-%d %H:%M:%S")
