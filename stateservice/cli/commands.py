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

from stateservice.charts.configurations import check_configuration_files
from stateservice.charts.files import chart_paths, check_files
from stateservice.cli import admin, client, remote
from stateservice.cli.parser import USAGE
from stateservice.config import Config
from stateservice.core.chart import CHART_NAME, Chart
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
    """`validate`: chart FILEs and DIRs (and --charts DIR), --configuration FILEs, --config/--models; 1 if wrong."""
    if not files and config.charts_dir is None and config.model_config is None and not config.configurations:
        raise StartupError(
            "nothing to check: give chart FILEs or DIRs (or --charts DIR), --configuration FILE, "
            "and/or --config DIR --models DIR"
        )
    codes = [validate(files, config.zone(), config.charts_dir)] if files or config.charts_dir else []
    if config.configurations:
        codes.append(validate_configurations(config.configurations))
    if config.model_config is not None and config.models is not None:
        codes.append(validate_models(config.model_config, config.models, config.allow_writable_models))
    return max(codes)


def validate_configurations(paths: Sequence[Path]) -> int:
    """Check configuration files: `file:line: message` on stderr, `FILE: ok: ...` on stdout; 1 if any is wrong."""
    results = check_configuration_files(paths)
    for result in results:
        for problem in result.problems:
            print(problem, file=sys.stderr)
        if result.configuration is not None:
            c = result.configuration
            print(
                f"{result.path}: ok: configuration {c.ref!r}, {len(c.states)} states, "
                f"{len(c.transitions)} transitions, starts at {c.starting_state!r}"
            )
    return 1 if any(r.problems for r in results) else 0


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


def status(config: Config, chart: str | None, as_json: bool, url: str | None = None) -> int:
    if url is not None:  # through a running service: Redis need not be reachable from here
        base, token = client.settings(url, {}), os.environ.get("STATESERVICE_TOKEN")
        print(admin.render(remote.run("status", remote.views, base[0], chart, token), as_json))
        return 0
    from stateservice.server.supervisor import redis_for  # see the comment above serve

    _existing_data_dir(config)
    with redis_for(config) as redis_url:
        views = asyncio.run(admin.status(redis_url, chart, config.zone(), cluster=config.redis_cluster))
    print(admin.render(views, as_json))
    return 0


def _existing_data_dir(config: Config) -> None:
    """Refuse a data dir that does not exist: starting an empty Redis there would only say "no chart"."""
    if config.redis_url is None and not config.data_dir.is_dir():
        raise StartupError(
            f"--data-dir {config.data_dir} does not exist, so no service keeps charts there; give the data dir "
            "`stateservice serve` uses, or --redis URL, or --url of a running service"
        )


def _confirm(chart: str, now: str | None, where: str, initial: str) -> int | None:
    """None when the operator agrees to reset (or there is no one to ask: see the caller); else the exit code."""
    if not sys.stdin.isatty():
        print("stateservice: error: refusing to reset without a terminal to confirm; pass --yes", file=sys.stderr)
        return USAGE
    answer = input(f"Reset chart {chart!r} (in {now or 'no state'}) at {where} to {initial}? [y/N] ")
    if answer.strip().lower() not in ("y", "yes"):
        print("not reset", file=sys.stderr)
        return 1
    return None


def reset(config: Config, target: str, yes: bool, url: str | None = None) -> int:
    """`reset CHART_FILE|CHART`: through a service (--url), or in Redis (a file's chart, or a registered one)."""
    if url is not None:
        return _reset_remote(client.settings(url, {})[0], _chart_name(target, config), yes)
    from stateservice.server.supervisor import redis_for  # see the comment above serve

    with redis_for(config) as redis_url:
        chart = _chart_to_reset(target, config, redis_url)
        if not yes:
            now = asyncio.run(admin.current(redis_url, chart, cluster=config.redis_cluster))
            if (refused := _confirm(chart.name, now, redact(redis_url), repr(chart.initial))) is not None:
                return refused
        actor = f"cli:{_user()}"  # the audit trail names who ran it, as a token name would
        before, after = asyncio.run(
            admin.reset(
                redis_url,
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


def _reset_remote(base: str, name: str, yes: bool) -> int:
    token = os.environ.get("STATESERVICE_TOKEN")
    if not yes:
        now = remote.run("reset", remote.current, base, name, token)
        if (refused := _confirm(name, now, base, "its initial state")) is not None:
            return refused
    before, after = remote.run("reset", remote.reset, base, name, socket.gethostname(), token)
    print(f"chart {name!r} reset: {before or '(no state)'} -> {after}")
    return 0


def _is_file(target: str) -> bool:
    """Whether a reset names a chart file (else a chart name). Raises StartupError for a file that is not there."""
    if Path(target).exists():
        return True
    if target.endswith((".yaml", ".yml")) or "/" in target or not CHART_NAME.fullmatch(target):
        raise StartupError(f"{target}: no such chart file (a registered chart is named without .yaml or '/')")
    return False


def _chart_name(target: str, config: Config) -> str:
    """The chart a reset names: a chart file's chart, or the name itself."""
    return _checked(Path(target), config).name if _is_file(target) else target


def _chart_to_reset(target: str, config: Config, redis_url: str) -> Chart:
    """The chart of a chart file, or the registered chart of that name (as last served)."""
    if _is_file(target):
        return _checked(Path(target), config)
    return asyncio.run(admin.registered(redis_url, target, config.zone(), cluster=config.redis_cluster))


def _checked(path: Path, config: Config) -> Chart:
    results = check_files([path], config.zone())
    if results[0].errors:
        raise ChartError(results[0].errors)
    return results[0].unwrap()
