"""Configuration files on disk (`--configuration FILE`) -> checked configurations: the I/O edge of
`core.parse_configuration`.

Every file is read and parsed before any is used, and one ChartError lists every problem of every
file (`file:line: message`), as for chart files. Two files may not define the same NAME:VERSION
differently: a configuration never changes once defined.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from stateservice.core.machines import Configuration
from stateservice.core.parse_configuration import parse_configuration
from stateservice.errors import ChartError, Problem


def load_configurations(paths: Sequence[Path]) -> tuple[Configuration, ...]:
    """The configurations of `paths`, in order, one per NAME:VERSION. Raises ChartError listing every problem."""
    problems: list[Problem] = []
    found: dict[str, tuple[Configuration, Path]] = {}
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(str(path), 0, f"cannot read the configuration file: {_reason(exc)}"))
            continue
        try:
            configuration = parse_configuration(text, str(path))
        except ChartError as error:
            problems.extend(error.problems)
            continue
        earlier = found.get(configuration.ref)
        if earlier is not None and earlier[0] != configuration:
            problems.append(
                Problem(
                    str(path), 1, f"configuration {configuration.ref} is also defined, differently, in {earlier[1]}"
                )
            )
        found.setdefault(configuration.ref, (configuration, path))
    if problems:
        raise ChartError(problems)
    return tuple(c for c, _ in found.values())


def _reason(exc: Exception) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return "not UTF-8 text"
