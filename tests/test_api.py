"""The Python API: the README's example runs as written against a real archive."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import soundfile as sf
import srt

import pipeline
from pipeline import Archive, Hit

README = Path(__file__).parent.parent / "README.md"


def readme_example() -> str:
    section = README.read_text().split("### Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs(meeting_home, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PIPELINE_HOME", str(meeting_home.root))
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_example(), str(README), "exec"), {})
    printed = capsys.readouterr().out
    hit = Archive(meeting_home).search("quarterly sales report")[0]
    assert printed.startswith(f"{hit.id} {hit.at.isoformat()} session {hit.session_id} @ ")
    cues = list(srt.parse(printed.split("\n", 1)[1].rsplit("\n", 2)[0]))
    assert len(cues) == 8
    assert printed.endswith(f"1 clips, {sf.info('supercut.wav').duration:.1f} s\n")
    moment = sf.info("moment.wav")
    assert moment.duration == pytest.approx(hit.utterance_end - hit.utterance_start + 2.0, abs=1e-3)
    assert Path("supercut.csv").read_text().startswith("hit,session_id,")


def test_search_returns_typed_hits_and_clip_takes_one(meeting_home, tmp_path):
    archive = pipeline.Archive(meeting_home)
    (hit,) = archive.search("open next spring")
    assert isinstance(hit, Hit)
    by_hit = archive.clip(hit, tmp_path / "a.wav")
    by_id = archive.clip(hit.id, tmp_path / "b.wav")
    assert (sf.read(str(by_hit))[0] == sf.read(str(by_id))[0]).all()


def test_a_hit_as_json_is_what_search_json_prints_of_it(cli, meeting_home):
    import json
    from datetime import datetime

    (hit,) = Archive(meeting_home).search("open next spring")
    fields = json.loads(json.dumps(hit.as_json()))
    assert abs(datetime.fromisoformat(fields["at"]) - hit.at).total_seconds() < 0.001
    assert fields["text"] == hit.text and fields["session_id"] == hit.session_id
    printed = cli("search", "open next spring", "--json", "--home", meeting_home.root).stdout
    [row] = json.loads(printed)["hits"]
    assert row.items() >= fields.items()  # the CLI adds paths and the match's words


def test_times_are_datetimes_or_what_the_cli_takes(meeting_home):
    from datetime import timedelta

    from pipeline.errors import QueryError

    archive = Archive(meeting_home)
    (hit,) = archive.search("open next spring")
    before, after = hit.at - timedelta(minutes=1), hit.at + timedelta(minutes=1)
    assert archive.search("open next spring", since=before, until=after) == [hit]
    assert archive.search("open next spring", since=after) == []
    assert archive.search("open next spring", since="2000-01-01", until="now") == [hit]
    assert archive.search("open next spring", until="2000-01-01") == []
    naive = after.astimezone().replace(tzinfo=None)  # local time, as a typed one is
    assert archive.search("open next spring", until=naive) == [hit]
    assert archive.search("open next spring", since=naive) == []
    [said] = archive.transcripts(since="2000-01-01", until=after)
    assert said.id == hit.session_id and len(said.lines) == 8
    with pytest.raises(QueryError, match=r"^since: 'someday' is not a time; give "):
        archive.search("open next spring", since="someday")
    with pytest.raises(QueryError, match=r"^since '.+' is not before until '2000-01-01'"):
        archive.transcripts(since=before, until="2000-01-01")
