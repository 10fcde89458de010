"""Supercut: every hit of a phrase, cut with context and joined in the order said.

The archive holds the meeting twice (two sessions an hour apart), so each
phrase is cut twice; the output is read back with soundfile and compared,
sample for sample, with the source recording.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import soundfile as sf

from pipeline import errors
from pipeline.archive import Archive
from pipeline.config import Home
from pipeline.supercut import _conform
from pipeline.supervisor import ingest

from .conftest import MEETING, MEETING_FLAC, sentences
from .test_errors import assert_one_line

RATE = 16000


def source(start: float, frames: int) -> np.ndarray:
    data, rate = sf.read(str(MEETING), dtype="int16")
    first = round(start * rate)
    return data[first : first + frames]


def test_every_hit_is_cut_in_time_order_with_gaps(cli, two_meetings_home, tmp_path):
    out, listing = tmp_path / "cut.wav", tmp_path / "cut.json"
    result = cli(
        "supercut", "quarterly sales report", "-o", out, "--list", listing,
        "--before", "0.25", "--after", "0.75", "--gap", "0.4",
        "--home", two_meetings_home.root,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"wrote {out} (2 clips, ")
    doc = json.loads(listing.read_text())
    clips = doc["clips"]
    earlier, later = sorted(Archive(two_meetings_home).sessions(), key=lambda s: s.started_at)
    assert [c["session_id"] for c in clips] == [earlier.id, later.id]
    assert clips[0]["at"] < clips[1]["at"]
    hits = {h.id: h for h in Archive(two_meetings_home).search("quarterly sales report")}
    sentence = next(s for s in sentences(MEETING) if s["phrase"] == "quarterly sales report")
    for clip in clips:
        hit = hits[clip["hit"]]
        assert clip["start"] == pytest.approx(hit.start - 0.25, abs=0.001)
        assert clip["end"] == pytest.approx(hit.end + 0.75, abs=0.001)
        assert clip["text"] == hit.text and "quarterly sales report" in clip["text"]
        assert clip["start"] < sentence["start"] + 3.0 and sentence["end"] - 1.0 < clip["end"]

    data, rate = sf.read(str(out), dtype="int16")
    assert rate == RATE and doc["rate"] == RATE
    lengths = [round(c["seconds"] * RATE) for c in clips]
    gap = round(0.4 * RATE)
    assert len(data) == sum(lengths) + gap  # the clips and one gap, nothing else
    assert len(data) / rate == pytest.approx(doc["seconds"], abs=0.001)
    assert clips[0]["offset"] == 0.0
    assert clips[1]["offset"] == pytest.approx((lengths[0] + gap) / RATE, abs=0.001)
    for clip, n in zip(clips, lengths, strict=True):
        at = round(clip["offset"] * RATE)
        assert np.array_equal(data[at : at + n], source(clip["start"], n))
    assert not data[lengths[0] : lengths[0] + gap].any()  # the silence between them


def test_the_list_as_csv_and_the_audio_as_flac(cli, two_meetings_home, tmp_path):
    out, listing = tmp_path / "cut.flac", tmp_path / "cut.csv"
    result = cli(
        "supercut", "have a good weekend", "-o", out, "--list", listing,
        "--home", two_meetings_home.root,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sf.info(str(out)).format == "FLAC"
    rows = list(csv.DictReader(listing.open()))
    assert len(rows) == 2
    assert list(rows[0]) == [
        "hit", "session_id", "session", "at", "start", "end", "text", "offset", "seconds",
        "score",
    ]  # fmt: skip
    assert rows[0]["score"] == ""  # a sounds-like cut's hits have one
    data, _ = sf.read(str(out), dtype="int16")
    for row in rows:
        at, n = round(float(row["offset"]) * RATE), round(float(row["seconds"]) * RATE)
        assert np.array_equal(data[at : at + n], source(float(row["start"]), n))


def test_search_options_choose_what_is_cut(cli, two_meetings_home, tmp_path):
    earlier, later = sorted(Archive(two_meetings_home).sessions(), key=lambda s: s.started_at)
    between = (earlier.started_at + (later.started_at - earlier.started_at) / 2).isoformat()

    def cut(*options: str) -> list[dict]:
        listing = tmp_path / "cut.json"
        result = cli(
            "supercut", "quarterly sales report", "-o", tmp_path / "cut.wav",
            "--list", listing, *options, "--home", two_meetings_home.root,
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        return json.loads(listing.read_text())["clips"]

    assert [c["session_id"] for c in cut("--session", str(earlier.id))] == [earlier.id]
    assert [c["session_id"] for c in cut("--since", between)] == [later.id]
    assert [c["session_id"] for c in cut("--until", between)] == [earlier.id]
    nothing = cli(
        "supercut", "quarterly sales report", "-o", tmp_path / "x.wav", "--source", "mic",
        "--home", two_meetings_home.root,
    )  # fmt: skip
    assert nothing.exit_code != 0 and "no match" in nothing.stderr


def test_a_sounds_like_cut_takes_what_was_misheard_or_misspelt(cli, two_meetings_home, tmp_path):
    out, listing = tmp_path / "cut.wav", tmp_path / "cut.csv"
    args = ("supercut", "quarterly sails report", "-o", out, "--home", two_meetings_home.root)
    assert "no match" in cli(*args).stderr  # not said in those words
    result = cli(*args, "--fuzzy", "--list", listing)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(listing.open()))
    assert len(rows) == 2 and all(float(r["score"]) >= 0.7 for r in rows)
    assert all("quarterly sales report" in r["text"] for r in rows)


def test_the_python_api_gives_the_same_cut(two_meetings_home, tmp_path):
    cut = Archive(two_meetings_home).supercut("needs more volunteers", tmp_path / "v.wav", gap=0)
    data, _ = sf.read(str(cut.path), dtype="int16")
    assert len(cut.clips) == 2 and len(data) == round(sum(c.seconds for c in cut.clips) * RATE)
    assert cut.clips[1].offset == pytest.approx(cut.clips[0].seconds, abs=1e-6)


def test_a_hit_whose_audio_is_gone_is_skipped_with_a_note(cli, two_meetings_home, tmp_path):
    archive = Archive(two_meetings_home)
    hit = min(archive.search("coffee machine on"), key=lambda h: h.at)
    segment = two_meetings_home.recordings / hit.segment
    hidden = segment.with_suffix(".hidden")
    segment.rename(hidden)
    try:
        result = cli(
            "supercut", "coffee machine on", "-o", tmp_path / "c.wav",
            "--home", two_meetings_home.root,
        )  # fmt: skip
    finally:
        hidden.rename(segment)
    assert result.exit_code == 0, result.output
    assert f"skipped hit {hit.id}: the audio file" in result.stderr
    assert "(1 clip, " in result.stdout


@pytest.fixture(scope="module")
def mixed_home(tmp_path_factory) -> Home:
    """The meeting at 16 kHz mono and at 44.1 kHz stereo: two sessions of different formats."""
    home = Home(tmp_path_factory.mktemp("mixed") / "home").ensure()
    report = ingest([MEETING, MEETING_FLAC], home, segment_seconds=10.0)
    assert not report.failed and len(report.indexed) == 2
    return home


def test_sessions_of_other_formats_are_joined_at_the_highest(mixed_home, tmp_path):
    cut = Archive(mixed_home).supercut("bring your laptop", tmp_path / "m.wav", gap=0.25)
    info = sf.info(str(cut.path))
    assert (info.samplerate, info.channels) == (44100, 2) == (cut.rate, cut.channels)
    assert len(cut.clips) == 2
    assert info.frames == sum(round(c.seconds * 44100) for c in cut.clips) + round(0.25 * 44100)
    data, _ = sf.read(str(cut.path), dtype="int16")
    original, rate = sf.read(str(MEETING_FLAC), dtype="int16")
    flac_session = next(s.id for s in Archive(mixed_home).sessions() if s.rate == 44100)
    (clip,) = [c for c in cut.clips if c.session_id == flac_session]  # copied as it is
    at, n, first = round(clip.offset * rate), round(clip.seconds * rate), round(clip.start * rate)
    assert np.array_equal(data[at : at + n], original[first : first + n])
    (other,) = [c for c in cut.clips if c.session_id != flac_session]  # resampled, both channels
    at, n = round(other.offset * rate), round(other.seconds * rate)
    assert np.array_equal(data[at : at + n, 0], data[at : at + n, 1])
    assert np.abs(data[at : at + n]).max() > 1000  # speech, not silence


def test_sessions_of_other_rates_are_brought_to_the_highest():
    mono = np.arange(1600, dtype=np.int16).reshape(-1, 1)
    out = _conform(mono, 16000, 48000, 2)
    assert out.shape == (4800, 2) and out.dtype == np.int16
    assert np.array_equal(out[:, 0], out[:, 1])


# --- errors: one line each ---------------------------------------------------------


def test_a_phrase_with_no_hits_is_one_line(cli, meeting_home, tmp_path):
    result = cli(
        "supercut", "purple elephants", "-o", tmp_path / "x.wav", "--home", meeting_home.root
    )
    assert_one_line(result, errors.QueryError.exit_code, "no match for 'purple elephants'")
    assert not (tmp_path / "x.wav").exists()


@pytest.mark.parametrize(
    ("target", "listing", "code", "phrase"),
    [
        ("no/such/dir/x.wav", None, errors.ReplayError, "cannot write"),
        ("x.mp9", None, errors.ReplayError, ".wav, .flac or .ogg"),
        ("x.wav", "no/such/dir/x.json", errors.ExportError, "cannot write"),
        ("x.wav", "x.txt", errors.ConfigError, "end it in .json or .csv"),
    ],
)
def test_a_target_it_cannot_write_is_one_line(
    cli, meeting_home, tmp_path, target, listing, code, phrase
):
    extra = ["--list", tmp_path / listing] if listing else []
    result = cli(
        "supercut", "open next spring", "-o", tmp_path / target, *extra,
        "--home", meeting_home.root,
    )  # fmt: skip
    assert_one_line(result, code.exit_code, phrase)
