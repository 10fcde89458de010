"""Replay: a moment's audio is cut or played across segment edges."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from pipeline.archive import Archive
from pipeline.errors import NotFoundError, ReplayError

from .conftest import MEETING, sentences


def original(start: float, end: float) -> np.ndarray:
    data, rate = sf.read(str(MEETING), dtype="int16")
    return data[round(start * rate) : round(end * rate)]


def test_clip_is_exactly_the_source_audio_around_the_utterance(meeting_home, tmp_path):
    archive = Archive(meeting_home)
    hit = archive.search("lecture on climate")[0]  # 17.4–21.2 s: crosses the 20 s segment edge
    out = archive.clip(hit.id, tmp_path / "moment.wav", before=1.0, after=2.0)
    data, rate = sf.read(str(out), dtype="int16")
    start = hit.utterance_start - 1.0
    assert rate == 16000
    assert start < 20.0 < start + len(data) / rate
    assert np.array_equal(data, original(start, start + len(data) / rate))
    assert len(data) == round((hit.utterance_end + 2.0 - start) * rate)
    sentence = next(s for s in sentences(MEETING) if s["phrase"] == "lecture on climate")
    assert start <= sentence["start"] and sentence["end"] <= start + len(data) / rate


def test_clip_is_clamped_to_the_session(meeting_home, tmp_path):
    archive = Archive(meeting_home)
    first = archive.search("budget meeting starts")[0]
    last = archive.search("have a good weekend")[0]
    a, _ = sf.read(str(archive.clip(first.id, tmp_path / "a.wav", before=60, after=0)))
    b, _ = sf.read(str(archive.clip(last.id, tmp_path / "b.wav", before=0, after=60)))
    assert len(a) == round(first.utterance_end * 16000)
    assert len(b) == len(original(last.utterance_start, 99))


def test_clip_format_follows_the_extension(meeting_home, tmp_path):
    archive = Archive(meeting_home)
    hit = archive.search("bring your laptop")[0]
    out = archive.clip(hit.id, tmp_path / "m.flac")
    assert sf.info(str(out)).format == "FLAC"
    with pytest.raises(ReplayError, match=r"\.wav, \.flac or \.ogg"):
        archive.clip(hit.id, tmp_path / "m.xyz")


def test_unknown_id_is_not_found(meeting_home, tmp_path):
    with pytest.raises(NotFoundError, match="no hit with id 99999"):
        Archive(meeting_home).clip(99999, tmp_path / "x.wav")


def test_a_missing_segment_file_is_a_replay_error(meeting_home, tmp_path):
    archive = Archive(meeting_home)
    hit = archive.search("have a good weekend")[0]
    seg = meeting_home.recordings / hit.segment
    hidden = seg.with_suffix(".hidden")
    seg.rename(hidden)
    try:
        with pytest.raises(ReplayError, match="missing or unreadable"):
            archive.clip(hit.id, tmp_path / "x.wav")
    finally:
        hidden.rename(seg)


def test_cli_clip_writes_the_file(cli, meeting_home, tmp_path):
    hit = Archive(meeting_home).search("open next spring")[0]
    out = tmp_path / "moment.wav"
    result = cli("clip", hit.id, "-o", out, "--home", meeting_home.root)
    assert result.exit_code == 0, result.output
    assert out.exists() and f"wrote {out}" in result.stdout


def test_cli_clip_to_an_unwritable_place_is_one_line(cli, meeting_home, tmp_path):
    hit = Archive(meeting_home).search("open next spring")[0]
    result = cli(
        "clip", hit.id, "-o", tmp_path / "no" / "such" / "dir.wav", "--home", meeting_home.root
    )
    assert result.exit_code == ReplayError.exit_code
    assert result.stderr.startswith("error: cannot write") and result.stderr.count("\n") == 1


def play_command(home, hit_id: int, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "play",
            str(hit_id),
            "--before",
            "0.5",
            "--after",
            "0.5",
            "--home",
            str(home.root),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )


def test_play_is_heard_on_the_default_output(pulse, meeting_home, tmp_path):
    """A real PulseAudio server: what `play` sends to the default output is recorded back."""
    hit = Archive(meeting_home).search("open next spring")[0]
    heard = tmp_path / "heard.raw"
    with heard.open("wb") as sink:
        parec = subprocess.Popen(
            [
                "parec",
                "--device=speakers.monitor",
                "--raw",
                "--format=s16le",
                "--rate=16000",
                "--channels=1",
                "--latency-msec=20",
            ],
            stdout=sink,
            env={**os.environ, **pulse.env},
        )
        time.sleep(1.5)
        result = play_command(meeting_home, hit.id, pulse.env)
        time.sleep(0.5)
        parec.terminate()
        parec.wait()
    assert result.returncode == 0, result.stderr
    data = np.fromfile(heard, dtype=np.int16)
    loud = np.flatnonzero(np.abs(data) > 1000)
    duration = hit.utterance_end - hit.utterance_start
    assert len(loud) and abs((loud[-1] - loud[0]) / 16000 - duration) < 0.6


def test_play_without_a_sound_server_says_what_to_do(meeting_home, tmp_path):
    (tmp_path / "client.conf").write_text("autospawn = no\n")
    env = {
        "XDG_RUNTIME_DIR": str(tmp_path),
        "PULSE_RUNTIME_PATH": str(tmp_path / "pulse"),
        "PULSE_CLIENTCONFIG": str(tmp_path / "client.conf"),
        "PULSE_SERVER": f"unix:{tmp_path}/nothing-here",
    }
    hit = Archive(meeting_home).search("open next spring")[0]
    result = play_command(meeting_home, hit.id, env)
    assert result.returncode == ReplayError.exit_code
    assert result.stderr.startswith("error: cannot play audio here")
    assert "pipeline clip" in result.stderr and result.stderr.count("\n") == 1
