"""Export: a session's words as text, SRT/WebVTT subtitles or JSON, checked by other parsers.

The subtitles are read back with `srt` and `webvtt-py` (independent of our
writer) and compared with the meeting's script: eight sentences, each in
place within half a second.
"""

from __future__ import annotations

import html
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import srt
import webvtt

from pipeline import errors
from pipeline.archive import Archive
from pipeline.export import (
    CUE_LINE_CHARS,
    CUE_LINES,
    CUE_SECONDS,
    Line,
    SessionText,
    WordTime,
    line_cues,
    to_srt,
    to_vtt,
)

from .conftest import MEETING, sentences
from .test_errors import assert_one_line

TOLERANCE = 0.5


def session_of(home) -> int:
    (only,) = Archive(home).sessions()
    return only.id


def export(cli, home, *args) -> str:
    result = cli("export", *args, "--home", home.root)
    assert result.exit_code == 0, result.output
    return result.stdout


def assert_in_place(start: float, end: float, text: str, sentence: dict) -> None:
    assert abs(start - sentence["start"]) <= TOLERANCE, (start, sentence)
    assert abs(end - sentence["end"]) <= TOLERANCE, (end, sentence)
    assert sentence["phrase"] in text


def test_srt_has_one_cue_per_sentence_in_place(cli, meeting_home, tmp_path):
    out = tmp_path / "meeting.srt"
    result = cli(
        "export", session_of(meeting_home), "-f", "srt", "-o", out, "--home", meeting_home.root
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == f"wrote {out} (8 utterances of 1 session)\n"
    cues = list(srt.parse(out.read_text(), ignore_errors=False))
    assert [c.index for c in cues] == list(range(1, 9))
    assert [c.start for c in cues] == sorted(c.start for c in cues)
    for cue, sentence in zip(cues, sentences(MEETING), strict=True):
        text = " ".join(cue.content.splitlines())
        assert_in_place(cue.start.total_seconds(), cue.end.total_seconds(), text, sentence)
        assert all(len(line) <= CUE_LINE_CHARS for line in cue.content.splitlines())


def test_vtt_has_one_cue_per_sentence_in_place(cli, meeting_home):
    text = export(cli, meeting_home, session_of(meeting_home), "--format", "vtt")
    assert text.startswith("WEBVTT\n\n")
    captions = webvtt.from_string(text, strict=True)
    assert len(captions) == 8
    for caption, sentence in zip(captions, sentences(MEETING), strict=True):
        joined = " ".join(caption.text.splitlines())
        start = caption.start_time.in_milliseconds() / 1000
        assert_in_place(start, caption.end_time.in_milliseconds() / 1000, joined, sentence)


def test_subtitle_texts_are_the_indexed_utterances(cli, meeting_home):
    sid = session_of(meeting_home)
    doc = json.loads(export(cli, meeting_home, sid, "-f", "json"))
    utterances = [u["text"] for u in doc["sessions"][0]["utterances"]]
    cues = srt.parse(export(cli, meeting_home, sid, "-f", "srt"))
    assert [" ".join(c.content.splitlines()) for c in cues] == utterances
    vtt = webvtt.from_string(export(cli, meeting_home, sid, "-f", "vtt"))
    assert [" ".join(c.text.splitlines()) for c in vtt] == utterances


def test_json_has_the_session_and_every_word_with_times(cli, meeting_home):
    sid = session_of(meeting_home)
    doc = json.loads(export(cli, meeting_home, sid, "-f", "json"))
    (session,) = doc["sessions"]
    info = Archive(meeting_home).sessions()[0]
    assert session["id"] == sid and session["key"] == info.key
    assert session["transcript"] == "pocketsphinx:en-us" and session["rate"] == 16000
    started = datetime.fromisoformat(session["started_at"])
    assert started == info.started_at.replace(microsecond=started.microsecond)
    assert session["started_at"].endswith("Z")
    for utt, sentence in zip(session["utterances"], sentences(MEETING), strict=True):
        assert_in_place(utt["start"], utt["end"], utt["text"], sentence)
        at = datetime.fromisoformat(utt["at"])
        assert at.tzinfo is not None and at.utcoffset() == timedelta(0)
        assert abs((at - started).total_seconds() - utt["start"]) < 0.01
        assert " ".join(w["text"] for w in utt["words"]) == utt["text"]
        for w in utt["words"]:
            assert utt["start"] <= w["start"] <= w["end"] <= utt["end"]
            assert 0 <= w["confidence"] <= 1


def test_txt_is_one_line_per_utterance_with_its_time(cli, meeting_home):
    sid = session_of(meeting_home)
    header, *lines = export(cli, meeting_home, sid).splitlines()
    assert header.startswith(f"# session {sid} ") and "pocketsphinx:en-us" in header
    assert len(lines) == 8
    for line, sentence in zip(lines, sentences(MEETING), strict=True):
        stamp, text = line[1:].split("] ", 1)
        h, m, s = stamp.split(":")
        assert abs(int(h) * 3600 + int(m) * 60 + float(s) - sentence["start"]) <= TOLERANCE
        assert sentence["phrase"] in text


def test_a_session_key_is_as_good_as_its_id(cli, meeting_home):
    info = Archive(meeting_home).sessions()[0]
    assert export(cli, meeting_home, info.key, "-f", "vtt") == export(
        cli, meeting_home, info.id, "-f", "vtt"
    )


def test_model_picks_the_transcript_like_search(cli, meeting_home):
    sid = session_of(meeting_home)
    assert export(cli, meeting_home, sid, "--model", "pocketsphinx") == export(
        cli, meeting_home, sid
    )
    result = cli("export", sid, "--model", "vosk", "--home", meeting_home.root)
    assert_one_line(result, errors.QueryError.exit_code, "no transcripts by model 'vosk'")


def test_since_until_export_across_sessions_on_one_clock(cli, two_meetings_home):
    earlier, later = sorted(Archive(two_meetings_home).sessions(), key=lambda s: s.started_at)
    assert (later.started_at - earlier.started_at).total_seconds() == pytest.approx(3600, abs=0.01)
    since = (earlier.started_at - timedelta(minutes=1)).astimezone().isoformat()
    both = json.loads(export(cli, two_meetings_home, "--since", since, "-f", "json"))
    assert [s["id"] for s in both["sessions"]] == [earlier.id, later.id]
    # subtitles over both sessions count from the first one's start
    cues = list(srt.parse(export(cli, two_meetings_home, "--since", since, "-f", "srt")))
    assert len(cues) == 16
    for cue, sentence in zip(cues, sentences(MEETING) * 2, strict=True):
        shift = 3600 if cue.index > 8 else 0
        text = " ".join(cue.content.splitlines())
        assert_in_place(
            cue.start.total_seconds() - shift, cue.end.total_seconds() - shift, text, sentence
        )
    # words said from 30 s into the later session on: its last three sentences
    cut = (later.started_at + timedelta(seconds=30)).astimezone(UTC).isoformat()
    tail = json.loads(export(cli, two_meetings_home, "--since", cut, "-f", "json"))
    assert [s["id"] for s in tail["sessions"]] == [later.id]
    assert len(tail["sessions"][0]["utterances"]) == 2  # starting 35.3 s and 39.7 s
    # --until: before the later session began
    until = (later.started_at - timedelta(minutes=1)).astimezone().isoformat()
    head = json.loads(export(cli, two_meetings_home, "--until", until, "-f", "json"))
    assert [s["id"] for s in head["sessions"]] == [earlier.id]
    # a bare date as --until includes that day
    day = later.started_at.astimezone().date().isoformat()
    whole = json.loads(export(cli, two_meetings_home, "--until", day, "-f", "json"))
    assert len(whole["sessions"]) == 2


def test_nothing_in_the_time_asked_is_an_empty_export_and_a_note(cli, meeting_home):
    result = cli("export", "--until", "2000-01-01", "-f", "vtt", "--home", meeting_home.root)
    assert result.exit_code == 0
    assert result.stdout == "WEBVTT\n\n" and "nothing to export" in result.stderr


def line(words: list[tuple[str, float, float]]) -> Line:
    return Line(
        id=1,
        start=words[0][1],
        end=words[-1][2],
        at=datetime(2026, 1, 1, tzinfo=UTC),
        text=" ".join(w for w, _, _ in words),
        engine="test",
        words=tuple(WordTime(w, s, e, 1.0) for w, s, e in words),
    )


def test_a_long_utterance_is_split_between_words_at_their_times():
    said = [f"word{i % 13}" for i in range(39)]
    words = [(w, 0.6 * i, 0.6 * i + 0.5) for i, w in enumerate(said)]  # 23.3 s
    cues = line_cues(line(words))
    assert len(cues) > 3
    assert " ".join(" ".join(c.lines) for c in cues) == " ".join(said)
    starts = {s for _, s, _ in words}
    ends = {e for _, _, e in words}
    for c in cues:
        assert len(c.lines) <= CUE_LINES and all(len(t) <= CUE_LINE_CHARS for t in c.lines)
        assert c.end - c.start <= CUE_SECONDS
        assert c.start in starts and c.end in ends
    session = SessionText(
        1, "k", "file", "x.wav", datetime(2026, 1, 1, tzinfo=UTC), 30.0, 16000, 1, "test",
        (line(words),),
    )  # fmt: skip
    parsed = list(srt.parse(to_srt([session]), ignore_errors=False))
    assert len(parsed) == len(cues)
    assert len(webvtt.from_string(to_vtt([session]), strict=True)) == len(cues)


def test_vtt_escapes_what_would_be_markup():
    session = SessionText(
        1, "k", "file", "x.wav", datetime(2026, 1, 1, tzinfo=UTC), 3.0, 16000, 1, "test",
        (line([("a<b>", 0.0, 0.5), ("&", 0.5, 1.0), ("-->", 1.0, 1.5)]),),
    )  # fmt: skip
    (caption,) = webvtt.from_string(to_vtt([session]), strict=True)
    assert "-->" not in caption.text and "<" not in caption.text  # nothing read as markup
    assert html.unescape(caption.text) == "a<b> & -->"


# --- errors: one line each ---------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "code", "phrase"),
    [
        (["12345"], errors.NotFoundError, "no session '12345'"),
        (["no-such-key"], errors.NotFoundError, "no session 'no-such-key'"),
        (["--since", "last tuesday"], errors.ConfigError, "--since: 'last tuesday' is not a time"),
        (["--until", "2026-13-45"], errors.ConfigError, "--until: '2026-13-45'"),
        (["--since", "2026-11-02", "--until", "2026-11-01"], errors.ConfigError, "not before"),
        (["1", "--format", "docx"], errors.ConfigError, "--format must be one of txt, srt"),
        ([], errors.ConfigError, "say what to export"),
    ],
)
def test_bad_requests_are_one_line(cli, meeting_home, args, code, phrase):
    assert_one_line(cli("export", *args, "--home", meeting_home.root), code.exit_code, phrase)


def read_only_folder(tmp_path: Path) -> Path:
    """A folder this user cannot write in: a chmod-ed one, or for root, sysfs."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    for candidate in (folder, Path("/sys")):
        try:
            (candidate / "probe.srt").write_text("")
        except OSError:
            return candidate
    pytest.skip("no folder here refuses this user (root) a new file")


@pytest.mark.parametrize("where", ["missing folder", "a folder", "full disk", "read-only folder"])
def test_a_target_it_cannot_write_is_one_line(cli, meeting_home, tmp_path, where):
    target = {
        "missing folder": lambda: tmp_path / "no" / "such" / "out.srt",
        "a folder": lambda: tmp_path,
        "full disk": lambda: Path("/dev/full"),
        "read-only folder": lambda: read_only_folder(tmp_path) / "out.srt",
    }[where]()
    if where == "full disk" and not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    result = cli(
        "export", session_of(meeting_home), "-f", "srt", "-o", target, "--home", meeting_home.root
    )
    assert_one_line(result, errors.ExportError.exit_code, str(target))
