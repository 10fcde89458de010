"""Windows live audio: WASAPI through pyaudiowpatch, loopback for system audio.

pyaudiowpatch (a PyAudio fork) exposes every output device as a *loopback*
input, so "what the computer plays" is recorded without "Stereo Mix". This
module is only the thin part that talks to its API; the clock, gaps, device
following and threading are :class:`~pipeline.sources.live.LiveSource`'s,
shared with Linux. Loopback delivers no frames while nothing plays (reads
simply block): the shared clock turns that into silence with a reason.

PortAudio lists devices once per ``PyAudio()``, so the default device is
re-read on a background thread every ``DEFAULT_REFRESH_SECONDS``.
"""

from __future__ import annotations

import logging
import threading

import numpy as np
import soxr

from ..errors import CaptureError
from . import Backend, Device, SourceSpec
from .live import LiveSource

log = logging.getLogger(__name__)

DEFAULT_REFRESH_SECONDS = 1.0
READ_FRAMES = 1024


def _import_pyaudio():
    try:
        import pyaudiowpatch
    except ImportError as exc:
        raise CaptureError(
            "pyaudiowpatch is not installed; reinstall pipeline on Windows (it is a dependency "
            "there) to record system audio"
        ) from exc
    return pyaudiowpatch


class WasapiBackend(Backend):
    """Devices and sources of WASAPI; ``pyaudio`` is the pyaudiowpatch module (or a fake)."""

    def __init__(self, pyaudio=None) -> None:
        self.pa_module = pyaudio or _import_pyaudio()

    # --- devices ---

    def _scan(self) -> tuple[list[dict], dict | None, dict | None]:
        """All WASAPI devices, and the default output's loopback and the default input."""
        pa = self.pa_module.PyAudio()
        try:
            try:
                api = pa.get_host_api_info_by_type(self.pa_module.paWASAPI)
            except OSError as exc:
                raise CaptureError("WASAPI is not available on this system") from exc
            devices = [
                pa.get_device_info_by_host_api_device_index(api["index"], i)
                for i in range(api["deviceCount"])
            ]
            loopbacks = list(pa.get_loopback_device_info_generator())
            out_index, in_index = (
                api.get("defaultOutputDevice", -1),
                api.get("defaultInputDevice", -1),
            )
            speakers = next((d for d in devices if d["index"] == out_index), None)
            loopback = None
            if speakers is not None:
                loopback = next((lb for lb in loopbacks if speakers["name"] in lb["name"]), None)
            mic = next((d for d in devices if d["index"] == in_index), None)
            names = {d["index"] for d in devices}
            return devices + [lb for lb in loopbacks if lb["index"] not in names], loopback, mic
        finally:
            pa.terminate()

    def devices(self) -> list[Device]:
        all_devices, loopback, mic = self._scan()
        default_index = {
            "system": loopback["index"] if loopback else None,
            "mic": mic["index"] if mic else None,
        }
        out = []
        for d in all_devices:
            if d.get("maxInputChannels", 0) <= 0:
                continue
            kind = "system" if d.get("isLoopbackDevice") else "mic"
            out.append(
                Device(
                    kind,
                    d["name"],
                    d["name"],
                    d["index"] == default_index[kind],
                    int(d["defaultSampleRate"]),
                    int(d["maxInputChannels"]),
                )
            )
        return sorted(out, key=lambda d: (d.kind != "system", not d.default, d.name))

    def open(self, spec: SourceSpec):
        if spec.kind == "system+mic":
            from .mix import MixSource

            system, mic = self.resolve("system", None), self.resolve("mic", None)
            return MixSource(
                self._live("system", system, None, system.rate, system.channels),
                self._live("mic", mic, None, system.rate, mic.channels),
            )
        device = self.resolve(spec.kind, spec.target)
        return self._live(spec.kind, device, spec.target, device.rate, device.channels)

    def _live(self, kind, device: Device, target, rate: int, channels: int) -> LiveSource:
        return LiveSource(
            kind=kind,
            opener=WasapiOpener(self, kind, rate, channels),
            device=None if target is None else device.name,
            rate=rate,
            channels=channels,
        )


class WasapiOpener:
    """Opens WASAPI input streams by device name; keeps the current default fresh."""

    def __init__(self, backend: WasapiBackend, kind: str, rate: int, channels: int) -> None:
        self.backend = backend
        self.kind = kind
        self.rate = rate
        self.channels = channels
        self._default = self._read_default()
        self._stop = threading.Event()
        threading.Thread(target=self._refresh_loop, daemon=True, name="wasapi default").start()

    def _read_default(self) -> str | None:
        try:
            return self.backend.resolve(self.kind, None).name
        except CaptureError:
            return None

    def _refresh_loop(self) -> None:
        while not self._stop.wait(DEFAULT_REFRESH_SECONDS):
            self._default = self._read_default()

    def default_device(self) -> str | None:
        return self._default

    def open_stream(self, device: str) -> WasapiStream:
        return WasapiStream(self.backend, device, self.kind, self.rate, self.channels)

    def close(self) -> None:
        self._stop.set()


class WasapiStream:
    """One pyaudiowpatch input stream (a loopback for system audio)."""

    def __init__(self, backend: WasapiBackend, device: str, kind: str, rate: int, channels: int):
        self.device = device
        self._module = backend.pa_module
        self._pa = self._module.PyAudio()
        info = self._find(kind, device)
        device_rate = int(info["defaultSampleRate"])
        # WASAPI shared mode runs at the device's mix rate; the session keeps its own
        self._resampler = (
            soxr.ResampleStream(device_rate, rate, channels, dtype="int16")
            if device_rate != rate
            else None
        )
        self._channels_in = int(info["maxInputChannels"])
        self._channels_out = channels
        self._stream = self._pa.open(
            format=self._module.paInt16,
            channels=self._channels_in,
            rate=device_rate,
            input=True,
            input_device_index=info["index"],
            frames_per_buffer=READ_FRAMES,
        )

    def _find(self, kind: str, name: str) -> dict:
        candidates = (
            list(self._pa.get_loopback_device_info_generator())
            if kind == "system"
            else [self._pa.get_device_info_by_index(i) for i in range(self._pa.get_device_count())]
        )
        for info in candidates:
            if info["name"] == name and info.get("maxInputChannels", 0) > 0:
                return info
        self._pa.terminate()
        raise CaptureError(f"the device {name!r} is gone")

    def read(self) -> bytes:
        data = self._stream.read(READ_FRAMES, exception_on_overflow=False)
        frames = np.frombuffer(data, dtype=np.int16).reshape(-1, self._channels_in)
        if self._channels_in != self._channels_out:
            frames = _remix(frames, self._channels_out)
        if self._resampler is not None:
            frames = self._resampler.resample_chunk(frames)
        return frames.tobytes()

    def pending(self) -> bool:
        return self._stream.get_read_available() > 0

    def close(self) -> None:
        try:
            self._stream.stop_stream()
            self._stream.close()
        finally:
            self._pa.terminate()


def _remix(frames: np.ndarray, channels: int) -> np.ndarray:
    """Down-mix to mono, or fit to another channel count by copying what matches."""
    if channels == 1:
        return frames.mean(axis=1, keepdims=True).astype(np.int16)
    out = np.zeros((len(frames), channels), dtype=np.int16)
    n = min(frames.shape[1], channels)
    out[:, :n] = frames[:, :n]
    return out
