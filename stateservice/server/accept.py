"""The worker's accept loop: every connection waiting on the shared socket is taken at each wake-up, not one.

libuv (under uvloop, the default loop) accepts a single connection per loop iteration since
1.45 (libuv/libuv#3696). A busy worker's iteration answers hundreds of requests, so when many
clients connect at once (1,000 keep-alive connections opened together) it took in some 20
connections a second while those already in were served again and again: the requests sent
on the rest waited in the kernel for seconds (bench/run.py measured a gate GET p99 of 5 s at a
p50 of 95 ms, and the same for a bare aiohttp handler on uvloop; docs/performance.md, "Tail
latency"). asyncio's own server accepts in a loop, which is what `AcceptSite` does on either
loop: at each wake-up it accepts up to `BATCH` connections and hands each to the loop with
`connect_accepted_socket`.

`BATCH` bounds one wake-up's work, so the requests already in are not held up by a flood of
new connections, and the workers sharing the socket (every one is woken) each take a share.
A worker out of file descriptors (or kernel memory) stops accepting for `PAUSE` seconds, as
asyncio's server does, leaving the connections queued for its siblings; the listening socket
itself belongs to the supervisor, which closes it.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl

import structlog
from aiohttp import web

log = structlog.get_logger(__name__)

BATCH = 128  # connections accepted per wake-up at most
PAUSE = 1.0  # seconds without accepting after running out of descriptors
HAND_OVER_WAIT = 1.0  # seconds a stopping site waits for the connections it accepted to reach aiohttp
EXHAUSTED = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class AcceptSite(web.BaseSite):
    """An aiohttp site on an already listening socket (as `web.SockSite`) that accepts connections itself."""

    __slots__ = ("_acceptor", "_batch", "_name", "_sock")

    def __init__(
        self,
        runner: web.BaseRunner,
        sock: socket.socket,
        *,
        ssl_context: ssl.SSLContext | None = None,
        batch: int = BATCH,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self._sock = sock
        host, port = sock.getsockname()[:2]
        host = f"[{host}]" if ":" in host else host
        self._name = f"{'https' if ssl_context else 'http'}://{host}:{port}"
        self._acceptor: Acceptor | None = None
        self._batch = batch

    @property
    def name(self) -> str:
        return self._name

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._acceptor = Acceptor(self._sock, server, self._ssl_context, self._batch)
        self._acceptor.start()

    async def stop(self) -> None:
        if self._acceptor is not None:
            await self._acceptor.close()
        await super().stop()


class Acceptor:
    """Accepts from `sock` whenever it is readable, `batch` connections at most per wake-up."""

    def __init__(
        self, sock: socket.socket, factory: web.Server, context: ssl.SSLContext | None, batch: int = BATCH
    ) -> None:
        self.sock = sock
        self.factory = factory
        self.context = context
        self.batch = batch
        self.accepted = 0
        self._loop = asyncio.get_running_loop()
        self._setting_up: set[asyncio.Task[object]] = set()  # connections being handed over (TLS: handshakes)
        self._resume: asyncio.TimerHandle | None = None
        self._closed = False

    def start(self) -> None:
        self._loop.add_reader(self.sock.fileno(), self.accept)

    def accept(self) -> None:
        """Take up to `batch` waiting connections (the reader callback)."""
        for _ in range(self.batch):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return  # none left: another worker may have taken them
            except ConnectionAbortedError:
                continue  # the client gave up while queued
            except OSError as exc:
                if exc.errno not in EXHAUSTED:
                    raise
                self._pause(exc)
                return
            conn.setblocking(False)
            self.accepted += 1
            task = self._loop.create_task(self._hand_over(conn))
            self._setting_up.add(task)
            task.add_done_callback(self._setting_up.discard)

    async def _hand_over(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self.factory, conn, ssl=self.context)
        except OSError as exc:  # a TLS handshake that failed or timed out, a client gone: as asyncio's server
            conn.close()
            log.debug("connection_setup_failed", error=str(exc) or type(exc).__name__)

    def _pause(self, exc: OSError) -> None:
        log.warning("accept_paused", error=exc.strerror or str(exc), seconds=PAUSE)
        self._loop.remove_reader(self.sock.fileno())
        self._resume = self._loop.call_later(PAUSE, self._unpause)

    def _unpause(self) -> None:
        self._resume = None
        if not self._closed:
            self.start()

    async def close(self) -> None:
        """Stop accepting (the socket stays open: the supervisor owns it).

        The connections accepted so far reach aiohttp first, whose shutdown then closes or finishes
        them; a TLS handshake still going after HAND_OVER_WAIT is cancelled (its connection closed).
        """
        if self._closed:
            return
        self._closed = True
        if self._resume is not None:
            self._resume.cancel()
        else:
            self._loop.remove_reader(self.sock.fileno())
        if self._setting_up:
            _, pending = await asyncio.wait(set(self._setting_up), timeout=HAND_OVER_WAIT)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
