"""Configuration files on disk (`--configuration FILE`) -> checked configurations: the I/O edge of
`core.parse_configuration`.

Every file is read and parsed before any is used, and one ChartError lists every problem of every
file (`file:line: message`), as for chart files. Two files may not define the same NAME:VERSION
differently: a configuration never changes once defined. `validate` reports file by file
(`check_configuration_files`); `serve` takes them all or none (`load_configurations`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from stateservice.core.machines import Configuration
from stateservice.core.parse_configuration import parse_configuration
from stateservice.errors import ChartError, Problem


@dataclass(frozen=True, slots=True)
class Checked:
    """One configuration file: its configuration when it has no problem, else its problems."""

    path: str
    configuration: Configuration | None = None
    problems: tuple[Problem, ...] = ()


def check_configuration_files(paths: Sequence[Path]) -> list[Checked]:
    """Read and parse each file, in order; a NAME:VERSION an earlier file defines differently is a problem."""
    results: list[Checked] = []
    found: dict[str, tuple[Configuration, Path]] = {}
    for path in paths:
        result = _check(path)
        configuration = result.configuration
        if configuration is not None:
            earlier = found.setdefault(configuration.ref, (configuration, path))
            if earlier[0] != configuration:
                message = f"configuration {configuration.ref} is also defined, differently, in {earlier[1]}"
                result = Checked(str(path), None, (Problem(str(path), 1, message),))
        results.append(result)
    return results


def load_configurations(paths: Sequence[Path]) -> tuple[Configuration, ...]:
    """The configurations of `paths`, in order, one per NAME:VERSION. Raises ChartError listing every problem."""
    results = check_configuration_files(paths)
    problems = [p for r in results for p in r.problems]
    if problems:
        raise ChartError(problems)
    unique: dict[str, Configuration] = {}
    for result in results:
        if result.configuration is not None:
            unique.setdefault(result.configuration.ref, result.configuration)
    return tuple(unique.values())


def _check(path: Path) -> Checked:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return Checked(str(path), None, (Problem(str(path), 0, f"cannot read the configuration file: {_reason(exc)}"),))
    try:
        return Checked(str(path), parse_configuration(text, str(path)))
    except ChartError as error:
        return Checked(str(path), None, error.problems)


def _reason(exc: Exception) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return "not UTF-8 text"
