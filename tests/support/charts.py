"""Charts several test modules build: `load` for a chart written in a test, the canary-then-fleet `wave`."""

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


FOREVER = 1_000_000  # a target no test reaches

# canary -> fleet after `target` reports; fleet counts without moving
WAVE = """
name: {name}
current_state: canary
states:
  - name: canary
    func: increment
    current: {{key: hosts, value: 0}}
    target: {{name: fleet, when: {{key: hosts, value: {target}}}}}
  - name: fleet
    func: increment
    current: {{key: hosts, value: 0}}
    target: {{name: done, when: {{key: hosts, value: {forever}}}}}
  - name: done
"""


def wave(target: int, name: str = "wave") -> Chart:
    text = textwrap.dedent(WAVE.format(name=name, target=target, forever=FOREVER)).lstrip("\n")
    return parse(text, f"{name}.yaml").unwrap()
