"""Audio from other machines: a moment recorded on one recorder, heard on another.

A shared PostgreSQL archive (the private cluster of tests/postgres_server.py)
and real recorders with data homes of their own: office-pc ingests the
meeting and runs `pipeline serve` as a real process; laptop has no audio at
all and clips office-pc's moments through it. The token is needed from any
address but loopback: the tests reach the server through this machine's own
non-loopback address (traffic to it never leaves the machine). The object
storage is a real S3-compatible server on 127.0.0.1 (moto's), from which
laptop reads the audio of a recorder that serves nothing.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from sqlalchemy import text

from pipeline import errors, remote
from pipeline.archive import Archive
from pipeline.compact import FORMATS
from pipeline.config import Home
from pipeline.database import open_archive
from pipeline.housekeeping import Housekeeper, Upkeep
from pipeline.index import Indexer
from pipeline.objectstore import Bucket
from pipeline.remote import Elsewhere, advertise
from pipeline.supervisor import ingest

from .conftest import MEETING, SHORT
from .test_errors import assert_one_line

ROOT = Path(__file__).resolve().parent.parent
RATE = 16000
PHRASE = "quarterly sales report"


def this_machines_address() -> str | None:
    """An address of this machine that is not loopback (eth0's): a request to it comes
    from a non-loopback address, as from another machine, yet stays on this one."""
    try:
        shown = subprocess.run(
            ["ip", "-o", "-4", "addr", "show", "scope", "global"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    found = [line.split()[3].split("/")[0] for line in shown.splitlines() if len(line.split()) > 3]
    return found[0] if found else None


ADDRESS = this_machines_address()
needs_address = pytest.mark.skipif(ADDRESS is None, reason="this machine has no address but lo")


class Serve:
    """`pipeline serve` of a recorder as a real process (with -vv: every log line), its
    stderr in a file; stopped with Ctrl+C."""

    def __init__(self, home: Home, log: Path, *args: str) -> None:
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "-vv", "serve", "--home", str(home.root)]
            + ["--db", home.db, "--recorder", home.recorder, "--port", "0", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=log.open("w"),
            text=True,
        )
        line = self.proc.stdout.readline()
        assert line.startswith("serving http://"), line + log.read_text()
        self.port = int(line.split()[1].rstrip("/").rsplit(":", 1)[1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.communicate(timeout=30)


@pytest.fixture(scope="module")
def office(tmp_path_factory, postgres):
    """The archive, office-pc's home with the meeting in 10 s segments, and its `serve`
    on every address with a token file (through its address that is not loopback)."""
    root = tmp_path_factory.mktemp("remote")
    url = postgres.create_database(f"remote_{os.getpid()}")
    home = Home(root / "office-pc", url, "office-pc").ensure()
    source = root / "meeting.wav"
    shutil.copy(MEETING, source)
    ingest = run("ingest", source, "--home", home.root, "--db", url, "--recorder", "office-pc")
    assert ingest.returncode == 0, ingest.stderr
    token_file = root / "office.token"
    args = ["--host", "0.0.0.0", "--token-file", str(token_file)]
    if ADDRESS is not None:
        args += ["--advertise", f"http://{ADDRESS}"]  # the port it listens on is added
    server = Serve(home, root / "serve.log", *args)
    yield {"url": url, "home": home, "token_file": token_file, "server": server, "root": root}
    server.stop()


def run(*args) -> subprocess.CompletedProcess:
    """`pipeline` as a real process (ingest: its recorder's supervisor and children)."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PIPELINE_CONFIG": os.devnull},
    )


@pytest.fixture
def laptop(office, tmp_path, monkeypatch):
    """Another machine's home (no audio), with a config file of its own."""
    config = tmp_path / "laptop.toml"
    config.write_text("")
    monkeypatch.setenv("PIPELINE_CONFIG", str(config))
    monkeypatch.delenv("PIPELINE_TOKEN", raising=False)
    return {"home": Home(tmp_path / "laptop", office["url"], "laptop"), "config": config}


def hit_of(office, phrase: str = PHRASE, recorder: str = "office-pc"):
    [hit] = Archive(office["home"]).search(phrase, recorder=recorder)
    return hit


def clip_on(cli, home: Home, hit_id: int, out: Path):
    return cli("clip", hit_id, "-o", out, "--home", home.root, "--db", home.db)


def samples(path: Path) -> np.ndarray:
    data, rate = sf.read(str(path), dtype="int16", always_2d=True)
    assert rate == RATE
    return data


def original(start: float, end: float) -> np.ndarray:
    data, _ = sf.read(str(MEETING), dtype="int16", always_2d=True)
    return data[round(start * RATE) : round(end * RATE)]


# --- a moment recorded on office-pc, clipped on the laptop -----------------------------


@needs_address
def test_a_moment_recorded_elsewhere_is_fetched_from_its_recorder(
    office, laptop, cli, tmp_path, monkeypatch
):
    hit = hit_of(office)
    here = clip_on(cli, office["home"], hit.id, tmp_path / "on-office-pc.wav")
    assert here.exit_code == 0, here.output
    laptop["config"].write_text(f'token_file = "{office["token_file"]}"\n')
    there = clip_on(cli, laptop["home"], hit.id, tmp_path / "on-laptop.wav")
    assert there.exit_code == 0, there.output
    assert f"wrote {tmp_path / 'on-laptop.wav'}" in there.stdout
    assert np.array_equal(
        samples(tmp_path / "on-laptop.wav"), samples(tmp_path / "on-office-pc.wav")
    )
    assert not laptop["home"].recordings.exists() or not any(laptop["home"].recordings.iterdir())
    # a moment longer than one request may ask for comes in pieces that meet exactly,
    # and stops at the session's end
    monkeypatch.setattr(remote, "MAX_SPAN_SECONDS", 4.0)
    archive = Archive(laptop["home"], elsewhere=Elsewhere(token_file=office["token_file"]))
    long = archive.moment(hit.id, before=5.0, after=700)
    assert np.array_equal(long.frames, original(hit.utterance_start - 5.0, 99))


@needs_address
def test_the_server_says_where_it_answers_in_the_archive(office):
    with open_archive(office["home"]).connect() as conn:
        url = conn.scalar(text("SELECT serve_url FROM recorders WHERE name = 'office-pc'"))
    assert url == f"http://{ADDRESS}:{office['server'].port}"


# --- the token ------------------------------------------------------------------------


def token_of(office) -> str:
    return office["token_file"].read_text().strip()


def test_the_token_file_is_made_once_readable_only_by_its_owner(office):
    token = token_of(office)
    assert len(token) >= 40 and " " not in token
    assert stat.S_IMODE(office["token_file"].stat().st_mode) == 0o600
    said = office["server"].log.read_text()
    assert f"must send the token in {office['token_file']}" in said and token not in said


@needs_address
@pytest.mark.parametrize("path", ["/", "/api/search?q=finance+team", "/api/clip/1.wav"])
def test_other_machines_need_the_token_for_everything(office, path):
    port, token = office["server"].port, token_of(office)
    far = f"http://{ADDRESS}:{port}{path}"
    refused = httpx.get(far)
    assert refused.status_code == 401 and "token" in refused.json()["error"]
    wrong = httpx.get(far, headers={"Authorization": "Bearer " + "x" * len(token)})
    assert wrong.status_code == 401
    assert httpx.get(far, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert httpx.get(f"http://127.0.0.1:{port}{path}").status_code == 200  # this machine


def test_a_page_that_rebinds_its_name_to_this_machine_gets_nothing(office):
    """Bound to every address, a request from this machine that names another host (a
    web page whose DNS now points here) needs the token too."""
    port = office["server"].port
    evil = httpx.get(f"http://127.0.0.1:{port}/api/search?q=budget", headers={"Host": "evil.test"})
    assert evil.status_code == 401
    own = httpx.get(f"http://localhost:{port}/api/search?q=budget")
    assert own.status_code == 200


def test_a_loopback_server_still_answers_only_loopback_names(office, tmp_path):
    """Bound to 127.0.0.1 (the default) nothing changes: no token, the DNS-rebinding
    check, and nothing registered for other machines (they could not reach it)."""
    home = Home(office["home"].root, office["url"], "office-pc")
    server = Serve(home, tmp_path / "local.log")
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert httpx.get(base + "/api/search?q=budget").status_code == 200
        assert httpx.get(base + "/", headers={"Host": "evil.test"}).status_code == 421
    finally:
        server.stop()
    said = (tmp_path / "local.log").read_text()
    assert "token" not in said and "fetch" not in said  # no token, no address to register
    with open_archive(home).connect() as conn:
        url = conn.scalar(text("SELECT serve_url FROM recorders WHERE name = 'office-pc'"))
    assert ADDRESS is None or url.startswith(f"http://{ADDRESS}:")


@needs_address
def test_a_missing_or_wrong_token_is_one_line_and_never_shown(
    office, laptop, cli, tmp_path, monkeypatch
):
    hit = hit_of(office)
    missing = clip_on(cli, laptop["home"], hit.id, tmp_path / "x.wav")
    assert_one_line(missing, errors.RemoteAudioError.exit_code, "office-pc", "wants its token")
    wrong = "w" * 43
    monkeypatch.setenv("PIPELINE_TOKEN", wrong)
    refused = clip_on(cli, laptop["home"], hit.id, tmp_path / "x.wav")
    assert_one_line(refused, 8, "recorded on office-pc", "refused the token")
    assert not (tmp_path / "x.wav").exists()
    said = missing.output + refused.output + office["server"].log.read_text()
    assert token_of(office) not in said and wrong not in said


def test_config_show_hides_the_token(cli, laptop, monkeypatch):
    laptop["config"].write_text('token = "a-token-nobody-may-see-0123456789"\n')
    shown = cli("config", "show")
    assert shown.exit_code == 0 and "a-token-nobody-may-see" not in shown.stdout
    assert "(hidden)" in shown.stdout
    monkeypatch.setenv("PIPELINE_TOKEN", "another-token-nobody-may-see-0123")
    doc = json.loads(cli("config", "show", "--json").stdout)
    assert doc["settings"]["token"] == {"value": "(hidden)", "origin": "environment PIPELINE_TOKEN"}


# --- the audio endpoint -----------------------------------------------------------------


def test_the_audio_endpoint_gives_a_stretch_of_a_session_and_no_more(office):
    hit = hit_of(office)
    base = f"http://127.0.0.1:{office['server'].port}/api/audio"
    got = httpx.get(f"{base}/{hit.session_key}.wav", params={"start": 3.0, "end": 12.5})
    assert got.status_code == 200 and got.headers["content-type"] == "audio/wav"
    data, rate = sf.read(io.BytesIO(got.content), dtype="int16", always_2d=True)
    assert rate == RATE and np.array_equal(data, original(3.0, 12.5))  # across a segment edge
    too_long = httpx.get(f"{base}/{hit.session_key}.wav", params={"start": 0, "end": 601})
    assert too_long.status_code == 400 and "at most 600" in too_long.json()["error"]
    unknown = httpx.get(f"{base}/20990101T000000Z-nothing.wav", params={"start": 0, "end": 1})
    assert unknown.status_code == 404 and "no session" in unknown.json()["error"]


@needs_address
def test_deleted_audio_is_a_410_there_and_one_line_here(office, laptop, cli, tmp_path):
    """Audio the recorder's disk budget deleted: the server answers 410, and another
    machine says so without asking (the archive knows)."""
    hit = hit_of(office)
    engine = open_archive(office["home"])
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE segments SET deleted_at = :now WHERE session_id = :s"),
            {"now": datetime.now(UTC), "s": hit.session_id},
        )
    try:
        base = f"http://127.0.0.1:{office['server'].port}/api/audio"
        gone = httpx.get(f"{base}/{hit.session_key}.wav", params={"start": 0, "end": 5})
        assert gone.status_code == 410 and "deleted" in gone.json()["error"]
        laptop["config"].write_text(f'token_file = "{office["token_file"]}"\n')
        result = clip_on(cli, laptop["home"], hit.id, tmp_path / "x.wav")
        assert_one_line(result, errors.ReplayError.exit_code, "was deleted", "disk budget")
    finally:
        with engine.begin() as conn:
            conn.execute(text("UPDATE segments SET deleted_at = NULL"))
        engine.dispose()


# --- a recorder that is off --------------------------------------------------------------


def test_a_recorder_that_is_off_or_never_served_is_one_line(office, laptop, cli, tmp_path):
    hit = hit_of(office)
    laptop["config"].write_text(f'token_file = "{office["token_file"]}"\n')
    engine = open_archive(office["home"])
    with engine.connect() as conn:
        before = conn.scalar(text("SELECT serve_url FROM recorders WHERE name = 'office-pc'"))
    try:
        # office-pc's serve, started and stopped again
        server = Serve(office["home"], tmp_path / "brief.log", "--advertise", "http://127.0.0.1")
        assert clip_on(cli, laptop["home"], hit.id, tmp_path / "a.wav").exit_code == 0
        server.stop()
        off = clip_on(cli, laptop["home"], hit.id, tmp_path / "b.wav")
        assert_one_line(
            off,
            errors.RemoteAudioError.exit_code,
            "recorded on office-pc, which is not reachable (connection refused at "
            f"http://127.0.0.1:{server.port})",
            "start `pipeline serve` there",
        )
        with engine.begin() as conn:
            conn.execute(text("UPDATE recorders SET serve_url = NULL"))
        never = clip_on(cli, laptop["home"], hit.id, tmp_path / "c.wav")
        assert_one_line(never, 8, "recorded on office-pc, which has not said where")
    finally:
        advertise(engine, "office-pc", before)
        engine.dispose()


# --- object storage ---------------------------------------------------------------------


@pytest.fixture
def s3(monkeypatch):
    """A real S3-compatible server on 127.0.0.1 (moto's) with an empty bucket of its own
    (moto keeps its buckets for the whole process), and the credentials boto3's standard
    chain finds in the environment."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    for key, value in {
        "AWS_ACCESS_KEY_ID": "pipeline-test",
        "AWS_SECRET_ACCESS_KEY": "pipeline-test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    import boto3

    endpoint = f"http://{host}:{port}"
    client = boto3.client("s3", endpoint_url=endpoint)
    bucket = f"pipeline-audio-{os.urandom(4).hex()}"
    client.create_bucket(Bucket=bucket)
    yield {"endpoint": endpoint, "client": client, "bucket": bucket}
    server.stop()


def test_uploaded_segments_are_heard_elsewhere_from_the_bucket_with_no_serve(
    office, laptop, s3, cli, tmp_path
):
    """A studio recorder copies its segments to the bucket, and its disk budget deletes
    its own copies (saying so, as ever); the laptop then hears the studio's moments from
    the bucket, though the studio serves nothing, and cuts a supercut of hits recorded on
    two machines."""
    url = office["url"]
    studio = Home(tmp_path / "studio", url, "studio")
    config = tmp_path / "studio.toml"
    config.write_text(
        f'segment_seconds = 10\ncompact = "off"\ns3_url = "s3://{s3["bucket"]}/archive"\n'
        f's3_endpoint_url = "{s3["endpoint"]}"\n'
    )
    source = tmp_path / "meeting.wav"
    shutil.copy(MEETING, source)
    at = ["--home", studio.root, "--db", url, "--recorder", "studio"]
    first = cli("--config", config, "ingest", source, *at)
    assert first.exit_code == 0, first.output
    engine = open_archive(studio)
    [meeting] = Archive(studio).search(PHRASE, recorder="studio")
    of_meeting = text(
        "SELECT path, remote, deleted_at FROM segments WHERE session_id = :s ORDER BY path"
    ).bindparams(s=meeting.session_id)
    with engine.connect() as conn:
        rows = conn.execute(of_meeting).all()
    assert len(rows) >= 4  # 43 s in 10 s segments
    assert all(remote == f"s3://{s3['bucket']}/archive/{path}" for path, remote, _ in rows)
    listed = s3["client"].list_objects_v2(Bucket=s3["bucket"], Prefix="archive/")
    assert sorted(o["Key"] for o in listed["Contents"]) == [f"archive/{p}" for p, _, _ in rows]

    # a second run past a tiny disk budget: the audio with a copy goes from the disk first,
    # each deletion recorded as ever, with where the copy stays
    second = cli("--config", config, "ingest", SHORT, *at, "--max-disk", "1")
    assert second.exit_code == 0, second.output
    with engine.connect() as conn:
        rows = conn.execute(of_meeting).all()
        details = conn.scalars(
            text(
                "SELECT detail FROM session_events WHERE kind = 'audio_deleted' AND session_id = :s"
            ).bindparams(s=meeting.session_id)
        ).all()
    engine.dispose()
    assert all(deleted is not None and remote for _, remote, deleted in rows)
    assert not any((studio.recordings / path).exists() for path, _, _ in rows)
    assert len(details) == len(rows) and all("a copy stays at s3://" in d for d in details)
    logged = (studio.root / "logs" / "pipeline.log").read_text()
    assert all(f"deleted {path}" in logged for path, _, _ in rows)

    # the laptop: no audio, no serve at the studio; the bucket's endpoint in its config
    laptop["config"].write_text(
        f's3_endpoint_url = "{s3["endpoint"]}"\ntoken_file = "{office["token_file"]}"\n'
    )
    hit = hit_of(office, recorder="studio")
    assert hit.id == meeting.id and hit.segment is not None  # its audio can be had
    result = clip_on(cli, laptop["home"], hit.id, tmp_path / "from-bucket.wav")
    assert result.exit_code == 0, result.output
    moment = Archive(laptop["home"], elsewhere=Elsewhere(s3_endpoint_url=s3["endpoint"])).moment(
        hit.id
    )
    assert np.array_equal(samples(tmp_path / "from-bucket.wav"), moment.frames)
    assert np.array_equal(moment.frames, original(moment.start, moment.end))

    if ADDRESS is not None:  # office-pc's hit comes from its serve, the studio's from S3
        cut = cli(
            "supercut", PHRASE, "-o", tmp_path / "cut.wav", "--list", tmp_path / "cut.json",
            "--home", laptop["home"].root, "--db", url,
        )  # fmt: skip
        assert cut.exit_code == 0 and cut.stderr == "", cut.output
        clips = json.loads((tmp_path / "cut.json").read_text())["clips"]
        assert len(clips) == 2 and "wrote" in cut.stdout


def test_with_compaction_on_the_copy_is_the_compacted_file_and_plays_here(s3, home, tmp_path):
    """A segment waits for compaction before it is uploaded (the copy is the file that
    stays); once its own file is gone, this machine too plays it from the bucket."""
    from .postgres_server import free_port

    ingest([SHORT], home, segment_seconds=2.0)
    engine = open_archive(home)
    indexer = Indexer(engine, recordings=home.recordings)
    bucket = Bucket(f"s3://{s3['bucket']}/flac", s3["endpoint"])

    def upkeep(after: timedelta) -> Housekeeper:
        chores = Upkeep(compact=FORMATS["flac"], compact_after=after, upload=bucket)
        return Housekeeper(home, chores, lambda msg: indexer.write([msg]))

    upkeep(timedelta(hours=1)).once(engine)  # not due for compaction yet: not uploaded
    assert "Contents" not in s3["client"].list_objects_v2(Bucket=s3["bucket"])
    upkeep(timedelta(0)).once(engine)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT path, remote FROM segments ORDER BY path")).all()
    listed = s3["client"].list_objects_v2(Bucket=s3["bucket"])["Contents"]
    assert rows and all(path.endswith(".flac") for path, _ in rows)
    assert sorted(o["Key"] for o in listed) == [f"flac/{path}" for path, _ in rows]
    assert all(remote == f"s3://{s3['bucket']}/flac/{path}" for path, remote in rows)
    engine.dispose()

    [hit] = Archive(home).search("train to london")
    before = Archive(home).moment(hit.id)
    for path, _ in rows:
        (home.recordings / path).unlink()
    archive = Archive(home, elsewhere=Elsewhere(s3_endpoint_url=s3["endpoint"]))
    assert np.array_equal(archive.moment(hit.id).frames, before.frames)
    assert list((home.root / "cache" / "s3").rglob("*.flac"))  # kept for next time
    shutil.rmtree(home.root / "cache")
    away = Archive(home, elsewhere=Elsewhere(s3_endpoint_url=f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(errors.RemoteAudioError, match="cannot fetch s3://.* is not reachable"):
        away.moment(hit.id)
