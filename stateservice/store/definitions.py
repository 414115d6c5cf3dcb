"""Charts other services serve, read back from their stored definitions (`stateservice:{CHART}:definition`).

The leader advances them and any service resumes their approvals, so both need the chart a name
stands for without its file: the stored text, parsed again as at registration, once per digest.
"""

from __future__ import annotations

from datetime import tzinfo

import structlog

from stateservice.core.chart import Chart
from stateservice.store import codec, keys
from stateservice.store.charts import ChartStore

log = structlog.get_logger(__name__)


class StoredCharts:
    def __init__(self, store: ChartStore, zone: tzinfo) -> None:
        self.store = store
        self.zone = zone  # naive clock times are read in the server's zone, as at registration
        self._parsed: dict[str, Chart] = {}  # by digest: a definition never changes under one

    async def get(self, name: str) -> Chart | None:
        """The chart registered as `name`, as its stored definition says; None if none is stored or it is unreadable."""
        definition = await self.store.definition(name)
        digest = definition.get(keys.DEFINITION_DIGEST, "")
        if definition.get(keys.DEFINITION_SOURCE) is None:
            return None
        if digest not in self._parsed:
            result = codec.parse_definition(name, definition, self.zone)
            if result.chart is None:
                log.warning("stored_chart_unreadable", chart=name, problems=[str(p) for p in result.errors])
                return None
            self._parsed[digest] = result.chart
        return self._parsed[digest]
