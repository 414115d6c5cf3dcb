"""`serve --configuration FILE`: defined at start, checked with file:line, never redefined differently."""

from __future__ import annotations

import textwrap
from pathlib import Path

import redis

from stateservice.store import keys
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
