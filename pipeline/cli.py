"""The `pipeline` command: parse, call the core, print. Nothing else lives here.

Every command is one call into the library. A :class:`PipelineError` raised
anywhere below is turned into one line on stderr and its exit code in
exactly one place, :class:`_Commands.invoke`; anything else is a bug.
"""

from __future__ import annotations

import functools
import json
import math
import os
import signal
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from . import models, service
from .archive import Archive
from .assemblyai import AssemblyAISettings, check_installed
from .compact import FORMATS, compact_archive
from .config import (
    ENGINES,
    SECRET_KEYS,
    URL_KEYS,
    Home,
    Settings,
    check_db_url,
    check_recorder,
    parse_duration,
    parse_size,
    resolve_home,
    set_value,
    shown_url,
)
from .dates import between
from .errors import (
    ArchiveUnreachableError,
    CaptureError,
    ConfigError,
    Interrupted,
    PartialFailure,
    PipelineError,
)
from .export import FORMATS as EXPORT_FORMATS
from .export import check_format, render, write_text
from .fuzzy import FUZZY_MIN_SCORE
from .index import default_recorder
from .ingestview import CopyProgress, IngestProgress, ReindexProgress
from .liveview import LiveState, counted
from .lock import hold
from .logs import setup_cli
from .messages import ArchiveState, SegmentCompacted, SessionIndexed, SourceFailed
from .objectstore import Bucket
from .objectstore import check_installed as check_boto3
from .recognize import EngineSpec
from .reindex import Plan
from .reindex import plan as plan_reindex
from .reindex import reindex as run_reindex
from .remote import Elsewhere
from .repair import Action
from .repair import repair as run_repair
from .replay import DEFAULT_PADDING_SECONDS
from .search import Hit
from .sources import KINDS, SourceSpec, live_backend
from .spool import SPOOL_NAME
from .status import collect as collect_status
from .statusview import render_status
from .supercut import DEFAULT_GAP_SECONDS, DEFAULT_LIMIT
from .supercut import DEFAULT_PADDING_SECONDS as CUT_PADDING
from .supervisor import Repairing, Restarted
from .supervisor import ingest as run_ingest
from .supervisor import record as run_record


class _Commands(TyperGroup):
    """Maps PipelineError to one line and an exit code, for every command."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except PipelineError as exc:
            _fail(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            _fail("interrupted; finished segments and indexed words are kept")
            raise typer.Exit(130) from None


app = typer.Typer(
    cls=_Commands,
    help="Record, transcribe and search what was said on this machine.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
WIDE_TERMINAL = 100  # columns from which tables show their less needed columns too

HomeOption = Annotated[
    Path | None,
    typer.Option(
        "--home",
        help="Data home (default: $PIPELINE_HOME, else the user data dir).",
        show_default=False,
    ),
]
DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="The archive's database, e.g. postgresql://pipeline@archive.local/pipeline "
        "for one that many recorders share (default: $PIPELINE_DB, else the config's db, "
        "else the home's own SQLite file).",
        show_default=False,
    ),
]
RecorderOption = Annotated[
    str | None,
    typer.Option(
        "--recorder",
        help="This machine's name in a shared archive (default: its host name).",
        show_default=False,
    ),
]
ModelOption = Annotated[
    str | None,
    typer.Option(
        help="A model's name from `pipeline models list`, or a Vosk model folder "
        "(default: config, else PocketSphinx US English, bundled)."
    ),
]
EngineOption = Annotated[
    str | None,
    typer.Option(
        "--engine",
        help="local: PocketSphinx, or the Vosk model chosen, all on this machine; "
        "assemblyai: the speech the local VAD finds is sent to AssemblyAI's cloud "
        "(needs ASSEMBLYAI_API_KEY). Default: config, else local.",
        show_default=False,
    ),
]
LangOption = Annotated[
    str | None,
    typer.Option(help="Use the best installed model for this language, e.g. en, de, ko."),
]
JobsOption = Annotated[
    int | None,
    typer.Option(help="Recognizers in parallel (default: the number of cores)."),
]
SegmentOption = Annotated[
    float | None,
    typer.Option(
        help="Length of each recorded segment file, seconds (default: 300).", show_default=False
    ),
]
MaxDiskOption = Annotated[
    str | None,
    typer.Option(
        help="Disk budget for the audio, e.g. 20G: past it the oldest audio is "
        "deleted (the words are kept).",
        show_default=False,
    ),
]
Before = Annotated[float, typer.Option(help="Seconds of audio before the moment.")]
After = Annotated[float, typer.Option(help="Seconds of audio after the moment.")]
# what narrows a search, for `search` and `supercut` alike
Since = Annotated[
    str | None, typer.Option(help="From then on: 2026-11-01, yesterday, monday, 2h, 7d.")
]
Until = Annotated[str | None, typer.Option(help="Before then (a date: to its end).")]
SessionFilter = Annotated[str | None, typer.Option(help="Only this session (id or key).")]
SourceFilter = Annotated[
    str | None, typer.Option(help="Only sessions recorded from: file, system or mic.")
]
DeviceFilter = Annotated[
    str | None, typer.Option(help="Only sessions whose device name or file path has this.")
]
RecorderFilter = Annotated[
    str | None, typer.Option(help="Only sessions recorded by this machine (shared archive).")
]
Fuzzy = Annotated[
    bool,
    typer.Option("--fuzzy", help="Find what sounds like the phrase, even if misheard; best first."),
]
MinScore = Annotated[
    float | None,
    typer.Option(help=f"With --fuzzy: lowest score taken, 0..1 (default {FUZZY_MIN_SCORE})."),
]


class _State:
    """The settings the callback loaded for this invocation."""

    settings: Settings | None = None


def _settings() -> Settings:
    if _State.settings is None:
        _State.settings = Settings.load()
    return _State.settings


def _home(option: Path | None, db: str | None = None, recorder: str | None = None) -> Home:
    """--home, then $PIPELINE_HOME, then `home` in the config file, then the default;
    the archive's database: --db, then $PIPELINE_DB, then `db` in the config file, else
    the home's own SQLite file."""
    url = _url("--db", db) if db else _settings().get("db")
    name = recorder or _settings().get("recorder")
    if recorder:
        try:
            check_recorder(recorder)
        except ValueError as exc:
            raise ConfigError(f"--recorder: {exc}") from None
    return resolve_home(option or _settings().get("home"), url, name)


def _url(option: str, url: str) -> str:
    try:
        return check_db_url(url)
    except ValueError as exc:
        raise ConfigError(f"{option}: {exc}") from None


def _engine(
    option: str | None, home: Home, lang: str | None = None, engine: str | None = None
) -> EngineSpec:
    """--engine assemblyai (or the config's engine) is the cloud; else --model, else --lang's
    best installed model, else the config's model, else the default."""
    kind = _settings().get("engine", engine)
    if kind not in ENGINES:
        raise ConfigError(f"--engine must be one of {', '.join(ENGINES)} (got {kind!r})")
    if kind == "assemblyai":
        if option or lang:
            raise ConfigError(
                "--model and --lang choose a local model; leave them out, or use --engine local"
            )
        check_installed()
        cloud = AssemblyAISettings.resolve(
            _settings().get("assemblyai_api_key"), _settings().get("assemblyai_url")
        )
        return EngineSpec("assemblyai", cloud=cloud)
    chosen = option or (None if lang else _settings().get("model"))
    if chosen:
        return EngineSpec.from_options(models.resolve(home, str(chosen)))
    if lang:
        return EngineSpec.from_options(models.for_language(home, lang, models.cached_catalog(home)))
    return EngineSpec()


def _budget(option: str | None) -> int | None:
    if option is None:
        return _settings().get("max_disk")
    try:
        return parse_size(option)
    except ValueError as exc:
        raise ConfigError(f"--max-disk: {exc}") from exc


def _compaction() -> dict:
    return {
        "compact": _settings().get("compact"),
        "compact_after": _settings().get("compact_after"),
    }


def _upload_to() -> Bucket | None:
    """The bucket a recorder copies its finished segments to (config `s3_url`), if any."""
    url = _settings().get("s3_url")
    if not url:
        return None
    check_boto3()  # a missing extra is one line now, not a failed upload in an hour
    return Bucket(url, _settings().get("s3_endpoint_url"))


def _archive(home: Path | None, db: str | None) -> Archive:
    """The archive, able to get audio recorded elsewhere (config `token`/`token_file` or
    $PIPELINE_TOKEN; `s3_endpoint_url`)."""
    return Archive(_home(home, db), elsewhere=_elsewhere())


def _elsewhere() -> Elsewhere:
    st = _settings()
    return Elsewhere.resolve(
        token=st.get("token"),
        token_file=st.get("token_file"),
        s3_endpoint_url=st.get("s3_endpoint_url"),
    )


def _show_repair(event) -> None:
    if isinstance(event, Restarted):
        err.print(
            f"the {event.name} died (exit code {event.exit_code}); restarted the "
            f"{event.name} (restart {event.restarts})"
        )
    elif isinstance(event, Repairing):
        err.print(f"the last run (pid {event.pid}) did not stop cleanly; repairing first")
    elif isinstance(event, Action):
        err.print(f"  {event}", markup=False)


def _archive_warning():
    """A run's warning for a shared archive that goes out of reach: said once, on stderr
    (the run goes on)."""
    told = []

    def show(event) -> None:
        if isinstance(event, ArchiveState) and not event.online and not told:
            told.append(event)
            err.print(
                f"warning: {' '.join(event.reason.split())}; recording goes on, and the words "
                "are kept in this home's spool until the archive is back",
                markup=False,
            )

    return show


def _check_spool(report, home: Home) -> None:
    """A run that ends with words still spooled says so, and fails (exit 5): they are
    safe, but not searchable yet."""
    state = report.archive
    if state is not None and state.waiting:
        raise ArchiveUnreachableError(
            f"{counted(state.waiting, 'batch')} of index writes wait in "
            f"{home.root / SPOOL_NAME}: "
            f"{' '.join(state.reason.split())}; the next run writes them, or "
            "`pipeline db flush` once the archive is back"
        )


def _fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {' '.join(message.split())}", markup=True, highlight=False)


@app.command()
def ingest(
    files: Annotated[list[Path], typer.Argument(help="Audio files (WAV, FLAC, OGG; any rate).")],
    home: HomeOption = None,
    db: DbOption = None,
    recorder: RecorderOption = None,
    model: ModelOption = None,
    lang: LangOption = None,
    engine: EngineOption = None,
    segment_seconds: SegmentOption = None,
    realtime: Annotated[bool, typer.Option(help="Pace the files at 1x, like live audio.")] = False,
    max_disk: MaxDiskOption = None,
    jobs: JobsOption = None,
) -> None:
    """Transcribe audio files into the archive so they can be searched."""
    h = _home(home, db, recorder)
    spec = _engine(model, h, lang, engine)
    if spec.kind == "assemblyai":
        out.print("engine assemblyai: the speech found in these files is sent to AssemblyAI")
    progress = IngestProgress(files, err)
    warn = _archive_warning()

    def show(event) -> None:
        _show_repair(event)
        progress.apply(event)
        if isinstance(event, SourceFailed):
            _fail(event.message)
        elif isinstance(event, SessionIndexed):
            out.print(
                f"indexed [bold]{event.source}[/]: {_duration(event.seconds)}, {_tally(event)}"
            )
        warn(event)

    with progress.bar:
        report = run_ingest(
            files,
            h,
            spec,
            segment_seconds=_settings().get("segment_seconds", segment_seconds),
            realtime=realtime,
            max_disk=_budget(max_disk),
            **_compaction(),
            upload_to=_upload_to(),
            on_event=show,
            jobs=_jobs(jobs),
        )
    _check_spool(report, h)
    if report.interrupted:
        raise Interrupted("stopped early; what was captured before the interrupt is indexed")
    if report.failed and (not report.indexed or len(files) == 1):  # its line says it all
        raise typer.Exit(CaptureError.exit_code)
    if report.failed:
        raise PartialFailure(
            f"{len(report.failed)} of {len(files)} files could not be ingested (see above); "
            "the others are indexed"
        )


@app.command()
def reindex(
    home: HomeOption = None,
    db: DbOption = None,
    model: ModelOption = None,
    lang: LangOption = None,
    session: Annotated[
        str | None, typer.Option(help="Only this session (its id or key; see `sessions`).")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Only sessions started since then: 2026-11-01, 2026-11-01T09:00, 7d."),
    ] = None,
    engine: EngineOption = None,
    jobs: JobsOption = None,
    dry_run: Annotated[bool, typer.Option(help="Show what would be done, do nothing.")] = False,
) -> None:
    """Recognize stored recordings again with another model; earlier transcripts are kept."""
    h = _home(home, db)
    if model is None and lang is None and engine is None:
        raise ConfigError(
            "say which model to reindex with: --model NAME, --lang xx or --engine assemblyai"
        )
    spec = _engine(model, h, lang, engine)
    after, _ = _between(since, None)
    if dry_run:
        _show_plan(plan_reindex(h, spec.label, session=session, since=after))
        return
    shown: list[ReindexProgress] = []

    def show(event) -> None:
        _show_repair(event)
        if isinstance(event, Plan):
            _show_plan(event)
            shown.append(ReindexProgress(event, err))
            shown[0].bar.start()
        elif shown:
            shown[0].apply(event)

    try:
        work = run_reindex(
            h,
            spec,
            session=session,
            since=after,
            jobs=_jobs(jobs),
            on_event=show,
            repair_spec=_engine(None, h),
        )
    finally:
        if shown:
            shown[0].bar.stop()
    if work.jobs:
        out.print(
            f"reindexed {counted(len(work.jobs), 'session')} ({_duration(work.seconds)}) with "
            f"[bold]{spec.label}[/]; search shows these words now "
            "(`search --model` asks for an older transcript)"
        )


def _show_plan(work: Plan) -> None:
    for s in work.skipped:
        err.print(f"skipping session {s.session_id}: {s.reason}", markup=False)
    if work.deleted_seconds:
        err.print(
            f"note: {_duration(work.deleted_seconds)} of audio in these sessions was deleted "
            "by the disk budget; its old words are kept in the new transcripts"
        )
    if not work.jobs:
        err.print(f"nothing to reindex with {work.engine}")
    else:
        err.print(
            f"{counted(len(work.jobs), 'session')}, {_duration(work.seconds)} of audio to "
            f"recognize with {work.engine}"
        )


def _tally(s: SessionIndexed) -> str:
    """What a session gave, as `ingest` and `record` end each one's line."""
    said = f"{counted(s.utterances, 'utterance')}, {counted(s.words, 'word')}"
    return f"{said} (session {s.session_id})"


def _jobs(option: int | None) -> int:
    if option is not None and option < 1:
        raise ConfigError(f"--jobs must be at least 1 (got {option})")
    return option or os.cpu_count() or 1


@app.command()
def record(
    home: HomeOption = None,
    db: DbOption = None,
    recorder: RecorderOption = None,
    source: Annotated[
        str,
        typer.Option(
            help="What to record: system (what the computer plays), mic, or "
            "system+mic (default: system).",
            show_default=False,
        ),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(
            help="A device from `pipeline devices`: its number, name, or part of its "
            "description; default: follow the default device."
        ),
    ] = None,
    duration: Annotated[
        float | None, typer.Option(help="Stop after this many seconds.", show_default=False)
    ] = None,
    quiet: Annotated[bool, typer.Option(help="No live view; print only errors.")] = False,
    model: ModelOption = None,
    lang: LangOption = None,
    engine: EngineOption = None,
    segment_seconds: SegmentOption = None,
    max_disk: MaxDiskOption = None,
    jobs: Annotated[
        int | None,
        typer.Option(
            help="Recognizers: past one, the others share a backlog if recognition falls "
            "behind (default: 2 on a multi-core machine; each idle one costs ~80 MB)."
        ),
    ] = None,
) -> None:
    """Record live audio until Ctrl+C (or --duration), transcribing as it goes."""
    source = _settings().get("source", source)
    device = _settings().get("device", device) if source != "system+mic" else device
    if source not in KINDS:
        raise ConfigError(f"--source must be one of {', '.join(KINDS)} (got {source!r})")
    if device is not None and source == "system+mic":
        raise ConfigError("--device picks one device; use it with --source system or mic")
    h = _home(home, db, recorder)
    spec = _engine(model, h, lang, engine)
    state = LiveState(source=source, engine=spec.label, recordings=h.recordings)
    warn = _archive_warning()
    run = functools.partial(
        run_record,
        SourceSpec(source, device),
        h,
        spec,
        segment_seconds=_settings().get("segment_seconds", segment_seconds),
        duration=duration,
        max_disk=_budget(max_disk),
        **_compaction(),
        upload_to=_upload_to(),
        on_event=lambda event: (
            _show_repair(event),
            state.apply(event),
            warn(event) if quiet else None,
        ),
        partials=not quiet,
        jobs=_jobs(jobs) if jobs is not None else min(2, os.cpu_count() or 1),
    )
    if quiet:
        report = run()
    else:
        with Live(state, console=out, refresh_per_second=4) as live:
            try:
                report = run()
            finally:  # a panel of a recording that never began would say "REC" over its error
                live.transient = not state.session
        if not out.is_terminal and not live.transient:
            out.print()  # the last frame ends without a newline when not on a terminal
    for s in report.failed:
        _fail(s.message)
    _check_spool(report, h)
    if not quiet:
        for s in report.indexed:
            out.print(f"recorded {_duration(s.seconds)} from {s.source}: {_tally(s)}")
    if report.failed:
        raise typer.Exit(CaptureError.exit_code)


@app.command()
def devices(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List what can be recorded: system audio (monitors/loopback) and microphones."""
    found = live_backend().devices()
    if as_json:
        out.print_json(json.dumps([{"index": i, **d.__dict__} for i, d in enumerate(found)]))
        return
    table = Table(header_style="bold")
    for name in ("#", "kind", "default", "name", "description", "format"):
        table.add_column(name, overflow="fold")
    for i, d in enumerate(found):
        table.add_row(
            str(i),
            d.kind,
            "*" if d.default else "",
            d.name,
            d.description,
            f"{d.rate} Hz, {d.channels} ch",
        )
    out.print(table)


@app.command(name="repair")
def repair_command(
    home: HomeOption = None,
    db: DbOption = None,
    dry_run: Annotated[bool, typer.Option(help="Only say what would be done.")] = False,
    model: ModelOption = None,
) -> None:
    """Finish what a crash left: partial segments, unknown files, audio never indexed."""
    h = _home(home, db)
    spec = _engine(model, h)
    with hold(h):
        actions = run_repair(
            h,
            dry_run=dry_run,
            spec=spec,
            on_action=lambda a: out.print(f"{'would ' if dry_run else ''}{a}", markup=False),
        )
    if not actions:
        out.print("nothing to repair")


@app.command(name="compact")
def compact_command(
    home: HomeOption = None,
    db: DbOption = None,
    format: Annotated[
        str | None,
        typer.Option(
            "--format", help="opus (speech quality, smallest) or flac (lossless); default: config."
        ),
    ] = None,
    older_than: Annotated[
        str | None,
        typer.Option(help="Only segments written longer ago, e.g. 1h or 2d (default: config)."),
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Only list what would be compacted.")] = False,
) -> None:
    """Re-encode older audio segments to save disk (a running recorder does it by itself)."""
    h = _home(home, db)
    fmt = _settings().get("compact", format)
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)} (got {fmt!r})")
    try:
        age = _settings().get("compact_after", older_than and parse_duration(older_than))
    except ValueError as exc:
        raise ConfigError(f"--older-than: {exc}") from exc

    def show(m: SegmentCompacted) -> None:
        if dry_run:
            out.print(f"would compact {m.old_path} ({m.bytes_before / 1e6:.1f} MB)", markup=False)
        else:
            out.print(
                f"compacted {m.old_path} → {Path(m.new_path).name}: "
                f"{m.bytes_before / 1e6:.1f} MB → {m.bytes_after / 1e6:.1f} MB",
                markup=False,
            )

    done = compact_archive(h, FORMATS[fmt], timedelta(seconds=age), dry_run=dry_run, on_done=show)
    if not done:
        out.print(f"nothing to compact (no WAV segment written more than {_duration(age)} ago)")
    elif not dry_run:
        before = sum(m.bytes_before for m in done)
        after = sum(m.bytes_after for m in done)
        out.print(f"{len(done)} segments: {before / 1e6:.1f} MB → {after / 1e6:.1f} MB")


@app.command()
def status(
    home: HomeOption = None,
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Is a recorder running, how much is recorded, and every gap of the last 24 hours."""
    st = collect_status(_home(home, db), budget=_settings().get("max_disk"))
    if as_json:
        out.print_json(json.dumps(st.to_json()))
        return
    out.print(render_status(st))


@app.command()
def search(
    phrase: Annotated[str, typer.Argument(help="Words to find, as a phrase.")],
    home: HomeOption = None,
    db: DbOption = None,
    limit: Annotated[int, typer.Option(help="Most hits to show.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    model: Annotated[
        str | None,
        typer.Option(
            help="Search the transcripts made by this model (see `pipeline reindex`); "
            "default: each session's newest."
        ),
    ] = None,
    fts: Annotated[
        bool, typer.Option("--fts", help="The query is FTS5 syntax: AND OR NOT NEAR(), word*.")
    ] = False,
    since: Since = None,
    until: Until = None,
    session: SessionFilter = None,
    source: SourceFilter = None,
    device: DeviceFilter = None,
    recorder: RecorderFilter = None,
    rank: Annotated[bool, typer.Option("--rank", help="Best match first, not newest.")] = False,
    context: Annotated[
        int, typer.Option(help="Show this many words said before and after each match.")
    ] = 0,
    fuzzy: Fuzzy = False,
    min_score: MinScore = None,
) -> None:
    """Find where a phrase was said, newest first (--fuzzy: best first)."""
    archive = Archive(_home(home, db))
    filters = _filters(model, since, until, session, source, device, recorder)
    hits = archive.search(
        phrase, limit=limit, fts=fts, rank=rank, fuzzy=fuzzy, min_score=min_score, **filters
    )
    around = {h.id: archive.context(h, context) for h in hits} if context > 0 else {}
    if as_json:
        found: dict = {"query": phrase, "hits": [_hit_json(h, around.get(h.id)) for h in hits]}
        if fuzzy and not hits:  # what scores under the cut-off, as the no-match line names it
            closest = archive.closest(phrase, **filters)
            found["min_score"] = FUZZY_MIN_SCORE if min_score is None else min_score
            found["closest"] = None if closest is None else _hit_json(closest)
        out.print_json(json.dumps(found))
        return
    if not hits:
        err.print(_no_match(archive, phrase, fts=fts, fuzzy=fuzzy, min_score=min_score, **filters))
        return
    # the segment file is for finding the audio by hand (`play ID` needs no file): on a
    # narrow terminal its column would squeeze what was said into a few letters a line
    wide = out.width >= WIDE_TERMINAL
    table = Table(header_style="bold")
    table.add_column("id", justify="right")
    table.add_column("when", no_wrap=True)
    table.add_column("session", justify="right")
    if wide:
        table.add_column("where", overflow="fold")
    table.add_column("text", ratio=1)
    if fuzzy:
        table.add_column("heard", ratio=1)
        table.add_column("score", justify="right")
    machines = _many_machines(archive, (h.recorder for h in hits))
    for h in hits:
        where = (
            f"{Path(h.segment).name} @ {_clock(h.segment_offset)}" if h.segment else "(no audio)"
        )
        if machines:  # a shared archive: which machine's disk has the audio
            where = f"{h.recorder}: {where}"
        text = _in_context(h, *around[h.id]) if h.id in around else _highlight(h)
        score = [" ".join(h.heard or ()), f"{h.score:.2f}"] if fuzzy else []
        cells = [str(h.id), _local(h.at), str(h.session_id), *([where] if wide else [])]
        table.add_row(*cells, text, *score)
    out.print(table)


def _many_machines(archive: Archive, recorders: Iterable[str]) -> bool:
    """Does a table say which machine recorded each row (whose disk has its audio)?"""
    return archive.home.shared or len(set(recorders)) > 1


def _no_match(
    archive: Archive, phrase: str, *, fts: bool, fuzzy: bool, min_score: float | None, **filters
) -> str:
    """No match, and where to look next: by sound (``--fuzzy``), or, with it, the
    closest sound below the cut-off, which a lower ``--min-score`` shows (a phrase the
    recognizer heard badly often scores just under it)."""
    said = f"no match for {phrase if len(phrase) <= 80 else phrase[:79] + '…'!r}"
    if fts:
        return said
    if not fuzzy:
        return f"{said}; --fuzzy finds what sounds like it"
    cut = FUZZY_MIN_SCORE if min_score is None else min_score
    hit = archive.closest(phrase, **filters)
    if hit is None:
        return f"{said}: nothing sounds like it"
    lower = math.floor(hit.score * 100) / 100
    return (
        f"{said} scoring {cut:.2f} or more; the closest, {hit.matched!r} "
        f"(hit {hit.id}, session {hit.session_id}), scores {hit.score:.3f}: "
        f"--min-score {lower:.2f} shows it"
    )


def _filters(
    model: str | None,
    since: str | None,
    until: str | None,
    session: str | None,
    source: str | None,
    device: str | None,
    recorder: str | None,
) -> dict:
    """The options that narrow a search, as :class:`~pipeline.search.Filters` fields."""
    after, before = _between(since, until)
    return {
        "model": model,
        "since": after,
        "until": before,
        "session": session,
        "source": source,
        "device": device,
        "recorder": recorder,
    }


def _between(since: str | None, until: str | None) -> tuple[datetime | None, datetime | None]:
    """--since and --until as times; the wrong way round is an error, not "no match"."""
    try:
        return between(since, until)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


@app.command()
def show(
    hit_id: Annotated[int, typer.Argument(help="A hit id from `pipeline search`.")],
    home: HomeOption = None,
    db: DbOption = None,
    around: Annotated[int, typer.Option(help="Utterances to show before and after it.")] = 2,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print an utterance with its neighbours, times, engine and each word's confidence."""
    said, focus = Archive(_home(home, db)).around(hit_id, max(0, around))
    if as_json:
        found = {"id": hit_id, "focus": focus, "utterances": [s.as_json() for s in said]}
        out.print_json(json.dumps(found))
        return
    for i, s in enumerate(said):
        line = Text(f"{s.id:>6}  {_local(s.at)}  {_clock(s.start)}–{_clock(s.end)}  ")
        line.append(s.text, style="bold" if i == focus else "dim")
        out.print(line)
        if i == focus:
            words = Table(box=None, header_style="bold", padding=(0, 2))
            for name in ("word", "start", "end", "confidence"):
                words.add_column(name, justify="left" if name == "word" else "right")
            for text, start, end, confidence in s.words:
                words.add_row(text, _clock(start), _clock(end), f"{confidence:.2f}")
            out.print(words)
            out.print(f"        heard by {s.engine}", style="dim")


@app.command()
def play(
    hit_id: Annotated[int, typer.Argument(help="A hit id from `pipeline search`.")],
    home: HomeOption = None,
    db: DbOption = None,
    before: Before = DEFAULT_PADDING_SECONDS,
    after: After = DEFAULT_PADDING_SECONDS,
) -> None:
    """Play a moment through the default output device.

    A moment recorded on another machine is fetched from its `pipeline serve`."""
    archive = _archive(home, db)
    m = archive.moment(hit_id, before=before, after=after)
    out.print(
        f"playing hit {hit_id}: session {m.session_id}, "
        f"{_clock(m.start)}–{_clock(m.end)} ({m.end - m.start:.1f} s)"
    )
    from .replay import play as play_frames

    play_frames(m.frames, m.rate)


@app.command()
def clip(
    hit_id: Annotated[int, typer.Argument(help="A hit id from `pipeline search`.")],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="File to write (.wav, .flac, .ogg).")
    ],
    home: HomeOption = None,
    db: DbOption = None,
    before: Before = DEFAULT_PADDING_SECONDS,
    after: After = DEFAULT_PADDING_SECONDS,
) -> None:
    """Cut a moment (with context) into an audio file."""
    archive = _archive(home, db)
    m = archive.moment(hit_id, before=before, after=after)
    from .replay import write_clip

    path = write_clip(m.frames, m.rate, output)
    out.print(
        f"wrote {path} ({m.end - m.start:.1f} s of session {m.session_id}, "
        f"{_clock(m.start)}–{_clock(m.end)})"
    )


@app.command()
def sessions(
    home: HomeOption = None,
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List what has been recorded or ingested, newest first."""
    archive = Archive(_home(home, db))
    rows = archive.sessions()
    if as_json:
        out.print_json(
            json.dumps(
                [{**r.__dict__, "started_at": r.started_at.astimezone().isoformat()} for r in rows]
            )
        )
        return
    # counts of utterances and segments matter less than which file or device: on a
    # narrow terminal they would squeeze its name into a few letters a line
    wide = out.width >= WIDE_TERMINAL
    machines = _many_machines(archive, (r.recorder for r in rows))
    names = ["id", "started", "length", *(["recorder"] if machines else []), "source"]
    names += ["utts", "words", "segs", "status"] if wide else ["words", "status"]
    table = Table(header_style="bold")
    for name in names:
        table.add_column(name, no_wrap=name != "source", overflow="fold")
    for r in rows:
        cells = {
            "id": str(r.id),
            "started": _local(r.started_at),
            "length": _duration(r.seconds),
            "recorder": r.recorder,
            "source": Path(r.source).name if r.source_kind == "file" else r.source,
            "utts": str(r.utterances),
            "words": str(r.words),
            "segs": str(r.segments),
            "status": r.status,
        }
        table.add_row(*(cells[name] for name in names))
    out.print(table)


@app.command(name="export")
def export_command(
    session: Annotated[
        str | None,
        typer.Argument(help="A session id or key (see `sessions`); or use --since/--until."),
    ] = None,
    format: Annotated[
        str, typer.Option("--format", "-f", help=f"One of {', '.join(EXPORT_FORMATS)}.")
    ] = "txt",
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="File to write (default: stdout).")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Every session's words since then: 2026-11-01, 2026-11-01T09:00, 7d."),
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Only words before then (a bare date includes that day).")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help="Export the transcripts by this model; default: each session's newest."),
    ] = None,
    home: HomeOption = None,
    db: DbOption = None,
) -> None:
    """Write a session's transcript as text, SRT/WebVTT subtitles or JSON with word times."""
    check_format(format)
    after, before = _between(since, until)
    found = Archive(_home(home, db)).transcripts(session, since=after, until=before, model=model)
    if not found:
        err.print("no words in that time; nothing to export")
    text = render(found, format)
    if output is None:
        typer.echo(text, nl=False)
        return
    path = write_text(output, text)
    lines = sum(len(s.lines) for s in found)
    out.print(
        f"wrote {path} ({counted(lines, 'utterance')} of {counted(len(found), 'session')})",
        markup=False,
    )


@app.command(name="supercut")
def supercut_command(
    phrase: Annotated[str, typer.Argument(help="Words to find, as a phrase.")],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Audio file to write (.wav, .flac, .ogg).")
    ],
    listing: Annotated[
        Path | None,
        typer.Option("--list", help="Also write what went in, and where: a .json or .csv file."),
    ] = None,
    before: Before = CUT_PADDING,
    after: After = CUT_PADDING,
    gap: Annotated[float, typer.Option(help="Seconds of silence between clips.")] = (
        DEFAULT_GAP_SECONDS
    ),
    limit: Annotated[int, typer.Option(help="Most hits to cut.")] = DEFAULT_LIMIT,
    model: Annotated[
        str | None, typer.Option(help="Search the transcripts by this model (see `search`).")
    ] = None,
    since: Since = None,
    until: Until = None,
    session: SessionFilter = None,
    source: SourceFilter = None,
    device: DeviceFilter = None,
    recorder: RecorderFilter = None,
    fuzzy: Fuzzy = False,
    min_score: MinScore = None,
    home: HomeOption = None,
    db: DbOption = None,
) -> None:
    """Cut every place a phrase was said into one audio file, in the order said."""
    cut = _archive(home, db).supercut(
        phrase,
        output,
        before=before,
        after=after,
        gap=gap,
        limit=limit,
        listing=listing,
        fuzzy=fuzzy,
        min_score=min_score,
        **_filters(model, since, until, session, source, device, recorder),
    )
    for s in cut.skipped:
        err.print(f"skipped hit {s.hit}: {s.reason}", markup=False)
    out.print(
        f"wrote {cut.path} ({counted(len(cut.clips), 'clip')}, {_duration(cut.seconds)})"
        + (f" and {listing}" if listing is not None else ""),
        markup=False,
    )


# --- formatting ------------------------------------------------------------------


def _hit_json(h: Hit, context: tuple[list[str], list[str]] | None = None) -> dict:
    extra = {"before": " ".join(context[0]), "after": " ".join(context[1])} if context else {}
    return {
        **h.as_json(),
        "recorder": h.recorder,
        "segment": h.segment,
        "segment_offset": None if h.segment_offset is None else round(h.segment_offset, 3),
        "match": h.matched,
        **extra,
    }


def _in_context(h: Hit, before: list[str], after: list[str]) -> Text:
    text = Text(" ".join(["…", *before]) + " ", style="dim")
    text.append(h.matched, style="bold reverse")
    text.append(" " + " ".join([*after, "…"]), style="dim")
    return text


def _highlight(h: Hit) -> Text:
    text = Text()
    for i, word in enumerate(h.words):
        if i:
            text.append(" ")
        text.append(word, style="bold reverse" if h.match[0] <= i < h.match[1] else "")
    return text


def _local(at: datetime) -> str:
    return at.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}:{minutes:02d}:{secs:04.1f}" if hours else f"{minutes}:{secs:04.1f}"


def _duration(seconds: float) -> str:
    return _clock(seconds)


@app.callback()
def _options(
    verbose: Annotated[
        int,
        typer.Option(
            "--verbose",
            "-v",
            count=True,
            metavar="",  # a count takes no value: -v, -vv (typer would show <int>)
            show_default=False,
            help="More detail on stderr (-vv: debug).",
        ),
    ] = 0,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="Config file (TOML) (default: $PIPELINE_CONFIG, else the "
            "user config folder's pipeline/config.toml).",
            show_default=False,
        ),
    ] = None,
) -> None:
    _State.settings = Settings.load(config)
    level = _State.settings.get("log_level")
    setup_cli(verbose or {"info": 1, "debug": 2}.get(level, 0))


config_app = typer.Typer(
    help="The config file: what is set, and where it came from.", no_args_is_help=True
)
app.add_typer(config_app, name="config")


@config_app.command("show")
def config_show(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Print the effective settings and where each value came from."""
    st = _settings()
    rows = [(k, _shown(k, v.value), v.origin) for k, v in st.values.items()]
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "file": str(st.path),
                    "settings": {k: {"value": v, "origin": o} for k, v, o in rows},
                }
            )
        )
        return
    table = Table(
        "key",
        "value",
        "from",
        header_style="bold",
        caption=f"config file: {st.path}" + ("" if st.path.is_file() else " (none)"),
    )
    for k, v, o in rows:
        table.add_row(k, "" if v is None else str(v), o)
    out.print(table)


def _shown(key: str, value):
    """A setting as `config show` prints it: secrets hidden, URLs without their password."""
    if key in SECRET_KEYS and value:
        return "(hidden)"
    return shown_url(value) if key in URL_KEYS and value else value


models_app = typer.Typer(
    help="Recognition models: list, download, choose, remove.", no_args_is_help=True
)
app.add_typer(models_app, name="models")


def _in_use() -> str:
    chosen = _settings().get("model")
    return Path(str(chosen)).name if chosen else models.POCKETSPHINX


@models_app.command("list")
def models_list(
    home: HomeOption = None,
    lang: Annotated[str | None, typer.Option(help="Only this language, e.g. en, de.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Installed and available models (the catalog is cached: this works offline)."""
    h = _home(home)
    catalog = models.fetch_catalog(h, _settings().get("catalog_url"))
    if catalog.unreachable is not None:
        shown = "the catalog as last fetched" if catalog.models else "installed models only"
        err.print(f"note: {catalog.unreachable}; showing {shown}", markup=False)
    rows = models.listing(h, catalog.models)
    if lang:
        rows = [m for m in rows if models.matches_language(m.lang, lang.lower())]
    used = _in_use()
    if as_json:
        doc = [{**m.__dict__, "in_use": m.name == used} for m in rows]
        out.print_json(json.dumps(doc))
        return
    table = Table("name", "engine", "lang", "size", "installed", "in use", header_style="bold")
    for m in rows:
        size = f"{m.size / 1e6:,.0f} MB" if m.size else ""
        table.add_row(
            m.name,
            m.engine,
            m.lang,
            size,
            "yes" if m.installed else "",
            "*" if m.name == used else "",
        )
    out.print(table)


@models_app.command("download")
def models_download(name: str, home: HomeOption = None) -> None:
    """Download, verify and install a model from the catalog (resumable)."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    h = _home(home)
    model = models.fetch_catalog(h, _settings().get("catalog_url")).find(name)
    columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task(name, total=model.size or None)
        folder = models.download(
            h, model, progress=lambda done, total: bar.update(task, completed=done, total=total)
        )
    out.print(f"installed {name} in {folder}; use it with `pipeline models use {name}`")


@models_app.command("use")
def models_use(name: str, home: HomeOption = None) -> None:
    """Make a model the default (the config file's `model`)."""
    h = _home(home)
    EngineSpec.from_options(models.resolve(h, name))  # installed and a real model
    st = _settings()
    set_value(st.path, "model", "" if name == models.POCKETSPHINX else name)
    out.print(f"{name} is now the model for record and ingest (set in {st.path})")


@models_app.command("remove")
def models_remove(name: str, home: HomeOption = None) -> None:
    """Delete an installed model."""
    folder = models.remove(_home(home), name, _in_use())
    out.print(f"removed {folder}")


service_app = typer.Typer(
    help="Run `record` as a systemd user service (Linux).", no_args_is_help=True
)
app.add_typer(service_app, name="service")


@service_app.command("show")
def service_show() -> None:
    """Print the systemd user unit that runs this pipeline's `record`."""
    out.print(service.unit_text(), markup=False, end="")


@service_app.command("install")
def service_install(
    path: Annotated[
        Path | None, typer.Option(help="Where to write it (default: ~/.config/systemd/user/).")
    ] = None,
) -> None:
    """Write the unit file; then enable it with systemctl, as printed."""
    target = service.install(path)
    out.print(f"wrote {target}; now run:", markup=False)
    out.print("  systemctl --user daemon-reload", markup=False)
    out.print(f"  systemctl --user enable --now {target.stem}", markup=False)


@app.command()
def serve(
    home: HomeOption = None,
    db: DbOption = None,
    recorder: RecorderOption = None,
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port to listen on (0: any free one).")
    ] = 8765,
    host: Annotated[
        str,
        typer.Option(
            help="Address to listen on; anything but loopback lets other machines in, "
            "with the token."
        ),
    ] = "127.0.0.1",
    token_file: Annotated[
        Path | None,
        typer.Option(
            help="The token clients on other machines must send, made there if missing "
            "(default: config token_file; with --host, else the home's serve.token).",
            show_default=False,
        ),
    ] = None,
    advertise: Annotated[
        str | None,
        typer.Option(
            help="Where other machines of a shared archive reach this server "
            "(default: http://<host name>:<port>).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Search and listen in the browser: a local web page, until Ctrl+C.

    On a shared archive it also serves this recorder's audio to the other machines."""
    from .remote import TOKEN_FILE_NAME, server_token
    from .web import WebServer, is_loopback  # Starlette and uvicorn load only for this command

    h = _home(home, db, recorder)
    chosen = token_file or _settings().get("token_file")
    if chosen is None and not is_loopback(host):
        chosen = h.ensure().root / TOKEN_FILE_NAME
    token, made = server_token(Path(chosen)) if chosen else (None, False)
    server = WebServer(
        h, host=host, port=port, token=token, advertise=advertise, elsewhere=_elsewhere()
    )
    if made or not server.loopback:
        err.print(
            f"clients on other machines must send the token in {Path(chosen).expanduser()}"
            + (" (made now, readable by you only)" if made else "")
            + "; copy the file to them and set token_file to it in their config",
            markup=False,
        )
    if server.advertised:
        err.print(
            f"the archive's other machines fetch {h.recorder_name}'s audio from "
            f"{server.advertised}",
            markup=False,
        )
    server.run(
        ready=lambda: out.print(
            f"serving {server.url} — open it in a browser; Ctrl+C to stop", markup=False
        )
    )
    out.print("stopped", markup=False)


db_app = typer.Typer(
    help="The archive's database: upgrade its schema, copy it into another.",
    no_args_is_help=True,
)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade(home: HomeOption = None, db: DbOption = None) -> None:
    """Bring the archive's schema to this pipeline's (Alembic migrations; a no-op if there)."""
    from .database import current_revision, migrate, open_database, where

    engine = open_database(_home(home, db))
    before = current_revision(engine)
    migrate(engine)
    after = current_revision(engine)
    change = f"schema {before or 'none'} → {after}" if before != after else f"already at {after}"
    out.print(f"{where(engine)}: {change}", markup=False)


@db_app.command("flush")
def db_flush(home: HomeOption = None, db: DbOption = None) -> None:
    """Write the words waiting in this home's spool into the archive now.

    They wait there while a shared archive is away; a running recorder sends them itself."""
    from .spool import flush

    written, _ = flush(_home(home, db))
    out.print(
        f"wrote {counted(written, 'batch')} of spooled index writes into the archive"
        if written
        else "the spool is empty: everything is in the archive",
        markup=False,
    )


@db_app.command("copy")
def db_copy(
    source: Annotated[
        str,
        typer.Option(
            "--from", help="The archive to copy: `sqlite` (this home's file) or a database URL."
        ),
    ],
    target: Annotated[
        str,
        typer.Option("--to", help="Where to: a database URL, or `sqlite` (this home's file)."),
    ],
    home: HomeOption = None,
    recorder: RecorderOption = None,
) -> None:
    """Copy every session (words, times, transcripts, segments) into another archive.

    Sessions it has are skipped: an interrupted copy carries on when run again.

    The audio stays on this machine's disk."""
    from .database import open_database, where
    from .dbcopy import copy_archive

    root = _home(home).root
    engines = [
        open_database(Home(root, None if end == "sqlite" else _url("--from/--to", end)))
        for end in (source, target)
    ]
    with CopyProgress(err) as bar:
        done = copy_archive(*engines, recorder=recorder or default_recorder(), progress=bar.update)
    out.print(
        f"copied {counted(done.sessions, 'session')} ({counted(done.utterances, 'utterance')}, "
        f"{counted(done.words, 'word')}) from {where(engines[0])} to {where(engines[1])}"
        + (f"; {done.skipped} already there" if done.skipped else ""),
        markup=False,
    )


def main() -> None:
    setup_cli(0)
    # SIGINT stops a recording, even when started in the background of a script, where
    # the shell hands it over ignored (and Python would leave it so)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        app()
    finally:  # the run is over: a late Ctrl+C must not turn a clean exit into a crash
        signal.signal(signal.SIGINT, signal.SIG_IGN)
