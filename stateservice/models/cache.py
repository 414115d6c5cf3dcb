"""The per-worker model cache: load each model once, reload it when its file changes, predict off the loop.

Every file read, load and `predict` runs on the cache's one thread pool (`start()` creates it,
`close()` shuts it down; `web/app.py` does both in a cleanup context), never on the event loop;
with `predict_processes` (`--predict-processes`), loads and predictions run in a pool of other
processes instead (`models/pool.py`: the GIL of a prediction is then not the event loop's), and
the worker keeps only each model's file bytes, digest and n_features_in_.
`start()` also loads every model in the background, so the first requests find them loaded.
A request stats the model file and predicts in one executor job; only when the file's signature
(inode, size, mtime, ctime) differs from the version last tried does it start a load, the one
task every request needing that version awaits: concurrent first requests load once, and
while a new version loads, requests keep getting answers from the previous one. A file whose
bytes did not change (same SHA-256) is not deserialized again. A version that fails to load
(unreadable, refused by the trust check, corrupt) is logged once and the previous model keeps
serving; with no previous model the request answers 500 `model_unavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

import structlog

from stateservice.errors import (
    BadPrediction,
    ModelUnavailable,
    PredictionFailed,
    UnknownModel,
)
from stateservice.models.conf import ModelSpec
from stateservice.models.files import Loader, Signature, current_signature, deserialize, read_model
from stateservice.models.pool import LoadFailed, PoolDied, PredictPool, RemoteError, Stale
from stateservice.models.predict import Rows, predict_rows
from stateservice.telemetry import metrics

log = structlog.get_logger(__name__)

P = ParamSpec("P")
T = TypeVar("T")
THREADS = 4


@dataclass(frozen=True, slots=True)
class Loaded:
    """A model in memory and the file version it came from."""

    estimator: Any  # None when a prediction pool holds the model
    digest: str
    signature: Signature
    loaded_at: datetime
    n_features: int | None
    data: bytes | None = None  # the file's bytes, for a pool process that does not hold this version yet


@dataclass(slots=True)
class Entry:
    """One served model in this worker: its config, the version in memory, and what the last load said."""

    spec: ModelSpec
    current: Loaded | None = None
    tried: bool = False
    seen: Signature | None = None  # the file version last tried, loaded or not
    error: str | None = None  # why `seen` did not load (`current`, if any, is an older version)
    loading: asyncio.Task[None] | None = None  # the one load in progress, awaited by every request that needs it


@dataclass(frozen=True, slots=True)
class _Stale:
    signature: Signature | None


class ModelCache:
    """The models one worker serves, each loaded once (at start, or at first use). `start()` first, `close()` last.

    `predict_processes` > 0: loads and predictions run in a pool of that many processes, which this cache
    starts and stops (only if it serves models); `pool` instead shares a pool the caller starts and stops
    (tests). `loader` deserializes in this process, without a pool only (a pool loads with `deserialize`).
    """

    def __init__(
        self,
        specs: Sequence[ModelSpec],
        *,
        allow_writable: bool = False,
        loader: Loader = deserialize,
        threads: int = THREADS,
        warm: bool = True,
        predict_processes: int = 0,
        pool: PredictPool | None = None,
    ) -> None:
        self.entries = {spec.name: Entry(spec) for spec in specs}
        self.allow_writable = allow_writable
        self.loader = loader
        self.threads = threads
        self.warm = warm
        self._own_pool = pool is None and predict_processes > 0 and bool(self.entries)
        self.pool = PredictPool(predict_processes) if self._own_pool else pool
        self._executor: ThreadPoolExecutor | None = None
        self._warming: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Create the threads (and the pool); with `warm`, start loading every model in the background (the first
        requests then wait for that load instead of paying for it, and a model that cannot load is logged at start)."""
        self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="models")
        if self._own_pool and self.pool is not None:
            self.pool.start()
        if self.warm and self.entries:
            self._warming = asyncio.create_task(self._warm(), name="warm-models")

    async def _warm(self) -> None:
        for entry in self.entries.values():
            with contextlib.suppress(ModelUnavailable):  # logged by the load
                await self.refresh(entry)

    async def close(self) -> None:
        """Stop loads in progress, drop queued work and wait, off the loop, for a job still running."""
        loads = [entry.loading for entry in self.entries.values() if entry.loading is not None]
        loads += [self._warming] if self._warming is not None else []
        for task in loads:
            task.cancel()
        await asyncio.gather(*loads, return_exceptions=True)
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)
        if self._own_pool and self.pool is not None:
            await self.pool.close()

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(*args, **kwargs)` on the cache's threads, with the caller's log context."""
        if self._executor is None:
            raise RuntimeError("ModelCache.start() was not called")
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def entry(self, name: str) -> Entry:
        """The model called `name`. Raises UnknownModel (listing the served ones)."""
        found = self.entries.get(name)
        if found is None:
            raise UnknownModel(name, sorted(self.entries))
        return found

    async def predict(self, name: str, rows: Rows) -> list[str]:
        """The state for each row. Raises UnknownModel, ValuesRejected (422), ModelUnavailable, BadPrediction,
        PredictionFailed (500)."""
        entry = self.entry(name)
        outcome: list[str] | _Stale
        try:
            if self.pool is not None:
                outcome = await self._predict_in_pool(self.pool, entry, rows)
            else:
                outcome = await self.run(_predict_if_fresh, entry.spec, entry.seen, entry.current, rows)
                if isinstance(outcome, _Stale):
                    loaded = await self.refresh(entry, outcome.signature)
                    outcome = await self.run(predict_rows, entry.spec, loaded.estimator, loaded.n_features, rows)
        except (BadPrediction, PredictionFailed) as exc:
            # a fault of the model, not of the caller: the operator needs to hear of it (with the model's traceback)
            log.error("model_prediction_failed", model=name, error=exc.message, exc_info=exc.__cause__)
            raise
        metrics.predictions(name, len(outcome))
        return outcome

    async def _predict_in_pool(self, pool: PredictPool, entry: Entry, rows: Rows) -> list[str]:
        """The prediction in a pool process; if that process dies meanwhile, once more on another (a new one
        in its place) before answering 500: one death may be a kill or the OOM killer, a second one the model."""
        spec = entry.spec
        try:
            try:
                return await self._pool_job(pool, entry, rows)
            except PoolDied as exc:
                log.warning("prediction_retried", model=spec.name, why=str(exc))
                first = exc
            try:
                return await self._pool_job(pool, entry, rows)
            except PoolDied as exc:
                raise PredictionFailed(
                    spec.name,
                    f"the prediction process died while predicting with model {spec.name!r} ({first}), "
                    f"and so did the new one it was retried on ({exc})",
                ) from exc
        except LoadFailed as exc:
            raise ModelUnavailable(spec.name, f"a prediction process could not load it: {exc}") from None
        except RemoteError as exc:
            raise PredictionFailed(
                spec.name, f"model {spec.name!r} failed in the prediction process: {str(exc).splitlines()[-1]}"
            ) from exc

    async def _pool_job(self, pool: PredictPool, entry: Entry, rows: Rows) -> list[str]:
        """One pool job (the freshness check and the prediction), two when the file changed since the last load."""
        spec, current = entry.spec, entry.current
        outcome: list[str] | Stale = Stale(None)
        if current is not None:
            outcome = await pool.predict(spec, entry.seen, current.digest, _data(current), current.n_features, rows)
        if isinstance(outcome, Stale):
            current = await self.refresh(entry, outcome.signature)
            outcome = await pool.predict(spec, None, current.digest, _data(current), current.n_features, rows)
        assert not isinstance(outcome, Stale)  # only a check against `seen` answers Stale
        return outcome

    async def refresh(self, entry: Entry, seen: Signature | None = None) -> Loaded:
        """The current version of the model, loaded or reloaded if its file changed. Raises ModelUnavailable."""
        seen = seen if seen is not None else await self.run(current_signature, entry.spec.path)
        if entry.loading is None and not (entry.tried and entry.seen == seen):  # else tried, or being tried
            entry.loading = asyncio.create_task(self._load(entry, seen), name=f"load-model-{entry.spec.name}")
        if entry.loading is not None:
            # shielded: a caller that hangs up does not stop the load the others wait for
            await asyncio.shield(entry.loading)
        if entry.current is None:
            raise ModelUnavailable(entry.spec.name, entry.error or "not loaded")
        return entry.current

    async def _load(self, entry: Entry, seen: Signature | None) -> None:
        try:
            await self._try_load(entry, seen)
        finally:
            entry.loading = None

    async def _try_load(self, entry: Entry, seen: Signature | None) -> None:
        spec, previous = entry.spec, entry.current
        entry.tried, entry.seen = True, seen
        started = time.perf_counter()
        try:
            file = await self.run(read_model, spec, allow_writable=self.allow_writable)
            entry.seen = file.signature
            if previous is not None and previous.digest == file.digest:
                entry.current, entry.error = _replace_signature(previous, file.signature), None
                return  # touched or copied over with the same bytes: nothing to deserialize
            if self.pool is not None:
                estimator, features = None, await self.pool.load(spec, file.digest, file.data)
            else:
                estimator = await self.run(self.loader, spec, file.data)
                features = getattr(estimator, "n_features_in_", None)
        except Exception as exc:
            if isinstance(exc, PoolDied):  # not the file's fault: the next request tries this version again
                entry.tried, entry.seen = False, None
            entry.error = _why(exc)
            log.error(
                "model_load_failed",
                model=spec.name,
                path=str(spec.path),
                error=entry.error,
                serving=previous.digest if previous else None,
            )
            return
        entry.error = None
        entry.current = Loaded(
            estimator,
            file.digest,
            file.signature,
            datetime.now(UTC),
            features if isinstance(features, int) else None,
            file.data if self.pool is not None else None,
        )
        log.info(
            "model_loaded",
            model=spec.name,
            path=str(spec.path),
            format=spec.format.value,
            digest=file.digest,
            replaced=previous.digest if previous else None,
            seconds=round(time.perf_counter() - started, 4),
        )


def _replace_signature(loaded: Loaded, signature: Signature) -> Loaded:
    return Loaded(loaded.estimator, loaded.digest, signature, loaded.loaded_at, loaded.n_features, loaded.data)


def _why(exc: Exception) -> str:
    if isinstance(exc, ModelUnavailable):
        return exc.reason
    if isinstance(exc, LoadFailed):  # already `Type: message`, from the pool process
        return str(exc)
    return f"{type(exc).__name__}: {str(exc)[:300]}"


def _data(loaded: Loaded) -> bytes:
    assert loaded.data is not None  # kept for every model loaded with a pool
    return loaded.data


def _predict_if_fresh(spec: ModelSpec, seen: Signature | None, loaded: Loaded | None, rows: Rows) -> list[str] | _Stale:
    """In the executor: predict with `loaded` if the file is still the version last tried, else say it is stale."""
    now = current_signature(spec.path)
    if loaded is None or now != seen:
        return _Stale(now)
    return predict_rows(spec, loaded.estimator, loaded.n_features, rows)
