"""Charts other services serve, read back from their stored definitions (`stateservice:{CHART}:definition`).

The leader advances them, and any service lists and resumes their approvals, so each needs the
chart a name stands for without its file: the stored text, parsed again as at registration,
once per name and digest.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import tzinfo

import structlog

from stateservice.core.chart import Chart
from stateservice.store import bulk, codec, keys
from stateservice.store.charts import ChartStore
from stateservice.store.redis.cluster import ClusterRedis

log = structlog.get_logger(__name__)


class StoredCharts:
    def __init__(self, store: ChartStore, zone: tzinfo) -> None:
        self.store = store
        self.zone = zone  # naive clock times are read in the server's zone, as at registration
        # by name and digest: a definition never changes under one (two names may store the same text)
        self._parsed: dict[tuple[str, str], Chart] = {}

    async def get(self, name: str) -> Chart | None:
        """The chart registered as `name`, as its stored definition says; None if none is stored or it is unreadable."""
        found = self._read(name, await self.store.definition(name))
        return found if isinstance(found, Chart) else None

    async def get_many(self, names: Sequence[str]) -> list[Chart | str | None]:
        """`get` of each of `names`, with why a stored definition cannot be read instead of None: one round trip
        for the digests, and a definition's text read only for a digest not parsed yet."""
        if isinstance(self.store.redis, ClusterRedis):  # its scripts stay within one slot: one chart at a time
            return [self._read(name, await self.store.definition(name)) for name in names]
        hashes = [keys.chart_definition(name) for name in names]
        digests = await bulk.read_fields(self.store.redis, hashes, (keys.DEFINITION_DIGEST,))
        found: list[Chart | str | None] = []
        for name, (digest,) in zip(names, digests, strict=True):
            known = self._parsed.get((name, digest or ""))
            found.append(known or self._read(name, await self.store.definition(name)))
        return found

    def _read(self, name: str, definition: dict[str, str]) -> Chart | str | None:
        """The chart `definition` stores; None without a stored text; the problems for text that does not parse."""
        digest = definition.get(keys.DEFINITION_DIGEST, "")
        if definition.get(keys.DEFINITION_SOURCE) is None:
            return None
        if (name, digest) not in self._parsed:
            result = codec.parse_definition(name, definition, self.zone)
            if result.chart is None:
                problems = [str(p) for p in result.errors]
                log.warning("stored_chart_unreadable", chart=name, problems=problems)
                return "; ".join(problems) or "its stored definition does not parse"
            self._parsed[name, digest] = result.chart
        return self._parsed[name, digest]
