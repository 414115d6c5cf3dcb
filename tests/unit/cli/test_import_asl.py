"""`stateservice import-asl` in process: the chart on stdout or in --output, refusals as FILE: $.path: message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stateservice.cli.main import main
from stateservice.cli.parser import build_parser
from stateservice.core.parse import parse

APPROVE = {
    "Comment": "ask, then go on",
    "StartAt": "Ask",
    "States": {
        "Ask": {"Type": "Task", "Resource": "module:suspend", "Next": "Done"},
        "Done": {"Type": "Succeed"},
    },
}


def test_the_chart_goes_to_stdout_named_after_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "hold-on.json"
    source.write_text(json.dumps(APPROVE))
    assert main(["import-asl", str(source)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.startswith('# Imported by `stateservice import-asl` from "hold-on.json" (Amazon States Language).\n')
    chart = parse(out, "x.yaml").unwrap()
    assert (chart.name, chart.initial, [s.name for s in chart.states]) == ("hold-on", "Ask", ["Ask", "Done"])


def test_output_and_name_write_a_file_that_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source, target = tmp_path / "a.json", tmp_path / "charts" / "b.yaml"
    source.write_text(json.dumps(APPROVE))
    target.parent.mkdir()
    assert main(["import-asl", str(source), "--name", "gate.1", "--output", str(target)]) == 0
    assert capsys.readouterr().out == f"{target}: chart 'gate.1' imported from {source}\n"
    assert parse(target.read_text(), str(target)).unwrap().name == "gate.1"


def test_an_unwritable_output_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "a.json"
    source.write_text(json.dumps(APPROVE))
    assert main(["import-asl", str(source), "-o", str(tmp_path / "no" / "b.yaml")]) == 2
    assert (
        capsys.readouterr().err == f"{tmp_path / 'no' / 'b.yaml'}: cannot write the file: No such file or directory\n"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '{"StartAt": "A",\n "States": {,}}',
            "invalid JSON: Expecting property name enclosed in double quotes: line 2 column 13 (char 29)",
        ),
        ('{"StartAt": "A", "States": {"A": {}, "A": {}}}', "invalid JSON: the key 'A' appears twice in one object"),
        ("[" * 100_000, "invalid JSON: the document nests too deeply"),
    ],
)
def test_a_file_that_is_not_json_exits_2(
    text: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "m.json"
    source.write_text(text)
    assert main(["import-asl", str(source)]) == 2
    assert capsys.readouterr() == ("", f"{source}: {message}\n")


def test_a_refused_document_prints_each_refusal_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "m.json"
    source.write_text(json.dumps({"StartAt": "A", "States": {"A": {"Type": "Map"}, "B": {"Type": "Pass"}}}))
    assert main(["import-asl", str(source), "--name", "bad name"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"{source}: the chart name 'bad name' is not valid: use letters, digits, '.', '_', '-' (at most 64, "
        "starting with a letter or digit)",
        f"{source}: $.States.A.Type: 'Map' is not supported: only Pass, Wait, Choice, Succeed, Fail and Task with "
        'Resource "module:suspend" import',
        f'{source}: $.States.B: needs either Next (a state name) or "End": true',
    ]


def test_the_help_says_what_imports_and_ends_with_examples() -> None:
    parser = build_parser()
    text = parser.subcommand(parser.parse_args(["import-asl", "x.json"])).format_help()
    assert "module:suspend" in text
    tail = text[text.index("examples:") :].splitlines()
    assert len(tail) == 3 and all(line.startswith("  stateservice import-asl ") for line in tail[1:])
