"""Where pipeline keeps its data, and the settings a run is made with.

The data home holds ``db/pipeline.db`` and ``recordings/``, mirroring the
repository's top level. It is chosen as ``--home DIR`` > ``$PIPELINE_HOME`` >
the platform's user data directory (platformdirs), so a user never has to
think about it and a test can point it at ``tmp_path``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from .errors import ConfigError

HOME_ENV = "PIPELINE_HOME"
DB_FILENAME = "pipeline.db"
DEFAULT_SEGMENT_SECONDS = 300.0
MIN_SEGMENT_SECONDS = 1.0


@dataclass(frozen=True)
class Home:
    """A data home: the database file and the recordings folder under one root."""

    root: Path

    @property
    def db_path(self) -> Path:
        return self.root / "db" / DB_FILENAME

    @property
    def recordings(self) -> Path:
        return self.root / "recordings"

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.db_path}"

    def ensure(self) -> Home:
        """Create the home's folders; a home that cannot be made is a ConfigError."""
        try:
            self.db_path.parent.mkdir(parents=True, exist_ok=True)
            self.recordings.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the data home {self.root} ({exc.strerror}); "
                f"choose another with --home or ${HOME_ENV}"
            ) from exc
        return self


def resolve_home(option: str | Path | None = None) -> Home:
    """Pick the data home: the option, then the environment, then the platform default."""
    chosen = option or os.environ.get(HOME_ENV) or platformdirs.user_data_dir("pipeline")
    root = Path(chosen).expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise ConfigError(f"data home {root} is a file, not a folder; pass --home DIR")
    return Home(root)


def check_segment_seconds(value: float) -> float:
    """Segments shorter than a second would make thousands of tiny files."""
    if value < MIN_SEGMENT_SECONDS:
        raise ConfigError(
            f"--segment-seconds must be at least {MIN_SEGMENT_SECONDS:g} (got {value:g})"
        )
    return value
