"""Chart files on disk -> checked charts: the I/O edge of `core.parse`.

Reads every file, parses them all, and either returns the charts or raises one ChartError
listing every problem of every file, so an operator fixes them in one pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import tzinfo
from pathlib import Path

import structlog

from stateservice.core.chart import Chart
from stateservice.core.parse import Parsed, parse_all
from stateservice.errors import ChartError, Problem

log = structlog.get_logger(__name__)


def check_files(paths: Sequence[Path], zone: tzinfo) -> list[Parsed]:
    """Parse each file (naive times in `zone`); an unreadable file is a problem at line 1 of that file."""
    texts: dict[str, str] = {}
    unreadable: list[Parsed] = []
    for path in paths:
        try:
            texts[str(path)] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            unreadable.append(Parsed(str(path), problems=[Problem(str(path), 1, f"cannot read the file: {reason}")]))
    return unreadable + parse_all(texts, zone)


def load_charts(paths: Sequence[Path], zone: tzinfo) -> list[Chart]:
    """The charts in `paths` (none for none); warnings are logged. Raises ChartError with every error."""
    results = check_files(paths, zone)
    errors = [problem for result in results for problem in result.errors]
    if errors:
        raise ChartError(errors)
    for result in results:
        for warning in result.warnings:
            log.warning("chart_warning", problem=str(warning))
    return [result.unwrap() for result in results]
