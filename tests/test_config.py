"""The config file: defaults for record and ingest, where each value came from, bad values."""

from __future__ import annotations

import json

import pytest

from pipeline.config import Settings, parse_size
from pipeline.errors import ConfigError

from .conftest import SHORT


def write(tmp_path, text: str):
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_show_prints_each_value_and_where_it_came_from(cli, tmp_path, monkeypatch):
    monkeypatch.delenv("PIPELINE_HOME", raising=False)
    path = write(tmp_path, 'segment_seconds = 60\nmax_disk = "2G"\nsource = "mic"\n')
    result = cli("--config", path, "config", "show", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    s = doc["settings"]
    assert doc["file"] == str(path)
    assert s["segment_seconds"] == {"value": 60.0, "origin": f"config file {path}"}
    assert s["max_disk"] == {"value": 2_000_000_000, "origin": f"config file {path}"}
    assert s["source"]["value"] == "mic"
    assert s["model"] == {"value": None, "origin": "default"}
    monkeypatch.setenv("PIPELINE_HOME", str(tmp_path / "h"))
    s = json.loads(cli("--config", path, "config", "show", "--json").stdout)["settings"]
    assert s["home"] == {"value": str(tmp_path / "h"), "origin": "environment PIPELINE_HOME"}


def test_the_config_file_is_found_through_the_environment(cli, tmp_path, monkeypatch):
    path = write(tmp_path, "segment_seconds = 2\n")
    monkeypatch.setenv("PIPELINE_CONFIG", str(path))
    assert Settings.load().get("segment_seconds") == 2.0
    assert Settings.load().get("segment_seconds", 7.0) == 7.0  # the command line wins


def test_ingest_uses_the_config_files_values(cli, tmp_path, home):
    path = write(tmp_path, f'segment_seconds = 1\nhome = "{home.root}"\n')
    result = cli("--config", path, "ingest", SHORT)
    assert result.exit_code == 0, result.output
    files = list(home.recordings.glob("*/*.wav"))
    assert len(files) == 4  # 3.3 s in 1 s segments


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("segment_seconds = 0.1\n", "segment_seconds = 0.1 is not valid"),
        ('source = "radio"\n', "source = 'radio' is not valid: must be one of"),
        ('max_disk = "lots"\n', "max_disk = 'lots' is not valid"),
        ("colour = 3\n", "unknown key 'colour'"),
        ("segment_seconds = \n", "is not valid TOML"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_key_and_the_file(cli, tmp_path, text, phrase):
    path = write(tmp_path, text)
    result = cli("--config", path, "config", "show")
    assert result.exit_code == ConfigError.exit_code
    assert phrase in result.stderr and str(path) in result.stderr
    assert result.stderr.count("\n") == 1


def test_a_missing_config_file_given_on_the_command_line_is_one_line(cli, tmp_path):
    result = cli("--config", tmp_path / "nope.toml", "config", "show")
    assert result.exit_code == ConfigError.exit_code and "no config file" in result.stderr


def test_sizes():
    assert parse_size("500MB") == 500_000_000
    assert parse_size("1.5GiB") == int(1.5 * 2**30)
    assert parse_size("2 g") == 2_000_000_000
    assert parse_size(1024) == 1024
    with pytest.raises(ValueError):
        parse_size("12 parsecs")
