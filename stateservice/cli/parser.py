"""The `stateservice` command line: the argparse parser of every command.

The flags of settings come from the settings table (`config.Config`): each command takes the
settings whose declaration names it, in the table's order, after its own arguments.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import textwrap
from pathlib import Path
from typing import Any, NoReturn

from stateservice import __version__
from stateservice.config import SETTINGS
from stateservice.config.settings import Kind, Setting

USAGE = 64  # EX_USAGE: a mistake in the command line (2 means the service answered an error)
_CHOICE = re.compile(r"invalid choice: '([^']*)' \(choose from (.*)\)")


class Parser(argparse.ArgumentParser):
    """argparse, with a did-you-mean for a mistyped command or flag, and usage errors exiting 64."""

    def __init__(self, *args: Any, examples: str = "", **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        if examples:
            kwargs["epilog"] = "examples:\n" + textwrap.indent(textwrap.dedent(examples).strip("\n"), "  ")
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        if (choice := _CHOICE.search(message)) is not None:
            known = [c.strip("'") for c in choice.group(2).split(", ")]
            message += _hint(choice.group(1), known)
        self.print_usage(sys.stderr)
        self.exit(USAGE, f"{self.prog}: error: {message}\n")

    def unrecognized(self, extras: list[str]) -> NoReturn:
        """Refuse arguments this (sub)command does not take, suggesting the flag that was probably meant."""
        flags = [o for action in self._actions for o in action.option_strings if o.startswith("--")]
        hints = [_hint(extra.split("=", 1)[0], flags) for extra in extras if extra.startswith("-")]
        self.error(f"unrecognized arguments: {' '.join(extras)}" + next((h for h in hints if h), ""))

    def subcommand(self, args: argparse.Namespace) -> Parser:
        """The parser of the (sub)command `args` ran: its usage is the one to show."""
        found: Parser = self
        for dest in ("command", "token_command"):
            chosen = getattr(args, dest, None)
            commands = found._subcommands()
            if chosen is None or chosen not in commands:
                break
            found = commands[chosen]
        return found

    def _subcommands(self) -> dict[str, Parser]:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                return dict(action.choices)
        return {}


class _Formatter(argparse.HelpFormatter):
    """Descriptions wrapped as usual; the examples epilog kept line by line."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:\n"):
            return textwrap.indent(text, indent)
        return super()._fill_text(text, width, indent)


def _hint(given: str, known: list[str]) -> str:
    close = difflib.get_close_matches(given, known, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def build_parser() -> Parser:
    parser = Parser(
        prog="stateservice",
        description="State machines as a service for fleets: HTTP gates kept in Redis.",
        examples="""
            stateservice serve --chart examples/states.yaml
            stateservice gate canary --wait 600 && sudo systemctl restart app
        """,
    )
    parser.add_argument("--version", action="version", version=f"stateservice {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser(
        "serve",
        help="serve charts over HTTP",
        description="Serve charts over HTTP until SIGTERM or Ctrl-C.",
        examples="""
            stateservice serve --chart examples/states.yaml
            stateservice serve --charts /etc/stateservice/charts --redis redis://redis.internal:6379/0 --workers 4
        """,
    )
    add_settings(serve, "serve")

    validate = commands.add_parser(
        "validate",
        help="check chart files, configuration files and model configs without serving them",
        description="Check chart files (a DIR, or --charts DIR: every *.yaml in it) and --configuration files; "
        "print each problem as FILE:LINE: message. With --config and --models, "
        "check every model config and load its model file; print each problem as FILE: message. "
        "Exit 1 on any error, 0 otherwise (warnings included).",
        examples="""
            stateservice validate examples/states.yaml
            stateservice validate --configuration orders.yaml
            stateservice validate --config examples/models/conf --models /var/lib/stateservice/models
        """,
    )
    validate.add_argument("files", nargs="*", metavar="FILE|DIR", type=Path)
    add_settings(validate, "validate")

    _store_commands(commands)
    _client_commands(commands)
    _approval_commands(commands)
    _operator_commands(commands)
    _token_commands(commands)
    _import_command(commands)
    return parser


def _store_commands(commands: argparse._SubParsersAction[Parser]) -> None:
    """`status` and `reset`: the charts kept in Redis, read there or through a running service (--url)."""
    status = commands.add_parser(
        "status",
        help="show charts' state, read from Redis (or from a service with --url)",
        description="Show the current state, counters and entry time of one chart or of "
        "every chart registered in Redis. Needs no chart file and no running service; with --url "
        "it asks a running service instead (read scope), for when Redis is not reachable from here.",
        examples="""
            stateservice status
            stateservice status states --json --redis redis://127.0.0.1:6379/0
            stateservice status --url https://stateservice.internal:5000
        """,
    )
    status.add_argument(
        "chart",
        nargs="?",
        metavar="NAME",
        help="a chart, or a configuration (NAME or NAME:VERSION) (default: every chart, then every configuration)",
    )
    status.add_argument("--json", action="store_true", help="print JSON (the shape of GET /charts/{chart})")
    status.add_argument("--url", help="ask this service over HTTP instead of Redis; token from STATESERVICE_TOKEN")
    add_settings(status, "status")

    reset = commands.add_parser(
        "reset",
        help="put a chart back to its initial state",
        description="Put a chart back to its initial state, every counter at its start value; recorded in "
        "the chart's history with cause 'reset'. The chart is a chart file, or the name of a chart "
        "registered in Redis (its definition as last served). With --url, a running service does it "
        "(admin scope).",
        examples="""
            stateservice reset examples/states.yaml --yes
            stateservice reset states --url http://127.0.0.1:5000
        """,
    )
    reset.add_argument("chart_file", metavar="CHART_FILE|CHART")
    reset.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    reset.add_argument("--url", help="ask this service over HTTP instead of Redis; token from STATESERVICE_TOKEN")
    add_settings(reset, "reset")


def _import_command(commands: argparse._SubParsersAction[Parser]) -> None:
    """`import-asl`: an Amazon States Language document (JSON) to a chart file; no service, no Redis."""
    command = commands.add_parser(
        "import-asl",
        help="convert an Amazon States Language document (JSON) into a chart file",
        description="Write the chart (YAML) of an Amazon States Language state machine: Pass, Wait, Succeed "
        'and Fail states, and Task with Resource "module:suspend" (with its Choice) as an approval state. '
        "Anything else is refused: each refusal on its own line as FILE: $.path: message, exit 1. Exit 2 when "
        "FILE cannot be read or is not JSON, 0 when the chart is written. See docs/asl.md.",
        examples="""
            stateservice import-asl approve.json > approve.yaml
            stateservice import-asl statebox.json --name rollout --output charts/rollout.yaml
        """,
    )
    command.add_argument("file", metavar="FILE.json", type=Path)
    command.add_argument(
        "--name", help="the chart's name (default: a statebox file's machine name, else FILE's name without .json)"
    )
    command.add_argument(
        "--output", "-o", type=Path, metavar="FILE", help="write the chart to FILE (default: standard output)"
    )


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


def _token_commands(commands: argparse._SubParsersAction[Parser]) -> None:
    token = commands.add_parser("token", help="make tokens for the tokens file")
    actions = token.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    create = actions.add_parser(
        "create",
        help="print a new secret and its tokens-file entry",
        description="Print a new random secret alone on the first line, then the YAML entry (its SHA-256, "
        "never the secret) to add under `tokens:` in the --tokens file.",
        examples="""
            stateservice token create deploy --scope read --scope report --chart rollout
        """,
    )
    create.add_argument("name", metavar="NAME", help="the token's name (shown in logs and history)")
    create.add_argument(
        "--scope",
        dest="scopes",
        action="append",
        required=True,
        choices=("read", "report", "approve", "admin"),
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


OPERATOR = {
    "halt": (
        "stop a rollout: gates, slots and reports answer 409 until resumed",
        "stateservice halt rollout --reason 'error rate'",
    ),
    "resume": ("let a halted rollout go on (its failures stay recorded)", "stateservice resume rollout"),
    "advance": (
        "move a chart to its current state's next state now",
        "stateservice advance rollout --reason 'canary is fine'",
    ),
    "forget": ("forget a host's report and failure in the current state", "stateservice forget rollout web17"),
    "release": ("free the slot a host holds (e.g. a dead host's)", "stateservice release rollout web17 --state fleet"),
}


def _operator_commands(commands: argparse._SubParsersAction[Parser]) -> None:
    """Operator actions through a running service (admin scope): each recorded in the chart's history."""
    common = Parser(add_help=False)
    common.add_argument(
        "--url", help="the service [env STATESERVICE_URL; default http://127.0.0.1:5000]; token from STATESERVICE_TOKEN"
    )
    common.add_argument("chart", metavar="CHART")
    for name, (summary, example) in OPERATOR.items():
        command = commands.add_parser(
            name,
            parents=[common],
            help=summary,
            description=f"{summary[0].upper()}{summary[1:]}, through a running service (admin scope); recorded "
            "in the chart's history with the token's name. Exit 0 done, 2 the service refused or could not be "
            "reached, 64 a mistake in the command line.",
            examples=example,
        )
        if name in ("forget", "release"):
            command.add_argument("host", metavar="HOST")
        if name == "release":
            command.add_argument("--state", required=True, help="the state whose slot the host holds")
        if name in ("halt", "advance"):
            command.add_argument("--reason", help="why, for the history (at most 200 characters)")


def _run_command(commands: argparse._SubParsersAction[Parser], common: Parser) -> None:
    run = commands.add_parser(
        "run",
        parents=[common],
        help="wait for STATE and a free slot, run COMMAND holding it, report how it went",
        description="The fleet form of `consul lock -n`: wait (long-polling) until STATE is current and one of "
        "its slots is free (a state without concurrency needs none), hold the slot while COMMAND runs (renewed "
        "at a third of its time to live), then report success (exit 0) or failure (any other exit; the exit code "
        "is the reason). Exits with COMMAND's exit code; 75 when the wait ran out first; 2 when the service "
        "refused (a halted chart, an unknown state); 64 on a mistake in the command line. A halt while COMMAND "
        "runs is said on stderr; COMMAND is not killed.",
        examples="""
            stateservice run restart --chart rollout -- sudo systemctl restart app
            stateservice run canary --wait 3600 --host web1.example.com -- ./upgrade.sh --fast
        """,
    )
    run.add_argument("state", metavar="STATE")
    run.add_argument("--host", help="this host's name (default: this machine's fully qualified name)")
    run.add_argument(
        "--wait",
        type=float,
        default=float("inf"),
        metavar="SECONDS",
        help="how long to wait for STATE and a slot (default: until they come)",
    )
    run.add_argument("command_args", nargs="*", metavar="-- COMMAND [ARGS ...]")


def _approval_commands(commands: argparse._SubParsersAction[Parser]) -> None:
    """Approvals through a running service: resume one (approve scope, or admin), list the waiting ones (read)."""
    common = Parser(add_help=False)
    common.add_argument(
        "--url", help="the service [env STATESERVICE_URL; default http://127.0.0.1:5000]; token from STATESERVICE_TOKEN"
    )
    approve = commands.add_parser(
        "approve",
        parents=[common],
        help="resume the approval ID waits for, with --input: exit 0 resumed, 1 refused, 2 on error",
        description="Resume a continuation (its id, /continuations/ID, or its whole URL) with a JSON object: it is "
        "merged into the chart's context and the first matching choice of the approval state (else its default) "
        "is the next state. Exit 0 resumed (prints `CHART: FROM -> TO`), 1 used already, expired, or no choice "
        "matched (the choices are printed; the continuation stays usable), 2 any other error, 64 a bad --input.",
        examples="""
            stateservice approve 3q2-7wEXAMPLEid0aBcDeF --input '{"approved": true}'
            stateservice approvals --chart rollout
        """,
    )
    approve.add_argument("continuation", metavar="ID")
    approve.add_argument("--input", metavar="JSON", help="the resume's input, a JSON object (default {})")
    listing = commands.add_parser(
        "approvals",
        parents=[common],
        help="list the approvals waiting now: id, chart, state, since, expiry, choices",
        description="The continuations waiting now, oldest first (of one chart with --chart), with their choices.",
        examples="""
            stateservice approvals
            stateservice approvals --chart rollout --json
        """,
    )
    listing.add_argument("--chart", help="only this chart's")
    listing.add_argument("--json", action="store_true", help="print the JSON the service answered")


def _client_commands(commands: argparse._SubParsersAction[Parser]) -> None:
    common = Parser(add_help=False)
    common.add_argument(
        "--url", help="the service [env STATESERVICE_URL; default http://127.0.0.1:5000]; token from STATESERVICE_TOKEN"
    )
    common.add_argument("--chart", help="the chart (needed when the service serves several)")
    gate = commands.add_parser(
        "gate",
        parents=[common],
        help="exit 0 if STATE is current (waiting up to --wait), 1 if not, 2 on error",
        description="Ask whether STATE is the chart's current state: exit 0 yes, 1 no, 2 on any error "
        "(unreachable, a 4xx other than 406, a 5xx), 64 on a mistake in the command line. With --wait, wait "
        "up to SECONDS for it using the server's long-poll, retrying while the service is unreachable or "
        "answers 503 (said on stderr when it is a terminal).",
        examples="""
            stateservice gate canary && sudo systemctl restart app
            stateservice gate canary --wait 600 --url https://stateservice.internal:5000
        """,
    )
    gate.add_argument("state", metavar="STATE")
    gate.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="how long to wait for STATE, riding out restarts and 503s meanwhile (default 0: ask once)",
    )
    report = commands.add_parser(
        "report",
        parents=[common],
        help="report STATE done for --host: exit 0 if taken, 1 if not current, 2 on error",
        description="Report that HOST finished STATE (idempotent: a repeat is not counted twice). "
        "Exit 0 on 200, 1 on 406 (STATE is not current), 2 otherwise (after retrying for up to --wait "
        "seconds while the service is unreachable or answers 503), 64 on a mistake in the command line.",
        examples="""
            stateservice report canary
            stateservice report canary --host web1.example.com --chart rollout
        """,
    )
    _run_command(commands, common)
    report.add_argument("state", metavar="STATE")
    report.add_argument(
        "--host",
        default=None,
        help="this host's name, so a re-run never counts twice (default: this machine's fully qualified name)",
    )
    report.add_argument(
        "--wait",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long to keep retrying while the service is unreachable or answers 503 (default 30)",
    )
