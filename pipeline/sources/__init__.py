"""Audio sources: where capture's frames come from.

A source is opened in the capture process from a picklable
:class:`SourceSpec` and yields, from :meth:`Source.blocks`, either blocks of
interleaved int16 frames (``ndarray`` of shape frames × channels) or
:class:`SourceEvent`s (a gap, a device switch) that belong at the current
position of the stream. Live sources keep their frame count equal to
wall-clock time (see :mod:`pipeline.sources.live`), so a frame's offset *is*
when it was heard.

Backends:

- ``file``: anything libsndfile decodes (:mod:`.file`);
- Linux: PulseAudio/PipeWire through the native ``parec`` client (:mod:`.pulse`);
- Windows: WASAPI (loopback for system audio) through pyaudiowpatch (:mod:`.wasapi`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import numpy as np

from ..errors import CaptureError

KINDS = ("system", "mic", "system+mic")


@dataclass(frozen=True)
class SourceEvent:
    """Something that happened to the stream at the current position."""

    kind: str  # "gap", "device_switch", "overflow", "device_lost"
    detail: str
    frames: int = 0  # silence frames inserted for a gap


class Source(Protocol):
    kind: str  # "file", "system", "mic", "system+mic"
    name: str  # file path or device name
    rate: int
    channels: int
    started_at: datetime  # UTC wall-clock time of frame 0

    def blocks(self, frames_per_block: int) -> Iterator[np.ndarray | SourceEvent]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class SourceSpec:
    """What to record, as the user said it; opened later in the capture process."""

    kind: str  # "file" or one of KINDS
    target: str | None = None  # file path, or device name/index (None: the default)
    realtime: bool = False  # files only: pace at 1x

    def open(self) -> Source:
        if self.kind == "file":
            from .file import open_file_source

            return open_file_source(self.target or "", realtime=self.realtime)
        return live_backend().open(self)

    def describe(self) -> str:
        return self.target or f"default {self.kind}"


@dataclass(frozen=True)
class Device:
    """A recordable device, as `pipeline devices` lists it."""

    kind: str  # "system" (a loopback/monitor of an output) or "mic"
    name: str  # the name to pass to --device
    description: str
    default: bool
    rate: int
    channels: int


class Backend:
    """A platform's live audio: list devices, check a spec, open a source.

    Subclasses list devices and open sources; choosing the device a user
    meant is the same everywhere and lives here.
    """

    def devices(self) -> list[Device]:
        raise NotImplementedError

    def open(self, spec: SourceSpec) -> Source:
        raise NotImplementedError

    def resolve(self, kind: str, wanted: str | None) -> Device:
        """The default device of a kind, or the one ``wanted`` names.

        ``wanted`` is a number from `pipeline devices`, a device's name, or a
        part of its name or description (case-insensitive).
        """
        listed = self.devices()
        devices = [d for d in listed if d.kind == kind]
        what = "system audio" if kind == "system" else "microphone"
        if wanted is None:
            found = [d for d in devices if d.default]
            if not found:
                raise CaptureError(f"there is no default {what} device; pass --device")
            return found[0]
        if wanted.isdigit() and int(wanted) < len(listed) and listed[int(wanted)].kind == kind:
            return listed[int(wanted)]
        w = wanted.casefold()
        for match in (
            lambda d: d.name.casefold() in (w, f"{w}.monitor"),
            lambda d: w in d.description.casefold() or w in d.name.casefold(),
        ):
            found = [d for d in devices if match(d)]
            if found:
                return found[0]
        raise CaptureError(
            f"no {what} device matches {wanted!r}; run `pipeline devices` to see them"
        )

    def check(self, spec: SourceSpec) -> str:
        """Fail now, with one line, if the spec cannot be recorded; else name its devices."""
        kinds = spec.kind.split("+")
        target = spec.target if len(kinds) == 1 else None
        return " + ".join(self.resolve(k, target).name for k in kinds)


def live_backend() -> Backend:
    """The live-audio backend of this platform."""
    if sys.platform == "win32":
        from .wasapi import WasapiBackend

        return WasapiBackend()
    if sys.platform.startswith("linux"):
        from .pulse import PulseBackend

        return PulseBackend()
    raise CaptureError(
        f"live recording is not supported on {sys.platform} yet; "
        "record with another tool and use `pipeline ingest`"
    )
