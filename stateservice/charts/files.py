"""Chart files on disk -> checked charts: the I/O edge of `core.parse`.

Finds the files (`--chart FILE`s, then every `*.yaml` of `--charts DIR` by name), reads every
file, parses them all, and either returns the charts or raises one ChartError listing every
problem of every file, so an operator fixes them in one pass. A `Parses` remembers each file's
last parse by its text, so that a reload of 10,000 files parses only those whose text changed
(every file is still read and compared: no trust in modification times).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import tzinfo
from pathlib import Path

import structlog

from stateservice.core.chart import Chart
from stateservice.core.parse import Parsed, check_names, parse
from stateservice.errors import ChartError, Problem

log = structlog.get_logger(__name__)


def chart_paths(files: Sequence[Path], directory: Path | None) -> list[Path]:
    """`files`, then every *.yaml file of `directory` sorted by name. Raises ChartError: directory missing or empty.

    Not its subdirectories, and not hidden files (an editor's or a Kubernetes volume's `..data`).
    """
    if directory is None:
        return list(files)
    try:
        with os.scandir(directory) as entries:  # file types from the listing: no stat per file
            found = sorted(
                directory / entry.name
                for entry in entries
                if entry.name.endswith(".yaml") and not entry.name.startswith(".") and entry.is_file()
            )
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ChartError([Problem(str(directory), 0, f"cannot read the chart directory: {reason}")]) from None
    if not found:
        raise ChartError([Problem(str(directory), 0, "no chart files (*.yaml) in the chart directory")])
    return [*files, *found]


class Parses:
    """The last parse of each chart file, kept with the text it parsed: what `check_files` may reuse."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, tzinfo], tuple[str, Parsed]] = {}

    def parse_all(self, texts: dict[str, str], zone: tzinfo) -> list[Parsed]:
        """`core.parse.parse_all`, parsing again only the files whose text differs from their last parse."""
        last, self._last = self._last, {}  # a file gone since is forgotten
        results = []
        for path, text in texts.items():
            known = last.get((path, zone))
            result = known[1] if known is not None and known[0] == text else parse(text, path, zone=zone)
            self._last[(path, zone)] = (text, result)
            results.append(result)
        return check_names(results)


def check_files(paths: Sequence[Path], zone: tzinfo, parses: Parses | None = None) -> list[Parsed]:
    """Parse each file (naive times in `zone`); an unreadable file is a problem at line 1 of that file."""
    texts: dict[str, str] = {}
    unreadable: list[Parsed] = []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as handle:
                texts[str(path)] = handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            unreadable.append(Parsed(str(path), problems=[Problem(str(path), 1, f"cannot read the file: {reason}")]))
    return unreadable + (parses or Parses()).parse_all(texts, zone)


def load_charts(
    paths: Sequence[Path], zone: tzinfo, directory: Path | None = None, parses: Parses | None = None
) -> list[Chart]:
    """The charts of `paths` and `directory` (none for none); warnings are logged. Raises ChartError: every error.

    With `parses`, a file whose text it last parsed is not parsed again (and this parse is kept there).
    """
    results = check_files(chart_paths(paths, directory), zone, parses)
    errors = [problem for result in results for problem in result.errors]
    if errors:
        raise ChartError(errors)
    for result in results:
        for warning in result.warnings:
            log.warning("chart_warning", problem=str(warning))
    return [result.unwrap() for result in results]
