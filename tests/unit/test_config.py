"""The settings table: flags over STATESERVICE_* variables over defaults, each kind of value, the settings
that go together, the flags' help and the settings page built from it. A bad value names its source."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest

from stateservice import config as config_module
from stateservice.cli.parser import build_parser
from stateservice.config import RULES, SETTINGS, Config, named
from stateservice.config.settings import markdown
from stateservice.errors import ConfigError
from stateservice.store.redis.connect import redact
from stateservice.store.redis.sentinel import parse as parse_sentinel


def load(*flags: str, **environ: str) -> Config:
    """The Config of `stateservice serve FLAGS` run in `environ`."""
    return Config.load(build_parser().parse_args(["serve", *flags]), environ)


# -- precedence: flag > variable > default, for every setting ---------------------------------

# name: (flags, variable's text, value from the flags, value from the variable); together the flags (and the
# variables) make one valid configuration, so that every setting is read in one go
SAMPLES: dict[str, tuple[list[str], str, Any, Any]] = {
    "charts": (["--chart", "a.yaml", "--machine", "b.yaml"], "c.yaml:d.yaml", (Path("a.yaml"), Path("b.yaml")),
               (Path("c.yaml"), Path("d.yaml"))),
    "host": (["--host", "0.0.0.0"], "::1", "0.0.0.0", "::1"),
    "port": (["--port", "0"], "8080", 0, 8080),
    "workers": (["--workers", "3"], "2", 3, 2),
    "lease_ttl": (["--lease-ttl", "2.5"], "10", 2.5, 10.0),
    "coalesce": (["--no-coalesce"], "on", False, True),
    "max_wait": (["--max-wait", "60"], "0.1", 60.0, 0.1),
    "charts_dir": (["--charts", "dir"], "dir2", Path("dir"), Path("dir2")),
    "configurations": (["--configuration", "a.yaml", "--configuration", "b.yaml"], "c.yaml",
                       (Path("a.yaml"), Path("b.yaml")), (Path("c.yaml"),)),
    "event_retention": (["--event-retention", "90m"], "7d", 5400.0, 7 * 86400.0),
    "public_url": (["--public-url", "https://ss.example/"], "http://10.0.0.1:8080", "https://ss.example", "http://10.0.0.1:8080"),
    "history_limit": (["--history-limit", "5"], "1000", 5, 1000),
    "stream": (["--no-stream"], "on", False, True),
    "stream_claim_after": (["--stream-claim-after", "5"], "60", 5.0, 60.0),
    "model_config": (["--config", "conf"], "conf2", Path("conf"), Path("conf2")),
    "models": (["--models", "models"], "models2", Path("models"), Path("models2")),
    "allow_writable_models": (["--allow-writable-models"], "no", True, False),
    "max_body": (["--max-body", "64K"], "2MiB", 64 * 1024, 2 * 1024 * 1024),
    "event_loop": (["--event-loop", "asyncio"], "uvloop", "asyncio", "uvloop"),
    "predict_processes": (["--predict-processes", "0"], "3", 0, 3),
    "tokens": (["--tokens", "t.yaml"], "t2.yaml", Path("t.yaml"), Path("t2.yaml")),
    "insecure_no_auth": (["--insecure-no-auth"], "false", True, False),
    "tls_cert": (["--tls-cert", "c.pem"], "c2.pem", Path("c.pem"), Path("c2.pem")),
    "tls_key": (["--tls-key", "k.pem"], "k2.pem", Path("k.pem"), Path("k2.pem")),
    "tls_client_ca": (["--tls-client-ca", "ca.pem"], "ca2.pem", Path("ca.pem"), Path("ca2.pem")),
    "redis_ca": (["--redis-ca", "/r/ca.pem"], "/r/ca2.pem", Path("/r/ca.pem"), Path("/r/ca2.pem")),
    "timezone": (["--timezone", "UTC"], "Europe/Berlin", "UTC", "Europe/Berlin"),
    "redis_url": (
        ["--redis", "rediss://f:6380/0"],
        "rediss://e:6380/1",
        "rediss://f:6380/0?ssl_cert_reqs=required&ssl_ca_certs=/r/ca.pem",
        "rediss://e:6380/1?ssl_cert_reqs=required&ssl_ca_certs=/r/ca2.pem",
    ),
    "redis_cluster": (["--redis-cluster"], "off", True, False),
    "data_dir": (["--data-dir", "/var/lib/s"], "/srv/s", Path("/var/lib/s"), Path("/srv/s")),
    "log_format": (["--log-format", "console"], "json", "console", "json"),
    "log_level": (["--log-level", "debug"], "warning", "debug", "warning"),
    "redis_deadline": (["--redis-deadline", "0.5"], "2.5", 0.5, 2.5),
    "redis_wait_replicas": (["--redis-wait-replicas", "0"], "2", 0, 2),  # 0 beside --redis-cluster: WAIT off
    "redis_wait_timeout": (["--redis-wait-timeout", "0.5"], "3", 0.5, 3.0),
}  # fmt: skip


def test_every_field_of_config_is_a_setting_with_a_sample_here() -> None:
    assert [f.name for f in dataclasses.fields(Config)] == [s.name for s in SETTINGS]
    assert set(SAMPLES) == {s.name for s in SETTINGS}


def test_without_flags_or_variables_every_setting_has_its_default() -> None:
    config = load()

    for declared in SETTINGS:
        assert getattr(config, declared.name) == declared.default, declared.name


def test_the_variables_win_over_the_defaults() -> None:
    config = load(**{named(name).env: text for name, (_, text, _, _) in SAMPLES.items()})

    assert {name: getattr(config, name) for name in SAMPLES} == {name: v for name, (*_, v) in SAMPLES.items()}


def test_the_flags_win_over_the_variables() -> None:
    flags = [flag for given, *_ in SAMPLES.values() for flag in given]
    config = load(*flags, **{named(name).env: text for name, (_, text, _, _) in SAMPLES.items()})

    assert {name: getattr(config, name) for name in SAMPLES} == {name: v for name, (_, _, v, _) in SAMPLES.items()}


def test_an_empty_variable_counts_as_unset() -> None:
    assert load(STATESERVICE_PORT="", STATESERVICE_COALESCE="").port == 5000


def test_log_format_defaults_to_console_on_a_terminal_and_json_otherwise() -> None:
    args = build_parser().parse_args(["serve"])

    assert Config.load(args, {}, tty=True).log_format == "console"
    assert Config.load(args, {}, tty=False).log_format == "json"
    assert Config.load(args, {"STATESERVICE_LOG_FORMAT": "json"}, tty=True).log_format == "json"


def test_every_command_reads_the_variables_but_takes_only_its_own_flags() -> None:
    args = build_parser().parse_args(["status", "--redis", "redis://h/0"])
    config = Config.load(args, {"STATESERVICE_PORT": "6000"})

    assert (config.redis_url, config.port) == ("redis://h/0", 6000)
    assert not hasattr(args, "port")
    with pytest.raises(ConfigError, match="STATESERVICE_PORT: 'x' is not a port number"):
        Config.load(build_parser().parse_args(["validate"]), {"STATESERVICE_PORT": "x"})


# -- each kind of value ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "name", "value"),
    [
        (["--max-body", "1024"], "max_body", 1024),
        (["--max-body", "512k"], "max_body", 512 * 1024),
        (["--max-body", "1M"], "max_body", 1024 * 1024),
        (["--max-body", "1024M"], "max_body", 1024**3),
        (["--port", "65535"], "port", 65535),
        (["--lease-ttl", "0.1"], "lease_ttl", 0.1),
        (["--lease-ttl", "3600"], "lease_ttl", 3600.0),
        (["--redis-deadline", "0.1"], "redis_deadline", 0.1),
        (["--workers", "auto"], "workers", os.cpu_count() or 1),
        (["--redis-wait-replicas", "100", "--redis", "redis://h/0"], "redis_wait_replicas", 100),
        (["--redis", "unix:///run/redis.sock"], "redis_url", "unix:/run/redis.sock"),  # redis-py reads it alike
        (["--redis", "redis://[::1]:6379/0"], "redis_url", "redis://[::1]:6379/0"),
        (["--redis", "redis+sentinel://a:1,b:2/m/0"], "redis_url", "redis+sentinel://a:1,b:2/m/0"),
        (["--timezone", "America/New_York"], "timezone", "America/New_York"),
        (["--chart", "a.yaml"], "charts", (Path("a.yaml"),)),
    ],
)
def test_values_each_kind_accepts(flags: list[str], name: str, value: object) -> None:
    assert getattr(load(*flags), name) == value


@pytest.mark.parametrize("word", ["1", "true", "YES", "On"])
def test_switches_take_the_usual_words_for_on(word: str) -> None:
    assert load(STATESERVICE_REDIS_CLUSTER=word, STATESERVICE_REDIS_URL="redis://h:1/0").redis_cluster is True


@pytest.mark.parametrize("word", ["0", "false", "no", "OFF"])
def test_switches_take_the_usual_words_for_off(word: str) -> None:
    assert load(STATESERVICE_COALESCE=word).coalesce is False


def test_the_chart_variable_takes_several_paths_and_skips_empty_ones() -> None:
    assert load(STATESERVICE_CHART=f"a.yaml{os.pathsep}{os.pathsep}b.yaml").charts == (Path("a.yaml"), Path("b.yaml"))


def test_the_zone_is_the_named_one_or_the_servers() -> None:
    assert str(load("--timezone", "Europe/Berlin").zone()) == "Europe/Berlin"
    assert load().zone() is not None
    with pytest.raises(ConfigError, match="--timezone: 'Mars/Olympus' is not a time zone name"):
        Config(timezone="Mars/Olympus").zone()


@pytest.mark.parametrize(
    ("flags", "environ", "message"),
    [
        (["--port", "http"], {}, "--port: 'http' is not a port number (0-65535)"),
        ([], {"STATESERVICE_PORT": "65536"}, "STATESERVICE_PORT: '65536' is not a port number (0-65535)"),
        (["--lease-ttl", "0.05"], {}, "--lease-ttl: '0.05' is not a number of seconds from 0.1 to 3600"),
        ([], {"STATESERVICE_MAX_WAIT": "soon"}, "STATESERVICE_MAX_WAIT: 'soon' is not a number of seconds"),
        (["--max-body", "lots"], {}, "--max-body: 'lots' is not a size from 1K to 1024M"),
        (["--max-body", "100"], {}, "--max-body: '100' is not a size"),
        (["--max-body", "2G"], {}, "--max-body: '2G' is not a size"),
        ([], {"STATESERVICE_MAX_BODY": "-1"}, "STATESERVICE_MAX_BODY: '-1' is not a size"),
        ([], {"STATESERVICE_ALLOW_WRITABLE_MODELS": "maybe"}, "STATESERVICE_ALLOW_WRITABLE_MODELS: 'maybe' is not one"),
        (["--workers", "0"], {}, "--workers: '0' is not a worker count (a whole number >= 1, or 'auto')"),
        (["--predict-processes", "-1"], {}, "--predict-processes: '-1' is not a process count"),
        ([], {"STATESERVICE_PREDICT_PROCESSES": "two"}, "STATESERVICE_PREDICT_PROCESSES: 'two' is not a process"),
        ([], {"STATESERVICE_TIMEZONE": "CEST"}, "STATESERVICE_TIMEZONE: 'CEST' is not a time zone name"),
        ([], {"STATESERVICE_LOG_LEVEL": "loud"}, "STATESERVICE_LOG_LEVEL: 'loud' is not one of"),
        ([], {"STATESERVICE_EVENT_LOOP": "tokio"}, "'tokio' is not one of auto, uvloop, asyncio"),
        (["--redis", "localhost"], {}, "--redis: 'localhost' is not a redis://, rediss://, unix:// or redis+sentinel://"),
        (["--redis", "redis://h:port/0"], {}, "--redis: '(an unreadable URL)' is not a redis://"),
        (["--redis", "redis://h/0", "--redis-wait-replicas", "x"], {}, "'x' is not a number of replicas (0-100"),
        (["--redis-deadline", "0"], {}, "--redis-deadline: '0' is not a number of seconds from 0.1 to 3600"),
        ([], {"STATESERVICE_REDIS_DEADLINE": "1.5s"}, "STATESERVICE_REDIS_DEADLINE: '1.5s' is not a number of seconds"),
        (["--redis", "redis://h/0"], {"STATESERVICE_REDIS_WAIT_TIMEOUT": "0"}, "STATESERVICE_REDIS_WAIT_TIMEOUT: '0'"),
        (["--redis", "http://u:secret@h/0"], {}, "--redis: 'http://u:***@h/0' is not a redis://"),
        (["--redis", "redis+sentinel://u:secret@a:1/"], {}, "--redis: 'redis+sentinel://u:***@a:1/': no service"),
        ([], {"STATESERVICE_REDIS_URL": "rediss+sentinel://a/m"}, "STATESERVICE_REDIS_URL: 'rediss+sentinel://a/m'"),
    ],
)  # fmt: skip
def test_a_bad_value_names_its_source(flags: list[str], environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load(*flags, **environ)

    assert message in str(raised.value)
    assert "secret" not in str(raised.value)


def test_an_explicit_uvloop_is_refused_where_it_is_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("stateservice.config.settings.uvloop_available", lambda: False)

    assert load("--event-loop", "auto").event_loop == "auto"
    with pytest.raises(ConfigError, match="--event-loop: uvloop is not installed here"):
        load("--event-loop", "uvloop")


# -- settings that go together --------------------------------------------------------------

BROKEN: list[tuple[list[str], dict[str, str], str]] = [
    (["--redis-cluster"], {}, "--redis-cluster needs --redis redis://HOST:PORT (or rediss://)"),
    (["--redis-cluster", "--redis", "unix:///r.sock"], {}, "--redis-cluster needs --redis redis://HOST:PORT"),
    ([], {"STATESERVICE_REDIS_CA": "/etc/ca.pem"}, "--redis-ca needs a rediss:// --redis URL"),
    (["--redis", "redis://h/0", "--redis-ca", "/etc/ca.pem"], {}, "--redis-ca needs a rediss:// --redis URL"),
    (["--redis-wait-replicas", "1"], {}, "--redis-wait-replicas needs --redis URL"),
    (
        ["--redis", "redis://h:1/0", "--redis-cluster", "--redis-wait-replicas", "1"],
        {},
        "--redis-wait-replicas does not work with --redis-cluster yet",
    ),
    (["--tls-cert", "c.pem"], {}, "--tls-cert and --tls-key go together"),
    ([], {"STATESERVICE_TLS_KEY": "k.pem"}, "--tls-cert and --tls-key go together"),
    (["--tls-client-ca", "ca.pem"], {}, "--tls-client-ca needs --tls-cert and --tls-key"),
    (["--config", "conf"], {}, "--config needs --models too"),
    ([], {"STATESERVICE_MODELS": "models"}, "--models needs --config too"),
]


@pytest.mark.parametrize(("flags", "environ", "message"), BROKEN)
def test_settings_that_go_together_are_refused_apart(flags: list[str], environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load(*flags, **environ)

    assert str(raised.value).startswith(message)


def test_every_rule_is_tried_above() -> None:
    tried = {next(r.message for r in RULES if r.message.startswith(message)) for *_, message in BROKEN}

    assert tried == {rule.message for rule in RULES}


def test_settings_given_together_pass() -> None:
    flags = ["--tls-cert", "c.pem", "--tls-key", "k.pem", "--tls-client-ca", "ca.pem"]
    config = load(
        *flags, "--redis-cluster", "--redis", "redis://h:1/0", STATESERVICE_MODELS="m", STATESERVICE_MODEL_CONFIG="c"
    )

    assert (config.tls_client_ca, config.redis_cluster, config.models) == (Path("ca.pem"), True, Path("m"))


# -- Redis credentials -------------------------------------------------------------------------


def test_redis_credentials_go_to_a_given_redis_only() -> None:
    assert load(STATESERVICE_REDIS_PASSWORD="pw").redis_url is None  # the embedded Redis has no password
    assert load("--redis", "unix:///r.sock", STATESERVICE_REDIS_PASSWORD="pw").redis_url == "unix:/r.sock"


def test_config_accepts_a_sentinel_url_and_adds_the_environments_credentials() -> None:
    env = {"STATESERVICE_REDIS_USERNAME": "svc", "STATESERVICE_REDIS_PASSWORD": "s3cret"}
    config = Config.load(argparse.Namespace(redis_url="redis+sentinel://a:1,b:2/m/0"), env)
    assert config.redis_url == "redis+sentinel://svc:s3cret@a:1,b:2/m/0"
    assert parse_sentinel(config.redis_url).password == "s3cret"
    assert redact(config.redis_url) == "redis+sentinel://svc:***@a:1,b:2/m/0"


# -- the flags' help and the settings page --------------------------------------------------


@pytest.mark.parametrize(
    ("name", "command", "help_text"),
    [
        ("host", "serve", "address to listen on [env STATESERVICE_HOST; default 127.0.0.1]"),
        ("tokens", "serve", "[env STATESERVICE_TOKENS]"),
        ("timezone", "validate", "[env STATESERVICE_TIMEZONE; default: the server's local zone]"),
        ("coalesce", "serve", "[env STATESERVICE_COALESCE; default on]"),
        ("lease_ttl", "serve", "[env STATESERVICE_LEASE_TTL; default 5]"),
        ("charts", "serve", f"repeat for several [env STATESERVICE_CHART, '{os.pathsep}'-separated]"),
        ("redis_wait_replicas", "serve", "fewer answer 503 [env STATESERVICE_REDIS_WAIT_REPLICAS; default 0: off]"),
        ("redis_wait_replicas", "reset", "fewer is an error (exit 1) [env STATESERVICE_REDIS_WAIT_REPLICAS;"),
    ],
)
def test_a_flags_help_says_its_variable_and_default(name: str, command: str, help_text: str) -> None:
    assert help_text in named(name).flag_help(command)


def test_the_page_has_a_row_per_setting_with_its_flags_variable_and_default() -> None:
    rows = [line for line in config_module.page().splitlines() if line.startswith("| `")]
    cells = [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows]

    assert [c[0] for c in cells] == [f"`{s.name}`" for s in SETTINGS]
    for declared, row in zip(SETTINGS, cells, strict=True):
        assert row[1].split(", ")[0] == f"`{declared.flag}`"
        assert row[2] == f"`{declared.env}`"
        assert row[3] == (declared.shown_default() or "(none)")
    assert "`--coalesce`, `--no-coalesce`" in config_module.page()


def test_the_page_lists_every_rule() -> None:
    for rule in RULES:
        assert f"- {markdown(rule.message)}\n" in config_module.page()


def test_markdown_escapes_html_and_emphasis_outside_code_only() -> None:
    assert markdown("files, <DIR>/<team> (*.json) a|b") == "files, &lt;DIR&gt;/&lt;team&gt; (\\*.json) a\\|b"
    assert markdown("see `GET /state?<x>` and <y>") == "see `GET /state?<x>` and &lt;y&gt;"


def test_redis_credentials_come_from_the_environment_and_are_redacted() -> None:
    env = {"STATESERVICE_REDIS_URL": "redis://h:6379/0", "STATESERVICE_REDIS_PASSWORD": "p@ss/w:rd"}
    config = Config.load(argparse.Namespace(), {**env, "STATESERVICE_REDIS_USERNAME": "svc"})
    assert config.redis_url == "redis://svc:p%40ss%2Fw%3Ard@h:6379/0"
    assert redact(config.redis_url) == "redis://svc:***@h:6379/0"
    own = Config.load(argparse.Namespace(redis_url="redis://u:mine@h/0"), env)
    assert own.redis_url == "redis://u:mine@h/0"  # a password in the URL wins
    assert redact("redis://h/0?password=x&db=1") == "redis://h/0?password=***&db=1"
    assert redact("redis://[::1]:1/0") == "redis://[::1]:1/0"
    assert redact("redis://:x@[::1]:1/0") == "redis://:***@[::1]:1/0"
    assert redact("redis://u:x@h:port/0") == "(an unreadable URL)"
