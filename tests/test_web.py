"""The web page: `pipeline serve` answers searches, streams each moment, and shows them safely.

The API is tested over HTTP against a real server on a free port; the page in a
real headless Chromium driven by Selenium (skipped where Debian's `chromium`
and `chromium-driver` are missing; `.ci/run` installs them).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime

import pytest
import soundfile as sf

from pipeline.config import Home
from pipeline.fuzzy import FUZZY_MIN_SCORE
from pipeline.index import Indexer
from pipeline.messages import SessionEnded, SessionStarted, Utterance, Word
from pipeline.web import WebServer

from .conftest import MEETING, sentences

PADDING = 1.5  # the clip endpoint's default context either side
SENTENCE = sentences(MEETING)[1]  # "please send the quarterly sales report to the finance team"
XSS = ["<script>window.pwned=1</script>", "<img src=x onerror=window.pwned=2>"]


def get(url: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    """Status, headers and body of a GET, error statuses included."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def get_json(url: str) -> tuple[int, dict]:
    status, _, body = get(url)
    return status, json.loads(body)


class Running:
    """A WebServer running in a thread for the length of a with-block."""

    def __init__(self, home: Home) -> None:
        self.server = WebServer(home, port=0)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        return self.server.url

    def __exit__(self, *exc) -> None:
        self.server.stop()
        self.thread.join(10)
        assert not self.thread.is_alive()


@pytest.fixture(scope="module")
def meeting_url(meeting_home):
    with Running(meeting_home) as url:
        yield url


@pytest.fixture
def xss_url(home, db):
    """An archive whose transcript is markup, written through the real indexer."""
    key = "<b onmouseover=window.pwned=3>x"
    msgs: list = [
        SessionStarted(key, "file", f"{key}.wav", datetime(2026, 1, 5, tzinfo=UTC), 16000, 1)
    ]
    for i, text in enumerate(XSS):
        words = tuple(
            Word(w, 10 * i + 0.5 * j, 10 * i + 0.5 * j + 0.4, 0.9)
            for j, w in enumerate(text.split())
        )
        msgs.append(Utterance(key, 10 * i, 10 * i + 5, words, "test"))
    msgs.append(SessionEnded(key, 16000 * 10 * len(XSS), 16000))
    Indexer(db).write(msgs)
    with Running(home) as url:
        yield url


def wav_seconds(body: bytes) -> float:
    info = sf.info(io.BytesIO(body))
    assert info.format == "WAV"
    return info.frames / info.samplerate


def clip_seconds(hit: dict, before: float = PADDING, after: float = PADDING) -> float:
    """What the clip of a hit should last: the utterance and its padding (not before 0)."""
    return hit["utterance_end"] + after - max(0.0, hit["utterance_start"] - before)


# --- the JSON API --------------------------------------------------------------------


def test_search_finds_a_phrase_at_its_time(meeting_url):
    status, body = get_json(meeting_url + "api/search?q=" + SENTENCE["phrase"].replace(" ", "+"))
    assert status == 200
    [hit] = body["hits"]
    assert hit["text"] == SENTENCE["text"]
    assert SENTENCE["start"] - 1.0 <= hit["start"] <= SENTENCE["end"]
    first, last = hit["match"]
    assert " ".join(hit["words"][first:last]) == SENTENCE["phrase"]
    assert hit["audio"] and hit["clip"] == f"/api/clip/{hit['id']}.wav"
    assert datetime.fromisoformat(hit["at"]).tzinfo is not None


def test_search_limit_and_no_match(meeting_url):
    status, body = get_json(meeting_url + "api/search?q=to+the&limit=2")
    assert status == 200 and len(body["hits"]) == 2
    status, body = get_json(meeting_url + "api/search?q=purple+elephant")
    assert status == 200 and body["hits"] == []


def test_fuzzy_search_finds_what_sounds_like_the_phrase_and_names_the_closest(meeting_url):
    misspelt = "quarterly+sails+report"  # "sales", as a user might remember it
    status, exact = get_json(meeting_url + f"api/search?q={misspelt}")
    assert status == 200 and exact["hits"] == [] and not exact["fuzzy"]
    status, body = get_json(meeting_url + f"api/search?q={misspelt}&fuzzy=1")
    assert status == 200 and body["fuzzy"]
    best = body["hits"][0]
    assert best["text"] == SENTENCE["text"] and best["heard"] == SENTENCE["phrase"]
    assert best["score"] > 0.99  # "sails" and "sales" sound the same (less a little doubt)
    status, body = get_json(meeting_url + "api/search?q=purple+elephants+dance&fuzzy=1")
    assert status == 200 and body["hits"] == [] and body["min_score"] == FUZZY_MIN_SCORE
    assert 0 < body["closest"]["score"] < FUZZY_MIN_SCORE and body["closest"]["heard"]


def test_search_takes_the_clis_filters(meeting_url):
    def hits(params: str, phrase: str = SENTENCE["phrase"]) -> list[dict]:
        query = urllib.parse.urlencode({"q": phrase})
        status, body = get_json(f"{meeting_url}api/search?{query}&{params}")
        assert status == 200, body
        return body["hits"]

    [hit] = hits("since=2000-01-01&until=now")
    assert hits("until=2000-01-01") == [] and hits("since=now") == []
    assert hits("source=mic") == [] and hits("source=file") == [hit]
    assert hits(f"session={hit['session_id']}") == [hit]
    assert hits("device=meeting") == [hit] and hits("device=elsewhere") == []
    assert hits("fuzzy=1&until=2000-01-01") == []
    status, body = get_json(f"{meeting_url}api/search?q=to+the&session=no-such-session")
    assert status == 404 and "no session 'no-such-session'" in body["error"]


def test_search_takes_fts_syntax_and_orders_by_rank(meeting_url, meeting_home):
    from pipeline.archive import Archive

    status, body = get_json(meeting_url + "api/search?q=quarterly+AND+finance&fts=1")
    assert status == 200 and [h["text"] for h in body["hits"]] == [SENTENCE["text"]]
    assert get_json(meeting_url + "api/search?q=quarterly+AND+finance")[1]["hits"] == []
    query = "coffee OR floor OR to OR the OR on"
    asked = {
        order: [h["id"] for h in get_json(f"{meeting_url}api/search?{params}")[1]["hits"]]
        for order, params in (
            ("newest", urllib.parse.urlencode({"q": query, "fts": 1})),
            ("rank", urllib.parse.urlencode({"q": query, "fts": 1, "rank": 1})),
        )
    }
    archive = Archive(meeting_home)
    assert asked["rank"] == [h.id for h in archive.search(query, fts=True, rank=True, limit=50)]
    assert asked["newest"] == [h.id for h in archive.search(query, fts=True, limit=50)]
    assert asked["rank"] != asked["newest"]


@pytest.mark.parametrize(
    "query, message",
    [
        ("q=to+the&since=someday", "since: 'someday' is not a time; give a date"),
        ("q=to+the&since=today&until=yesterday", "since 'today' is not before until"),
        ("q=to+the&source=radio", "must be one of file, system, mic"),
        ("q=to+the+final&fuzzy=1&fts=1", "--fuzzy and --fts do not combine; use one"),
        ("q=%22%22", "nothing to search for"),
        ("q=", "nothing to search for"),
        ("q=to+the&limit=0", "limit must be between 1 and 500"),
        ("q=to+the&limit=many", "limit must be a number"),
        ("q=hi&fuzzy=1", "too short to search by sound"),
        ("q=sales%00report", "the query is not text: character 6"),
        ("q=sales%FF%FEreport", "the query is not text: character 6"),
    ],
)
def test_a_bad_query_is_a_400_with_one_line(meeting_url, query, message):
    status, body = get_json(meeting_url + "api/search?" + query)
    assert status == 400
    assert message in body["error"] and "\n" not in body["error"]


def test_show_gives_a_hits_utterance_with_its_neighbours(meeting_url):
    [hit] = get_json(meeting_url + "api/search?q=" + SENTENCE["phrase"].replace(" ", "+"))[1][
        "hits"
    ]
    status, body = get_json(meeting_url + f"api/show/{hit['id']}")
    assert status == 200 and body["id"] == hit["id"]
    texts = [s["text"] for s in sentences(MEETING)]
    assert [u["text"] for u in body["utterances"]] == texts[:4]  # the 2nd sentence, 2 either side
    assert body["focus"] == 1 and body["utterances"][1]["id"] == hit["id"]
    assert all(0 <= w["confidence"] <= 1 for w in body["utterances"][1]["words"])
    status, body = get_json(meeting_url + f"api/show/{hit['id']}?around=0")
    assert [u["text"] for u in body["utterances"]] == [hit["text"]] and body["focus"] == 0
    assert get_json(meeting_url + f"api/show/{hit['id']}?around=99")[0] == 400
    for unknown in ("999999", "abc"):
        status, body = get_json(meeting_url + f"api/show/{unknown}")
        assert status == 404 and body["error"].startswith("no hit with id")


def test_clip_is_a_wav_of_the_utterance_and_its_padding(meeting_url):
    _, body = get_json(meeting_url + "api/search?q=" + SENTENCE["phrase"].replace(" ", "+"))
    hit = body["hits"][0]
    status, headers, wav = get(meeting_url + hit["clip"].lstrip("/"))
    assert status == 200
    assert headers["content-type"] == "audio/wav"
    assert int(headers["content-length"]) == len(wav)
    assert wav_seconds(wav) == pytest.approx(clip_seconds(hit), abs=1e-3)

    _, _, wav = get(meeting_url + hit["clip"].lstrip("/") + "?before=0.5&after=0.25")
    assert wav_seconds(wav) == pytest.approx(clip_seconds(hit, 0.5, 0.25), abs=1e-3)


def test_clip_serves_byte_ranges_for_seeking(meeting_url):
    _, body = get_json(meeting_url + "api/search?q=" + SENTENCE["phrase"].replace(" ", "+"))
    url = meeting_url + body["hits"][0]["clip"].lstrip("/")
    _, _, whole = get(url)
    status, headers, part = get(url, {"Range": "bytes=100-199"})
    assert status == 206 and part == whole[100:200]
    assert headers["content-range"] == f"bytes 100-199/{len(whole)}"
    status, _, tail = get(url, {"Range": "bytes=-100"})
    assert status == 206 and tail == whole[-100:]


@pytest.mark.parametrize("hit_id", ["99999", "abc", "²", "9" * 30])
def test_an_unknown_clip_is_a_404_json(meeting_url, hit_id):
    status, body = get_json(meeting_url + f"api/clip/{urllib.parse.quote(hit_id)}.wav")
    assert status == 404
    assert "no hit with id" in body["error"]


def test_bad_padding_is_a_400(meeting_url):
    status, body = get_json(meeting_url + "api/clip/1.wav?before=-1")
    assert status == 400 and "before must be between" in body["error"]


def test_only_loopback_host_names_are_answered(meeting_url):
    """A page elsewhere that rebinds its own name to 127.0.0.1 gets nothing."""
    port = meeting_url.rsplit(":", 1)[1].strip("/")
    status, _, _ = get(meeting_url, {"Host": f"evil.example:{port}"})
    assert status == 421
    status, headers, page = get(meeting_url, {"Host": f"localhost:{port}"})
    assert status == 200 and b'id="results"' in page
    assert "script-src 'sha256-" in headers["content-security-policy"]


def test_the_page_is_package_data():
    """Read through importlib.resources, as from an installed wheel (hatch ships pipeline/data/)."""
    from pipeline.web import page_html

    assert "<script>" in page_html()


# --- the CLI command -----------------------------------------------------------------


def start_serve(home: Home, *args: str) -> tuple[subprocess.Popen, str]:
    """`pipeline serve` as a real process; returns it and the URL it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "serve", "--home", str(home.root), "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    assert line.startswith("serving http://"), line + proc.stderr.read()
    return proc, line.split()[1]


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_stops_it_cleanly(meeting_home, how):
    proc, url = start_serve(meeting_home)
    assert get_json(url + "api/search?q=finance+team")[0] == 200
    proc.send_signal(how)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "stopped" in out and "Traceback" not in err and err == ""


def test_a_host_other_than_loopback_wants_a_token_and_says_where_it_is(meeting_home, tmp_path):
    """Other machines must send the token (see test_remote_audio.py); the token is made
    in the file named, readable only by its owner, and never printed."""
    token_file = tmp_path / "serve.token"
    proc, url = start_serve(meeting_home, "--host", "0.0.0.0", "--token-file", str(token_file))
    try:
        assert url.startswith("http://0.0.0.0:")
        said = proc.stderr.readline()
        assert said.startswith(f"clients on other machines must send the token in {token_file}")
        assert "made now" in said and token_file.read_text().strip() not in said
        assert token_file.stat().st_mode & 0o077 == 0
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert proc.returncode == 0


def test_a_port_in_use_is_one_line_and_exit_2(cli, meeting_home):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("serve", "--home", meeting_home.root, "--port", str(port))
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: port {port} on 127.0.0.1 is already in use (another `pipeline serve`?); "
        "pick another with --port"
    ]
    assert "Traceback" not in result.output


def test_serving_an_empty_home_says_what_to_do(cli, tmp_path):
    result = cli("serve", "--home", tmp_path / "nothing", "--port", "0")
    assert result.exit_code == 5
    assert "no archive at" in result.stderr and "pipeline ingest" in result.stderr


# --- the page in a real browser ----------------------------------------------------------


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip(
            "Debian's chromium and chromium-driver are not installed (.ci/run installs them)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--mute-audio"):
        options.add_argument(arg)
    # its profile and the singleton folder it leaves behind go in pytest's temp, not /tmp
    scratch = tmp_path_factory.mktemp("chromium")
    options.add_argument(f"--user-data-dir={scratch / 'profile'}")
    service = Service(driver, env={**os.environ, "TMPDIR": str(scratch)})
    chrome = webdriver.Chrome(options=options, service=service)
    yield chrome
    chrome.quit()


def wait_for(browser, script: str, timeout: float = 15.0):
    """Poll a JS expression until it is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while not (value := browser.execute_script("return " + script)):
        assert time.monotonic() < deadline, f"timed out waiting for {script}"
        time.sleep(0.05)
    return value


def search_in_page(browser, url: str, phrase: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(url)
    box = browser.find_element(By.ID, "q")
    box.send_keys(phrase, Keys.ENTER)


def test_page_finds_a_phrase_and_plays_its_moment(browser, meeting_url):
    search_in_page(browser, meeting_url, SENTENCE["phrase"])
    text = wait_for(browser, "document.querySelector('#results .text')?.textContent")
    assert text == SENTENCE["text"]
    marked = browser.execute_script(
        "return [...document.querySelectorAll('#results mark')].map(m => m.textContent)"
    )
    assert " ".join(marked) == SENTENCE["phrase"]
    assert browser.execute_script("return document.querySelectorAll('#timeline .dot').length") == 1

    wait_for(browser, "document.querySelector('#results audio').readyState >= 1")
    duration = browser.execute_script("return document.querySelector('#results audio').duration")
    _, body = get_json(meeting_url + "api/search?q=" + SENTENCE["phrase"].replace(" ", "+"))
    assert duration == pytest.approx(clip_seconds(body["hits"][0]), abs=0.1)


def test_page_shows_what_was_said_around_a_hit(browser, meeting_url):
    from selenium.webdriver.common.by import By

    search_in_page(browser, meeting_url, SENTENCE["phrase"])
    wait_for(browser, "document.querySelector('#results .text')")
    button = browser.find_element(By.CSS_SELECTOR, "#results .context")
    button.click()
    wait_for(browser, "document.querySelectorAll('#results .said').length == 3")
    lines = browser.execute_script(
        "return [...document.querySelectorAll('#results .said, #results .text')]"
        ".map(p => [p.className, p.lastChild.textContent])"
    )
    texts = [s["text"] for s in sentences(MEETING)]
    assert lines == [["said", texts[0]], ["text", SENTENCE["text"].split()[-1]]] + [
        ["said", t] for t in texts[2:4]
    ]
    assert button.get_attribute("aria-expanded") == "true"
    button.click()
    wait_for(browser, "document.querySelectorAll('#results .said').length == 0")
    assert button.get_attribute("aria-expanded") == "false"


def test_page_lists_more_hits_when_asked(browser, meeting_url):
    from selenium.webdriver.common.by import By

    browser.get(meeting_url + "?q=to+the&limit=1")  # a page of one hit
    wait_for(browser, "document.querySelectorAll('#results li').length == 1")
    assert browser.find_element(By.ID, "status").text == "the newest 1 hit"
    more = browser.find_element(By.ID, "more")
    assert more.is_displayed()
    more.click()
    wait_for(browser, "document.querySelectorAll('#results li').length == 2")
    assert browser.find_element(By.ID, "status").text == "2 hits"  # all there are
    assert not more.is_displayed() and "limit=1" in browser.current_url


def test_page_searches_by_sound_and_shows_the_closest_when_nothing_is_close(browser, meeting_url):
    from selenium.webdriver.common.by import By

    search_in_page(browser, meeting_url, "quarterly sails report")
    status = wait_for(browser, "document.getElementById('status').textContent.startsWith('no')")
    assert "sounds like" in browser.find_element(By.ID, "status").text, status
    browser.find_element(By.ID, "fuzzy").click()
    browser.find_element(By.CSS_SELECTOR, "#search button").click()
    text = wait_for(browser, "document.querySelector('#results .text')?.textContent")
    assert text == SENTENCE["text"]
    assert browser.find_element(By.CSS_SELECTOR, "#results .score").text == "score 1.00"
    assert "fuzzy=1" in browser.current_url
    browser.get(browser.current_url)  # a link to the search keeps "sounds like" ticked
    wait_for(browser, "document.querySelector('#results .score')")
    assert browser.find_element(By.ID, "fuzzy").is_selected()

    box = browser.find_element(By.ID, "q")
    box.clear()
    box.send_keys("purple elephants dance\n")
    status = wait_for(
        browser, "document.getElementById('status').textContent.includes('the closest')"
    )
    assert browser.execute_script("return document.querySelectorAll('#results li').length") == 1
    score = browser.find_element(By.CSS_SELECTOR, "#results .score").text
    assert float(score.removeprefix("score ")) < FUZZY_MIN_SCORE


def test_page_filters_a_search_and_keeps_its_filters_in_the_link(browser, meeting_url):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(meeting_url)
    assert not browser.find_element(By.ID, "until").is_displayed()  # folded away at first
    browser.find_element(By.CSS_SELECTOR, "#filters summary").click()
    browser.find_element(By.ID, "until").send_keys("2000-01-01")
    browser.find_element(By.ID, "q").send_keys(SENTENCE["phrase"] + "\n")
    status = "document.getElementById('status').textContent"
    wait_for(browser, f"{status} == 'no match within these filters'")
    assert "until=2000-01-01" in browser.current_url

    browser.get(browser.current_url)  # a link to the search opens its filters, filled in
    wait_for(browser, f"{status}.startsWith('no match')")
    until = browser.find_element(By.ID, "until")
    assert until.is_displayed() and until.get_attribute("value") == "2000-01-01"

    until.clear()
    Select(browser.find_element(By.ID, "source")).select_by_value("file")
    browser.find_element(By.ID, "fuzzy").click()
    browser.find_element(By.ID, "fts").click()  # one or the other: by sound or FTS5 syntax
    assert not browser.find_element(By.ID, "fuzzy").is_selected()
    browser.find_element(By.ID, "fts").click()
    browser.find_element(By.CSS_SELECTOR, "#search button").click()
    text = wait_for(browser, "document.querySelector('#results .text')?.textContent")
    assert text == SENTENCE["text"] and "source=file" in browser.current_url
    assert "until" not in browser.current_url

    browser.find_element(By.ID, "since").send_keys("someday\n")
    error = wait_for(
        browser,
        "!document.getElementById('error').hidden && document.getElementById('error').textContent",
    )
    assert error.startswith("since: 'someday' is not a time")


def test_page_shows_a_bad_query_as_one_line(browser, meeting_url):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    search_in_page(browser, meeting_url, "finance team")
    wait_for(browser, "document.querySelectorAll('#results .text').length == 1")
    box = browser.find_element(By.ID, "q")
    box.clear()
    box.send_keys("!!!", Keys.ENTER)
    error = wait_for(
        browser,
        "!document.getElementById('error').hidden && document.getElementById('error').textContent",
    )
    assert error.startswith("nothing to search for") and "\n" not in error
    # the hits of the search before are gone, not left under the error as if they were its
    assert browser.execute_script("return document.querySelectorAll('#results li').length") == 0


def test_page_shows_markup_in_transcripts_as_text(browser, xss_url):
    search_in_page(browser, xss_url, "window pwned")
    wait_for(browser, "document.querySelectorAll('#results .text').length == 2")
    shown = browser.execute_script(
        "return [...document.querySelectorAll('#results .text')].map(p => p.textContent)"
    )
    assert sorted(shown) == sorted(XSS)
    assert (
        browser.execute_script(
            "return document.querySelectorAll('#results script, #results img').length"
        )
        == 0
    )
    source = browser.execute_script("return document.querySelector('#results .source').textContent")
    assert source == "<b onmouseover=window.pwned=3>x.wav"
    time.sleep(0.3)  # an onerror would have fired by now
    assert browser.execute_script("return typeof window.pwned") == "undefined"
