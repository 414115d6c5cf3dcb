"""Chart files on disk -> checked charts: the I/O edge of `core.parse`.

Finds the files (`--chart FILE`s, then every `*.yaml` of `--charts DIR` by name), reads every
file, parses them all, and either returns the charts or raises one ChartError listing every
problem of every file, so an operator fixes them in one pass.
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


def chart_paths(files: Sequence[Path], directory: Path | None) -> list[Path]:
    """`files`, then every *.yaml file of `directory` sorted by name. Raises ChartError: directory missing or empty.

    Not its subdirectories, and not hidden files (an editor's or a Kubernetes volume's `..data`).
    """
    if directory is None:
        return list(files)
    try:
        found = sorted(
            entry
            for entry in directory.iterdir()
            if entry.suffix == ".yaml" and not entry.name.startswith(".") and entry.is_file()
        )
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ChartError([Problem(str(directory), 0, f"cannot read the chart directory: {reason}")]) from None
    if not found:
        raise ChartError([Problem(str(directory), 0, "no chart files (*.yaml) in the chart directory")])
    return [*files, *found]


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


def load_charts(paths: Sequence[Path], zone: tzinfo, directory: Path | None = None) -> list[Chart]:
    """The charts of `paths` and `directory` (none for none); warnings are logged. Raises ChartError: every error."""
    results = check_files(chart_paths(paths, directory), zone)
    errors = [problem for result in results for problem in result.errors]
    if errors:
        raise ChartError(errors)
    for result in results:
        for warning in result.warnings:
            log.warning("chart_warning", problem=str(warning))
    return [result.unwrap() for result in results]
