"""A fake of pyaudiowpatch's API (Windows WASAPI), for running the WASAPI code path on Linux.

Only what pipeline calls is here, with WASAPI's behaviour where it matters:
a loopback stream delivers frames in real time while something plays and
*nothing at all* (reads block) while nothing plays; a microphone delivers
frames all the time. Tests "play" int16 audio into an output with :meth:`play`.
"""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np

paWASAPI = 13
paInt16 = 8


class FakePyAudioWPatch:
    """Stands in for the ``pyaudiowpatch`` module."""

    paWASAPI = paWASAPI
    paInt16 = paInt16

    def __init__(self, rate: int = 48000) -> None:
        self.rate = rate
        self.outputs = ["Speakers (Realtek Audio)", "Headphones (USB Audio)"]
        self.inputs = ["Microphone (USB Audio)"]
        self.default_output = self.outputs[0]
        self.default_input = self.inputs[0]
        self._playing: dict[str, deque] = {}
        self._lock = threading.Lock()
        self.opened: list[str] = []

    def PyAudio(self) -> _PyAudio:  # noqa: N802 (the real module's spelling)
        return _PyAudio(self)

    def play(self, output: str, frames: np.ndarray) -> None:
        """Queue int16 frames (n × 2) to be heard on an output's loopback."""
        with self._lock:
            self._playing.setdefault(output, deque()).append(frames.copy())

    def _take(self, output: str, n: int) -> np.ndarray | None:
        with self._lock:
            queued = self._playing.get(output)
            if not queued:
                return None
            out, need = [], n
            while queued and need:
                head = queued[0]
                out.append(head[:need])
                if len(head) > need:
                    queued[0] = head[need:]
                    need = 0
                else:
                    queued.popleft()
                    need -= len(head)
            block = np.concatenate(out)
        if len(block) < n:  # the end of a sound: the rest of the buffer is silence
            block = np.concatenate([block, np.zeros((n - len(block), 2), np.int16)])
        return block

    # the device table: outputs, their loopbacks, inputs
    def _devices(self) -> list[dict]:
        table = []
        for name in self.outputs:
            table.append(self._info(len(table), name, 0, 2, False))
        for name in self.outputs:
            table.append(self._info(len(table), f"{name} [Loopback]", 2, 0, True))
        for name in self.inputs:
            table.append(self._info(len(table), name, 1, 0, False))
        return table

    def _info(self, index, name, ins, outs, loopback) -> dict:
        return {
            "index": index,
            "name": name,
            "maxInputChannels": ins,
            "maxOutputChannels": outs,
            "defaultSampleRate": float(self.rate),
            "isLoopbackDevice": loopback,
            "hostApi": 0,
        }


class _PyAudio:
    def __init__(self, module: FakePyAudioWPatch) -> None:
        self.m = module
        self.devices = module._devices()  # a snapshot, as PortAudio's device list is

    def get_host_api_info_by_type(self, api: int) -> dict:
        if api != paWASAPI:
            raise OSError("no such host API")
        names = [d["name"] for d in self.devices]
        return {
            "index": 0,
            "name": "Windows WASAPI",
            "deviceCount": len(self.devices),
            "defaultOutputDevice": names.index(self.m.default_output),
            "defaultInputDevice": names.index(self.m.default_input),
        }

    def get_device_info_by_host_api_device_index(self, api: int, i: int) -> dict:
        return self.devices[i]

    def get_device_info_by_index(self, i: int) -> dict:
        return self.devices[i]

    def get_device_count(self) -> int:
        return len(self.devices)

    def get_loopback_device_info_generator(self):
        yield from (d for d in self.devices if d["isLoopbackDevice"])

    def open(self, *, format, channels, rate, input, input_device_index, frames_per_buffer):
        assert format == paInt16 and input
        info = self.devices[input_device_index]
        self.m.opened.append(info["name"])
        return _Stream(self.m, info, channels, rate)

    def terminate(self) -> None:
        pass


class _Stream:
    def __init__(self, m: FakePyAudioWPatch, info: dict, channels: int, rate: int) -> None:
        self.m, self.info, self.channels, self.rate = m, info, channels, rate
        self.output = info["name"].removesuffix(" [Loopback]")
        self.closed = False
        self.clock = None  # wall-clock time the next frame is due

    def read(self, n: int, exception_on_overflow: bool = True) -> bytes:
        if self.info["isLoopbackDevice"]:
            while not self.closed:
                block = self.m._take(self.output, n)
                if block is not None:
                    break
                self.clock = None  # silence: WASAPI loopback sends nothing at all
                time.sleep(0.01)
            else:
                return b""
        else:
            block = np.zeros((n, self.channels), np.int16)
        now = time.monotonic()
        self.clock = (self.clock or now) + n / self.rate
        if self.clock > now:
            time.sleep(self.clock - now)
        return block[:, : self.channels].tobytes()

    def get_read_available(self) -> int:
        return 0

    def stop_stream(self) -> None:
        self.closed = True

    def close(self) -> None:
        self.closed = True
