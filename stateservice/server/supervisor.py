"""`stateservice serve`: load charts, find Redis, bind the port, run N worker processes, stop cleanly.

The parent binds the listening socket once and forks the workers before any event loop or
thread exists, so every worker accepts on the same socket (the kernel spreads connections)
and `--port 0` means one port for all. With one worker the parent serves itself. SIGTERM or
Ctrl-C stops the workers (in-flight requests get `SHUTDOWN_GRACE` seconds), then the
embedded Redis, and exits 0. SIGHUP reloads the chart files in every worker (the parent
forwards it), keeping the old charts on any error (see `charts/reload.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import gc
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import structlog
from aiohttp import web
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from stateservice import dashboard
from stateservice.charts.configurations import load_configurations
from stateservice.charts.files import Parses, load_charts
from stateservice.charts.reload import Reloader
from stateservice.config import Config
from stateservice.core.chart import Chart
from stateservice.core.machines import Configuration
from stateservice.errors import StartupError, StateServiceError
from stateservice.models.cache import ModelCache
from stateservice.models.conf import ModelSpec, load_specs
from stateservice.security import tls
from stateservice.security.reload import TokensReloader
from stateservice.security.tokens import Tokens, check_exposure, is_loopback, load_tokens
from stateservice.server import eventloop
from stateservice.server.accept import AcceptSite
from stateservice.store.charts import ChartStore
from stateservice.store.clock import local_clock
from stateservice.store.machines import Machines, define_file
from stateservice.store.redis.connect import connect, redact
from stateservice.store.redis.embedded import EmbeddedRedis
from stateservice.telemetry import metrics
from stateservice.web import limits
from stateservice.web.app import Loaded, create_app
from stateservice.web.appkeys import CHARTS, REGISTRAR
from stateservice.web.auth import TOKENS

log = structlog.get_logger(__name__)

SHUTDOWN_GRACE = 10.0
BACKLOG = 4096
RESPAWN_LIMIT = 5  # workers dying this many times in a row, each within RESPAWN_WINDOW, stop the service
RESPAWN_WINDOW = 10.0


def serve(config: Config) -> int:
    """Run the service until SIGTERM/SIGINT. Raises StartupError (or ChartError) for what the operator must fix."""
    zone = config.zone()
    parses = Parses()  # the workers reuse start-up's parses: a reload parses only the files changed since
    with _collections_paused():
        charts = load_charts(config.charts, zone, config.charts_dir, parses)
    configurations = load_configurations(config.configurations)
    models = _model_specs(config)
    if not charts and not models and not configurations:
        raise StartupError(
            "nothing to serve: give --chart FILE (or STATESERVICE_CHART) or --charts DIR (STATESERVICE_CHARTS), "
            "--configuration FILE, and/or --config DIR --models DIR for models"
        )
    tokens = load_tokens(config.tokens) if config.tokens is not None else None
    check_exposure(config.host, tokens, config.insecure_no_auth)
    if tokens is None and not is_loopback(config.host):
        log.warning("insecure_no_auth", host=config.host, hint="anyone who can connect can move charts")
    scheme = "https" if tls.server_context(config.tls_cert, config.tls_key, config.tls_client_ca) else "http"
    # before anything counts: every worker (and a lone serving parent) writes its metrics under one private dir
    with redis_for(config, serving=True) as url, metrics.multiprocess():
        config = dataclasses.replace(config, redis_url=url)  # the workers' Redis: --redis, or the embedded one
        with _collections_paused():
            registered = asyncio.run(_preflight(charts, url, cluster=config.redis_cluster))
            defined = asyncio.run(_define(configurations, url, cluster=config.redis_cluster))
        if config.redis_wait_replicas > 0:
            registered = frozenset()  # the preflight did not WAIT for replicas: the workers register again, waiting
        sock = bind(config.host, config.port)
        host, port = sock.getsockname()[:2]
        log.info(
            "serving",
            url=f"{scheme}://{_url_host(host)}:{port}",
            auth="tokens" if tokens is not None else "off",
            tokens=len(tokens.entries) if tokens is not None else 0,
            workers=config.workers,
            event_loop=eventloop.name(config.event_loop),
            redis=redact(url),
            charts=[c.name for c in charts],
            configurations=[c.ref for c in configurations],
            models=[m.name for m in models],
        )
        # defined before forking: the workers need not (a preflight that found no Redis leaves it to them)
        configurations = () if defined else configurations
        if config.workers == 1:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})  # until the worker's loop handles it
            worker = _worker(charts, sock, config, models, tokens, False, registered, parses, configurations)
            eventloop.run(worker, config.event_loop)
        else:
            _supervise(config, charts, sock, models, tokens, registered, parses, configurations)
        sock.close()
    log.info("stopped")
    return 0


def _model_specs(config: Config) -> list[ModelSpec]:
    """The configured models, checked before any worker starts. Raises ModelConfigError (`FILE: message` lines)."""
    if config.model_config is None or config.models is None:
        return []
    specs = load_specs(config.model_config, config.models, allow_writable=config.allow_writable_models)
    if config.allow_writable_models:
        log.warning("writable_models_allowed", models=str(config.models))
    for spec in specs:
        log.info("model_configured", model=spec.name, path=str(spec.path), format=spec.format.value)
    return specs


@contextmanager
def redis_for(config: Config, *, serving: bool = False) -> Iterator[str]:
    """The Redis URL to use: `--redis`, or the embedded server under `--data-dir` (started, and stopped
    afterwards if we started it; `serve` always stops it, since it owns the data dir while it runs)."""
    if config.redis_url is not None:
        yield config.redis_url
        return
    embedded = EmbeddedRedis(config.data_dir)
    with _data_dir_lock(config.data_dir) if serving else _nothing():
        started = embedded.ensure_running()
        try:
            yield embedded.url
        finally:
            # a one-shot command stops only what it started, and not if a `serve` took it over meanwhile
            if serving or (started and not _served(config.data_dir)):
                embedded.stop()


@contextmanager
def _nothing() -> Iterator[None]:
    yield


@contextmanager
def _collections_paused() -> Iterator[None]:
    """No cyclic garbage collection while start-up builds thousands of charts that live as long as the service.

    Each full collection walks every object built so far: about a tenth of parsing 10,000 chart
    files. What start-up throws away goes by reference counting; any cycle waits for the next collection.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _served(data_dir: Path) -> bool:
    """Whether a `serve` holds this data dir (its lock cannot be taken)."""
    try:
        with open(data_dir / "serve.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False
    except BlockingIOError:
        return True
    except OSError:
        return False


@contextmanager
def _data_dir_lock(data_dir: Path) -> Iterator[None]:
    """One `serve` per embedded data dir: a second would stop the first one's Redis when it exits."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = data_dir / "serve.lock"
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise StartupError(
                f"{data_dir} is in use by another `stateservice serve` (pid {handle.read().strip() or '?'}); "
                "give this one its own --data-dir, or share one Redis between services with --redis URL"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield


async def _preflight(charts: Sequence[Chart], url: str, *, cluster: bool = False) -> frozenset[tuple[str, str]]:
    """Register the charts before forking, so a chart that cannot go on stops start-up with its reason.

    Returns the (name, digest) of every chart registered, which the workers then need not register
    again (none when Redis was unreachable: each worker registers once it answers).
    """
    redis = connect(url, cluster=cluster)
    try:
        store = ChartStore(redis)
        for chart, snap in zip(charts, await store.register_many(charts), strict=True):
            if isinstance(snap, StateServiceError):
                raise snap  # this chart cannot go on: start-up stops with its reason
            log.info("chart_loaded", chart=chart.name, path=chart.path, state=snap.state)
        return frozenset((chart.name, chart.digest) for chart in charts)
    except (RedisConnectionError, RedisTimeoutError, TimeoutError) as exc:
        log.warning("redis_unavailable_at_start", redis=redact(url), error=str(exc) or type(exc).__name__)
        return frozenset()
    finally:
        await redis.aclose()


async def _define(configurations: Sequence[Configuration], url: str, *, cluster: bool = False) -> bool:
    """Define the configuration files' configurations before forking; one that differs from the one of its
    NAME:VERSION already defined stops start-up. False when Redis was unreachable (the workers define them)."""
    if not configurations:
        return True
    redis = connect(url, cluster=cluster)
    machines = Machines(redis, local_clock(), cluster=cluster)
    try:
        files = {c.ref: c for c in configurations}
        for configuration in configurations:
            await define_file(machines, configuration, files)
        return True
    except (RedisConnectionError, RedisTimeoutError, TimeoutError) as exc:
        log.warning("redis_unavailable_at_start", redis=redact(url), error=str(exc) or type(exc).__name__)
        return False
    except ResponseError as exc:
        raise StartupError(f"Redis refused to define the configurations: {exc}") from None
    finally:
        await machines.close()
        await redis.aclose()


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (IPv4 or IPv6, whichever the host names). Raises StartupError."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as exc:
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


@contextmanager
def _hup_held() -> Iterator[None]:
    """Hold SIGHUP back (its default ends the process) while forking, so the child starts with it held."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


async def _worker(
    charts: Sequence[Chart],
    sock: socket.socket,
    config: Config,
    models: Sequence[ModelSpec] = (),
    tokens: Tokens | None = None,
    reload_at_start: bool = False,
    registered: frozenset[tuple[str, str]] = frozenset(),
    parses: Parses | None = None,
    configurations: Sequence[Configuration] = (),
) -> None:
    """One worker: serve `sock` until SIGTERM/SIGINT, then finish in-flight requests and close Redis.

    `config.redis_url` is the Redis to use (`serve` puts the embedded one's there); `registered` are the charts
    (name, digest) `serve` registered there before forking, `parses` its parses of the files, `configurations`
    those of the configuration files it could not define (Redis unreachable).

    SIGHUP reloads the chart files and the tokens file; `reload_at_start` does so before serving (a worker
    respawned after a reload was forked with the charts and tokens of start-up, which it keeps if the files
    have broken since).
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    cache = ModelCache(models, allow_writable=config.allow_writable_models, predict_processes=config.predict_processes)
    app = create_app(config, Loaded(charts, tokens, cache, registered, tuple(configurations)))
    dashboard.setup(app)  # the pages are the dashboard's, above the API: web never imports them
    runner = _runner(app)
    await runner.setup()
    ref = app.get(TOKENS)
    tokens_reloader = TokensReloader(ref, config.tokens) if ref is not None and config.tokens is not None else None
    reloader = Reloader(
        app[CHARTS],
        config.charts,
        config.zone(),
        app[REGISTRAR],
        tokens_reloader,
        directory=config.charts_dir,
        parses=parses,
    )
    loop.add_signal_handler(signal.SIGHUP, reloader.request)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})  # one held back until now is handled here
    if reload_at_start:
        await reloader.reload()  # before serving: its siblings already serve the reloaded charts
    context = tls.server_context(config.tls_cert, config.tls_key, config.tls_client_ca)
    await AcceptSite(runner, sock, ssl_context=context).start()  # not SockSite: uvloop accepts one a turn
    # what start-up built (modules, charts, models) lives as long as the worker: out of every collection, so
    # that a full one (thousands of parked long-polls set them off) walks what requests hold, not all that
    gc.freeze()
    log.info("worker_started", event_loop=eventloop.running())
    await stop.wait()
    log.info("worker_stopping")
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})  # stopping: a late SIGHUP stays pending, unacted on
    await reloader.close()
    await runner.cleanup()


def _runner(app: web.Application) -> web.AppRunner:
    return web.AppRunner(
        app,
        access_log=None,
        shutdown_timeout=SHUTDOWN_GRACE,
        handler_cancellation=True,  # a client that hangs up stops its long-poll at once
        max_line_size=limits.MAX_LINE,  # longer request lines and headers get aiohttp's own plain-text 400
        max_field_size=limits.MAX_LINE,
    )


def _run_worker(
    charts: Sequence[Chart],
    sock: socket.socket,
    config: Config,
    models: Sequence[ModelSpec],
    tokens: Tokens | None,
    reload_at_start: bool = False,
    registered: frozenset[tuple[str, str]] = frozenset(),
    parses: Parses | None = None,
    configurations: Sequence[Configuration] = (),
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)  # still held (blocked since the fork) until the loop handles it
    worker = _worker(charts, sock, config, models, tokens, reload_at_start, registered, parses, configurations)
    eventloop.run(worker, config.event_loop)


def _supervise(
    config: Config,
    charts: Sequence[Chart],
    sock: socket.socket,
    models: Sequence[ModelSpec],
    tokens: Tokens | None,
    registered: frozenset[tuple[str, str]] = frozenset(),
    parses: Parses | None = None,
    configurations: Sequence[Configuration] = (),
) -> None:
    """Fork `config.workers` workers on the shared socket; replace any that dies; stop them all on a signal.

    SIGHUP is forwarded to every worker, each of which reloads its charts and tokens; this process re-reads
    the tokens file too, so that a worker respawned later is forked with the last good tokens.
    """
    supervisor = _Supervisor(config, charts, sock, models, tokens, registered, parses, configurations)
    previous = {s: signal.signal(s, supervisor.on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, supervisor.on_hup)
    supervisor.workers += [supervisor.spawn() for _ in range(config.workers)]
    try:
        supervisor.watch()
    finally:
        supervisor.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@dataclass
class _Supervisor:
    """The workers of `_supervise` and what its signal handlers and its loop share."""

    config: Config
    charts: Sequence[Chart]
    sock: socket.socket
    models: Sequence[ModelSpec]
    tokens: Tokens | None  # the last good tokens: a worker respawned after a reload is forked with them
    registered: frozenset[tuple[str, str]]  # the charts the preflight registered: no worker repeats it
    parses: Parses | None  # start-up's parses of the chart files: a worker's reload reuses the unchanged
    configurations: Sequence[Configuration]  # those the preflight could not define: each worker does
    workers: list[multiprocessing.process.BaseProcess] = field(default_factory=list)
    stopping: bool = False
    reloads: int = 0  # SIGHUPs received; the loop logs the new ones
    failures: list[float] = field(default_factory=list)  # when workers died, within the last RESPAWN_WINDOW

    def on_signal(self, signum: int, _: FrameType | None) -> None:
        self.stopping = True

    def on_hup(self, signum: int, _: FrameType | None) -> None:
        self.reloads += 1
        if self.config.tokens is not None:
            # read now, the file the workers are about to read: a worker respawned later starts from the
            # last good tokens, never from ones a reload revoked
            with contextlib.suppress(Exception):  # each worker logs what is wrong with the file
                self.tokens = load_tokens(self.config.tokens)
        for worker in list(self.workers):
            if worker.pid is not None and worker.is_alive():
                os.kill(worker.pid, signal.SIGHUP)

    def spawn(self, *, replacing: bool = False) -> multiprocessing.process.BaseProcess:
        """A worker; `replacing` one that died, it registers its charts itself (Redis may have lost them since)."""
        reload_at_start = self.reloads > 0
        registered = frozenset() if replacing else self.registered
        args = (
            self.charts,
            self.sock,
            self.config,
            self.models,
            self.tokens,
            reload_at_start,
            registered,
            self.parses,
            self.configurations,
        )
        process = multiprocessing.get_context("fork").Process(target=_run_worker, args=args, daemon=False)
        with _hup_held():  # the child starts with SIGHUP held, not with the parent's handler
            process.start()
        log.info("worker_spawned", worker_pid=process.pid)
        return process

    def watch(self) -> None:
        """Until a signal stops the service: log forwarded reloads, replace workers that died."""
        logged = 0
        while not self.stopping:
            multiprocessing.connection.wait([w.sentinel for w in self.workers], timeout=0.5)
            if self.reloads != logged:
                logged = self.reloads
                log.info("charts_reload_forwarded", workers=[w.pid for w in self.workers])
            for index, worker in enumerate(self.workers):
                if not worker.is_alive() and not self.stopping:
                    self.workers[index] = self.respawn(worker)

    def respawn(self, dead: multiprocessing.process.BaseProcess) -> multiprocessing.process.BaseProcess:
        """A worker in place of `dead`. Raises StartupError when workers keep dying."""
        log.error("worker_died", worker_pid=dead.pid, exitcode=dead.exitcode)
        if dead.pid is not None:
            metrics.process_dead(dead.pid)
        now = time.monotonic()
        self.failures = [t for t in self.failures if now - t < RESPAWN_WINDOW] + [now]
        if len(self.failures) >= RESPAWN_LIMIT:
            raise StartupError(f"workers keep dying ({RESPAWN_LIMIT} within {RESPAWN_WINDOW:.0f}s); see the log")
        return self.spawn(replacing=True)

    def stop(self) -> None:
        """SIGTERM every worker; kill those still running after the grace period."""
        for worker in self.workers:
            if worker.is_alive() and worker.pid is not None:
                os.kill(worker.pid, signal.SIGTERM)
        deadline = time.monotonic() + SHUTDOWN_GRACE + 5
        for worker in self.workers:
            worker.join(max(0.0, deadline - time.monotonic()))
            if worker.is_alive():
                worker.kill()
                worker.join()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
