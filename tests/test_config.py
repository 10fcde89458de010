"""The config file (defaults, where each value came from, bad values) and the service unit."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import pipeline
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
        ('compact = "zip"\n', "compact = 'zip' is not valid: must be one of opus, flac, off"),
        ('compact_after = "soon"\n', "compact_after = 'soon' is not valid"),
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


# --- the systemd user service ---------------------------------------------------------


def systemd_verify(unit: Path, home: Path, runtime: Path) -> subprocess.CompletedProcess:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed here")
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = {**os.environ, "HOME": str(home), "XDG_RUNTIME_DIR": str(runtime)}
    return subprocess.run(
        ["systemd-analyze", "verify", "--user", str(unit)], capture_output=True, text=True, env=env
    )


def test_the_installed_unit_runs_this_pipeline_and_systemd_accepts_it(cli, tmp_path):
    unit = tmp_path / "pipeline.service"
    result = cli("service", "install", "--path", unit)
    assert result.exit_code == 0 and "systemctl --user enable --now pipeline" in result.output
    text = unit.read_text()
    assert f"ExecStart={Path(sys.executable).parent / 'pipeline'} record --quiet" in text
    # systemd stops it with SIGTERM to the supervisor alone, which stops the run cleanly
    # (test_supervisor, test_record); sent to all its processes it would cut them short
    assert "\nKillMode=mixed\n" in text and "\nKillSignal=SIGTERM\n" in text
    checked = systemd_verify(unit, tmp_path, tmp_path / "run")
    assert checked.returncode == 0 and checked.stderr == "", checked.stderr


def test_the_shipped_unit_is_valid_where_uv_tool_install_puts_pipeline(tmp_path):
    """The unit in the wheel starts ~/.local/bin/pipeline; systemd checks it is there."""
    shipped = Path(pipeline.__file__).parent / "data" / "pipeline.service"
    home = tmp_path / "home"
    (home / ".local" / "bin").mkdir(parents=True)
    (home / ".local" / "bin" / "pipeline").symlink_to(Path(sys.executable).parent / "pipeline")
    checked = systemd_verify(shipped, home, tmp_path / "run")
    assert checked.returncode == 0 and checked.stderr == "", checked.stderr
    missing = systemd_verify(shipped, tmp_path / "nobody", tmp_path / "run")
    assert missing.returncode != 0  # (the check is real: no pipeline there, no service)
