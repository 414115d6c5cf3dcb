"""The model settings: flags over STATESERVICE_* variables over defaults; a bad value names its source."""

from __future__ import annotations

from pathlib import Path

import pytest

from stateservice.cli.main import build_parser
from stateservice.config import Config
from stateservice.errors import ConfigError


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
