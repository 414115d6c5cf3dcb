"""The `stateservice` command: serve, validate, status, reset, token, gate, report.

`main(argv) -> exit code`: parse the command line (`cli/parser.py`), build the Config, set up
logging, run the command (`cli/commands.py`). A user mistake prints one clear message to stderr
and exits non-zero; a traceback means a bug. Redis is found the same way by every command:
`--redis`, then STATESERVICE_REDIS_URL, then the embedded server under `--data-dir`.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from stateservice.cli import client
from stateservice.cli.commands import reset, status, token_create, validate_all
from stateservice.cli.parser import build_parser
from stateservice.config import Config, named
from stateservice.errors import ChartError, ModelConfigError, StateServiceError
from stateservice.telemetry import logs


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("gate", "report"):  # clients: no service settings, no logging set-up
        url, token = client.settings(args.url, os.environ)
        if args.command == "gate":
            return client.gate(url, args.state, args.chart, max(0.0, args.wait), token)
        return client.report(url, args.state, args.chart, args.host, token)
    if args.command == "token":
        try:
            return token_create(args.name, args.scopes, args.token_charts)
        except StateServiceError as exc:
            print(f"stateservice: error: {exc.message}", file=sys.stderr)
            return 1
    try:
        config = Config.load(args, os.environ, tty=sys.stderr.isatty())
        if (
            args.command != "serve"
            and getattr(args, "log_level", None) is None
            and not os.environ.get(named("log_level").env)
        ):
            config = dataclasses.replace(config, log_level="warning")  # a one-shot command: only say what matters
        logs.configure(config.log_format, config.log_level)
        if args.command == "serve":
            from stateservice.server.supervisor import serve  # the server's imports are not needed by validate

            return serve(config)
        if args.command == "validate":
            return validate_all(args.files, config)
        if args.command == "status":
            return status(config, args.chart, args.json)
        return reset(config, args.chart_file, args.yes)
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
