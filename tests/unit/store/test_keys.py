"""store/keys.py: the key names, their cluster hash tags, and the docstring that operators read."""

from __future__ import annotations

import fnmatch
import inspect
import re

import pytest

from stateservice.store import keys

KEY_FUNCTIONS = [
    name
    for name, fn in inspect.getmembers(keys, inspect.isfunction)
    if not name.startswith("_") and fn.__module__ == keys.__name__ and inspect.signature(fn).return_annotation == "str"
]


def _call_with_placeholders(name: str) -> str:
    """Call keys.<name> with each parameter named by its upper-cased name: chart_hosts("CHART", "STATE")."""
    fn = getattr(keys, name)
    args = [p.upper() for p in inspect.signature(fn).parameters]
    result = fn(*args)
    assert isinstance(result, str)
    return result


def hash_tag(key: str) -> str:
    """The part of a key Redis Cluster hashes: the first non-empty {...}, else the whole key."""
    start = key.find("{")
    if start != -1:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


def test_key_names() -> None:
    assert keys.charts_index() == "stateservice:charts"
    assert keys.chart_state("release") == "stateservice:{release}"
    assert keys.chart_hosts("release", "canary") == "stateservice:{release}:hosts:canary"
    assert keys.chart_history("release") == "stateservice:{release}:history"
    assert keys.chart_definition("release") == "stateservice:{release}:definition"
    assert keys.counter_field("canary") == "counter:canary"
    assert keys.chart_slots("release", "canary") == "stateservice:{release}:slots:canary"
    assert keys.chart_failed("release", "canary") == "stateservice:{release}:failed:canary"
    assert keys.chart_expired("release", "canary") == "stateservice:{release}:expired:canary"
    assert keys.visit_keys("release", "canary") == (
        "stateservice:{release}:hosts:canary",
        "stateservice:{release}:slots:canary",
        "stateservice:{release}:failed:canary",
        "stateservice:{release}:expired:canary",
    )
    assert keys.CURRENT_STATE == "current_state"
    assert keys.ENTERED_AT == "entered_at"


@pytest.mark.parametrize("chart", ["release", "a", "web.tier-2_x"])
def test_keys_of_one_chart_share_its_hash_tag(chart: str) -> None:
    chart_keys = [
        keys.chart_state(chart),
        keys.chart_hosts(chart, "canary"),
        *keys.visit_keys(chart, "canary"),
        keys.chart_history(chart),
        keys.chart_definition(chart),
    ]
    assert {hash_tag(k) for k in chart_keys} == {chart}
    assert all(k.startswith("stateservice:") for k in chart_keys)


def test_charts_of_different_names_get_different_tags() -> None:
    assert hash_tag(keys.chart_state("a")) != hash_tag(keys.chart_state("b"))


def test_every_key_starts_with_the_prefix() -> None:
    for name in KEY_FUNCTIONS:
        value = _call_with_placeholders(name)
        if not name.endswith("_field"):  # a hash field, not a key
            assert value.startswith(f"{keys.PREFIX}:"), name


def test_there_are_key_functions_to_document() -> None:
    assert {"charts_index", "chart_state", "chart_hosts", "chart_history", "chart_definition"} <= set(KEY_FUNCTIONS)


@pytest.mark.parametrize("name", KEY_FUNCTIONS)
def test_docstring_documents_every_key_function(name: str) -> None:
    doc = keys.__doc__ or ""
    assert _call_with_placeholders(name) in doc, f"keys.{name} is not in the keys module docstring"


@pytest.mark.parametrize(
    ("key", "kind"),
    [
        ("stateservice:charts", "set"),
        ("stateservice:{CHART}", "hash"),
        ("stateservice:{CHART}:hosts:STATE", "set"),
        ("stateservice:{CHART}:slots:STATE", "hash"),
        ("stateservice:{CHART}:failed:STATE", "hash"),
        ("stateservice:{CHART}:expired:STATE", "hash"),
        ("stateservice:{CHART}:history", "stream"),
        ("stateservice:{CHART}:definition", "hash"),
    ],
)
def test_docstring_gives_each_key_its_type(key: str, kind: str) -> None:
    doc = keys.__doc__ or ""
    assert re.search(rf"^{re.escape(key)}\s+{kind}\b", doc, re.MULTILINE), f"{key} {kind} not in the table"


def test_docstring_names_the_fields_of_the_state_hash() -> None:
    doc = keys.__doc__ or ""
    for field in (
        keys.CURRENT_STATE,
        keys.ENTERED_AT,
        keys.counter_field("STATE"),
        keys.HALTED,
        keys.HALTED_AT,
        keys.slot_hold_total_field("STATE"),
        keys.slot_hold_count_field("STATE"),
    ):
        assert field in doc


def test_docstring_names_the_fields_of_the_definition_hash_and_the_history_stream() -> None:
    doc = keys.__doc__ or ""
    fields = [value for name, value in vars(keys).items() if name.startswith(("DEFINITION_", "HISTORY_"))]
    assert len(fields) == 13
    for field in fields:
        assert re.search(rf"\b{field}\b", doc), field


def test_the_instances_channel_is_not_matched_by_the_chart_watchers_pattern() -> None:
    # the watcher of chart moves subscribes to this pattern: a match would hand it every instance's transition
    assert not fnmatch.fnmatchcase(keys.machine_moves(), keys.chart_channel("*"))
    assert fnmatch.fnmatchcase(keys.chart_channel("machines"), keys.chart_channel("*"))
