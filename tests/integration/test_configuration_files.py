"""`serve --configuration FILE`: defined at start, checked with file:line, never redefined differently."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from stateservice.core.machines import configuration_from
from stateservice.core.parse_configuration import parse_configuration
from stateservice.store import keys
from stateservice.store.clock import local_clock
from stateservice.store.machines import Machines
from stateservice.store.redis.connect import connect
from stateservice.web.app import define_all
from tests.support.redisproc import RedisProcess
from tests.support.service import Services, run_cli

UPGRADE = """\
name: upgrade
version: v1
states: [drain, drained, back]
starting_state: drain
transitions:
  - {from: drain, to: drained, event: drained}
  - {from: drained, to: back, event: rejoin}
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def test_serve_defines_the_configuration_files_and_serves_without_charts(
    services: Services, redis_url: str, tmp_path: Path
) -> None:
    conf = write(tmp_path, "upgrade.yaml", UPGRADE)

    service = services.start(redis_url=redis_url, workers=2, args=["--configuration", str(conf)])

    with redis.Redis.from_url(redis_url, decode_responses=True) as plain:
        assert plain.hexists(keys.configurations(), "upgrade:v1")
        assert plain.hget(keys.transitions("upgrade:v1"), "drain drained") == '{"to":"drained"}'
    assert service.events("configuration_defined")
    service.stop()
    again = services.start(redis_url=redis_url, args=["--configuration", str(conf)])  # the same again: fine
    assert not again.events("configuration_defined")


def test_a_configuration_defined_differently_stops_start_up(services: Services, redis_url: str, tmp_path: Path) -> None:
    conf = write(tmp_path, "upgrade.yaml", UPGRADE)
    services.start(redis_url=redis_url, args=["--configuration", str(conf)]).stop()
    conf.write_text(UPGRADE.replace("[drain, drained, back]", "[drain, drained, back, gone]"))

    result = run_cli("serve", "--port", "0", "--redis", redis_url, "--configuration", conf, cwd=tmp_path, timeout=60)

    assert result.returncode != 0
    assert "configuration upgrade:v1 is already defined differently" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_configuration_file_fails_start_up_with_file_and_line(redis_url: str, tmp_path: Path) -> None:
    conf = write(tmp_path, "bad.yaml", UPGRADE.replace("to: back", "to: nowhere"))

    served = run_cli("serve", "--port", "0", "--redis", redis_url, "--configuration", conf, cwd=tmp_path, timeout=60)

    assert served.returncode != 0
    assert f"{conf}:7: " in served.stderr and "nowhere" in served.stderr, served.stderr
    assert "Traceback" not in served.stderr


def test_a_guard_on_an_undefined_configuration_stops_start_up_unless_a_file_defines_it(
    services: Services, redis_url: str, tmp_path: Path
) -> None:
    guarded = write(
        tmp_path,
        "guarded.yaml",
        UPGRADE.replace("name: upgrade", "name: guarded").replace(
            "{from: drain, to: drained, event: drained}",
            "{from: drain, to: drained, event: drained, requires: {configuration: 'upgrade:v1', properties: {host: a}, "
            "state: drained}}",
        ),
    )

    alone = run_cli("serve", "--port", "0", "--redis", redis_url, "--configuration", guarded, cwd=tmp_path, timeout=60)
    assert alone.returncode != 0
    assert "configuration guarded:v1: transitions.0.requires.configuration: no configuration upgrade:v1" in alone.stderr
    assert "Traceback" not in alone.stderr
    with redis.Redis.from_url(redis_url, decode_responses=True) as plain:
        assert not plain.hexists(keys.configurations(), "guarded:v1")  # nothing defined on the way out

    conf = write(tmp_path, "upgrade.yaml", UPGRADE)
    services.start(redis_url=redis_url, args=["--configuration", str(guarded), "--configuration", str(conf)])
    with redis.Redis.from_url(redis_url, decode_responses=True) as plain:
        assert plain.hexists(keys.configurations(), "guarded:v1") and plain.hexists(keys.configurations(), "upgrade:v1")


async def test_a_configuration_of_thousands_of_transitions_is_defined(clients: Any) -> None:
    states = [f"s{i}" for i in range(1000)]
    moves = [
        {"from": a, "to": b, "event": f"e{k}"}
        for k in range(5)
        for a, b in zip(states, states[1:] + states[:1], strict=True)
    ]
    configuration = configuration_from(
        {"name": "big", "version": "v1", "states": states, "transitions": moves, "starting_state": "s0"}
    )
    store = Machines(clients(), local_clock())

    assert await store.define(configuration)  # 5,000 transitions: 10,000 values, past Lua's unpack limit

    assert await store.redis.hlen(keys.transitions("big:v1")) == 5000
    await store.close()


async def test_a_worker_defines_the_files_configurations_once_redis_comes_back(
    redis_factory: Callable[..., RedisProcess],
) -> None:
    server = redis_factory()
    server.stop()  # down when the worker starts
    client = connect(server.url)
    store = Machines(client, local_clock())
    defining = asyncio.create_task(define_all(store, (parse_configuration(UPGRADE, "upgrade.yaml"),), retry=0.05))
    await asyncio.sleep(0.3)
    assert not defining.done()

    server.start()
    await asyncio.wait_for(defining, timeout=10)

    assert await store.configuration("upgrade:v1") is not None
    await store.close()
    await client.aclose()
