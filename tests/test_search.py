"""Search: exact phrases, case- and punctuation-blind, newest first, never an FTS5 error."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from pipeline.archive import Archive
from pipeline.errors import QueryError
from pipeline.index import Indexer
from pipeline.messages import SessionEnded, SessionStarted, Utterance, Word
from pipeline.search import phrase_query, search, tokens


def add_session(db, key: str, started_at: datetime, texts: list[str]) -> None:
    """Write a session of utterances through the real indexer, one every 10 s."""
    msgs: list = [SessionStarted(key, "file", f"{key}.wav", started_at, 16000, 1)]
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
    assert "no match" in result.stderr


def test_cli_bad_query_is_one_line_and_non_zero(cli, meeting_home):
    result = cli("search", "🎉", "--home", meeting_home.root)
    assert result.exit_code == QueryError.exit_code
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
