"""Amazon States Language document -> chart YAML text (`stateservice import-asl`), or every reason it cannot be.

Pure: takes the decoded JSON and returns text; reading and writing files is the CLI's. What
imports (see docs/asl.md): `StartAt`; `Pass` (a one-second time state, or a final state when it
ends); `Wait` with `Seconds` (elapsed) or `Timestamp` (clock); `Succeed` and `Fail` (final
states); `Task` with `Resource: "module:suspend"` (an approval state, the statebox way of
waiting for a person), whose `Choice` successor becomes its choices and whose `TimeoutSeconds`
with a `States.Timeout` catch becomes its timeout. Anything else is refused, each construct
with its JSON path, all of them at once. A statebox file (`{"statemachine": {NAME: machine}}`)
is read as its one machine. Choice rules are read by `asl_choice.py`, what spans states is
checked by `asl_graph.py`, and `asl_render.py` writes the YAML.
"""

from __future__ import annotations

import json
import re
from datetime import UTC
from typing import Any

from stateservice.core import asl_choice, asl_graph, timing
from stateservice.core.approvals import Choice
from stateservice.core.asl_choice import at
from stateservice.core.asl_graph import Ref
from stateservice.core.asl_render import Out, quote, render
from stateservice.core.chart import CHART_NAME, STATE_NAME
from stateservice.errors import AslProblem, AslRefused

SUSPEND = "module:suspend"
PASS_AFTER = "1s"  # a Pass state passes at once in ASL; a time state needs a positive wait, and one second is the least
_TIMEOUT_ERRORS = ("States.Timeout", "States.ALL")
_DATA = ("InputPath", "OutputPath", "ResultPath", "Parameters", "ResultSelector", "Result", "Arguments", "Output")
_DATA_WHY = "stateservice moves between states, it does not transform data"
_BAD_NAME = re.compile(r"[^A-Za-z0-9._-]")
_TOP = ("StartAt", "States", "Comment", "Version", "QueryLanguage")
_TYPES = 'Pass, Wait, Choice, Succeed, Fail and Task with Resource "module:suspend"'


def convert(document: object, name: str, source: str = "an ASL document") -> str:
    """The chart YAML of ASL `document` (decoded JSON), named `name`. Raises AslRefused listing every refusal."""
    importer = _Importer()
    text = importer.run(document, name, source)
    if importer.problems:
        raise AslRefused(importer.problems)
    return text


def default_name(document: object, stem: str) -> str:
    """The chart name when none is asked for: a statebox file's machine name, else `stem`, made a valid name."""
    machine = document.get("statemachine") if isinstance(document, dict) and "States" not in document else None
    if isinstance(machine, dict) and len(machine) == 1:
        stem = next(iter(machine))
    return rename(stem)[:64]


def rename(name: str) -> str:
    """`name` as a chart name: each character outside letters, digits, '.', '_', '-' becomes '_'; a name not
    starting with a letter or digit gets an 's' in front; at most 128 characters."""
    text = _BAD_NAME.sub("_", name)
    if not text or not text[0].isascii() or not text[0].isalnum():
        text = "s" + text
    return text[:128]


class _Importer:
    def __init__(self) -> None:
        self.problems: list[AslProblem] = []
        self.types: dict[str, object] = {}  # every state's Type, valid or not
        self.outs: list[Out] = []
        self.choices: dict[str, tuple[list[Choice], str | None]] = {}  # Choice state -> (rules, Default)
        self.refs: list[Ref] = []
        self.names: dict[str, str] = {}  # ASL name -> chart name
        self.paths: dict[str, str] = {}  # ASL name -> its JSON path

    def error(self, path: str | None, message: str) -> None:
        self.problems.append(AslProblem(path, message))

    def run(self, document: object, name: str, source: str) -> str:
        if not CHART_NAME.fullmatch(name):
            self.error(
                None,
                f"the chart name {name!r} is not valid: use letters, digits, '.', '_', '-' "
                "(at most 64, starting with a letter or digit)",
            )
        machine, base = self.machine(document)
        if machine is None:
            return ""
        states = self.top(machine, base)
        if states is None:
            return ""
        self.rename_all(states, at(base, "States"))
        for state_name, body in states.items():
            self.state(state_name, body, at(at(base, "States"), state_name))
        self.problems += asl_graph.references(self.refs, self.types)
        self.problems += asl_graph.choices_led(self.refs, self.types, self.paths)
        self.problems += asl_graph.endless(self.outs, self.choices)
        if self.problems:
            return ""
        return render(machine, name, source, self.outs, self.names, self.choices)

    # -- the document ----------------------------------------------------------------------

    def machine(self, document: object) -> tuple[dict[str, Any] | None, str]:
        """The state machine and its path: the document, or the one machine of a statebox file."""
        if not isinstance(document, dict):
            self.error("$", "an ASL document is a JSON object with StartAt and States")
            return None, "$"
        wrapped = document.get("statemachine")
        if "States" in document or "StartAt" in document or not isinstance(wrapped, dict):
            return document, "$"
        if len(wrapped) != 1:
            held = f"{len(wrapped)} state machines ({', '.join(map(repr, wrapped))})" if wrapped else "no state machine"
            self.error("$.statemachine", f"holds {held}; a chart is one: keep one machine in the file")
            return None, "$"
        ((key, machine),) = wrapped.items()
        if not isinstance(machine, dict):
            self.error(at("$.statemachine", key), "a state machine must be a JSON object")
            return None, "$"
        return machine, at("$.statemachine", key)

    def top(self, machine: dict[str, Any], base: str) -> dict[str, Any] | None:
        """The `States` object, with StartAt and the top-level fields checked; None when there are no states."""
        for key, value in machine.items():
            if key == "QueryLanguage" and value != "JSONPath":
                self.error(at(base, key), f"{value!r} is not supported: only JSONPath (the default)")
            elif key == "TimeoutSeconds":
                self.error(at(base, key), "TimeoutSeconds is not supported: a chart has no overall deadline")
            elif key not in _TOP:
                self.error(at(base, key), f"{key} is not supported at the top of a state machine")
        states = machine.get("States")
        if not isinstance(states, dict) or not states:
            self.error(at(base, "States") if "States" in machine else base, "States must be a non-empty object")
            states = None
        start = machine.get("StartAt")
        if not isinstance(start, str):
            self.error(at(base, "StartAt") if "StartAt" in machine else base, "StartAt must name the first state")
        elif states is not None:
            self.refs.append(Ref(at(base, "StartAt"), start, by_suspend=False))
        return states

    def rename_all(self, states: dict[str, Any], path: str) -> None:
        taken: dict[str, str] = {}  # chart name -> the ASL name that has it
        for asl_name in states:
            chart_name = asl_name if STATE_NAME.fullmatch(asl_name) else rename(asl_name)
            self.names[asl_name] = chart_name
            if chart_name in taken:
                self.error(
                    at(path, asl_name),
                    f"the chart state name {chart_name!r} (letters, digits, '.', '_', '-') is also "
                    f"{taken[chart_name]!r}'s; rename one of them",
                )
            taken.setdefault(chart_name, asl_name)

    # -- the states ------------------------------------------------------------------------

    def state(self, name: str, body: object, path: str) -> None:
        self.paths[name] = path
        self.types[name] = body.get("Type") if isinstance(body, dict) else None  # a malformed state is still one
        if not isinstance(body, dict):
            self.error(path, "a state must be a JSON object")
            return
        kind = body.get("Type")
        readers = {"Pass": self.pass_, "Wait": self.wait, "Choice": self.choice, "Succeed": self.end, "Fail": self.end}
        if kind == "Task" and body.get("Resource") == SUSPEND:
            self.suspend(name, body, path)
        elif kind == "Task":
            resource = f"Resource {body['Resource']!r}" if "Resource" in body else "no Resource"
            self.error(
                at(path, "Type"),
                f'Task with {resource} is not supported: only Task with Resource "module:suspend" '
                "(an approval) imports",
            )
        elif isinstance(kind, str) and kind in readers:
            readers[kind](name, body, path)
        elif "Type" not in body:
            self.error(path, f"missing Type (one of {_TYPES})")
        else:
            self.error(at(path, "Type"), f"{kind!r} is not supported: only {_TYPES} import")

    def fields(self, body: dict[str, Any], path: str, kind: str, allowed: tuple[str, ...]) -> None:
        """Refuse every field a `kind` state has beyond `allowed`, saying why for the known ones."""
        why = {
            "Retry": "a suspend Task has nothing to retry: it waits for a resume or times out",
            "HeartbeatSeconds": "nothing sends heartbeats to an approval; use TimeoutSeconds",
            "Catch": "only a suspend Task's timeout can be caught",
        }
        for key in body:
            if key in allowed:
                continue
            if key in _DATA or key == "Assign":
                reason = _DATA_WHY
            elif key.endswith("Path"):
                reason = f"a chart's values are written in it, not read from the input (use {key[:-4]})"
            else:
                reason = why.get(key, f"not a field of a {kind} that imports")
            self.error(at(path, key), f"{key} is not supported: {reason}")

    def successor(self, body: dict[str, Any], path: str, by_suspend: bool = False) -> str | None:
        """The state's Next (recorded as a reference), or None for `"End": true` or a problem (reported)."""
        has_next, ends = "Next" in body, body.get("End") is True
        if has_next == ends:
            self.error(path, 'needs either Next (a state name) or "End": true' if not ends else "has both Next and End")
            return None
        if ends:
            return None
        target = body["Next"]
        if not isinstance(target, str):
            self.error(at(path, "Next"), "must be the name of a state")
            return None
        self.refs.append(Ref(at(path, "Next"), target, by_suspend))
        return target

    def note(self, body: dict[str, Any]) -> list[str]:
        return [f"Comment: {quote(body['Comment'])}"] if "Comment" in body else []

    def pass_(self, name: str, body: dict[str, Any], path: str) -> None:
        self.fields(body, path, "Pass state", ("Type", "Next", "End", "Comment"))
        target = self.successor(body, path)
        out = Out(name, path, notes=self.note(body))
        if target is not None:
            out.func, out.next, out.key, out.value = "time", target, "elapsed", PASS_AFTER
        self.outs.append(out)

    def end(self, name: str, body: dict[str, Any], path: str) -> None:
        kind = body["Type"]
        self.fields(
            body,
            path,
            f"{kind} state",
            ("Type", "Comment", "Error", "Cause") if kind == "Fail" else ("Type", "Comment"),
        )
        notes = self.note(body)
        said = [f"{k} {quote(body[k])}" for k in ("Error", "Cause") if k in body]
        notes += [f"{kind}: " + ", ".join(said)] if said else []
        self.outs.append(Out(name, path, notes=notes))

    def wait(self, name: str, body: dict[str, Any], path: str) -> None:
        self.fields(body, path, "Wait state", ("Type", "Next", "End", "Comment", "Seconds", "Timestamp"))
        if body.get("End") is True and "Next" not in body:
            self.error(
                at(path, "End"), "a Wait that ends the machine is not supported: give it a Next (a Succeed state)"
            )
            return
        target = self.successor(body, path)
        given = [k for k in ("Seconds", "Timestamp") if k in body]
        if not given and any(k in body for k in ("SecondsPath", "TimestampPath")):
            return  # refused above, with what to use instead
        if len(given) != 1:
            self.error(
                path, "a Wait state needs Seconds or Timestamp" if not given else "has both Seconds and Timestamp"
            )
            return
        if given == ["Seconds"]:
            seconds = self.seconds(body["Seconds"], at(path, "Seconds"))
            key, value = "elapsed", f"{seconds}s" if seconds is not None else None
        else:
            key, value = "clock", self.timestamp(body["Timestamp"], at(path, "Timestamp"))
        if target is not None and value is not None:
            self.outs.append(Out(name, path, "time", target, key, value, notes=self.note(body)))

    def seconds(self, value: object, path: str) -> int | None:
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            self.error(path, f"must be a positive whole number of seconds, not {json.dumps(value)}")
            return None
        try:
            timing.parse_duration(f"{value}s")
        except ValueError as exc:
            self.error(path, str(exc))
            return None
        return value

    def timestamp(self, value: object, path: str) -> str | None:
        try:
            if isinstance(value, str) and not timing.parse_instant(value, UTC)[1]:
                return value
        except ValueError:
            pass
        self.error(path, f"{json.dumps(value)} is not a timestamp with an offset, such as 2027-01-01T09:00:00Z")
        return None

    def choice(self, name: str, body: dict[str, Any], path: str) -> None:
        self.fields(body, path, "Choice state", ("Type", "Comment", "Choices", "Default"))
        rules = asl_choice.rules(body.get("Choices"), at(path, "Choices"), self.error)
        for i, rule in enumerate(rules or ()):
            self.refs.append(Ref(at(at(at(path, "Choices"), i), "Next"), rule.next, by_suspend=False))
        default = body.get("Default")
        if "Default" in body and not isinstance(default, str):
            self.error(at(path, "Default"), "must be the name of a state")
        elif isinstance(default, str):
            self.refs.append(Ref(at(path, "Default"), default, by_suspend=False))
        if rules is not None:
            self.choices[name] = (rules, default if isinstance(default, str) else None)

    def suspend(self, name: str, body: dict[str, Any], path: str) -> None:
        allowed = ("Type", "Resource", "Next", "End", "Comment", "TimeoutSeconds", "Catch")
        self.fields(body, path, "suspend Task", allowed)
        if body.get("End") is True and "Next" not in body:
            self.error(at(path, "End"), "a suspend Task needs a Next: the state a resume leads to")
            return
        target = self.successor(body, path, by_suspend=True)
        timeout = self.timeout(body, path)
        if target is not None:  # a refused timeout is reported: nothing is written then
            self.outs.append(Out(name, path, "approval", target, timeout=timeout, notes=self.note(body)))

    def timeout(self, body: dict[str, Any], path: str) -> tuple[int, str] | None:
        """(seconds, the Catch's Next) of TimeoutSeconds with its Catch; None without (or refused: reported)."""
        has_time, has_catch = "TimeoutSeconds" in body, "Catch" in body
        if has_time and not has_catch:
            self.error(
                at(path, "TimeoutSeconds"),
                'a timeout needs a Catch with ErrorEquals ["States.Timeout"] (or ["States.ALL"]) naming the '
                "state it leads to",
            )
        if has_catch and not has_time:
            self.error(at(path, "Catch"), "a suspend Task fails only by timing out: give it TimeoutSeconds")
        if not has_time or not has_catch:
            return None
        seconds = self.seconds(body["TimeoutSeconds"], at(path, "TimeoutSeconds"))
        target = self.catch(body["Catch"], at(path, "Catch"))
        return (seconds, target) if seconds is not None and target is not None else None

    def catch(self, catchers: object, path: str) -> str | None:
        """The Next of the one catcher of States.Timeout (States.ALL); every other catcher is refused."""
        if not isinstance(catchers, list) or not catchers:
            self.error(path, "must be a non-empty list of catchers")
            return None
        found: tuple[int, str] | None = None
        broken = False
        for i, catcher in enumerate(catchers):
            target = self.catcher(catcher, at(path, i))
            if target is not None and found is not None:
                self.error(at(path, i), f"the timeout is already caught by Catch[{found[0]}]")
            broken |= target is None or found is not None
            found = found or ((i, target) if target is not None else None)
        return found[1] if found is not None and not broken else None

    def catcher(self, catcher: object, path: str) -> str | None:
        if not isinstance(catcher, dict):
            self.error(path, "a catcher must be a JSON object")
            return None
        self.fields(catcher, path, "catcher", ("ErrorEquals", "Next", "Comment"))
        errors = catcher.get("ErrorEquals")
        if not isinstance(errors, list) or not errors:
            self.error(at(path, "ErrorEquals"), 'must be a non-empty list such as ["States.Timeout"]')
            return None
        refused = [e for e in errors if e not in _TIMEOUT_ERRORS]
        for error in refused:
            self.error(
                at(path, "ErrorEquals"),
                f"{json.dumps(error)} is not supported: a suspend Task fails only with States.Timeout",
            )
        target = catcher.get("Next")
        if not isinstance(target, str):
            self.error(at(path, "Next") if "Next" in catcher else path, "a catcher needs a Next: the name of a state")
            return None
        self.refs.append(Ref(at(path, "Next"), target, by_suspend=False))
        extra = any(key not in ("ErrorEquals", "Next", "Comment") for key in catcher)
        return None if refused or extra else target
