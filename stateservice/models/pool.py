"""Predictions in other processes: a worker's pool of prediction processes, and what runs in them.

A prediction of a scikit-learn model is CPU work that holds Python's GIL for most of its
time; in a thread of the worker it slows down the worker's event loop, and with it every gate
request. `PredictPool` runs loads and predictions in `--predict-processes` processes of its
own, started with 'spawn' (the worker is an asyncio process with threads, which a fork would
copy mid-flight). `models/cache.py`'s `ModelCache` stays the one place that decides: it reads model files
(trust check, digest), answers `GET /models`, reloads, and hands the pool only what to load or
predict with.

Each process has two pipes, and the worker's event loop reads answers from them directly
(`add_reader`, non-blocking, as their bytes arrive: `models/pipes.py`): a job costs the worker a
pickle and a write, about 40 us, where a `concurrent.futures.ProcessPoolExecutor` cost about
350 us of the worker's CPU (and GIL) per job in its queue and management threads on the 2-CPU
machine of bench/RESULTS-models.md. A job goes to the process with the fewest jobs in flight; a
large one (a big body, a model file's bytes) is written from a thread, so that a full pipe never
stalls the loop, and whole: the next job waits for it even if its request is cancelled meanwhile.

Each pool process keeps the models it was given, one version per model file, keyed by the
file's SHA-256: `load` deserializes (with `models/files.py`'s `deserialize`) in every process, which keeps
it; `predict` sends the digest and the rows, and a process that does not hold that version (it
replaced one that died) says so, and is sent the file's bytes once.
A process that dies (killed, or a model that crashes the interpreter) fails its jobs in flight
with `PoolDied` saying how it ended (its exit code, or the signal that killed it), never a hang,
and the next job starts a new process in its place (`models/cache.py` retries a prediction once). Pool
processes ignore SIGINT and SIGTERM (the worker stops them when it stops, after its in-flight
requests: end of input, then SIGKILL after `STOP_GRACE`), and exit on their own when the worker
is gone (the end of their input pipe).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import multiprocessing
import os
import pickle
import signal
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import structlog

from stateservice.errors import BadPrediction, PredictionFailed, StateServiceError, ValuesRejected
from stateservice.models.conf import ModelSpec
from stateservice.models.files import Signature, current_signature, deserialize
from stateservice.models.pipes import Frames, exit_status
from stateservice.models.predict import Rows, predict_rows

log = structlog.get_logger(__name__)

INLINE = 16 * 1024  # bytes a process may have queued in its pipe before jobs are written from a thread
STOP_GRACE = 10.0  # seconds a pool process may take to finish its job when the worker stops
NICE = 5  # added to a pool process's nice value: a lower CPU priority than its worker's


class PoolDied(Exception):
    """A prediction process died while it had this job (killed, out of memory, or a crash in native code)."""


class LoadFailed(Exception):
    """The pool process could not deserialize the model; `str()` says why, as the worker logs it."""


class _NotSent(Exception):
    """The job could not be written: the process is gone, and the job never reached it."""


class RemoteError(Exception):
    """A job failed in the pool process with an exception the job does not turn into an answer (a bug)."""


@dataclass(frozen=True, slots=True)
class Stale:
    """The model file is no longer the version the worker last tried: it must refresh first."""

    signature: Signature | None


@dataclass(frozen=True, slots=True)
class Missing:
    """This pool process does not hold that version of the model: send it the file's bytes."""


@dataclass(frozen=True, slots=True)
class Refused:
    """A StateServiceError raised in the pool process, carried back as plain data (they do not pickle)."""

    kind: str  # "values_rejected", "bad_prediction" or "prediction_failed"
    message: str
    fields: dict[str, Any]
    trace: str | None  # the model's traceback, for the log


@dataclass(eq=False)
class _Process:
    """One pool process, the worker's ends of its pipes, and its jobs in flight."""

    process: multiprocessing.process.BaseProcess
    jobs: Connection  # worker -> process
    answers: Connection  # process -> worker
    pending: dict[int, tuple[asyncio.Future[Any], int]] = field(default_factory=dict)  # job -> (future, bytes)
    loop: asyncio.AbstractEventLoop | None = None  # the loop reading `answers`
    sending: asyncio.Lock = field(default_factory=asyncio.Lock)  # one writer at a time: messages never interleave
    frames: Frames = field(default_factory=Frames)  # answers as their bytes arrive
    dead: bool = False

    @property
    def queued(self) -> int:
        return sum(size for _, size in self.pending.values())


class PredictPool:
    """`processes` prediction processes for one worker. `start()` first, `close()` last (both on its loop)."""

    def __init__(self, processes: int) -> None:
        if processes < 1:
            raise ValueError("a prediction pool needs at least one process")
        self.processes = processes
        self._slots: list[_Process | None] = [None] * processes
        self._ids = itertools.count()
        self._closed = False
        self._atexit = False
        self._burying: set[asyncio.Future[None]] = set()  # processes that died, awaiting their exit status

    def start(self) -> None:
        """Start the processes now, so that they have imported what they need before the first job."""
        for index in range(self.processes):
            self._slot(index)

    def _end_input(self) -> None:
        for slot in self._slots:
            if slot is not None:
                slot.jobs.close()

    def pids(self) -> list[int]:
        """The pool processes running now (for tests and logs)."""
        return [s.process.pid for s in self._slots if s is not None and not s.dead and s.process.pid is not None]

    async def close(self) -> None:
        """Stop the processes: each finishes its job (up to STOP_GRACE seconds), then exits; jobs still queued
        fail with PoolDied."""
        self._closed = True
        atexit.unregister(self._end_input)
        slots, self._slots = [s for s in self._slots if s is not None], []
        for slot in slots:
            slot.jobs.close()  # end of input: the process exits after its job
        await asyncio.gather(*(asyncio.to_thread(_reap, slot.process) for slot in slots))
        for slot in slots:
            self._gone(slot, "the prediction pool was closed")
        loop = asyncio.get_running_loop()  # (a test's earlier loop may have closed with its burial pending)
        await asyncio.gather(*(b for b in self._burying if b.get_loop() is loop), return_exceptions=True)

    async def load(self, spec: ModelSpec, digest: str, data: bytes) -> int | None:
        """Deserialize `data` in every pool process, each of which keeps it (so that no request waits for a
        load); the model's n_features_in_ (None if it has none). Raises LoadFailed, PoolDied."""
        slots = [self._slot(index) for index in range(self.processes)] if not self._closed else []
        if not slots:
            raise PoolDied("the prediction pool is closed")
        outcomes = await asyncio.gather(*(self._call(_load, (spec, digest, data), len(data), s) for s in slots))
        for outcome in outcomes:
            if isinstance(outcome, str):
                raise LoadFailed(outcome)
        return outcomes[0]  # type: ignore[no-any-return]

    async def predict(
        self, spec: ModelSpec, seen: Signature | None, digest: str, data: bytes, n_features: int | None, rows: Rows
    ) -> list[str] | Stale:
        """The state of each row, predicted in a pool process with the version `digest` (whose file bytes are
        `data`). With `seen`, first checks the file is still that version, else answers Stale. Raises
        ValuesRejected, BadPrediction, PredictionFailed, LoadFailed (the bytes did not load there), PoolDied,
        RemoteError."""
        size = 16 * len(rows) * len(rows[0])  # about what the rows pickle to
        slot = self._pick()
        outcome = await self._call(_predict, (spec, seen, digest, None, n_features, rows), size, slot)
        if isinstance(outcome, Missing):
            outcome = await self._call(_predict, (spec, seen, digest, data, n_features, rows), size + len(data), slot)
        if isinstance(outcome, Refused):
            raise _rebuild(spec, outcome)
        if isinstance(outcome, str):
            raise LoadFailed(outcome)
        return outcome  # type: ignore[no-any-return]

    def _pick(self) -> _Process:
        """The process with the fewest jobs in flight, then bytes of them (started if its slot is empty)."""
        if self._closed:
            raise PoolDied("the prediction pool is closed")
        slots = [self._slot(index) for index in range(self.processes)]
        return min(slots, key=lambda slot: (len(slot.pending), slot.queued))

    def _slot(self, index: int) -> _Process:
        slot = self._slots[index]
        if slot is None or slot.dead:
            if not self._atexit:
                # runs before multiprocessing's own exit hook, which joins its children (and these ignore
                # SIGTERM): a worker exiting without close() ends their input, so that they exit too
                atexit.register(self._end_input)
                self._atexit = True
            slot = self._slots[index] = _spawn()
        return slot

    async def _call(self, fn: Any, args: tuple[Any, ...], size: int, slot: _Process | None = None) -> Any:
        slot = slot if slot is not None and not slot.dead else self._pick()
        job = next(self._ids)
        message = pickle.dumps((job, fn, args), protocol=pickle.HIGHEST_PROTOCOL)
        try:
            return await self._send(slot, job, message)
        except _NotSent:  # the process died after its last job, and this one never reached it: a new one runs it
            return await self._send(self._pick(), job, message)

    async def _send(self, slot: _Process, job: int, message: bytes) -> Any:
        """Write the job to `slot` and await its answer. Raises _NotSent if the write failed."""
        loop = asyncio.get_running_loop()
        if slot.loop is not loop:  # the first job (or a test's new loop): this loop reads its answers
            if slot.loop is not None and not slot.loop.is_closed():
                slot.loop.remove_reader(slot.answers.fileno())
            slot.loop = loop
            slot.sending = asyncio.Lock()
            # read as much as is there, never more: uvloop makes a watched fd non-blocking anyway, and with
            # asyncio's loop a blocking read of a large answer would wait on the process with the loop
            os.set_blocking(slot.answers.fileno(), False)
            loop.add_reader(slot.answers.fileno(), self._answer, slot)
        future: asyncio.Future[Any] = loop.create_future()
        inline = slot.queued + len(message) <= INLINE
        slot.pending[job] = (future, len(message))
        write = asyncio.ensure_future(self._write(slot, future, message, inline))
        write.add_done_callback(_retrieved)
        try:
            await asyncio.shield(write)  # a cancelled request leaves its write to finish: a message is never cut
        except BaseException:  # not written (_NotSent: sent again), or the request was cancelled
            slot.pending.pop(job, None)
            future.cancel()
            raise
        return await future

    async def _write(self, slot: _Process, future: asyncio.Future[Any], message: bytes, inline: bool) -> None:
        """Write one job's message, whole, holding the slot's lock until it is in the pipe. Raises _NotSent."""
        async with slot.sending:
            if future.done():  # the request was cancelled while it waited for its turn: nothing to write
                return
            if slot.dead:
                raise _NotSent
            try:
                if inline:
                    slot.jobs.send_bytes(message)
                else:
                    await asyncio.to_thread(slot.jobs.send_bytes, message)
            except (OSError, ValueError):  # the process is gone (its input closed), maybe noticed already
                self._gone(slot)
                raise _NotSent from None

    def _answer(self, slot: _Process) -> None:
        """On the loop: part of an answer, answers, or the end came from the process."""
        try:
            messages, ended = slot.frames.read(slot.answers.fileno())
        except OSError:
            messages, ended = [], True
        for message in messages:
            try:
                job, ok, value = pickle.loads(message)
            except Exception as exc:  # not our protocol: a process that cannot be trusted to answer any more
                slot.process.kill()
                self._gone(slot, f"it sent an answer that does not unpickle ({type(exc).__name__})")
                return
            future, _ = slot.pending.pop(job, (None, 0))
            if future is None or future.done():  # the request was cancelled meanwhile
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(RemoteError(value))
        if ended:
            self._gone(slot)

    def _gone(self, slot: _Process, why: str | None = None) -> None:
        """The process ended (or must): fail its jobs in flight with PoolDied saying why (its exit code or
        signal, once it has exited); its slot starts a new process at the next job."""
        if slot.dead:
            return
        slot.dead = True
        if slot.loop is not None and not slot.loop.is_closed():
            slot.loop.remove_reader(slot.answers.fileno())
        slot.answers.close()
        slot.jobs.close()
        pending = [future for future, _ in slot.pending.values()]
        slot.pending.clear()
        if self._closed:
            _fail(pending, why or "the prediction pool was closed")
            return
        bury = asyncio.ensure_future(self._bury(slot, pending, why))
        self._burying.add(bury)
        bury.add_done_callback(self._burying.discard)

    async def _bury(self, slot: _Process, pending: list[asyncio.Future[Any]], why: str | None) -> None:
        """Off the loop, wait for the process to exit (it closed its pipe), then say how it ended."""
        status = await asyncio.to_thread(exit_status, slot.process)
        why = f"{why}; {status}" if why else status
        log.error("predict_process_died", pid=slot.process.pid, why=why, jobs=len(pending))
        _fail(pending, why)


def _fail(pending: list[asyncio.Future[Any]], why: str) -> None:
    for future in pending:
        if not future.done():
            future.set_exception(PoolDied(why))


def _retrieved(task: asyncio.Task[None]) -> None:
    """A write whose request was cancelled: its outcome (_NotSent) is nobody's to raise."""
    if not task.cancelled():
        task.exception()


def _spawn() -> _Process:
    context = multiprocessing.get_context("spawn")
    jobs_in, jobs_out = context.Pipe(duplex=False)
    answers_in, answers_out = context.Pipe(duplex=False)
    process = context.Process(target=_serve, args=(jobs_in, answers_out), name="stateservice-predict", daemon=True)
    process.start()
    jobs_in.close()  # the process holds these ends now: its death is the end of `answers_in`
    answers_out.close()
    log.info("predict_process_started", pid=process.pid)
    return _Process(process, jobs_out, answers_in)


def _reap(process: multiprocessing.process.BaseProcess) -> None:
    process.join(STOP_GRACE)
    if process.is_alive():
        process.kill()
        process.join()


def _rebuild(spec: ModelSpec, refused: Refused) -> StateServiceError:
    if refused.kind == ValuesRejected.code:
        fields = {k: v for k, v in refused.fields.items() if k != "model"}
        return ValuesRejected(spec.name, refused.message, **fields)
    if refused.kind == BadPrediction.code:
        return BadPrediction(spec.name, refused.message)
    failed = PredictionFailed(spec.name, refused.message)
    if refused.trace:
        failed.__cause__ = _RemoteTrace(refused.trace)
    return failed


class _RemoteTrace(Exception):
    """The traceback of an exception raised in a pool process, as text."""

    def __str__(self) -> str:
        return f"\n(in the prediction process)\n{self.args[0]}"


# -- in the pool processes ------------------------------------------------------------------------

_held: dict[str, tuple[str, Any]] = {}  # model file path -> (digest, estimator): the version this process holds


def _serve(jobs: Connection, answers: Connection) -> None:
    """A pool process: answer jobs until the worker closes its end (or is gone: the same end of input)."""
    # the worker decides when its pool stops (after its in-flight requests); a Ctrl-C or a SIGTERM to the
    # process group must not kill predictions under it
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with contextlib.suppress(OSError):  # when CPUs are short, the worker's event loop (the gates) goes first
        os.nice(NICE)
    while True:
        try:
            message = jobs.recv_bytes()
        except (EOFError, OSError):
            return
        job = -1
        try:
            job, fn, args = pickle.loads(message)
            answer = (job, True, fn(*args))
        except BaseException as exc:  # a bug, or a model that raises what no job catches: the worker says so
            answer = (job, False, "".join(traceback.format_exception(exc))[-4000:])
        try:
            answers.send_bytes(pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL))
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            answers.send_bytes(pickle.dumps((job, False, f"the answer does not pickle: {exc!r}")))
        except OSError:
            return


def _load(spec: ModelSpec, digest: str, data: bytes) -> int | str | None:
    """Deserialize and keep the model; its n_features_in_, or why it did not load (a str)."""
    try:
        estimator = deserialize(spec, data)
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc)[:300]}"
    _held[str(spec.path)] = (digest, estimator)
    features = getattr(estimator, "n_features_in_", None)
    return features if isinstance(features, int) else None


def _predict(
    spec: ModelSpec, seen: Signature | None, digest: str, data: bytes | None, n_features: int | None, rows: Rows
) -> list[str] | Stale | Missing | Refused | str:
    if seen is not None:
        now = current_signature(spec.path)
        if now != seen:
            return Stale(now)
    held = _held.get(str(spec.path))
    if held is None or held[0] != digest:
        if data is None:
            return Missing()
        loaded = _load(spec, digest, data)
        if isinstance(loaded, str):
            return loaded
        held = _held[str(spec.path)]
    try:
        return predict_rows(spec, held[1], n_features, rows)
    except (ValuesRejected, BadPrediction, PredictionFailed) as exc:
        trace = None
        if exc.__cause__ is not None:
            trace = "".join(traceback.format_exception(exc.__cause__))
        return Refused(exc.code, exc.message, dict(exc.fields), trace)
