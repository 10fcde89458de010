"""Recognition models: Vosk's catalog, downloading, and which model to use.

The catalog is Vosk's published model list (JSON: name, lang, size, md5,
url, …), fetched from ``catalog_url`` (config) and cached in the data home,
so ``models list`` works offline. Models live in ``home/models/<name>/``.

A download is streamed to ``home/models/.downloads/<name>.zip.part``; after
an interruption the same command carries on from where it stopped (an HTTP
Range request). The whole file's MD5 is checked against the catalog before
anything is unpacked, and the model is unpacked beside the models folder and
renamed into it in one step, so a failed, corrupt or interrupted download
never leaves a half-installed model. PocketSphinx's bundled US English model
is always there.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .config import DEFAULT_CATALOG_URL, Home
from .errors import ConfigError, ModelError

CATALOG_CACHE = "catalog.json"
POCKETSPHINX = "pocketsphinx-en-us"  # the bundled model's name in listings
CHUNK = 1 << 16
TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class Model:
    name: str
    engine: str  # "vosk" or "pocketsphinx"
    lang: str
    size: int  # bytes of the download (0: unknown)
    md5: str = ""
    url: str = ""
    installed: bool = False
    obsolete: bool = False


def models_dir(home: Home) -> Path:
    return home.root / "models"


# --- the catalog ----------------------------------------------------------------------


@dataclass(frozen=True)
class Catalog:
    """The models a catalog offers, and why its URL did not answer if it did not (then
    they are the catalog as last fetched, or none), so that the user hears of it."""

    models: list[Model]
    unreachable: str | None = None

    def find(self, name: str) -> Model:
        """The catalog's model of that name; ModelError naming the likelier cause if none."""
        model = next((m for m in self.models if m.name == name), None)
        if model is not None:
            return model
        if self.unreachable is not None:
            raise ModelError(
                f"cannot look up {name!r}: {self.unreachable}; "
                "connect to the internet (or set catalog_url) and run it again"
            )
        raise ModelError(f"{name!r} is not in the model catalog; see `pipeline models list`")


def fetch_catalog(home: Home, url: str = DEFAULT_CATALOG_URL) -> Catalog:
    """The catalog from ``url``, cached; offline, the cache (or just what is installed)."""
    cache = models_dir(home) / CATALOG_CACHE
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as r:
            raw = r.read()
        entries = json.loads(raw)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_bytes(raw)
        os.replace(tmp, cache)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        why = getattr(exc, "reason", None) or exc
        return Catalog(cached_catalog(home), f"the catalog at {url} is out of reach ({why})")
    return Catalog(_models(entries))


def cached_catalog(home: Home) -> list[Model]:
    """The catalog as last fetched (no network)."""
    cache = models_dir(home) / CATALOG_CACHE
    return _models(json.loads(cache.read_text()) if cache.exists() else [])


def _models(entries) -> list[Model]:
    return [_model(e) for e in entries if isinstance(e, dict) and "name" in e]


def _model(entry: dict) -> Model:
    return Model(
        name=entry["name"],
        engine="vosk",
        lang=entry.get("lang", ""),
        size=int(entry.get("size") or 0),
        md5=entry.get("md5", ""),
        url=entry.get("url", ""),
        obsolete=str(entry.get("obsolete", "false")).lower() == "true",
    )


def listing(home: Home, catalog: list[Model]) -> list[Model]:
    """Every model: the bundled one, installed ones, and the catalog's, installed first."""
    installed = installed_names(home)
    known = {m.name: m for m in catalog}
    out = [Model(POCKETSPHINX, "pocketsphinx", "en-us", 0, installed=True)]
    for name in sorted(installed):
        base = known.get(name, Model(name, "vosk", _lang_of(name), 0))
        out.append(_with(base, installed=True))
    out += [m for m in catalog if m.name not in installed and not m.obsolete]
    return out


def _with(model: Model, **changes) -> Model:
    return Model(**{**model.__dict__, **changes})


def installed_names(home: Home) -> set[str]:
    folder = models_dir(home)
    if not folder.is_dir():
        return set()
    return {p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")}


def _lang_of(name: str) -> str:
    """An installed model's language when the catalog does not list it: from its name."""
    parts = name.removeprefix("vosk-model-").removeprefix("small-").split("-")
    return parts[0] if parts else ""


def for_language(home: Home, lang: str, catalog: list[Model]) -> Path | None:
    """The best installed model for ``lang`` (a full one before a small one).

    None: the bundled PocketSphinx model (English, when no Vosk model for it is installed).
    """
    lang = lang.lower()
    mine = [m for m in listing(home, catalog) if m.installed and matches_language(m.lang, lang)]
    mine = [m for m in mine if m.engine == "vosk"]
    if mine:
        best = sorted(mine, key=lambda m: ("small" in m.name, m.name))[0]
        return models_dir(home) / best.name
    if matches_language("en-us", lang) and lang in ("en", "en-us"):
        return None
    offer = [m for m in catalog if matches_language(m.lang, lang) and not m.obsolete]
    if not offer:
        raise ModelError(f"no model for language {lang!r} is installed or in the catalog")
    smallest = min(offer, key=lambda m: m.size or 1 << 62)
    raise ModelError(
        f"no model for language {lang!r} is installed; download one, e.g. "
        f"`pipeline models download {smallest.name}` ({smallest.size / 1e6:.0f} MB)"
    )


def matches_language(model_lang: str, wanted: str) -> bool:
    model_lang = model_lang.lower()
    return model_lang == wanted or model_lang.split("-")[0] == wanted


def resolve(home: Home, model: str) -> Path | None:
    """A model given by name (installed in the home) or by folder path; None: the bundled
    PocketSphinx model (also called "pocketsphinx")."""
    if model in (POCKETSPHINX, "pocketsphinx"):
        return None
    named = models_dir(home) / model
    if named.is_dir():
        return named
    path = Path(model).expanduser()
    if path.exists() or os.sep in model or model.startswith("."):
        return path
    raise ModelError(
        f"no model named {model!r} is installed; see `pipeline models list`, then "
        f"`pipeline models download {model}`"
    )


# --- downloading ----------------------------------------------------------------------


def download(
    home: Home,
    model: Model,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Download, verify and install ``model``; returns its folder.

    ``progress(done, total)`` is called as bytes arrive (``done`` counts what
    an earlier, interrupted attempt already fetched).
    """
    target = models_dir(home) / model.name
    if target.is_dir():
        return target
    if not model.url:
        raise ModelError(f"the catalog has no download address for {model.name}")
    part = models_dir(home) / ".downloads" / f"{model.name}.zip.part"
    try:
        part.parent.mkdir(parents=True, exist_ok=True)
        _fetch(model, part, progress or (lambda done, total: None))
        _verify(model, part)
        _unpack(part, target)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise ModelError(
                f"the disk holding {models_dir(home)} is full; free "
                f"{model.size / 1e6:.0f} MB or more and run the same command again"
            ) from exc
        raise ModelError(f"cannot install {model.name} ({exc}); check {models_dir(home)}") from exc
    part.unlink(missing_ok=True)
    return target


def _fetch(model: Model, part: Path, progress: Callable[[int, int], None]) -> None:
    """Stream the archive into ``part``, carrying on from what it already holds."""
    have = part.stat().st_size if part.exists() else 0
    if model.size and have >= model.size:
        return
    request = urllib.request.Request(model.url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to fetch
            return
        raise ModelError(f"cannot download {model.url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ModelError(
            f"cannot reach {model.url} ({reason}); check the network, then run the same "
            "command again"
        ) from exc
    with response:
        if have and response.status != 206:  # the server ignores Range: start again
            have = 0
        total = have + int(response.headers.get("Content-Length") or 0) or model.size
        done = have
        progress(done, total)
        try:
            with open(part, "ab" if have else "wb") as f:
                while chunk := response.read(CHUNK):
                    f.write(chunk)
                    done += len(chunk)
                    progress(done, total)
        except (ConnectionError, TimeoutError, urllib.error.URLError) as exc:
            raise _interrupted(model, done, exc) from exc
        except Exception as exc:  # http.client.IncompleteRead and friends
            if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                raise
            raise _interrupted(model, done, exc) from exc
    if total and done < total:
        raise _interrupted(model, done, "the connection closed early")


def _interrupted(model: Model, done: int, why) -> ModelError:
    return ModelError(
        f"the download of {model.name} was interrupted after {done / 1e6:.1f} MB ({why}); "
        "run the same command again to carry on from there"
    )


def _verify(model: Model, part: Path) -> None:
    if not model.md5:
        return
    digest = hashlib.md5()
    with open(part, "rb") as f:
        while chunk := f.read(CHUNK * 16):
            digest.update(chunk)
    if digest.hexdigest() != model.md5.lower():
        part.unlink()
        raise ModelError(
            f"the download of {model.name} is corrupt (its MD5 does not match the catalog's); "
            "it was removed: run the same command again"
        )


def _unpack(archive: Path, target: Path) -> None:
    """Unpack next to ``target`` and rename it into place: all or nothing."""
    staging = target.parent / f".unpacking-{target.name}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with zipfile.ZipFile(archive) as z:
            for member in z.namelist():  # no path may leave the staging folder
                dest = (staging / member).resolve()
                if not dest.is_relative_to(staging.resolve()):
                    raise ModelError(f"{archive.name} holds an unsafe path: {member}")
            z.extractall(staging)
        inner = [p for p in staging.iterdir()]
        root = inner[0] if len(inner) == 1 and inner[0].is_dir() else staging
        from .recognize import check_vosk_model

        check_vosk_model(root)
        os.replace(root, target)
    except zipfile.BadZipFile as exc:
        archive.unlink(missing_ok=True)
        raise ModelError(f"{archive.name} is not a zip archive ({exc}); run again") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def remove(home: Home, name: str, in_use: str | None) -> Path:
    target = models_dir(home) / name
    if name == POCKETSPHINX:
        raise ConfigError("the bundled PocketSphinx model cannot be removed")
    if not target.is_dir():
        raise ModelError(f"no model named {name!r} is installed (see `pipeline models list`)")
    if in_use == name:
        raise ConfigError(
            f"{name} is the model in use (config `model`); choose another with "
            "`pipeline models use NAME` first"
        )
    shutil.rmtree(target)
    return target
