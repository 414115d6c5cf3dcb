"""The `stateservice` command: serve, validate, status, reset, token, gate, report, run, approve, approvals,
import-asl, and the operator commands.

`main(argv) -> exit code`: parse the command line (`cli/parser.py`), build the Config, set up
logging, run the command (`cli/commands.py`). A user mistake prints one clear message to stderr
and exits non-zero (64 for a mistake in the command line itself); a traceback means a bug.
Redis is found the same way by every command: `--redis`, then STATESERVICE_REDIS_URL, then
the embedded server under `--data-dir`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
import sys
from collections.abc import Sequence

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from stateservice.cli import approvals, client, commands, import_asl, remote, run
from stateservice.cli.parser import OPERATOR, build_parser
from stateservice.config import Config, named
from stateservice.errors import ChartError, ModelConfigError, StateServiceError
from stateservice.telemetry import logs


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command `argv` names (default: the process's arguments); its exit code."""
    parser = build_parser()
    argv, command = split_command(list(sys.argv[1:] if argv is None else argv))
    args, extras = parser.parse_known_args(argv)
    if command is not None:
        args.command_args = command
    if extras:  # refused by the subcommand's parser, so its usage and flags are the ones shown
        parser.subcommand(args).unrecognized(extras)
    if args.command in OPERATOR:  # through the service: no service settings, no logging set-up
        try:
            base, token = client.settings(args.url, os.environ)
        except client.UsageError as exc:
            parser.subcommand(args).error(str(exc))
        options = {k: getattr(args, k, None) for k in ("reason", "host", "state")}
        print(remote.operate(args.command, base, args.chart, token, **options))
        return 0
    if args.command in ("gate", "report", "run", "approve", "approvals"):  # clients: no settings, no logging set-up
        try:
            return _client(args)
        except client.UsageError as exc:
            parser.subcommand(args).error(str(exc))
    try:
        return _run(args)
    except client.UsageError as exc:
        parser.subcommand(args).error(str(exc))
    except (ChartError, ModelConfigError) as exc:
        print(exc, file=sys.stderr)
        return 1
    except StateServiceError as exc:
        print(f"stateservice: error: {exc.message}", file=sys.stderr)
        return 1
    except (RedisConnectionError, RedisTimeoutError) as exc:
        print(f"stateservice: error: Redis is unreachable: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def split_command(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """`run ... -- COMMAND ARGS`: the arguments before `--`, and the command after it (None when not `run ... --`).

    argparse cannot stop at `--` after optional flags (REMAINDER would swallow `--host` too).
    """
    if "--" not in argv or "run" not in argv[: argv.index("--")]:
        return argv, None
    at = argv.index("--")
    return argv[:at], argv[at + 1 :]


def _client(args: argparse.Namespace) -> int:
    if args.command in ("approve", "approvals"):
        return _approvals(args)
    url, token = client.settings(args.url, os.environ)
    if args.command == "run":
        command = args.command_args
        if not command:
            raise client.UsageError("give the command to run after --, e.g. -- sudo systemctl restart app")
        job = run.Job(url, args.state, args.chart, args.host or socket.getfqdn(), token)
        return run.run(job, max(0.0, args.wait), command)
    if args.command == "gate":
        return client.gate(url, args.state, args.chart, max(0.0, args.wait), token)
    host = args.host or socket.getfqdn()
    return client.report(url, args.state, args.chart, host, token, max(0.0, args.wait))


def _approvals(args: argparse.Namespace) -> int:
    url, token = client.settings(args.url, os.environ)
    if args.command == "approve":
        return approvals.approve(url, args.continuation, args.input, token)
    return approvals.approvals(url, args.chart, token, args.json)


def _run(args: argparse.Namespace) -> int:
    if args.command == "token":  # no service settings: a bad STATESERVICE_* variable does not stop it
        return commands.token_create(args.name, args.scopes, args.token_charts)
    if args.command == "import-asl":  # a file to a file: no service settings, no logging set-up
        return import_asl.run(args.file, args.name, args.output)
    config = Config.load(args, os.environ, tty=sys.stderr.isatty())
    if args.command != "serve" and named("log_level").read(args, os.environ) is None:
        config = dataclasses.replace(config, log_level="warning")  # a one-shot command: only say what matters
    logs.configure(config.log_format, config.log_level)
    if args.command == "serve":
        return commands.serve(config)
    if args.command == "validate":
        return commands.validate_all(args.files, config)
    if args.command == "status":
        return commands.status(config, args.chart, args.json, args.url)
    return commands.reset(config, args.chart_file, args.yes, args.url)
