"""An ASL `Choice` state's rules -> an approval's `choices`, refusing every rule a `when` cannot say.

Pure, like `asl.py`, which calls it. A `when` is a set of fields each equal to a value, so a
rule imports when it is `StringEquals`, `NumericEquals` or `BooleanEquals` on a top-level
field (`$.approved`), or an `And` of such comparisons on distinct fields. Everything else
(`Or`, `Not`, orderings, `...Path` comparisons, nested paths) has no `when` to become.
Next states stay ASL names here: `asl.py` renames them when it writes the chart.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable

from stateservice.core.approvals import Choice, Scalar, shadowed

Report = Callable[[str, str], None]  # (JSON path, message)

ONLY = "only StringEquals, NumericEquals or BooleanEquals on a top-level field ($.field), alone or under And"
_FIELD = re.compile(r"\$\.([A-Za-z0-9_-]+)")
_KINDS = {"StringEquals": "a string", "NumericEquals": "a number", "BooleanEquals": "true or false"}
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def at(path: str, key: str | int) -> str:
    """The JSON path of `key` inside `path`: `$.States.A`, `$.States['Wait here']`, `$.Choices[0]`."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    if _PLAIN.fullmatch(key):
        return f"{path}.{key}"
    quoted = key.replace("\\", "\\\\").replace("'", "\\'")
    return f"{path}['{quoted}']"


def rules(value: object, path: str, report: Report) -> list[Choice] | None:
    """The choices of a Choice state's `Choices` at `path`, in order; None when any rule is refused (reported)."""
    if not isinstance(value, list) or not value:
        report(path, "must be a non-empty list of rules")
        return None
    read = [rule(item, at(path, i), report) for i, item in enumerate(value)]
    found = [c for c in read if c is not None]
    if len(found) != len(read):
        return None
    for i, j in shadowed(found):
        report(at(path, i), f"can never match: Choices[{j}] matches every input it does")
    return None if shadowed(found) else found


def rule(body: object, path: str, report: Report) -> Choice | None:
    """One top-level rule: its comparisons (a single one, or an And's) and its Next."""
    if not isinstance(body, dict):
        report(path, "a rule must be a JSON object")
        return None
    if "And" in body:
        extra = [key for key in body if key not in ("And", "Next", "Comment")]
        for key in extra:
            report(at(path, key), f"{key} is not supported next to And: {ONLY}")
        when = _all_of(body["And"], at(path, "And"), report)
        when = None if extra else when
    else:
        single = comparison(body, path, report, top=True)
        when = [single] if single is not None else None
    target = body.get("Next")
    if not isinstance(target, str):
        report(at(path, "Next") if "Next" in body else path, "a rule needs a Next: the name of a state")
        return None
    return Choice(tuple(when), target) if when is not None else None


def _all_of(members: object, path: str, report: Report) -> list[tuple[str, Scalar]] | None:
    if not isinstance(members, list) or not members:
        report(path, "must be a non-empty list of comparisons")
        return None
    when: list[tuple[str, Scalar]] = []
    broken = False
    for i, member in enumerate(members):
        if not isinstance(member, dict):
            report(at(path, i), "a comparison must be a JSON object")
            broken = True
            continue
        found = comparison(member, at(path, i), report, top=False)
        if found is not None and any(field == found[0] for field, _ in when):
            report(at(at(path, i), "Variable"), f"'$.{found[0]}' is compared twice in this rule")
            found = None
        if found is None:
            broken = True
        else:
            when.append(found)
    return None if broken else when


def comparison(body: dict[str, object], path: str, report: Report, top: bool) -> tuple[str, Scalar] | None:
    """`{Variable: $.field, StringEquals|NumericEquals|BooleanEquals: value}` -> (field, value)."""
    refused = _refuse_others(body, path, report, top)
    ops = [key for key in body if key in _KINDS]
    if not ops:
        if not refused:
            report(path, f"a rule needs a comparison: {ONLY}")
        return None
    if len(ops) > 1:
        report(path, f"has {len(ops)} comparisons ({', '.join(ops)}); put them under And, one field each")
        return None
    field = _field(body, path, report)
    value = _value(ops[0], body[ops[0]], at(path, ops[0]), report)
    if refused or field is None or isinstance(value, _Refused):
        return None
    return field, value


def _refuse_others(body: dict[str, object], path: str, report: Report, top: bool) -> bool:
    refused = False
    for key in body:
        if key in _KINDS or key in ("Variable", "Comment") or (top and key == "Next"):
            continue
        refused = True
        if key == "Next":
            report(at(path, key), "Next belongs to the rule, not to a comparison inside And")
        elif key == "And":
            report(at(path, key), "And inside And is not supported: list every comparison in one And")
        else:
            report(at(path, key), f"{key} is not supported: {ONLY}")
    return refused


def _field(body: dict[str, object], path: str, report: Report) -> str | None:
    if "Variable" not in body:
        report(path, "missing Variable: the field to compare, such as $.approved")
        return None
    variable = body["Variable"]
    match = _FIELD.fullmatch(variable) if isinstance(variable, str) else None
    if match is None:
        shown = repr(variable) if isinstance(variable, str) else _json(variable)
        report(at(path, "Variable"), f"{shown} is not supported: only a top-level field such as $.approved")
        return None
    return match.group(1)


class _Refused:
    pass


def _value(op: str, value: object, path: str, report: Report) -> Scalar | _Refused:
    if op == "StringEquals":
        ok = isinstance(value, str)
    elif op == "BooleanEquals":
        ok = isinstance(value, bool)
    else:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok:
        report(path, f"must be {_KINDS[op]}, not {_json(value)}")
        return _Refused()
    assert isinstance(value, str | int | float)
    return value


def _json(value: object) -> str:
    """A value as the document wrote it (JSON), for messages: `"5"`, `5`, `true`, `null`."""
    try:
        return json.dumps(value, allow_nan=True)
    except (TypeError, ValueError):
        return repr(value)
