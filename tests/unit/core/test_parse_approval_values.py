"""parse_approval: a `when` value means what JSON would: plain true/false/null are a boolean and null, quoted are text.

Charts are composed by libyaml's loader when PyYAML has it, which marks a plain scalar with style '' where
PyYAML's own parser says None: both must read `approved: true` as the boolean a resume sends.
"""

from __future__ import annotations

from stateservice.core import parse
from stateservice.core.approvals import Approval

CHART = """\
name: c
current_state: ask
states:
  - name: ask
    func: approval
    choices:
      - when: {approved: true, also: false, none: null, n: 3, x: 1.5}
        next: done
      - when:
          approved: 'true'
          none: "null"
        next: done
    default: done
  - name: done
"""


def _approval(text: str) -> Approval:
    chart = parse.parse(text, "c.yaml").unwrap()
    assert chart.states[0].approval is not None
    return chart.states[0].approval


def test_plain_values_are_json_values_and_quoted_ones_text() -> None:
    first, second = _approval(CHART).choices
    assert first.when == (("approved", True), ("also", False), ("none", None), ("n", 3), ("x", 1.5))
    assert [type(v) for _, v in first.when] == [bool, bool, type(None), int, float]
    assert second.when == (("approved", "true"), ("none", "null"))
