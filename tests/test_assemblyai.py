"""The optional cloud engine: AssemblyAI's streaming API, against a local stand-in.

The stand-in (tests/assemblyai_server.py) is a real WebSocket server on
127.0.0.1 that speaks the documented v3 protocol and recognizes the audio
it receives, so what lands in the archive comes from what was really sent.
"""

from __future__ import annotations

import io
import json
import queue
import shutil
import socket
import sqlite3
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from rich.console import Console

from pipeline import assemblyai, recognize
from pipeline.archive import Archive
from pipeline.assemblyai import LABEL, AssemblyAIEngine, AssemblyAISettings
from pipeline.errors import (
    ConfigError,
    EngineAuthError,
    EngineUnavailable,
    ModelError,
    ProcessDiedError,
)
from pipeline.liveview import LiveState
from pipeline.messages import Audio, ChildFailed, Stop
from pipeline.recognize import EngineSpec, run_recognizer
from pipeline.supervisor import ingest

from .assemblyai_server import GUESS, FakeAssemblyAI
from .conftest import MEETING, SHORT, sentences
from .test_errors import assert_one_line

KEY = "test-key-0123456789"


def cloud(server: FakeAssemblyAI) -> EngineSpec:
    """The engine, pointed at the stand-in; pacing off (only the real service needs it)."""
    return EngineSpec("assemblyai", cloud=AssemblyAISettings(KEY, server.url, realtime=False))


def pcm(path: Path) -> bytes:
    data, rate = sf.read(str(path), dtype="int16")
    assert rate == 16000 and data.ndim == 1
    return data.tobytes()


def ingest_meeting(home, spec: EngineSpec):
    source = home.root.parent / "meeting.wav"
    shutil.copy(MEETING, source)
    return ingest([source], home, spec, segment_seconds=10.0, jobs=1)


def assert_each_sentence_once_at_its_time(home) -> None:
    """Every phrase found exactly once, and every utterance's words at the sentence's time."""
    archive = Archive(home)
    for s in sentences(MEETING):
        hits = archive.search(s["phrase"])
        assert len(hits) == 1, s["phrase"]
        assert s["start"] - 0.5 <= hits[0].start <= hits[0].end <= s["end"] + 0.5, s
    rows = (
        sqlite3.connect(home.db_path)
        .execute(
            "SELECT u.engine, min(w.start), max(w.end) FROM utterances u "
            "JOIN words w ON w.utterance_id = u.id GROUP BY u.id ORDER BY u.start"
        )
        .fetchall()
    )
    assert len(rows) == len(sentences(MEETING))
    for (engine, first, last), s in zip(rows, sentences(MEETING), strict=True):
        assert engine == LABEL
        assert abs(first - s["start"]) <= 0.5 and abs(last - s["end"]) <= 0.5, (first, last, s)
    assert not archive.search(GUESS)  # a partial Turn's words are never stored


@pytest.fixture
def no_config(monkeypatch, tmp_path):
    """No user config file, and no key or URL in the environment."""
    monkeypatch.setenv("PIPELINE_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.delenv(assemblyai.KEY_ENV, raising=False)
    monkeypatch.delenv(assemblyai.URL_ENV, raising=False)


# --- the normal flow -------------------------------------------------------------------


def test_a_file_ingested_through_assemblyai_is_found_at_the_right_times(home):
    with FakeAssemblyAI(KEY) as server:
        report = ingest_meeting(home, cloud(server))
    assert not report.failed and report.restarts == 0
    assert_each_sentence_once_at_its_time(home)
    [conn] = server.connections
    assert conn.headers["Authorization"] == KEY
    assert conn.query["sample_rate"] == ["16000"] and conn.query["encoding"] == ["pcm_s16le"]
    assert conn.messages.count("ForceEndpoint") == len(sentences(MEETING))
    assert conn.messages[-1] == "Terminate"  # the session (and its billing) was ended
    assert all(800 <= n <= 16000 * 2 and n % 2 == 0 for n in conn.chunks)  # 50–1000 ms each
    # only speech went out, and it is the file's own 16 kHz int16 samples
    original = pcm(MEETING)
    assert len(conn.audio) < 0.8 * len(original)
    first_turn = bytes(conn.audio[:16000])
    at = original.find(first_turn)
    assert at % 2 == 0 and abs(at / 2 / 16000 - sentences(MEETING)[0]["start"]) < 0.5


def test_ingest_with_engine_assemblyai_through_the_cli_at_real_time(cli, home, tmp_path):
    config = tmp_path / "config.toml"
    with FakeAssemblyAI(KEY, realtime=True) as server:  # closes a stream faster than real time
        config.write_text(f'assemblyai_api_key = "{KEY}"\nassemblyai_url = "{server.url}"\n')
        result = cli(
            "--config", config, "ingest", SHORT, "--engine", "assemblyai", "--home", home.root
        )
        assert result.exit_code == 0, result.output
    assert "sent to AssemblyAI" in result.stdout and "indexed" in result.stdout
    [conn] = server.connections
    assert conn.headers["Authorization"] == KEY and conn.messages[-1] == "Terminate"
    found = json.loads(cli("search", "train to london", "--home", home.root, "--json").stdout)
    [hit] = found["hits"]
    [s] = sentences(SHORT)
    assert s["start"] - 0.5 <= hit["start"] <= hit["end"] <= s["end"] + 0.5


def test_the_config_file_chooses_the_engine_and_its_key_is_never_shown(cli, no_config, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(f'engine = "assemblyai"\nassemblyai_api_key = "{KEY}"\n')
    shown = cli("--config", config, "config", "show", "--json")
    settings = json.loads(shown.stdout)["settings"]
    assert settings["engine"]["value"] == "assemblyai"
    assert settings["assemblyai_api_key"]["value"] == "(hidden)" and KEY not in shown.output
    config.write_text('assemblyai_api_key = "two words"\n')
    bad = cli("--config", config, "config", "show")
    assert_one_line(bad, ConfigError.exit_code, "assemblyai_api_key", "(hidden)")
    assert "two words" not in bad.output


def test_the_key_stays_out_of_logs_and_reprs(caplog):
    caplog.set_level("DEBUG")
    with FakeAssemblyAI(KEY) as server:
        spec = cloud(server)
        engine = spec.build()
        assert engine.transcribe(pcm(SHORT))
        engine.close()
    assert "websockets" in caplog.text or "AssemblyAI" in caplog.text  # something was logged
    assert KEY not in caplog.text and KEY not in repr(spec)


def test_the_live_view_says_that_speech_goes_to_assemblyai(tmp_path):
    def render(engine: str) -> str:
        console = Console(file=io.StringIO(), width=120)
        console.print(LiveState(source="system", engine=engine, recordings=tmp_path))
        return console.file.getvalue()

    assert "cloud: speech is sent to AssemblyAI" in render(EngineSpec("assemblyai").label)
    assert "AssemblyAI" not in render(EngineSpec().label)


# --- failures ------------------------------------------------------------------------


def test_a_bad_key_ends_the_run_with_one_line(cli, home, no_config, monkeypatch):
    with FakeAssemblyAI(KEY) as server:
        monkeypatch.setenv(assemblyai.KEY_ENV, "not-the-key")
        monkeypatch.setenv(assemblyai.URL_ENV, server.url)
        result = cli("ingest", SHORT, "--engine", "assemblyai", "--home", home.root)
    assert_one_line(result, ProcessDiedError.exit_code, "ASSEMBLYAI_API_KEY", "refused")
    assert "not-the-key" not in result.output
    assert len(server.connections) == 1  # a refused key is not tried again


def test_no_key_is_one_line_and_nothing_is_sent(cli, home, no_config):
    result = cli("ingest", SHORT, "--engine", "assemblyai", "--home", home.root)
    assert_one_line(result, EngineAuthError.exit_code, "ASSEMBLYAI_API_KEY")
    assert not list(home.recordings.iterdir())


@pytest.mark.parametrize(
    ("args", "phrase"),
    [(["--engine", "cloud"], "--engine must be one of"), (["--model", "x"], "local model")],
)
def test_engine_options_that_do_not_fit_are_one_line(
    cli, home, no_config, monkeypatch, args, phrase
):
    monkeypatch.setenv(assemblyai.KEY_ENV, KEY)
    engine = [] if args[0] == "--engine" else ["--engine", "assemblyai"]
    result = cli("ingest", SHORT, *engine, *args, "--home", home.root)
    assert_one_line(result, ConfigError.exit_code, phrase)


def test_without_websockets_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "websockets.sync.client", None)
    with pytest.raises(ModelError, match="uv sync --extra assemblyai"):
        AssemblyAIEngine(AssemblyAISettings(KEY))


def test_a_dropped_connection_is_reopened_and_the_utterance_sent_again(home):
    with FakeAssemblyAI(KEY, drop_after=200_000) as server:  # in the third sentence
        report = ingest_meeting(home, cloud(server))
    assert not report.failed and server.dropped
    first, second = server.connections
    assert "ForceEndpoint" in first.messages and first.messages[-1] != "Terminate"
    sound = second.audio.lstrip(b"\0")  # (its pre-roll begins in the silence before it)
    assert first.audio.find(sound[:3200]) > 0  # the cut utterance, sent again whole
    assert_each_sentence_once_at_its_time(home)


@pytest.mark.parametrize(
    "close",
    [
        (3009, "Unauthorized Connection: Too many concurrent sessions"),
        (1008, "Unauthorized Connection: Too many concurrent sessions"),  # the older docs' code
    ],
)
def test_too_many_sessions_backs_off_and_then_succeeds(close):
    with FakeAssemblyAI(KEY, busy=2, busy_close=close) as server:
        spec = cloud(server)
        engine = AssemblyAIEngine(spec.cloud, busy_delays=(0.1, 0.2))
        words = engine.transcribe(pcm(SHORT))
        engine.close()
    assert "train to london" in " ".join(w[0] for w in words)
    assert len(server.connections) == 3


def test_a_service_that_stays_busy_gives_up_with_the_transient_error():
    with FakeAssemblyAI(KEY, busy=5) as server:
        engine = AssemblyAIEngine(cloud(server).cloud, busy_delays=(0.05, 0.05))
        with pytest.raises(EngineUnavailable, match="concurrent sessions"):
            engine.transcribe(pcm(SHORT))
    assert len(server.connections) == 3


def test_a_service_that_is_down_is_the_transient_error():
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        url = f"ws://127.0.0.1:{s.getsockname()[1]}/v3/ws"
    engine = AssemblyAIEngine(AssemblyAISettings(KEY, url), retry_delays=(0.05, 0.05))
    with pytest.raises(EngineUnavailable) as caught:
        engine.transcribe(pcm(SHORT))
    message = str(caught.value)
    assert "cannot connect" in message and "3 tries" in message and "\n" not in message


def test_the_recognizer_exits_to_be_restarted_without_reporting_a_failure(monkeypatch):
    monkeypatch.setattr(recognize, "become_child", lambda *args: None)
    monkeypatch.setattr(assemblyai, "RETRY_DELAYS", (0.0,))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"ws://127.0.0.1:{s.getsockname()[1]}/v3/ws"
    audio_q, index_q = queue.Queue(), queue.Queue()
    data = np.frombuffer(pcm(SHORT), dtype=np.int16)
    for i in range(0, len(data), 8000):
        audio_q.put(Audio("s", i, 16000, 1, data[i : i + 8000].tobytes()))
    audio_q.put(Stop("capture"))
    spec = EngineSpec("assemblyai", cloud=AssemblyAISettings(KEY, url, realtime=False))
    with pytest.raises(SystemExit) as exited:
        run_recognizer(spec, audio_q, index_q)
    assert exited.value.code == EngineUnavailable.exit_code != 0
    sent = [index_q.get_nowait() for _ in range(index_q.qsize())]
    assert not any(isinstance(m, ChildFailed | Stop) for m in sent)


def test_a_service_down_for_a_while_costs_a_restart_and_no_word(home):
    # the first recognizer's five connection attempts are refused; it exits, the
    # supervisor starts another, which reads the audio back from disk
    with FakeAssemblyAI(KEY, refuse=1 + len(assemblyai.RETRY_DELAYS)) as server:
        report = ingest_meeting(home, cloud(server))
    assert not report.failed and report.restarts == 1
    assert server.refused == 1 + len(assemblyai.RETRY_DELAYS)
    assert_each_sentence_once_at_its_time(home)


# --- the session's lifetime ------------------------------------------------------------


def test_an_idle_session_is_terminated_before_it_would_be_reused(monkeypatch):
    monkeypatch.setattr(assemblyai, "IDLE_SECONDS", 1.5)  # retired after 0.5 s idle
    with FakeAssemblyAI(KEY) as server:
        engine = AssemblyAIEngine(cloud(server).cloud)
        audio = pcm(SHORT)
        first = engine.transcribe(audio)
        engine.transcribe(audio[: 16000 * 2])  # at once: same session
        time.sleep(0.7)
        again = engine.transcribe(audio)
        engine.close()
    assert [w[:1] for w in again] == [w[:1] for w in first]  # times are per utterance
    assert [w[1] for w in again] == pytest.approx([w[1] for w in first], abs=0.01)
    one, two = server.connections
    assert one.query["inactivity_timeout"] == ["1.5"]
    assert one.messages == ["ForceEndpoint", "ForceEndpoint", "Terminate"]
    assert two.messages == ["ForceEndpoint", "Terminate"]


@pytest.mark.parametrize("seconds", [0.01, 0.05, 0.3, 0.5, 0.51, 1.0, 2.2, 30.0])
def test_every_chunk_holds_50_to_1000_ms(seconds):
    audio = b"\1\0" * round(seconds * 16000)
    chunks = assemblyai._chunks(audio)
    assert all(800 <= len(c) / 2 <= 16000 and len(c) % 2 == 0 for c in chunks)
    assert b"".join(chunks).startswith(audio)
