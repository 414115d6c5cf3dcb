"""parser.py and main(): usage mistakes exit 64 with the subcommand's usage and a did-you-mean; help has examples."""

from __future__ import annotations

import pytest

from stateservice.cli.main import main
from stateservice.cli.parser import USAGE, build_parser

COMMANDS = (
    "serve",
    "validate",
    "status",
    "reset",
    "gate",
    "report",
    "halt",
    "resume",
    "advance",
    "forget",
    "release",
    "approve",
    "approvals",
    "import-asl",
)


def refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == USAGE == 64
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_a_mistyped_flag_shows_the_subcommands_usage_and_the_flag_meant(capsys: pytest.CaptureFixture[str]) -> None:
    err = refused(["gate", "canary", "--wiat", "5"], capsys)
    assert err.startswith("usage: stateservice gate ")
    assert "stateservice gate: error: unrecognized arguments: --wiat 5; did you mean '--wait'?" in err


def test_a_mistyped_flag_with_a_value_in_it_is_matched_by_its_name(capsys: pytest.CaptureFixture[str]) -> None:
    err = refused(["report", "canary", "--hots=web1"], capsys)
    assert "unrecognized arguments: --hots=web1; did you mean '--host'?" in err


def test_a_flag_of_a_nested_command_is_refused_by_that_command(capsys: pytest.CaptureFixture[str]) -> None:
    err = refused(["token", "create", "deploy", "--scope", "read", "--chrt", "x"], capsys)
    assert err.startswith("usage: stateservice token create ")
    assert "did you mean '--chart'?" in err


def test_an_unlike_flag_gets_no_guess(capsys: pytest.CaptureFixture[str]) -> None:
    err = refused(["status", "--zzzzzz"], capsys)
    assert err.rstrip().endswith("unrecognized arguments: --zzzzzz")


def test_a_mistyped_command_gets_a_guess(capsys: pytest.CaptureFixture[str]) -> None:
    err = refused(["serv"], capsys)
    assert "invalid choice: 'serv'" in err and err.rstrip().endswith("did you mean 'serve'?")


def test_a_missing_argument_and_a_bad_choice_also_exit_64(capsys: pytest.CaptureFixture[str]) -> None:
    assert "the following arguments are required: STATE" in refused(["gate"], capsys)
    assert "invalid choice: 'rot'" in refused(["token", "create", "x", "--scope", "rot"], capsys)


@pytest.mark.parametrize("url", ["localhost:5000", "127.0.0.1", "ftp://host/x"])
def test_a_url_without_http_is_refused_with_the_fix(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    err = refused(["gate", "canary", "--url", url], capsys)
    assert err.startswith("usage: stateservice gate ")
    fix = f"http://{url}" if "://" not in url else "http://HOST:PORT"
    assert f"--url {url!r} is not an http:// or https:// URL; write it as {fix}" in err


def test_a_url_from_the_environment_is_checked_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STATESERVICE_URL", "stateservice.internal:5000")
    assert "write it as http://stateservice.internal:5000" in refused(["report", "canary"], capsys)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_commands_help_ends_with_examples(command: str) -> None:
    text = build_parser().subcommand(build_parser().parse_args([command, *_required(command)])).format_help()
    tail = text[text.index("examples:") :].splitlines()
    assert len(tail) >= 2 and all(line.startswith("  stateservice ") for line in tail[1:]), text


def _required(command: str) -> list[str]:
    return {
        "reset": ["x.yaml"],
        "gate": ["s"],
        "report": ["s"],
        "halt": ["c"],
        "resume": ["c"],
        "advance": ["c"],
        "forget": ["c", "h"],
        "release": ["c", "h", "--state", "s"],
        "approve": ["i"],
        "import-asl": ["f.json"],
    }.get(command, [])


def test_the_top_level_help_has_examples_and_descriptions_are_still_wrapped() -> None:
    parser = build_parser()
    assert "examples:\n  stateservice serve --chart examples/states.yaml" in parser.format_help()
    gate_help = parser.subcommand(parser.parse_args(["gate", "s"])).format_help()
    assert max(len(line) for line in gate_help.split("examples:")[0].splitlines()) <= 100


def test_report_host_defaults_to_nothing_so_main_asks_for_the_fqdn() -> None:
    args = build_parser().parse_args(["report", "canary"])
    assert args.host is None and args.wait == 30.0
