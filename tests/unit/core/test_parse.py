"""parse.py: every bad chart gives its exact `path:line: message`, every good one a Chart."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from stateservice.core.chart import Counter, Func, State, Target
from stateservice.core.parse import Parsed, parse, parse_all
from stateservice.errors import ChartError
from tests.support.charts import text as chart
from tests.support.paths import EXAMPLES


def messages(text: str, path: str = "x.yaml") -> list[str]:
    return [str(p) for p in parse(chart(text), path).problems]


GOOD = chart(
    """
    current_state: build
    states:
      - name: build
        func: increment
        current:
          key: hosts
          value: 0
        target:
          name: deploy
          when:
            key: hosts
            value: 3
      - name: deploy
        func: time
        target:
          name: done
          when:
            key: clock
            value: 3000-01-01T12:00:00Z
      - name: done
    """
)
NOON_3000 = datetime(3000, 1, 1, 12, tzinfo=UTC)
NOT_A_DURATION = "is not a duration such as 90s, 10m, 2h, 1d, 1h30m or ISO 8601 PT10M"


# -- good charts -----------------------------------------------------------------------------


def test_a_good_chart_parses_with_every_field() -> None:
    result = parse(GOOD, "charts/release.yaml")

    assert result.problems == []
    assert result.errors == [] and result.warnings == []
    c = result.unwrap()
    assert c.name == "release"
    assert c.initial == "build"
    assert c.path == "charts/release.yaml"
    assert c.state_names == ["build", "deploy", "done"]
    assert c.states == (
        State("build", Func.INCREMENT, Counter("hosts", 0), Target("deploy", "hosts", 3), line=3),
        State("deploy", Func.TIME, None, Target("done", "clock", "3000-01-01T12:00:00Z", due=NOON_3000), line=13),
        State("done", None, line=20),
    )
    assert c.state("done") is not None and c.state("done").final  # type: ignore[union-attr]
    assert c.state("nope") is None


def test_source_and_digest_are_the_text_and_its_sha256() -> None:
    c = parse(GOOD, "x.yaml").unwrap()

    assert c.source == GOOD
    assert c.digest == hashlib.sha256(GOOD.encode()).hexdigest()
    assert parse(GOOD + "# a comment\n", "x.yaml").unwrap().digest != c.digest


def test_the_digest_covers_non_ascii_text_as_utf8() -> None:
    text = "# état: vérifié\n" + GOOD

    assert parse(text, "x.yaml").unwrap().digest == hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_the_example_chart_parses_with_no_problems() -> None:
    path = EXAMPLES / "states.yaml"
    result = parse(path.read_text(), str(path))

    assert result.problems == []
    c = result.unwrap()
    assert c.name == "states"
    assert c.initial == "green_state"
    assert c.state_names == ["green_state", "red_state", "blue_state"]
    green, red, blue = c.states
    assert (green.func, green.counter, green.target) == (
        Func.INCREMENT,
        Counter("count", 0),
        Target("red_state", "count", 1),
    )
    assert (red.func, red.counter, red.target) == (
        Func.INCREMENT,
        Counter("count", 0),
        Target("blue_state", "count", 1),
    )
    assert blue.final and blue.target is None and blue.counter is None


def test_flow_style_is_the_same_chart_as_block_style() -> None:
    flow = chart(
        """
        current_state: build
        states:
          - {name: build, func: increment, current: {key: hosts, value: 0},
             target: {name: deploy, when: {key: hosts, value: 3}}}
          - {name: deploy, func: time, target: {name: done, when: {key: clock, value: "3000-01-01T12:00:00Z"}}}
          - {name: done}
        """
    )
    a, b = parse(GOOD, "x.yaml").unwrap(), parse(flow, "x.yaml").unwrap()

    assert [(s.name, s.func, s.counter, s.target) for s in a.states] == [
        (s.name, s.func, s.counter, s.target) for s in b.states
    ]


@pytest.mark.parametrize(
    ("written", "value"),
    [("0", 0), ("-2", -2), ("+4", 4), ("1_000", 1000), ("0x10", 16)],
)
def test_counts_are_yaml_integers(written: str, value: int) -> None:
    text = chart(
        f"""
        current_state: a
        states:
          - name: a
            func: increment
            current: {{key: n, value: -5}}
            target: {{name: b, when: {{key: n, value: {written}}}}}
          - name: b
        """
    )

    assert parse(text, "x.yaml").unwrap().states[0].target == Target("b", "n", value)


@pytest.mark.parametrize(
    ("stamp", "due"),
    [
        ("3000-01-01T12:00:00Z", NOON_3000),
        ("'3000-01-01T12:00:00Z'", NOON_3000),
        ('"3000-01-01T12:00:00Z"', NOON_3000),
        ("3000-01-01T12:00:00z", NOON_3000),
        ("3000-01-01T12:00:00+00:00", NOON_3000),
        ("3000-01-01T12:00:00+02:00", NOON_3000 - timedelta(hours=2)),
        ('"3000-01-01T12:00:00+02:00"', NOON_3000 - timedelta(hours=2)),
        ("3000-01-01T12:00:00-05:30", NOON_3000 + timedelta(hours=5, minutes=30)),
        ("3000-01-01 12:00:00Z", NOON_3000),
        ("3000-01-01T12:00:00.250Z", NOON_3000 + timedelta(milliseconds=250)),
    ],
)
def test_absolute_timestamps_are_accepted_quoted_or_not(stamp: str, due: datetime) -> None:
    text = chart(
        f"""
        current_state: wait
        states:
          - name: wait
            func: time
            target: {{name: done, when: {{key: clock, value: {stamp}}}}}
          - name: done
        """
    )

    result = parse(text, "x.yaml")

    assert result.problems == []
    target = result.unwrap().states[0].target
    assert target == Target("done", "clock", stamp.strip("'\""), due=due)  # the value kept as the text
    assert target.due is not None and target.due.tzinfo is UTC
    assert target.after is None


@pytest.mark.parametrize(
    ("stamp", "due"),
    [
        ("3000-01-01T12:00:00", NOON_3000 - timedelta(hours=1)),  # CET, UTC+1
        ("'3000-07-01T12:00:00'", datetime(3000, 7, 1, 10, tzinfo=UTC)),  # CEST, UTC+2
        ('"3000-01-01 12:00:00"', NOON_3000 - timedelta(hours=1)),
    ],
)
def test_a_naive_timestamp_is_read_in_the_zone_with_a_warning(stamp: str, due: datetime) -> None:
    text = chart(
        f"""
        current_state: wait
        states:
          - name: wait
            func: time
            target: {{name: done, when: {{key: clock, value: {stamp}}}}}
          - name: done
        """
    )
    bare = stamp.strip("'\"")

    result = parse(text, "x.yaml", zone=ZoneInfo("Europe/Berlin"))

    assert [str(p) for p in result.problems] == [
        f"x.yaml:5: warning: state 'wait': {bare} has no offset, so it is read in the server's time zone "
        "(Europe/Berlin); add Z or an offset such as +02:00 to make it the same everywhere"
    ]
    assert result.errors == []
    target = result.unwrap().states[0].target
    assert target == Target("done", "clock", bare, due=due)
    assert target.due is not None and target.due.tzinfo is UTC


def test_a_naive_timestamp_defaults_to_utc_and_names_it() -> None:
    naive = GOOD.replace("3000-01-01T12:00:00Z", "3000-01-01T12:00:00")

    result = parse(naive, "x.yaml")

    assert [str(p) for p in result.problems] == [
        "x.yaml:19: warning: state 'deploy': 3000-01-01T12:00:00 has no offset, so it is read in the server's "
        "time zone (UTC); add Z or an offset such as +02:00 to make it the same everywhere"
    ]
    assert result.unwrap().states[1].target == Target("done", "clock", "3000-01-01T12:00:00", due=NOON_3000)


def test_the_zone_does_not_change_a_timestamp_with_an_offset() -> None:
    berlin = parse(GOOD, "x.yaml", zone=ZoneInfo("Europe/Berlin"))

    assert berlin.problems == []
    assert berlin.unwrap().states == parse(GOOD, "x.yaml").unwrap().states


def test_parse_all_reads_naive_times_in_its_zone() -> None:
    naive = GOOD.replace("3000-01-01T12:00:00Z", "3000-07-01T12:00:00")

    [result] = parse_all({"x.yaml": naive}, zone=ZoneInfo("America/New_York"))

    target = result.unwrap().states[1].target
    assert target is not None and target.due == datetime(3000, 7, 1, 16, tzinfo=UTC)  # EDT, UTC-4
    assert [p.line for p in result.warnings] == [19]


def test_a_naive_time_in_a_daylight_saving_gap_is_an_error() -> None:
    # Europe/Berlin skips 02:00-03:00 on 2026-03-29: that local time never happens.
    text = """
        current_state: wait
        states:
          - name: wait
            func: time
            target:
              name: done
              when: {key: clock, value: 2026-03-29T02:30:00}
          - name: done
        """
    result = parse(chart(text), "x.yaml", zone=ZoneInfo("Europe/Berlin"))

    assert [str(p) for p in result.problems] == [
        "x.yaml:7: state 'wait': when.value '2026-03-29T02:30:00' is not a timestamp "
        "(2026-03-29T02:30:00 does not exist in time zone Europe/Berlin (the clocks skip it))"
    ]
    assert result.chart is None


@pytest.mark.parametrize(
    ("stamp", "due"),
    [
        ("2026-03-29T01:59:59", datetime(2026, 3, 29, 0, 59, 59, tzinfo=UTC)),  # just before the gap
        ("2026-03-29T03:00:00", datetime(2026, 3, 29, 1, 0, tzinfo=UTC)),  # just after it
        ("2026-10-25T02:30:00", datetime(2026, 10, 25, 0, 30, tzinfo=UTC)),  # overlap: first (CEST) occurrence
        ("2026-10-25T02:00:00", datetime(2026, 10, 25, 0, 0, tzinfo=UTC)),
        ("2026-10-25T03:00:00", datetime(2026, 10, 25, 2, 0, tzinfo=UTC)),  # after the overlap: CET
    ],
)
def test_naive_times_around_daylight_saving_changes(stamp: str, due: datetime) -> None:
    text = f"""
        current_state: wait
        states:
          - name: wait
            func: time
            target: {{name: done, when: {{key: clock, value: {stamp}}}}}
          - name: done
        """
    result = parse(chart(text), "x.yaml", zone=ZoneInfo("Europe/Berlin"))

    assert result.errors == []
    target = result.unwrap().states[0].target
    assert target is not None and target.due == due


def test_a_time_in_a_gap_with_an_offset_is_fine() -> None:
    text = """
        current_state: wait
        states:
          - name: wait
            func: time
            target: {name: done, when: {key: clock, value: "2026-03-29T02:30:00+01:00"}}
          - name: done
        """
    result = parse(chart(text), "x.yaml", zone=ZoneInfo("Europe/Berlin"))

    assert result.problems == []
    target = result.unwrap().states[0].target
    assert target is not None and target.due == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)


def test_unquoted_and_quoted_timestamps_give_the_same_target() -> None:
    quoted = GOOD.replace("value: 3000-01-01T12:00:00Z", "value: '3000-01-01T12:00:00Z'")
    assert quoted != GOOD

    assert parse(quoted, "x.yaml").unwrap().states == parse(GOOD, "x.yaml").unwrap().states


# -- elapsed durations -----------------------------------------------------------------------


def elapsed_chart(value: str) -> str:
    return chart(
        f"""
        current_state: soak
        states:
          - name: soak
            func: time
            target:
              name: done
              when: {{key: elapsed, value: {value}}}
          - name: done
        """
    )


@pytest.mark.parametrize(
    ("written", "after"),
    [
        ("90s", timedelta(seconds=90)),
        ("10m", timedelta(minutes=10)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("'10m'", timedelta(minutes=10)),
        ("PT10M", timedelta(minutes=10)),
        ("PT90S", timedelta(seconds=90)),
        ("PT1.5S", timedelta(seconds=1.5)),
        ("P1D", timedelta(days=1)),
        ("P1DT2H", timedelta(days=1, hours=2)),
        ('"PT1H30M"', timedelta(hours=1, minutes=30)),
    ],
)
def test_elapsed_durations_are_accepted(written: str, after: timedelta) -> None:
    result = parse(elapsed_chart(written), "x.yaml")

    assert result.problems == []
    target = result.unwrap().states[0].target
    assert target == Target("done", "elapsed", written.strip("'\""), after=after)
    assert target.due is None


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ("0s", "'0s' is not a positive duration"),
        ("0m", "'0m' is not a positive duration"),
        ("PT0S", "'PT0S' is not a positive duration"),
        ("P0D", "'P0D' is not a positive duration"),
        ("-5m", f"'-5m' {NOT_A_DURATION}"),
        ("5", f"'5' {NOT_A_DURATION}"),
        ("-5", f"'-5' {NOT_A_DURATION}"),
        ("soon", f"'soon' {NOT_A_DURATION}"),
        ("PT", f"'PT' {NOT_A_DURATION}"),
        ("P", f"'P' {NOT_A_DURATION}"),
        ("P1DT", f"'P1DT' {NOT_A_DURATION}"),
        ("10 m", f"'10 m' {NOT_A_DURATION}"),
        ("10M", f"'10M' {NOT_A_DURATION}"),
        ("30m1h", f"'30m1h' {NOT_A_DURATION}"),
        ("''", f"'' {NOT_A_DURATION}"),
        ("3000-01-01T12:00:00Z", f"'3000-01-01T12:00:00Z' {NOT_A_DURATION}"),
    ],
)
def test_bad_elapsed_durations_are_errors_at_their_line(written: str, message: str) -> None:
    result = parse(elapsed_chart(written), "x.yaml")

    assert [str(p) for p in result.problems] == [f"x.yaml:7: state 'soak': when.value: {message}"]
    assert result.chart is None


@pytest.mark.parametrize("written", ["~", "[10m]", "{m: 10}"])
def test_an_elapsed_value_must_be_a_single_value(written: str) -> None:
    assert [str(p) for p in parse(elapsed_chart(written), "x.yaml").problems] == [
        "x.yaml:7: when.value must be a single value"
    ]


@pytest.mark.parametrize("written", ["99999999999d", "1" + "0" * 400 + "s", "PT" + "9" * 400 + "S"])
def test_an_enormous_duration_is_a_problem_not_a_crash(written: str) -> None:
    # timedelta() raised OverflowError, which parse() does not catch: `validate` crashed instead of reporting.
    result = parse(elapsed_chart(written), "x.yaml")

    assert result.chart is None
    assert [(p.line, p.message.startswith(f"state 'soak': when.value: {written!r} ")) for p in result.problems] == [
        (7, True)
    ]


@pytest.mark.parametrize(
    ("stamp", "zone"),
    [
        ("0001-01-01T00:00:00+01:00", UTC),
        ("9999-12-31T23:59:59-01:00", UTC),
        ("0001-01-01T00:00:00", ZoneInfo("Europe/Berlin")),
    ],
)
def test_a_timestamp_outside_the_datetime_range_in_utc_is_a_problem_not_a_crash(stamp: str, zone: Any) -> None:
    # Converting to UTC leaves years 1..9999 and raised OverflowError, which parse() does not catch.
    text = f"""
        current_state: wait
        states:
          - name: wait
            func: time
            target: {{name: done, when: {{key: clock, value: "{stamp}"}}}}
          - name: done
        """
    result = parse(chart(text), "x.yaml", zone=zone)

    assert result.chart is None
    assert [
        (p.line, p.message.startswith(f"state 'wait': when.value {stamp!r} is not a timestamp ("))
        for p in result.errors
    ] == [(5, True)]


# -- loops of time states --------------------------------------------------------------------


def test_a_loop_of_time_states_with_a_clock_time_is_an_error() -> None:
    text = """
        current_state: start
        states:
          - name: start
            func: increment
            current: {key: n, value: 0}
            target: {name: open, when: {key: n, value: 1}}
          - name: open
            func: time
            target: {name: shut, when: {key: clock, value: 3000-01-01T12:00:00Z}}
          - name: shut
            func: time
            target: {name: open, when: {key: elapsed, value: 1h}}
        """
    result = parse(chart(text), "x.yaml")

    assert [str(p) for p in result.problems] == [
        "x.yaml:7: the time states open -> shut -> open form a loop with a clock time, which would move forever "
        "once that time has passed; use elapsed durations or a state that waits for reports"
    ]
    assert result.chart is None


def test_a_clock_loop_is_reported_once_at_its_first_state_in_the_file() -> None:
    text = """
        current_state: c
        states:
          - name: a
            func: time
            target: {name: b, when: {key: elapsed, value: 1m}}
          - name: b
            func: time
            target: {name: c, when: {key: elapsed, value: 1m}}
          - name: c
            func: time
            target: {name: a, when: {key: clock, value: 3000-01-01T12:00:00Z}}
        """
    assert messages(text) == [
        "x.yaml:3: the time states a -> b -> c -> a form a loop with a clock time, which would move forever "
        "once that time has passed; use elapsed durations or a state that waits for reports"
    ]


def test_a_loop_of_elapsed_time_states_is_allowed() -> None:
    text = """
        current_state: on
        states:
          - name: on
            func: time
            target: {name: off, when: {key: elapsed, value: 10m}}
          - name: off
            func: time
            target: {name: on, when: {key: elapsed, value: PT5M}}
        """
    result = parse(chart(text), "x.yaml")

    assert result.problems == []
    assert [s.target.after for s in result.unwrap().states if s.target] == [timedelta(minutes=10), timedelta(minutes=5)]


def test_a_clock_time_leading_into_an_elapsed_loop_is_allowed() -> None:
    text = """
        current_state: wait
        states:
          - name: wait
            func: time
            target: {name: on, when: {key: clock, value: 3000-01-01T12:00:00Z}}
          - name: on
            func: time
            target: {name: off, when: {key: elapsed, value: 10m}}
          - name: off
            func: time
            target: {name: on, when: {key: elapsed, value: 10m}}
        """
    assert messages(text) == []


def test_a_loop_with_a_clock_time_and_an_increment_state_is_allowed() -> None:
    text = """
        current_state: wait
        states:
          - name: wait
            func: time
            target: {name: work, when: {key: clock, value: 3000-01-01T12:00:00Z}}
          - name: work
            func: increment
            current: {key: n, value: 0}
            target: {name: wait, when: {key: n, value: 1}}
        """
    assert messages(text) == []


@pytest.mark.parametrize("word", ["on", "off", "yes", "no", "y", "n", "true", "false", "True", "NO"])
def test_yaml_1_1_booleans_stay_strings(word: str) -> None:
    text = chart(
        f"""
        current_state: {word}
        states:
          - name: {word}
            func: increment
            current: {{key: {word}, value: 0}}
            target: {{name: done, when: {{key: {word}, value: 1}}}}
          - name: done
        """
    )

    c = parse(text, "x.yaml").unwrap()
    assert c.initial == word
    assert c.states[0].name == word
    assert c.states[0].counter == Counter(word, 0)


def test_states_named_on_and_yes_link_to_each_other() -> None:
    text = chart(
        """
        current_state: "on"
        states:
          - name: on
            func: increment
            current: {key: n, value: 0}
            target: {name: yes, when: {key: n, value: 1}}
          - name: 'yes'
        """
    )

    c = parse(text, "x.yaml").unwrap()
    assert c.state_names == ["on", "yes"]
    assert c.states[0].target == Target("yes", "n", 1)


def test_numeric_state_names_are_text() -> None:
    text = chart(
        """
        current_state: 1
        states:
          - name: 1
            func: increment
            current: {key: n, value: 0}
            target: {name: 2.5, when: {key: n, value: 1}}
          - name: "2.5"
        """
    )

    assert parse(text, "x.yaml").unwrap().state_names == ["1", "2.5"]


def test_an_increment_state_may_target_itself() -> None:
    text = chart(
        """
        current_state: loop
        states:
          - name: loop
            func: increment
            current: {key: n, value: 0}
            target: {name: loop, when: {key: n, value: 2}}
        """
    )

    assert parse(text, "x.yaml").problems == []


# -- chart names -----------------------------------------------------------------------------


def test_the_chart_name_defaults_to_the_file_stem() -> None:
    assert parse(GOOD, "/etc/stateservice/release-2.yaml").unwrap().name == "release-2"
    assert parse(GOOD, "release.v2.yml").unwrap().name == "release.v2"


def test_name_in_the_file_overrides_the_stem_and_the_argument() -> None:
    assert parse("name: rollout\n" + GOOD, "release.yaml").unwrap().name == "rollout"
    assert parse("name: rollout\n" + GOOD, "release.yaml", name="given").unwrap().name == "rollout"
    assert parse(GOOD, "release.yaml", name="given").unwrap().name == "given"


def test_name_in_the_file_rescues_a_file_name_that_is_not_a_chart_name() -> None:
    assert parse("name: mine\n" + GOOD, "charts/my chart.yaml").unwrap().name == "mine"


def test_a_file_stem_that_is_not_a_chart_name_says_to_set_name() -> None:
    assert messages(GOOD, "charts/my chart.yaml") == [
        "charts/my chart.yaml:1: the chart name (taken from the file name) 'my chart' is not valid: "
        "use letters, digits, '.', '_', '-' (at most 64, starting with a letter or digit); set `name:` in the file"
    ]


@pytest.mark.parametrize("bad", ["'my chart'", "'{cluster}'", "-lead", "'" + "c" * 65 + "'", "'é'"])
def test_an_invalid_name_in_the_file_is_reported_at_its_line(bad: str) -> None:
    value = bad.strip("'")
    assert messages(GOOD + f"name: {bad}\n") == [
        f"x.yaml:21: `name` {value!r} is not valid: use letters, digits, '.', '_', '-' "
        "(at most 64, starting with a letter or digit)"
    ]


def test_a_64_character_chart_name_is_fine() -> None:
    assert parse(GOOD + "name: " + "c" * 64 + "\n", "x.yaml").unwrap().name == "c" * 64


def test_a_name_that_is_not_a_single_value() -> None:
    assert messages("name: [a, b]\n" + GOOD) == ["x.yaml:1: `name` must be a single value"]
    assert messages("name:\n" + GOOD) == ["x.yaml:1: `name` must be a single value"]


# -- whole-file problems ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("current_state: a\nstates:\n  - name: a: b\n", "x.yaml:3: invalid YAML: mapping values are not allowed here"),
        ("current_state: a\nstates: [a\n", "x.yaml:3: invalid YAML: expected ',' or ']', but got '<stream end>'"),
        (
            "current_state: a\nstates:\n\t- name: a\n",
            "x.yaml:3: invalid YAML: found character '\\t' that cannot start any token",
        ),
        (
            'current_state: a\nstates:\n  - name: a\n  - name: "b\n',
            "x.yaml:5: invalid YAML: found unexpected end of stream",
        ),
        ("current_state: a\n---\nstates: []\n", "x.yaml:2: invalid YAML: but found another document"),
        ("current_state: *nowhere\n", "x.yaml:1: invalid YAML: found undefined alias 'nowhere'"),
        # libyaml refuses this cleanly; PyYAML's recursive composer (its fallback) ran out of stack
        ("states: " + "[" * 5000 + "]" * 5000, "x.yaml:1: invalid YAML: exceeded maximum nesting depth"),
    ],
)
def test_yaml_syntax_errors_are_reported_at_their_line(text: str, expected: str) -> None:
    result = parse(text, "x.yaml")

    assert [str(p) for p in result.problems] == [expected]
    assert result.chart is None


@pytest.mark.parametrize("text", ["", "\n\n", "   \n", "# only a comment\n# and another\n"])
def test_an_empty_file(text: str) -> None:
    assert [str(p) for p in parse(text, "x.yaml").problems] == [
        "x.yaml:1: the file is empty; a chart needs `current_state` and `states`"
    ]


@pytest.mark.parametrize(
    ("text", "line"),
    [("- current_state: a\n- states: []\n", 1), ("just words\n", 1), ("# header\n\n42\n", 3), ("---\n[a, b]\n", 2)],
)
def test_the_top_level_must_be_a_mapping(text: str, line: int) -> None:
    assert [str(p) for p in parse(text, "x.yaml").problems] == [
        f"x.yaml:{line}: the chart must be a mapping of keys to values"
    ]


def test_missing_current_state_is_reported_at_line_1() -> None:
    text = """
        # the release chart
        states:
          - name: a
        """
    assert messages(text) == ["x.yaml:1: the chart is missing `current_state` (the name of the initial state)"]


def test_missing_states_is_reported_at_line_1() -> None:
    text = """
        # the release chart

        current_state: a
        """
    assert messages(text) == ["x.yaml:1: the chart is missing `states` (the list of states)"]


def test_a_chart_missing_both_keys_reports_both() -> None:
    assert messages("name: x\n") == [
        "x.yaml:1: the chart is missing `states` (the list of states)",
        "x.yaml:1: the chart is missing `current_state` (the name of the initial state)",
    ]


@pytest.mark.parametrize(
    ("states", "line"),
    [("states: []", 2), ("states: {}", 2), ("states:", 2), ("states: green", 2), ("states:\n  a: 1", 3)],
)
def test_states_must_be_a_non_empty_list(states: str, line: int) -> None:
    text = f"current_state: a\n{states}\n"

    assert [str(p) for p in parse(text, "x.yaml").problems] == [
        f"x.yaml:{line}: `states` must be a non-empty list of states"
    ]


def test_an_unknown_top_level_key_with_a_hint() -> None:
    text = """
        states:
          - name: a
        curent_state: a
        """
    assert messages(text) == [
        "x.yaml:1: the chart is missing `current_state` (the name of the initial state)",
        "x.yaml:3: unknown key 'curent_state' in the chart; did you mean 'current_state'?",
    ]


def test_an_unknown_top_level_key_without_a_close_match_lists_the_allowed_keys() -> None:
    assert messages(GOOD + "colour: red\n") == [
        "x.yaml:21: unknown key 'colour' in the chart (allowed: name, timezone, current_state, states)"
    ]


def test_a_duplicate_top_level_key() -> None:
    assert messages(GOOD + "current_state: done\n") == ["x.yaml:21: duplicate key 'current_state' in the chart"]


def test_current_state_not_a_state() -> None:
    text = """
        current_state: gren
        states:
          - name: green
        """
    assert messages(text) == ["x.yaml:1: `current_state` 'gren' is not a state of this chart"]


def test_current_state_must_be_a_single_valid_name() -> None:
    assert messages("current_state: [a]\nstates:\n  - name: a\n") == [
        "x.yaml:1: `current_state` must be a single value"
    ]
    assert messages("current_state: a b\nstates:\n  - name: a\n") == [
        "x.yaml:1: `current_state` 'a b' is not a valid state name "
        "(letters, digits, '.', '_', '-'; starting with a letter or digit; at most 128)"
    ]


# -- one state's problems --------------------------------------------------------------------
# The broken state is `b`; the initial state `a` is a plain final state, so only `b`'s problem shows.


def test_a_state_that_is_not_a_mapping() -> None:
    text = """
        current_state: a
        states:
          - name: a
          - b
        """
    assert messages(text) == ["x.yaml:4: a state must be a mapping of keys to values"]


def test_a_state_without_a_name() -> None:
    text = """
        current_state: a
        states:
          - name: a
          - func: increment
            current: {key: n, value: 0}
        """
    assert messages(text) == ["x.yaml:4: a state is missing `name`"]


def test_an_unknown_state_key_with_a_hint() -> None:
    text = """
        current_state: a
        states:
          - name: a
          - name: b
            fnuc: increment
        """
    assert messages(text) == ["x.yaml:5: unknown key 'fnuc' in a state; did you mean 'func'?"]


def test_an_unknown_state_key_without_a_hint() -> None:
    text = """
        current_state: a
        states:
          - name: a
            colour: green
        """
    assert messages(text) == [
        "x.yaml:4: unknown key 'colour' in a state (allowed: name, func, current, target, concurrency, slot_ttl,"
        " max_failures, windows, blackouts, choices, default, timeout, notify)"
    ]


def test_a_duplicate_key_in_a_state() -> None:
    text = """
        current_state: a
        states:
          - name: a
          - name: b
            name: c
        """
    assert messages(text) == ["x.yaml:5: duplicate key 'name' in a state"]


def test_a_duplicate_state_is_reported_at_its_second_occurrence() -> None:
    text = """
        current_state: a
        states:
          - name: a
            func: increment
            current: {key: n, value: 0}
            target: {name: b, when: {key: n, value: 1}}
          - name: b
          - func: increment
            current: {key: n, value: 0}
            target: {name: a, when: {key: n, value: 1}}
            name: b
        """
    assert messages(text) == ["x.yaml:11: duplicate state 'b' (first defined at line 7)"]


def test_an_unknown_target_is_reported_at_the_target_name() -> None:
    text = """
        current_state: a
        states:
          - name: a
            func: increment
            current:
              key: n
              value: 0
            target:
              name: bee
              when:
                key: n
                value: 1
          - name: b
        """
    assert messages(text) == ["x.yaml:9: target 'bee' of state 'a' is not a state of this chart"]


def test_a_target_defined_later_in_the_file_is_known() -> None:
    text = """
        current_state: a
        states:
          - name: a
            func: increment
            current: {key: n, value: 0}
            target: {name: z, when: {key: n, value: 1}}
          - name: z
        """
    assert messages(text) == []


def test_an_unknown_func_with_a_hint() -> None:
    text = """
        current_state: a
        states:
          - name: a
          - name: b
            func: incremnt
        """
    assert messages(text) == [
        "x.yaml:5: unknown func 'incremnt' in state 'b' (expected increment, time or approval);"
        " did you mean 'increment'?"
    ]


def test_an_unknown_func_without_a_hint() -> None:
    text = """
        current_state: a
        states:
          - name: a
          - name: b
            func: vote
        """
    assert messages(text) == ["x.yaml:5: unknown func 'vote' in state 'b' (expected increment, time or approval)"]


def test_a_func_that_is_not_a_single_value() -> None:
    text = """
        current_state: a
        states:
          - name: a
          - name: b
            func: [increment]
        """
    assert messages(text) == ["x.yaml:5: `func` of state 'b' must be a single value"]


def test_increment_without_current() -> None:
    text = """
        current_state: a
        states:
          - name: a
          - name: b
            func: increment
            target: {name: a, when: {key: n, value: 1}}
        """
    assert messages(text) == ["x.yaml:4: state 'b' is missing `current`"]


def test_increment_without_target() -> None:
    text = """
        current_state: a
        states:
          - name: a
          - name: b
            func: increment
            current: {key: n, value: 0}
        """
    assert messages(text) == ["x.yaml:4: state 'b' is missing `target`"]


def test_increment_without_when() -> None:
    text = """
        current_state: a
        states:
          - name: a
          - name: b
            func: increment
            current: {key: n, value: 0}
            target:
              name: a
        """
    assert messages(text) == ["x.yaml:8: `target` of state 'b' is missing `when`"]


def test_increment_missing_everything_reports_each_part() -> None:
    text = """
        current_state: a
        states:
          - name: a
          - name: b
            func: increment
            current: {}
            target: {when: {}}
        """
    assert messages(text) == [
        "x.yaml:6: `current` of state 'b' is missing `key`",
        "x.yaml:6: `current` of state 'b' is missing `value`",
        "x.yaml:7: `target` of state 'b' is missing `name`",
        "x.yaml:7: `when` of state 'b' is missing `key`",
        "x.yaml:7: `when` of state 'b' is missing `value`",
    ]


def test_current_and_target_must_be_mappings() -> None:
    text = """
        current_state: a
        states:
          - name: a
          - name: b
            func: increment
            current: 0
            target: a
        """
    assert messages(text) == [
        "x.yaml:6: `current` of state 'b' must be a mapping of keys to values",
        "x.yaml:7: `target` of state 'b' must be a mapping of keys to values",
    ]


def test_unknown_keys_inside_current_and_when() -> None:
    text = """
        current_state: a
        states:
          - name: a
          - name: b
            func: increment
            current: {key: n, value: 0}
            target: {name: a, when: {key: n, vaule: 1}}
        """
    assert messages(text) == [
        "x.yaml:7: unknown key 'vaule' in `when` of state 'b'; did you mean 'value'?",
        "x.yaml:7: `when` of state 'b' is missing `value`",
    ]


def test_when_key_differs_from_current_key() -> None:
    text = """
        current_state: a
        states:
          - name: a
          - name: b
            func: increment
            current:
              key: hosts
              value: 0
            target:
              name: a
              when:
                key: host
                value: 2
        """
    assert messages(text) == ["x.yaml:10: state 'b': when.key 'host' differs from current.key 'hosts'"]


@pytest.mark.parametrize(("start", "target"), [(2, 2), (2, 1), (0, 0), (0, -1), (-1, -1)])
def test_the_target_count_must_be_above_the_start_value(start: int, target: int) -> None:
    text = f"""
        current_state: a
        states:
          - name: a
          - name: b
            func: increment
            current: {{key: n, value: {start}}}
            target:
              name: a
              when: {{key: n, value: {target}}}
        """
    assert messages(text) == [f"x.yaml:8: state 'b': target count {target} is not above the start value {start}"]


def test_a_negative_start_below_the_target_is_fine() -> None:
    text = """
        current_state: a
        states:
          - name: a
            func: increment
            current: {key: n, value: -2}
            target: {name: a, when: {key: n, value: -1}}
        """
    assert parse(chart(text), "x.yaml").unwrap().states[0].counter == Counter("n", -2)


@pytest.mark.parametrize(
    ("start", "target", "expected"),
    [
        ("'0'", "3", "x.yaml:8: current.value must be a whole number, not '0'"),
        ('"0"', "3", "x.yaml:8: current.value must be a whole number, not '0'"),
        ("zero", "3", "x.yaml:8: current.value must be a whole number, not 'zero'"),
        ("0", "yes", "x.yaml:11: when.value must be a whole number, not 'yes'"),
        ("0", "on", "x.yaml:11: when.value must be a whole number, not 'on'"),
        ("0", "true", "x.yaml:11: when.value must be a whole number, not 'true'"),
        ("0", "2.5", "x.yaml:11: when.value must be a whole number, not '2.5'"),
        ("0", "3.0", "x.yaml:11: when.value must be a whole number, not '3.0'"),
        ("0.0", "3", "x.yaml:8: current.value must be a whole number, not '0.0'"),
        ("0", "1e3", "x.yaml:11: when.value must be a whole number, not '1e3'"),
        ("0", ".inf", "x.yaml:11: when.value must be a whole number, not '.inf'"),
        ("0", "3000-01-01T12:00:00", "x.yaml:11: when.value must be a whole number, not '3000-01-01T12:00:00'"),
        ("~", "3", "x.yaml:8: current.value must be a single value"),
        ("0", "[3]", "x.yaml:11: when.value must be a single value"),
    ],
)
def test_counts_must_be_whole_numbers(start: str, target: str, expected: str) -> None:
    text = f"""
        current_state: a
        states:
          - name: a
          - name: b
            func: increment
            current:
              key: n
              value: {start}
            target:
              name: a
              when: {{key: n, value: {target}}}
        """
    assert messages(text) == [expected]


@pytest.mark.parametrize("value", ["0x_", "0b_", "-0x_", "!!int abc", "!!int ''"])
def test_a_malformed_integer_is_a_problem_not_a_crash(value: str) -> None:
    # parse() must report problems, never raise. These resolve as (or are tagged) int, but PyYAML's
    # construct_yaml_int cannot read them: ValueError ('0x_', '!!int abc') or IndexError ("!!int ''").
    text = f"""
        current_state: a
        states:
          - name: a
          - name: b
            func: increment
            current: {{key: n, value: 0}}
            target: {{name: a, when: {{key: n, value: {value}}}}}
        """
    result = parse(chart(text), "x.yaml")

    assert result.chart is None
    assert [(p.line, p.message.startswith("when.value must be a whole number")) for p in result.problems] == [(7, True)]


def test_an_integer_too_long_to_read_is_a_problem_not_a_crash() -> None:
    # Python refuses int(str) past 4300 digits (sys.get_int_max_str_digits) with ValueError.
    text = f"""
        current_state: a
        states:
          - name: a
          - name: b
            func: increment
            current: {{key: n, value: 0}}
            target: {{name: a, when: {{key: n, value: 1{"0" * 5000}}}}}
        """
    result = parse(chart(text), "x.yaml")

    assert [(p.line, "when.value" in p.message) for p in result.problems] == [(7, True)]


def test_a_time_state_with_a_bad_timestamp() -> None:
    text = """
        current_state: a
        states:
          - name: a
          - name: b
            func: time
            target:
              name: a
              when:
                key: clock
                value: tomorrow
          - name: c
            func: time
            target:
              name: a
              when:
                key: clock
                value: 3000-13-01T00:00:00
          - name: d
            func: time
            target: {name: a, when: {key: clock, value: next tuesday}}
          - name: e
            func: time
            target: {name: a, when: {key: clock, value: 3000-01-01}}
        """
    assert messages(text) == [
        "x.yaml:10: state 'b': when.value 'tomorrow' is not a timestamp "
        "(expected a date and a time, such as 3000-01-01T12:00:00 or 3000-01-01T12:00:00Z)",
        "x.yaml:17: state 'c': when.value '3000-13-01T00:00:00' is not a timestamp (month must be in 1..12)",
        "x.yaml:20: state 'd': when.value 'next tuesday' is not a timestamp (Invalid isoformat string: 'next tuesday')",
        "x.yaml:23: state 'e': when.value '3000-01-01' is not a timestamp "
        "(expected a date and a time, such as 3000-01-01T12:00:00 or 3000-01-01T12:00:00Z)",
    ]


def test_a_time_state_with_current() -> None:
    text = """
        current_state: a
        states:
          - name: a
          - name: b
            func: time
            current: {key: clock, value: 0}
            target: {name: a, when: {key: clock, value: 3000-01-01T12:00:00Z}}
        """
    assert messages(text) == ["x.yaml:6: state 'b': func: time takes no `current` (the clock is implied)"]


def test_a_time_state_whose_when_key_is_not_clock() -> None:
    text = """
        current_state: a
        states:
          - name: a
          - name: b
            func: time
            target:
              name: a
              when:
                key: time
                value: 3000-01-01T12:00:00Z
        """
    assert messages(text) == [
        "x.yaml:9: state 'b': func: time needs when.key 'clock' (a date-time) or 'elapsed' (a duration), not 'time'"
    ]


def test_a_time_state_cannot_target_itself() -> None:
    text = """
        current_state: a
        states:
          - name: a
          - name: b
            func: time
            target:
              name: b
              when: {key: clock, value: 3000-01-01T12:00:00Z}
        """
    assert messages(text) == ["x.yaml:7: state 'b': a time state cannot target itself"]


def test_a_time_state_without_target() -> None:
    text = """
        current_state: a
        states:
          - name: a
          - name: b
            func: time
        """
    assert messages(text) == ["x.yaml:4: state 'b' is missing `target`"]


def test_a_final_state_with_a_target_or_current() -> None:
    text = """
        current_state: a
        states:
          - name: a
          - name: b
            target: {name: a, when: {key: n, value: 1}}
          - name: c
            current: {key: n, value: 0}
        """
    assert messages(text) == [
        "x.yaml:5: state 'b' has `target` but no `func` (a state without func is final)",
        "x.yaml:7: state 'c' has `current` but no `func` (a state without func is final)",
    ]


@pytest.mark.parametrize(
    ("written", "name"),
    [
        ("'bad name'", "bad name"),
        ("'{a}'", "{a}"),
        ("-a", "-a"),
        ("_a", "_a"),
        (".a", ".a"),
        ("a/b", "a/b"),
        ("'a:b'", "a:b"),
        ("grün", "grün"),
        ("'" + "s" * 129 + "'", "s" * 129),
    ],
)
def test_invalid_state_name_characters(written: str, name: str) -> None:
    text = f"""
        current_state: a
        states:
          - name: a
          - name: {written}
        """
    assert messages(text) == [
        f"x.yaml:4: the state name {name!r} is not a valid state name "
        "(letters, digits, '.', '_', '-'; starting with a letter or digit; at most 128)"
    ]


def test_a_128_character_state_name_is_fine() -> None:
    long = "s" * 128
    text = f"current_state: {long}\nstates:\n  - name: {long}\n"

    assert parse(text, "x.yaml").unwrap().initial == long


def test_an_invalid_target_name() -> None:
    text = """
        current_state: a
        states:
          - name: a
          - name: b
            func: increment
            current: {key: n, value: 0}
            target: {name: 'a b', when: {key: n, value: 1}}
        """
    assert messages(text) == [
        "x.yaml:7: target name 'a b' is not a valid state name "
        "(letters, digits, '.', '_', '-'; starting with a letter or digit; at most 128)"
    ]


def test_a_null_state_name() -> None:
    text = """
        current_state: a
        states:
          - name: a
          - name:
        """
    assert messages(text) == ["x.yaml:4: the state name must be a single value"]


def test_a_broken_initial_state_is_not_also_reported_as_missing() -> None:
    # `a` is defined (line 3); only its count is wrong. Saying "`current_state` 'a' is not a state of
    # this chart" as well is false and sends the reader looking for a typo that is not there.
    text = """
        current_state: a
        states:
          - name: a
            func: increment
            current: {key: n, value: zero}
            target: {name: b, when: {key: n, value: 1}}
          - name: b
        """
    assert messages(text) == ["x.yaml:5: current.value must be a whole number, not 'zero'"]


def test_many_problems_are_all_reported_sorted_by_line() -> None:
    text = """
        current_state: start
        states:
          - name: start
          - name: e
            func: incremnt
          - name: b
            func: increment
            current: {key: n, value: 3}
            target: {name: nowhere, when: {key: m, value: 3}}
          - name: c
            func: time
            current: {key: clock, value: 0}
            target: {name: c, when: {key: clock, value: soon}}
          - name: b
          - name: 'bad name'
          - name: d
            target: {name: b, when: {key: n, value: 1}}
        typo_key: 1
        """
    result = parse(chart(text), "x.yaml")

    assert [str(p) for p in result.problems] == [
        "x.yaml:5: unknown func 'incremnt' in state 'e' (expected increment, time or approval);"
        " did you mean 'increment'?",
        "x.yaml:9: state 'b': when.key 'm' differs from current.key 'n'",
        "x.yaml:9: target 'nowhere' of state 'b' is not a state of this chart",
        "x.yaml:12: state 'c': func: time takes no `current` (the clock is implied)",
        "x.yaml:13: state 'c': when.value 'soon' is not a timestamp "
        "(expected a date and a time, such as 3000-01-01T12:00:00 or 3000-01-01T12:00:00Z)",
        "x.yaml:14: duplicate state 'b' (first defined at line 6)",
        "x.yaml:15: the state name 'bad name' is not a valid state name "
        "(letters, digits, '.', '_', '-'; starting with a letter or digit; at most 128)",
        "x.yaml:17: state 'd' has `target` but no `func` (a state without func is final)",
        "x.yaml:18: unknown key 'typo_key' in the chart (allowed: name, timezone, current_state, states)",
    ]
    assert result.chart is None
    assert not result.warnings


# -- warnings --------------------------------------------------------------------------------


def test_an_unreachable_state_is_a_warning_and_the_chart_is_still_returned() -> None:
    text = """
        current_state: a
        states:
          - name: a
            func: increment
            current: {key: n, value: 0}
            target: {name: c, when: {key: n, value: 1}}
          - name: b
            func: increment
            current: {key: n, value: 0}
            target: {name: c, when: {key: n, value: 1}}
          - name: c
        """
    result = parse(chart(text), "x.yaml")

    assert [str(p) for p in result.problems] == ["x.yaml:7: warning: state 'b' is unreachable from 'a'"]
    assert all(p.warning for p in result.problems)
    assert result.errors == []
    assert result.unwrap().state_names == ["a", "b", "c"]


def test_states_after_a_cycle_are_unreachable() -> None:
    text = """
        current_state: a
        states:
          - name: a
            func: increment
            current: {key: n, value: 0}
            target: {name: b, when: {key: n, value: 1}}
          - name: b
            func: increment
            current: {key: n, value: 0}
            target: {name: a, when: {key: n, value: 1}}
          - name: c
        """
    assert messages(text) == ["x.yaml:11: warning: state 'c' is unreachable from 'a'"]


def test_a_final_initial_state_is_a_warning() -> None:
    text = """
        # nothing can move this
        current_state: done
        states:
          - name: done
        """
    result = parse(chart(text), "x.yaml")

    assert [str(p) for p in result.problems] == [
        "x.yaml:2: warning: the initial state 'done' is final: this chart can never move"
    ]
    assert result.unwrap().initial == "done"


def test_a_final_initial_state_makes_the_others_unreachable() -> None:
    text = """
        current_state: b
        states:
          - name: a
          - name: b
        """
    assert messages(text) == [
        "x.yaml:1: warning: the initial state 'b' is final: this chart can never move",
        "x.yaml:3: warning: state 'a' is unreachable from 'b'",
    ]


def test_warnings_are_not_reported_alongside_errors() -> None:
    text = """
        current_state: a
        states:
          - name: a
          - name: b
            func: vote
        """
    result = parse(chart(text), "x.yaml")

    assert [p.warning for p in result.problems] == [False]


# -- parse_all and unwrap --------------------------------------------------------------------


def test_parse_all_rejects_one_chart_name_in_two_files() -> None:
    results = parse_all({"a/release.yaml": GOOD, "b/release.yaml": GOOD, "c/other.yaml": GOOD})

    assert [r.path for r in results] == ["a/release.yaml", "b/release.yaml", "c/other.yaml"]
    assert results[0].chart is not None and results[0].problems == []
    assert results[1].chart is None
    assert [str(p) for p in results[1].problems] == [
        "b/release.yaml:1: chart name 'release' is already used by a/release.yaml"
    ]
    assert results[2].chart is not None and results[2].chart.name == "other"
    with pytest.raises(ChartError, match=r"already used by a/release\.yaml"):
        results[1].unwrap()


def test_parse_all_sees_names_set_in_the_file() -> None:
    results = parse_all({"one.yaml": "name: shared\n" + GOOD, "two.yaml": GOOD + "name: shared\n"})

    assert [str(p) for p in results[1].problems] == ["two.yaml:1: chart name 'shared' is already used by one.yaml"]


def test_parse_all_ignores_names_of_charts_that_failed() -> None:
    broken = "name: shared\ncurrent_state: nope\nstates:\n  - name: a\n"
    results = parse_all({"one.yaml": broken, "two.yaml": "name: shared\n" + GOOD})

    assert results[0].chart is None
    assert results[1].chart is not None and results[1].problems == []


def test_parse_all_with_distinct_names() -> None:
    results = parse_all({"a.yaml": GOOD, "b.yaml": GOOD})

    assert [r.unwrap().name for r in results] == ["a", "b"]


def test_unwrap_raises_chart_error_listing_every_error() -> None:
    text = """
        current_state: a
        states:
          - name: a
          - name: b
            func: vote
          - name: b
        """
    result = parse(chart(text), "bad.yaml")

    with pytest.raises(ChartError) as caught:
        result.unwrap()
    assert str(caught.value) == "\n".join(
        [
            "bad.yaml:5: unknown func 'vote' in state 'b' (expected increment, time or approval)",
            "bad.yaml:6: duplicate state 'b' (first defined at line 4)",
        ]
    )
    assert caught.value.problems == tuple(result.errors)
    assert caught.value.code == "chart_error"


def test_unwrap_returns_the_chart_despite_warnings() -> None:
    result = parse("current_state: a\nstates:\n  - name: a\n", "x.yaml")

    assert isinstance(result, Parsed)
    assert result.warnings and not result.errors
    assert result.unwrap() is result.chart
