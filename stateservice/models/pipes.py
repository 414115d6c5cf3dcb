"""The worker's side of a prediction process's pipes: its answers read as their bytes arrive, and how it ended.

`models/pool.py` sends jobs and reads answers with `multiprocessing.connection.Connection`'s
framing. The answers pipe is watched by the event loop, and uvloop makes a watched fd
non-blocking, which `Connection.recv_bytes()` does not expect: an answer larger than the pipe
holds (64 KiB on Linux) failed with `BlockingIOError` halfway, and the pool took the process for
dead. `Frames` reads whatever has arrived and hands back only whole messages, on either loop.
Nothing here knows about models or asyncio.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import struct

EXIT_WAIT = 5.0  # seconds a pool process that closed its answers pipe has to exit before it is killed
READ_CHUNK = 256 * 1024  # bytes of answers read at a time
READS = 16  # reads per call at most: a long answer shares the event loop with the requests


class Frames:
    """multiprocessing.Connection's messages, read from a non-blocking fd as their bytes arrive: a 4-byte
    big-endian length (-1: an 8-byte one follows), then that many bytes."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def read(self, fd: int) -> tuple[list[bytes], bool]:
        """The messages completed by what can be read now, and whether the writer has closed its end."""
        ended = False
        for _ in range(READS):
            try:
                chunk = os.read(fd, READ_CHUNK)
            except BlockingIOError:
                break
            if not chunk:
                ended = True
                break
            self.buffer += chunk
        return self._messages(), ended

    def _messages(self) -> list[bytes]:
        messages = []
        while len(self.buffer) >= 4:
            (size,) = struct.unpack_from("!i", self.buffer)
            start = 4
            if size == -1:
                if len(self.buffer) < 12:
                    break
                (size,) = struct.unpack_from("!Q", self.buffer, 4)
                start = 12
            if len(self.buffer) < start + size:
                break
            messages.append(bytes(self.buffer[start : start + size]))
            del self.buffer[: start + size]
        return messages


def exit_status(process: multiprocessing.process.BaseProcess) -> str:
    """How a pool process that closed its end ended: its exit code, the signal that killed it; killed if it
    does not exit within EXIT_WAIT seconds."""
    process.join(EXIT_WAIT)
    if process.exitcode is None:
        process.kill()
        process.join()
        return f"it did not exit within {EXIT_WAIT:g} s of closing its pipe, and was killed"
    if process.exitcode < 0:
        try:
            return f"killed by signal {signal.Signals(-process.exitcode).name}"
        except ValueError:
            return f"killed by signal {-process.exitcode}"
    return f"exit code {process.exitcode}"
