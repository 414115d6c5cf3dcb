"""The workers' event loop: uvloop by default, asyncio's own on request; both serve the same answers."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import pytest

from stateservice.config import Config
from stateservice.errors import ConfigError
from stateservice.server import eventloop
from tests.support.service import Services, http

CHART = """\
name: gate
current_state: open
states:
  - name: open
    func: increment
    current: {key: hosts, value: 0}
    target: {name: closed, when: {key: hosts, value: 2}}
  - name: closed
"""


def chart_file(tmp_path: Path) -> Path:
    path = tmp_path / "gate.yaml"
    path.write_text(CHART)
    return path


def walk(url: str) -> list[int]:
    """A gate that opens, two reports that close it, and the gate refused."""
    return [
        http("GET", f"{url}/state?state=open")[0],
        http("PUT", f"{url}/state?state=open&host=a")[0],
        http("PUT", f"{url}/state?state=open&host=b")[0],
        http("GET", f"{url}/state?state=open")[0],
        http("GET", f"{url}/state?state=closed")[0],
    ]


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        ([], {}, "uvloop"),
        (["--event-loop", "asyncio"], {}, "asyncio"),
        ([], {"STATESERVICE_EVENT_LOOP": "asyncio"}, "asyncio"),
        (["--event-loop", "uvloop"], {"STATESERVICE_EVENT_LOOP": "asyncio"}, "uvloop"),  # the flag wins
    ],
)
def test_every_worker_runs_the_loop_asked_for_and_serves_alike(
    tmp_path: Path, redis_url: str, services: Services, args: list[str], env: dict[str, str], expected: str
) -> None:
    service = services.start(chart_file(tmp_path), redis_url=redis_url, workers=2, args=args, env=env)

    assert [e["event_loop"] for e in service.events("serving")] == [expected]
    assert sorted(e["event_loop"] for e in service.events("worker_started")) == [expected, expected]
    assert walk(service.url) == [200, 200, 200, 406, 200]
    assert service.stop() == 0


def parse(*flags: str, environ: dict[str, str] | None = None) -> Config:
    return Config.load(argparse.Namespace(event_loop=flags[0] if flags else None), environ or {})


def test_without_uvloop_auto_falls_back_and_an_explicit_uvloop_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(eventloop, "available", lambda: False)
    monkeypatch.setattr("stateservice.config.settings.uvloop_available", lambda: False)
    assert eventloop.factory("auto") is None and eventloop.name("auto") == "asyncio"
    with pytest.raises(ConfigError, match="--event-loop: uvloop is not installed here"):
        parse("uvloop")


def test_run_runs_on_the_chosen_loop() -> None:
    async def kind() -> str:
        await asyncio.sleep(0)
        return eventloop.running()

    assert eventloop.run(kind(), "uvloop") == "uvloop"
    assert eventloop.run(kind(), "asyncio") == "asyncio"
    assert eventloop.run(kind(), "auto") == "uvloop"  # installed with the service
