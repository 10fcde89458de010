"""Every error a user can cause or meet, in one hierarchy.

Each class names the stage it belongs to and carries a message that says
what went wrong *and what to do*. The CLI catches :class:`PipelineError` in
one place, prints ``str(error)`` on one line and exits with ``exit_code``;
anything else escaping is a bug and may show a traceback.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base class: a failure the user can act on, shown as one line."""

    exit_code = 1


# --- configuration and data home -------------------------------------------


class ConfigError(PipelineError):
    """A setting, option or data-home path is unusable."""

    exit_code = 2


class HomeLockedError(ConfigError):
    """Another live pipeline process is writing the same data home."""


# --- capture (sources) -------------------------------------------------------


class CaptureError(PipelineError):
    """An audio source cannot be opened or read."""

    exit_code = 3


class SourceFileError(CaptureError):
    """An input file is missing, a directory, empty or not audio."""


# --- recognition ------------------------------------------------------------


class RecognizerError(PipelineError):
    """The speech recognizer failed while transcribing."""

    exit_code = 4


class ModelError(RecognizerError):
    """A recognizer model is missing or unusable."""


class EngineAuthError(RecognizerError):
    """A cloud engine has no API key, or its service refused the key."""


class EngineUnavailable(RecognizerError):
    """A cloud engine's service cannot be reached for now; the run retries later.

    The recognizer exits without reporting a failure, so the supervisor
    restarts it and it recognizes the audio it missed from the segments on disk.
    """


# --- index (database) -------------------------------------------------------


class IndexerError(PipelineError):
    """The database cannot be opened, migrated or written."""

    exit_code = 5


class DatabaseLockedError(IndexerError):
    """Another process holds the database lock for too long."""


class ArchiveUnreachableError(IndexerError):
    """A shared archive's server cannot be reached or refuses the login (a recorder spools)."""


# --- search and replay ------------------------------------------------------


class QueryError(PipelineError):
    """A search query cannot be run as given."""

    exit_code = 6


class NotFoundError(PipelineError):
    """An id (hit, session) names nothing in the archive."""

    exit_code = 7


class ReplayError(PipelineError):
    """Audio for a moment cannot be read, written or played."""

    exit_code = 8


class RemoteAudioError(ReplayError):
    """Audio recorded on another machine cannot be fetched from it."""


class ExportError(PipelineError):
    """An export, a supercut's list or another output file cannot be written where asked."""

    exit_code = 11


# --- supervision ------------------------------------------------------------


class ProcessDiedError(PipelineError):
    """A child process (capture, recognizer, indexer) ended unexpectedly."""

    exit_code = 9


class PartialFailure(PipelineError):
    """Some inputs failed while the others were processed."""

    exit_code = 10


class Interrupted(PipelineError):
    """The user stopped a run early; what was captured before is kept."""

    exit_code = 130


__all__ = [
    "ArchiveUnreachableError",
    "CaptureError",
    "ConfigError",
    "DatabaseLockedError",
    "EngineAuthError",
    "EngineUnavailable",
    "ExportError",
    "IndexerError",
    "HomeLockedError",
    "Interrupted",
    "ModelError",
    "NotFoundError",
    "PartialFailure",
    "PipelineError",
    "ProcessDiedError",
    "QueryError",
    "RecognizerError",
    "RemoteAudioError",
    "ReplayError",
    "SourceFileError",
]
