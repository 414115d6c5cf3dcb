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
from stateservice.server import eventloop
from stateservice.store.redis import sentinel
from stateservice.store.redis.connect import SCHEMES, redact, with_credentials
from stateservice.telemetry.logs import FORMATS, LEVELS

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
    "coalesce": ("--coalesce / --no-coalesce", "STATESERVICE_COALESCE", "on"),
    "max_wait": ("--max-wait", "STATESERVICE_MAX_WAIT", "300"),
    "model_config": ("--config", "STATESERVICE_MODEL_CONFIG", "(none: no models served)"),
    "models": ("--models", "STATESERVICE_MODELS", "(none; needed with --config)"),
    "max_body": ("--max-body", "STATESERVICE_MAX_BODY", "1048576 (1 MiB)"),
    "allow_writable_models": ("--allow-writable-models", "STATESERVICE_ALLOW_WRITABLE_MODELS", "off"),
    "predict_processes": ("--predict-processes", "STATESERVICE_PREDICT_PROCESSES", "1 (0: predict in threads)"),
    "tokens": ("--tokens", "STATESERVICE_TOKENS", "(none: no authentication, loopback only)"),
    "insecure_no_auth": ("--insecure-no-auth", "STATESERVICE_INSECURE_NO_AUTH", "off"),
    "tls_cert": ("--tls-cert", "STATESERVICE_TLS_CERT", "(none: plain HTTP)"),
    "tls_key": ("--tls-key", "STATESERVICE_TLS_KEY", "(none; needed with --tls-cert)"),
    "tls_client_ca": ("--tls-client-ca", "STATESERVICE_TLS_CLIENT_CA", "(none: no client certificates)"),
    "redis_ca": ("--redis-ca", "STATESERVICE_REDIS_CA", "(the system's CAs, for rediss://)"),
    "redis_wait_replicas": ("--redis-wait-replicas", "STATESERVICE_REDIS_WAIT_REPLICAS", "0 (off)"),
    "redis_wait_timeout": ("--redis-wait-timeout", "STATESERVICE_REDIS_WAIT_TIMEOUT", "1"),
    "redis_cluster": ("--redis-cluster", "STATESERVICE_REDIS_CLUSTER", "off"),
    "event_loop": ("--event-loop", "STATESERVICE_EVENT_LOOP", "auto (uvloop when installed)"),
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
    coalesce: bool = True  # group commit of one chart's concurrent reports (and shared gate reads)
    max_wait: float = 300.0  # seconds: the longest `wait=` a long-poll may ask for
    model_config: Path | None = None  # the dir of model configs (*.json); None: no models served
    models: Path | None = None  # the dir of model files, <models>/<team>/<model>
    max_body: int = 1024 * 1024  # bytes; a larger request body answers 413
    allow_writable_models: bool = False  # load model files others than their owner can write
    predict_processes: int = 1  # prediction processes per worker serving models; 0: predict in its threads
    tokens: Path | None = None  # the tokens file; None: no authentication (and loopback only)
    insecure_no_auth: bool = False  # allow a non-loopback --host without tokens
    tls_cert: Path | None = None  # serve HTTPS with this certificate chain (PEM) and --tls-key
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # require client certificates signed by this CA (mTLS)
    redis_ca: Path | None = None  # verify a rediss:// server against this CA file
    redis_wait_replicas: int = 0  # acknowledge a write only once this many replicas have it (WAIT); 0: off
    redis_wait_timeout: float = 1.0  # seconds WAIT may take; fewer replicas by then answer 503
    redis_cluster: bool = False  # --redis names a node of a Redis Cluster
    event_loop: str = "auto"  # a worker's event loop: auto (uvloop when installed), uvloop or asyncio

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
        pick("coalesce", _switch)
        pick("max_wait", _seconds)
        pick("model_config", lambda v, _: Path(v))
        pick("models", lambda v, _: Path(v))
        pick("max_body", _bytes)
        pick("allow_writable_models", _switch)
        pick("predict_processes", _processes)
        pick("tokens", lambda v, _: Path(v))
        pick("insecure_no_auth", _switch)
        pick("tls_cert", lambda v, _: Path(v))
        pick("tls_key", lambda v, _: Path(v))
        pick("tls_client_ca", lambda v, _: Path(v))
        pick("redis_ca", lambda v, _: Path(v))
        pick("redis_wait_replicas", _replicas)
        pick("redis_wait_timeout", _seconds)
        pick("redis_cluster", _switch)
        pick("event_loop", _event_loop)
        if values.get("redis_cluster") and urlsplit(values.get("redis_url", "")).scheme not in ("redis", "rediss"):
            raise ConfigError(
                "--redis-cluster needs --redis redis://HOST:PORT (or rediss://) naming a node of the cluster: "
                "the embedded Redis and unix sockets are single servers"
            )
        if "redis_ca" in values and urlsplit(values.get("redis_url", "")).scheme != "rediss":
            raise ConfigError("--redis-ca needs a rediss:// --redis URL: it verifies the Redis server's certificate")
        if values.get("redis_wait_replicas") and "redis_url" not in values:
            raise ConfigError("--redis-wait-replicas needs --redis URL: the embedded redis-server has no replicas")
        if values.get("redis_wait_replicas") and values.get("redis_cluster"):
            raise ConfigError("--redis-wait-replicas does not work with --redis-cluster yet; use one or the other")
        if "redis_url" in values:  # credentials from the environment keep the password out of argv and `ps`
            ca = values.get("redis_ca")
            values["redis_url"] = with_credentials(
                values["redis_url"],
                environ.get(ENV_PREFIX + "REDIS_USERNAME") or None,
                environ.get(ENV_PREFIX + "REDIS_PASSWORD") or None,
                str(ca) if ca is not None else None,
            )
        if ("tls_cert" in values) != ("tls_key" in values):
            raise ConfigError("--tls-cert and --tls-key go together: give both to serve HTTPS")
        if "tls_client_ca" in values and "tls_cert" not in values:
            raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key: client certificates need HTTPS")
        if ("model_config" in values) != ("models" in values):
            given, needed = ("--config", "--models") if "model_config" in values else ("--models", "--config")
            raise ConfigError(f"{given} needs {needed} too: models are read from --config DIR and --models DIR")
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


def _bytes(value: str, source: str) -> int:
    units = {"": 1, "K": 1024, "KIB": 1024, "M": 1024 * 1024, "MIB": 1024 * 1024}
    number = value.rstrip("KkMmIiBb")
    unit = value[len(number) :].upper()
    if not number.isdigit() or unit not in units or not 1024 <= int(number) * units[unit] <= 1024**3:
        raise ConfigError(f"{source}: {value!r} is not a size from 1K to 1024M (bytes, or with a K or M suffix)")
    return int(number) * units[unit]


def _switch(value: str, source: str) -> bool:
    words = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}
    if value.lower() not in words:
        raise ConfigError(f"{source}: {value!r} is not one of on, off, true, false, yes, no, 1, 0")
    return words[value.lower()]


def _zone(value: str, source: str) -> tzinfo:
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{source}: {value!r} is not a time zone name such as UTC or Europe/Berlin") from None


def _replicas(value: str, source: str) -> int:
    if not value.isdigit() or int(value) > 100:
        raise ConfigError(f"{source}: {value!r} is not a number of replicas (0-100; 0 turns WAIT off)")
    return int(value)


def _workers(value: str, source: str) -> int:
    if value == "auto":
        return os.cpu_count() or 1
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"{source}: {value!r} is not a worker count (a whole number >= 1, or 'auto')")
    return int(value)


def _processes(value: str, source: str) -> int:
    if not value.isdigit():
        raise ConfigError(f"{source}: {value!r} is not a process count (a whole number >= 0)")
    return int(value)


def _redis_url(value: str, source: str) -> str:
    if sentinel.is_sentinel(value):
        try:
            sentinel.parse(value)
        except ValueError as exc:
            raise ConfigError(f"{source}: {redact(value)!r}: {exc}") from None
        return value
    try:
        parts = urlsplit(value)
        scheme = parts.scheme if parts.port is None or parts.port >= 0 else ""  # .port raises for a bad port
    except ValueError:
        scheme = ""  # e.g. an unclosed [ or a port that is no number
    if scheme not in SCHEMES:
        raise ConfigError(f"{source}: {redact(value)!r} is not a redis://, rediss://, unix:// or redis+sentinel:// URL")
    return value


def _event_loop(value: str, source: str) -> str:
    choice = _choice(eventloop.CHOICES)(value, source)
    if choice == "uvloop" and not eventloop.available():
        raise ConfigError(f"{source}: uvloop is not installed here (pip install uvloop), use auto or asyncio")
    return choice


def _choice(options: tuple[str, ...]) -> Callable[[str, str], str]:
    def check(value: str, source: str) -> str:
        if value not in options:
            raise ConfigError(f"{source}: {value!r} is not one of {', '.join(options)}")
        return value

    return check
