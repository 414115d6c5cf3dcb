"""charts/configurations.py: configuration files read, parsed and cross-checked, every problem at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from stateservice.charts.configurations import Checked, check_configuration_files, load_configurations
from stateservice.errors import ChartError, Problem

ORDERS = """\
name: orders
version: v1
states: [new, paid]
starting_state: new
transitions:
  - {from: new, to: paid, event: pay}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_good_files_load(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", ORDERS)
    b = write(tmp_path, "b.yaml", ORDERS.replace("v1", "v2"))

    assert [c.ref for c in load_configurations([a, b])] == ["orders:v1", "orders:v2"]


def test_every_problem_of_every_file(tmp_path: Path) -> None:
    good = write(tmp_path, "good.yaml", ORDERS)
    bad = write(tmp_path, "bad.yaml", ORDERS.replace("to: paid", "to: gone") + "colour: red\n")
    again = write(tmp_path, "again.yaml", ORDERS.replace("[new, paid]", "[new, paid, gone]"))
    missing = tmp_path / "missing.yaml"
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"name: \xff\n")

    results = check_configuration_files([good, bad, again, missing, binary])

    assert results[0].configuration is not None and results[0].problems == ()
    assert results[1] == Checked(
        str(bad),
        None,
        (
            Problem(str(bad), 6, "transitions.0.to: unknown state 'gone'; the states are new, paid"),
            Problem(str(bad), 7, "colour: unknown key; expected name, starting_state, states, transitions, version"),
        ),
    )
    assert results[2] == Checked(
        str(again), None, (Problem(str(again), 1, f"configuration orders:v1 is also defined, differently, in {good}"),)
    )
    assert results[3] == Checked(
        str(missing), None, (Problem(str(missing), 0, "cannot read the configuration file: No such file or directory"),)
    )
    assert results[4] == Checked(
        str(binary), None, (Problem(str(binary), 0, "cannot read the configuration file: not UTF-8 text"),)
    )

    with pytest.raises(ChartError) as caught:
        load_configurations([good, bad, again, missing, binary])
    assert [p.path for p in caught.value.problems] == [str(bad), str(bad), str(again), str(missing), str(binary)]


def test_the_same_configuration_twice_is_defined_once(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", ORDERS)
    b = write(tmp_path, "b.yaml", "# the same, written again\n" + ORDERS)
    c = write(tmp_path, "c.yaml", ORDERS.replace("v1", "v0"))

    assert [c.ref for c in load_configurations([a, c, b, a])] == ["orders:v1", "orders:v0"]
    assert [r.problems for r in check_configuration_files([a, b])] == [(), ()]
