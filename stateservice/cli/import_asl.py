"""`stateservice import-asl FILE.json`: an Amazon States Language document in, a chart file out (core/asl.py decides).

Reads the JSON, writes the chart YAML to stdout or `--output`; touches no Redis and no service.
Exit 0 written, 1 the document uses what a chart cannot say (each refusal on its own line as
`FILE: $.path: message`), 2 the file cannot be read, is not JSON, or the output cannot be written.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from stateservice.core import asl
from stateservice.errors import AslRefused

UNREADABLE = 2


def run(path: Path, name: str | None, output: Path | None) -> int:
    """Convert `path` into a chart named `name` (default: a statebox machine's name, else the file's stem)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_unique)
    except (OSError, UnicodeDecodeError) as exc:
        return _fail(path, f"cannot read the file: {_reason(exc)}")
    except ValueError as exc:  # JSONDecodeError says where: "Expecting ',' delimiter: line 3 column 5 (char 20)"
        return _fail(path, f"invalid JSON: {exc}")
    except RecursionError:
        return _fail(path, "invalid JSON: the document nests too deeply")
    chart_name = name or asl.default_name(document, path.stem)
    try:
        text = asl.convert(document, chart_name, source=path.name)
    except AslRefused as refused:
        for problem in refused.problems:
            print(f"{path}: {problem}", file=sys.stderr)
        return 1
    if output is None:
        sys.stdout.write(text)
        return 0
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        return _fail(output, f"cannot write the file: {_reason(exc)}")
    print(f"{output}: chart {chart_name!r} imported from {path}")
    return 0


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refusing a key given twice: json would keep the last silently, and a state would vanish."""
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise ValueError(f"the key {key!r} appears twice in one object")
        found[key] = value
    return found


def _reason(exc: Exception) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def _fail(path: Path, message: str) -> int:
    print(f"{path}: {message}", file=sys.stderr)
    return UNREADABLE
