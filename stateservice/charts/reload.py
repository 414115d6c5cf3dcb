"""SIGHUP: re-read the chart files of start-up and swap the new charts in, all or nothing; and the tokens file.

A reload runs the start-up checks again: every file must parse (`load_charts`), and every
changed chart must register in Redis keeping its stored state (`ChartStore.register`; a
stored current state the new file lacks is `StateRemoved`). Only then is the served dict
replaced, in one synchronous step, so handlers and the scheduler see all old or all new
charts. On any problem the old charts keep serving and `charts_reload_failed` lists every
problem. The tokens file's reload is `security/reload.py`'s. Signals themselves are wired in
`server/supervisor.py`; this module knows none.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Sequence
from datetime import tzinfo
from pathlib import Path

import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from stateservice.charts.files import Parses, load_charts
from stateservice.core.chart import Chart
from stateservice.errors import ChartError, StateServiceError
from stateservice.security.reload import TokensReloader
from stateservice.store.registrar import Registrar

log = structlog.get_logger(__name__)


class Reloader:
    """Reloads `charts` (the dict the app and scheduler serve, mutated in place) from `paths`; and `tokens`, if given.

    The charts and the tokens are reloaded independently: a bad tokens file does not hold back good
    chart files, nor the other way round.
    """

    def __init__(
        self,
        charts: dict[str, Chart],
        paths: Sequence[Path],
        zone: tzinfo,
        registrar: Registrar,
        tokens: TokensReloader | None = None,
        *,
        directory: Path | None = None,
        parses: Parses | None = None,
    ) -> None:
        self.charts = charts
        self.paths = tuple(paths)
        self.directory = directory  # listed again on every reload: files added, changed, removed
        self.parses = parses or Parses()  # start-up's, when given: a reload parses only files changed since
        self.zone = zone
        self.registrar = registrar
        self.tokens = tokens
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[bool]] = set()

    def request(self) -> None:
        """Start a reload in the background (a signal handler's job); reloads run one at a time."""
        task = asyncio.get_running_loop().create_task(self.reload(), name="charts-reload")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def reload(self) -> bool:
        """Re-read the files; swap the charts (the tokens) in if they all parse and register. False (logged) if not."""
        async with self._lock:
            charts = await self._charts()
            tokens = await self.tokens.reload() if self.tokens is not None else True
            return charts and tokens

    async def _charts(self) -> bool:
        log.info("charts_reloading", paths=[str(p) for p in self.paths], directory=_text(self.directory))
        load = functools.partial(load_charts, self.paths, self.zone, self.directory, self.parses)
        try:
            fresh = await asyncio.get_running_loop().run_in_executor(None, load)
        except ChartError as exc:
            log.error("charts_reload_failed", problems=[str(p) for p in exc.problems], kept=sorted(self.charts))
            return False
        new = {chart.name: chart for chart in fresh}
        problems = await self._register(new)
        if problems:
            log.error("charts_reload_failed", problems=problems, kept=sorted(self.charts))
            return False
        old = dict(self.charts)
        # one synchronous step: no request or scheduler tick sees half of each
        self.charts.clear()
        self.charts.update(new)
        log.info(
            "charts_reloaded",
            charts={name: chart.digest[:12] for name, chart in sorted(new.items())},
            changed=sorted(n for n, c in new.items() if n in old and old[n].digest != c.digest),
            added=sorted(set(new) - set(old)),
            removed=sorted(set(old) - set(new)),
        )
        return True

    async def close(self) -> None:
        """Cancel a reload still running (at shutdown, before Redis closes)."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)

    async def _register(self, new: dict[str, Chart]) -> list[str]:
        """Register the new or changed charts; every problem as a line (none: all registered).

        Every carry-over is checked before anything is written, so a removed state in one chart
        leaves the others' stored definitions untouched.
        """
        changed = [
            c for name, c in sorted(new.items()) if (old := self.charts.get(name)) is None or old.digest != c.digest
        ]
        if not changed:
            return []
        problems = await _attempt(changed[0], self.registrar.store.check_carry_overs(changed))
        if problems:
            return problems
        # on a Redis error the old charts stay: the next SIGHUP tries again
        return await _attempt(changed[0], self.registrar.ensure_many(changed))


async def _attempt(first: Chart, step: Awaitable[Sequence[object]]) -> list[str]:
    """Await one registration step over the changed charts (`first` the first): each problem as a line (none: done)."""
    try:
        results = await step
    except (RedisConnectionError, RedisTimeoutError, TimeoutError) as exc:
        why = str(exc) or type(exc).__name__
        return [f"{first.path or first.name}: cannot register chart {first.name!r}: {why}"]
    problems = [r[1] if isinstance(r, tuple) else r for r in results]
    return [p.message for p in problems if isinstance(p, StateServiceError)]


def _text(path: Path | None) -> str | None:
    return None if path is None else str(path)
