"""Hypothesis strategies for configurations (core/machines.py), shared by the machine and book tests."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

STATES = tuple(f"s{i}" for i in range(6))
EVENTS = ("go", "stop", "retry", "back")
CHARTS = ("rollout", "fleet")
PROPERTY_SETS = ({"host": "web1"}, {"host": "web2"}, {"host": "web1", "rack": "r3"})

properties = st.sampled_from(PROPERTY_SETS).map(dict)


@st.composite
def requirement_docs(draw: st.DrawFn, refs: tuple[str, ...], states: tuple[str, ...] = STATES) -> dict[str, Any]:
    """A `requires:` document: a chart guard or an instance guard on one of `refs`."""
    state = draw(st.sampled_from(states))
    if not refs or draw(st.booleans()):
        return {"chart": draw(st.sampled_from(CHARTS)), "state": state}
    return {"configuration": draw(st.sampled_from(refs)), "properties": draw(properties), "state": state}


@st.composite
def configuration_docs(
    draw: st.DrawFn, name: str = "m", version: str = "1", refs: tuple[str, ...] = (), guards: bool = True
) -> dict[str, Any]:
    """A valid configuration document: states drawn from STATES, events from EVENTS, one move per (state, event)."""
    states = draw(st.lists(st.sampled_from(STATES), min_size=1, max_size=len(STATES), unique=True))
    moves = draw(
        st.lists(
            st.tuples(st.sampled_from(states), st.sampled_from(EVENTS), st.sampled_from(states)),
            max_size=12,
            unique_by=lambda m: (m[0], m[1]),
        )
    )
    transitions = []
    for source, event, target in moves:
        transition: dict[str, Any] = {"from": source, "to": target, "event": event}
        if guards and draw(st.integers(0, 3)) == 0:
            transition["requires"] = draw(requirement_docs(refs or (f"{name}:{version}",)))
        transitions.append(transition)
    return {
        "name": name,
        "version": version,
        "states": states,
        "transitions": transitions,
        "starting_state": draw(st.sampled_from(states)),
    }
