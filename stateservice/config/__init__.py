"""The settings table: `Config`, one frozen dataclass, built once from defaults < STATESERVICE_* env < flags.

Each field of Config is one setting, declared once with `settings.setting(...)`: flags,
variable, default, help, parser and the commands that take it. The command line's flags
(`cli/parser.py`), `Config.load` and docs/settings.md (`python -m stateservice.config`) are
built from these declarations; `RULES` are the checks of settings that go together.
`cli.main` builds the Config and passes it down; nothing else reads `os.environ`. A bad value
stops start-up with a message naming where it came from (`--port` or `STATESERVICE_PORT`).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import tzinfo
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

import tzlocal

from stateservice.config import settings
from stateservice.config.settings import Kind, Rule, Setting, setting
from stateservice.store.redis.connect import with_credentials
from stateservice.telemetry.logs import FORMATS, LEVELS

ENV_PREFIX = "STATESERVICE_"

# the commands that take a setting, besides the variable every command reads
SERVE = ("serve",)
MODELS = ("serve", "validate")
REDIS = ("serve", "status", "reset")
WAITS = ("serve", "reset")
CHART_TIMES = ("serve", "validate", "status", "reset")


@dataclass(frozen=True, slots=True)
class Config:
    """Every setting of the service, in the order `serve --help` lists them."""

    charts: tuple[Path, ...] = setting(
        ("--chart", "--machine"),
        "STATESERVICE_CHART",
        (),
        settings.paths,
        "a chart file to serve; repeat for several",
        SERVE,
        kind=Kind.PATHS,
        metavar="FILE",
    )
    charts_dir: Path | None = setting(
        "--charts",
        "STATESERVICE_CHARTS",
        None,
        settings.path,
        "a directory of chart files: every *.yaml in it, sorted by name (not its subdirectories); "
        "SIGHUP picks up added, changed and removed files",
        ("serve", "validate"),
        metavar="DIR",
    )
    host: str = setting("--host", "STATESERVICE_HOST", "127.0.0.1", settings.text, "address to listen on", SERVE)
    port: int = setting(
        "--port", "STATESERVICE_PORT", 5000, settings.port, "port to listen on; 0 picks a free one", SERVE
    )
    workers: int = setting(
        "--workers",
        "STATESERVICE_WORKERS",
        1,
        settings.workers,
        "worker processes sharing the port, or 'auto' for one per CPU",
        SERVE,
        metavar="N",
    )
    lease_ttl: float = setting(
        "--lease-ttl",
        "STATESERVICE_LEASE_TTL",
        5.0,
        settings.seconds,
        "how long the time-state leader's lease lasts unless renewed; another worker takes over within "
        "about this long after the leader dies",
        SERVE,
        metavar="SECONDS",
    )
    coalesce: bool = setting(
        "--coalesce",
        "STATESERVICE_COALESCE",
        True,
        settings.switch,
        "commit one chart's concurrent reports together, and share concurrent gate reads",
        SERVE,
        kind=Kind.ON_OFF,
    )
    max_wait: float = setting(
        "--max-wait",
        "STATESERVICE_MAX_WAIT",
        300.0,
        settings.seconds,
        "the longest long-poll (`GET /state?...&wait=S`) allowed; more is a 400",
        SERVE,
        metavar="SECONDS",
    )
    configurations: tuple[Path, ...] = setting(
        "--configuration",
        "STATESERVICE_CONFIGURATION",
        (),
        settings.paths,
        "a configuration file (YAML: name, version, states, transitions, starting_state) to register at start; "
        "repeat for several",
        ("serve", "validate"),
        kind=Kind.PATHS,
        metavar="FILE",
    )
    event_retention: float = setting(
        "--event-retention",
        "STATESERVICE_EVENT_RETENTION",
        86400.0,
        settings.duration,
        "how long an event's outcome is kept: the same event_id within it is answered as a duplicate",
        SERVE,
        metavar="DURATION",
        shown="24h",
    )
    public_url: str | None = setting(
        "--public-url",
        "STATESERVICE_PUBLIC_URL",
        None,
        settings.public_url,
        "the service's URL as people and webhooks reach it (e.g. https://stateservice.example): an approval's "
        "notify sends continuation_url under it",
        SERVE,
        metavar="URL",
        shown="none: continuation_url is the path alone",
    )
    history_limit: int = setting(
        "--history-limit",
        "STATESERVICE_HISTORY_LIMIT",
        100,
        settings.count(1, 10000),
        "how many transitions each instance's history keeps (newest first)",
        SERVE,
        metavar="N",
    )
    stream: bool = setting(
        "--stream",
        "STATESERVICE_STREAM",
        True,
        settings.switch,
        "consume events from the Redis stream stateservice:{machines}:events (consumer group stateservice)",
        SERVE,
        kind=Kind.ON_OFF,
    )
    stream_claim_after: float = setting(
        "--stream-claim-after",
        "STATESERVICE_STREAM_CLAIM_AFTER",
        30.0,
        settings.seconds,
        "how long a stream entry may stay unacknowledged by its consumer (a worker that died) before another "
        "worker claims it",
        SERVE,
        metavar="SECONDS",
    )
    model_config: Path | None = setting(
        "--config",
        "STATESERVICE_MODEL_CONFIG",
        None,
        settings.path,
        "a directory of model configs (*.json), one model each; needs --models",
        MODELS,
        metavar="DIR",
    )
    models: Path | None = setting(
        "--models",
        "STATESERVICE_MODELS",
        None,
        settings.path,
        "the directory of model files, <DIR>/<team>/<model>; it must be trusted",
        MODELS,
        metavar="DIR",
    )
    allow_writable_models: bool = setting(
        "--allow-writable-models",
        "STATESERVICE_ALLOW_WRITABLE_MODELS",
        False,
        settings.switch,
        "load model files even if others than their owner can write them or their directories (unsafe: "
        "loading a pickle runs code from it)",
        MODELS,
        kind=Kind.SWITCH,
    )
    max_body: int = setting(
        "--max-body",
        "STATESERVICE_MAX_BODY",
        1024 * 1024,
        settings.size,
        "the largest request body (e.g. 1048576, 512K, 2M); larger answers 413",
        SERVE,
        metavar="BYTES",
        shown="1M",
    )
    event_loop: str = setting(
        "--event-loop",
        "STATESERVICE_EVENT_LOOP",
        "auto",
        settings.event_loop,
        "each worker's event loop: uvloop (faster), asyncio's own, or auto: uvloop when installed",
        SERVE,
        choices=settings.EVENT_LOOPS,
    )
    predict_processes: int = setting(
        "--predict-processes",
        "STATESERVICE_PREDICT_PROCESSES",
        1,
        settings.processes,
        "processes per worker that load models and predict, so predictions do not slow the worker's gate "
        "requests; each holds its own copy of every model; 0: predict in the worker's threads",
        SERVE,
        metavar="N",
    )
    tokens: Path | None = setting(
        "--tokens",
        "STATESERVICE_TOKENS",
        None,
        settings.path,
        "the tokens file (YAML; see `stateservice token create`); without it nothing is authenticated and "
        "only loopback may be served",
        SERVE,
        metavar="FILE",
    )
    insecure_no_auth: bool = setting(
        "--insecure-no-auth",
        "STATESERVICE_INSECURE_NO_AUTH",
        False,
        settings.switch,
        "serve a non-loopback --host without tokens (anyone who can connect can move charts)",
        SERVE,
        kind=Kind.SWITCH,
    )
    tls_cert: Path | None = setting(
        "--tls-cert",
        "STATESERVICE_TLS_CERT",
        None,
        settings.path,
        "serve HTTPS with this PEM certificate chain",
        SERVE,
        metavar="FILE",
    )
    tls_key: Path | None = setting(
        "--tls-key",
        "STATESERVICE_TLS_KEY",
        None,
        settings.path,
        "the PEM private key of --tls-cert",
        SERVE,
        metavar="FILE",
    )
    tls_client_ca: Path | None = setting(
        "--tls-client-ca",
        "STATESERVICE_TLS_CLIENT_CA",
        None,
        settings.path,
        "require client certificates signed by this CA; a certificate's CN is a token name",
        SERVE,
        metavar="FILE",
    )
    redis_ca: Path | None = setting(
        "--redis-ca",
        "STATESERVICE_REDIS_CA",
        None,
        settings.path,
        "CA file to verify a rediss:// server",
        SERVE,
        metavar="FILE",
    )
    timezone: str | None = setting(
        "--timezone",
        "STATESERVICE_TIMEZONE",
        None,  # None: the server's local zone, looked up when `zone()` is called
        settings.zone_name,
        "time zone for clock times written without an offset, e.g. Europe/Berlin",
        CHART_TIMES,
        metavar="ZONE",
        shown="the server's local zone",
    )
    redis_url: str | None = setting(
        "--redis",
        "STATESERVICE_REDIS_URL",
        None,  # None: start the embedded redis-server under data_dir
        settings.redis_url,
        "use this Redis (redis://, rediss://, unix://, or redis+sentinel://HOST:PORT,.../SERVICE to follow "
        "the master Sentinel names) instead of the embedded one",
        REDIS,
        metavar="URL",
    )
    redis_cluster: bool = setting(
        "--redis-cluster",
        "STATESERVICE_REDIS_CLUSTER",
        False,
        settings.switch,
        "--redis names a node of a Redis Cluster: each chart lives on the master owning its slot",
        REDIS,
        kind=Kind.SWITCH,
    )
    data_dir: Path = setting(
        "--data-dir",
        "STATESERVICE_DATA_DIR",
        Path("stateservice-data"),
        settings.path,
        "where the embedded Redis keeps its data and socket",
        REDIS,
        metavar="DIR",
        shown="./stateservice-data",
    )
    log_format: str = setting(
        "--log-format",
        "STATESERVICE_LOG_FORMAT",
        "json",  # `load` makes it console when stderr is a terminal
        settings.choice(FORMATS),
        "log lines as json or console",
        REDIS,
        choices=FORMATS,
        shown="console on a terminal, json otherwise",
    )
    log_level: str = setting(
        "--log-level",
        "STATESERVICE_LOG_LEVEL",
        "info",
        settings.choice(LEVELS),
        "least severe level logged",
        REDIS,
        choices=LEVELS,
    )
    redis_deadline: float = setting(
        "--redis-deadline",
        "STATESERVICE_REDIS_DEADLINE",
        1.5,
        settings.seconds,
        "how long one request may wait for all of its Redis calls together; a Redis that has not answered "
        "by then answers 503 store_unavailable (a long-poll's wait does not count, each read during it does)",
        SERVE,
        metavar="SECONDS",
    )
    redis_wait_replicas: int = setting(
        "--redis-wait-replicas",
        "STATESERVICE_REDIS_WAIT_REPLICAS",
        0,
        settings.replicas,
        "acknowledge a state change only once N replicas have it (Redis WAIT); fewer answer 503",
        WAITS,
        metavar="N",
        shown="0: off",
        help_in={
            "reset": "report the reset done only once N replicas have it (Redis WAIT); fewer is an error (exit 1)"
        },
    )
    redis_wait_timeout: float = setting(
        "--redis-wait-timeout",
        "STATESERVICE_REDIS_WAIT_TIMEOUT",
        1.0,
        settings.seconds,
        "how long --redis-wait-replicas waits for the replicas",
        WAITS,
        metavar="SECONDS",
    )

    def zone(self) -> tzinfo:
        """The zone naive chart times are read in. Raises ConfigError for an unknown zone name."""
        if self.timezone is None:
            return tzlocal.get_localzone()
        return settings.zone(self.timezone, named("timezone").flag)

    @classmethod
    def load(cls, args: argparse.Namespace, environ: Mapping[str, str] = os.environ, *, tty: bool = False) -> Self:
        """Merge parsed flags over STATESERVICE_* variables over defaults. Raises ConfigError."""
        given: dict[str, Any] = {}
        for declared in SETTINGS:
            value = declared.read(args, environ)
            if value is not None:
                given[declared.name] = value
        for rule in RULES:
            rule.check(given)
        if "redis_url" in given:  # credentials from the environment keep the password out of argv and `ps`
            ca = given.get("redis_ca")
            given["redis_url"] = with_credentials(
                given["redis_url"],
                environ.get(ENV_PREFIX + "REDIS_USERNAME") or None,
                environ.get(ENV_PREFIX + "REDIS_PASSWORD") or None,
                str(ca) if ca is not None else None,
            )
        given.setdefault("log_format", "console" if tty else "json")
        return cls(**given)


SETTINGS: tuple[Setting[Any], ...] = settings.table(Config)


def named(name: str) -> Setting[Any]:
    """The setting of the Config field `name`. Raises KeyError for no such setting."""
    for declared in SETTINGS:
        if declared.name == name:
            return declared
    raise KeyError(name)


def _scheme(given: Mapping[str, Any]) -> str:
    url: str = given.get("redis_url", "")
    return urlsplit(url).scheme


# checked in this order, on the settings a flag or a variable gave (a default breaks none of them)
RULES = (
    Rule(
        "--redis-cluster needs --redis redis://HOST:PORT (or rediss://) naming a node of the cluster: "
        "the embedded Redis and unix sockets are single servers",
        lambda given: bool(given.get("redis_cluster")) and _scheme(given) not in ("redis", "rediss"),
    ),
    Rule(
        "--redis-ca needs a rediss:// --redis URL: it verifies the Redis server's certificate",
        lambda given: "redis_ca" in given and _scheme(given) != "rediss",
    ),
    Rule(
        "--redis-wait-replicas needs --redis URL: the embedded redis-server has no replicas",
        lambda given: bool(given.get("redis_wait_replicas")) and "redis_url" not in given,
    ),
    Rule(
        "--redis-wait-replicas does not work with --redis-cluster yet; use one or the other",
        lambda given: bool(given.get("redis_wait_replicas")) and bool(given.get("redis_cluster")),
    ),
    Rule(
        "--tls-cert and --tls-key go together: give both to serve HTTPS",
        lambda given: ("tls_cert" in given) != ("tls_key" in given),
    ),
    Rule(
        "--tls-client-ca needs --tls-cert and --tls-key: client certificates need HTTPS",
        lambda given: "tls_client_ca" in given and "tls_cert" not in given,
    ),
    Rule(
        "--config needs --models too: models are read from --config DIR and --models DIR",
        lambda given: "model_config" in given and "models" not in given,
    ),
    Rule(
        "--models needs --config too: models are read from --config DIR and --models DIR",
        lambda given: "models" in given and "model_config" not in given,
    ),
)

PAGE_INTRO = f"""\
# Settings

Every setting is read from its flag, else its `{ENV_PREFIX}*` environment variable, else its
default: defaults < environment < flags. The commands column says which commands take the flag;
every command reads the variables, so one environment serves them all. A bad value stops the
command with a message naming where it came from, e.g.
`STATESERVICE_PORT: 'http' is not a port number (0-65535)`.

The Redis credentials are read from the environment only, so that the password stays out of the
command line and `ps`: `{ENV_PREFIX}REDIS_USERNAME` and `{ENV_PREFIX}REDIS_PASSWORD` are added
to the `--redis` URL unless it has a password of its own.

<!-- generated from stateservice/config by `python -m stateservice.config > docs/settings.md`; edit there -->
"""


def page() -> str:
    """docs/settings.md: the intro, every setting as a table row, and the settings that go together."""
    rows = [
        "| setting | flag | environment | default | commands | what it does |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    rows += [settings.markdown_row(declared) for declared in SETTINGS]
    together = [f"- {settings.markdown(rule.message)}" for rule in RULES]
    return "\n".join([PAGE_INTRO, *rows, "", "## Settings that go together", "", *together, ""])
