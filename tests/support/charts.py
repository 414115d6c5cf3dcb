"""Charts for the tests: `load` a chart written in a test; write one state by state (`chart`, `increment`,
`timed`, `final`); and the charts several modules use (`wave`, `canary_text`, `CYCLE`, `RELEASE`)."""

from __future__ import annotations

import textwrap

from stateservice.core.chart import Chart
from stateservice.core.parse import Parsed, parse


def text(written: str) -> str:
    """Chart text written indented in a test; line 1 is the first line after the opening quotes."""
    return textwrap.dedent(written).lstrip("\n")


def parsed(written: str, path: str = "chart.yaml") -> Parsed:
    """What `parse` makes of a chart written indented in a test, as the file `path`."""
    return parse(text(written), path)


def load(written: str, path: str = "chart.yaml") -> Chart:
    """The chart written indented in a test, as the file `path` (its name, unless it has `name:`); ChartError if bad."""
    return parsed(written, path).unwrap()


# -- chart text, one state at a time ---------------------------------------------------------------
# The charts of the integration tests are written with these, so that a chart reads as its states
# and the YAML of a state is spelled once. What they return is the chart file's text, as written.


def chart(name: str | None, current: str, *states: str) -> str:
    """A chart file's text: `name:` (none if None), `current_state:`, then `states` made by the functions below."""
    head = "" if name is None else f"name: {name}\n"
    return f"{head}current_state: {current}\nstates:\n" + "".join(states)


def increment(state: str, then: str, at: int | str, *, key: str = "hosts", start: int = 0) -> str:
    """An increment state counting `key` from `start`; at `at` it moves to `then`."""
    return (
        f"  - name: {state}\n"
        "    func: increment\n"
        f"    current: {{key: {key}, value: {start}}}\n"
        f"    target: {{name: {then}, when: {{key: {key}, value: {at}}}}}\n"
    )


def timed(state: str, then: str, key: str, value: str) -> str:
    """A time state moving to `then` when `key` (elapsed: a duration; clock: a time) reaches `value`."""
    return f"  - name: {state}\n    func: time\n    target: {{name: {then}, when: {{key: {key}, value: {value}}}}}\n"


def approval(
    state: str,
    *choices: tuple[str, str],
    timeout: tuple[str, str] | None = None,
    default: str | None = None,
    notify: str | None = None,
) -> str:
    """An approval state: each (VALUE, NEXT) of `choices` goes to NEXT when the resume's `approved` is VALUE;
    `timeout` is (AFTER, NEXT)."""
    text = f"  - name: {state}\n    func: approval\n    choices:\n"
    text += "".join(f"      - {{when: {{approved: {value}}}, next: {then}}}\n" for value, then in choices)
    text += f"    timeout: {{after: {timeout[0]}, next: {timeout[1]}}}\n" if timeout else ""
    text += f"    default: {default}\n" if default else ""
    return text + (f"    notify: {notify}\n" if notify else "")


def review(after: str, then: str = "fleet") -> str:
    """The approval state `review` of the tests' rollouts: approved true -> `then`, false or after `after` ->
    rolled_back."""
    return approval("review", ("true", then), ("false", "rolled_back"), timeout=(after, "rolled_back"))


def final(state: str) -> str:
    """A final state: the chart stays there, and reports in it are refused."""
    return f"  - name: {state}\n"


FOREVER = 1_000_000  # a target no test reaches


def wave_text(target: int, name: str = "wave", fleet: int = FOREVER) -> str:
    """canary -> fleet after `target` reports; fleet -> done after `fleet` (by default: counts without moving)."""
    return chart(name, "canary", increment("canary", "fleet", target), increment("fleet", "done", fleet), final("done"))


def wave(target: int, name: str = "wave", fleet: int = FOREVER) -> Chart:
    return load(wave_text(target, name, fleet), f"{name}.yaml")


def canary_text(target: int, name: str = "rollout") -> str:
    """canary -> the final done after `target` reports."""
    return chart(name, "canary", increment("canary", "done", target), final("done"))


# canary -> fleet after 2 reports, fleet -> canary after 1: a chart that never ends
CYCLE = chart("cycle", "canary", increment("canary", "fleet", 2), increment("fleet", "canary", 1))

# canary (counting from 0) -> fleet after 2 reports; fleet (counting from 5) -> done at 7
RELEASE = chart(
    "release",
    "canary",
    increment("canary", "fleet", 2, key="count"),
    increment("fleet", "done", 7, key="count", start=5),
    final("done"),
)
