"""`stateservice gate` and `stateservice report`: the service's HTTP API as exit codes, for scripts.

Chef `only_if`, Ansible `command` and shell scripts want an exit code, not curl flags:
0 means yes (the gate is open, the report was taken), 1 means no (406: not the current
state), 2 means the service answered an error or could not be reached in time, with the
reason on stderr; 64 is a usage error. Long waits use the server's long-poll, one request
per chunk of at most the server's `--max-wait`, never a client-side polling loop.

Until their deadline (`--wait`) both commands ride out what a restart or a Redis failover
looks like from outside: a refused connection and a 503 are retried with a growing pause,
and said on stderr when it is a terminal. Standard library only, so the commands start fast.
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

YES, NO, ERROR, USAGE = 0, 1, 2, 64  # 64: EX_USAGE from sysexits.h
CHUNK = 300.0  # seconds per long-poll request: the server's default --max-wait (its 400 says when it is lower)
FIRST_PAUSE, MAX_PAUSE = 0.5, 5.0  # seconds between retries: doubling, with jitter
DEFAULT_URL = "http://127.0.0.1:5000"


class UsageError(Exception):
    """A command line the client cannot act on (a URL without a scheme): exit USAGE with the fix."""


class Unreachable(Exception):
    """The service could not be reached: the reason in words (`connection refused (...)`)."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: str
    retry_after: float = 0.0  # seconds, from a 503's Retry-After

    def json(self) -> dict[str, Any]:
        try:
            found = json.loads(self.body)
        except ValueError:
            return {}
        return found if isinstance(found, dict) else {}

    def explain(self) -> str:
        message = self.json().get("message")
        return f"HTTP {self.status}: {message or self.body.strip()[:200] or '(no body)'}"


def check_url(url: str) -> str:
    """`url` when it is an http(s) URL with a host. Raises UsageError saying how to write it."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme in ("http", "https") and parts.netloc:
        return url
    fix = f"http://{url}" if "://" not in url else "http://HOST:PORT"
    raise UsageError(f"--url {url!r} is not an http:// or https:// URL; write it as {fix}")


def settings(url: str | None, environ: Mapping[str, str]) -> tuple[str, str | None]:
    """The service URL (flag, STATESERVICE_URL, default) and the token (STATESERVICE_TOKEN). Raises UsageError."""
    return check_url(url or environ.get("STATESERVICE_URL") or DEFAULT_URL), environ.get("STATESERVICE_TOKEN")


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """The API never redirects: a 3xx is an answer like any other, and never takes the token elsewhere (urllib would
    send the Authorization header on to wherever a redirect pointed, another host included)."""

    def redirect_request(self, *_: Any, **__: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def request(method: str, url: str, token: str | None, timeout: float, payload: bytes | None = None) -> Answer:
    """One HTTP request (`payload`: JSON to send). Raises Unreachable when the service cannot be reached."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if payload is not None:
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=payload, method=method, headers=headers)
    try:
        with _OPENER.open(req, timeout=timeout) as response:
            return Answer(response.status, response.read().decode("utf-8", "replace"))
    except urllib.error.HTTPError as error:
        with error:
            body = error.read().decode("utf-8", "replace")
            return Answer(error.code, body, _seconds(error.headers.get("Retry-After")))
    except (OSError, http.client.HTTPException) as exc:
        raise Unreachable(reason(exc)) from None


def _seconds(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value else 0.0
    except ValueError:
        return 0.0  # an HTTP date: we do not wait on the server's clock


def reason(exc: BaseException) -> str:
    """Why a request did not get through, in words rather than a urllib repr."""
    cause: object = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused (is `stateservice serve` running?)"
    if isinstance(cause, socket.gaierror):
        return f"unknown host ({cause.strerror})"
    if isinstance(cause, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted ({cause.verify_message}); see docs/security.md for --cacert"
    if isinstance(cause, ConnectionResetError | ConnectionAbortedError):
        return "the connection was closed by the service"
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror[0].lower() + cause.strerror[1:]
    return str(cause) or type(cause).__name__


def state_url(base: str, state: str, chart: str | None, **params: str) -> str:
    query = {"state": state, **({"chart": chart} if chart else {}), **params}
    return f"{base.rstrip('/')}/state?{urllib.parse.urlencode(query)}"


class Attempts:
    """Send a request until it is answered with something other than 503, or the deadline passes."""

    def __init__(self, command: str, base: str, deadline: float, say: Callable[[str], None] | None = None) -> None:
        self.command = command
        self.base = base
        self.deadline = deadline
        self.pause = FIRST_PAUSE
        self.say = say if say is not None else (_say if sys.stderr.isatty() else None)

    def send(self, method: str, build: Callable[[float], tuple[str, float]], token: str | None) -> Answer:
        """`build(remaining seconds)` gives each attempt's URL and timeout. Raises Unreachable after the deadline."""
        while True:
            url, timeout = build(max(0.0, self.deadline - time.monotonic()))
            try:
                answer = request(method, url, token, timeout)
            except Unreachable as exc:
                if not self.wait(f"cannot reach {self.base}: {exc}"):
                    raise
                continue
            if answer.status != 503 or not self.wait(answer.explain(), answer):
                return answer

    def wait(self, why: str, answer: Answer | None = None) -> bool:
        """Pause before the next attempt, if the deadline leaves room for one; whether it did."""
        pause = self.pause * random.uniform(0.8, 1.2)
        if answer is not None:
            pause = max(pause, min(MAX_PAUSE, answer.retry_after))
        if time.monotonic() + pause >= self.deadline:
            return False
        if self.say is not None:
            self.say(f"stateservice {self.command}: {why}; retrying in {pause:.1f}s")
        time.sleep(pause)
        self.pause = min(MAX_PAUSE, self.pause * 2)
        return True


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def gate(
    base: str, state: str, chart: str | None, wait: float, token: str | None, *, name: str = "gate", quiet: bool = False
) -> int:
    """0 when `state` is current (waiting up to `wait` seconds for it), 1 when not, 2 on any error.

    `name` is the command named in messages; `quiet` leaves the final "not current" unsaid.
    """
    attempts = Attempts(name, base, time.monotonic() + wait)
    chunk_cap = CHUNK
    announced = False
    while True:
        try:
            answer = attempts.send("GET", _long_poll(base, state, chart, chunk_cap), token)
        except Unreachable as exc:
            print(f"stateservice {name}: cannot reach {base}: {exc}", file=sys.stderr)
            return ERROR
        lower = _max_wait(answer)
        if lower is not None and lower < chunk_cap:
            chunk_cap = lower  # the server's --max-wait is below our chunk: ask again within it
            continue
        if answer.status == 200:
            return YES
        if answer.status != 406:
            print(f"stateservice {name}: {answer.explain()}", file=sys.stderr)
            return ERROR
        if answer.json().get("error") == "awaiting_approval":  # a person resumes it, and then it is left: no 200 comes
            print(f"stateservice {name}: {answer.explain()}", file=sys.stderr)
            return NO
        remaining = attempts.deadline - time.monotonic()
        if remaining <= 0:
            if not quiet:
                print(f"stateservice {name}: {answer.explain()}", file=sys.stderr)
            return NO
        if attempts.say is not None and not announced:
            current = answer.json().get("current_state", "?")
            attempts.say(f"stateservice {name}: waiting up to {wait:g}s for {state!r} (current: {current!r})")
            announced = True
        if answer.json().get("error") == "outside_window":  # answered at once, not long-polled: wait it out here
            time.sleep(min(max(answer.retry_after, 1.0), remaining))


def _long_poll(base: str, state: str, chart: str | None, cap: float) -> Callable[[float], tuple[str, float]]:
    """Each attempt's gate URL (a long-poll of the time left, at most `cap`) and its timeout."""

    def build(remaining: float) -> tuple[str, float]:
        chunk = min(remaining, cap)
        return state_url(base, state, chart, **({"wait": f"{chunk:.3f}"} if chunk > 0 else {})), chunk + 30

    return build


def _max_wait(answer: Answer) -> float | None:
    """The server's --max-wait when it refused our long-poll chunk as too long."""
    if answer.status != 400:
        return None
    body = answer.json()
    if body.get("parameter") != "wait":
        return None
    try:
        limit = float(body.get("max_wait"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return limit if limit > 0 else None


def report(base: str, state: str, chart: str | None, host: str, token: str | None, wait: float = 0.0) -> int:
    """Report `state` done for `host` (idempotent): 0 on 200, 1 on 406, 2 otherwise; retries for `wait` seconds."""
    attempts = Attempts("report", base, time.monotonic() + wait)
    url = state_url(base, state, chart, host=host)
    try:
        answer = attempts.send("PUT", lambda _: (url, 30.0), token)
    except Unreachable as exc:
        print(f"stateservice report: cannot reach {base}: {exc}", file=sys.stderr)
        return ERROR
    if answer.status == 200:
        return YES
    print(f"stateservice report: {answer.explain()}", file=sys.stderr)
    return NO if answer.status == 406 else ERROR
