"""The `stateservice` command: serve, validate, status, reset.

`main(argv) -> exit code`. A user mistake prints one clear message to stderr and exits
non-zero; a traceback means a bug. Redis is found the same way by every command: `--redis`,
then STATESERVICE_REDIS_URL, then the embedded server under `--data-dir`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import getpass
import os
import socket
import sys
from collections.abc import Sequence
from datetime import tzinfo
from pathlib import Path

import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from stateservice import __version__
from stateservice.charts.files import check_files
from stateservice.cli import admin, client
from stateservice.config import Config
from stateservice.core.parse import Parsed
from stateservice.errors import ChartError, ModelConfigError, StartupError, StateServiceError
from stateservice.models.conf import check_configs
from stateservice.models.conf import describe as describe_model
from stateservice.models.files import load_now
from stateservice.server import eventloop
from stateservice.store.redis.connect import redact
from stateservice.telemetry import logs

log = structlog.get_logger(__name__)


def _zone_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timezone",
        metavar="ZONE",
        help="time zone for clock times written without an offset, e.g. Europe/Berlin "
        "[env STATESERVICE_TIMEZONE; default: the server's local zone]",
    )


def _model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        dest="model_config",
        metavar="DIR",
        help="a directory of model configs (*.json), one model each; needs --models [env STATESERVICE_MODEL_CONFIG]",
    )
    parser.add_argument(
        "--models",
        metavar="DIR",
        help="the directory of model files, <DIR>/<team>/<model>; it must be trusted [env STATESERVICE_MODELS]",
    )
    parser.add_argument(
        "--allow-writable-models",
        dest="allow_writable_models",
        action="store_true",
        default=None,
        help="load model files even if others than their owner can write them or their directories (unsafe: "
        "loading a pickle runs code from it) [env STATESERVICE_ALLOW_WRITABLE_MODELS; default off]",
    )


def _redis_flags(parser: argparse.ArgumentParser) -> None:
    _zone_flag(parser)
    parser.add_argument(
        "--redis",
        dest="redis_url",
        metavar="URL",
        help="use this Redis (redis://, rediss://, unix://, or redis+sentinel://HOST:PORT,.../SERVICE to follow "
        "the master Sentinel names) instead of the embedded one [env STATESERVICE_REDIS_URL]",
    )
    parser.add_argument(
        "--redis-cluster",
        dest="redis_cluster",
        action="store_true",
        default=None,
        help="--redis names a node of a Redis Cluster: each chart lives on the master owning its slot "
        "[env STATESERVICE_REDIS_CLUSTER; default off]",
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
    serve.add_argument(
        "--coalesce",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="commit one chart's concurrent reports together, and share concurrent gate reads "
        "[env STATESERVICE_COALESCE; default on]",
    )
    serve.add_argument(
        "--max-wait",
        dest="max_wait",
        metavar="SECONDS",
        help="the longest long-poll (`GET /state?...&wait=S`) allowed; more is a 400 "
        "[env STATESERVICE_MAX_WAIT; default 300]",
    )
    _model_flags(serve)
    serve.add_argument(
        "--max-body",
        dest="max_body",
        metavar="BYTES",
        help="the largest request body (e.g. 1048576, 512K, 2M); larger answers 413 "
        "[env STATESERVICE_MAX_BODY; default 1M]",
    )
    serve.add_argument(
        "--event-loop",
        dest="event_loop",
        choices=eventloop.CHOICES,
        help="each worker's event loop: uvloop (faster), asyncio's own, or auto: uvloop when installed "
        "[env STATESERVICE_EVENT_LOOP; default auto]",
    )
    serve.add_argument(
        "--predict-processes",
        dest="predict_processes",
        metavar="N",
        help="processes per worker that load models and predict, so predictions do not slow the worker's gate "
        "requests; each holds its own copy of every model; 0: predict in the worker's threads "
        "[env STATESERVICE_PREDICT_PROCESSES; default 1]",
    )
    _security_flags(serve)
    _redis_flags(serve)
    _wait_flags(serve, "acknowledge a state change only once N replicas have it (Redis WAIT); fewer answer 503")

    validate = commands.add_parser(
        "validate",
        help="check chart files and model configs without serving them",
        description="Check chart files; print each problem as FILE:LINE: message. With --config and --models, "
        "check every model config and load its model file; print each problem as FILE: message. "
        "Exit 1 on any error, 0 otherwise (warnings included).",
    )
    validate.add_argument("files", nargs="*", metavar="FILE", type=Path)
    _zone_flag(validate)
    _model_flags(validate)

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
    _wait_flags(reset, "report the reset done only once N replicas have it (Redis WAIT); fewer is an error (exit 1)")
    _client_commands(commands)
    _token_commands(commands)
    return parser


def _wait_flags(parser: argparse.ArgumentParser, replicas_help: str) -> None:
    parser.add_argument(
        "--redis-wait-replicas",
        dest="redis_wait_replicas",
        metavar="N",
        help=f"{replicas_help} [env STATESERVICE_REDIS_WAIT_REPLICAS; default 0: off]",
    )
    parser.add_argument(
        "--redis-wait-timeout",
        dest="redis_wait_timeout",
        metavar="SECONDS",
        help="how long --redis-wait-replicas waits for the replicas [env STATESERVICE_REDIS_WAIT_TIMEOUT; default 1]",
    )


def _security_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tokens",
        metavar="FILE",
        help="the tokens file (YAML; see `stateservice token create`); without it nothing is authenticated and "
        "only loopback may be served [env STATESERVICE_TOKENS]",
    )
    parser.add_argument(
        "--insecure-no-auth",
        dest="insecure_no_auth",
        action="store_true",
        default=None,
        help="serve a non-loopback --host without tokens (anyone who can connect can move charts) "
        "[env STATESERVICE_INSECURE_NO_AUTH; default off]",
    )
    parser.add_argument(
        "--tls-cert",
        dest="tls_cert",
        metavar="FILE",
        help="serve HTTPS with this PEM certificate chain [env STATESERVICE_TLS_CERT]",
    )
    parser.add_argument(
        "--tls-key", dest="tls_key", metavar="FILE", help="the PEM private key of --tls-cert [env STATESERVICE_TLS_KEY]"
    )
    parser.add_argument(
        "--tls-client-ca",
        dest="tls_client_ca",
        metavar="FILE",
        help="require client certificates signed by this CA; a certificate's CN is a token name "
        "[env STATESERVICE_TLS_CLIENT_CA]",
    )
    parser.add_argument(
        "--redis-ca",
        dest="redis_ca",
        metavar="FILE",
        help="CA file to verify a rediss:// server [env STATESERVICE_REDIS_CA]",
    )


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


def token_create(name: str, scopes: Sequence[str], charts: Sequence[str]) -> int:
    """`token create`: the secret on the first line of stdout, then the YAML entry."""
    from stateservice.security.tokens import entry_yaml, make_token

    secret, token = make_token(name, scopes, charts)
    print(secret)
    print(entry_yaml(token), end="")
    return 0


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
            and not os.environ.get("STATESERVICE_LOG_LEVEL")
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


def validate_all(files: Sequence[Path], config: Config) -> int:
    """`validate`: the chart FILEs, and the models of --config/--models; 1 if anything is wrong."""
    if not files and config.model_config is None:
        raise StartupError("nothing to check: give chart FILEs, and/or --config DIR --models DIR")
    codes = [validate(files, config.zone())] if files else []
    if config.model_config is not None and config.models is not None:
        codes.append(validate_models(config.model_config, config.models, config.allow_writable_models))
    return max(codes)


def validate_models(config_dir: Path, models_dir: Path, allow_writable: bool) -> int:
    """Check every model config and load each model file: `FILE: message` on stderr, `FILE: ok: ...` on stdout."""
    checked = check_configs(config_dir, models_dir, allow_writable=allow_writable)
    problems = list(checked.problems)
    for spec in checked.specs:
        why = load_now(spec, allow_writable=allow_writable)
        if why is None:
            print(f"{spec.source}: ok: {describe_model(spec)}")
        else:
            problems.append(f"{spec.source}: {why}")
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


def validate(files: Sequence[Path], zone: tzinfo) -> int:
    results: list[Parsed] = check_files(files, zone)
    for result in results:
        for problem in result.problems:
            print(problem, file=sys.stdout if problem.warning else sys.stderr)
        if result.chart is not None:
            chart = result.chart
            print(f"{result.path}: ok: chart {chart.name!r}, {len(chart.states)} states, starts at {chart.initial!r}")
    return 1 if any(r.errors for r in results) else 0


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER: a bare container
        return str(os.getuid())


def status(config: Config, chart: str | None, as_json: bool) -> int:
    from stateservice.server.supervisor import redis_for

    with redis_for(config) as url:
        views = asyncio.run(admin.status(url, chart, config.zone(), cluster=config.redis_cluster))
    print(admin.render(views, as_json))
    return 0


def reset(config: Config, path: Path, yes: bool) -> int:
    from stateservice.server.supervisor import redis_for

    results = check_files([path], config.zone())
    if results[0].errors:
        raise ChartError(results[0].errors)
    chart = results[0].unwrap()
    with redis_for(config) as url:
        if not yes:
            now = asyncio.run(admin.current(url, chart, cluster=config.redis_cluster))
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
        actor = f"cli:{_user()}"  # the audit trail names who ran it, as a token name would
        before, after = asyncio.run(
            admin.reset(
                url,
                chart,
                socket.gethostname(),
                actor,
                cluster=config.redis_cluster,
                wait_replicas=config.redis_wait_replicas,
                wait_timeout=config.redis_wait_timeout,
            )
        )
    print(f"chart {chart.name!r} reset: {before or '(no state)'} -> {after}")
    return 0
