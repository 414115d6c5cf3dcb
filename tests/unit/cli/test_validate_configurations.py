"""cli/commands.py: `validate --configuration FILE` reports configurations as charts are reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from stateservice.cli.commands import validate_all
from stateservice.config import Config
from tests.support.paths import EXAMPLES

ORDERS = """\
name: orders
version: v1
states: [new, paid, shipped]
starting_state: new
transitions:
  - {from: new, to: paid, event: pay}
  - {from: paid, to: shipped, event: ship}
"""


def test_a_good_configuration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "orders.yaml"
    path.write_text(ORDERS)

    assert validate_all([], Config(configurations=(path,))) == 0

    out, err = capsys.readouterr()
    assert out == f"{path}: ok: configuration 'orders:v1', 3 states, 2 transitions, starts at 'new'\n"
    assert err == ""


def test_bad_configurations_print_file_line_messages_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(ORDERS)
    bad.write_text(
        ORDERS.replace("[new, paid, shipped]", "[new, paid]").replace("starting_state: new", "starting_state: yes")
    )

    assert validate_all([], Config(configurations=(good, bad, tmp_path / "nowhere.yaml"))) == 1

    out, err = capsys.readouterr()
    assert out == f"{good}: ok: configuration 'orders:v1', 3 states, 2 transitions, starts at 'new'\n"
    assert err.splitlines() == [
        f"{bad}:4: starting_state: 'yes' is not one of the states",
        f"{bad}:7: transitions.1.to: unknown state 'shipped'; the states are new, paid",
        f"{tmp_path / 'nowhere.yaml'}: cannot read the configuration file: No such file or directory",
    ]


def test_charts_and_configurations_together(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "orders.yaml"
    path.write_text(ORDERS.replace("name: orders", "name: [orders]"))

    assert validate_all([EXAMPLES / "states.yaml"], Config(configurations=(path,))) == 1

    out, err = capsys.readouterr()
    assert [line.split(": ok: ")[1].split(" ")[0] for line in out.splitlines()] == ["chart"]
    assert err == f"{path}:1: name: ['orders'] is not a name: letters, digits, '.', '_', '-', up to 64, no ':'\n"
