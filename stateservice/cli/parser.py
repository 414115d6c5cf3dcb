"""The `stateservice` command line: the argparse parser of every command.

The flags of settings come from the settings table (`config.Config`): each command takes the
settings whose declaration names it, in the table's order, after its own arguments.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from stateservice import __version__
from stateservice.config import SETTINGS
from stateservice.settings import Kind, Setting


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stateservice",
        description="State machines as a service for fleets: HTTP gates kept in Redis.",
    )
    parser.add_argument("--version", action="version", version=f"stateservice {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser(
        "serve", help="serve charts over HTTP", description="Serve charts over HTTP until SIGTERM or Ctrl-C."
    )
    add_settings(serve, "serve")

    validate = commands.add_parser(
        "validate",
        help="check chart files and model configs without serving them",
        description="Check chart files (a DIR, or --charts DIR: every *.yaml in it); print each problem as "
        "FILE:LINE: message. With --config and --models, "
        "check every model config and load its model file; print each problem as FILE: message. "
        "Exit 1 on any error, 0 otherwise (warnings included).",
    )
    validate.add_argument("files", nargs="*", metavar="FILE|DIR", type=Path)
    add_settings(validate, "validate")

    status = commands.add_parser(
        "status",
        help="show charts' state, read from Redis",
        description="Show the current state, counters and entry time of one chart or of "
        "every chart registered in Redis. Needs no chart file and no running service.",
    )
    status.add_argument("chart", nargs="?", metavar="CHART", help="chart name (default: every registered chart)")
    status.add_argument("--json", action="store_true", help="print JSON (the shape of GET /charts/{chart})")
    add_settings(status, "status")

    reset = commands.add_parser(
        "reset",
        help="put a chart back to its initial state",
        description="Put the chart of CHART_FILE back to that file's initial state, every "
        "counter at its start value; recorded in the chart's history with cause 'reset'.",
    )
    reset.add_argument("chart_file", metavar="CHART_FILE", type=Path)
    reset.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    add_settings(reset, "reset")
    _client_commands(commands)
    _token_commands(commands)
    return parser


def add_settings(parser: argparse.ArgumentParser, command: str) -> None:
    """The flags of every setting `command` takes. Each defaults to None: `Config.load` tells given from not."""
    for declared in SETTINGS:
        if command in declared.commands:
            parser.add_argument(*declared.flags, **_options(declared, command))


def _options(declared: Setting[Any], command: str) -> dict[str, Any]:
    options: dict[str, Any] = {"dest": declared.name, "default": None, "help": declared.flag_help(command)}
    if declared.kind is Kind.SWITCH:
        options["action"] = "store_true"
    elif declared.kind is Kind.ON_OFF:
        options["action"] = argparse.BooleanOptionalAction
    else:
        options.update(metavar=declared.metavar, choices=declared.choices)
        if declared.kind is Kind.PATHS:
            options["action"] = "append"
    return options


def _token_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    token = commands.add_parser("token", help="make tokens for the tokens file")
    actions = token.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    create = actions.add_parser(
        "create",
        help="print a new secret and its tokens-file entry",
        description="Print a new random secret alone on the first line, then the YAML entry (its SHA-256, "
        "never the secret) to add under `tokens:` in the --tokens file.",
    )
    create.add_argument("name", metavar="NAME", help="the token's name (shown in logs and history)")
    create.add_argument(
        "--scope",
        dest="scopes",
        action="append",
        required=True,
        choices=("read", "report", "admin"),
        help="a scope to grant; repeat for several",
    )
    create.add_argument(
        "--chart",
        dest="token_charts",
        action="append",
        default=[],
        metavar="CHART",
        help="restrict the token to this chart; repeat for several (default: every chart)",
    )


def _client_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url", help="the service [env STATESERVICE_URL; default http://127.0.0.1:5000]; token from STATESERVICE_TOKEN"
    )
    common.add_argument("--chart", help="the chart (needed when the service serves several)")
    gate = commands.add_parser(
        "gate",
        parents=[common],
        help="exit 0 if STATE is current (waiting up to --wait), 1 if not, 2 on error",
        description="Ask whether STATE is the chart's current state: exit 0 yes, 1 no, 2 on any error "
        "(unreachable, a 4xx other than 406, a 5xx). With --wait, wait up to SECONDS for it using the "
        "server's long-poll.",
    )
    gate.add_argument("state", metavar="STATE")
    gate.add_argument("--wait", type=float, default=0.0, metavar="SECONDS", help="how long to wait (default 0)")
    report = commands.add_parser(
        "report",
        parents=[common],
        help="report STATE done for --host: exit 0 if taken, 1 if not current, 2 on error",
        description="Report that HOST finished STATE (idempotent: a repeat is not counted twice). "
        "Exit 0 on 200, 1 on 406 (STATE is not current), 2 otherwise.",
    )
    report.add_argument("state", metavar="STATE")
    report.add_argument("--host", required=True, help="this host's name, so a re-run never counts twice")
