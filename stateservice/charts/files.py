"""Chart files on disk -> checked charts: the I/O edge of `core.parse`.

Finds the files (`--chart FILE`s, then every `*.yaml` of `--charts DIR` by name), reads every
file, parses them all, and either returns the charts or raises one ChartError listing every
problem of every file, so an operator fixes them in one pass. A `Parses` remembers each file's
last parse by its text, so that a reload of 10,000 files parses only those whose text changed
(every file is still read and compared: no trust in modification times). Given `processes`
(start-up only: it forks, which a process with threads must not), thousands of files are
parsed on several cores.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import tzinfo
from pathlib import Path

import structlog

from stateservice.core.chart import Chart
from stateservice.core.parse import Parsed, check_names, parse
from stateservice.errors import ChartError, Problem

log = structlog.get_logger(__name__)

SPREAD_FROM = 2000  # files to parse before they are spread over processes: fewer are not worth a fork
OWN_SHARE = 1.1  # this process parses 1.1 times a child's share: a child's parses cost a pickling more


def cores() -> int:
    """How many cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


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

    def parse_all(self, texts: dict[str, str], zone: tzinfo, processes: int = 1) -> list[Parsed]:
        """`core.parse.parse_all`, parsing again only the files whose text differs from their last parse."""
        last, self._last = self._last, {}  # a file gone since is forgotten
        todo = [(path, text) for path, text in texts.items() if last.get((path, zone), ("",))[0] != text]
        fresh = dict(zip((path for path, _ in todo), spread(todo, zone, processes), strict=True))
        results = []
        for path, text in texts.items():
            result = fresh[path] if path in fresh else last[(path, zone)][1]
            self._last[(path, zone)] = (text, result)
            results.append(result)
        return check_names(results)


def spread(items: Sequence[tuple[str, str]], zone: tzinfo, processes: int) -> list[Parsed]:
    """`parse` each (path, text), on up to `processes` cores when there are many: forked children take parts.

    A child that fails (cannot fork, dies) leaves its part to this process: the outcome is the same.
    """
    if processes < 2 or len(items) < SPREAD_FROM:
        return _parse_part(items, zone)
    own = min(len(items), round(len(items) * OWN_SHARE / processes))
    size = -(-(len(items) - own) // (processes - 1))  # ceiling: the children split the rest
    parts = [items[start : start + size] for start in range(own, len(items), size)]
    try:
        with ProcessPoolExecutor(len(parts), mp_context=multiprocessing.get_context("fork")) as pool:
            futures = [pool.submit(_parse_part, part, zone) for part in parts]
            results = _parse_part(items[:own], zone)
            for part, future in zip(parts, futures, strict=True):
                results += _outcome(future, part, zone)
    except OSError as exc:  # no pool at all: parse everything here
        log.warning("chart_parse_processes_failed", error=str(exc))
        return _parse_part(items, zone)
    return results


def _outcome(future: Future[list[Parsed]], part: Sequence[tuple[str, str]], zone: tzinfo) -> list[Parsed]:
    try:
        return future.result()
    except (BrokenProcessPool, OSError) as exc:
        log.warning("chart_parse_processes_failed", error=str(exc) or type(exc).__name__)
        return _parse_part(part, zone)


def _parse_part(items: Sequence[tuple[str, str]], zone: tzinfo) -> list[Parsed]:
    return [parse(text, path, zone=zone) for path, text in items]


def check_files(paths: Sequence[Path], zone: tzinfo, parses: Parses | None = None, processes: int = 1) -> list[Parsed]:
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
    return unreadable + (parses or Parses()).parse_all(texts, zone, processes)


def load_charts(
    paths: Sequence[Path],
    zone: tzinfo,
    directory: Path | None = None,
    parses: Parses | None = None,
    processes: int = 1,
) -> list[Chart]:
    """The charts of `paths` and `directory` (none for none); warnings are logged. Raises ChartError: every error.

    With `parses`, a file whose text it last parsed is not parsed again (and this parse is kept there).
    `processes` above 1 parses many files on that many cores, forking: only where no thread runs yet.
    """
    results = check_files(chart_paths(paths, directory), zone, parses, processes)
    errors = [problem for result in results for problem in result.errors]
    if errors:
        raise ChartError(errors)
    for result in results:
        for warning in result.warnings:
            log.warning("chart_warning", problem=str(warning))
    return [result.unwrap() for result in results]
