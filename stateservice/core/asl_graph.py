"""An imported ASL machine across its states: what no single state shows (see `asl.py`).

Pure. Every reference names a state; a Choice is led to only by suspend Tasks (its input is
what a resume brings), and every Choice has one; an approval whose Choice has no Default needs a
timeout; Pass and Wait states, which become time states, form no loop that would move forever.
"""

from __future__ import annotations

from dataclasses import dataclass

from stateservice.core.approvals import Choice
from stateservice.core.asl_choice import at
from stateservice.core.asl_render import Out
from stateservice.errors import AslProblem

CHOICE_ONLY = (
    'is a Choice, which imports only as the choices of the suspend Task (Resource "module:suspend") whose Next '
    "it is: its input is what the resume brings; only that Task's Next may lead to it"
)


@dataclass(frozen=True, slots=True)
class Ref:
    """A state named at `path` (a Next, a Default, a rule's or a catcher's Next, StartAt)."""

    path: str
    target: str
    by_suspend: bool  # a suspend Task's Next: the one reference that may lead to a Choice


def references(refs: list[Ref], types: dict[str, object]) -> list[AslProblem]:
    """Each reference to no state, and each to a Choice from anywhere but a suspend Task's Next."""
    found = []
    for ref in refs:
        if ref.target not in types:
            found.append(AslProblem(ref.path, f"{ref.target!r} is not a state of States"))
        elif types[ref.target] == "Choice" and not ref.by_suspend:
            found.append(AslProblem(ref.path, f"{ref.target!r} {CHOICE_ONLY}"))
    return found


def choices_led(refs: list[Ref], types: dict[str, object], paths: dict[str, str]) -> list[AslProblem]:
    """Each Choice no suspend Task leads to: it would have no input."""
    led = {ref.target for ref in refs if ref.by_suspend}
    return [
        AslProblem(
            at(paths[name], "Type"),
            'a Choice imports only as the choices of a suspend Task (Resource "module:suspend") whose Next it is, '
            "since its input is what the resume brings; no suspend Task leads here",
        )
        for name, kind in types.items()
        if kind == "Choice" and name not in led
    ]


def endless(outs: list[Out], choices: dict[str, tuple[list[Choice], str | None]]) -> list[AslProblem]:
    """Approvals that could wait forever, and time states that would move forever."""
    found = []
    for out in outs:
        rules = choices.get(out.next or "") if out.func == "approval" else None
        if rules is not None and rules[1] is None and out.timeout is None:
            found.append(
                AslProblem(
                    out.path,
                    f"waits forever for a resume that no rule of Choice {out.next!r} matches: give that Choice "
                    "a Default, or this Task TimeoutSeconds with a Catch of States.Timeout",
                )
            )
    return found + _time_loops(outs)


def _time_loops(outs: list[Out]) -> list[AslProblem]:
    """A time state leading to itself, or a loop of them with a clock time (it stays past once passed)."""
    timed = {out.name: out for out in outs if out.func == "time"}
    found: list[AslProblem] = []
    reported: set[str] = set()
    for out in timed.values():
        if out.next == out.name:
            found.append(
                AslProblem(at(out.path, "Next"), "leads to itself: a chart's time state cannot (it would never end)")
            )
            continue
        loop = [out.name]
        step = timed.get(out.next or "")
        while step is not None and step.name not in loop:
            loop.append(step.name)
            step = timed.get(step.next or "")
        clocks = [timed[n] for n in loop if timed[n].key == "clock"]
        if step is None or step.name != out.name or not clocks or reported & set(loop):
            continue
        reported.update(loop)
        found.append(
            AslProblem(
                at(clocks[0].path, "Timestamp"),
                "is in a loop of Pass and Wait states (" + " -> ".join([*loop, loop[0]]) + ") that would move "
                "forever once this time has passed",
            )
        )
    return found
