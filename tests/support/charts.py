"""Charts several test modules build: the canary-then-fleet `wave`."""

from __future__ import annotations

import textwrap

from stateservice.core.chart import Chart
from stateservice.core.parse import parse

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
