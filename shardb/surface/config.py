"""Where the commands find their cluster and their defaults: flags > environment > file.

The file is TOML, ``$SHARDB_CONFIG`` or else ``$XDG_CONFIG_HOME/shardb/config.toml``
(``~/.config/shardb/config.toml``)::

    [client]
    address = "127.0.0.1:7001,127.0.0.1:7002"   # or a list of "host:port"
    consistency = "linearizable"                 # linearizable | lease | stale
    format = "table"                             # table | vertical | csv | tsv | jsonl | json

    [cluster]
    data_dir = "~/shardb-data"                   # for up / down / sql / cluster

Environment: ``SHARDB_ADDR`` (comma-separated addresses), ``SHARDB_DATA_DIR``. A missing file
is no error; an unreadable or malformed one is (``ConfigError``, a usage error: exit 2),
because silently ignoring a typo in it would send statements to the wrong cluster.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from shardb.shell.format import OutputMode
from shardb.shell.session import CONSISTENCY_LEVELS

ENV_ADDR: Final = "SHARDB_ADDR"
ENV_CONFIG: Final = "SHARDB_CONFIG"
ENV_DATA_DIR: Final = "SHARDB_DATA_DIR"
DEFAULT_DATA_DIR: Final = Path("shardb-data")
"""``up``/``down`` without ``--data-dir`` (or env, or file) use this directory in the current
one, as a project-local cluster (like a compose file's directory)."""

_CLIENT_KEYS: Final = frozenset({"address", "consistency", "format"})
_CLUSTER_KEYS: Final = frozenset({"data_dir"})


class ConfigError(Exception):
    """The configuration cannot be used as written; ``message`` says where and why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True, kw_only=True)
class FileConfig:
    """What the config file says (None: not set there)."""

    path: Path | None = None
    addresses: tuple[str, ...] | None = None
    consistency: str | None = None
    format: OutputMode | None = None
    data_dir: Path | None = None


def config_path(env: Mapping[str, str]) -> Path:
    explicit = env.get(ENV_CONFIG)
    if explicit:
        return Path(explicit).expanduser()
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", "~")) / ".config")
    return Path(base).expanduser() / "shardb" / "config.toml"


def split_addresses(text: str) -> tuple[str, ...]:
    """``"a:1, b:2"`` -> ``("a:1", "b:2")``; empty items are dropped."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


def load_file(env: Mapping[str, str] | None = None) -> FileConfig:
    """Read the config file named by ``env`` (default ``os.environ``); a missing file is empty."""
    environ = os.environ if env is None else env
    path = config_path(environ)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return FileConfig()
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{path}: {error}") from error
    return _parse(path, data)


def _table(path: Path, data: Mapping[str, Any], name: str, keys: frozenset[str]) -> dict[str, Any]:
    section = data.get(name, {})
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: [{name}] must be a table")
    unknown = sorted(set(section) - keys)
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) in [{name}]: {', '.join(unknown)} "
            f"(known: {', '.join(sorted(keys))})"
        )
    return section


def _parse(path: Path, data: Mapping[str, Any]) -> FileConfig:
    unknown = sorted(set(data) - {"client", "cluster"})
    if unknown:
        raise ConfigError(f"{path}: unknown section(s): {', '.join(unknown)}")
    client = _table(path, data, "client", _CLIENT_KEYS)
    cluster = _table(path, data, "cluster", _CLUSTER_KEYS)
    addresses: tuple[str, ...] | None = None
    raw_address = client.get("address")
    if isinstance(raw_address, str):
        addresses = split_addresses(raw_address)
    elif isinstance(raw_address, list) and all(isinstance(a, str) for a in raw_address):
        addresses = tuple(a.strip() for a in raw_address if a.strip())
    elif raw_address is not None:
        raise ConfigError(f"{path}: client.address must be a string or a list of strings")
    consistency = client.get("consistency")
    if consistency is not None and consistency not in CONSISTENCY_LEVELS:
        raise ConfigError(
            f"{path}: client.consistency must be one of {', '.join(CONSISTENCY_LEVELS)}"
        )
    raw_format = client.get("format")
    output: OutputMode | None = None
    if raw_format is not None:
        output = parse_format(raw_format, where=f"{path}: client.format")
    raw_dir = cluster.get("data_dir")
    if raw_dir is not None and not isinstance(raw_dir, str):
        raise ConfigError(f"{path}: cluster.data_dir must be a string")
    return FileConfig(
        path=path,
        addresses=addresses or None,
        consistency=consistency,
        format=output,
        data_dir=Path(raw_dir).expanduser() if raw_dir else None,
    )


def parse_format(value: object, *, where: str = "--format") -> OutputMode:
    names = "|".join(mode.value for mode in OutputMode)
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be one of {names}")
    try:
        return OutputMode(value.lower())
    except ValueError:
        raise ConfigError(f"{where} must be one of {names}, not {value!r}") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """The cluster a command talks to: gateway addresses, and its directory when it is a local
    cluster (``cluster.json`` there: crash/restart work, and ``down`` can stop it)."""

    addresses: tuple[str, ...]
    data_dir: Path | None
    source: str
    """Where the addresses came from (shown when they cannot be reached)."""


def resolve_data_dir(
    flag: Path | None, file: FileConfig, env: Mapping[str, str] | None = None
) -> Path:
    """``--data-dir`` > ``SHARDB_DATA_DIR`` > ``[cluster] data_dir`` > ``./shardb-data``."""
    environ = os.environ if env is None else env
    if flag is not None:
        return flag.expanduser()
    if environ.get(ENV_DATA_DIR):
        return Path(environ[ENV_DATA_DIR]).expanduser()
    if file.data_dir is not None:
        return file.data_dir
    return DEFAULT_DATA_DIR


def resolve_target(
    address: str | None,
    data_dir: Path | None,
    file: FileConfig,
    env: Mapping[str, str] | None = None,
    *,
    cluster_addresses: Sequence[str] | None = None,
) -> Target:
    """Pick the cluster: ``ADDR`` > ``--data-dir`` > ``SHARDB_ADDR`` > ``[client] address`` >
    the local cluster in ``SHARDB_DATA_DIR`` / ``[cluster] data_dir`` / ``./shardb-data``.

    ``cluster_addresses`` are the client addresses recorded in that directory's
    ``cluster.json`` (None: there is none); the caller reads it, so that this stays a pure
    decision. Raises ``ConfigError`` when nothing names a cluster.
    """
    environ = os.environ if env is None else env
    local_dir = resolve_data_dir(data_dir, file, environ)
    if address is not None:
        addresses = split_addresses(address)
        if not addresses:
            raise ConfigError("ADDR is empty")
        # An explicit directory keeps crash/restart available next to an explicit gateway.
        return Target(addresses=addresses, data_dir=data_dir, source="ADDR")
    if data_dir is not None:
        if cluster_addresses is None:
            raise ConfigError(f"no cluster in {data_dir} (no cluster.json; see shardb up)")
        return Target(addresses=tuple(cluster_addresses), data_dir=data_dir, source=f"{data_dir}")
    if environ.get(ENV_ADDR):
        addresses = split_addresses(environ[ENV_ADDR])
        if addresses:
            return Target(addresses=addresses, data_dir=None, source=ENV_ADDR)
    if file.addresses:
        return Target(addresses=file.addresses, data_dir=None, source=str(file.path))
    if cluster_addresses is not None:
        return Target(addresses=tuple(cluster_addresses), data_dir=local_dir, source=f"{local_dir}")
    raise ConfigError(
        "no cluster address: give ADDR, set SHARDB_ADDR, set [client] address in "
        f"{config_path(environ)}, or start one with shardb up (looked in {local_dir})"
    )
