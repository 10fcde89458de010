"""The Windows path (WASAPI loopback via pyaudiowpatch), run on Linux against a FAKE of its API.

pyaudiowpatch and WASAPI cannot exist on Linux, so these tests drive the
real pipeline code (backend, LiveSource clock, capture) through
``fake_pyaudiowpatch``, which mimics WASAPI's loopback behaviour: no
frames at all while nothing plays.
"""

from __future__ import annotations

import queue
import threading
import time

import numpy as np
import pytest
import soundfile as sf
import soxr

from pipeline.capture import record_session
from pipeline.messages import Audio, SessionEvent
from pipeline.sources import SourceSpec
from pipeline.sources.wasapi import WasapiBackend

from .conftest import SHORT
from .fake_pyaudiowpatch import FakePyAudioWPatch


def speech_48k_stereo() -> np.ndarray:
    data, rate = sf.read(str(SHORT), dtype="int16")
    resampled = soxr.resample(data, rate, 48000).astype(np.int16)
    return np.repeat(resampled[:, None], 2, axis=1)


class Recording:
    """record_session in a thread, as the capture process runs it, on queues we can read."""

    def __init__(self, source, tmp_path) -> None:
        self.audio_q: queue.Queue = queue.Queue()
        self.index_q: queue.Queue = queue.Queue()
        self.stop = threading.Event()
        self.began = time.monotonic()
        self.thread = threading.Thread(
            target=record_session,
            args=(source, tmp_path, self.audio_q, self.index_q),
            kwargs={"segment_seconds": 300, "stop": self.stop},
        )
        self.thread.start()

    def finish(self) -> tuple[np.ndarray, list[SessionEvent], int]:
        self.stop.set()
        self.thread.join(10)
        audio = [m for m in _drain(self.audio_q) if isinstance(m, Audio)]
        events = [m for m in _drain(self.index_q) if isinstance(m, SessionEvent)]
        frames = np.concatenate(
            [np.frombuffer(a.pcm, np.int16).reshape(-1, a.channels) for a in audio]
        )
        assert [a.offset for a in audio] == list(np.cumsum([0] + [a.frames for a in audio])[:-1])
        return frames, events, audio[0].rate


def _drain(q: queue.Queue) -> list:
    out = []
    while True:
        try:
            out.append(q.get_nowait())
        except queue.Empty:
            return out


def onset(frames: np.ndarray, rate: int) -> float:
    return float(np.argmax(np.abs(frames).max(axis=1) > 1000) / rate)


def test_fake_wasapi_devices_list_loopbacks_as_system_audio_with_defaults():
    devices = WasapiBackend(FakePyAudioWPatch()).devices()
    system = [d for d in devices if d.kind == "system"]
    mics = [d for d in devices if d.kind == "mic"]
    assert [d.name for d in system] == [
        "Speakers (Realtek Audio) [Loopback]",
        "Headphones (USB Audio) [Loopback]",
    ]
    assert system[0].default and not system[1].default
    assert [(d.name, d.default) for d in mics] == [("Microphone (USB Audio)", True)]


def test_fake_wasapi_loopback_silence_keeps_the_timeline_true(tmp_path):
    fake = FakePyAudioWPatch()
    source = WasapiBackend(fake).open(SourceSpec("system"))
    rec = Recording(source, tmp_path)
    time.sleep(2.0)  # nothing plays: the loopback sends no frames at all
    played_at = time.monotonic() - rec.began
    fake.play(fake.outputs[0], speech_48k_stereo())
    time.sleep(5.0)
    elapsed = time.monotonic() - rec.began
    frames, events, rate = rec.finish()
    assert abs(len(frames) / rate - elapsed) < 0.5  # the timeline did not collapse
    speech = onset(speech_48k_stereo(), 48000)
    assert abs(onset(frames, rate) - (played_at + speech)) < 0.3
    gaps = [e for e in events if e.kind == "gap"]
    assert gaps and gaps[0].detail == "no audio" and gaps[0].frames > 1.0 * rate


def test_fake_wasapi_follows_a_new_default_output_within_two_seconds(tmp_path):
    fake = FakePyAudioWPatch()
    source = WasapiBackend(fake).open(SourceSpec("system"))
    rec = Recording(source, tmp_path)
    time.sleep(1.0)
    switched_at = time.monotonic() - rec.began
    fake.default_output = fake.outputs[1]  # headphones plugged in
    time.sleep(2.5)
    played_at = time.monotonic() - rec.began
    fake.play(fake.outputs[1], speech_48k_stereo())
    time.sleep(4.5)
    frames, events, rate = rec.finish()
    [switch] = [e for e in events if e.kind == "device_switch"]
    assert "Headphones (USB Audio) [Loopback]" in switch.detail
    assert switch.offset / rate - switched_at < 2.0
    assert fake.opened[-1] == "Headphones (USB Audio) [Loopback]"
    assert abs(onset(frames, rate) - (played_at + onset(speech_48k_stereo(), 48000))) < 0.3


def test_fake_wasapi_unknown_device_is_a_capture_error():
    from pipeline.errors import CaptureError

    with pytest.raises(CaptureError, match="pipeline devices"):
        WasapiBackend(FakePyAudioWPatch()).check(SourceSpec("system", "Bluetooth"))
