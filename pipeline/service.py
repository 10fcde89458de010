"""Running `record` as a systemd user service: the unit file pipeline ships.

The shipped unit (``pipeline/data/pipeline.service``) starts
``~/.local/bin/pipeline`` (where ``uv tool install`` puts it);
:func:`unit_text` points it at the pipeline actually running instead, so a
checkout run with ``uv run`` gets a unit that starts that checkout.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

from .errors import ConfigError

UNIT_NAME = "pipeline.service"
SHIPPED_EXEC = "%h/.local/bin/pipeline"


def shipped_unit() -> str:
    return resources.files("pipeline").joinpath("data", UNIT_NAME).read_text()


def this_pipeline() -> str:
    """The command that runs this pipeline: its script beside the interpreter, or ``-m``."""
    script = Path(sys.executable).parent / "pipeline"
    return str(script) if script.exists() else f"{sys.executable} -m pipeline"


def unit_text(command: str | None = None) -> str:
    return shipped_unit().replace(SHIPPED_EXEC, command or this_pipeline())


def user_unit_path() -> Path:
    return Path.home() / ".config" / "systemd" / "user" / UNIT_NAME


def install(path: Path | None = None) -> Path:
    """Write the unit for this pipeline to the user's systemd folder; returns where."""
    target = path or user_unit_path()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(unit_text())
    except OSError as exc:
        raise ConfigError(f"cannot write {target} ({exc.strerror})") from exc
    return target
