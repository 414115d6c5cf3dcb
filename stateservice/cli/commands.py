"""What each command of `stateservice` does, once `cli.main` has parsed its flags and built the Config.

A user mistake raises a StateServiceError (or prints one clear message and returns non-zero);
`cli.main` turns errors into messages and exit codes.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import socket
import sys
from collections.abc import Sequence
from datetime import tzinfo
from pathlib import Path

from stateservice.charts.files import chart_paths, check_files
from stateservice.cli import admin
from stateservice.cli.parser import USAGE
from stateservice.config import Config
from stateservice.core.parse import Parsed
from stateservice.errors import ChartError, Problem, StartupError
from stateservice.models.conf import check_configs
from stateservice.models.conf import describe as describe_model
from stateservice.models.files import load_now
from stateservice.security.tokens import entry_yaml, make_token
from stateservice.store.redis.connect import redact

# server.supervisor is imported inside serve, status and reset, not at the top: it brings aiohttp and the web
# application (about a quarter of a second), which validate, token, gate and report never use; no cycle is avoided


def serve(config: Config) -> int:
    """`serve`: run the service until SIGTERM or Ctrl-C (see server.supervisor)."""
    from stateservice.server import supervisor

    return supervisor.serve(config)


def token_create(name: str, scopes: Sequence[str], charts: Sequence[str]) -> int:
    """`token create`: the secret on the first line of stdout, then the YAML entry."""
    secret, token = make_token(name, scopes, charts)
    print(secret)
    print(entry_yaml(token), end="")
    return 0


def validate_all(files: Sequence[Path], config: Config) -> int:
    """`validate`: the chart FILEs and DIRs (and --charts DIR), and the models of --config/--models; 1 if wrong."""
    if not files and config.charts_dir is None and config.model_config is None:
        raise StartupError(
            "nothing to check: give chart FILEs or DIRs (or --charts DIR), and/or --config DIR --models DIR"
        )
    codes = [validate(files, config.zone(), config.charts_dir)] if files or config.charts_dir else []
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


def validate(files: Sequence[Path], zone: tzinfo, directory: Path | None = None) -> int:
    """Check chart files, every *.yaml of each directory among them, and of `directory` (as --charts reads it)."""
    paths: list[Path] = []
    missing: list[Problem] = []
    for given in [*files, *([directory] if directory is not None else [])]:
        if given != directory and not given.is_dir():
            paths.append(given)
            continue
        try:
            paths += chart_paths([], given)
        except ChartError as exc:
            missing += exc.problems
    for problem in missing:
        print(problem, file=sys.stderr)
    results: list[Parsed] = check_files(paths, zone)
    for result in results:
        for problem in result.problems:
            print(problem, file=sys.stdout if problem.warning else sys.stderr)
        if result.chart is not None:
            chart = result.chart
            print(f"{result.path}: ok: chart {chart.name!r}, {len(chart.states)} states, starts at {chart.initial!r}")
    return 1 if missing or any(r.errors for r in results) else 0


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER: a bare container
        return str(os.getuid())


def status(config: Config, chart: str | None, as_json: bool) -> int:
    from stateservice.server.supervisor import redis_for  # see the comment above serve

    with redis_for(config) as url:
        views = asyncio.run(admin.status(url, chart, config.zone(), cluster=config.redis_cluster))
    print(admin.render(views, as_json))
    return 0


def reset(config: Config, path: Path, yes: bool) -> int:
    from stateservice.server.supervisor import redis_for  # see the comment above serve

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
                return USAGE
            answer = input(
                f"Reset chart {chart.name!r} (in {now or 'no state'}) at {redact(url)} to {chart.initial!r}? [y/N] "
            )
            if answer.strip().lower() not in ("y", "yes"):
                print("not reset", file=sys.stderr)
                return 1
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
