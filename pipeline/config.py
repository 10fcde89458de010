"""Where pipeline keeps its data, and the settings a run is made with.

The data home holds ``db/pipeline.db`` and ``recordings/``, mirroring the
repository's top level. It is chosen as ``--home DIR`` > ``$PIPELINE_HOME`` >
``home`` in the config file > the platform's user data directory
(platformdirs), so a user never has to think about it and a test can point
it at ``tmp_path``.

The config file (TOML; ``--config``, ``$PIPELINE_CONFIG`` or the platform's
config folder) holds defaults for the options of ``record`` and ``ingest``;
``pipeline config show`` prints the effective settings and where each came
from. A bad value is one line naming the key and the file.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from . import assemblyai
from .errors import ConfigError

HOME_ENV = "PIPELINE_HOME"
DB_FILENAME = "pipeline.db"
DEFAULT_SEGMENT_SECONDS = 300.0
MIN_SEGMENT_SECONDS = 1.0


@dataclass(frozen=True)
class Home:
    """A data home: the database and the recordings folder under one root.

    The database is the SQLite file ``db/pipeline.db`` in it, unless ``db`` names
    another (a PostgreSQL archive that many recorders share); the recordings and
    everything else a recorder keeps stay in the home.
    """

    root: Path
    db: str | None = None  # a database URL; None: the home's SQLite file
    recorder: str | None = None  # this machine's name in the archive; None: its host name

    @property
    def recorder_name(self) -> str:
        """The name the sessions recorded from this home carry (``--recorder``)."""
        import socket

        return self.recorder or socket.gethostname() or "localhost"

    @property
    def db_path(self) -> Path:
        """The archive's SQLite file: the home's own, or the one ``db`` names."""
        if self.db is not None and self.db.startswith("sqlite:///"):
            return Path(self.db.removeprefix("sqlite:///").split("?", 1)[0])
        return self.root / "db" / DB_FILENAME

    @property
    def recordings(self) -> Path:
        return self.root / "recordings"

    @property
    def db_url(self) -> str:
        return self.db or f"sqlite:///{self.db_path}"

    @property
    def shared(self) -> bool:
        """Whether the archive is a database server's rather than this home's file."""
        return self.db is not None and not self.db.startswith("sqlite")

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


def resolve_home(
    option: str | Path | None = None, db: str | None = None, recorder: str | None = None
) -> Home:
    """Pick the data home: the option, then the environment, then the platform default;
    ``db``: the archive's database URL, if not the home's own file; ``recorder``: this
    machine's name in it."""
    chosen = option or os.environ.get(HOME_ENV) or platformdirs.user_data_dir("pipeline")
    root = Path(chosen).expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise ConfigError(f"data home {root} is a file, not a folder; pass --home DIR")
    return Home(
        root, check_db_url(db) if db else None, check_recorder(recorder) if recorder else None
    )


def check_recorder(name: str) -> str:
    """A recorder's name: what `search --recorder` and `status` show; one short word."""
    name = str(name).strip()
    if not re.fullmatch(r"[\w.-]{1,128}", name):
        raise ValueError("must be a name of letters, digits, '.', '-' or '_' (at most 128)")
    return name


DB_ENV = "PIPELINE_DB"
TOKEN_ENV = "PIPELINE_TOKEN"  # the token other recorders' `pipeline serve` want
DB_SCHEMES = ("sqlite", "postgresql")


def check_db_url(url: str) -> str:
    """A database URL pipeline can use: sqlite:///FILE or postgresql://[user@]host[:port]/db."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(str(url).strip())
    except ArgumentError:
        raise ValueError("must be a database URL such as postgresql://user@host/pipeline") from None
    scheme = parsed.get_backend_name()
    if scheme not in DB_SCHEMES:
        raise ValueError(f"must be a postgresql:// or sqlite:/// URL, not {scheme}://")
    if scheme == "postgresql" and not parsed.database:
        raise ValueError("must name the database: postgresql://user@host/DATABASE")
    return str(url).strip()


def shown_url(url: str) -> str:
    """A database URL fit to print: the password, if any, hidden."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def check_segment_seconds(value: float) -> float:
    """Segments shorter than a second would make thousands of tiny files."""
    if value < MIN_SEGMENT_SECONDS:
        raise ConfigError(
            f"--segment-seconds must be at least {MIN_SEGMENT_SECONDS:g} (got {value:g})"
        )
    return value


# --- the config file ----------------------------------------------------------------

CONFIG_ENV = "PIPELINE_CONFIG"
SOURCES = ("system", "mic", "system+mic")
LOG_LEVELS = ("debug", "info", "warning", "error")
COMPACT_FORMATS = ("opus", "flac", "off")
ENGINES = ("local", "assemblyai")  # local: PocketSphinx, or Vosk with a model; never the cloud
SECRET_KEYS = frozenset({"assemblyai_api_key", "token"})  # never printed, not even in an error
URL_KEYS = frozenset({"db"})  # printed with their password hidden
# settings the environment overrides, beside $PIPELINE_HOME
ENVIRONMENT = {
    "db": DB_ENV,
    "token": TOKEN_ENV,
    "assemblyai_api_key": assemblyai.KEY_ENV,
    "assemblyai_url": assemblyai.URL_ENV,
}
DEFAULT_CATALOG_URL = "https://alphacephei.com/vosk/models/model-list.json"  # Vosk's model list
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|days?|hours?|minutes?)?\s*$", re.I)
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "m": 10**6,
    "g": 10**9,
    "t": 10**12,
    "ki": 2**10,
    "mi": 2**20,
    "gi": 2**30,
    "ti": 2**40,
}


@dataclass(frozen=True)
class Setting:
    value: object
    origin: str  # "default", "config file PATH", "environment VAR", "command line"


def parse_size(text: str | int) -> int:
    """Bytes from ``"2G"``, ``"500 MB"``, ``"1.5GiB"`` or a plain number."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    m = _SIZE.match(str(text))
    if not m:
        raise ValueError(f"{text!r} is not a size such as 500MB or 2G")
    unit = (m.group(2) or "").lower().removesuffix("b")
    return int(float(m.group(1)) * _UNITS[unit])


def parse_duration(text: str | float) -> float:
    """Seconds from ``"90s"``, ``"30m"``, ``"1h"``, ``"2d"`` or a plain number of seconds."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    else:
        m = _DURATION.match(str(text))
        if not m:
            raise ValueError(f"{text!r} is not a duration such as 90s, 30m, 1h or 2d")
        seconds = float(m.group(1)) * _DURATION_UNITS[(m.group(2) or "s").lower()[0]]
    if seconds < 0:
        raise ValueError("must not be negative")
    return seconds


def _positive_seconds(value) -> float:
    seconds = float(value)
    if seconds < MIN_SEGMENT_SECONDS:
        raise ValueError(f"must be at least {MIN_SEGMENT_SECONDS:g}")
    return seconds


def _api_key(value) -> str:
    key = str(value).strip()
    if not key or any(ch.isspace() for ch in key):
        raise ValueError("must be an API key: one word, no spaces")
    return key


def check_token(value) -> str:
    """A token for `pipeline serve`: one word (what ``--token-file`` holds)."""
    token = str(value).strip()
    if len(token) < 16 or any(ch.isspace() or not ch.isprintable() for ch in token):
        raise ValueError("must be a token: one word of at least 16 characters, no spaces")
    return token


def _s3_url(value) -> str:
    from .objectstore import split_url

    url = str(value).strip().rstrip("/")
    split_url(url)
    return url


def _http_url(value) -> str:
    url = str(value).strip().rstrip("/")
    if not url.startswith(("https://", "http://")) or len(url.split("://", 1)[1]) == 0:
        raise ValueError("must be an https:// (or http://) URL")
    return url


def _websocket_url(value) -> str:
    url = str(value).strip()
    if not url.startswith(("wss://", "ws://")):
        raise ValueError("must be a wss:// (or ws://) URL")
    return url


def _one_of(choices):
    def check(value) -> str:
        if str(value).lower() not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return str(value).lower()

    return check


# key: (default, check)
KEYS: dict[str, tuple[object, object]] = {
    "home": (None, str),
    "db": (None, check_db_url),
    "recorder": (None, check_recorder),
    "source": ("system", _one_of(SOURCES)),
    "device": (None, str),
    "model": (None, str),
    "engine": ("local", _one_of(ENGINES)),
    "assemblyai_api_key": (None, _api_key),
    "assemblyai_url": (assemblyai.DEFAULT_URL, _websocket_url),
    "segment_seconds": (DEFAULT_SEGMENT_SECONDS, _positive_seconds),
    "max_disk": (None, parse_size),
    "compact": ("opus", _one_of(COMPACT_FORMATS)),
    "compact_after": (3600.0, parse_duration),
    "log_level": ("warning", _one_of(LOG_LEVELS)),
    "catalog_url": (DEFAULT_CATALOG_URL, str),
    # audio from other machines: the token their `pipeline serve` want (or a file holding
    # it; also `serve`'s own --token-file), and object storage for the segments
    "token": (None, check_token),
    "token_file": (None, str),
    "s3_url": (None, _s3_url),
    "s3_endpoint_url": (None, _http_url),
}


def config_path(option: str | Path | None = None) -> Path:
    """``--config``, then ``$PIPELINE_CONFIG``, then the platform's config folder."""
    chosen = option or os.environ.get(CONFIG_ENV)
    if chosen:
        return Path(chosen).expanduser()
    return Path(platformdirs.user_config_dir("pipeline")) / "config.toml"


class Settings:
    """The effective settings: command line > environment > config file > defaults."""

    def __init__(self, values: dict[str, Setting], path: Path) -> None:
        self.values = values
        self.path = path

    @classmethod
    def load(cls, option: str | Path | None = None) -> Settings:
        path = config_path(option)
        values = {key: Setting(default, "default") for key, (default, _) in KEYS.items()}
        if option is not None and not path.is_file():
            raise ConfigError(f"no config file at {path}; check --config")
        if path.is_file():
            for key, raw in _read_toml(path).items():
                values[key] = Setting(_check(key, raw, f"{path}"), f"config file {path}")
        if os.environ.get(HOME_ENV):
            values["home"] = Setting(os.environ[HOME_ENV], f"environment {HOME_ENV}")
        for key, var in ENVIRONMENT.items():
            if os.environ.get(var):
                where = f"environment {var}"
                values[key] = Setting(_check(key, os.environ[var], where), where)
        return cls(values, path)

    def get(self, key: str, given=None):
        """The command line's value when given, else the effective setting."""
        return given if given is not None else self.values[key].value

    def origin(self, key: str, given=None) -> str:
        return "command line" if given is not None else self.values[key].origin


def _read_toml(path: Path) -> dict:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML ({exc}); fix it or pass --config") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read {path} ({exc.strerror})") from exc
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r}; the keys are {', '.join(KEYS)}")
    return data


def _check(key: str, raw, where: str):
    try:
        return KEYS[key][1](raw)
    except (TypeError, ValueError) as exc:
        shown = "(hidden)" if key in SECRET_KEYS | URL_KEYS else repr(raw)
        raise ConfigError(f"{where}: {key} = {shown} is not valid: {exc}") from exc


def set_value(path: Path, key: str, value: str) -> None:
    """Set ``key = "value"`` in a TOML config file, keeping its other lines as they are."""
    _check(key, value, str(path))
    lines = path.read_text().splitlines() if path.is_file() else []
    line = f"{key} = {json.dumps(value)}"
    for i, old in enumerate(lines):
        if old.split("=", 1)[0].strip() == key:
            lines[i] = line
            break
    else:
        lines.append(line)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
    except OSError as exc:
        raise ConfigError(f"cannot write {path} ({exc.strerror})") from exc
