"""system+mic: two live sources on one clock, as the two channels of one session.

Channel 0 is the system audio (down-mixed), channel 1 the microphone. Both
sources keep their own timeline true to wall-clock time from the same
start, so pairing their frames in order keeps them aligned.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from . import SourceEvent
from .live import LiveSource


class MixSource:
    kind = "system+mic"
    channels = 2

    def __init__(self, system: LiveSource, mic: LiveSource) -> None:
        self.parts = (system, mic)
        self.rate = system.rate
        self.name = f"{system.name} + {mic.name}"
        self.started_at = system.started_at
        mic.clock.t0 = system.clock.t0  # one clock for both

    def blocks(self, frames_per_block: int) -> Iterator[np.ndarray | SourceEvent]:
        streams = [p.blocks(frames_per_block) for p in self.parts]
        buffers: list[list[np.ndarray]] = [[], []]
        while True:
            for i, stream in enumerate(streams):
                item = next(stream, None)
                if item is None:
                    return
                if isinstance(item, SourceEvent):
                    label = ("system", "mic")[i]
                    yield SourceEvent(item.kind, f"{label}: {item.detail}", item.frames)
                else:
                    buffers[i].append(
                        item[:, 0] if item.shape[1] == 1 else item.mean(axis=1).astype(np.int16)
                    )
            ready = min(sum(len(b) for b in buf) for buf in buffers)
            if ready:
                yield np.stack([_take(buffers[0], ready), _take(buffers[1], ready)], axis=1)

    def close(self) -> None:
        for p in self.parts:
            p.close()


def _take(chunks: list[np.ndarray], n: int) -> np.ndarray:
    """Remove and return the first ``n`` samples of a list of arrays."""
    joined = np.concatenate(chunks)
    chunks[:] = [joined[n:]] if len(joined) > n else []
    return joined[:n]
