"""The `stateservice` command: serve, validate, status, reset.

`main(argv) -> exit code`. A user mistake prints one clear message to stderr and exits
non-zero; a traceback means a bug. Redis is found the same way by every command: `--redis`,
then STATESERVICE_REDIS_URL, then the embedded server under `--data-dir`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import socket
import sys
from collections.abc import Sequence
from datetime import tzinfo
from pathlib import Path

import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from stateservice import __version__, admin, logs
from stateservice.charts_files import check_files
from stateservice.config import Config
from stateservice.core.parse import Parsed
from stateservice.errors import ChartError, StateServiceError
from stateservice.store.connect import redact

log = structlog.get_logger(__name__)


def _zone_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timezone",
        metavar="ZONE",
        help="time zone for clock times written without an offset, e.g. Europe/Berlin "
        "[env STATESERVICE_TIMEZONE; default: the server's local zone]",
    )


def _redis_flags(parser: argparse.ArgumentParser) -> None:
    _zone_flag(parser)
    parser.add_argument(
        "--redis",
        dest="redis_url",
        metavar="URL",
        help="use this Redis (redis://, rediss://, unix://) instead of the embedded one [env STATESERVICE_REDIS_URL]",
    )
    parser.add_argument(
        "--data-dir",
        dest="data_dir",
        metavar="DIR",
        help="where the embedded Redis keeps its data and socket [env STATESERVICE_DATA_DIR; "
        "default ./stateservice-data]",
    )
    parser.add_argument(
        "--log-format",
        dest="log_format",
        choices=logs.FORMATS,
        help="log lines as json or console [env STATESERVICE_LOG_FORMAT; default: console on a "
        "terminal, json otherwise]",
    )
    parser.add_argument(
        "--log-level",
        dest="log_level",
        choices=logs.LEVELS,
        help="least severe level logged [env STATESERVICE_LOG_LEVEL; default info]",
    )


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
    serve.add_argument(
        "--chart",
        "--machine",
        dest="charts",
        action="append",
        metavar="FILE",
        help="a chart file to serve; repeat for several [env STATESERVICE_CHART, ':'-separated]",
    )
    serve.add_argument("--host", help="address to listen on [env STATESERVICE_HOST; default 127.0.0.1]")
    serve.add_argument("--port", help="port to listen on; 0 picks a free one [env STATESERVICE_PORT; default 5000]")
    serve.add_argument(
        "--workers",
        metavar="N",
        help="worker processes sharing the port, or 'auto' for one per CPU [env STATESERVICE_WORKERS; default 1]",
    )
    serve.add_argument(
        "--lease-ttl",
        dest="lease_ttl",
        metavar="SECONDS",
        help="how long the time-state leader's lease lasts unless renewed; another worker takes over within "
        "about this long after the leader dies [env STATESERVICE_LEASE_TTL; default 5]",
    )
    _redis_flags(serve)

    validate = commands.add_parser(
        "validate",
        help="check chart files without serving them",
        description="Check chart files; print each problem as FILE:LINE: message. "
        "Exit 1 on any error, 0 otherwise (warnings included).",
    )
    validate.add_argument("files", nargs="+", metavar="FILE", type=Path)
    _zone_flag(validate)

    status = commands.add_parser(
        "status",
        help="show charts' state, read from Redis",
        description="Show the current state, counters and entry time of one chart or of "
        "every chart registered in Redis. Needs no chart file and no running service.",
    )
    status.add_argument("chart", nargs="?", metavar="CHART", help="chart name (default: every registered chart)")
    status.add_argument("--json", action="store_true", help="print JSON (the shape of GET /charts/{chart})")
    _redis_flags(status)

    reset = commands.add_parser(
        "reset",
        help="put a chart back to its initial state",
        description="Put the chart of CHART_FILE back to that file's initial state, every "
        "counter at its start value; recorded in the chart's history with cause 'reset'.",
    )
    reset.add_argument("chart_file", metavar="CHART_FILE", type=Path)
    reset.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    _redis_flags(reset)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = Config.load(args, os.environ, tty=sys.stderr.isatty())
        if (
            args.command != "serve"
            and getattr(args, "log_level", None) is None
            and not os.environ.get("STATESERVICE_LOG_LEVEL")
        ):
            config = dataclasses.replace(config, log_level="warning")  # a one-shot command: only say what matters
        logs.configure(config.log_format, config.log_level)
        if args.command == "serve":
            from stateservice.runner import serve  # the server's imports are not needed by validate

            return serve(config)
        if args.command == "validate":
            return validate(args.files, config.zone())
        if args.command == "status":
            return status(config, args.chart, args.json)
        return reset(config, args.chart_file, args.yes)
    except ChartError as exc:
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


def validate(files: Sequence[Path], zone: tzinfo) -> int:
    results: list[Parsed] = check_files(files, zone)
    for result in results:
        for problem in result.problems:
            print(problem, file=sys.stdout if problem.warning else sys.stderr)
        if result.chart is not None:
            chart = result.chart
            print(f"{result.path}: ok: chart {chart.name!r}, {len(chart.states)} states, starts at {chart.initial!r}")
    return 1 if any(r.errors for r in results) else 0


def status(config: Config, chart: str | None, as_json: bool) -> int:
    from stateservice.runner import redis_for

    with redis_for(config) as url:
        views = asyncio.run(admin.status(url, chart, config.zone()))
    print(admin.render(views, as_json))
    return 0


def reset(config: Config, path: Path, yes: bool) -> int:
    from stateservice.runner import redis_for

    results = check_files([path], config.zone())
    if results[0].errors:
        raise ChartError(results[0].errors)
    chart = results[0].unwrap()
    with redis_for(config) as url:
        if not yes:
            now = asyncio.run(admin.current(url, chart))
            if not sys.stdin.isatty():
                print(
                    "stateservice: error: refusing to reset without a terminal to confirm; pass --yes", file=sys.stderr
                )
                return 2
            answer = input(
                f"Reset chart {chart.name!r} (in {now or 'no state'}) at {redact(url)} to {chart.initial!r}? [y/N] "
            )
            if answer.strip().lower() not in ("y", "yes"):
                print("not reset", file=sys.stderr)
                return 2
        before, after = asyncio.run(admin.reset(url, chart, socket.gethostname()))
    print(f"chart {chart.name!r} reset: {before or '(no state)'} -> {after}")
    return 0
