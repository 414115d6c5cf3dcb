"""`stateservice run STATE --host H -- COMMAND ...`: the fleet form of `consul lock -n`.

Wait (long-polling) until STATE is current and one of its slots is free, hold the slot while
COMMAND runs (renewing it at a third of its time to live), then report success (exit 0) or
failure (any other exit, the exit code as the reason) and exit with COMMAND's exit code; 75
(EX_TEMPFAIL) when the wait ran out first. A state without `concurrency` needs no slot. A halt
while COMMAND runs is said on stderr; COMMAND is not killed (stopping a half-done step is
the operator's call, not ours). Standard library only, like `gate` and `report`.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from stateservice.cli import client

TEMPFAIL = 75  # EX_TEMPFAIL: gave up waiting; try again later
REPORT_FOR = 60.0  # seconds a finished command's report is retried through restarts and 503s
MAX_SLOT_PAUSE = 5.0  # seconds between slot requests at most: Retry-After is an estimate, and a slot may free sooner
MIN_RENEW = 1.0  # seconds between renewals, at least


@dataclass(frozen=True, slots=True)
class Job:
    base: str
    state: str
    chart: str | None
    host: str
    token: str | None

    def url(self, path: str, **query: str) -> str:
        params = {"state": self.state, **({"chart": self.chart} if self.chart else {}), **query}
        return f"{self.base.rstrip('/')}{path}?{urllib.parse.urlencode(params)}"

    @property
    def slot_path(self) -> str:
        return f"/slots/{urllib.parse.quote(self.host)}"


class GiveUp(Exception):
    """The wait ran out (exit TEMPFAIL), or the service refused for good (exit ERROR): the message says which."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def run(job: Job, wait: float, command: Sequence[str]) -> int:
    """Wait for the gate and a slot, run `command` holding it, report; the exit code (see the module doc)."""
    try:
        slot = _acquire(job, time.monotonic() + wait)
    except GiveUp as exc:
        print(f"stateservice run: {exc}", file=sys.stderr)
        return exc.code
    except client.Unreachable as exc:
        print(f"stateservice run: cannot reach {job.base}: {exc}", file=sys.stderr)
        return TEMPFAIL
    code = _hold_while_running(job, slot, command)
    _report(job, code)
    return code


def _acquire(job: Job, deadline: float) -> dict[str, object] | None:
    """The slot granted (None: the state has no concurrency) once STATE is current. Raises GiveUp."""
    attempts = client.Attempts("run", job.base, deadline)
    while True:
        remaining = deadline - time.monotonic()
        opened = client.gate(job.base, job.state, job.chart, max(0.0, remaining), job.token, name="run", quiet=True)
        if opened == client.NO:
            raise GiveUp(TEMPFAIL, f"{job.state!r} did not become current and open within the wait")
        if opened != client.YES:
            raise GiveUp(client.ERROR, "the gate failed (the reason is above)")
        answer = attempts.send("PUT", lambda _: (job.url(job.slot_path), 30.0), job.token)
        if answer.status == 200:
            return answer.json()
        body = answer.json()
        if answer.status == 409 and body.get("error") == "no_concurrency":
            return None  # every host may go at once in this state
        if answer.status != 406:
            raise GiveUp(client.ERROR, answer.explain())
        pause = min(max(answer.retry_after, 1.0), MAX_SLOT_PAUSE, max(0.0, deadline - time.monotonic()))
        if pause <= 0:
            raise GiveUp(TEMPFAIL, f"no slot of {job.state!r} came free within the wait ({answer.explain()})")
        if attempts.say is not None:
            attempts.say(f"stateservice run: {answer.explain()}; asking again in {pause:.0f}s")
        time.sleep(pause)


def _hold_while_running(job: Job, slot: dict[str, object] | None, command: Sequence[str]) -> int:
    """Run `command`, renewing `slot` meanwhile; its exit code (128 + N when a signal N ended it)."""
    stop = threading.Event()
    renewer = threading.Thread(target=_renew, args=(job, slot, stop), daemon=True) if slot else None
    try:
        child = subprocess.Popen(list(command))
    except OSError as exc:
        print(f"stateservice run: cannot run {command[0]!r}: {exc.strerror or exc}", file=sys.stderr)
        return 127 if isinstance(exc, FileNotFoundError) else 126  # as a shell says it
    if renewer is not None:
        renewer.start()
    try:
        code = child.wait()
    except KeyboardInterrupt:  # the terminal's ^C reached the command too: wait for it to finish its way
        code = child.wait()
    finally:
        stop.set()
        if renewer is not None:
            renewer.join(timeout=5)
    return 128 - code if code < 0 else code


def _renew(job: Job, slot: dict[str, object], stop: threading.Event) -> None:
    """Ask for the slot again at a third of its time to live until `stop`; say a halt or a lost slot once."""
    said: set[str] = set()
    interval = max(MIN_RENEW, _seconds_left(slot) / 3)
    while not stop.wait(interval):
        try:
            answer = client.request("PUT", job.url(job.slot_path), job.token, timeout=min(30.0, interval))
        except client.Unreachable as exc:
            _once(said, "unreachable", f"cannot renew the slot ({exc}); the command goes on")
            continue
        if answer.status == 200:
            interval = max(MIN_RENEW, _seconds_left(answer.json()) / 3)
        elif answer.json().get("error") == "halted":
            _once(said, "halted", f"{answer.explain()}; the command goes on")
        else:
            _once(said, str(answer.status), f"cannot renew the slot: {answer.explain()}; the command goes on")


def _seconds_left(slot: dict[str, object]) -> float:
    try:
        expires = datetime.fromisoformat(str(slot["expires_at"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return 3 * MIN_RENEW
    return max(0.0, (expires - datetime.now(UTC)).total_seconds())


def _once(said: set[str], key: str, message: str) -> None:
    if key not in said:
        said.add(key)
        print(f"stateservice run: {message}", file=sys.stderr, flush=True)


def _report(job: Job, code: int) -> None:
    """Report the outcome (retrying through restarts and 503s); a refusal is said, the exit code stays COMMAND's."""
    query = {"host": job.host} if code == 0 else {"host": job.host, "result": "failure", "reason": _reason(code)}
    attempts = client.Attempts("run", job.base, time.monotonic() + REPORT_FOR)
    try:
        answer = attempts.send("PUT", lambda _: (job.url("/state", **query), 30.0), job.token)
    except client.Unreachable as exc:
        print(f"stateservice run: could not report ({exc}); report again with `stateservice report`", file=sys.stderr)
        return
    if answer.status != 200:
        print(f"stateservice run: the report was refused: {answer.explain()}", file=sys.stderr)


def _reason(code: int) -> str:
    if code > 128 and code - 128 in signal.Signals._value2member_map_:
        return f"killed by {signal.Signals(code - 128).name}"
    return f"exit {code}"
