"""Where commands find their cluster: flags > environment > config file > local cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from shardb.shell import OutputMode
from shardb.surface.config import (
    DEFAULT_DATA_DIR,
    ConfigError,
    FileConfig,
    load_file,
    resolve_data_dir,
    resolve_target,
)

LOCAL = ["127.0.0.1:7001", "127.0.0.1:7002"]
FILE = FileConfig(path=Path("c.toml"), addresses=("file:1",), data_dir=Path("/file/dir"))


def test_an_explicit_address_beats_everything() -> None:
    target = resolve_target(
        "a:1, b:2", None, FILE, {"SHARDB_ADDR": "env:1"}, cluster_addresses=LOCAL
    )
    assert target.addresses == ("a:1", "b:2") and target.data_dir is None


def test_an_explicit_data_dir_beats_the_environment_and_keeps_the_processes() -> None:
    target = resolve_target(
        None, Path("/d"), FILE, {"SHARDB_ADDR": "env:1"}, cluster_addresses=LOCAL
    )
    assert target.addresses == tuple(LOCAL) and target.data_dir == Path("/d")


def test_environment_beats_the_file_and_the_file_beats_the_local_cluster() -> None:
    env_target = resolve_target(
        None, None, FILE, {"SHARDB_ADDR": "e:1,e:2"}, cluster_addresses=LOCAL
    )
    assert env_target.addresses == ("e:1", "e:2") and env_target.source == "SHARDB_ADDR"
    file_target = resolve_target(None, None, FILE, {}, cluster_addresses=LOCAL)
    assert file_target.addresses == ("file:1",)
    local = resolve_target(None, None, FileConfig(), {}, cluster_addresses=LOCAL)
    assert local.addresses == tuple(LOCAL) and local.data_dir == DEFAULT_DATA_DIR


def test_nothing_to_connect_to_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="no cluster address"):
        resolve_target(None, None, FileConfig(), {}, cluster_addresses=None)
    with pytest.raises(ConfigError, match="no cluster in"):
        resolve_target(None, Path("/missing"), FileConfig(), {}, cluster_addresses=None)


def test_data_dir_order() -> None:
    assert resolve_data_dir(Path("/flag"), FILE, {"SHARDB_DATA_DIR": "/env"}) == Path("/flag")
    assert resolve_data_dir(None, FILE, {"SHARDB_DATA_DIR": "/env"}) == Path("/env")
    assert resolve_data_dir(None, FILE, {}) == Path("/file/dir")
    assert resolve_data_dir(None, FileConfig(), {}) == DEFAULT_DATA_DIR


def test_config_file_is_found_by_xdg_and_overridden_by_shardb_config(tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    (xdg / "shardb").mkdir(parents=True)
    (xdg / "shardb" / "config.toml").write_text(
        '[client]\naddress = ["h:1", "h:2"]\nformat = "CSV"\nconsistency = "stale"\n'
        '[cluster]\ndata_dir = "/srv/shardb"\n'
    )
    found = load_file({"XDG_CONFIG_HOME": str(xdg)})
    assert found.addresses == ("h:1", "h:2")
    assert found.format is OutputMode.CSV and found.consistency == "stale"
    assert found.data_dir == Path("/srv/shardb")
    other = tmp_path / "other.toml"
    other.write_text('[client]\naddress = "x:9"\n')
    chosen = load_file({"XDG_CONFIG_HOME": str(xdg), "SHARDB_CONFIG": str(other)})
    assert chosen.addresses == ("x:9",)
    assert load_file({"SHARDB_CONFIG": str(tmp_path / "absent.toml")}) == FileConfig()


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("[client\n", "Expected"),
        ("[client]\nadress = 'x:1'\n", "unknown key"),
        ("[server]\n", "unknown section"),
        ("[client]\nformat = 'xml'\n", "client.format"),
        ("[client]\naddress = 7\n", "client.address"),
    ],
)
def test_a_malformed_file_is_refused_with_its_path(
    tmp_path: Path, text: str, complaint: str
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=complaint) as raised:
        load_file({"SHARDB_CONFIG": str(path)})
    assert str(path) in raised.value.message
