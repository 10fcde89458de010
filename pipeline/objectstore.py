"""Segments in S3-compatible object storage (optional: ``pipeline[s3]``, i.e. boto3).

With ``s3_url = "s3://bucket/prefix"`` in its config, a recorder's housekeeping
uploads each finished segment to ``prefix/<segment path>`` once it is in its
final format (compaction first: the copy is the file that stays), and tells
the indexer (:class:`~pipeline.messages.SegmentUploaded`), which records the
object's URL in ``segments.remote``. Any machine whose boto3 finds credentials
(its standard chain: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
``~/.aws``, an instance role) then reads a segment from the bucket once the
file is not on its own disk — recorded on another machine, or deleted by the
disk budget — through a bounded cache under its data home, so hearing a
moment needs no `pipeline serve` on the machine that recorded it.
``s3_endpoint_url`` points boto3 at another S3-compatible store (MinIO, Ceph,
Garage, …). boto3 is imported only when a bucket is used.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from . import schema
from .config import Home
from .database import db_errors
from .errors import ConfigError, RemoteAudioError
from .messages import SegmentUploaded

log = logging.getLogger(__name__)

SCHEME = "s3://"
CACHE_DIR = Path("cache") / "s3"  # under the data home
CACHE_MAX_BYTES = 1_000_000_000  # past it, the least recently used objects go
CONNECT_TIMEOUT_SECONDS = 5
READ_TIMEOUT_SECONDS = 60
# with compaction on, a WAV segment waits to be compacted before it is uploaded (the
# copy is the file that stays); one compaction cannot do this long after it was due
# (a damaged file) is uploaded as it is
COMPACTION_GRACE = timedelta(days=1)


def split_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` → (bucket, "some/key"); ValueError if it is not one."""
    if not url.startswith(SCHEME):
        raise ValueError("must be an s3://bucket/prefix URL")
    bucket, _, key = url[len(SCHEME) :].partition("/")
    if not 3 <= len(bucket) <= 63 or not bucket.replace("-", "").replace(".", "").isalnum():
        raise ValueError(f"{bucket!r} is not a bucket name (3-63 letters, digits, '-', '.')")
    return bucket, key.strip("/")


def check_installed() -> None:
    """boto3 is there (the ``s3`` extra); ConfigError says how to get it."""
    try:
        import boto3  # noqa: F401
    except ImportError:
        raise ConfigError(
            "audio in object storage (s3_url, segments uploaded by a recorder) needs "
            "boto3: install pipeline[s3] (`uv sync --extra s3`)"
        ) from None


class ObjectStore:
    """An S3-compatible store, reached through one boto3 client (made when first used)."""

    def __init__(self, endpoint_url: str | None = None) -> None:
        self.endpoint_url = endpoint_url
        self._client = None
        self._lock = threading.Lock()

    def client(self):
        with self._lock:
            if self._client is None:
                check_installed()
                import boto3
                from botocore.config import Config

                config = Config(
                    connect_timeout=CONNECT_TIMEOUT_SECONDS,
                    read_timeout=READ_TIMEOUT_SECONDS,
                    retries={"max_attempts": 2},
                )
                self._client = boto3.client(
                    "s3", endpoint_url=self.endpoint_url or None, config=config
                )
            return self._client

    def upload(self, local: Path, url: str) -> None:
        """Put a file at ``url`` (s3://bucket/key)."""
        bucket, key = split_url(url)
        with self._errors("upload", url):
            self.client().upload_file(str(local), bucket, key)

    def download(self, url: str, to: Path) -> None:
        """Get the object at ``url`` into ``to``, whole or not at all."""
        bucket, key = split_url(url)
        to.parent.mkdir(parents=True, exist_ok=True)
        # a name of its own: the web page's threads may fetch the same object at once
        part = to.with_name(f"{to.name}.{os.getpid()}-{threading.get_ident()}.part")
        try:
            with self._errors("fetch", url):
                self.client().download_file(bucket, key, str(part))
            os.replace(part, to)
        finally:
            part.unlink(missing_ok=True)

    def _errors(self, doing: str, url: str):
        return _translated(doing, url, self.endpoint_url)


@contextlib.contextmanager
def _translated(doing: str, url: str, endpoint: str | None) -> Iterator[None]:
    """Turn boto3's errors into a one-line RemoteAudioError that says what to check."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectionError,
        NoCredentialsError,
    )

    where = f"the object store at {endpoint}" if endpoint else "S3"
    try:
        yield
    except NoCredentialsError as exc:
        why = "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or ~/.aws"
        raise RemoteAudioError(f"cannot {doing} {url} ({why})") from exc
    except ConnectionError as exc:
        why = f"{where} is not reachable: {_one_line(exc)}"
        raise RemoteAudioError(f"cannot {doing} {url} ({why})") from exc
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchKey"):
            why = "it is not in the bucket"
        elif code == "NoSuchBucket":
            why = "there is no such bucket"
        elif code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            why = f"{where} refused the credentials ({code})"
        else:
            why = _one_line(exc)
        raise RemoteAudioError(f"cannot {doing} {url} ({why})") from exc
    except (BotoCoreError, Boto3Error) as exc:  # an upload's failure wraps the cause
        raise RemoteAudioError(f"cannot {doing} {url} ({_one_line(exc)})") from exc


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# --- reading: a segment whose file is not here ------------------------------------------


class SegmentCache:
    """Segments fetched from object storage, kept under ``home/cache/s3`` (bounded)."""

    def __init__(self, home: Home, store: ObjectStore, max_bytes: int = CACHE_MAX_BYTES) -> None:
        self.root = home.root / CACHE_DIR
        self.store = store
        self.max_bytes = max_bytes

    def path_of(self, url: str) -> Path:
        """The object at ``url`` as a local file: from the cache, else downloaded now."""
        bucket, key = split_url(url)
        local = self.root / bucket / key
        if not local.resolve().is_relative_to(self.root.resolve()):
            raise RemoteAudioError(f"{url} is not a segment's address; check segments.remote")
        if local.is_file():
            local.touch()  # recently used: trimmed last
            return local
        self.store.download(url, local)
        self._trim(keep=local)
        return local

    def _trim(self, keep: Path) -> None:
        files = sorted(self._files(), key=lambda f: f.stat().st_mtime)
        total = sum(f.stat().st_size for f in files)
        for f in files:
            if total <= self.max_bytes:
                break
            if f != keep:
                total -= f.stat().st_size
                f.unlink(missing_ok=True)

    def _files(self) -> Iterator[Path]:
        return (f for f in self.root.rglob("*") if f.is_file() and not f.name.endswith(".part"))


# --- writing: the recorder's finished segments --------------------------------------------


@dataclass(frozen=True)
class Bucket:
    """Where a recorder uploads its segments: ``s3_url`` (and the store it is in)."""

    url: str  # s3://bucket/prefix
    endpoint_url: str | None = None

    def object_url(self, segment_path: str) -> str:
        bucket, prefix = split_url(self.url)
        return f"{SCHEME}{bucket}/{prefix + '/' if prefix else ''}{segment_path}"


def waiting(home: Home, engine, *, compacting_after: timedelta | None, now: datetime | None = None):
    """Segments of this recorder to upload, oldest first: (session key, path).

    Those whose file is here and that have no copy yet; with compaction on
    (``compacting_after``), a WAV segment only once compaction should long have
    made it something else (it waits to be compacted: the copy is the final file).
    """
    s, seg = schema.Session, schema.Segment
    mine = [s.recorder == home.recorder_name] if home.shared else []
    with db_errors(engine), DbSession(engine) as db:
        rows = db.execute(
            select(s.key, seg.path)
            .join(seg.session)
            .where(seg.remote.is_(None), seg.deleted_at.is_(None), *mine)
            .order_by(seg.started_at)
        ).all()
    now = now or datetime.now(UTC)
    out = []
    for key, path in rows:
        file = home.recordings / path
        if not file.is_file():
            continue
        if compacting_after is not None and path.endswith(".wav"):
            written = datetime.fromtimestamp(file.stat().st_mtime, UTC)
            if now - written < compacting_after + COMPACTION_GRACE:
                continue
        out.append((key, path))
    return out


def upload(
    home: Home,
    engine,
    bucket: Bucket,
    store: ObjectStore,
    send: Callable[[SegmentUploaded], None],
    *,
    compacting_after: timedelta | None = None,
    skip: frozenset[str] = frozenset(),
    keep_going: Callable[[], bool] = lambda: True,
) -> list[SegmentUploaded]:
    """Upload every waiting segment (but ``skip``: paths just compacted, whose row the
    indexer has not moved yet); ``send`` tells the indexer of each. A failure is
    logged and tried again next time."""
    done = []
    for key, path in waiting(home, engine, compacting_after=compacting_after):
        if not keep_going():
            break
        if path in skip:
            continue
        url = bucket.object_url(path)
        try:
            store.upload(home.recordings / path, url)
        except RemoteAudioError as exc:
            log.warning("%s; it stays here only, and is tried again later", exc)
            break  # the store is likely away: the next round tries again
        except FileNotFoundError:  # deleted meanwhile (the disk budget)
            continue
        msg = SegmentUploaded(key, path, url)
        log.info("uploaded %s to %s", path, url)
        send(msg)
        done.append(msg)
    return done
