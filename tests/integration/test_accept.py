"""The worker's accept loop (server/accept.py): a wake-up takes every queued connection, up to its batch."""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from stateservice.server import accept, eventloop
from stateservice.server.accept import AcceptSite

LOOPS = ["asyncio", "uvloop"]
REQUEST = b"GET /hello HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"


@contextmanager
def listening(backlog: int = 512) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(backlog)
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()


@contextmanager
def connected(sock: socket.socket, count: int) -> Iterator[list[socket.socket]]:
    """`count` clients whose connections the kernel completed: queued on `sock`, none accepted yet."""
    clients = [socket.create_connection(sock.getsockname()[:2], timeout=5) for _ in range(count)]
    try:
        yield clients
    finally:
        for client in clients:
            client.close()


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="hello")


def served(body: Callable[[web.AppRunner], Awaitable[None]], loop: str) -> None:
    """Run `body(runner)` on `loop` with an application answering GET /hello."""

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/hello", hello)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await body(runner)
        finally:
            await runner.cleanup()

    eventloop.run(main(), loop)


async def answers(clients: list[socket.socket]) -> list[bytes]:
    """Each client's first line of the answer to REQUEST (read in threads: the clients block)."""

    def ask(client: socket.socket) -> bytes:
        client.sendall(REQUEST)
        return client.makefile("rb").readline().strip()

    return list(await asyncio.gather(*(asyncio.to_thread(ask, c) for c in clients)))


@pytest.mark.parametrize("loop", LOOPS)
def test_one_wake_up_accepts_every_queued_connection_and_each_is_served(loop: str) -> None:
    with listening() as sock, connected(sock, 100) as clients:

        async def body(runner: web.AppRunner) -> None:
            assert runner.server is not None
            acceptor = accept.Acceptor(sock, runner.server, None, batch=128)
            acceptor.accept()  # one wake-up, as the loop calls it
            assert acceptor.accepted == 100
            assert await answers(clients) == [b"HTTP/1.1 200 OK"] * 100
            await acceptor.close()

        served(body, loop)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_wake_up_accepts_at_most_its_batch_and_the_next_takes_the_rest(loop: str) -> None:
    with listening() as sock, connected(sock, 50):

        async def body(runner: web.AppRunner) -> None:
            assert runner.server is not None
            acceptor = accept.Acceptor(sock, runner.server, None, batch=32)
            acceptor.accept()
            assert acceptor.accepted == 32
            acceptor.accept()
            assert acceptor.accepted == 50
            await acceptor.close()

        served(body, loop)


@pytest.mark.parametrize("loop", LOOPS)
def test_the_site_serves_what_connects_while_it_runs_and_stops_accepting_when_stopped(loop: str) -> None:
    with listening() as sock:

        async def body(runner: web.AppRunner) -> None:
            site = AcceptSite(runner, sock)
            await site.start()
            assert site.name == f"http://127.0.0.1:{sock.getsockname()[1]}"
            with connected(sock, 20) as clients:
                assert await answers(clients) == [b"HTTP/1.1 200 OK"] * 20
            await site.stop()
            with connected(sock, 1) as late:
                late[0].settimeout(0.3)
                with pytest.raises(TimeoutError):
                    await answers(late)  # queued in the kernel, never accepted: its siblings' to take

        served(body, loop)


class Exhausted(socket.socket):
    """A listening socket whose next `accept` fails as a process out of file descriptors does."""

    failures = 1

    def accept(self) -> tuple[socket.socket, object]:
        if self.failures:
            self.failures -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        return super().accept()


@pytest.mark.parametrize("loop", LOOPS)
def test_out_of_descriptors_pauses_accepting_then_resumes(loop: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accept, "PAUSE", 0.2)
    sock = Exhausted(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)

    async def body(runner: web.AppRunner) -> None:
        assert runner.server is not None
        acceptor = accept.Acceptor(sock, runner.server, None)
        with capture_logs() as logs:
            acceptor.start()
            with connected(sock, 1) as clients:
                for _ in range(100):
                    if acceptor.accepted or any(e["event"] == "accept_paused" for e in logs):
                        break
                    await asyncio.sleep(0.01)
                assert acceptor.accepted == 0
                assert [e["error"] for e in logs if e["event"] == "accept_paused"] == ["Too many open files"]
                assert await answers(clients) == [b"HTTP/1.1 200 OK"]  # accepted once the pause is over
        assert acceptor.accepted == 1
        await acceptor.close()

    try:
        served(body, loop)
    finally:
        sock.close()
