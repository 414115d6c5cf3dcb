"""Implicit charts over HTTP: `POST /state` (a model predicts each row's state) and `GET /models`.

The body is read as JSON whatever its Content-Type says (the original README's `curl -d` sends
a form type), checked here (400 naming what is wrong), and handed to `models.ModelCache`, which
predicts in its prediction processes (or, with `--predict-processes 0`, on its threads). Bodies
over PARSE_INLINE bytes are parsed on its threads, so a large body never stalls gate traffic.
The answer is `{"state": [...]}`, or one state per line when the client prefers `text/plain`
in `Accept`.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from stateservice.errors import BadRequest, BodyTooLarge, InvalidField, InvalidJSON, MissingField, ModelUnavailable
from stateservice.models.cache import Entry
from stateservice.store import codec
from stateservice.telemetry import logs
from stateservice.web.appkeys import BODY_LIMIT, MODELS

PARSE_INLINE = 16 * 1024
EXAMPLE = '{"name": "colors", "values": [[500, 0]]}'
LARGEST = 1.7976931348623157e308  # a row holds numbers a float can hold


@dataclass(frozen=True, slots=True)
class Ask:
    name: str
    rows: list[list[float]]


async def post_state(request: web.Request) -> web.Response:
    """POST /state `{"name", "values"}`: 200 `{"state": [...]}` (or text lines), 400/404/413/422/500 as JSON."""
    cache = request.app[MODELS]
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BodyTooLarge(request.app[BODY_LIMIT]) from None
    ask = parse_body(body) if len(body) <= PARSE_INLINE else await cache.run(parse_body, body)
    logs.bind(model=ask.name, rows=len(ask.rows))
    states = await cache.predict(ask.name, ask.rows)
    if prefers_text(request.headers.get("Accept", "")):
        return web.Response(text="".join(state + "\n" for state in states), content_type="text/plain")
    return web.json_response({"state": states})


async def list_models(request: web.Request) -> web.Response:
    """GET /models: every served model as this worker holds it, each loaded (or reloaded) first if needed."""
    cache = request.app[MODELS]
    body = []
    for name in sorted(cache.entries):
        entry = cache.entries[name]
        with contextlib.suppress(ModelUnavailable):  # shown with its `error`
            await cache.refresh(entry)
        body.append(describe(entry))
    return web.json_response({"models": body})


def describe(entry: Entry) -> dict[str, Any]:
    """One model in `GET /models` (documented in docs/models.md)."""
    spec, current = entry.spec, entry.current
    return {
        "name": spec.name,
        "team": spec.team,
        "model": spec.model,
        "format": spec.format.value,
        "states": list(spec.states),
        "digest": current.digest if current else None,
        "loaded_at": codec.timestamp(current.loaded_at) if current else None,
        "n_features": current.n_features if current else None,
        "error": entry.error,
    }


def parse_body(body: bytes) -> Ask:
    """The model name and rows in a POST /state body. Raises a BadRequest naming what is wrong."""
    if not body.strip():
        raise InvalidJSON(f"the body is empty; send JSON such as {EXAMPLE}")
    try:
        data = json.loads(body, parse_constant=_not_json)
    except json.JSONDecodeError as exc:
        hint = (
            "; `//` comments (as in the original README's example) are not JSON: remove them" if b"//" in body else ""
        )
        raise InvalidJSON(
            f"the body is not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}{hint}",
            line=exc.lineno,
            column=exc.colno,
        ) from None
    except UnicodeDecodeError:
        raise InvalidJSON("the body is not JSON: it is not UTF-8 text") from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer of thousands of digits, or [[[[... nested
        raise InvalidJSON(f"the body is not usable JSON: {str(exc)[:200] or type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise BadRequest(f"the body must be a JSON object such as {EXAMPLE}, not {_kind(data)}")
    if "name" not in data:
        raise MissingField("name", EXAMPLE)
    name = data["name"]
    if not isinstance(name, str) or not name:
        raise InvalidField("name", f"name must be a model name (a non-empty string), not {_kind(name)}")
    if "values" not in data:
        raise MissingField("values", EXAMPLE)
    return Ask(name, _rows(data["values"]))


def _rows(values: Any) -> list[list[float]]:
    if not isinstance(values, list):
        raise InvalidField("values", f"values must be a list of rows of numbers, e.g. [[500, 0]], not {_kind(values)}")
    if not values:
        raise InvalidField("values", "values is empty; send at least one row of numbers, e.g. [[500, 0]]")
    width = -1
    for i, row in enumerate(values):
        if not isinstance(row, list):
            raise InvalidField("values", f"values[{i}] is {_kind(row)}, not a row (a list of numbers such as [500, 0])")
        if not row:
            raise InvalidField("values", f"values[{i}] is an empty row")
        for j, number in enumerate(row):
            if isinstance(number, bool) or not isinstance(number, int | float):
                raise InvalidField("values", f"values[{i}][{j}] is {_kind(number)}, not a number")
            if not (math.isfinite(number) if isinstance(number, float) else abs(number) <= LARGEST):
                raise InvalidField("values", f"values[{i}][{j}] is too large for a number of a model's input")
        if width < 0:
            width = len(row)
        elif len(row) != width:
            raise InvalidField(
                "values",
                f"values[{i}] has {len(row)} numbers but values[0] has {width}; every row must have the same length",
            )
    return values


def prefers_text(accept: str) -> bool:
    """Whether `Accept` ranks text/plain above application/json (a tie, `*/*` or nothing: JSON)."""
    return _quality(accept, "text", "plain") > _quality(accept, "application", "json")


def _quality(accept: str, kind: str, subtype: str) -> float:
    """The q of the most specific media range in `accept` matching kind/subtype (0 if none does)."""
    best, quality = -1, 0.0
    for part in accept.split(","):
        media, *params = part.split(";")
        major, _, minor = media.strip().lower().partition("/")
        specificity = {(kind, subtype): 2, (kind, "*"): 1, ("*", "*"): 0}.get((major, minor.strip()), -1)
        if specificity <= best:
            continue
        best, quality = specificity, 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    quality = 0.0
    return quality


def _not_json(constant: str) -> None:
    raise InvalidJSON(f"the body is not JSON: {constant} is not a JSON number")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({'true' if value else 'false'})"
    if isinstance(value, str):
        return f"a string ({value[:40]!r})"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return f"the number {value!r}"
