"""config.py: flags over STATESERVICE_* variables over defaults, settings that go together, a bad value
naming its source; the model settings, TLS, tokens and Redis credentials."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from stateservice.cli.main import build_parser
from stateservice.config import Config
from stateservice.errors import ConfigError
from stateservice.store.redis.connect import redact


def load(*flags: str, **environ: str) -> Config:
    return Config.load(build_parser().parse_args(["serve", *flags]), environ)


def test_defaults_serve_no_models() -> None:
    config = load()

    assert (config.model_config, config.models, config.max_body, config.allow_writable_models) == (
        None,
        None,
        1024 * 1024,
        False,
    )


def test_flags_win_over_the_environment() -> None:
    config = load(
        "--config",
        "conf",
        "--models",
        "models",
        "--max-body",
        "64K",
        "--allow-writable-models",
        STATESERVICE_MODEL_CONFIG="other",
        STATESERVICE_MODELS="other",
        STATESERVICE_MAX_BODY="2M",
        STATESERVICE_ALLOW_WRITABLE_MODELS="off",
    )

    assert (config.model_config, config.models, config.max_body, config.allow_writable_models) == (
        Path("conf"),
        Path("models"),
        64 * 1024,
        True,
    )


def test_the_environment_wins_over_the_defaults() -> None:
    config = load(
        STATESERVICE_MODEL_CONFIG="conf",
        STATESERVICE_MODELS="models",
        STATESERVICE_MAX_BODY="2MiB",
        STATESERVICE_ALLOW_WRITABLE_MODELS="yes",
    )

    assert (config.model_config, config.models, config.max_body, config.allow_writable_models) == (
        Path("conf"),
        Path("models"),
        2 * 1024 * 1024,
        True,
    )


@pytest.mark.parametrize(("given", "size"), [("1024", 1024), ("512k", 512 * 1024), ("1M", 1024 * 1024)])
def test_max_body_takes_bytes_or_a_k_or_m_suffix(given: str, size: int) -> None:
    assert load("--max-body", given).max_body == size


@pytest.mark.parametrize(
    ("flags", "environ", "processes"),
    [
        ([], {}, 1),
        (["--predict-processes", "0"], {"STATESERVICE_PREDICT_PROCESSES": "3"}, 0),
        ([], {"STATESERVICE_PREDICT_PROCESSES": "3"}, 3),
    ],
)
def test_predict_processes_one_by_default_zero_for_threads(
    flags: list[str], environ: dict[str, str], processes: int
) -> None:
    assert load(*flags, **environ).predict_processes == processes


@pytest.mark.parametrize(
    ("flags", "environ", "message"),
    [
        (["--max-body", "lots"], {}, "--max-body: 'lots' is not a size from 1K to 1024M"),
        (["--max-body", "100"], {}, "--max-body: '100' is not a size"),
        (["--max-body", "2G"], {}, "--max-body: '2G' is not a size"),
        ([], {"STATESERVICE_MAX_BODY": "-1"}, "STATESERVICE_MAX_BODY: '-1' is not a size"),
        ([], {"STATESERVICE_ALLOW_WRITABLE_MODELS": "maybe"}, "STATESERVICE_ALLOW_WRITABLE_MODELS: 'maybe' is not one"),
        (["--predict-processes", "-1"], {}, "--predict-processes: '-1' is not a process count"),
        ([], {"STATESERVICE_PREDICT_PROCESSES": "two"}, "STATESERVICE_PREDICT_PROCESSES: 'two' is not a process"),
        (["--config", "conf"], {}, "--config needs --models too"),
        ([], {"STATESERVICE_MODELS": "models"}, "--models needs --config too"),
    ],
)
def test_a_bad_value_names_its_source(flags: list[str], environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load(*flags, **environ)

    assert message in str(raised.value)


def _config(**flags: str) -> Config:
    return Config.load(argparse.Namespace(**flags), {})


def test_tls_settings_go_together() -> None:
    with pytest.raises(ConfigError, match="--tls-cert and --tls-key"):
        _config(tls_cert="c.pem")
    with pytest.raises(ConfigError, match="--tls-client-ca needs --tls-cert"):
        _config(tls_client_ca="ca.pem")
    config = Config.load(argparse.Namespace(), {"STATESERVICE_TOKENS": "t.yaml", "STATESERVICE_INSECURE_NO_AUTH": "on"})
    assert str(config.tokens) == "t.yaml" and config.insecure_no_auth


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


def test_redis_ca_needs_rediss() -> None:
    config = Config.load(argparse.Namespace(redis_url="rediss://h:6380/0", redis_ca="/etc/ca.pem"), {})
    assert config.redis_url == "rediss://h:6380/0?ssl_cert_reqs=required&ssl_ca_certs=/etc/ca.pem"
    with pytest.raises(ConfigError, match="--redis-ca needs a rediss://"):
        Config.load(argparse.Namespace(redis_url="redis://h/0", redis_ca="/etc/ca.pem"), {})
    with pytest.raises(ConfigError) as caught:
        Config.load(argparse.Namespace(redis_url="http://u:secret@h/0"), {})
    assert "secret" not in str(caught.value)
