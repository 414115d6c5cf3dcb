"""Settings: one frozen dataclass, built once from defaults < STATESERVICE_* env < flags.

`cli.main` builds it and passes it down; nothing else reads `os.environ`. A bad value stops
start-up with a message naming where it came from (`--port` or `STATESERVICE_PORT`).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import tzinfo
from pathlib import Path
from typing import Any, Self, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import tzlocal

from stateservice.errors import ConfigError
from stateservice.logs import FORMATS, LEVELS
from stateservice.store.connect import SCHEMES

ENV_PREFIX = "STATESERVICE_"
T = TypeVar("T")

# name: (flag, env variable, default) -- the README's settings table is checked against this
SETTINGS: dict[str, tuple[str, str, str]] = {
    "charts": ("--chart", "STATESERVICE_CHART", "(none; several paths separated by ':')"),
    "host": ("--host", "STATESERVICE_HOST", "127.0.0.1"),
    "port": ("--port", "STATESERVICE_PORT", "5000"),
    "redis_url": ("--redis", "STATESERVICE_REDIS_URL", "(embedded redis-server under --data-dir)"),
    "data_dir": ("--data-dir", "STATESERVICE_DATA_DIR", "./stateservice-data"),
    "workers": ("--workers", "STATESERVICE_WORKERS", "1"),
    "log_format": ("--log-format", "STATESERVICE_LOG_FORMAT", "console on a terminal, json otherwise"),
    "log_level": ("--log-level", "STATESERVICE_LOG_LEVEL", "info"),
    "timezone": ("--timezone", "STATESERVICE_TIMEZONE", "the server's local zone"),
    "lease_ttl": ("--lease-ttl", "STATESERVICE_LEASE_TTL", "5"),
}


@dataclass(frozen=True, slots=True)
class Config:
    charts: tuple[Path, ...] = ()
    host: str = "127.0.0.1"
    port: int = 5000
    redis_url: str | None = None  # None: start the embedded redis-server under data_dir
    data_dir: Path = field(default_factory=lambda: Path("stateservice-data"))
    workers: int = 1
    log_format: str = "json"
    log_level: str = "info"
    timezone: str | None = None  # None: the server's local zone; reads naive clock times in charts
    lease_ttl: float = 5.0

    def zone(self) -> tzinfo:
        """The zone naive chart times are read in. Raises ConfigError for an unknown zone name."""
        if self.timezone is None:
            return tzlocal.get_localzone()
        return _zone(self.timezone, SETTINGS["timezone"][0])

    @classmethod
    def load(cls, args: argparse.Namespace, environ: Mapping[str, str] = os.environ, *, tty: bool = False) -> Self:
        """Merge parsed flags over STATESERVICE_* variables over defaults. Raises ConfigError."""
        values: dict[str, Any] = {}

        def pick(name: str, convert: Callable[[str, str], T]) -> None:
            flag, env, _ = SETTINGS[name]
            given = getattr(args, name, None)
            if given is not None and given != []:
                raw: Any = given
                source = flag
            elif env in environ and environ[env] != "":
                raw, source = environ[env], env
            else:
                return
            values[name] = convert(raw, source) if isinstance(raw, str) else raw

        pick("host", lambda v, _: v)
        pick("port", _port)
        pick("redis_url", _redis_url)
        pick("data_dir", lambda v, _: Path(v))
        pick("workers", _workers)
        pick("log_format", _choice(FORMATS))
        pick("log_level", _choice(LEVELS))
        pick("charts", lambda v, _: tuple(Path(p) for p in v.split(os.pathsep) if p))
        pick("timezone", lambda v, source: str(_zone(v, source)))
        pick("lease_ttl", _seconds)
        if isinstance(values.get("charts"), list):  # --chart is repeatable: argparse gives a list
            values["charts"] = tuple(Path(p) for p in values["charts"])
        values.setdefault("log_format", "console" if tty else "json")
        return cls(**values)


def _port(value: str, source: str) -> int:
    if not value.isdigit() or not 0 <= int(value) <= 65535:
        raise ConfigError(f"{source}: {value!r} is not a port number (0-65535)")
    return int(value)


def _seconds(value: str, source: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not 0.1 <= seconds <= 3600:
        raise ConfigError(f"{source}: {value!r} is not a number of seconds from 0.1 to 3600")
    return seconds


def _zone(value: str, source: str) -> tzinfo:
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{source}: {value!r} is not a time zone name such as UTC or Europe/Berlin") from None


def _workers(value: str, source: str) -> int:
    if value == "auto":
        return os.cpu_count() or 1
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"{source}: {value!r} is not a worker count (a whole number >= 1, or 'auto')")
    return int(value)


def _redis_url(value: str, source: str) -> str:
    scheme = urlsplit(value).scheme
    if scheme not in SCHEMES:
        raise ConfigError(f"{source}: {value!r} is not a redis://, rediss:// or unix:// URL")
    return value


def _choice(options: tuple[str, ...]) -> Callable[[str, str], str]:
    def check(value: str, source: str) -> str:
        if value not in options:
            raise ConfigError(f"{source}: {value!r} is not one of {', '.join(options)}")
        return value

    return check
