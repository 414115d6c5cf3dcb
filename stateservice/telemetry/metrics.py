"""Prometheus metrics: the metric objects, the hooks that count, and the text exposition.

    stateservice_requests_total{route,method,status}      counter: answered requests (route: the route's
                                                           canonical path, or `unmatched`)
    stateservice_request_duration_seconds{route,method}   histogram: time to answer
    stateservice_transitions_total{chart,cause}           counter: chart moves (cause put, time or reset)
    stateservice_transaction_retries_total                counter: Redis transactions retried after a conflict
    stateservice_redis_errors_total                       counter: Redis unreachable or timing out
    stateservice_leader                                   gauge: 1 on the worker that leads, else 0 (summed
                                                           over the live workers of a service)
    stateservice_predictions_total{model}                 counter: rows a model predicted a state for
    stateservice_slots_held{chart}                        gauge: slots held in the chart's current state (as the
                                                           latest slot operation on any worker saw it)
    stateservice_slot_waits_total{chart}                  counter: slot requests refused because all were held
    stateservice_failures_total{chart}                    counter: failure reports recorded (once per host a visit)
    stateservice_halted{chart}                            gauge: 1 while the chart is halted (latest halt or resume)
    stateservice_events_total{outcome,source}             counter: events to instances, by outcome (ok,
                                                           transition_not_allowed, requirement_not_met,
                                                           unknown_instance, duplicate; from the stream also
                                                           malformed, unknown_configuration) and source (http, stream)
    stateservice_stream_lag_seconds                       gauge: age of the events stream's oldest entry not yet
                                                           applied (undelivered or pending); 0 when none
    stateservice_stream_pending                           gauge: entries delivered to a consumer, not yet acked

With several workers each process writes its own files under PROMETHEUS_MULTIPROC_DIR (prometheus-client's
multiprocess mode) and `GET /metrics`, whichever worker answers, adds up every worker's. `serve` sets that up
with `multiprocess()` before any metric exists, so prometheus-client is imported only when a metric is first
used (it picks its storage when imported). Nothing here talks to HTTP or Redis.
"""

from __future__ import annotations

import functools
import glob
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stateservice.telemetry import perprocess
from stateservice.telemetry.perprocess import NextTurn

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

ENV = "PROMETHEUS_MULTIPROC_DIR"
PREFIX = "stateservice-metrics-"  # then the serving process's pid, "-" and mkdtemp's random part
UNMATCHED = "unmatched"
# events to instances: declared once, counted by the HTTP handlers (source "http") and the stream consumer ("stream")
EVENTS = ("stateservice_events_total", "Events to instances, by outcome and source", ("outcome", "source"))


@dataclass(frozen=True, slots=True)
class Metrics:
    registry: CollectorRegistry
    requests: Counter
    duration: Histogram
    transitions: Counter
    retries: Counter
    redis_errors: Counter
    leader: Gauge
    predictions: Counter
    slots_held: Gauge
    slot_waits: Counter
    failures: Counter
    halted: Gauge
    events: Counter
    stream_lag: Gauge
    stream_pending: Gauge
    notifications: Counter
    approvals: Counter


def _pick_storage() -> None:
    """What prometheus-client stores values in: per-process files in multiprocess mode (`ENV` set), else memory."""
    from prometheus_client import values

    multiprocess = os.environ.get(ENV) or os.environ.get(ENV.lower())
    values.ValueClass = (
        # it asks for the pid on every update, to notice a fork: `os.getpid` is a system call each time
        values.MultiProcessValue(process_identifier=perprocess.pid)  # type: ignore[no-untyped-call]
        if multiprocess
        else values.MutexValue
    )


@functools.cache
def get() -> Metrics:
    """This process's metric objects, created at first use."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    _pick_storage()

    registry = CollectorRegistry(auto_describe=True)
    return Metrics(
        registry=registry,
        requests=Counter(
            "stateservice_requests_total",
            "HTTP requests answered, by route, method and status",
            ["route", "method", "status"],
            registry=registry,
        ),
        duration=Histogram(
            "stateservice_request_duration_seconds",
            "Time to answer an HTTP request, by route and method",
            ["route", "method"],
            registry=registry,
        ),
        transitions=Counter(
            "stateservice_transitions_total",
            "Chart transitions, by chart and cause",
            ["chart", "cause"],
            registry=registry,
        ),
        retries=Counter(
            "stateservice_transaction_retries_total", "Redis transactions retried after a conflict", registry=registry
        ),
        redis_errors=Counter("stateservice_redis_errors_total", "Redis unreachable or timing out", registry=registry),
        leader=Gauge(
            "stateservice_leader",
            "1 while this service's worker holds the time-state leader lease",
            multiprocess_mode="livesum",
            registry=registry,
        ),
        predictions=Counter(
            "stateservice_predictions_total", "Rows a model predicted a state for", ["model"], registry=registry
        ),
        events=Counter(EVENTS[0], EVENTS[1], EVENTS[2], registry=registry),
        notifications=Counter(
            "stateservice_approval_notifications_total",
            "Approval webhooks sent by the leader, by outcome (delivered, failed)",
            ["outcome"],
            registry=registry,
        ),
        approvals=Counter(
            "stateservice_approvals_total",
            "Continuations resumed, refused or expired, by outcome (resumed, no_match, used, expired)",
            ["outcome"],
            registry=registry,
        ),
        **_rollout_metrics(registry),
        **_stream_metrics(registry),
    )


def _rollout_metrics(registry: CollectorRegistry) -> dict[str, Any]:
    """The rollout metrics (slots, waits, failures, halts), by the Metrics field they fill."""
    from prometheus_client import Counter, Gauge

    return dict(
        # a gauge of what Redis holds: every worker sets it, and the latest setting is the truth
        slots_held=Gauge(
            "stateservice_slots_held",
            "Slots held in the chart's current state",
            ["chart"],
            multiprocess_mode="mostrecent",
            registry=registry,
        ),
        slot_waits=Counter(
            "stateservice_slot_waits_total", "Slot requests refused: every slot was held", ["chart"], registry=registry
        ),
        failures=Counter("stateservice_failures_total", "Failure reports recorded", ["chart"], registry=registry),
        halted=Gauge(
            "stateservice_halted",
            "1 while the chart is halted",
            ["chart"],
            multiprocess_mode="mostrecent",
            registry=registry,
        ),
    )


def _stream_metrics(registry: CollectorRegistry) -> dict[str, Any]:
    """The events stream's gauges, by the Metrics field they fill."""
    from prometheus_client import Gauge

    return dict(
        # what Redis holds, measured by every consuming worker: the latest measure is the truth
        stream_lag=Gauge(
            "stateservice_stream_lag_seconds",
            "Age of the events stream's oldest entry not yet applied (undelivered or pending); 0 when none",
            multiprocess_mode="mostrecent",
            registry=registry,
        ),
        stream_pending=Gauge(
            "stateservice_stream_pending",
            "Entries of the events stream delivered to a consumer and not yet acknowledged",
            multiprocess_mode="mostrecent",
            registry=registry,
        ),
    )


def _count(answered: list[tuple[str, str, int | str, float]]) -> None:
    """Add a loop turn's answered requests to the metrics: each counter once per label set, each duration.

    Counting each request as it was answered ran prometheus-client's code (a lock and a file
    write per value) between every two requests; once per turn keeps that work in one place.
    """
    counts: dict[tuple[str, str, int | str], int] = {}
    for route, method, status, seconds in answered:
        key = (route, method, status)
        counts[key] = counts.get(key, 0) + 1
        _request_children(route, method, status)[1].observe(seconds)
    for key, count in counts.items():
        _request_children(*key)[0].inc(count)


_answered: NextTurn[tuple[str, str, int | str, float]] = NextTurn(_count)


def request(route: str, method: str, status: int | str, seconds: float) -> None:
    """Count an answered request and its duration, at the running loop's next turn (`perprocess.NextTurn`)."""
    _answered.add((route, method, status, seconds))


def flush() -> None:
    """Count the requests held for a loop turn that may not come (the loop is ending)."""
    _answered.flush()


@functools.cache
def _request_children(route: str, method: str, status: int | str) -> tuple[Counter, Histogram]:
    """The labelled children for one (route, method, status): `labels()` takes a lock and builds keys each call.

    Bounded like the labels themselves (routes are canonical paths); forgotten with the metric objects.
    """
    m = get()
    return m.requests.labels(route, method, str(status)), m.duration.labels(route, method)


def transition(chart: str, cause: str) -> None:
    get().transitions.labels(chart, cause).inc()


def retry() -> None:
    get().retries.inc()


def redis_error() -> None:
    get().redis_errors.inc()


def leader(leading: bool) -> None:
    get().leader.set(1 if leading else 0)


def predictions(model: str, rows: int) -> None:
    get().predictions.labels(model).inc(rows)


def slots(chart: str, held: int) -> None:
    get().slots_held.labels(chart).set(held)


def slot_wait(chart: str) -> None:
    get().slot_waits.labels(chart).inc()


def failure(chart: str) -> None:
    get().failures.labels(chart).inc()


def halted(chart: str, halted: bool) -> None:
    get().halted.labels(chart).set(1 if halted else 0)


def events(outcome: str, source: str, count: int = 1) -> None:
    """Count events by outcome ("duplicate" for a repeated event id) and source ("http" or "stream")."""
    get().events.labels(outcome, source).inc(count)


def notification(outcome: str) -> None:
    get().notifications.labels(outcome).inc()


def approval(outcome: str) -> None:
    get().approvals.labels(outcome).inc()


def stream(lag: float, pending: int) -> None:
    m = get()
    m.stream_lag.set(lag)
    m.stream_pending.set(pending)


def exposition() -> tuple[bytes, str]:
    """The text format and its content type (every worker's, in multiprocess mode). Reads files: not on the loop."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    registry = get().registry
    if directory := os.environ.get(ENV):
        registry = CollectorRegistry()
        registry.register(_Started(directory))
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _Started:
    """prometheus-client's multiprocess collector, reading only the files their process has started.

    A worker creates its file empty and then sizes it: a scrape between the two (a worker
    respawning) failed on the empty file with a 500. An empty file holds no values yet, and
    a file only grows, so skipping the empty ones loses nothing and leaves no window.
    """

    def __init__(self, directory: str) -> None:
        self._directory = directory

    def collect(self) -> Any:
        from prometheus_client.multiprocess import MultiProcessCollector

        started = []
        for path in glob.glob(os.path.join(self._directory, "*.db")):
            try:
                if os.stat(path).st_size:
                    started.append(path)
            except FileNotFoundError:
                continue  # a dead worker's live gauge, removed meanwhile
        return MultiProcessCollector.merge(started, accumulate=True)  # type: ignore[no-untyped-call]


@contextmanager
def multiprocess() -> Iterator[str]:
    """A fresh private dir as PROMETHEUS_MULTIPROC_DIR while serving (workers inherit it); removed at exit.

    Its name carries the serving process's pid, so that the dirs of services killed before they
    could remove theirs (SIGKILL, a crash, a power cut) are removed by the next one to start.
    """
    remove_stale()
    previous = os.environ.get(ENV)
    directory = tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-")
    os.environ[ENV] = directory
    _restart()
    try:
        yield directory
    finally:
        if previous is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = previous
        _restart()
        shutil.rmtree(directory, ignore_errors=True)


def remove_stale(parent: str | None = None) -> list[str]:
    """Remove the metrics dirs, in `parent` (default: the temp dir), of services no longer running; those removed.

    Only dirs this user owns whose pid is gone: a pid that is alive again, even as another
    program, keeps its dir (a few kilobytes) rather than risking a live service's.
    """
    parent = parent or tempfile.gettempdir()
    removed: list[str] = []
    try:
        names = os.listdir(parent)
    except OSError:
        return removed
    for name in names:
        if not name.startswith(PREFIX) or not (pid := name.removeprefix(PREFIX).partition("-")[0]).isdigit():
            continue
        path = os.path.join(parent, name)
        try:
            found = os.lstat(path)  # a symlink is not a dir here: never followed
            if found.st_uid != os.getuid() or not stat.S_ISDIR(found.st_mode):
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        except OSError:  # gone meanwhile, or a live process of another user
            continue
    return removed


def _restart() -> None:
    """Forget the metric objects; if prometheus-client is loaded already, let it pick its storage again."""
    flush()  # into the objects about to be forgotten
    get.cache_clear()
    _request_children.cache_clear()
    if "prometheus_client" in sys.modules:
        _pick_storage()


def process_dead(pid: int) -> None:
    """Drop a dead worker's live gauges (its counters keep counting in the totals)."""
    if os.environ.get(ENV):
        from prometheus_client import multiprocess as mp

        mp.mark_process_dead(pid)  # type: ignore[no-untyped-call]
