"""The event loop a worker runs on: uvloop when installed (the default), else asyncio's own.

bench/run.py measured the unchanged service on both: uvloop serves about a quarter more gate
GETs per second on one worker (a bare aiohttp handler gains only a few percent, so the gain is
in the loop's own work per request: callbacks, transports, timers). `--event-loop asyncio`
keeps the standard loop, e.g. to rule uvloop out when chasing a bug. On either loop a worker
accepts connections itself (`server/accept.py`): uvloop's libuv takes one per loop turn.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from stateservice.config.settings import uvloop_available as available
from stateservice.telemetry import logs, metrics

T = TypeVar("T")


def factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The loop factory for `choice` (None: asyncio's). `uvloop` when it is not installed raises ImportError."""
    if choice == "asyncio" or (choice == "auto" and not available()):
        return None
    import uvloop

    return uvloop.new_event_loop


def name(choice: str) -> str:
    """What `choice` runs on here: "uvloop" or "asyncio"."""
    return "asyncio" if factory(choice) is None else "uvloop"


def run(main: Coroutine[Any, Any, T], choice: str) -> T:
    """`asyncio.run(main)` on the loop `choice` names."""
    try:
        with asyncio.Runner(loop_factory=factory(choice)) as runner:
            return runner.run(main)
    finally:
        # what was held for a loop turn that will not come (perprocess.NextTurn: log lines, request counts)
        metrics.flush()
        logs.flush()


def running() -> str:
    """The running loop's kind, as `name` says it: "uvloop" or "asyncio"."""
    return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"
