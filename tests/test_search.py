"""Search: exact phrases, case- and punctuation-blind, newest first, never an FTS5 error."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from pipeline.archive import Archive
from pipeline.errors import QueryError
from pipeline.fulltext import STOP_WORDS
from pipeline.index import Indexer
from pipeline.messages import SessionEnded, SessionStarted, Utterance, Word
from pipeline.search import phrase_query, search, tokens


def add_session(
    db, key: str, started_at: datetime, texts: list[str], kind: str = "file", source: str = ""
) -> None:
    """Write a session of utterances through the real indexer, one every 10 s."""
    msgs: list = [SessionStarted(key, kind, source or f"{key}.wav", started_at, 16000, 1)]
    for i, text in enumerate(texts):
        words = tuple(
            Word(w, 10 * i + 0.5 * j, 10 * i + 0.5 * j + 0.4, 0.9)
            for j, w in enumerate(text.split())
        )
        msgs.append(Utterance(key, 10 * i, 10 * i + 5, words, "test"))
    msgs.append(SessionEnded(key, 16000 * 10 * len(texts), 16000))
    Indexer(db).write(msgs)


T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def test_phrase_is_matched_whole_and_in_order(db):
    add_session(db, "a", T0, ["the budget review is on monday", "review the budget please"])
    hits = search(db, "budget review")
    assert [h.text for h in hits] == ["the budget review is on monday"]
    assert hits[0].words[hits[0].match[0] : hits[0].match[1]] == ("budget", "review")
    assert hits[0].start == 0.5 and hits[0].end == pytest.approx(1.4)
    assert hits[0].at == T0 + timedelta(seconds=0.5)


def test_case_accents_and_punctuation_do_not_matter(db):
    add_session(db, "a", T0, ["we met at the café before the budget review"])
    assert search(db, "Budget, REVIEW!")
    assert search(db, "cafe")
    assert search(db, "CAFÉ before")


def test_korean_is_found_as_written(db):
    # NFKD splits Hangul syllables into jamo; FTS5 indexes the syllables
    add_session(db, "ko", T0, ["오늘 회의는 아홉 시에 시작합니다"])
    assert search(db, "회의는 아홉")
    assert tokens("회의는, 아홉!") == ["회의는", "아홉"]


def test_newest_first_and_limit(db):
    add_session(db, "old", T0, ["the budget review"])
    add_session(db, "new", T0 + timedelta(days=1), ["the budget review", "budget review again"])
    hits = search(db, "budget review")
    assert [h.session_key for h in hits] == ["new", "new", "old"]
    assert hits[0].at > hits[1].at > hits[2].at
    assert len(search(db, "budget review", limit=2)) == 2


def test_newest_first_means_newest_said_not_newest_indexed(db):
    """An old recording ingested today sorts by when it was said; utterances said at the
    very same moment (two transcripts of a session) are both found."""
    add_session(db, "today", T0 + timedelta(days=300), ["the budget review"])
    add_session(db, "last-year", T0, ["the budget review", "budget review again"])
    add_session(db, "same-moment", T0 + timedelta(days=100), ["budget review"])
    add_session(db, "same-moment-2", T0 + timedelta(days=100), ["budget review"])
    hits = search(db, "budget review")
    assert [h.session_key for h in hits][0] == "today"
    assert [h.at for h in hits] == sorted((h.at for h in hits), reverse=True)
    assert {h.session_key for h in hits[1:3]} == {"same-moment", "same-moment-2"}
    assert [h.text for h in hits[3:]] == ["budget review again", "the budget review"]
    # time filters are exact to the microsecond: since is in, until is out
    said = T0 + timedelta(days=100)  # both "same-moment" utterances start here
    assert len(search(db, "budget review", since=said, until=said + timedelta(microseconds=1)))
    assert search(db, "budget review", until=said, since=said - timedelta(days=1)) == []
    assert [h.session_key for h in search(db, "budget review", session="last-year")] == [
        "last-year",
        "last-year",
    ]


@pytest.mark.parametrize(
    "query",
    ['"unbalanced', "AND OR NOT", "NEAR(", "budg*", "col:umn", "a - b", "^start", "'; DROP"],
)
def test_fts5_syntax_is_searched_literally_never_parsed(db, query):
    add_session(db, "a", T0, ["and or not near budg column start drop"])
    search(db, query)  # no exception: the words are searched as a plain phrase
    assert phrase_query(query).count('"') == 2


def test_syntax_words_are_found_as_words(db):
    add_session(db, "a", T0, ["this and that or not", "near the end"])
    assert [h.text for h in search(db, "AND that OR")] == ["this and that or not"]
    assert [h.text for h in search(db, "OR that")] == []
    assert [h.text for h in search(db, "that OR not")] == ["this and that or not"]
    assert [h.text for h in search(db, "NEAR(")] == ["near the end"]
    assert search(db, "budg*") == []


def test_a_common_word_alone_is_refused_but_a_phrase_of_them_is_not(db):
    add_session(db, "a", T0, ["to be or not to be that is the question"])
    for query in ("the", "THE,", " a "):
        with pytest.raises(QueryError, match="a common word"):
            search(db, query)
    assert len(search(db, "to be or not to be")) == 1
    assert len(search(db, "or not")) == 1


@pytest.mark.parametrize("query", ["🎉", "", "   ", "!!!", '""', "*"])
def test_nothing_searchable_is_a_query_error(db, query):
    with pytest.raises(QueryError, match="nothing to search for"):
        search(db, query)


def test_a_huge_query_is_refused_with_a_reason(db):
    with pytest.raises(QueryError, match="at most"):
        search(db, "word " * 5000)


def test_tokens_match_fts5_unicode61():
    assert tokens("Don't STOP—now, café!") == ["don", "t", "stop", "now", "cafe"]
    assert tokens("snake_case") == ["snake", "case"]


def test_cli_table_shows_id_time_session_where_and_text(cli, meeting_home):
    result = cli("search", "quarterly sales report", "--home", meeting_home.root)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "quarterly" in out and ".wav @ 0:0" in out
    hit = Archive(meeting_home).search("quarterly sales report")[0]
    assert hit.at.astimezone().strftime("%H:%M:%S") in out


def test_a_narrow_terminal_gives_what_was_said_the_room(cli, meeting_home):
    """At 80 columns the segment file's column is left out, not the words squeezed."""
    from pipeline import cli as module

    module.out.width = 80
    result = cli("search", "sales report", "--fuzzy", "--home", meeting_home.root)
    assert result.exit_code == 0, result.output
    header = next(line for line in result.stdout.splitlines() if "when" in line)
    assert "where" not in header and "text" in header and "score" in header
    assert ".wav @" not in result.stdout
    first = next(line for line in result.stdout.splitlines() if "please send" in line)
    assert "please send the" in first  # a text column wide enough for three words a line


def test_cli_json_is_one_document_with_iso_times(cli, meeting_home):
    result = cli("search", "Budget meeting", "--json", "--limit", "5", "--home", meeting_home.root)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["query"] == "Budget meeting"
    [hit] = doc["hits"]
    assert hit["match"] == "budget meeting"
    assert datetime.fromisoformat(hit["at"]).utcoffset() is not None
    assert 1.0 <= hit["start"] <= 4.6 and hit["segment"].endswith(".wav")
    assert hit["segment_offset"] == pytest.approx(hit["start"], abs=0.001)  # first segment


def test_cli_no_match_says_so_and_succeeds(cli, meeting_home):
    result = cli("search", "purple elephant", "--home", meeting_home.root)
    assert result.exit_code == 0
    assert "no match for 'purple elephant'; --fuzzy finds what sounds like it" in result.stderr


def test_cli_bad_query_is_one_line_and_non_zero(cli, meeting_home):
    result = cli("search", "🎉", "--home", meeting_home.root)
    assert result.exit_code == QueryError.exit_code
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output


# --- query language, filters, context (search power) ------------------------------


def test_fts_syntax_when_asked_for(db):
    add_session(db, "a", T0, ["the budget review is on monday", "review the budgeting plan"])
    texts = lambda q: sorted(h.text for h in search(db, q, fts=True))  # noqa: E731
    assert texts("budget AND monday") == ["the budget review is on monday"]
    assert texts("monday OR plan") == [
        "review the budgeting plan",
        "the budget review is on monday",
    ]
    assert texts("review NOT monday") == ["review the budgeting plan"]
    assert texts("budg*") == ["review the budgeting plan", "the budget review is on monday"]
    assert texts("NEAR(budget monday, 3)") == ["the budget review is on monday"]
    [hit] = search(db, "budgeting", fts=True)
    assert hit.words[hit.match[0] : hit.match[1]] == ("budgeting",)


@pytest.mark.parametrize(
    "query, where",
    [
        ('"unbalanced', "unterminated string"),
        ("budget AND", "syntax error at the end of the query"),
        ("NEAR(budget", "syntax error at the end of the query"),
        ("AND OR", 'syntax error near "AND"'),
        ("budget)", 'syntax error near ")"'),
        ("speaker:budget", "no such column: speaker"),
    ],
)
def test_an_fts_syntax_error_is_one_line_that_points_at_it(db, query, where):
    add_session(db, "a", T0, ["the budget review"])
    with pytest.raises(QueryError) as info:
        search(db, query, fts=True)
    message = str(info.value)
    assert message.startswith(f"--fts query {query!r}: {where}; see https://sqlite.org/")
    assert "\n" not in message


def test_filters_by_time_session_source_and_device(db):
    add_session(db, "jan", T0, ["the budget review"], kind="system", source="speakers.monitor")
    add_session(db, "feb", T0 + timedelta(days=31), ["the budget review"], kind="mic")
    add_session(db, "mar", T0 + timedelta(days=59), ["the budget review"], source="/x/talk_1.wav")
    keys = lambda **f: sorted(h.session_key for h in search(db, "budget review", **f))  # noqa: E731
    assert keys() == ["feb", "jan", "mar"]
    assert keys(since=T0 + timedelta(days=1)) == ["feb", "mar"]
    assert keys(until=T0 + timedelta(days=40)) == ["feb", "jan"]
    assert keys(session="feb") == ["feb"]
    assert keys(session=str(search(db, "budget review", session="mar")[0].session_id)) == ["mar"]
    assert keys(source="system") == ["jan"] and keys(source="mic") == ["feb"]
    assert keys(source="file") == ["mar"]
    assert keys(device="SPEAKERS") == ["jan"] and keys(device="talk_") == ["mar"]
    assert keys(device="%") == []  # LIKE wildcards are searched literally
    with pytest.raises(QueryError, match="--source"):
        search(db, "budget review", source="radio")


def test_rank_puts_the_best_match_first(db):
    add_session(
        db,
        "a",
        T0,
        ["budget budget budget review of the budget", "a word about the budget and more words"],
    )
    assert [h.text[:6] for h in search(db, "budget", fts=True, rank=True)] == ["budget", "a word"]
    assert [h.text[:6] for h in search(db, "budget", fts=True)] == ["a word", "budget"]


def test_context_reaches_into_the_neighbouring_utterances(db):
    add_session(db, "a", T0, ["we met on monday", "the budget review went well", "see you soon"])
    archive = Archive.__new__(Archive)
    archive.engine = db
    [hit] = search(db, "budget review")
    before, after = archive.context(hit, 3)
    assert before == ["on", "monday", "the"] and after == ["went", "well", "see"]


def test_cli_search_context_show_and_filters(cli, meeting_home):
    root = meeting_home.root
    phrase = "quarterly sales report"
    result = cli("search", phrase, "--home", root, "--context", "2", "--json")
    [hit] = json.loads(result.stdout)["hits"]
    assert hit["before"] == "send the" and hit["after"] == "to the"
    none = cli("search", phrase, "--home", root, "--since", "1h", "--until", "30m", "--json")
    assert json.loads(none.stdout)["hits"] == []
    today = cli("search", phrase, "--home", root, "--since", "yesterday", "--json")
    assert len(json.loads(today.stdout)["hits"]) == 1

    shown = cli("show", str(hit["id"]), "--home", root)
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert any(phrase in line for line in lines)
    assert "confidence" in shown.stdout and "heard by pocketsphinx:en-us" in shown.stdout
    doc = json.loads(cli("show", str(hit["id"]), "--home", root, "--json", "--around", "1").stdout)
    assert [u["id"] for u in doc["utterances"]] == [hit["id"] - 1, hit["id"], hit["id"] + 1]
    assert all(0 <= w["confidence"] <= 1 for w in doc["utterances"][1]["words"])


@pytest.mark.parametrize(
    "args, expected",
    [
        (("search", "x" * 10_000), "characters"),
        (("search", "budget", "--since", "the day after"), "--since"),
        (("search", "budget", "--until", "soonish"), "--until"),
        (("search", "budget", "--since", "today", "--until", "yesterday"), "is not before"),
        (("search", '"unbalanced', "--fts"), "--fts query"),
        (("search", "\x00\x01\x02\x7f\udcff\udcfe"), "the query is not text"),  # undecodable
        # a pasted binary has letters too: still not a query, nor its echo a line to show
        (("search", "budget\udca2\u03bb\udcf1}JRb\x1af"), "character 7 is a control"),
        (("search", "budget\x00report", "--fuzzy"), "the query is not text"),
        (("search", "budget AND \x1b[2J", "--fts"), "the query is not text"),
        (("search", " \t "), "nothing to search for"),
        (("search", "the"), "a common word"),
        (("show", "999999"), "no hit with id"),
        # a mistyped session is named, not answered with "no match"
        (("search", "budget", "--session", "999999"), "no session '999999'"),
        (("search", "budget report", "--fuzzy", "--session", "no-such"), "no session 'no-such'"),
    ],
)
def test_cli_bad_search_input_is_one_line(cli, meeting_home, args, expected):
    result = cli(*args, "--home", meeting_home.root)
    assert result.exit_code != 0
    assert expected in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output


def test_times_are_read_as_people_type_them():
    from pipeline.dates import parse_when

    now = datetime(2026, 11, 25, 15, 30).astimezone()  # a Wednesday
    day = now.replace(hour=0, minute=0)
    assert parse_when("yesterday", now=now) == day - timedelta(days=1)
    assert parse_when("yesterday", now=now, end=True) == day
    assert parse_when("monday", now=now) == day - timedelta(days=2)
    assert parse_when("wednesday", now=now) == day
    assert parse_when("2h", now=now) == now - timedelta(hours=2)
    assert parse_when("7d ago", now=now) == now - timedelta(days=7)
    assert parse_when("2026-11-01", now=now) == datetime(2026, 11, 1).astimezone()
    assert parse_when("2026-11-01", end=True, now=now) == datetime(2026, 11, 2).astimezone()
    assert parse_when("2026-11-01T09:00+00:00", now=now) == datetime(2026, 11, 1, 9, tzinfo=UTC)
    with pytest.raises(ValueError, match="yesterday"):
        parse_when("someday", now=now)


def test_every_hit_points_into_the_segment_that_holds_it(meeting_home):
    """Segments are 10 s here, so some utterances run across an edge: a word found past
    the edge is in the next segment, not in the one where its utterance began."""
    import sqlite3

    con = sqlite3.connect(meeting_home.db_path)
    segments = {
        path: (offset / rate, frames / rate)
        for path, offset, frames, rate in con.execute(
            'SELECT path, "offset", frames, rate FROM segments'
        )
    }
    words = {w for (text,) in con.execute("SELECT text FROM utterances") for w in text.split()}
    con.close()
    words -= STOP_WORDS  # refused alone
    archive = Archive(meeting_home)
    hits = [h for w in sorted(words) for h in archive.search(w, limit=100)]
    crossed = 0
    for hit in hits:
        begins, seconds = segments[hit.segment]
        assert 0 <= hit.segment_offset < seconds
        assert begins + hit.segment_offset == pytest.approx(hit.start, abs=1e-3)
        crossed += not begins <= hit.utterance_start < begins + seconds
    assert crossed  # some hits lie in a later segment than their utterance's start


@pytest.mark.parametrize("group", ["", "models", "db", "config", "service"])
def test_the_command_list_gives_each_command_a_one_line_summary(cli, monkeypatch, group):
    """At 200 columns nothing needs wrapping: a summary on two lines is a docstring whose
    first paragraph was wrapped in the source (shown with its line break)."""
    import inspect

    from typer import rich_utils

    from pipeline.cli import app

    monkeypatch.setattr(rich_utils, "MAX_WIDTH", 200)
    typer_app = next((g.typer_instance for g in app.registered_groups if g.name == group), app)
    names = {c.name or c.callback.__name__ for c in typer_app.registered_commands}
    names |= {g.name for g in typer_app.registered_groups}
    lines = cli(*filter(None, [group]), "--help").stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if "Commands" in line)
    end = next(i for i, line in enumerate(lines) if i > start and line.startswith("╰"))
    listed = [line.strip("│ ").split()[0] for line in lines[start + 1 : end]]
    assert sorted(listed) == sorted(names), lines[start:end]
    # and in a command's own help, typer shows every line break of its docstring too
    for command in typer_app.registered_commands:
        paragraphs = inspect.cleandoc(command.callback.__doc__).split("\n\n")
        assert not [p for p in paragraphs if "\n" in p], command.callback.__name__


def test_every_commands_help_shows_flags_as_flags(cli):
    """A flag takes no value, so --help gives it none (typer 0.29 showed `--json <bool>`),
    while an option that takes one names its kind."""
    from pipeline.cli import app

    names = [c.name or c.callback.__name__ for c in app.registered_commands]
    assert {"search", "record", "export", "serve"} <= set(names)
    for name in names:
        shown = cli(name, "--help")
        assert shown.exit_code == 0, (name, shown.output)
        assert "<bool>" not in shown.stdout, (name, shown.stdout)
    lines = cli("search", "--help").stdout.splitlines()
    [json_line] = [line for line in lines if "--json" in line]
    assert json_line.split("--json")[1].split()[:2] == ["Print", "JSON"]
    assert any("--limit" in line and "<int>" in line for line in lines)
