"""The `stateservice` command line: the argparse parser of every command and its flags."""

from __future__ import annotations

import argparse
from pathlib import Path

from stateservice import __version__
from stateservice.server import eventloop
from stateservice.telemetry import logs


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
